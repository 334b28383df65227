// Package mount is the `zqimg mount` command: a zoned image served as a
// zonefs-like FUSE file system until it is unmounted.
package mount

import (
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
	"github.com/zqimg/zqimg/pkg/zonefs"
)

// mountProcs is how many file system requests the mount lets be inside
// blocking file I/O at once (cmdutil.ProcsForIO): writers to different
// zones are served in parallel. With four dd writers on a 2-CPU machine
// (RUNS=3 scripts/bench.sh mount): 1020 MiB/s at the default GOMAXPROCS
// of 2, 1438 at 8, 1506 at 16.
const mountProcs = 16

// DefaultCache is the default cache mode of a mount: writes are durable at
// fsync, as with zonefs on a device with a volatile write cache.
const DefaultCache = "writeback"

// Options are the parsed flags and arguments of `zqimg mount`.
type Options struct {
	IO        *cmdutil.IOStreams
	ReadOnly  bool
	Cache     string
	MountOpts []string
	Debug     bool
	File      string
	Dir       string

	// Signals, when set, replaces SIGINT/SIGTERM notification (tests).
	Signals <-chan os.Signal
	// Mounted, when set, is called once the file system is mounted.
	Mounted func()
}

// NewCmdMount returns the mount command; runF replaces Run in tests.
func NewCmdMount(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "mount [-r] [-t CACHE] [-o allow_other] [-o explicit-open] IMAGE DIR",
		Short: "Serve a zoned image as a zonefs-like file system (FUSE)",
		Long: `Mount the zoned image IMAGE on the directory DIR as Linux's zonefs shows
a zoned block device: DIR/cnv/N for the conventional zones, DIR/seq/N for
the sequential zones. A sequential file's size is its zone's write pointer;
writes must append (at the end of the file, in multiples of 512 bytes);
truncating to 0 resets the zone, to the zone capacity finishes it.

The command serves the file system until it is unmounted (umount DIR, or
fusermount -u DIR) or interrupted (SIGINT, SIGTERM: it unmounts, flushes and
releases the image). It holds the image's write lock (read lock with -r).

Cache modes (-t) as qemu-io's; the default, writeback, makes writes durable
at fsync (and at unmount); writethrough and directsync make every write
durable before it returns; unsafe never syncs.

Mount options (-o, comma-separated or repeated): allow_other lets other
users in (file modes 0640 still apply); explicit-open opens the zone of a
sequential file when the file is opened for writing and fails such opens
beyond max_open_zones with EBUSY, as zonefs's option does.`,
		Example: `  mkdir -p mnt && zqimg mount zbc.qcow2 mnt &
  dd if=/dev/urandom of=mnt/seq/0 bs=64k count=16 oflag=append conv=notrunc
  ls -l mnt/seq; umount mnt`,
		Args: cmdutil.Operands("image file name", "mount point"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.File, o.Dir = args[0], args[1]
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	cmd.Flags().BoolVarP(&o.ReadOnly, "read-only", "r", false, "mount read-only (the image is opened read-only)")
	cmd.Flags().StringVarP(&o.Cache, "cache", "t", DefaultCache, "cache mode: writeback, writethrough, unsafe, none, directsync")
	cmd.Flags().StringArrayVarP(&o.MountOpts, "options", "o", nil, "mount options: allow_other, explicit-open (repeatable, comma-separated)")
	cmd.Flags().BoolVar(&o.Debug, "debug", false, "log every FUSE request on standard error")
	return cmd
}

// mountFlags are the parsed -o options.
type mountFlags struct {
	allowOther   bool
	explicitOpen bool
}

func parseMountOpts(list []string) (mountFlags, error) {
	var f mountFlags
	for _, s := range list {
		for _, o := range strings.Split(s, ",") {
			switch o {
			case "":
			case "allow_other":
				f.allowOther = true
			case "explicit-open", "explicit_open":
				f.explicitOpen = true
			default:
				return f, fmt.Errorf("unknown mount option '%s' (known: allow_other, explicit-open)", o)
			}
		}
	}
	return f, nil
}

// Run mounts the image and serves it until it is unmounted.
func Run(o *Options) error {
	ios := o.IO
	mf, err := parseMountOpts(o.MountOpts)
	if err != nil {
		return ios.Fail(err)
	}
	cache, err := image.ParseCacheMode(o.Cache)
	if err != nil {
		return ios.Fail(err)
	}
	if st, err := os.Stat(o.Dir); err != nil {
		return ios.Fail(fmt.Errorf("mount point %s: %w", o.Dir, unwrapPath(err)))
	} else if !st.IsDir() {
		return ios.Fail(fmt.Errorf("mount point %s is not a directory", o.Dir))
	}
	dev, err := zone.Open(o.File, image.Options{ReadOnly: o.ReadOnly, Cache: cache})
	if err != nil {
		ios.Errorf("can't open device %s: %v", o.File, err)
		return cmdutil.Exit(1)
	}
	ios.WarnDirectIO(dev.Image())
	if !dev.Zoned() {
		dev.Close()
		ios.Errorf("%s is not a zoned image: zqimg mount serves images created with -o zone.mode=host-managed; a plain image has no zones to show as files", o.File)
		return cmdutil.Exit(1)
	}
	sigs := o.Signals
	if sigs == nil {
		ch := make(chan os.Signal, 2)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(ch)
		sigs = ch
	}
	cmdutil.ProcsForIO(mountProcs)
	m, err := zonefs.NewMount(dev, o.Dir, zonefs.MountOptions{
		Options: zonefs.Options{
			ReadOnly:     o.ReadOnly,
			ExplicitOpen: mf.explicitOpen,
			UID:          uint32(os.Geteuid()),
			GID:          uint32(os.Getegid()),
			Condition:    zonefs.DeviceFaults(dev),
		},
		AllowOther: mf.allowOther,
		Source:     o.File,
		Logger:     log.New(ios.ErrOut, cmdutil.Prog+": fuse: ", 0),
		Debug:      o.Debug,
	})
	if err != nil {
		dev.Close()
		ios.Errorf("can't mount %s on %s: %v", o.File, o.Dir, err)
		return cmdutil.Exit(1)
	}
	if m.FS.ExplicitOpenIgnored() {
		ios.Warnf("%s has no open zone limit (zone.max_open_zones): explicit-open ignored", o.File)
	}
	if o.Mounted != nil {
		o.Mounted()
	}
	done := make(chan struct{})
	go func() {
		m.Wait()
		close(done)
	}()
	select {
	case <-done:
	case sig := <-sigs:
		if err := m.Unmount(); err != nil {
			ios.Warnf("%v: unmounting %s: %v; detaching it (open files lose their file system)", sig, o.Dir, err)
			if err := m.Detach(); err != nil {
				ios.Errorf("%v", err)
			}
			// The kernel ends the connection when this process exits;
			// requests already being served finish before Close.
		} else {
			<-done
		}
	}
	if err := dev.Close(); err != nil {
		ios.Errorf("closing %s: %v", o.File, err)
		return cmdutil.Exit(1)
	}
	return nil
}

// unwrapPath drops the *PathError wrapper (its message repeats the path).
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
