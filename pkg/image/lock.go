package image

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// QEMU's file driver expresses block-layer permissions as OFD byte-range
// locks: a shared lock on byte 100+i while it uses permission i, and on byte
// 200+i while it refuses to share permission i with others. A process
// checks for conflicts by probing with an exclusive lock. Permission bits:
const (
	permConsistentRead = 1 << 0
	permWrite          = 1 << 1
	permWriteUnchanged = 1 << 2
	permResize         = 1 << 3
	numPerms           = 4

	lockPermBase   = 100
	lockSharedBase = 200
)

var permNames = [numPerms]string{"consistent read", "write", "write unchanged", "resize"}

// permsFor returns the permissions used and shared by a reader or a writer,
// the same ones qemu-io and qemu-img take on a qcow2 image file.
func permsFor(readOnly bool) (perm, shared uint) {
	if readOnly {
		return permConsistentRead, permConsistentRead | permWriteUnchanged
	}
	return permConsistentRead | permWrite | permResize, permConsistentRead | permWriteUnchanged
}

// Lock takes the image locks for a reader or a writer on f and fails with a
// *LockError if another process holds a conflicting lock. The locks are
// released when f is closed.
func Lock(f *os.File, path string, readOnly bool) error {
	perm, shared := permsFor(readOnly)
	fd := int(f.Fd())
	for i := 0; i < numPerms; i++ {
		if perm&(1<<i) != 0 {
			if err := ofdLock(fd, lockPermBase+int64(i)); err != nil {
				return &LockError{Path: path, Msg: fmt.Sprintf("Failed to lock byte %d", lockPermBase+i)}
			}
		}
		if shared&(1<<i) == 0 {
			if err := ofdLock(fd, lockSharedBase+int64(i)); err != nil {
				return &LockError{Path: path, Msg: fmt.Sprintf("Failed to lock byte %d", lockSharedBase+i)}
			}
		}
	}
	for i := 0; i < numPerms; i++ {
		if perm&(1<<i) != 0 {
			if busy, err := ofdLocked(fd, lockSharedBase+int64(i)); err != nil || busy {
				return &LockError{Path: path, Msg: fmt.Sprintf("Failed to get %q lock", permNames[i])}
			}
		}
	}
	for i := 0; i < numPerms; i++ {
		if shared&(1<<i) == 0 {
			if busy, err := ofdLocked(fd, lockPermBase+int64(i)); err != nil || busy {
				return &LockError{Path: path, Msg: fmt.Sprintf("Failed to get shared %q lock", permNames[i])}
			}
		}
	}
	return nil
}

// CheckUnlocked reports, without keeping any lock, whether path could be
// opened for writing: it fails with a *LockError when another process uses
// the image. A missing file is not an error.
func CheckUnlocked(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return err
	}
	return Lock(f, path, false)
}

func ofdLock(fd int, off int64) error {
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: off, Len: 1}
	return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
}

func ofdLocked(fd int, off int64) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: 1}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
		return false, err
	}
	return lk.Type != unix.F_UNLCK, nil
}
