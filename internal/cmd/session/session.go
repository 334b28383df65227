// Package session is the `zqimg io` command: one open session running
// qemu-io style commands.
package session

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/internal/ioshell"
	"github.com/zqimg/zqimg/pkg/image"
)

// Options are the parsed flags and arguments of `zqimg io`.
type Options struct {
	IO         *cmdutil.IOStreams
	Commands   []string
	ReadOnly   bool
	ForceShare bool
	// Snapshot (-s) sends writes to a temporary overlay that is discarded
	// at the end: the image is opened read-only and never written.
	Snapshot bool
	// ImageOpts (--image-opts): the file operand is an option list
	// ("driver=qcow2,file.filename=X"), as open -o takes.
	ImageOpts bool
	Format    string
	Cache     string // qemu-io's -t mode; -n sets "none"
	File      string
	// AIO is qemu-io's --aio/-i mode (threads, native or io_uring): checked
	// and accepted; zqimg's I/O is synchronous whatever it is.
	AIO string
	// Ignored holds qemu-io options that are accepted and have no effect
	// on zqimg (-m misalign, -d discard mode, -T trace, -k native AIO).
	misalign, nativeAIO bool
	discard, trace      string
}

// NewCmdIO returns the io command.
func NewCmdIO(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "io [-c CMD]... [-r] [-U] [-t CACHE] [-n] FILE",
		Short: "Run qemu-io style commands on an image in one session",
		Long: `Open FILE once and run each -c command in order, or, without -c, the
commands read from standard input (a "zqimg> " prompt is printed before
each). Commands: read, write, discard, flush, length, truncate, map,
zone_report (zrp), zone_open (zo), zone_close (zc), zone_finish (zf),
zone_reset (zrs), zone_append (zap), open, reopen, close, help, quit;
"help CMD" describes one. A failing command
prints qemu-io's failure line and the session goes on; the exit status is
1 if any command failed.

Cache modes (-t), as qemu-io's: writethrough (the default: every write is
durable when its "wrote" line is printed), writeback (durable at flush and
at the end of the session), unsafe (flushes are skipped: after a power
loss or host crash the image may be corrupt), none (writeback without the
host page cache, O_DIRECT) and directsync (writethrough without the host
page cache). -n is -t none.

-s (snapshot mode) sends the writes to a temporary overlay, discarded at
the end: the image is opened read-only and never written.

-U (force share) opens the image read-only without taking QEMU's image
locks, so that an image another process holds can be read; commands that
write are refused.`,
		Example: `  zqimg io -c 'write -P 0x5a 0 64k' -c 'read -P 0x5a 0 64k' disk.qcow2
  printf 'zap -p 0 4k\nzrp 0 1\n' | zqimg io zbc.qcow2
  zqimg io -U -c 'zrp 0' zbc.qcow2`,
		Args: func(cmd *cobra.Command, args []string) error {
			if ios.Prog == "qemu-io" && len(args) == 0 {
				return nil // qemu-io starts without an image: see open
			}
			return cmdutil.ExactlyOneFile(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				o.File = args[0]
			}
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	cmd.Flags().StringArrayVarP(&o.Commands, "cmd", "c", nil, "command to run (repeatable)")
	cmd.Flags().BoolVarP(&o.ReadOnly, "read-only", "r", false, "open the image read-only")
	cmd.Flags().BoolVarP(&o.ForceShare, "force-share", "U", false, "open the image read-only without taking locks")
	cmd.Flags().BoolVarP(&o.Snapshot, "snapshot", "s", false, "snapshot mode: writes go to a temporary overlay, discarded at the end")
	cmd.Flags().BoolVar(&o.ImageOpts, "image-opts", false, "the file operand is an option list (driver=qcow2,file.filename=FILE), as open -o takes")
	cmd.Flags().StringVarP(&o.Format, "format", "f", "qcow2", "image format: qcow2 or raw (a raw file: no zones, no compressed clusters)")
	cmdutil.CacheFlags(cmd.Flags(), &o.Cache, true)
	cmd.Flags().StringVarP(&o.AIO, "aio", "i", "threads", "AIO mode, as qemu-io's: threads, native or io_uring (zqimg's I/O is synchronous in each)")
	cmd.Flags().BoolVarP(&o.misalign, "misalign", "m", false, "accepted for qemu-io compatibility; no effect")
	cmd.Flags().BoolVarP(&o.nativeAIO, "native-aio", "k", false, "short for --aio native")
	cmd.Flags().StringVarP(&o.discard, "discard", "d", "ignore", "discard mode, as qemu-io's: ignore/off or unmap/on (accepted; discard always deallocates)")
	cmd.Flags().StringVarP(&o.trace, "trace", "T", "", "accepted for qemu-io compatibility; no effect")
	return cmd
}

// Run runs the session.
func Run(o *Options) error {
	if o.Format != "qcow2" && o.Format != "raw" && o.Format != "null-co" {
		o.IO.Errorf("Unknown file format '%s'", o.Format)
		return cmdutil.Exit(1)
	}
	switch o.AIO {
	case "", "threads", "native", "io_uring":
	default:
		o.IO.Errorf("Invalid aio option: %s", o.AIO)
		return cmdutil.Exit(1)
	}
	switch o.discard {
	case "", "ignore", "off", "unmap", "on":
	default:
		o.IO.Errorf("Invalid discard option: %s", o.discard)
		return cmdutil.Exit(1)
	}
	if _, err := image.ParseCacheMode(o.Cache); err != nil {
		o.IO.Errorf("%v", err)
		return cmdutil.Exit(1)
	}
	if o.nativeAIO {
		o.AIO = "native"
	}
	if o.AIO == "native" && o.Cache != "none" && o.Cache != "directsync" {
		// qemu refuses Linux native AIO through the page cache.
		o.IO.Errorf("can't open device %s: aio=native was specified, but it requires cache.direct=on, which was not specified.", o.File)
		return cmdutil.Exit(1)
	}
	if o.ForceShare {
		// -U is for reading only: refuse writing -c commands before the
		// image is opened.
		for _, c := range o.Commands {
			if f := strings.Fields(c); len(f) > 0 && ioshell.Writes(f[0]) {
				o.IO.Errorf("can't open device %s: %s", o.File, ioshell.MsgForceShare)
				return cmdutil.Exit(1)
			}
		}
	}
	format := ""
	if o.Format != "qcow2" {
		format = o.Format
	}
	open := func(r ioshell.OpenRequest) (ioshell.Device, error) {
		if r.Cache == "" {
			r.Cache = o.Cache
		}
		return openDevice(r)
	}
	first := ioshell.OpenRequest{Path: o.File, ReadOnly: o.ReadOnly, ForceShare: o.ForceShare, Snapshot: o.Snapshot, Cache: o.Cache, Format: format}
	if o.ImageOpts && o.File != "" {
		r, err := ioshell.RequestFromOptions(first, o.File)
		if err != nil {
			o.IO.Errorf("can't open device %s: %s", o.File, o.IO.Reason(err))
			return cmdutil.Exit(1)
		}
		first = r
	} else if strings.HasPrefix(o.File, "json:") || strings.HasPrefix(o.File, "blkdebug:") {
		r, err := ioshell.RequestForPath(first, o.File)
		if err != nil {
			o.IO.Errorf("can't open device %s: %v", o.File, err)
			return cmdutil.Exit(1)
		}
		first = r
	}
	var dev ioshell.Device
	if o.File != "" {
		var err error
		dev, err = open(first)
		if err != nil {
			if o.IO.Prog == "qemu-io" {
				err = qemuOpenError(o.IO, o.File, err)
			}
			o.IO.Errorf("can't open device %s: %v", o.File, err)
			return cmdutil.Exit(1)
		}
		warnDirectIO(o.IO, dev)
	}
	sh := ioshell.New(dev, o.IO.Out, o.IO.ErrOut)
	sh.Current = first
	sh.Open = func(r ioshell.OpenRequest) (ioshell.Device, error) {
		d, err := open(r)
		if err != nil {
			return nil, qemuOpenError(o.IO, r.Path, err)
		}
		warnDirectIO(o.IO, d)
		return d, nil
	}
	sh.ForceShare = o.ForceShare
	sh.Prog = o.IO.ProgName()
	if o.IO.Prog == "qemu-io" {
		sh.Prompt = "qemu-io> "
		sh.Terse = true
		sh.AdvisoryDiscard = true
	}
	if len(o.Commands) > 0 {
		for _, c := range o.Commands {
			sh.Run(c)
			if sh.Quit() {
				break
			}
		}
		sh.Flush()
	} else {
		sh.Loop(o.IO.In)
	}
	if sh.Dev == nil {
		// none opened, or closed by the close command
	} else if err := sh.Dev.Close(); err != nil {
		o.IO.Errorf("closing %s: %v", o.File, err)
		return cmdutil.Exit(1)
	}
	if sh.Failed() {
		return cmdutil.Exit(1)
	}
	return nil
}

// reasonError is an error printed as msg: its wording as the program
// zqimg runs as (cmdutil.IOStreams.Reason).
type reasonError struct {
	err error
	msg string
}

func (e *reasonError) Error() string { return e.msg }
func (e *reasonError) Unwrap() error { return e.err }
