// Package cmdtest runs a zqimg Cobra command with its run function
// replaced, as the GitHub CLI tests its commands: the test sees the options
// the flags and arguments produced, without touching any image.
package cmdtest

import (
	"bytes"
	"strings"

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
