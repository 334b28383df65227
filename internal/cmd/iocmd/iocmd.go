// Package iocmd provides the single-shot commands (`zqimg write FILE ...`,
// `zqimg zrp FILE ...`, ...): each opens the image, runs one qemu-io style
// command and closes it.
package iocmd

import (
	"strings"

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
	File string
	Args []string // the command's own arguments, without FILE
}

// Spec describes one single-shot command.
type Spec struct {
	Name, Usage, Short, Example string
}

// Specs lists the single-shot commands.
var Specs = []Spec{
	{"read", "read [-qvC] [-P pattern [-s off] [-l len]] FILE OFFSET LEN", "Read from an image, optionally verifying a pattern", "  zqimg read -P 0x5a disk.qcow2 0 64k\n  zqimg read -v disk.qcow2 0 32"},
	{"write", "write [-qzCf] [-P pattern] FILE OFFSET LEN", "Write a pattern (default 0xcd) or zeroes (-z) to an image", "  zqimg write -P 0x5a disk.qcow2 0 64k\n  zqimg write -z disk.qcow2 1M 1M"},
	{"discard", "discard [-qC] FILE OFFSET LEN", "Deallocate a range so that it reads as zeroes", "  zqimg discard disk.qcow2 0 1M"},
	{"zrp", "zrp [--output=human|json|table] FILE OFFSET NR", "Report NR zones from the zone containing OFFSET", "  zqimg zrp zbc.qcow2 0 12\n  zqimg zrp --output=table zbc.qcow2 0 4"},
	{"zo", "zo FILE OFFSET LEN", "Explicitly open every zone of a range", "  zqimg zo zbc.qcow2 0 64M"},
	{"zc", "zc FILE OFFSET LEN", "Close every zone of a range", "  zqimg zc zbc.qcow2 0 64M"},
	{"zf", "zf FILE OFFSET LEN", "Finish every zone of a range (write pointer to the zone end)", "  zqimg zf zbc.qcow2 64M 64M"},
	{"zrs", "zrs FILE OFFSET LEN", "Reset every zone of a range, discarding its data", "  zqimg zrs zbc.qcow2 0 768M"},
	{"zap", "zap [-p] FILE OFFSET LEN [LEN...]", "Append buffers of 0xcd bytes at the write pointer of the zone at OFFSET", "  zqimg zap -p zbc.qcow2 0 4k 8k"},
}

// NewCmd returns the single-shot command described by spec.
func NewCmd(ios *cmdutil.IOStreams, spec Spec, runF func(*Options) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:                   spec.Usage,
		Short:                 spec.Short,
		Example:               spec.Example,
		DisableFlagParsing:    true,
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, a := range args {
				if a == "--help" || a == "-h" {
					return cmd.Help()
				}
			}
			o := &Options{IO: ios, Name: spec.Name}
			i := ioshell.FindFile(spec.Name, args)
			if i < 0 {
				ios.Errorf("%s: missing image file name\nUsage: zqimg %s", spec.Name, spec.Usage)
				return cmdutil.Exit(1)
			}
			o.File = args[i]
			o.Args = append(append([]string{}, args[:i]...), args[i+1:]...)
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	return cmd
}

// Run opens the image, runs the command and closes the image.
func Run(o *Options) error {
	ro := !ioshell.Writes(o.Name)
	dev, err := zone.Open(o.File, image.Options{ReadOnly: ro})
	if err != nil {
		o.IO.Errorf("can't open device %s: %v", o.File, err)
		return cmdutil.Exit(1)
	}
	sh := ioshell.New(dev, o.IO.Out, o.IO.ErrOut)
	sh.Run(o.Name + " " + strings.Join(o.Args, " "))
	if err := dev.Close(); err != nil {
		o.IO.Errorf("closing %s: %v", o.File, err)
		return cmdutil.Exit(1)
	}
	if sh.Failed() {
		return cmdutil.Exit(1)
	}
	return nil
}
