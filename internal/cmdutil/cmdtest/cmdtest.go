// Package cmdtest runs a zqimg Cobra command with its run function
// replaced, as the GitHub CLI tests its commands: the test sees the options
// the flags and arguments produced, without touching any image.
package cmdtest

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
)

// Streams returns IOStreams over buffers (standard input empty).
func Streams() (*cmdutil.IOStreams, *bytes.Buffer, *bytes.Buffer) {
	var out, errOut bytes.Buffer
	return &cmdutil.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, &out, &errOut
}

// Run executes cmd with args (a command line split on spaces) and returns
// Cobra's error (argument and flag errors; nil when the run function ran).
func Run(cmd *cobra.Command, args string) error {
	cmd.SetArgs(strings.Fields(args))
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	var sink bytes.Buffer
	cmd.SetOut(&sink)
	cmd.SetErr(&sink)
	return cmd.Execute()
}

// Parse runs the command newCmd builds with args (a command line split on
// spaces) and its run function replaced: it returns the options the flags
// and arguments produced (nil when the run function was not reached) and
// Cobra's error (argument and flag errors).
func Parse[O any](newCmd func(*cmdutil.IOStreams, func(*O) error) *cobra.Command, args string) (*O, error) {
	ios, _, _ := Streams()
	var got *O
	err := Run(newCmd(ios, func(o *O) error { got = o; return nil }), args)
	return got, err
}

// Case is a command line (split on spaces) and the options it must give
// the run function; Want nil means the command must refuse the line
// before running.
type Case[O any] struct {
	Args string
	Want *O
}

// CheckFlags runs each case through Parse and compares the options with
// reflect.DeepEqual, after clear has zeroed what a test cannot build (the
// IOStreams).
func CheckFlags[O any](t *testing.T, newCmd func(*cmdutil.IOStreams, func(*O) error) *cobra.Command, clear func(*O), cases []Case[O]) {
	t.Helper()
	for _, c := range cases {
		got, err := Parse(newCmd, c.Args)
		if c.Want == nil {
			if err == nil || got != nil {
				t.Errorf("%q: ran with %+v, want an error", c.Args, got)
			}
			continue
		}
		if err != nil || got == nil {
			t.Errorf("%q: %v", c.Args, err)
			continue
		}
		clear(got)
		if !reflect.DeepEqual(*got, *c.Want) {
			t.Errorf("%q:\n got %+v\nwant %+v", c.Args, *got, *c.Want)
		}
	}
}
