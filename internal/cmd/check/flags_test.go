package check

import (
	"reflect"
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil/cmdtest"
)

func TestFlags(t *testing.T) {
	for _, c := range []struct {
		args string
		want Options
		err  string
	}{
		{"img", Options{File: "img", Format: "qcow2", Output: "human"}, ""},
		{"-r all --output json -q -U -f qcow2 img", Options{File: "img", Format: "qcow2", Output: "json", Repair: "all", Quiet: true, ForceShare: true}, ""},
		{"img -r leaks", Options{File: "img", Format: "qcow2", Output: "human", Repair: "leaks"}, ""},
		{"", Options{}, "Expecting one image file name"},
		{"a b", Options{}, "Expecting one image file name"},
	} {
		ios, _, _ := cmdtest.Streams()
		var got *Options
		err := cmdtest.Run(NewCmdCheck(ios, func(o *Options) error { got = o; return nil }), c.args)
		if c.err != "" {
			if err == nil || err.Error() != c.err || got != nil {
				t.Errorf("%q: %v (ran: %v), want %q", c.args, err, got != nil, c.err)
			}
			continue
		}
		if err != nil || got == nil {
			t.Fatalf("%q: %v", c.args, err)
		}
		got.IO, c.want.IO = nil, nil
		if !reflect.DeepEqual(*got, c.want) {
			t.Errorf("%q: %+v, want %+v", c.args, *got, c.want)
		}
	}
}
