package resize

import (
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil/cmdtest"
)

// TestFlags: the command line becomes the options Run gets (the run
// function replaced, as the GitHub CLI tests its commands), and argument
// errors stop before Run.
func TestFlags(t *testing.T) {
	cmdtest.CheckFlags(t, NewCmdResize, func(o *Options) { o.IO = nil }, []cmdtest.Case[Options]{
		{Args: "img +1G", Want: &Options{Format: "qcow2", File: "img", Size: "+1G", Preallocation: "off"}},
		{Args: "--shrink -q img -512M", Want: &Options{Shrink: true, Format: "qcow2", Quiet: true, File: "img", Size: "-512M", Preallocation: "off"}},
		{Args: "--preallocation=falloc img +1M", Want: &Options{Format: "qcow2", File: "img", Size: "+1M", Preallocation: "falloc"}},
		{Args: "-f qcow2 --preallocation full img 2M", Want: &Options{Format: "qcow2", File: "img", Size: "2M", Preallocation: "full"}},
		{Args: "img", Want: nil},
	})
}
