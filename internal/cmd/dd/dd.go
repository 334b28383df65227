// Package dd is the `zqimg dd` command.
package dd

import (
	"errors"
	"math"
	"strings"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/pkg/blockdev"
	pconvert "github.com/zqimg/zqimg/pkg/convert"
)

// Options are the parsed flags and operands of `zqimg dd`.
type Options struct {
	IO         *cmdutil.IOStreams
	Format     string // -f: the input's format ("": probe)
	OutFormat  string // -O
	ForceShare bool   // -U
	Operands   []string
}

// NewCmdDD returns the dd command; runF replaces the default run function
// in tests.
func NewCmdDD(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "dd [-f FMT] [-O OUTPUT_FMT] [-U] [bs=BLOCK_SIZE] [count=BLOCKS] [skip=BLOCKS] if=INPUT of=OUTPUT",
		Short: "Copy INPUT into a new image OUTPUT block by block, as qemu-img dd",
		Long: `Copy INPUT into a new image OUTPUT (format OUTPUT_FMT, raw by default,
or qcow2), as qemu-img dd does: blocks of BLOCK_SIZE bytes (default 512;
qemu's size suffixes), from block skip=BLOCKS of INPUT, up to block
count=BLOCKS of INPUT counted from its start (qemu-img's reading of
count). Every block is written, zeroes included. A skip beyond the end of
INPUT leaves an empty OUTPUT, with a warning. OUTPUT is built beside its
place and put there complete, as create puts a new image.`,
		Example: `  zqimg dd if=disk.qcow2 of=disk.raw bs=1M
  zqimg dd -O qcow2 bs=64k skip=16 count=32 if=disk.qcow2 of=part.qcow2`,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Operands = args
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.Format, "format", "f", "", "format of INPUT: qcow2 or raw (default: probe)")
	f.StringVarP(&o.OutFormat, "output-format", "O", "raw", "format of OUTPUT: raw or qcow2")
	f.BoolVarP(&o.ForceShare, "force-share", "U", false, "open INPUT without taking locks")
	return cmd
}

// Run parses the operands and copies.
func Run(o *Options) error {
	ios := o.IO
	r := pconvert.DDRequest{Format: o.OutFormat, BlockSize: 512}
	var in string
	var haveIn, haveOut bool
	for _, op := range o.Operands {
		name, val, ok := strings.Cut(op, "=")
		var err error
		switch {
		case !ok:
			err = unrecognized(ios, op)
		case name == "bs":
			r.BlockSize, err = cmdutil.Cvtnum(ios, "bs", val, 1, math.MaxInt32)
		case name == "count":
			r.Count, err = cmdutil.Cvtnum(ios, "count", val, 0, math.MaxInt64)
			r.HasCount = true
		case name == "skip":
			r.Skip, err = cmdutil.Cvtnum(ios, "skip", val, 0, math.MaxInt64)
		case name == "if":
			in, haveIn = val, true
		case name == "of":
			r.Dest, haveOut = val, true
		default:
			err = unrecognized(ios, name)
		}
		if err != nil {
			return err
		}
	}
	if !haveIn || !haveOut {
		ios.Errorf("Must specify both input and output files")
		return cmdutil.Exit(1)
	}
	if o.OutFormat != blockdev.Raw && o.OutFormat != blockdev.Qcow2 {
		ios.Errorf("Unknown file format")
		return cmdutil.Exit(1)
	}
	src, err := blockdev.Open(in, blockdev.Options{Format: o.Format, ForceShare: o.ForceShare})
	if err != nil {
		ios.Errorf("%s", ios.OpenError(in, err))
		return cmdutil.Exit(1)
	}
	defer src.Close()
	r.Source = src
	err = pconvert.DD(r)
	var ce *pconvert.CreateError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pconvert.ErrSkipBeyondEnd):
		ios.Errorf("%s: %v", in, err) // a warning: the empty output stays
		return nil
	case errors.As(err, &ce):
		ios.Errorf("%s: error while creating output image: %v", r.Dest, ce.Err)
	default:
		ios.Errorf("%v", err)
	}
	return cmdutil.Exit(1)
}

// unrecognized prints qemu-img dd's message for an operand it does not
// know.
func unrecognized(ios *cmdutil.IOStreams, op string) error {
	ios.Errorf("unrecognized operand %s", op)
	return cmdutil.Exit(1)
}
