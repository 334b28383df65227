// Package amend is the `zqimg amend` command.
package amend

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/internal/progress"
	pamend "github.com/zqimg/zqimg/pkg/amend"
	"github.com/zqimg/zqimg/pkg/image"
)

// Options are the parsed flags and arguments of `zqimg amend`.
type Options struct {
	IO     *cmdutil.IOStreams
	Opts   []string
	Format string
	Quiet  bool
	// Progress is -p: qemu-img's progress line (a version change reports
	// its steps).
	Progress bool
	File     string
}

// NewCmdAmend returns the amend command; runF replaces the default run
// function in tests.
func NewCmdAmend(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "amend -o OPTIONS [-f qcow2] [-p] [-q] FILE",
		Short: "Change options of an existing image (compat, lazy refcounts, size, zone limits)",
		Long: `Change options of an existing image, as qemu-img amend does. zqimg amends
compat (0.10 or 1.1: the qcow2 version, down or up), lazy_refcounts, size,
and on zoned images zone.max_open_zones,
zone.max_active_zones and zone.max_append_bytes; "-o help" lists them.
The zone limits are validated as create validates them, and against the
zones now (an active limit below the zones active now is refused). The
header changes in one atomic write. -p shows qemu-img's progress line.`,
		Example: `  zqimg amend -o zone.max_open_zones=4,zone.max_active_zones=8 zbc.qcow2
  zqimg amend -o lazy_refcounts=on disk.qcow2`,
		Args: cmdutil.ExactlyOneFile,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.File = args[0]
			if len(o.Opts) == 0 {
				return fmt.Errorf("Must specify options (-o)")
			}
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	cmd.Flags().StringArrayVarP(&o.Opts, "options", "o", nil, "comma-separated options to change; repeatable; 'help' lists them")
	cmd.Flags().StringVarP(&o.Format, "format", "f", "qcow2", "image format (only qcow2)")
	cmd.Flags().BoolVarP(&o.Quiet, "quiet", "q", false, "quiet")
	cmd.Flags().BoolVarP(&o.Progress, "progress", "p", false, "show progress (qemu-img's line)")
	return cmd
}

// Run amends the image.
func Run(o *Options) error {
	ios := o.IO
	opts, err := pamend.ParseOptions(o.Opts)
	if errors.Is(err, pamend.ErrHelp) {
		fmt.Fprint(ios.Out, pamend.Help())
		return nil
	}
	if err == nil && o.Format != "qcow2" {
		err = fmt.Errorf("Unknown file format '%s' (zqimg amends qcow2 images only)", o.Format)
	}
	if err == nil {
		var bar *progress.Bar
		if o.Progress && !o.Quiet {
			// qemu-img amend -p: 0% at once, the amend's steps, and a
			// final 100% frame.
			bar = progress.New(ios.Out, 100)
			opts.Progress = func(done, total int64) {
				if done == 0 {
					bar.Repeat() // qemu-img prints 0% again
					return
				}
				bar.Update(done, total)
			}
		}
		var warnings []string
		warnings, err = pamend.Amend(o.File, opts)
		if bar != nil {
			bar.Complete()
		}
		for _, w := range warnings {
			ios.Warnf("%s", w)
		}
	}
	if err == nil {
		return nil
	}
	var oe *pamend.OptionError
	if errors.As(err, &oe) {
		ios.Errorf("%s", oe.Msg)
		if oe.Hint != "" {
			fmt.Fprintln(ios.ErrOut, oe.Hint)
		}
		return cmdutil.Exit(1)
	}
	var ve *image.VersionError
	if errors.As(err, &ve) {
		// qemu-img's words, without the file name.
		ios.Errorf("%s", ve.Msg)
		return cmdutil.Exit(1)
	}
	if errors.Is(err, image.ErrZeroAdded) {
		ios.Errorf("%v", image.ErrZeroAdded) // qemu-img's words
		return cmdutil.Exit(1)
	}
	var pe *pamend.OpenError
	if errors.As(err, &pe) {
		ios.Errorf("%s", ios.OpenError(pe.Path, pe.Err))
		return cmdutil.Exit(1)
	}
	ios.Errorf("%s: %v", o.File, err)
	return cmdutil.Exit(1)
}
