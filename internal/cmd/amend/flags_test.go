package amend

import (
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil/cmdtest"
)

// TestFlags: the command line becomes the options Run gets (the run
// function replaced, as the GitHub CLI tests its commands), and argument
// errors stop before Run.
func TestFlags(t *testing.T) {
	cmdtest.CheckFlags(t, NewCmdAmend, func(o *Options) { o.IO = nil }, []cmdtest.Case[Options]{
		{Args: "-o lazy_refcounts=on img", Want: &Options{Opts: []string{"lazy_refcounts=on"}, Format: "qcow2", File: "img"}},
		{Args: "-q -o zone.max_open_zones=4 -o zone.max_active_zones=8 img", Want: &Options{Opts: []string{"zone.max_open_zones=4", "zone.max_active_zones=8"}, Format: "qcow2", Quiet: true, File: "img"}},
		{Args: "-p -o compat=0.10 img", Want: &Options{Opts: []string{"compat=0.10"}, Format: "qcow2", Progress: true, File: "img"}},
		{Args: "img", Want: nil},
		{Args: "-o lazy_refcounts=on", Want: nil},
	})
}
