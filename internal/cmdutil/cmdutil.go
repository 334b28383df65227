// Package cmdutil holds what the zqimg commands share: their I/O streams
// and the way errors become messages and exit codes.
package cmdutil

import (
	"errors"
	"fmt"
	"io"
)

// Prog is the program name used as the prefix of messages.
const Prog = "zqimg"

// IOStreams are a command's standard streams.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
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
	fmt.Fprintf(s.ErrOut, Prog+": "+format+"\n", args...)
}

// Warnf prints "zqimg: warning: message" on the error stream.
func (s *IOStreams) Warnf(format string, args ...any) {
	fmt.Fprintf(s.ErrOut, Prog+": warning: "+format+"\n", args...)
}

// Fail prints err as "zqimg: message" and returns an exit status of 1.
func (s *IOStreams) Fail(err error) error {
	s.Errorf("%v", err)
	return Exit(1)
}

// ExitCode maps the error a command returned to the process exit status.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 1
}

// ExactlyOneFile is a cobra.PositionalArgs requiring a single image file.
func ExactlyOneFile(cmd interface{ Name() string }, args []string) error {
	switch len(args) {
	case 0:
		return fmt.Errorf("expecting an image file name")
	case 1:
		return nil
	}
	return fmt.Errorf("expecting one image file name, got %d arguments: %v", len(args), args)
}
