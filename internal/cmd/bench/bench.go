// Package bench is the `zqimg bench` command.
package bench

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/zqimg/zqimg/internal/cmdutil"
	pbench "github.com/zqimg/zqimg/pkg/bench"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/units"
)

// Options are the parsed flags and arguments of `zqimg bench`.
type Options struct {
	IO            *cmdutil.IOStreams
	Count         string
	Depth         string
	Size          string
	Step          string
	Offset        string
	Write         bool
	Pattern       string
	FlushInterval string
	NoDrain       bool
	Cache         string
	Native        bool
	AIO           string
	Quiet         bool
	ForceShare    bool
	Format        string
	Zoned         string
	File          string
	// set records which flags were given.
	set map[string]bool
}

// NewCmdBench returns the bench command; runF replaces the default run
// function in tests.
func NewCmdBench(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "bench [-c COUNT] [-d DEPTH] [-s SIZE] [-S STEP] [-o OFFSET] [-w] [--pattern P] [--flush-interval N] [--no-drain] [-t CACHE] [-n] [-q] [-U] [-f qcow2] [--zoned write|append] FILE",
		Short: "Run a simple I/O benchmark on an image",
		Long: `Send COUNT read requests (write requests with -w) of SIZE bytes, DEPTH of
them in flight at once, from OFFSET in steps of STEP bytes (wrapping at the
end of the image), and print how long it took, as qemu-img bench does.
The default cache mode is writeback.

--zoned write|append (zoned images): spread COUNT sequential writes, or
zone appends, of SIZE bytes over the sequential zones, as many zones at
once as DEPTH, zone.max_open_zones and zone.max_active_zones allow; a zone
that fills up is left FULL and the next one taken (reset first if it is
full). Prints the throughput in MiB/s and operations per second.`,
		Example: `  zqimg bench -c 100000 -d 32 -w disk.qcow2
  zqimg bench --zoned append -c 20000 -s 64k -d 32 zbc.qcow2`,
		Args: cmdutil.ExactlyOneFile,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.File = args[0]
			o.set = map[string]bool{}
			cmd.Flags().Visit(func(f *pflag.Flag) { o.set[f.Name] = true })
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.Count, "count", "c", "75000", "number of requests")
	f.StringVarP(&o.Depth, "depth", "d", "64", "requests in flight at once")
	f.StringVarP(&o.Size, "size", "s", "4096", "bytes per request")
	f.StringVarP(&o.Step, "step", "S", "", "offset step between requests (default: the request size)")
	f.StringVarP(&o.Offset, "offset", "o", "0", "offset of the first request")
	f.BoolVarP(&o.Write, "write", "w", false, "write instead of read")
	f.StringVar(&o.Pattern, "pattern", "0", "byte to write")
	f.StringVar(&o.FlushInterval, "flush-interval", "0", "flush every N requests (write tests)")
	f.BoolVar(&o.NoDrain, "no-drain", false, "do not wait for the requests in flight before a flush")
	f.StringVarP(&o.Cache, "cache", "t", "writeback", "cache mode: writeback, writethrough, unsafe, none, directsync")
	f.BoolVarP(&o.Native, "native", "n", false, "native AIO (needs cache mode none or directsync)")
	f.StringVarP(&o.AIO, "aio", "i", "", "AIO mode: threads, native or io_uring (accepted; zqimg uses goroutines)")
	f.BoolVarP(&o.Quiet, "quiet", "q", false, "quiet (accepted; the report is printed, as qemu-img does)")
	f.BoolVarP(&o.ForceShare, "force-share", "U", false, "open the image without taking locks (read tests)")
	f.StringVarP(&o.Format, "format", "f", "qcow2", "image format (only qcow2)")
	f.StringVar(&o.Zoned, "zoned", "", "zoned variant: write (sequential writes) or append (zone appends)")
	return cmd
}

// sizeErr prints qemu-img's two-line message for a bad size option.
func sizeErr(ios *cmdutil.IOStreams, what string) error { return cmdutil.SizeSyntaxError(ios, what) }

// Run parses the options, runs the benchmark and prints its report.
func Run(o *Options) error {
	ios := o.IO
	var b pbench.Options
	fail := func(format string, args ...any) error {
		ios.Errorf(format, args...)
		return cmdutil.Exit(1)
	}
	n, err := strconv.ParseInt(o.Count, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt32 {
		return fail("Invalid request count specified")
	}
	b.Count = int(n)
	if n, err = strconv.ParseInt(o.Depth, 10, 64); err != nil || n < 1 || n > math.MaxInt32 {
		return fail("Invalid queue depth specified")
	}
	b.Depth = int(n)
	sz, err := units.ParseSize(o.Size)
	if err != nil {
		return sizeErr(ios, "buffer size")
	}
	if sz > math.MaxInt32 {
		return fail("Invalid buffer size specified. Must be between 0 and %d.", math.MaxInt32)
	}
	b.Size, b.Step = int64(sz), int64(sz)
	if o.Step != "" {
		st, err := units.ParseSize(o.Step)
		if err != nil {
			return sizeErr(ios, "step_size")
		}
		if st > math.MaxInt32 {
			return fail("Invalid step_size specified. Must be between 0 and %d.", math.MaxInt32)
		}
		b.Step = int64(st)
	}
	off, err := units.ParseSize(o.Offset)
	if err != nil || off > math.MaxInt64 {
		return sizeErr(ios, "offset")
	}
	b.Offset = int64(off)
	b.Write = o.Write
	p, err := strconv.ParseUint(o.Pattern, 0, 64)
	if err != nil || p > 0xff {
		return fail("Invalid pattern byte specified")
	}
	b.Pattern = byte(p)
	fi, err := strconv.ParseUint(o.FlushInterval, 10, 31)
	if err != nil {
		return fail("Invalid flush interval specified")
	}
	b.FlushInterval, b.Drain = int(fi), !o.NoDrain
	cache, err := image.ParseCacheMode(o.Cache)
	if err != nil {
		return fail("Invalid cache mode")
	}
	if o.AIO != "" && o.AIO != "threads" && o.AIO != "native" && o.AIO != "io_uring" {
		return fail("Invalid aio option: %s", o.AIO)
	}
	if o.Format != "qcow2" {
		return fail("Unknown file format '%s' (zqimg benchmarks qcow2 images only)", o.Format)
	}
	b.Zoned = o.Zoned
	if b.Zoned != pbench.ZonedNone && b.Zoned != pbench.ZonedWrite && b.Zoned != pbench.ZonedAppend {
		return fail("--zoned must be 'write' or 'append', not '%s'", b.Zoned)
	}
	if b.Zoned != pbench.ZonedNone && o.set["step"] {
		return fail("--step does not apply to --zoned runs (writes go to the write pointers)")
	}
	write := b.Write || b.Zoned != pbench.ZonedNone
	if b.FlushInterval > 0 && !write {
		return fail("--flush-interval is only available in write tests")
	}
	if b.FlushInterval > 0 && b.FlushInterval < b.Depth {
		return fail("Flush interval can't be smaller than depth")
	}
	if o.Native && !cache.Direct() {
		return fail("Could not open '%s': aio=native was specified, but it requires cache.direct=on, which was not specified.", o.File)
	}
	if o.ForceShare && write {
		return fail("Could not open '%s': force-share=on can only be used with read-only images", o.File)
	}
	d, err := pbench.Open(o.File, b, cache, o.ForceShare)
	if err != nil {
		return fail("%s", o.IO.OpenError(o.File, err))
	}
	// Every option is checked before the run is announced.
	if err := pbench.Validate(d, b); err != nil {
		d.Close()
		return fail("%s: %v", o.File, err)
	}
	out := ios.Out
	if b.Zoned != pbench.ZonedNone {
		what := "sequential write"
		if b.Zoned == pbench.ZonedAppend {
			what = "zone append"
		}
		fmt.Fprintf(out, "Sending %d %s requests, %d bytes each, %d in parallel, over the sequential zones\n", b.Count, what, b.Size, b.Depth)
	} else {
		kind := "read"
		if b.Write {
			kind = "write"
		}
		fmt.Fprintf(out, "Sending %d %s requests, %d bytes each, %d in parallel (starting at offset %d, step size %d)\n", b.Count, kind, b.Size, b.Depth, b.Offset, b.Step)
	}
	if b.FlushInterval > 0 {
		fmt.Fprintf(out, "Sending flush every %d requests\n", b.FlushInterval)
	}
	cmdutil.ProcsForIO(b.Depth)
	res, err := pbench.Run(d, b)
	cerr := d.Close()
	if err != nil {
		var re *pbench.RequestError
		if errors.As(err, &re) {
			if errors.Is(err, image.ErrOutOfRange) {
				ios.Errorf("Failed request: Input/output error")
			} else {
				ios.Errorf("Failed request: %v", re.Err)
			}
		} else {
			ios.Errorf("%s: %v", o.File, err)
		}
		return cmdutil.Exit(1)
	}
	if cerr != nil {
		return fail("%s: %v", o.File, cerr)
	}
	fmt.Fprintf(out, "Run completed in %.3f seconds.\n", res.Elapsed.Seconds())
	if b.Zoned != pbench.ZonedNone {
		fmt.Fprintf(out, "%d requests, %d bytes, %d zones at once, %d zone resets: %.3f MiB/s, %.1f ops/s\n", res.Requests, res.Bytes, res.Zones, res.Resets, res.MiBps(), res.OpsPerSec())
	}
	return nil
}
