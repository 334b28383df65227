// Package cmdutil holds what the zqimg commands share: their I/O streams
// and the way errors become messages and exit codes.
package cmdutil

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/zqimg/zqimg/pkg/units"
)

// Prog is the default program name used as the prefix of messages.
const Prog = "zqimg"

// IOStreams are a command's standard streams.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	// Prog is the program name prefixed to messages; "" means Prog
	// ("zqimg"). It is "qemu-img" or "qemu-io" when zqimg runs under
	// those names.
	Prog string
}

// ProgName returns the program name messages are prefixed with.
func (s *IOStreams) ProgName() string {
	if s.Prog == "" {
		return Prog
	}
	return s.Prog
}

// ExitError ends the command with Code; its messages were already printed.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Exit returns an error that makes the command exit with code.
func Exit(code int) error {
	if code == 0 {
		return nil
	}
	return &ExitError{Code: code}
}

// Errorf prints "zqimg: message" on the error stream.
func (s *IOStreams) Errorf(format string, args ...any) {
	fmt.Fprintf(s.ErrOut, s.ProgName()+": "+format+"\n", args...)
}

// Warnf prints "zqimg: warning: message" on the error stream.
func (s *IOStreams) Warnf(format string, args ...any) {
	fmt.Fprintf(s.ErrOut, s.ProgName()+": warning: "+format+"\n", args...)
}

// Fail prints err as "zqimg: message" and returns an exit status of 1.
func (s *IOStreams) Fail(err error) error {
	s.Errorf("%v", err)
	return Exit(1)
}

// ExactlyOneFile is a cobra.PositionalArgs requiring a single image file,
// with qemu-img's message for any other count (qemu-img info, check, map,
// ... print "Expecting one image file name" for none and for several).
func ExactlyOneFile(_ *cobra.Command, args []string) error {
	if len(args) != 1 {
		//lint:ignore ST1005 qemu-img's message
		return errors.New("Expecting one image file name")
	}
	return nil
}

// Operands is a cobra.PositionalArgs requiring exactly the named operands
// (the first is the image file), with qemu-img's wording: "Expecting image
// file name" or "Expecting NAME" for a missing one, "Unexpected argument:
// X" for one too many.
func Operands(names ...string) func(*cobra.Command, []string) error {
	return func(_ *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			//lint:ignore ST1005 qemu-img's message
			return errors.New("Expecting image file name")
		case len(args) < len(names):
			//lint:ignore ST1005 qemu-img's wording
			return fmt.Errorf("Expecting %s", names[len(args)])
		case len(args) > len(names):
			//lint:ignore ST1005 qemu-img's message
			return fmt.Errorf("Unexpected argument: %s", args[len(names)])
		}
		return nil
	}
}

// AtMostFileAndSize is a cobra.PositionalArgs for [FILE [SIZE]] with
// qemu-img create's message for more: "Unexpected argument: X". (A missing
// FILE is reported by the command, after "-o help" had its chance.)
func AtMostFileAndSize(_ *cobra.Command, args []string) error {
	if len(args) > 2 {
		//lint:ignore ST1005 qemu-img's message
		return fmt.Errorf("Unexpected argument: %s", args[2])
	}
	return nil
}

// CacheFlags adds qemu-io's cache options to fs: -t/--cache MODE and, with
// nocache, -n/--nocache (short for -t none). Both set *mode, so the last
// one given wins, as in qemu-io. The value is checked by image.ParseCacheMode.
func CacheFlags(fs *pflag.FlagSet, mode *string, nocache bool) {
	fs.StringVarP(mode, "cache", "t", "writethrough", "cache mode: writethrough, writeback, unsafe, none or directsync")
	if nocache {
		f := fs.VarPF(nocacheValue{mode}, "nocache", "n", "disable the host page cache, short for -t none")
		f.NoOptDefVal = "true"
	}
}

// nocacheValue is the boolean flag -n: setting it sets the cache mode to none.
type nocacheValue struct{ mode *string }

func (v nocacheValue) String() string { return "false" }

func (v nocacheValue) Set(s string) error {
	on, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	if on {
		*v.mode = "none"
	}
	return nil
}

func (v nocacheValue) Type() string     { return "bool" }
func (v nocacheValue) IsBoolFlag() bool { return true }

// WarnDirectIO prints a warning when the cache mode asked for O_DIRECT but
// the image's file system refused it (the image is then used through the
// page cache; writethrough/flush durability is unchanged).
func (s *IOStreams) WarnDirectIO(img interface{ DirectIOError() error }) {
	if err := img.DirectIOError(); err != nil {
		s.Warnf("%v", err)
	}
}

// Cvtnum parses a size option value as qemu-img's cvtnum_full: a size
// with qemu's suffixes, between lo and hi. On a bad value it prints
// qemu-img's message naming the option and returns an exit error.
func Cvtnum(ios *IOStreams, name, value string, lo, hi int64) (int64, error) {
	v, err := units.ParseSize(value)
	if err != nil && !errors.Is(err, units.ErrRange) {
		return 0, SizeSyntaxError(ios, name)
	}
	if err != nil || v > uint64(hi) || int64(v) < lo {
		ios.Errorf("Invalid %s specified. Must be between %d and %d.", name, lo, hi)
		return 0, Exit(1)
	}
	return int64(v), nil
}

// SizeSyntaxError prints qemu-img's two-line message for a size option
// that does not parse, and returns an exit error.
func SizeSyntaxError(ios *IOStreams, name string) error {
	ios.Errorf("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", name)
	ios.Errorf("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
	return Exit(1)
}

// FileOperand returns the file an image operand names, as qemu reads a
// "file:" protocol prefix: the rest of the operand, with "./" before a
// relative name that would otherwise read as another protocol
// ("file:image:top.qcow2" is "./image:top.qcow2", the name qemu-img shows
// and resolves a backing file against). Other operands are returned as
// they are.
func FileOperand(arg string) string {
	p, ok := strings.CutPrefix(arg, "file:")
	if !ok {
		return arg
	}
	if i := strings.IndexByte(p, ':'); i >= 0 && !strings.Contains(p[:i], "/") {
		p = "./" + p
	}
	return p
}
