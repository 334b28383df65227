package create

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/zqimg/zqimg/pkg/blockdev"
	"github.com/zqimg/zqimg/pkg/image"
)

// BackingList returns the -o list that sets backing_file to file (when
// fileSet) and backing_fmt to format (when not empty), commas escaped:
// given after the -o lists, it overrides them as qemu-img create's -b
// and -F do. It returns "" when there is nothing to set.
func BackingList(file string, fileSet bool, format string) string {
	var items []string
	if fileSet {
		items = append(items, "backing_file="+strings.ReplaceAll(file, ",", ",,"))
	}
	if format != "" {
		items = append(items, "backing_fmt="+strings.ReplaceAll(format, ",", ",,"))
	}
	return strings.Join(items, ",")
}

// Backing returns the backing file name and format the options give (""
// when unset); set reports whether backing_file was given at all.
func (o *Options) Backing() (file, format string, set bool) {
	v, set := o.set["backing_file"]
	return v.text, o.str("backing_fmt", ""), set
}

// BackingOpenError is a backing file that cannot be opened, worded as
// qemu-img's "Could not open 'PATH': Reason"; Hint is qemu-img's second line.
type BackingOpenError struct {
	Path string // the backing file's path, resolved against the new image's directory
	Err  error
}

func (e *BackingOpenError) Error() string {
	var fe *image.FormatError
	if errors.As(e.Err, &fe) && fe.Off == image.HdrMagic && strings.HasPrefix(fe.Msg, "bad magic") {
		return "Image is not in qcow2 format" // qemu-img's words for a backing file of another format
	}
	return fmt.Sprintf("Could not open '%s': %s", e.Path, reason(e.Err))
}

func (e *BackingOpenError) Unwrap() error { return e.Err }

// QEMUMessage is qemu-img create's message: the error of opening the
// backing file as QEMU words it (image.QEMUMessage), without a prefix
// ("Could not open 'PATH': No such file or directory", "qcow2 header
// exceeds cluster size", "Unknown driver 'foo'").
func (e *BackingOpenError) QEMUMessage() string { return image.QEMUMessage(e.Err) }

// Hint is the line qemu-img prints after the error.
func (e *BackingOpenError) Hint() string { return "Could not open backing image." }

// ErrZonedBacking refuses a zoned image as a backing file: the zoned
// format gives unallocated space beyond a write pointer no backing data to
// show (docs/zones.md, "Backing files").
var ErrZonedBacking = errors.New("a zoned image cannot be a backing file (zoned images have no backing chain; docs/zones.md)")

// ResolveBacking applies qemu-img create's rules for a backing file,
// which come before the Formatting line: the name must be neither empty
// nor the new image's own; unless noOpen (-u) the backing file is opened
// (without locks, as qemu-img does), its format must be given, and an
// unset size is taken from it (its virtual size, a whole number of
// 512-byte sectors). Without a size and a backing file to take it from,
// it returns ErrNoSize.
func ResolveBacking(o *Options, filename string, noOpen bool) error {
	file, format, set := o.Backing()
	if set {
		if file == filename {
			return &OptionError{Msg: "Error: Trying to create an image with the same filename as the backing file"}
		}
		if file == "" {
			return &OptionError{Msg: "Expected backing file name, got empty string"}
		}
		if !noOpen {
			path := blockdev.BackingPath(filename, file)
			d, err := blockdev.Open(path, blockdev.Options{Format: format, ForceShare: true})
			if err != nil {
				return &BackingOpenError{Path: path, Err: err}
			}
			defer d.Close()
			if d.Zoned() {
				return &OptionError{Msg: fmt.Sprintf("backing file '%s': %v", path, ErrZonedBacking)}
			}
			if format == "" {
				return &OptionError{Msg: "Backing file specified without backing format", Hint: "Detected format of " + d.Format() + "."}
			}
			if !o.has("size") {
				n := uint64(d.Size())
				o.set["size"] = value{text: strconv.FormatUint(n, 10), num: n}
			}
		} else if format == "" {
			return &OptionError{Msg: "Backing file specified without backing format"}
		}
	}
	if !o.has("size") {
		return ErrNoSize
	}
	return nil
}

// resolveBacking checks backing_file and backing_fmt against the other
// options and puts them in s.
func resolveBacking(o *Options, s *Spec) error {
	file, format, set := o.Backing()
	if !set && format != "" {
		return verr("backing_fmt", "Backing format cannot be used without backing file")
	}
	if !set {
		return nil
	}
	if file == "" {
		return verr("backing_file", "Expected backing file name, got empty string")
	}
	if s.Zone != nil {
		return verr("backing_file", "a zoned image cannot have a backing file: unallocated space beyond a write pointer and reset zones must read as zeroes, not as backing data (docs/zones.md)")
	}
	s.Image.BackingFile, s.Image.BackingFormat = file, format
	return nil
}
