package snapshot

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
		{"-l img", &Options{Action: ActionList, File: "img"}},
		{"-c before -q img", &Options{Action: ActionCreate, Name: "before", Quiet: true, File: "img"}},
		{"-a before img", &Options{Action: ActionApply, Name: "before", File: "img"}},
		{"-d before -U img", &Options{Action: ActionDelete, Name: "before", ForceShare: true, File: "img"}},
		{"-l", nil},
	} {
		got, err := cmdtest.Parse(NewCmdSnapshot, c.args)
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
