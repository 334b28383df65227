package check

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// readAt reads len(p) bytes at off; what lies beyond the end of the file
// reads as zeroes, as in QEMU's file driver.
func (c *checker) readAt(p []byte, off uint64) error {
	if off >= c.fileSize {
		clear(p)
		return nil
	}
	n, err := c.f.ReadAt(p, int64(off))
	if n < len(p) {
		clear(p[n:])
		if err != nil && !errors.Is(err, io.EOF) {
			return c.ioError(err, "reading %d bytes at offset 0x%x", len(p), off)
		}
	}
	return nil
}

// ioError reports an I/O error of the check and returns the error that
// aborts it.
func (c *checker) ioError(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	c.report(finding(KindCheckError, ProblemIO, "ERROR: I/O error %s: %v", msg, err))
	return &AbortError{Err: fmt.Errorf("%s: %w", msg, err)}
}

// readEntries reads a table of n big-endian 64-bit entries at off. Only the
// entries inside the file are returned: the others read as zero.
func (c *checker) readEntries(off, n uint64) ([]uint64, error) {
	if n == 0 || off >= c.fileSize {
		return nil, nil
	}
	n = min(n, (c.fileSize-off+7)/8)
	b := make([]byte, n*8)
	if err := c.readAt(b, off); err != nil {
		return nil, err
	}
	t := make([]uint64, n)
	for i := range t {
		t[i] = binary.BigEndian.Uint64(b[i*8:])
	}
	return t, nil
}

// readCluster reads cs bytes at off into the scratch buffer.
func (c *checker) readCluster(off uint64) ([]byte, error) {
	if c.buf == nil {
		c.buf = make([]byte, c.cs)
	}
	return c.buf, c.readAt(c.buf, off)
}

// write writes p at off (repairs only).
func (c *checker) write(p []byte, off uint64) error {
	if c.mode == RepairNone {
		panic("check: write in a read-only pass")
	}
	if _, err := c.f.WriteAt(p, int64(off)); err != nil {
		return c.ioError(err, "writing %d bytes at offset 0x%x", len(p), off)
	}
	c.wrote = true
	c.res.changed = true
	if end := off + uint64(len(p)); end > c.fileSize {
		c.fileSize = end
	}
	return nil
}

// syncWrites makes the writes so far durable.
func (c *checker) syncWrites() error {
	if !c.wrote {
		return nil
	}
	if err := c.f.Sync(); err != nil {
		return c.ioError(err, "syncing the image")
	}
	c.wrote = false
	return nil
}

// writeU64 writes the big-endian v at off (repairs only).
func (c *checker) writeU64(off, v uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return c.write(b[:], off)
}
