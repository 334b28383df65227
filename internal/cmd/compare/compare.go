// Package compare is the `zqimg compare` command.
package compare

import (
	"errors"
	"fmt"
	"github.com/zqimg/zqimg/internal/ioshell"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/internal/progress"
	"github.com/zqimg/zqimg/pkg/blockdev"
	pcompare "github.com/zqimg/zqimg/pkg/compare"
)

// Options are the parsed flags and arguments of `zqimg compare`.
type Options struct {
	IO         *cmdutil.IOStreams
	Format1    string
	Format2    string
	Strict     bool
	Quiet      bool
	Progress   bool
	ForceShare bool
	File1      string
	File2      string
}

// NewCmdCompare returns the compare command; runF replaces the default
// run function in tests.
func NewCmdCompare(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "compare [-f FMT] [-F FMT] [-s] [-q] [-p] [-U] FILE1 FILE2",
		Short: "Compare the contents of two images, and the zones of zoned images",
		Long: `Compare the guest contents of two images as qemu-img compare does, and
print "Images are identical." or where they first differ. Without -s,
images of different sizes are identical when the excess of the larger one
reads as zeroes; -s (strict) also fails on different sizes or a different
allocation. Zoned images also differ when their zone geometry or a write
pointer differs, and a zoned image never equals a plain one; data beyond
a write pointer reads as zeroes and never counts.

Exit status: 0 identical, 1 different, 2 an image could not be opened,
3 block status could not be read, 4 data could not be read.`,
		Example: `  zqimg compare a.qcow2 b.qcow2
  zqimg compare -f qcow2 -F raw disk.qcow2 disk.raw`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				//lint:ignore ST1005 the message is qemu-img's
				return errors.New("Expecting two image file names")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.File1, o.File2 = args[0], args[1]
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.Format1, "format", "f", "", "format of FILE1: qcow2 or raw (default: probe)")
	f.StringVarP(&o.Format2, "target-format", "F", "", "format of FILE2: qcow2 or raw (default: probe)")
	f.BoolVarP(&o.Strict, "strict", "s", false, "strict mode: fail on different sizes or allocation")
	f.BoolVarP(&o.Quiet, "quiet", "q", false, "print nothing (the exit status tells)")
	f.BoolVarP(&o.Progress, "progress", "p", false, "show progress")
	f.BoolVarP(&o.ForceShare, "force-share", "U", false, "open the images without taking locks")
	return cmd
}

// Run compares the images.
func Run(o *Options) error {
	ios := o.IO
	a, err := ioshell.OpenOperand(o.File1, blockdev.Options{Format: o.Format1, ForceShare: o.ForceShare}, false)
	if err != nil {
		ios.Errorf("%s", ios.CouldNotOpen(o.File1, err))
		return cmdutil.Exit(2)
	}
	defer a.Close()
	b, err := ioshell.OpenOperand(o.File2, blockdev.Options{Format: o.Format2, ForceShare: o.ForceShare}, false)
	if err != nil {
		ios.Errorf("%s", ios.CouldNotOpen(o.File2, err))
		return cmdutil.Exit(2)
	}
	defer b.Close()
	opts := pcompare.Options{Strict: o.Strict}
	var bar *progress.Bar
	if o.Progress && !o.Quiet {
		bar = progress.New(ios.Out, max(a.Size(), b.Size()))
		opts.Progress = bar.Update
	}
	res, err := pcompare.Compare(a, b, opts)
	if bar != nil {
		// qemu-img ends the progress line after the result.
		defer bar.Finish()
	}
	if err != nil {
		ios.Errorf("%v", err)
		if res != nil && res.SizeWarning && !o.Quiet {
			// qemu-img warned of the size mismatch before it read the
			// excess of the larger image, where the error came from;
			// its standard output reaches a pipe after the error (it is
			// buffered until exit), as here.
			fmt.Fprintln(ios.Out, "Warning: Image size mismatch!")
		}
		var ce *pcompare.Error
		if errors.As(err, &ce) {
			return cmdutil.Exit(ce.Code)
		}
		return cmdutil.Exit(2)
	}
	if !o.Quiet {
		for _, l := range res.Lines() {
			fmt.Fprintln(ios.Out, l)
		}
	}
	if res.Kind != pcompare.Identical {
		return cmdutil.Exit(1)
	}
	return nil
}
