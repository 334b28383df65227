package ioshell

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/zqimg/zqimg/pkg/image"
)

// RawDevice is a raw file (or a host device) as a shell device: qemu-io's
// raw format (-f raw, -o driver=raw, driver=file, host_device,
// host_cdrom). Its guest bytes are the file's bytes; it is locked as QEMU
// locks it (unless opened without locks).
type RawDevice struct {
	f  *image.OSFile
	ro bool
}

// OpenRaw opens the file at path as a raw device.
func OpenRaw(path string, o image.FileOptions) (*RawDevice, error) {
	f, err := image.OpenFileOptions(path, o)
	if err != nil {
		return nil, err
	}
	return &RawDevice{f: f, ro: o.ReadOnly}, nil
}

// Size returns the length of the file (of the device, for a block device).
func (r *RawDevice) Size() int64 {
	n, err := unix.Seek(int(r.f.Fd()), 0, unix.SEEK_END)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// DirectIOError says why direct I/O was asked for and not used (nil
// otherwise).
func (r *RawDevice) DirectIOError() error { return r.f.DirectIOError() }

// ReadOnly reports whether the file was opened read-only.
func (r *RawDevice) ReadOnly() bool { return r.ro }

// check refuses a request beyond the end of the file, as qemu's block
// layer does.
func (r *RawDevice) check(off, n int64) error {
	if size := r.Size(); off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("%w: %d bytes at offset 0x%x, file size 0x%x", image.ErrOutOfRange, n, off, size)
	}
	if r.ro {
		return image.ErrReadOnly
	}
	return nil
}

// ReadAt reads len(p) bytes at off.
func (r *RawDevice) ReadAt(p []byte, off int64) (int, error) {
	if size := r.Size(); off < 0 || off > size || int64(len(p)) > size-off {
		return 0, fmt.Errorf("%w: %d bytes at offset 0x%x, file size 0x%x", image.ErrOutOfRange, len(p), off, size)
	}
	n, err := r.f.ReadAt(p, off)
	if n == len(p) {
		err = nil
	}
	return n, err
}

// WriteAt writes p at off.
func (r *RawDevice) WriteAt(p []byte, off int64) (int, error) {
	if err := r.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	return r.f.WriteAt(p, off)
}

// WriteZeroes makes n bytes at off read as zeroes, their space kept.
func (r *RawDevice) WriteZeroes(off, n int64) error {
	if err := r.check(off, n); err != nil {
		return err
	}
	return r.f.ZeroRange(off, n)
}

// WriteZeroesUnmap makes n bytes at off read as zeroes, punching a hole
// where the file system can.
func (r *RawDevice) WriteZeroesUnmap(off, n int64) error {
	if err := r.check(off, n); err != nil {
		return err
	}
	if err := r.punch(off, n); err != nil {
		return r.f.ZeroRange(off, n)
	}
	return nil
}

// Discard punches a hole over n bytes at off (they read as zeroes).
func (r *RawDevice) Discard(off, n int64) error {
	if err := r.check(off, n); err != nil {
		return err
	}
	if err := r.punch(off, n); err != nil && !errors.Is(err, syscall.EOPNOTSUPP) {
		return err
	}
	return nil
}

func (r *RawDevice) punch(off, n int64) error {
	if n == 0 {
		return nil
	}
	for {
		err := unix.Fallocate(int(r.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// Flush makes every completed write durable. A special file that cannot
// be synced (EINVAL: /dev/null) has nothing to make durable.
func (r *RawDevice) Flush() error {
	if err := r.f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// Resize sets the file length (shrink must be set to make it smaller).
func (r *RawDevice) Resize(size uint64, shrink bool) error {
	if r.ro {
		return image.ErrReadOnly
	}
	if int64(size) < r.Size() && !shrink {
		return image.ErrShrinkNotAllowed
	}
	if err := r.f.Truncate(int64(size)); err != nil {
		return err
	}
	return r.Flush()
}

// Close syncs (when writable) and closes the file, releasing its locks.
func (r *RawDevice) Close() error {
	var err error
	if !r.ro {
		err = r.Flush()
	}
	if e := r.f.Close(); err == nil {
		err = e
	}
	return err
}
