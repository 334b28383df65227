package amend

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
		{"-o lazy_refcounts=on img", &Options{Opts: []string{"lazy_refcounts=on"}, Format: "qcow2", File: "img"}},
		{"-q -o zone.max_open_zones=4 -o zone.max_active_zones=8 img", &Options{Opts: []string{"zone.max_open_zones=4", "zone.max_active_zones=8"}, Format: "qcow2", Quiet: true, File: "img"}},
		{"img", nil},
		{"-o lazy_refcounts=on", nil},
	} {
		got, err := cmdtest.Parse(NewCmdAmend, c.args)
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
