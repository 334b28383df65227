// Package oneshot provides the single-shot commands (`zqimg write FILE ...`,
// `zqimg zrp FILE ...`, ...): each opens the image, runs one qemu-io style
// command and closes it.
package oneshot

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/internal/ioshell"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// Options are the arguments of a single-shot command.
type Options struct {
	IO   *cmdutil.IOStreams
	Name string
	Args []string // everything after the command name, FILE included
}

// Spec describes one single-shot command.
type Spec struct {
	Name, Usage, Short, Example string
}

// common is the part of every single-shot command's usage line before the
// command's own options.
const common = "[-U] [-t CACHE] "

// specs lists the single-shot commands.
var specs = []Spec{
	{"read", "read " + common + "[-qvC] [-P pattern [-s off] [-l len]] FILE OFFSET LEN", "Read from an image, optionally verifying a pattern", "  zqimg read -P 0x5a disk.qcow2 0 64k\n  zqimg read -v disk.qcow2 0 32\n  zqimg read -U -q disk.qcow2 0 1M"},
	{"write", "write " + common + "[-qzCfnu] [-P pattern] FILE OFFSET LEN", "Write a pattern (default 0xcd) or zeroes (-z) to an image", "  zqimg write -P 0x5a disk.qcow2 0 64k\n  zqimg write -z disk.qcow2 1M 1M"},
	{"discard", "discard " + common + "[-qC] FILE OFFSET LEN", "Deallocate a range so that it reads as zeroes", "  zqimg discard disk.qcow2 0 1M"},
	{"zrp", "zrp " + common + "[--output=human|json|table] FILE OFFSET [NR]", "Report NR zones (default: all to the end) from the zone containing OFFSET", "  zqimg zrp zbc.qcow2 0 12\n  zqimg zrp zbc.qcow2 64M\n  zqimg zrp --output=table zbc.qcow2 0 4"},
	{"zo", "zo " + common + "FILE OFFSET LEN", "Explicitly open every zone of a range", "  zqimg zo zbc.qcow2 0 64M"},
	{"zc", "zc " + common + "FILE OFFSET LEN", "Close every zone of a range", "  zqimg zc zbc.qcow2 0 64M"},
	{"zf", "zf " + common + "FILE OFFSET LEN", "Finish every zone of a range (write pointer to the zone end)", "  zqimg zf zbc.qcow2 64M 64M"},
	{"zrs", "zrs " + common + "FILE OFFSET LEN", "Reset every zone of a range, discarding its data", "  zqimg zrs zbc.qcow2 0 768M"},
	{"zap", "zap " + common + "[-p] FILE OFFSET LEN [LEN...]", "Append buffers of 0xcd bytes at the write pointer of the zone at OFFSET", "  zqimg zap -p zbc.qcow2 0 4k 8k"},
}

const longHelp = `%s

Options may come before or after FILE; "--" ends them. The command's own
options and operands are qemu-io's (see "zqimg io -c 'help %s' FILE").
Every single-shot command also takes:
  -t, --cache=MODE   cache mode: writethrough (the default: a change is
                     durable when the command reports it), writeback,
                     unsafe, none or directsync, as qemu-io's -t
  -U, --force-share  open the image without taking locks; for reading
                     only (commands that write are refused)`

// NewCmds returns every single-shot command.
func NewCmds(ios *cmdutil.IOStreams) []*cobra.Command {
	var cmds []*cobra.Command
	for _, s := range specs {
		cmds = append(cmds, NewCmd(ios, s, nil))
	}
	return cmds
}

// NewCmd returns the single-shot command described by spec.
func NewCmd(ios *cmdutil.IOStreams, spec Spec, runF func(*Options) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:                   spec.Usage,
		Short:                 spec.Short,
		Long:                  fmt.Sprintf(longHelp, spec.Short, spec.Name),
		Example:               spec.Example,
		DisableFlagParsing:    true,
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, a := range args {
				if a == "--" {
					break
				}
				if a == "--help" || a == "-h" {
					return cmd.Help()
				}
			}
			o := &Options{IO: ios, Name: spec.Name, Args: args}
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	return cmd
}

// Run parses the arguments (before anything is opened), opens the image,
// runs the command and closes the image. A command that writes is refused
// with -U before the image is opened.
func Run(o *Options) error {
	ss, err := ioshell.ParseSingleShot(o.Name, o.Args)
	if err != nil {
		o.IO.Errorf("%v", err)
		fmt.Fprintf(o.IO.ErrOut, "Try 'zqimg %s --help' for more information\n", o.Name)
		return cmdutil.Exit(1)
	}
	mode := image.CacheWriteThrough
	if ss.Cache != "" {
		if mode, err = image.ParseCacheMode(ss.Cache); err != nil {
			o.IO.Errorf("%v", err)
			return cmdutil.Exit(1)
		}
	}
	writes := ss.Call.Writes()
	if ss.ForceShare && writes {
		o.IO.Errorf("can't open device %s: %s", ss.File, ioshell.MsgForceShare)
		return cmdutil.Exit(1)
	}
	dev, err := zone.Open(ss.File, image.Options{ReadOnly: !writes, NoLock: ss.ForceShare, Cache: mode})
	if err != nil {
		o.IO.Errorf("can't open device %s: %s", ss.File, o.IO.Reason(err))
		return cmdutil.Exit(1)
	}
	o.IO.WarnDirectIO(dev.Image())
	sh := ioshell.New(dev, o.IO.Out, o.IO.ErrOut)
	sh.ForceShare = ss.ForceShare
	ok := sh.Exec(ss.Call)
	sh.Flush()
	if err := dev.Close(); err != nil {
		o.IO.Errorf("closing %s: %v", ss.File, err)
		return cmdutil.Exit(1)
	}
	if !ok {
		return cmdutil.Exit(1)
	}
	return nil
}
