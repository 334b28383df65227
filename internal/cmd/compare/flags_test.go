package compare

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
		{"a b", &Options{File1: "a", File2: "b"}},
		{"-s -q -p -U -f raw -F qcow2 a b", &Options{Format1: "raw", Format2: "qcow2", Strict: true, Quiet: true, Progress: true, ForceShare: true, File1: "a", File2: "b"}},
		{"a", nil},
		{"a b c", nil},
	} {
		got, err := cmdtest.Parse(NewCmdCompare, c.args)
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
