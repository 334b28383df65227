// Package create is the `zqimg create` command.
package create

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
	pcreate "github.com/zqimg/zqimg/pkg/create"
)

// Options are the parsed flags and arguments of `zqimg create`.
type Options struct {
	IO      *cmdutil.IOStreams
	Format  string
	Opts    []string
	Quiet   bool
	File    string
	Size    string
	HasSize bool
	// Backing (-b, set when HasBacking) and BackingFormat (-F) name the
	// backing file; NoBackingOpen (-u) creates without opening it.
	Backing       string
	HasBacking    bool
	BackingFormat string
	NoBackingOpen bool
	// Objects are the --object definitions; only secrets
	// (secret,id=ID,data=...|file=...) are known.
	Objects []string
}

// NewCmdCreate returns the create command; runF replaces the default run
// function in tests.
func NewCmdCreate(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "create [-f qcow2] [-b BACKING -F FMT [-u]] [-o OPTIONS]... [-q] FILE [SIZE]",
		Short: "Create a qcow2 image, optionally a zoned one",
		Long: `Create a new qcow2 image FILE of SIZE bytes (suffixes k, M, G, T, P, E;
base 1024). Options are given as -o key=value[,key=value...], as with
qemu-img; "-o help" lists them. With -o zone.mode=host-managed the image
emulates a host-managed zoned block device. With -b BACKING -F FMT the image
is an overlay of BACKING (its size taken from BACKING when SIZE is omitted);
-u stores the name without opening BACKING.`,
		Example: `  zqimg create -f qcow2 disk.qcow2 1G
  zqimg create -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2
  zqimg create -o size=768M -o zone.mode=host-managed,zone.size=64M,zone.max_open_zones=6 zbc.qcow2`,
		// FILE may be missing when -o help is given; Run reports it.
		Args: cmdutil.AtMostFileAndSize,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				o.File = args[0]
			}
			if len(args) > 1 {
				o.Size, o.HasSize = args[1], true
			}
			o.HasBacking = cmd.Flags().Changed("backing")
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	cmd.Flags().StringVarP(&o.Format, "format", "f", "qcow2", "image format: qcow2 or raw")
	cmd.Flags().StringArrayVarP(&o.Opts, "options", "o", nil, "comma-separated create options; repeatable; 'help' lists them")
	cmd.Flags().BoolVarP(&o.Quiet, "quiet", "q", false, "do not print the Formatting line")
	cmd.Flags().StringVarP(&o.Backing, "backing", "b", "", "backing file (relative names are relative to FILE's directory)")
	cmd.Flags().StringVarP(&o.BackingFormat, "backing-format", "F", "", "format of the backing file (qcow2 or raw)")
	cmd.Flags().BoolVarP(&o.NoBackingOpen, "unsafe", "u", false, "do not open the backing file (SIZE is then required)")
	cmd.Flags().StringArrayVar(&o.Objects, "object", nil, "an object definition, as qemu-img's: secret,id=ID,data=DATA (for encryption=on,encrypt.key-secret=ID)")
	return cmd
}

// Run creates the image.
func Run(o *Options) error {
	ios := o.IO
	switch o.Format {
	case "qcow2":
	case "raw":
		return runRaw(o)
	default:
		ios.Errorf("Unknown file format '%s' (zqimg creates qcow2 and raw images only)", o.Format)
		return cmdutil.Exit(1)
	}
	lists := o.Opts
	if l := pcreate.BackingList(o.Backing, o.HasBacking, o.BackingFormat); l != "" {
		lists = append(append([]string(nil), lists...), l)
	}
	secrets, oerr := pcreate.SecretIDs(o.Objects)
	if oerr != nil {
		ios.Errorf("%v", oerr)
		return cmdutil.Exit(1)
	}
	opts, err := pcreate.ParseOptions(lists, o.Size, o.HasSize)
	if err == nil {
		opts.SetSecrets(secrets)
		err = pcreate.ResolveBacking(opts, cmdutil.FileOperand(o.File), o.NoBackingOpen)
	}
	if done, rerr := afterParse(o, err, pcreate.Help, func() string { return opts.Formatting(o.File) }); done {
		return rerr
	}
	spec, err := pcreate.Resolve(opts)
	if err != nil {
		ios.Errorf("%s: %v", o.File, err)
		return cmdutil.Exit(1)
	}
	for _, w := range spec.Warnings {
		ios.Warnf("%s", w)
	}
	if err := pcreate.Create(cmdutil.FileOperand(o.File), spec); err != nil {
		ios.Errorf("%s: %v", o.File, err)
		return cmdutil.Exit(1)
	}
	return nil
}

// runRaw creates a raw image (-f raw): options size, preallocation
// (off, falloc, full) and extent_size_hint; no backing file.
func runRaw(o *Options) error {
	ios := o.IO
	if o.HasBacking || o.BackingFormat != "" {
		ios.Errorf("%s: Backing file not supported for file format 'raw'", o.File)
		return cmdutil.Exit(1)
	}
	opts, err := pcreate.ParseRawOptions(o.Opts, o.Size, o.HasSize)
	if done, rerr := afterParse(o, err, pcreate.RawHelp, func() string { return opts.Formatting(o.File) }); done {
		return rerr
	}
	spec, err := pcreate.ResolveRaw(opts)
	if err == nil {
		err = pcreate.CreateRaw(cmdutil.FileOperand(o.File), spec)
	}
	if err != nil {
		ios.Errorf("%s: %v", o.File, err)
		return cmdutil.Exit(1)
	}
	return nil
}

// afterParse handles what follows the parsing of the options, err its
// error, as qemu-img create does: help printed (help), a missing file
// name, an option error; else the "Formatting ..." line (unless -q).
// done reports that the command ends here, with ret.
func afterParse(o *Options, err error, help func() string, formatting func() string) (done bool, ret error) {
	ios := o.IO
	switch {
	case errors.Is(err, pcreate.ErrHelp):
		fmt.Fprint(ios.Out, help())
		return true, nil
	case o.File == "":
		ios.Errorf("Expecting image file name")
		fmt.Fprintln(ios.ErrOut, "Try 'zqimg create --help' for more information")
		return true, cmdutil.Exit(1)
	case err != nil:
		return true, optionError(o, err)
	}
	if !o.Quiet {
		fmt.Fprintln(ios.Out, formatting())
	}
	return false, nil
}

// optionError reports an error of the options (or of the backing file
// they name) as qemu-img words it.
func optionError(o *Options, err error) error {
	ios := o.IO
	var oe *pcreate.OptionError
	if errors.As(err, &oe) {
		if oe.Global {
			ios.Errorf("%s", oe.Msg)
		} else {
			ios.Errorf("%s: %s", o.File, oe.Msg)
		}
		if oe.Hint != "" && oe.Global {
			ios.Errorf("%s", oe.Hint)
		} else if oe.Hint != "" {
			fmt.Fprintln(ios.ErrOut, oe.Hint)
		}
		return cmdutil.Exit(1)
	}
	var be *pcreate.BackingOpenError
	if errors.As(err, &be) {
		ios.Errorf("%s: %s", o.File, ios.Reason(be))
		fmt.Fprintln(ios.ErrOut, be.Hint())
		return cmdutil.Exit(1)
	}
	ios.Errorf("%s: %v", o.File, err)
	return cmdutil.Exit(1)
}
