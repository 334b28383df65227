package convert

import (
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil/cmdtest"
)

// TestFlags: the command line becomes the options Run gets (the run
// function replaced, as the GitHub CLI tests its commands), and argument
// errors stop before Run.
func TestFlags(t *testing.T) {
	cmdtest.CheckFlags(t, NewCmdConvert, func(o *Options) { o.IO = nil }, []cmdtest.Case[Options]{
		{Args: "a b", Want: &Options{OutFormat: "raw", Src: []string{"a"}, Dest: "b"}},
		{Args: "-p -c -f qcow2 -O qcow2 -o cluster_size=4k -o compression_type=zstd -U a b", Want: &Options{Progress: true, Compress: true, Format: "qcow2", OutFormat: "qcow2", Opts: []string{"cluster_size=4k", "compression_type=zstd"}, ForceShare: true, Src: []string{"a"}, Dest: "b"}},
		{Args: "a", Want: nil},
		// Several sources are concatenated into the last name.
		{Args: "a b c", Want: &Options{OutFormat: "raw", Src: []string{"a", "b"}, Dest: "c"}},
	})
}
