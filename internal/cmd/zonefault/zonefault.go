// Package zonefault is the `zqimg zone-fault` command: it injects the zone
// conditions a device can have but the zoned format does not persist
// (READ ONLY, OFFLINE) into a zoned image, for testing software against
// them.
package zonefault

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/units"
	"github.com/zqimg/zqimg/pkg/zone"
)

// Options are the parsed arguments of `zqimg zone-fault`.
type Options struct {
	IO         *cmdutil.IOStreams
	File       string
	Action     string // "set" or "list"
	Cond       string // for set: ro, offline or clear
	Offset     string
	Length     string
	ForceShare bool
}

// NewCmdZoneFault returns the zone-fault command; runF replaces the
// default run function in tests.
func NewCmdZoneFault(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "zone-fault FILE set ro|offline|clear OFFSET LEN | zone-fault [-U] FILE list",
		Short: "Inject READ ONLY or OFFLINE zones into a zoned image, for testing",
		Long: `Make every zone of [OFFSET, OFFSET+LEN) read-only (condition 13: reads
work, writes and zone management fail with EIO), offline (condition 15:
reads fail too), or healthy again (clear). OFFSET is a zone start; LEN a
multiple of the zone size or reaching the end of the device. The plan is
stored in a compatible header extension of zqimg's own (QEMU ignores and
keeps it) and honoured by io, the single-shot commands, zrp, mount and
check. "list" prints the plan. At most 8 ranges (adjacent zones with the
same condition make one range).`,
		Example: `  zqimg zone-fault zbc.qcow2 set ro 64M 64M
  zqimg zone-fault zbc.qcow2 set offline 128M 128M
  zqimg zone-fault zbc.qcow2 list
  zqimg zone-fault zbc.qcow2 set clear 0 256M`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				//lint:ignore ST1005 qemu-img's message
				return fmt.Errorf("Expecting image file name")
			}
			if len(args) < 2 {
				//lint:ignore ST1005 qemu-img's wording
				return fmt.Errorf("Expecting an action: set or list")
			}
			want := map[string]int{"set": 5, "list": 2}[args[1]]
			switch {
			case want == 0:
				return fmt.Errorf("unknown action '%s' (set or list)", args[1])
			case len(args) > want:
				//lint:ignore ST1005 qemu-img's message
				return fmt.Errorf("Unexpected argument: %s", args[want])
			case len(args) < want:
				//lint:ignore ST1005 qemu-img's wording
				return fmt.Errorf("Expecting %s", []string{"", "", "", "a condition: ro, offline or clear", "an offset", "a length"}[len(args)+1])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.File, o.Action = args[0], args[1]
			if o.Action == "set" {
				o.Cond, o.Offset, o.Length = args[2], args[3], args[4]
			}
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	cmd.Flags().BoolVarP(&o.ForceShare, "force-share", "U", false, "list without taking the image lock")
	return cmd
}

// Run carries out the command.
func Run(o *Options) error {
	if o.Action == "list" {
		return list(o)
	}
	if o.ForceShare {
		o.IO.Errorf("force-share=on can only be used with read-only images")
		return cmdutil.Exit(1)
	}
	var cond zone.Cond
	switch o.Cond {
	case "ro", "read-only", "readonly":
		cond = zone.CondReadOnly
	case "offline":
		cond = zone.CondOffline
	case "clear":
	default:
		o.IO.Errorf("unknown zone condition '%s' (ro, offline or clear)", o.Cond)
		return cmdutil.Exit(1)
	}
	off, err := units.ParseOffset(o.Offset)
	if err != nil {
		o.IO.Errorf("invalid offset '%s': %v", o.Offset, err)
		return cmdutil.Exit(1)
	}
	length, err := units.ParseOffset(o.Length)
	if err != nil {
		o.IO.Errorf("invalid length '%s': %v", o.Length, err)
		return cmdutil.Exit(1)
	}
	if err := zone.InjectFault(o.File, image.Options{}, cond, off, length); err != nil {
		o.IO.Errorf("%s: %v", o.File, err)
		return cmdutil.Exit(1)
	}
	return nil
}

func list(o *Options) error {
	h, p, err := zone.ReadFaults(o.File, image.Options{NoLock: o.ForceShare})
	if err != nil {
		o.IO.Errorf("%s: %v", o.File, err)
		return cmdutil.Exit(1)
	}
	if p == nil || len(p.Ranges) == 0 {
		fmt.Fprintln(o.IO.Out, "No zone faults.")
		return nil
	}
	for _, r := range p.Ranges {
		name := "read-only"
		if r.Cond == zone.CondOffline {
			name = "offline"
		}
		start := h.ZoneStart(r.First)
		fmt.Fprintf(o.IO.Out, "zones %d-%d (offset 0x%x, %s): %s (condition %d)\n",
			r.First, r.First+r.Count-1, start, units.Human(uint64(r.Count)*h.ZoneSize), name, r.Cond)
	}
	return nil
}
