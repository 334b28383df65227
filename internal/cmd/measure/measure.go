// Package measure is the `zqimg measure` command.
package measure

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/pkg/blockdev"
	pcreate "github.com/zqimg/zqimg/pkg/create"
	pmeasure "github.com/zqimg/zqimg/pkg/measure"
	"github.com/zqimg/zqimg/pkg/units"
)

// Options are the parsed flags and arguments of `zqimg measure`.
type Options struct {
	IO         *cmdutil.IOStreams
	Output     string
	OutFormat  string
	Opts       []string
	Size       string
	Format     string
	ForceShare bool
	Files      []string
}

// NewCmdMeasure returns the measure command; runF replaces the default
// run function in tests.
func NewCmdMeasure(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "measure [--output=human|json] [-O qcow2|raw] [-o OPTIONS]... (--size SIZE | [-f FMT] [-U] FILE)",
		Short: "Compute the file size of a new image, or of an image converted from FILE",
		Long: `Compute, as qemu-img measure does, the file size a new image of SIZE
bytes needs, or that converting FILE would need: "required size" (metadata
and the clusters that hold data) and "fully allocated size" (every
cluster allocated), plus "bitmaps size" (the persistent bitmaps of a qcow2
FILE) for a qcow2 output. -O names the output format (default raw), -o
its creation options, as for create.

For a zoned output (-o zone.mode=host-managed,..., or a zoned FILE, whose
zoned configuration convert keeps) the write-pointer table counts as
metadata, and only data below write pointers counts.`,
		Example: `  zqimg measure -O qcow2 --size 10G
  zqimg measure -O qcow2 -o cluster_size=1M disk.raw
  zqimg measure --output=json -O qcow2 -o zone.mode=host-managed,zone.size=64M --size 1G`,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Files = args
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Output, "output", "human", "output format: human or json")
	f.StringVarP(&o.OutFormat, "output-format", "O", "raw", "format of the new image: qcow2 or raw")
	f.StringArrayVarP(&o.Opts, "options", "o", nil, "comma-separated creation options; repeatable")
	f.StringVar(&o.Size, "size", "", "virtual size of a new image")
	f.StringVarP(&o.Format, "format", "f", "", "format of FILE: qcow2 or raw (default: probe)")
	f.BoolVarP(&o.ForceShare, "force-share", "U", false, "open FILE without taking locks")
	return cmd
}

// Run prints the measurement.
func Run(o *Options) error {
	ios := o.IO
	if o.Output != "human" && o.Output != "json" {
		ios.Errorf("--output must be used with human or json as argument.")
		return cmdutil.Exit(1)
	}
	switch {
	case o.Size != "" && len(o.Files) > 0:
		ios.Errorf("--size N cannot be used together with a filename.")
		return cmdutil.Exit(1)
	case o.Size == "" && len(o.Files) != 1:
		ios.Errorf("Either --size N or one filename must be specified.")
		return cmdutil.Exit(1)
	}
	req := pmeasure.Request{Format: o.OutFormat, Options: o.Opts}
	if o.Size != "" {
		n, err := units.ParseSize(o.Size)
		switch {
		case err != nil && !errors.Is(err, units.ErrRange):
			ios.Errorf("Invalid image size specified. You may use k, M, G, T, P or E suffixes for")
			ios.Errorf("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
			return cmdutil.Exit(1)
		case err != nil || n > 1<<63-1:
			ios.Errorf("Invalid image size specified. Must be between 0 and %d.", int64(1<<63-1))
			return cmdutil.Exit(1)
		}
		req.Size = n
	} else {
		d, err := blockdev.Open(o.Files[0], blockdev.Options{Format: o.Format, ForceShare: o.ForceShare})
		if err != nil {
			ios.Errorf("%s", ios.CouldNotOpen(o.Files[0], err))
			return cmdutil.Exit(1)
		}
		defer d.Close()
		req.Source = d
	}
	res, err := pmeasure.Measure(req)
	if err != nil {
		var oe *pcreate.OptionError
		var ue *pmeasure.UnsupportedFormatError
		switch {
		case errors.Is(err, pcreate.ErrHelp):
			fmt.Fprint(ios.Out, pcreate.Help())
			return nil
		case errors.As(err, &oe):
			ios.Errorf("%v", err)
			ios.Errorf("Invalid options for file format '%s'", o.OutFormat)
		case errors.As(err, &ue):
			ios.Errorf("%v", err)
		default:
			ios.Errorf("%v", err)
		}
		return cmdutil.Exit(1)
	}
	for _, w := range res.Warnings {
		ios.Warnf("%s", w)
	}
	if o.Output == "json" {
		fmt.Fprintln(ios.Out, "{")
		if res.Bitmaps != nil {
			fmt.Fprintf(ios.Out, "    \"bitmaps\": %d,\n", *res.Bitmaps)
		}
		fmt.Fprintf(ios.Out, "    \"required\": %d,\n    \"fully-allocated\": %d\n}\n", res.Required, res.FullyAllocated)
		return nil
	}
	fmt.Fprintf(ios.Out, "required size: %d\nfully allocated size: %d\n", res.Required, res.FullyAllocated)
	if res.Bitmaps != nil {
		fmt.Fprintf(ios.Out, "bitmaps size: %d\n", *res.Bitmaps)
	}
	return nil
}
