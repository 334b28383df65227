package mount

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
		{"img dir", &Options{Cache: DefaultCache, File: "img", Dir: "dir"}},
		{"-r -t writethrough -o allow_other -o explicit-open --debug img dir", &Options{ReadOnly: true, Cache: "writethrough", MountOpts: []string{"allow_other", "explicit-open"}, Debug: true, File: "img", Dir: "dir"}},
		{"img", nil},
		{"img dir extra", nil},
	} {
		got, err := cmdtest.Parse(NewCmdMount, c.args)
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
