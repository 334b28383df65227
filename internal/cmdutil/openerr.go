package cmdutil

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/zqimg/zqimg/pkg/image"
)

// QEMU reports whether zqimg runs as qemu-img or qemu-io (argv[0]), when
// it words its messages as QEMU 7.2 does.
func (s *IOStreams) QEMU() bool { return s.Prog == "qemu-img" || s.Prog == "qemu-io" }

// Reason returns what is printed of the failure to open an image after
// "Could not open 'FILE': " or "can't open device FILE: ": as zqimg,
// err's own (often more detailed) message; as qemu-img or qemu-io, QEMU's
// wording of it (image.QEMUMessage).
func (s *IOStreams) Reason(err error) string {
	if s.QEMU() {
		return image.QEMUMessage(err)
	}
	return err.Error()
}

// OpenError formats the failure to open the image at path as qemu-img
// does: "Could not open 'FILE': REASON" (see Reason), with qemu-img's
// wording for a missing file ("Could not open 'FILE': Could not open
// 'FILE': No such file or directory").
func (s *IOStreams) OpenError(path string, err error) string {
	if s.QEMU() {
		return fmt.Sprintf("Could not open '%s': %s", path, image.QEMUMessage(err))
	}
	var be *image.BackingFileError
	if errors.Is(err, fs.ErrNotExist) && !errors.As(err, &be) {
		return fmt.Sprintf("Could not open '%s': Could not open '%s': No such file or directory", path, path)
	}
	return fmt.Sprintf("Could not open '%s': %v", path, err)
}

// CouldNotOpen is "Could not open 'FILE': REASON" (see Reason): as zqimg,
// err's message as it is, a missing file included.
func (s *IOStreams) CouldNotOpen(path string, err error) string {
	return fmt.Sprintf("Could not open '%s': %s", path, s.Reason(err))
}
