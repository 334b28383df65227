package bench

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
		{"img", &Options{Count: "75000", Depth: "64", Size: "4096", Offset: "0", Pattern: "0", FlushInterval: "0", Cache: "writeback", Format: "qcow2", File: "img", set: map[string]bool{}}},
		{"-c 100 -d 32 -s 64k -w --zoned append -t none img", &Options{Count: "100", Depth: "32", Size: "64k", Offset: "0", Write: true, Pattern: "0", FlushInterval: "0", Cache: "none", Format: "qcow2", Zoned: "append", File: "img",
			set: map[string]bool{"count": true, "depth": true, "size": true, "write": true, "zoned": true, "cache": true}}},
		{"", nil},
	} {
		got, err := cmdtest.Parse(NewCmdBench, c.args)
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
