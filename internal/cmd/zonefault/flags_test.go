package zonefault

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
		{"img set ro 64M 64M", &Options{File: "img", Action: "set", Cond: "ro", Offset: "64M", Length: "64M"}},
		{"-U img list", &Options{File: "img", Action: "list", ForceShare: true}},
		{"img set ro 64M", nil},
		{"img list extra", nil},
		{"img drop", nil},
	} {
		got, err := cmdtest.Parse(NewCmdZoneFault, c.args)
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
