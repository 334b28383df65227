package image

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// File is the storage an image lives in. Writes may be buffered by the
// implementation; only Sync makes them durable. *OSFile implements it for
// regular files; tests substitute a fault-injecting implementation.
type File interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes every completed write durable (fdatasync).
	Sync() error
	// Size returns the current length of the file in bytes.
	Size() (int64, error)
	// Truncate sets the length of the file.
	Truncate(size int64) error
	Close() error
}

// OSFile is a File backed by an operating-system file, holding QEMU-style
// image locks for as long as it is open.
type OSFile struct {
	f    *os.File
	path string
}

// OpenOSFile opens path for reading, or for reading and writing, and takes
// the image locks QEMU's file driver takes for the same access (see Lock).
// With noLock the locks are neither taken nor checked (qemu-img -U).
func OpenOSFile(path string, readOnly, noLock bool) (*OSFile, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("%s: is a directory", path)
	}
	of := &OSFile{f: f, path: path}
	if !noLock {
		if err := Lock(f, path, readOnly); err != nil {
			f.Close()
			return nil, err
		}
	}
	return of, nil
}

// ReadAt reads len(p) bytes at off; reads past the end return io.EOF.
func (o *OSFile) ReadAt(p []byte, off int64) (int, error) { return o.f.ReadAt(p, off) }

// WriteAt writes p at off.
func (o *OSFile) WriteAt(p []byte, off int64) (int, error) { return o.f.WriteAt(p, off) }

// Sync calls fdatasync.
func (o *OSFile) Sync() error {
	for {
		err := unix.Fdatasync(int(o.f.Fd()))
		if !errors.Is(err, unix.EINTR) {
			if err != nil {
				return fmt.Errorf("fdatasync %s: %w", o.path, err)
			}
			return nil
		}
	}
}

// Size returns the file length.
func (o *OSFile) Size() (int64, error) {
	st, err := o.f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// Truncate sets the file length.
func (o *OSFile) Truncate(size int64) error { return o.f.Truncate(size) }

// Close releases the locks and closes the file.
func (o *OSFile) Close() error { return o.f.Close() }

// AllocatedBytes returns the bytes the file occupies on disk (st_blocks).
func (o *OSFile) AllocatedBytes() (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(o.f.Fd()), &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}

// readFull reads exactly len(p) bytes at off; bytes past the end of the file
// read as zeroes only when the whole range starts inside the file.
func readFull(f io.ReaderAt, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %d of %d bytes at offset 0x%x lie beyond the end of the file", ErrTruncated, len(p)-n, len(p), off)
	}
	return err
}
