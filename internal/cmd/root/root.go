// Package root assembles the zqimg command tree.
package root

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmd/amend"
	"github.com/zqimg/zqimg/internal/cmd/bench"
	"github.com/zqimg/zqimg/internal/cmd/check"
	"github.com/zqimg/zqimg/internal/cmd/create"
	"github.com/zqimg/zqimg/internal/cmd/info"
	iocmd "github.com/zqimg/zqimg/internal/cmd/io"
	single "github.com/zqimg/zqimg/internal/cmd/iocmd"
	"github.com/zqimg/zqimg/internal/cmd/mount"
	"github.com/zqimg/zqimg/internal/cmd/resize"
	"github.com/zqimg/zqimg/internal/cmd/snapshot"
	"github.com/zqimg/zqimg/internal/cmdutil"
)

// Version is the zqimg version.
const Version = "0.1.0"

// NewCmdRoot returns the root command with every subcommand.
func NewCmdRoot(ios *cmdutil.IOStreams) *cobra.Command {
	root := &cobra.Command{
		Use:   "zqimg <command> [flags]",
		Short: "Create, inspect, check and drive qcow2 images that emulate zoned block devices",
		Long: `zqimg creates, inspects, checks and drives qcow2 images, including images
with the zoned format extension that emulate a host-managed zoned block
device. Its options and output follow qemu-img and qemu-io.`,
		Version:       Version,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetIn(ios.In)
	root.SetOut(ios.Out)
	root.SetErr(ios.ErrOut)
	root.AddCommand(check.NewCmdCheck(ios, nil))
	root.AddCommand(create.NewCmdCreate(ios, nil))
	root.AddCommand(info.NewCmdInfo(ios, nil))
	root.AddCommand(iocmd.NewCmdIO(ios, nil))
	root.AddCommand(mount.NewCmdMount(ios, nil))
	root.AddCommand(snapshot.NewCmdSnapshot(ios, nil))
	root.AddCommand(resize.NewCmdResize(ios, nil))
	root.AddCommand(amend.NewCmdAmend(ios, nil))
	root.AddCommand(bench.NewCmdBench(ios, nil))
	for _, s := range single.Specs {
		root.AddCommand(single.NewCmd(ios, s, nil))
	}
	root.CompletionOptions.DisableDefaultCmd = true
	return root
}

// Main runs zqimg with args and returns the exit status.
func Main(args []string, in io.Reader, out, errOut io.Writer) int {
	ios := &cmdutil.IOStreams{In: in, Out: out, ErrOut: errOut}
	root := NewCmdRoot(ios)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	var ee *cmdutil.ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	ios.Errorf("%v", err)
	fmt.Fprintf(errOut, "Try '%s --help' for more information.\n", cmd.CommandPath())
	return 1
}
