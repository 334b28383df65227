// Package imagetest provides image.File implementations for tests: an
// in-memory file, and a fault-injecting file that simulates power loss.
package imagetest

import (
	"fmt"
	"io"
	"sync"
	"syscall"
)

// MemFile is an in-memory image.File. Sync does nothing. It grows in place
// within its reserved array, so that benchmarks measure the engine, not
// the fake file.
type MemFile struct {
	mu    sync.Mutex
	b     []byte
	hw    int   // high-water mark: the array is all zero from here on
	limit int64 // maximum length (0: none)
}

// SetLimit makes writes and truncations beyond n bytes fail with EFBIG, as
// a file system does: a corrupt image may point writes anywhere below
// 2^56, and an in-memory file must not try to hold that.
func (m *MemFile) SetLimit(n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.limit = n
}

func (m *MemFile) beyondLimit(end int64) error {
	if m.limit > 0 && end > m.limit {
		return fmt.Errorf("imagetest: file would grow to %d bytes, limit %d: %w", end, m.limit, syscall.EFBIG)
	}
	return nil
}

// NewMemFile returns a MemFile holding a copy of b.
func NewMemFile(b []byte) *MemFile {
	m := &MemFile{}
	m.Reset(b)
	return m
}

// Reserve makes room for the file to grow to n bytes without reallocating.
func (m *MemFile) Reserve(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n > cap(m.b) {
		nb := make([]byte, len(m.b), n)
		copy(nb, m.b)
		m.b, m.hw = nb, len(m.b)
	}
}

// Reset replaces the contents with a copy of b, reusing the array.
func (m *MemFile) Reset(b []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.b[:m.hw])
	m.b, m.hw = m.b[:0], 0
	m.grow(len(b))
	copy(m.b, b)
}

// grow extends the file to size bytes of zeroes after its end.
func (m *MemFile) grow(size int) {
	old := len(m.b)
	if size > cap(m.b) {
		nb := make([]byte, old, max(size, 2*cap(m.b)))
		copy(nb, m.b)
		m.b, m.hw = nb, old
	}
	m.b = m.b[:size]
	clear(m.b[old:max(old, min(size, m.hw))]) // beyond hw the array is still zero
	m.hw = max(m.hw, size)
}

// Bytes returns a copy of the contents.
func (m *MemFile) Bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.b...)
}

// ReadAt reads like a regular file: short reads at the end return io.EOF.
func (m *MemFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 {
		return 0, fmt.Errorf("imagetest: negative offset %d", off)
	}
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes, growing the file as needed.
func (m *MemFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 {
		return 0, fmt.Errorf("imagetest: negative offset %d", off)
	}
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		if err := m.beyondLimit(end); err != nil {
			return 0, err
		}
		m.grow(int(end))
	}
	copy(m.b[off:], p)
	return len(p), nil
}

// ZeroRange makes n bytes at off read as zeroes, growing the file as needed.
func (m *MemFile) ZeroRange(off, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || n < 0 {
		return fmt.Errorf("imagetest: zero range of %d bytes at offset %d", n, off)
	}
	end := off + n
	if end > int64(len(m.b)) {
		if err := m.beyondLimit(end); err != nil {
			return err
		}
		m.grow(int(end))
	}
	clear(m.b[off:end])
	return nil
}

// Sync does nothing: memory is the stable storage.
func (m *MemFile) Sync() error { return nil }

// Size returns the length.
func (m *MemFile) Size() (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.b)), nil
}

// Truncate sets the length.
func (m *MemFile) Truncate(size int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.beyondLimit(size); err != nil {
		return err
	}
	if size <= int64(len(m.b)) {
		m.b = m.b[:size]
	} else {
		m.grow(int(size))
	}
	return nil
}

// Close does nothing.
func (m *MemFile) Close() error { return nil }
