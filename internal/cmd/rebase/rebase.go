// Package rebase is the `zqimg rebase` command.
package rebase

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/internal/progress"
	prebase "github.com/zqimg/zqimg/pkg/rebase"
)

// Options are the parsed flags and arguments of `zqimg rebase`.
type Options struct {
	IO            *cmdutil.IOStreams
	Format        string // -f
	Backing       string // -b
	HasBacking    bool   // -b was given (possibly "")
	BackingFormat string // -F
	Unsafe        bool   // -u
	Progress      bool   // -p
	Quiet         bool   // -q
	File          string
}

// NewCmdRebase returns the rebase command; runF replaces the default run
// function in tests.
func NewCmdRebase(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "rebase [-f qcow2] [-u] [-p] [-q] -b BACKING [-F FMT] FILE",
		Short: "Change the backing file of an image",
		Long: `Change the backing file of FILE to BACKING (format FMT), as qemu-img rebase
does. In safe mode (the default) the sectors that read differently through
the old backing chain and through BACKING are copied into FILE first, so
that the guest sees the same disk; -b "" copies everything the old chain
provides and removes the backing file. With -u only the header changes
(BACKING is not opened; without -b the backing file is removed). The
header switch is crash-safe. Zoned images have no backing file.`,
		Example: `  zqimg rebase -b new-base.qcow2 -F qcow2 overlay.qcow2
  zqimg rebase -b "" overlay.qcow2
  zqimg rebase -u -b moved/base.qcow2 -F qcow2 overlay.qcow2`,
		Args: cmdutil.ExactlyOneFile,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.File = args[0]
			o.HasBacking = cmd.Flags().Changed("backing")
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	cmd.Flags().StringVarP(&o.Format, "format", "f", "", "format of FILE (qcow2; probed when omitted)")
	cmd.Flags().StringVarP(&o.Backing, "backing", "b", "", "new backing file (\"\" removes it); relative to FILE's directory")
	cmd.Flags().StringVarP(&o.BackingFormat, "backing-format", "F", "", "format of the new backing file (qcow2 or raw)")
	cmd.Flags().BoolVarP(&o.Unsafe, "unsafe", "u", false, "change only the header; copy nothing")
	cmd.Flags().BoolVarP(&o.Progress, "progress", "p", false, "show the progress of the copy")
	cmd.Flags().BoolVarP(&o.Quiet, "quiet", "q", false, "print nothing (no progress)")
	return cmd
}

// Run rebases the image.
func Run(o *Options) error {
	ios := o.IO
	if !o.Unsafe && !o.HasBacking {
		ios.Errorf("Must specify backing file (-b) or use unsafe mode (-u)")
		fmt.Fprintln(ios.ErrOut, "Try 'zqimg --help' for more information")
		return cmdutil.Exit(1)
	}
	req := prebase.Request{File: o.File, Format: o.Format, Backing: o.Backing, BackingFormat: o.BackingFormat, Unsafe: o.Unsafe}
	var bar *progress.Bar
	if o.Progress && !o.Quiet {
		bar = progress.New(ios.Out, 1)
		req.Progress = func(done, total int64) { bar.Update(done, total) }
	}
	err := prebase.Rebase(req)
	if bar != nil {
		bar.Finish()
	}
	if err == nil {
		return nil
	}
	var oe *prebase.OpenError
	switch {
	case errors.As(err, &oe) && !errors.Is(err, prebase.ErrZoned):
		ios.Errorf("%s", ios.OpenError(oe.Path, oe.Err))
	default:
		ios.Errorf("%v", err)
	}
	return cmdutil.Exit(1)
}
