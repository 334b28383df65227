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
	"github.com/zqimg/zqimg/internal/cmd/commit"
	"github.com/zqimg/zqimg/internal/cmd/compare"
	"github.com/zqimg/zqimg/internal/cmd/convert"
	"github.com/zqimg/zqimg/internal/cmd/create"
	"github.com/zqimg/zqimg/internal/cmd/dd"
	"github.com/zqimg/zqimg/internal/cmd/info"
	mapcmd "github.com/zqimg/zqimg/internal/cmd/map"
	"github.com/zqimg/zqimg/internal/cmd/measure"
	"github.com/zqimg/zqimg/internal/cmd/mount"
	"github.com/zqimg/zqimg/internal/cmd/oneshot"
	"github.com/zqimg/zqimg/internal/cmd/rebase"
	"github.com/zqimg/zqimg/internal/cmd/resize"
	"github.com/zqimg/zqimg/internal/cmd/session"
	"github.com/zqimg/zqimg/internal/cmd/snapshot"
	"github.com/zqimg/zqimg/internal/cmd/zonefault"
	"github.com/zqimg/zqimg/internal/cmdutil"
)

// Version is the zqimg version.
const Version = "0.1.0"

// versionTemplate prints the version as `qemu-img -V` does: the version
// line, then the copyright line.
const versionTemplate = `zqimg version {{.Version}}
Copyright (c) 2026 the zqimg developers
`

// NewCmdRoot returns the root command with every subcommand.
func NewCmdRoot(ios *cmdutil.IOStreams) *cobra.Command {
	root := &cobra.Command{
		Use:   ios.ProgName() + " <command> [flags]",
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
	root.SetVersionTemplate(versionTemplate)
	// -V and --version, as qemu-img's (Cobra would use -v).
	root.Flags().BoolP("version", "V", false, "print the version and exit")
	root.AddCommand(check.NewCmdCheck(ios, nil))
	root.AddCommand(compare.NewCmdCompare(ios, nil))
	root.AddCommand(convert.NewCmdConvert(ios, nil))
	root.AddCommand(dd.NewCmdDD(ios, nil))
	root.AddCommand(create.NewCmdCreate(ios, nil))
	root.AddCommand(info.NewCmdInfo(ios, nil))
	root.AddCommand(session.NewCmdIO(ios, nil))
	root.AddCommand(mapcmd.NewCmdMap(ios, nil))
	root.AddCommand(measure.NewCmdMeasure(ios, nil))
	root.AddCommand(mount.NewCmdMount(ios, nil))
	root.AddCommand(zonefault.NewCmdZoneFault(ios, nil))
	root.AddCommand(snapshot.NewCmdSnapshot(ios, nil))
	root.AddCommand(resize.NewCmdResize(ios, nil))
	root.AddCommand(amend.NewCmdAmend(ios, nil))
	root.AddCommand(bench.NewCmdBench(ios, nil))
	root.AddCommand(rebase.NewCmdRebase(ios, nil))
	root.AddCommand(commit.NewCmdCommit(ios, nil))
	root.AddCommand(oneshot.NewCmds(ios)...)
	return root
}

// Main runs zqimg with args and returns the exit status.
func Main(args []string, in io.Reader, out, errOut io.Writer) int {
	return MainAs(cmdutil.Prog, args, in, out, errOut)
}

// MainAs runs zqimg invoked under the program name prog (argv[0]'s base
// name) and returns the exit status. As "qemu-img" it is zqimg with
// "qemu-img: " prefixed to its messages; as "qemu-io" it is `zqimg io`
// (qemu-io's options, "qemu-io: " messages and the "qemu-io> " prompt).
// Any other name is zqimg.
func MainAs(prog string, args []string, in io.Reader, out, errOut io.Writer) int {
	ios := &cmdutil.IOStreams{In: in, Out: out, ErrOut: errOut}
	switch prog {
	case "qemu-img":
		ios.Prog = prog
	case "qemu-io":
		ios.Prog = prog
		args = append([]string{"io"}, args...)
	}
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
	fmt.Fprintf(errOut, "Try '%s --help' for more information\n", cmd.CommandPath())
	return 1
}
