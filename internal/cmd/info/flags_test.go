package info

import (
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil/cmdtest"
)

// TestFlags: the command line becomes the options Run gets (the run
// function replaced, as the GitHub CLI tests its commands), and argument
// errors stop before Run.
func TestFlags(t *testing.T) {
	cmdtest.CheckFlags(t, NewCmdInfo, func(o *Options) { o.IO = nil }, []cmdtest.Case[Options]{
		{Args: "img", Want: &Options{Output: "human", Format: "qcow2", File: "img"}},
		{Args: "--output json -U --backing-chain img", Want: &Options{Output: "json", ForceShare: true, Format: "qcow2", File: "img", BackingChain: true}},
		{Args: "", Want: nil},
		{Args: "a b", Want: nil},
	})
}
