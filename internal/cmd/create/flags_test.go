package create

import (
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil/cmdtest"
)

// TestFlags: the command line becomes the options Run gets (the run
// function replaced, as the GitHub CLI tests its commands), and argument
// errors stop before Run.
func TestFlags(t *testing.T) {
	cmdtest.CheckFlags(t, NewCmdCreate, func(o *Options) { o.IO = nil }, []cmdtest.Case[Options]{
		{Args: "img 1G", Want: &Options{Format: "qcow2", File: "img", Size: "1G", HasSize: true}},
		{Args: "-q -o cluster_size=4k -o zone.mode=host-managed img", Want: &Options{Format: "qcow2", Opts: []string{"cluster_size=4k", "zone.mode=host-managed"}, Quiet: true, File: "img"}},
		{Args: "-f qcow2 img 1G extra", Want: nil},
	})
}
