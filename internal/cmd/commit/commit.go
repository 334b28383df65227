// Package commit is the `zqimg commit` command.
package commit

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/internal/progress"
	pcommit "github.com/zqimg/zqimg/pkg/commit"
)

// Options are the parsed flags and arguments of `zqimg commit`.
type Options struct {
	IO       *cmdutil.IOStreams
	Format   string // -f
	Base     string // -b
	Keep     bool   // -d
	Progress bool   // -p
	Quiet    bool   // -q
	File     string
}

// NewCmdCommit returns the commit command; runF replaces the default run
// function in tests.
func NewCmdCommit(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "commit [-f qcow2] [-b BASE] [-d] [-p] [-q] FILE",
		Short: "Merge an overlay into its backing file",
		Long: `Write the data FILE stores into its backing file (qcow2 or raw), as qemu-img
commit does, then empty FILE so that it reads through to the backing file
(-d keeps FILE's data). -b names the backing file explicitly and implies -d; zqimg
commits into FILE's own backing file only. Zoned images have no backing
file.`,
		Example: `  zqimg commit overlay.qcow2
  zqimg commit -d overlay.qcow2`,
		Args: cmdutil.ExactlyOneFile,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.File = args[0]
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	cmd.Flags().StringVarP(&o.Format, "format", "f", "", "format of FILE (qcow2; probed when omitted)")
	cmd.Flags().StringVarP(&o.Base, "base", "b", "", "the backing file to commit into (FILE's own)")
	cmd.Flags().BoolVarP(&o.Keep, "keep", "d", false, "do not empty FILE after the commit")
	cmd.Flags().BoolVarP(&o.Progress, "progress", "p", false, "show the progress")
	cmd.Flags().BoolVarP(&o.Quiet, "quiet", "q", false, "print nothing on success")
	return cmd
}

// Run commits the image.
func Run(o *Options) error {
	ios := o.IO
	req := pcommit.Request{File: o.File, Format: o.Format, Base: o.Base, Keep: o.Keep}
	var bar *progress.Bar
	if o.Progress && !o.Quiet {
		bar = progress.New(ios.Out, 1)
		req.Progress = func(done, total int64) { bar.Update(done, total) }
	}
	err := pcommit.Commit(req)
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		var oe *pcommit.OpenError
		if errors.As(err, &oe) && !errors.Is(err, pcommit.ErrZoned) {
			ios.Errorf("%s", ios.OpenError(oe.Path, oe.Err))
		} else {
			ios.Errorf("%v", err)
		}
		return cmdutil.Exit(1)
	}
	if !o.Quiet {
		fmt.Fprintln(ios.Out, "Image committed.")
	}
	return nil
}
