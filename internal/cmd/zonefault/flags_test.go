package zonefault

import (
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil/cmdtest"
)

// TestFlags: the command line becomes the options Run gets (the run
// function replaced, as the GitHub CLI tests its commands), and argument
// errors stop before Run.
func TestFlags(t *testing.T) {
	cmdtest.CheckFlags(t, NewCmdZoneFault, func(o *Options) { o.IO = nil }, []cmdtest.Case[Options]{
		{Args: "img set ro 64M 64M", Want: &Options{File: "img", Action: "set", Cond: "ro", Offset: "64M", Length: "64M"}},
		{Args: "-U img list", Want: &Options{File: "img", Action: "list", ForceShare: true}},
		{Args: "img set ro 64M", Want: nil},
		{Args: "img list extra", Want: nil},
		{Args: "img drop", Want: nil},
	})
}
