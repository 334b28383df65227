package mapcmd

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
		{"img", &Options{Output: "human", StartOffset: "0", File: "img"}},
		{"--output=json -f qcow2 --start-offset 1M --max-length=4M -U --zones img", &Options{Output: "json", Format: "qcow2", StartOffset: "1M", MaxLength: "4M", ForceShare: true, Zones: true, File: "img"}},
		{"", nil},
		{"a b", nil},
	} {
		got, err := cmdtest.Parse(NewCmdMap, c.args)
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
