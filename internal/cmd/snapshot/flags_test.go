package snapshot

import (
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil/cmdtest"
)

// TestFlags: the command line becomes the options Run gets (the run
// function replaced, as the GitHub CLI tests its commands), and argument
// errors stop before Run.
func TestFlags(t *testing.T) {
	cmdtest.CheckFlags(t, NewCmdSnapshot, func(o *Options) { o.IO = nil }, []cmdtest.Case[Options]{
		{Args: "-l img", Want: &Options{Action: ActionList, File: "img"}},
		{Args: "-c before -q img", Want: &Options{Action: ActionCreate, Name: "before", Quiet: true, File: "img"}},
		{Args: "-a before img", Want: &Options{Action: ActionApply, Name: "before", File: "img"}},
		{Args: "-d before -U img", Want: &Options{Action: ActionDelete, Name: "before", ForceShare: true, File: "img"}},
		{Args: "-l", Want: nil},
	})
}
