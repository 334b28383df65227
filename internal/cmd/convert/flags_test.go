package convert

import (
	"reflect"
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil/cmdtest"
)

// TestFlags: the command line becomes the options Run gets (the run
// function replaced, as the GitHub CLI tests its commands), and argument
// errors stop before Run.
func TestFlags(t *testing.T) {
	for _, c := range []struct {
		args string
		want *Options // nil: an error is expected
	}{
		{"a b", &Options{OutFormat: "raw", Src: "a", Dest: "b"}},
		{"-p -c -f qcow2 -O qcow2 -o cluster_size=4k -o compression_type=zstd -U a b", &Options{Progress: true, Compress: true, Format: "qcow2", OutFormat: "qcow2", Opts: []string{"cluster_size=4k", "compression_type=zstd"}, ForceShare: true, Src: "a", Dest: "b"}},
		{"a", nil},
		{"a b c", nil},
	} {
		got, err := cmdtest.Parse(NewCmdConvert, c.args)
		if c.want == nil {
			if err == nil || got != nil {
				t.Errorf("%q: ran with %+v, want an error", c.args, got)
			}
			continue
		}
		if err != nil || got == nil {
			t.Fatalf("%q: %v", c.args, err)
		}
		got.IO = nil
		if !reflect.DeepEqual(*got, *c.want) {
			t.Errorf("%q:\n got %+v\nwant %+v", c.args, *got, *c.want)
		}
	}
}
