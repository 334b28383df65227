// Package imagetest provides image.File implementations for tests: an
// in-memory file, and a fault-injecting file that simulates power loss.
package imagetest

import (
	"io"
	"sync"
)

// MemFile is an in-memory image.File. Sync does nothing.
type MemFile struct {
	mu sync.Mutex
	b  []byte
}

// NewMemFile returns a MemFile holding a copy of b.
func NewMemFile(b []byte) *MemFile { return &MemFile{b: append([]byte(nil), b...)} }

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
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	copy(m.b[off:], p)
	return len(p), nil
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
	if size <= int64(len(m.b)) {
		m.b = m.b[:size]
	} else {
		m.b = append(m.b, make([]byte, size-int64(len(m.b)))...)
	}
	return nil
}

// Close does nothing.
func (m *MemFile) Close() error { return nil }
