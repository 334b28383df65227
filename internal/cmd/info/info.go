// Package info is the `zqimg info` command.
package info

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/internal/ioshell"
	pinfo "github.com/zqimg/zqimg/pkg/info"
	"github.com/zqimg/zqimg/pkg/units"
)

// Options are the parsed flags and arguments of `zqimg info`.
type Options struct {
	IO         *cmdutil.IOStreams
	Output     string
	ForceShare bool
	Format     string
	File       string
	// BackingChain describes every image of the backing chain.
	BackingChain bool
	// ImageOpts (--image-opts): FILE is an option list
	// (driver=qcow2,file.filename=PATH), as qemu-img takes it.
	ImageOpts bool
}

// NewCmdInfo returns the info command.
func NewCmdInfo(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "info [--output human|json] [-U] FILE",
		Short: "Show information about an image, including its zoned configuration",
		Example: `  zqimg info disk.qcow2
  zqimg info --output=json zbc.qcow2`,
		Args: func(cmd *cobra.Command, args []string) error { return cmdutil.ExactlyOneFile(cmd, args) },
		RunE: func(cmd *cobra.Command, args []string) error {
			o.File = args[0]
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	cmd.Flags().StringVar(&o.Output, "output", "human", "output format: human or json")
	cmd.Flags().BoolVarP(&o.ForceShare, "force-share", "U", false, "open the image without taking locks")
	cmd.Flags().StringVarP(&o.Format, "format", "f", "qcow2", "image format (only qcow2)")
	cmd.Flags().BoolVar(&o.BackingChain, "backing-chain", false, "describe every image of the backing chain")
	cmd.Flags().BoolVar(&o.ImageOpts, "image-opts", false, "FILE is an option list (driver=qcow2,file.filename=PATH), as qemu-img takes it")
	return cmd
}

// Run prints the information.
func Run(o *Options) error {
	if o.Output != "human" && o.Output != "json" {
		o.IO.Errorf("--output must be 'human' or 'json', not '%s'", o.Output)
		return cmdutil.Exit(1)
	}
	if o.Format != "qcow2" {
		o.IO.Errorf("Unknown file format '%s' (zqimg reads qcow2 images only)", o.Format)
		return cmdutil.Exit(1)
	}
	// A json: name or an option list names the file it opens, and the
	// image is shown under that name, as qemu-img reconstructs it.
	path, format, err := ioshell.PlainImage(cmdutil.FileOperand(o.File), o.ImageOpts)
	if err == nil && format != "" && format != "qcow2" {
		err = fmt.Errorf("format '%s' is not supported by zqimg info (qcow2 images only)", format)
	}
	if err != nil {
		o.IO.Errorf("%s", o.IO.CouldNotOpen(o.File, err))
		return cmdutil.Exit(1)
	}
	o.File = path
	if o.BackingChain {
		return runChain(o)
	}
	inf, err := pinfo.Describe(o.File, o.ForceShare)
	if err != nil {
		o.IO.Errorf("%s", o.IO.CouldNotOpen(o.File, err))
		return cmdutil.Exit(1)
	}
	if o.Output == "json" {
		b, err := json.MarshalIndent(inf, "", "    ")
		if err != nil {
			return err
		}
		fmt.Fprintf(o.IO.Out, "%s\n", b)
		return nil
	}
	printHuman(o.IO.Out, inf)
	return nil
}

func printHuman(w io.Writer, inf *pinfo.ImageInfo) {
	fmt.Fprintf(w, "image: %s\n", inf.Filename)
	fmt.Fprintf(w, "file format: %s\n", inf.Format)
	fmt.Fprintf(w, "virtual size: %s (%d bytes)\n", units.Human(uint64(inf.VirtualSize)), inf.VirtualSize)
	fmt.Fprintf(w, "disk size: %s\n", units.Human(uint64(inf.ActualSize)))
	fmt.Fprintf(w, "cluster_size: %d\n", inf.ClusterSize)
	if inf.BackingFilename != "" {
		if inf.FullBackingFilename != inf.BackingFilename {
			fmt.Fprintf(w, "backing file: %s (actual path: %s)\n", inf.BackingFilename, inf.FullBackingFilename)
		} else {
			fmt.Fprintf(w, "backing file: %s\n", inf.BackingFilename)
		}
		if inf.BackingFormat != "" {
			fmt.Fprintf(w, "backing file format: %s\n", inf.BackingFormat)
		}
	}
	if inf.DirtyFlag {
		fmt.Fprintf(w, "cleanly shut down: no\n")
	}
	fmt.Fprint(w, pinfo.SnapshotList(inf.Snapshots))
	d := inf.FormatSpecific.Data
	fmt.Fprintf(w, "Format specific information:\n")
	fmt.Fprintf(w, "    compat: %s\n", d.Compat)
	fmt.Fprintf(w, "    compression type: %s\n", d.CompressionType)
	if d.LazyRefcounts != nil {
		fmt.Fprintf(w, "    lazy refcounts: %t\n", *d.LazyRefcounts)
	}
	fmt.Fprintf(w, "    refcount bits: %d\n", d.RefcountBits)
	if d.Corrupt != nil {
		fmt.Fprintf(w, "    corrupt: %t\n", *d.Corrupt)
	}
	if d.ExtendedL2 != nil {
		fmt.Fprintf(w, "    extended l2: %t\n", *d.ExtendedL2)
	}
	if z := d.Zoned; z != nil {
		printZoned(w, z)
	}
}

// printZoned prints the zoned section. A damaged one (z.Corrupt) shows
// what is stored, then "corrupt: true" and the problems, as qemu-img info
// shows a corrupt image.
func printZoned(w io.Writer, z *pinfo.ZonedInfo) {
	fmt.Fprintf(w, "    zoned:\n")
	fmt.Fprintf(w, "        model: %s\n", z.Model)
	if z.Model != "unknown" {
		seq := z.NrZones - min(z.ConventionalZones, z.NrZones)
		fmt.Fprintf(w, "        zone size: %s (%d bytes)\n", units.Human(z.ZoneSize), z.ZoneSize)
		fmt.Fprintf(w, "        zone capacity: %s (%d bytes)\n", units.Human(z.ZoneCapacity), z.ZoneCapacity)
		fmt.Fprintf(w, "        zones: %d (%d conventional, %d sequential)\n", z.NrZones, z.ConventionalZones, seq)
		fmt.Fprintf(w, "        max open zones: %s\n", limit(z.MaxOpenZones))
		if z.MaxActiveZones != 0 && z.MaxActiveZones >= seq {
			fmt.Fprintf(w, "        max active zones: %d (every sequential zone: no limit in effect)\n", z.MaxActiveZones)
		} else {
			fmt.Fprintf(w, "        max active zones: %s\n", limit(z.MaxActiveZones))
		}
		fmt.Fprintf(w, "        max append bytes: %d\n", z.MaxAppendBytes)
		fmt.Fprintf(w, "        write-pointer table: %d bytes at offset 0x%x\n", z.TableSize, z.TableOffset)
	}
	if c := z.Conditions; c != nil {
		fmt.Fprintf(w, "        zone conditions: %d empty, %d closed, %d full, %d not write pointer", c.Empty, c.Closed, c.Full, c.NotWP)
		if c.ReadOnly > 0 || c.Offline > 0 {
			fmt.Fprintf(w, ", %d read-only, %d offline (injected)", c.ReadOnly, c.Offline)
		}
		if c.Invalid > 0 {
			fmt.Fprintf(w, ", %d invalid", c.Invalid)
		}
		fmt.Fprintf(w, "\n")
	} else if z.Model != "unknown" {
		fmt.Fprintf(w, "        zone conditions: unknown\n")
	}
	if z.Corrupt {
		fmt.Fprintf(w, "        corrupt: true\n")
		fmt.Fprintf(w, "        problems:\n")
		for _, p := range z.Problems {
			fmt.Fprintf(w, "            %s\n", p)
		}
	}
}

func limit(v uint32) string {
	if v == 0 {
		return "0 (no limit)"
	}
	return fmt.Sprint(v)
}

// runChain prints every image of the backing chain, top first: human
// output separated by blank lines, JSON as an array.
func runChain(o *Options) error {
	chain, err := pinfo.DescribeChain(o.File, o.ForceShare)
	if err != nil {
		o.IO.Errorf("%v", err)
		return cmdutil.Exit(1)
	}
	if o.Output == "json" {
		b, err := json.MarshalIndent(chain, "", "    ")
		if err != nil {
			return err
		}
		fmt.Fprintf(o.IO.Out, "%s\n", b)
		return nil
	}
	for i, e := range chain {
		if i > 0 {
			fmt.Fprintln(o.IO.Out)
		}
		if e.Raw != nil {
			r := e.Raw
			fmt.Fprintf(o.IO.Out, "image: %s\nfile format: %s\nvirtual size: %s (%d bytes)\ndisk size: %s\n",
				r.Filename, r.Format, units.Human(uint64(r.VirtualSize)), r.VirtualSize, units.Human(uint64(r.ActualSize)))
			continue
		}
		printHuman(o.IO.Out, e.QCow2)
	}
	return nil
}
