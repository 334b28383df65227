// Package convert is the `zqimg convert` command.
package convert

import (
	"context"
	"errors"
	"fmt"
	"github.com/zqimg/zqimg/pkg/image"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/internal/ioshell"
	"github.com/zqimg/zqimg/internal/progress"
	"github.com/zqimg/zqimg/pkg/blockdev"
	pconvert "github.com/zqimg/zqimg/pkg/convert"
	pcreate "github.com/zqimg/zqimg/pkg/create"
	"github.com/zqimg/zqimg/pkg/units"
)

// Options are the parsed flags and arguments of `zqimg convert`.
type Options struct {
	IO         *cmdutil.IOStreams
	Progress   bool
	Compress   bool
	Quiet      bool
	Format     string
	OutFormat  string
	Opts       []string
	ForceShare bool
	// Src are the sources, concatenated in order into Dest.
	Src  []string
	Dest string
	// Sparse is -S as given ("" when not given): the zero detection size;
	// "0" writes every byte.
	Sparse string
	// Existing (-n) writes into the existing DST instead of creating it.
	Existing bool
	// Snapshot (-l) names an internal snapshot of Src to convert.
	Snapshot string
	// Backing (-B) and BackingFormat (-F) give DST a backing file.
	Backing, BackingFormat string
}

// NewCmdConvert returns the convert command; runF replaces the default
// run function in tests.
func NewCmdConvert(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "convert [-p] [-c] [-q] [-f FMT] [-O qcow2|raw] [-o OPTIONS]... [-S SIZE] [-n] [-B BACKING -F FMT] [-U] SRC [SRC...] DST",
		Short: "Copy an image into a new qcow2 or raw image, compressed or not, keeping zones and write pointers",
		Long: `Copy the image SRC into a new image DST (replaced if it exists) as
qemu-img convert does: -O names the output format (qcow2 or raw; default
raw), -o the creation options of a qcow2 output (as for create), -c
writes compressed clusters (zlib or zstd, per compression_type), -p shows
progress. Zeroes are not written: the output is sparse.

A zoned qcow2 keeps its zoned configuration and every write pointer (-o
may change cluster_size, refcount_bits, extended_l2, compression_type and
the zone limits); only data below write pointers is copied. Converted to
raw it gives the device's bytes (zeroes beyond write pointers). A plain
image converted with -o zone.mode=host-managed,... is imported as a zoned
device: each sequential zone's write pointer goes after its last non-zero
512-byte sector (zeroes at a zone's end cannot be told from unwritten
space: a warning says so).

-B BACKING -F FMT gives a qcow2 output a backing file and copies only the
source's top layer; -n writes into an existing DST instead of creating
it (-o is then refused); -S SIZE sets the zero detection size (0: fully
allocated output). Several plain SRC images are concatenated in order
(each but the last rounded up to 512 bytes), as by qemu-img.

The output is built in a temporary file and renamed into place when
complete and flushed; a failed conversion leaves no output behind.`,
		Example: `  zqimg convert -O qcow2 disk.raw disk.qcow2
  zqimg convert -p -c -O qcow2 -o cluster_size=1M,compression_type=zstd zbc.qcow2 small.qcow2
  zqimg convert -O qcow2 -o zone.mode=host-managed,zone.size=64M dev.raw zbc.qcow2`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				//lint:ignore ST1005 the message is qemu-img's
				return errors.New("Must specify image file name")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Src, o.Dest = args[:len(args)-1], args[len(args)-1]
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.Progress, "progress", "p", false, "show progress")
	f.BoolVarP(&o.Compress, "compress", "c", false, "write compressed clusters")
	f.BoolVarP(&o.Quiet, "quiet", "q", false, "quiet: no progress")
	f.StringVarP(&o.Format, "format", "f", "", "source format: qcow2 or raw (default: probe)")
	f.StringVarP(&o.OutFormat, "output-format", "O", "raw", "output format: qcow2 or raw")
	f.StringArrayVarP(&o.Opts, "options", "o", nil, "comma-separated creation options of a qcow2 output; repeatable; 'help' lists them")
	f.BoolVarP(&o.ForceShare, "force-share", "U", false, "open the source without taking locks")
	f.StringVarP(&o.Snapshot, "snapshot", "l", "", "convert this internal snapshot of SRC: ID or name, or snapshot.id=ID,snapshot.name=NAME")
	f.StringVarP(&o.Backing, "backing", "B", "", "give DST this backing file (relative to DST's directory): only SRC's top layer is copied")
	f.StringVarP(&o.BackingFormat, "backing-format", "F", "", "format of the -B backing file (qcow2 or raw)")
	f.BoolVarP(&o.Existing, "no-create", "n", false, "write into the existing DST (not zoned, at least SRC's size) instead of creating it")
	f.StringVarP(&o.Sparse, "sparse-size", "S", "", "zero runs this long (multiple of 512; default 4k) are not written; 0 fully allocates the output")
	return cmd
}

// Run converts the image.
func Run(o *Options) error {
	ios := o.IO
	switch o.OutFormat {
	case blockdev.Qcow2:
	case blockdev.Raw:
		if o.Compress {
			ios.Errorf("%v", pconvert.ErrCompressRaw)
			return cmdutil.Exit(1)
		}
	default:
		ios.Errorf("Unknown file format '%s'", o.OutFormat)
		return cmdutil.Exit(1)
	}
	for _, l := range o.Opts {
		if l == "help" || l == "?" {
			fmt.Fprint(ios.Out, pcreate.Help())
			return nil
		}
	}
	sn, bad := parseSnapshotParam(o.Snapshot)
	if bad != "" {
		ios.Errorf("Invalid parameter '%s'", bad)
		ios.Errorf("Failed in parsing snapshot param '%s'", o.Snapshot)
		return cmdutil.Exit(1)
	}
	if o.Existing && len(o.Opts) > 0 {
		ios.Errorf("%v", pconvert.ErrExistingOptions)
		return cmdutil.Exit(1)
	}
	if len(o.Src) > 1 && o.Snapshot != "" && !strings.HasPrefix(o.Snapshot, "snapshot.") {
		ios.Errorf("No support for concatenating multiple snapshot")
		return cmdutil.Exit(1)
	}
	var srcs []*blockdev.Disk
	defer func() {
		for _, d := range srcs {
			d.Close()
		}
	}()
	for i, p := range o.Src {
		bo := blockdev.Options{Format: o.Format, ForceShare: o.ForceShare}
		if i == 0 {
			bo.Snapshot = sn // -l is a snapshot of the first source, as in qemu-img
		}
		d, err := ioshell.OpenOperand(p, bo, true)
		if errors.Is(err, image.ErrSnapshotNotFound) {
			ios.Errorf("Failed to load snapshot: Can't find snapshot")
			return cmdutil.Exit(1)
		}
		if err != nil {
			ios.Errorf("%s", ios.CouldNotOpen(p, err))
			return cmdutil.Exit(1)
		}
		srcs = append(srcs, d)
	}
	src := srcs[0]
	// An interrupt stops the copy and removes the partial output.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	req := pconvert.Request{Source: src, More: srcs[1:], Dest: o.Dest, Format: o.OutFormat, Options: o.Opts, Compress: o.Compress, Ctx: ctx, Existing: o.Existing, Backing: o.Backing, BackingFormat: o.BackingFormat}
	if o.Sparse != "" {
		n, err := units.ParseSize(o.Sparse)
		if err != nil || n > pconvert.MaxSparseSize || n%512 != 0 {
			ios.Errorf("%v", pconvert.ErrSparseSize)
			return cmdutil.Exit(1)
		}
		req.SparseSize, req.FullyAllocated = int64(n), n == 0
	}
	var bar *progress.Bar
	if o.Progress && !o.Quiet {
		var total int64
		for _, d := range srcs {
			total += d.Size()
		}
		bar = progress.New(ios.Out, total)
		req.Progress = func(done, total int64) { bar.Update(done, total) }
	}
	res, err := pconvert.Convert(req)
	switch {
	case bar == nil:
	case err == nil:
		bar.Complete() // qemu-img ends a conversion with a 100% frame
	default:
		bar.Finish()
	}
	if err != nil {
		if errors.Is(err, pcreate.ErrHelp) {
			fmt.Fprint(ios.Out, pcreate.Help())
			return nil
		}
		var ce *pconvert.CreateError
		if errors.As(err, &ce) {
			ios.Errorf("%s: %v", o.Dest, err)
			return cmdutil.Exit(1)
		}
		ios.Errorf("%v", err)
		return cmdutil.Exit(1)
	}
	for _, w := range res.Warnings {
		ios.Warnf("%s", w)
	}
	return nil
}

// parseSnapshotParam reads convert -l: "snapshot.id=ID,snapshot.name=NAME"
// (either or both), or an ID or name; bad is an unknown key.
func parseSnapshotParam(p string) (r image.SnapshotRef, bad string) {
	if !strings.HasPrefix(p, "snapshot.") {
		return image.SnapshotRef{IDOrName: p}, ""
	}
	for _, kv := range pcreate.SplitOptions(p) {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "snapshot.id":
			r.ID = v
		case "snapshot.name":
			r.Name = v
		default:
			return r, k
		}
	}
	return r, ""
}
