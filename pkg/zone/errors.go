package zone

import (
	"errors"
	"fmt"
	"syscall"
)

// Sentinel errors for zone rule violations; test them with errors.Is.
var (
	ErrNotZoned          = errors.New("image is not zoned")
	ErrNotAtWritePointer = errors.New("write is not at the zone's write pointer")
	ErrBeyondCapacity    = errors.New("write exceeds the zone capacity")
	ErrCrossesZone       = errors.New("write crosses from a conventional into a sequential zone")
	ErrTooManyOpen       = errors.New("too many open zones")
	ErrTooManyActive     = errors.New("too many active zones")
	ErrConventional      = errors.New("operation not allowed on a conventional zone")
	ErrNotZoneStart      = errors.New("offset is not the start of a zone")
	ErrBadLength         = errors.New("length is not a whole number of zones")
	ErrBeyondDevice      = errors.New("offset is at or beyond the end of the device")
	ErrAppendTooLarge    = errors.New("append exceeds max_append_bytes")
	ErrAppendGranularity = errors.New("append length is not a multiple of 512 bytes")
	ErrSequentialDiscard = errors.New("discard is not supported in sequential zones (use a zone reset)")
	ErrBadTable          = errors.New("invalid write-pointer table")
	ErrUnaligned         = errors.New("sequential zones take offsets and lengths in multiples of 512 bytes")
	ErrZoneReadOnly      = errors.New("zone is read-only")
	ErrZoneOffline       = errors.New("zone is offline")
	ErrBadFaultPlan      = errors.New("invalid zone fault plan")
)

// Error is a zone rule violation: Err is one of the sentinels, Msg says
// which zone, offset, write pointer or limit was involved, and Code is the
// errno QEMU returns for it.
type Error struct {
	Err  error
	Code syscall.Errno
	Msg  string
}

func (e *Error) Error() string        { return e.Msg }
func (e *Error) Unwrap() error        { return e.Err }
func (e *Error) Errno() syscall.Errno { return e.Code }

func zerr(sentinel error, code syscall.Errno, format string, args ...any) error {
	return &Error{Err: sentinel, Code: code, Msg: fmt.Sprintf(format, args...)}
}
