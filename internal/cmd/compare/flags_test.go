package compare

import (
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil/cmdtest"
)

// TestFlags: the command line becomes the options Run gets (the run
// function replaced, as the GitHub CLI tests its commands), and argument
// errors stop before Run.
func TestFlags(t *testing.T) {
	cmdtest.CheckFlags(t, NewCmdCompare, func(o *Options) { o.IO = nil }, []cmdtest.Case[Options]{
		{Args: "a b", Want: &Options{File1: "a", File2: "b"}},
		{Args: "-s -q -p -U -f raw -F qcow2 a b", Want: &Options{Format1: "raw", Format2: "qcow2", Strict: true, Quiet: true, Progress: true, ForceShare: true, File1: "a", File2: "b"}},
		{Args: "a", Want: nil},
		{Args: "a b c", Want: nil},
	})
}
