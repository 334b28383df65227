package mapcmd

import (
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil/cmdtest"
)

// TestFlags: the command line becomes the options Run gets (the run
// function replaced, as the GitHub CLI tests its commands), and argument
// errors stop before Run.
func TestFlags(t *testing.T) {
	cmdtest.CheckFlags(t, NewCmdMap, func(o *Options) { o.IO = nil }, []cmdtest.Case[Options]{
		{Args: "img", Want: &Options{Output: "human", StartOffset: "0", File: "img"}},
		{Args: "--output=json -f qcow2 --start-offset 1M --max-length=4M -U --zones img", Want: &Options{Output: "json", Format: "qcow2", StartOffset: "1M", MaxLength: "4M", ForceShare: true, Zones: true, File: "img"}},
		{Args: "", Want: nil},
		{Args: "a b", Want: nil},
	})
}
