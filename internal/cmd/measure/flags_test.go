package measure

import (
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil/cmdtest"
)

// TestFlags: the command line becomes the options Run gets (the run
// function replaced, as the GitHub CLI tests its commands), and argument
// errors stop before Run.
func TestFlags(t *testing.T) {
	cmdtest.CheckFlags(t, NewCmdMeasure, func(o *Options) { o.IO = nil }, []cmdtest.Case[Options]{
		{Args: "img", Want: &Options{Output: "human", OutFormat: "raw", Files: []string{"img"}}},
		{Args: "--output=json -O qcow2 -o zone.mode=host-managed --size 1G", Want: &Options{Output: "json", OutFormat: "qcow2", Opts: []string{"zone.mode=host-managed"}, Size: "1G", Files: []string{}}},
	})
}
