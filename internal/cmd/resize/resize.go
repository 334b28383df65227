// Package resize is the `zqimg resize` command.
package resize

import (
	"errors"
	"fmt"
	"math"
	"regexp"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/units"
	"github.com/zqimg/zqimg/pkg/zone"
)

// Options are the parsed flags and arguments of `zqimg resize`.
type Options struct {
	IO     *cmdutil.IOStreams
	Shrink bool
	Format string
	Quiet  bool
	File   string
	// Size is the size argument as given: SIZE, +SIZE or -SIZE.
	Size string
	// Preallocation is --preallocation: off, metadata, falloc or full.
	Preallocation string
}

// sizeArg matches a negative size, which must not be taken for a flag.
var sizeArg = regexp.MustCompile(`^-[0-9]`)

// NewCmdResize returns the resize command; runF replaces the default run
// function in tests.
func NewCmdResize(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "resize [--shrink] [--preallocation=MODE] [-f qcow2] [-q] FILE [+|-]SIZE",
		Short: "Change the virtual size of an image",
		Long: `Change the virtual size of FILE to SIZE, or by +SIZE or -SIZE (suffixes k,
M, G, T, P, E; base 1024), as qemu-img resize does. Making the image
smaller needs --shrink and deletes everything beyond the new end (internal
snapshots keep their data). --preallocation=metadata|falloc|full allocates
the added area as qemu-img does (metadata: L2 tables and clusters mapped,
the file extended sparsely; falloc: the space reserved; full: zeroes
written); it only grows an image.

A zoned image grows and shrinks by whole zones (SIZE must be a multiple of
zone.size): new zones are sequential and EMPTY, and only trailing EMPTY
zones can be removed. The change is atomic: after a crash the image has the
old size or the new one.`,
		Example: `  zqimg resize disk.qcow2 +1G
  zqimg resize --shrink disk.qcow2 512M
  zqimg resize --preallocation=falloc disk.qcow2 +1G
  zqimg resize zbc.qcow2 +256M`,
		// A negative size ("-1G") looks like a flag: parse by hand.
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := pflag.NewFlagSet("resize", pflag.ContinueOnError)
			fs.SetOutput(ios.ErrOut)
			fs.BoolVar(&o.Shrink, "shrink", false, "allow shrinking")
			fs.StringVar(&o.Preallocation, "preallocation", "off", "preallocation mode of the added area")
			fs.StringVarP(&o.Format, "format", "f", "qcow2", "image format (only qcow2)")
			fs.BoolVarP(&o.Quiet, "quiet", "q", false, "print nothing on success")
			help := fs.BoolP("help", "h", false, "help")
			var neg string
			rest := args[:0:0]
			for _, a := range args {
				if sizeArg.MatchString(a) && neg == "" {
					neg = a
					rest = append(rest, "\x00")
					continue
				}
				rest = append(rest, a)
			}
			if err := fs.Parse(rest); err != nil {
				return err
			}
			if *help {
				return cmd.Help()
			}
			pos := fs.Args()
			for i, a := range pos {
				if a == "\x00" {
					pos[i] = neg
				}
			}
			switch {
			case len(pos) < 2:
				return fmt.Errorf("Not enough arguments")
			case len(pos) > 2:
				return fmt.Errorf("Expecting image file name and size")
			}
			o.File, o.Size = pos[0], pos[1]
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	cmd.Flags().Bool("shrink", false, "allow shrinking the image (data beyond the new end is deleted)")
	cmd.Flags().String("preallocation", "off", "allocate the added area: off, metadata, falloc or full")
	cmd.Flags().StringP("format", "f", "qcow2", "image format (only qcow2)")
	cmd.Flags().BoolP("quiet", "q", false, "print nothing on success")
	return cmd
}

// Run resizes the image.
func Run(o *Options) error {
	ios := o.IO
	if o.Format != "qcow2" {
		ios.Errorf("Unknown file format '%s' (zqimg resizes qcow2 images only)", o.Format)
		return cmdutil.Exit(1)
	}
	prealloc := image.PreallocOff
	if o.Preallocation != "" {
		var ok bool
		if prealloc, ok = image.ParsePrealloc(o.Preallocation); !ok {
			ios.Errorf("Invalid preallocation mode '%s'", o.Preallocation)
			return cmdutil.Exit(1)
		}
	}
	rel := 0
	s := o.Size
	switch {
	case len(s) > 0 && s[0] == '+':
		rel, s = 1, s[1:]
	case len(s) > 0 && s[0] == '-':
		rel, s = -1, s[1:]
	}
	n, err := units.ParseSize(s)
	if err != nil || n > math.MaxInt64 {
		ios.Errorf("Parameter 'size' expects a non-negative number below 2^64")
		fmt.Fprintln(ios.ErrOut, "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.")
		return cmdutil.Exit(1)
	}
	// The backing file is opened, as qemu-img opens it: a growth over a
	// longer backing file zeroes the added area, and preallocation copies
	// what partly covered clusters show.
	d, err := zone.Open(o.File, image.Options{Cache: image.CacheWriteBack})
	if err != nil {
		ios.Errorf("%s", ios.OpenError(o.File, err))
		return cmdutil.Exit(1)
	}
	cur := d.Size()
	total := int64(n)
	switch rel {
	case 1:
		total = cur + int64(n)
		if total < cur {
			total = -1
		}
	case -1:
		total = cur - int64(n)
	}
	err = resize(o, d, cur, total, prealloc)
	if cerr := d.Close(); err == nil && cerr != nil {
		ios.Errorf("%s: %v", o.File, cerr)
		return cmdutil.Exit(1)
	}
	if err == nil && !o.Quiet {
		fmt.Fprintln(ios.Out, "Image resized.")
	}
	return err
}

func resize(o *Options, d *zone.Device, cur, total int64, prealloc image.PreallocMode) error {
	ios := o.IO
	if total <= 0 {
		ios.Errorf("New image size must be positive")
		return cmdutil.Exit(1)
	}
	if total <= cur && prealloc != image.PreallocOff {
		ios.Errorf("Preallocation can only be used for growing images")
		return cmdutil.Exit(1)
	}
	if total < cur && !o.Shrink {
		ios.Errorf("%v", image.ErrShrinkNotAllowed)
		ios.Warnf("Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.")
		return cmdutil.Exit(1)
	}
	if err := d.ResizePrealloc(uint64(total), o.Shrink, prealloc); err != nil {
		var ze *zone.Error
		switch {
		case errors.Is(err, zone.ErrResize), errors.As(err, &ze):
			ios.Errorf("%s: %v", o.File, err)
		default:
			ios.Errorf("%v", err)
		}
		return cmdutil.Exit(1)
	}
	return nil
}
