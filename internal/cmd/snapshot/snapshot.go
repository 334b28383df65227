// Package snapshot is the `zqimg snapshot` command.
package snapshot

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/pkg/image"
	pinfo "github.com/zqimg/zqimg/pkg/info"
	"github.com/zqimg/zqimg/pkg/zone"
)

// Action is what the command does.
type Action int

// Actions, one per flag.
const (
	ActionNone Action = iota
	ActionList
	ActionCreate
	ActionApply
	ActionDelete
)

// Options are the parsed flags and arguments of `zqimg snapshot`.
type Options struct {
	IO         *cmdutil.IOStreams
	Action     Action
	Name       string
	Quiet      bool
	ForceShare bool
	File       string
}

// NewCmdSnapshot returns the snapshot command; runF replaces the default
// run function in tests.
func NewCmdSnapshot(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	var list bool
	var create, apply, del string
	cmd := &cobra.Command{
		Use:   "snapshot [-l | -a SNAPSHOT | -c SNAPSHOT | -d SNAPSHOT] [-q] [-U] FILE",
		Short: "List, create, apply or delete internal snapshots",
		Long: `Manage the internal snapshots of a qcow2 image, as qemu-img snapshot does:
-l lists them, -c creates one (the next numeric ID, the given name), -a
applies one (found by ID, then by name: the disk, and its size, become what
they were), -d deletes the first one with the given name.

On a zoned image -c also saves the zones' write pointers in the snapshot,
and -a restores them together with the data, in one atomic step, so that
the zones agree with the data afterwards.`,
		Example: `  zqimg snapshot -c before-upgrade disk.qcow2
  zqimg snapshot -l disk.qcow2
  zqimg snapshot -a before-upgrade disk.qcow2`,
		Args: cmdutil.ExactlyOneFile,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.File = args[0]
			n := 0
			f := cmd.Flags()
			if list {
				o.Action, n = ActionList, n+1
			}
			if f.Changed("create") {
				o.Action, o.Name, n = ActionCreate, create, n+1
			}
			if f.Changed("apply") {
				o.Action, o.Name, n = ActionApply, apply, n+1
			}
			if f.Changed("delete") {
				o.Action, o.Name, n = ActionDelete, del, n+1
			}
			if n > 1 {
				return fmt.Errorf("Cannot mix '-l', '-a', '-c', '-d'")
			}
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&list, "list", "l", false, "list the snapshots")
	fl.StringVarP(&create, "create", "c", "", "create a snapshot named `SNAPSHOT`")
	fl.StringVarP(&apply, "apply", "a", "", "apply the snapshot with this ID or name")
	fl.StringVarP(&del, "delete", "d", "", "delete the snapshot with this name")
	fl.BoolVarP(&o.Quiet, "quiet", "q", false, "quiet (nothing is printed but the list and errors)")
	fl.BoolVarP(&o.ForceShare, "force-share", "U", false, "open the image without taking locks (read-only actions only)")
	return cmd
}

// Run carries the action out.
func Run(o *Options) error {
	ios := o.IO
	ro := o.Action == ActionList || o.Action == ActionNone
	if o.ForceShare && !ro {
		ios.Errorf("Could not open '%s': force-share=on can only be used with read-only images", o.File)
		return cmdutil.Exit(1)
	}
	d, err := zone.Open(o.File, image.Options{ReadOnly: ro, NoLock: o.ForceShare, NoBacking: true, Cache: image.CacheWriteBack})
	if err != nil {
		ios.Errorf("%s", ios.OpenError(o.File, err))
		return cmdutil.Exit(1)
	}
	err = run(o, d)
	if cerr := d.Close(); err == nil && cerr != nil {
		ios.Errorf("%s: %v", o.File, cerr)
		return cmdutil.Exit(1)
	}
	return err
}

func run(o *Options, d *zone.Device) error {
	ios := o.IO
	switch o.Action {
	case ActionList:
		snaps, err := d.Image().Snapshots()
		if err != nil {
			ios.Errorf("%s: %v", o.File, err)
			return cmdutil.Exit(1)
		}
		fmt.Fprint(ios.Out, pinfo.SnapshotList(pinfo.SnapshotInfos(snaps)))
	case ActionCreate:
		if _, err := d.CreateSnapshot(o.Name); err != nil {
			ios.Errorf("Could not create snapshot '%s': %v", o.Name, err)
			return cmdutil.Exit(1)
		}
	case ActionApply:
		if err := d.ApplySnapshot(o.Name); err != nil {
			if errors.Is(err, image.ErrSnapshotNotFound) {
				ios.Errorf("Could not apply snapshot '%s': Failed to load snapshot: No such file or directory", o.Name)
			} else {
				ios.Errorf("Could not apply snapshot '%s': %v", o.Name, err)
			}
			return cmdutil.Exit(1)
		}
	case ActionDelete:
		if err := d.DeleteSnapshot(o.Name); err != nil {
			if errors.Is(err, image.ErrSnapshotNotFound) {
				ios.Errorf("Could not delete snapshot '%s': snapshot not found", o.Name)
			} else {
				ios.Errorf("Could not delete snapshot '%s': %v", o.Name, err)
			}
			return cmdutil.Exit(1)
		}
	}
	return nil
}
