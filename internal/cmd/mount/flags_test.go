package mount

import (
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil/cmdtest"
)

// TestFlags: the command line becomes the options Run gets (the run
// function replaced, as the GitHub CLI tests its commands), and argument
// errors stop before Run.
func TestFlags(t *testing.T) {
	cmdtest.CheckFlags(t, NewCmdMount, func(o *Options) { o.IO = nil }, []cmdtest.Case[Options]{
		{Args: "img dir", Want: &Options{Cache: DefaultCache, File: "img", Dir: "dir"}},
		{Args: "-r -t writethrough -o allow_other -o explicit-open --debug img dir", Want: &Options{ReadOnly: true, Cache: "writethrough", MountOpts: []string{"allow_other", "explicit-open"}, Debug: true, File: "img", Dir: "dir"}},
		{Args: "img", Want: nil},
		{Args: "img dir extra", Want: nil},
	})
}
