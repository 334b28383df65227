package bench

import (
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil/cmdtest"
)

// TestFlags: the command line becomes the options Run gets (the run
// function replaced, as the GitHub CLI tests its commands), and argument
// errors stop before Run.
func TestFlags(t *testing.T) {
	cmdtest.CheckFlags(t, NewCmdBench, func(o *Options) { o.IO = nil }, []cmdtest.Case[Options]{
		{Args: "img", Want: &Options{Count: "75000", Depth: "64", Size: "4096", Offset: "0", Pattern: "0", FlushInterval: "0", Cache: "writeback", Format: "qcow2", File: "img", set: map[string]bool{}}},
		{Args: "-c 100 -d 32 -s 64k -w --zoned append -t none img", Want: &Options{Count: "100", Depth: "32", Size: "64k", Offset: "0", Write: true, Pattern: "0", FlushInterval: "0", Cache: "none", Format: "qcow2", Zoned: "append", File: "img",
			set: map[string]bool{"count": true, "depth": true, "size": true, "write": true, "zoned": true, "cache": true}}},
		{Args: "", Want: nil},
	})
}
