package image

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// Sentinel errors. Each maps to the errno QEMU would return for the same
// failure (see Errno), so that callers can print qemu-io's failure lines.
var (
	// ErrOutOfRange: a request reaches past the end of the virtual disk.
	ErrOutOfRange = errors.New("request beyond the end of the image")
	// ErrReadOnly: a write to an image opened read-only.
	ErrReadOnly = errors.New("image is opened read-only")
	// ErrTruncated: a structure lies (partly) past the end of the file.
	ErrTruncated = errors.New("image file is truncated")
	// ErrCorrupt: metadata is inconsistent; the image is (or was) marked corrupt.
	ErrCorrupt = errors.New("image is corrupt")
	// ErrDirty: the image has the dirty bit set and cannot be written.
	ErrDirty = errors.New("image is dirty")
	// ErrUnaligned: an argument is not aligned as required.
	ErrUnaligned = errors.New("request is not aligned")
	// ErrClosed: the image was closed.
	ErrClosed = errors.New("image is closed")
)

// UnsupportedFeatureError lists incompatible features this implementation
// cannot handle, named from the image's feature name table when present.
type UnsupportedFeatureError struct {
	Names []string
}

func (e *UnsupportedFeatureError) Error() string {
	return "Unsupported qcow2 feature(s): " + strings.Join(e.Names, ", ")
}

// Errno returns EOPNOTSUPP, as QEMU does for an unsupported feature.
func (e *UnsupportedFeatureError) Errno() syscall.Errno { return syscall.ENOTSUP }

// LockError reports that another process holds the image in a conflicting
// way. Its message matches QEMU's.
type LockError struct {
	Path string
	Msg  string // e.g. `Failed to get "write" lock`
}

func (e *LockError) Error() string {
	return fmt.Sprintf("%s\nIs another process using the image [%s]?", e.Msg, e.Path)
}

// Errno returns EAGAIN like QEMU's file driver.
func (e *LockError) Errno() syscall.Errno { return syscall.EAGAIN }

// CorruptionError describes metadata found to be inconsistent while serving
// a request. It wraps ErrCorrupt.
type CorruptionError struct {
	Off int64 // file offset of the bad structure, -1 if unknown
	Msg string
}

func (e *CorruptionError) Error() string {
	if e.Off < 0 {
		return "image is corrupt: " + e.Msg
	}
	return fmt.Sprintf("image is corrupt: %s (at offset 0x%x)", e.Msg, e.Off)
}

func (e *CorruptionError) Unwrap() error { return ErrCorrupt }

// Errno returns EIO.
func (e *CorruptionError) Errno() syscall.Errno { return syscall.EIO }

// Errno maps an error from this package (or one wrapping it) to the errno
// QEMU reports for the same condition; EIO when nothing more precise fits.
func Errno(err error) syscall.Errno {
	var en interface{ Errno() syscall.Errno }
	if errors.As(err, &en) {
		return en.Errno()
	}
	var se syscall.Errno
	if errors.As(err, &se) {
		return se
	}
	switch {
	case errors.Is(err, ErrOutOfRange), errors.Is(err, ErrCorrupt), errors.Is(err, ErrTruncated):
		return syscall.EIO
	case errors.Is(err, ErrReadOnly):
		return syscall.EACCES
	case errors.Is(err, ErrUnaligned):
		return syscall.EINVAL
	case errors.Is(err, ErrDirty):
		return syscall.EPERM
	}
	return syscall.EIO
}

// beyondEOF reports whether host offset off lies at or beyond the end of
// the image file. A table entry pointing there is corrupt: a read would
// invent zeroes and a write would grow the file up to it (a terabyte for
// an entry of 1 TiB), as would refcount bookkeeping sized by it.
func (img *Image) beyondEOF(off uint64) bool {
	if off < img.fileEnd.Load() {
		return false
	}
	n, err := img.raw.Size()
	if err != nil || n < 0 {
		return false // the read or write that follows reports the error
	}
	img.fileEnd.Store(uint64(n))
	return off >= uint64(n)
}

// beyondEOFError describes a host offset named by what that lies beyond
// the end of the file. It does not mark the image corrupt: nothing is
// written, so that the image stays as it was for check to report.
func (img *Image) beyondEOFError(off uint64, what string) error {
	n, _ := img.raw.Size()
	return &CorruptionError{Off: -1, Msg: fmt.Sprintf("%s at host offset 0x%x lies beyond the end of the file (%d bytes); run 'zqimg check' on the image", what, off, n)}
}
