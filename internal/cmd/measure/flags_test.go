package measure

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
		{"img", &Options{Output: "human", OutFormat: "raw", Files: []string{"img"}}},
		{"--output=json -O qcow2 -o zone.mode=host-managed --size 1G", &Options{Output: "json", OutFormat: "qcow2", Opts: []string{"zone.mode=host-managed"}, Size: "1G", Files: []string{}}},
	} {
		got, err := cmdtest.Parse(NewCmdMeasure, c.args)
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
