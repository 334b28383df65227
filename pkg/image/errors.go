package image

import (
	"errors"
	"fmt"
	"io/fs"
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

// QEMUMessage is Error: the message is QEMU's.
func (e *UnsupportedFeatureError) QEMUMessage() string { return e.Error() }

// Errno returns EOPNOTSUPP, as QEMU does for an unsupported feature.
func (e *UnsupportedFeatureError) Errno() syscall.Errno { return syscall.ENOTSUP }

// QEMUWorded is implemented by errors that know how QEMU 7.2 words the
// same failure when it opens an image: "qcow2 header exceeds cluster
// size", "Could not open backing file: ...". zqimg's own message (Error)
// is often more detailed; a command run as qemu-img or qemu-io prints
// QEMUMessage instead (see QEMUMessage).
type QEMUWorded interface {
	QEMUMessage() string
}

// QEMUMessage returns QEMU's wording of err, the reason qemu-img prints
// after "Could not open 'FILE': " and qemu-io after "can't open device
// FILE: ": that of the first error of err's chain that knows it
// (QEMUWorded); for a file that cannot be opened (*fs.PathError of an
// errno), QEMU's "Could not open 'PATH': Strerror"; else err.Error().
func QEMUMessage(err error) string {
	if err == nil {
		return ""
	}
	var q QEMUWorded
	if errors.As(err, &q) {
		return q.QEMUMessage()
	}
	var pe *fs.PathError
	var en syscall.Errno
	if errors.As(err, &pe) && errors.As(pe.Err, &en) {
		return fmt.Sprintf("Could not open '%s': %s", pe.Path, Strerror(en))
	}
	return err.Error()
}

// worded is err with QEMU's wording of it (QEMUWorded).
type worded struct {
	err  error
	qemu string
}

func (e *worded) Error() string       { return e.err.Error() }
func (e *worded) Unwrap() error       { return e.err }
func (e *worded) QEMUMessage() string { return e.qemu }

// Strerror returns the C library's description of en ("No such file or
// directory"): Go's, whose first letter is lower case, capitalised.
func Strerror(en syscall.Errno) string {
	s := en.Error()
	if s != "" && s[0] >= 'a' && s[0] <= 'z' {
		s = string(s[0]-'a'+'A') + s[1:]
	}
	return s
}

// BackingFileError is a failure to open an image's backing file.
type BackingFileError struct {
	Name string // the backing file name recorded in the image
	Err  error
}

func (e *BackingFileError) Error() string {
	return fmt.Sprintf("could not open backing file %q: %v", e.Name, e.Err)
}

func (e *BackingFileError) Unwrap() error { return e.Err }

// QEMUMessage is QEMU's "Could not open backing file: REASON".
func (e *BackingFileError) QEMUMessage() string {
	return "Could not open backing file: " + QEMUMessage(e.Err)
}

// BackingFormatError is a backing file format (the image's backing
// format extension) this package cannot read.
type BackingFormatError struct{ Format string }

func (e *BackingFormatError) Error() string {
	return fmt.Sprintf("backing file format %q is not supported (only qcow2 and raw)", e.Format)
}

// QEMUMessage is QEMU's "Unknown driver 'FORMAT'".
func (e *BackingFormatError) QEMUMessage() string {
	return fmt.Sprintf("Unknown driver '%s'", e.Format)
}

// LockError reports that another process holds the image in a conflicting
// way. Its message matches QEMU's.
type LockError struct {
	Path string
	Msg  string // e.g. `Failed to get "write" lock`
}

func (e *LockError) Error() string {
	return fmt.Sprintf("%s\nIs another process using the image [%s]?", e.Msg, e.Path)
}

// QEMUMessage is Error: the message is QEMU's.
func (e *LockError) QEMUMessage() string { return e.Error() }

// Errno returns EAGAIN like QEMU's file driver.
func (e *LockError) Errno() syscall.Errno { return syscall.EAGAIN }

// CorruptionError describes metadata found to be inconsistent while serving
// a request. It wraps ErrCorrupt.
type CorruptionError struct {
	Off int64 // file offset of the bad structure, -1 if unknown
	Msg string
	// QEMU is QEMU's description of the same corruption event ("Refblock
	// offset 0x20600 unaligned (reftable index: 0x1)"), "" when it has
	// none.
	QEMU string
	// First: this error is the one that marked the image corrupt (the
	// first corruption event found since the image was opened), for
	// which qemu-io prints "qcow2: Marking image as corrupt: QEMU;
	// further corruption events will be suppressed".
	First bool
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
