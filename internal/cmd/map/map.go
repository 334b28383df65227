// Package mapcmd is the `zqimg map` command.
package mapcmd

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/internal/ioshell"
	"github.com/zqimg/zqimg/pkg/blockdev"
	"github.com/zqimg/zqimg/pkg/blockmap"
	"github.com/zqimg/zqimg/pkg/units"
)

// Options are the parsed flags and arguments of `zqimg map`.
type Options struct {
	IO          *cmdutil.IOStreams
	Output      string
	Format      string
	StartOffset string
	MaxLength   string
	ForceShare  bool
	Zones       bool
	// ImageOpts (--image-opts): File is an option list, as qemu-img takes it.
	ImageOpts bool
	File      string
}

// NewCmdMap returns the map command; runF replaces the default run
// function in tests.
func NewCmdMap(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "map [--output=human|json] [-f FMT] [--start-offset=OFF] [--max-length=LEN] [-U] [--zones] FILE",
		Short: "Show how an image's data is stored (data, zeroes, unallocated), zone by zone for zoned images",
		Long: `Show the image's allocation map as qemu-img map does: the human format
lists the ranges stored as data with their host offsets; the JSON format
lists every range with start, length, depth, present, zero, data and
offset, adjacent ranges merged as qemu-img merges them.

In a zoned image nothing at or beyond the write pointer of a sequential
zone is data: it is reported as unallocated zeroes. --zones adds, for every
zone, its start, write pointer, condition and the bytes stored below the
write pointer.`,
		Example: `  zqimg map disk.qcow2
  zqimg map --output=json --zones zbc.qcow2`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				//lint:ignore ST1005 the message is qemu-img's
				return errors.New("Expecting one image file name")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.File = args[0]
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Output, "output", "human", "output format: human or json")
	f.StringVarP(&o.Format, "format", "f", "", "image format: qcow2 or raw (default: probe)")
	f.StringVar(&o.StartOffset, "start-offset", "0", "first byte to map")
	f.StringVar(&o.MaxLength, "max-length", "", "map at most this many bytes")
	f.BoolVarP(&o.ForceShare, "force-share", "U", false, "open the image without taking locks")
	f.BoolVar(&o.Zones, "zones", false, "also describe every zone of a zoned image")
	f.BoolVar(&o.ImageOpts, "image-opts", false, "FILE is an option list (driver=qcow2,file.filename=PATH), as qemu-img takes it")
	return cmd
}

// Run prints the map.
func Run(o *Options) error {
	ios := o.IO
	if o.Output != "human" && o.Output != "json" {
		ios.Errorf("--output must be used with human or json as argument.")
		return cmdutil.Exit(1)
	}
	start, err := units.ParseSize(o.StartOffset)
	if err != nil || start > 1<<63-1 {
		ios.Errorf("Invalid start offset specified! You may use k, M, G, T, P or E suffixes for ")
		ios.Errorf("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
		return cmdutil.Exit(1)
	}
	length := int64(-1)
	if o.MaxLength != "" {
		n, err := units.ParseSize(o.MaxLength)
		if err != nil || n > 1<<63-1 {
			ios.Errorf("Invalid max length specified! You may use k, M, G, T, P or E suffixes for ")
			ios.Errorf("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
			return cmdutil.Exit(1)
		}
		length = int64(n)
	}
	path, format, err := ioshell.PlainImage(cmdutil.FileOperand(o.File), o.ImageOpts)
	if err != nil {
		ios.Errorf("%s", ios.CouldNotOpen(o.File, err))
		return cmdutil.Exit(1)
	}
	if format == "" {
		format = o.Format
	}
	o.File = path // shown as qemu-img reconstructs the name
	d, err := blockdev.Open(o.File, blockdev.Options{Format: format, ForceShare: o.ForceShare})
	if err != nil {
		ios.Errorf("%s", ios.CouldNotOpen(o.File, err))
		return cmdutil.Exit(1)
	}
	defer d.Close()
	var zones []blockmap.ZoneEntry
	if o.Zones {
		if !d.Zoned() {
			ios.Errorf("--zones: '%s' is not a zoned image", o.File)
			return cmdutil.Exit(1)
		}
		if zones, err = blockmap.Zones(d); err != nil {
			ios.Errorf("%v", err)
			return cmdutil.Exit(1)
		}
	}
	w := bufio.NewWriterSize(ios.Out, 64<<10)
	if o.Output == "json" {
		err = writeJSON(w, d, int64(start), length, zones)
	} else {
		err = writeHuman(w, d, int64(start), length, zones)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		ios.Errorf("%v", err)
		return cmdutil.Exit(1)
	}
	return nil
}

// errNoOffset is qemu-img's refusal to print data it cannot locate.
//
//lint:ignore ST1005 the message is qemu-img's
var errNoOffset = errors.New("File contains external, encrypted or compressed clusters.")

// hex formats v as C's "%#x": 0 without prefix.
func hex(v uint64) string {
	if v == 0 {
		return "0"
	}
	return fmt.Sprintf("%#x", v)
}

func writeHuman(w io.Writer, d *blockdev.Disk, start, length int64, zones []blockmap.ZoneEntry) error {
	fmt.Fprintf(w, "%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File")
	err := blockmap.Walk(d, start, length, func(e blockmap.Entry, last bool) error {
		if e.Data && !e.HasOffset {
			return errNoOffset
		}
		if e.Data && !e.Zero {
			fmt.Fprintf(w, "%-16s%-16s%-16s%s\n", hex(uint64(e.Start)), hex(uint64(e.Length)), hex(uint64(e.Offset)), e.File)
		}
		return nil
	})
	if err != nil || zones == nil {
		return err
	}
	fmt.Fprintf(w, "\n%-8s%-16s%-16s%-16s%s\n", "Zone", "Start", "Write pointer", "Condition", "Allocated")
	for _, z := range zones {
		fmt.Fprintf(w, "%-8d%-16s%-16s%-16s%s\n", z.Index, hex(z.Start), hex(z.WP), z.Cond, hex(z.Allocated))
	}
	return nil
}

func writeJSON(w io.Writer, d *blockdev.Disk, start, length int64, zones []blockmap.ZoneEntry) error {
	if zones != nil {
		io.WriteString(w, `{"map": `)
	}
	io.WriteString(w, "[")
	err := blockmap.Walk(d, start, length, func(e blockmap.Entry, last bool) error {
		fmt.Fprintf(w, `{ "start": %d, "length": %d, "depth": %d, "present": %t, "zero": %t, "data": %t`,
			e.Start, e.Length, e.Depth, e.Present, e.Zero, e.Data)
		if e.HasOffset {
			fmt.Fprintf(w, `, "offset": %d`, e.Offset)
		}
		io.WriteString(w, "}")
		if !last {
			io.WriteString(w, ",\n")
		}
		return nil
	})
	if err != nil {
		return err
	}
	io.WriteString(w, "]")
	if zones != nil {
		io.WriteString(w, ",\n\"zones\": [")
		for i, z := range zones {
			if i > 0 {
				io.WriteString(w, ",\n")
			}
			fmt.Fprintf(w, `{ "zone": %d, "start": %d, "length": %d, "capacity": %d, "write-pointer": %d, "condition": "%s", "type": "%s", "allocated": %d}`,
				z.Index, z.Start, z.Length, z.Capacity, z.WP, z.Cond, z.Type, z.Allocated)
		}
		io.WriteString(w, "]}")
	}
	io.WriteString(w, "\n")
	return nil
}
