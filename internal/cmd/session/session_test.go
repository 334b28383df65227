package session

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil"
)

// TestCacheFlags: -t MODE and --cache=MODE set the cache mode, -n and
// --nocache mean -t none, and the last one given wins, as in qemu-io. The
// default is writethrough.
func TestCacheFlags(t *testing.T) {
	for _, c := range []struct {
		args string
		want string
	}{
		{"f", "writethrough"},
		{"-t writeback f", "writeback"},
		{"--cache=unsafe f", "unsafe"},
		{"-tdirectsync f", "directsync"},
		{"-n f", "none"},
		{"--nocache f", "none"},
		{"-t writeback -n f", "none"},
		{"-n -t writeback f", "writeback"},
		{"-U -r -c read -t none f", "none"},
	} {
		var got *Options
		ios := &cmdutil.IOStreams{In: strings.NewReader(""), Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}}
		cmd := NewCmdIO(ios, func(o *Options) error { got = o; return nil })
		cmd.SetArgs(strings.Fields(c.args))
		if err := cmd.Execute(); err != nil {
			t.Fatalf("%s: %v", c.args, err)
		}
		if got == nil || got.Cache != c.want || got.File != "f" {
			t.Errorf("%s: cache %q file %q, want %q", c.args, got.Cache, got.File, c.want)
		}
	}
}

// TestRunRefusesBeforeOpening: an invalid cache mode, and -U with a -c
// command that writes, are refused before the image is opened (the file
// does not even exist here), with qemu-io's messages.
func TestRunRefusesBeforeOpening(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Cache: "bogus", Format: "qcow2"}, "zqimg: Invalid cache option: bogus\n"},
		{Options{Cache: "", Format: "qcow2"}, "zqimg: Invalid cache option: \n"},
		{Options{Cache: "writethrough", Format: "qcow2", ForceShare: true, Commands: []string{"read 0 1", "w 0 1"}},
			"zqimg: can't open device nosuch.qcow2: force-share=on can only be used with read-only images\n"},
		{Options{Cache: "writethrough", Format: "qcow2", ForceShare: true, ReadOnly: true, Commands: []string{"zap 0 512"}},
			"zqimg: can't open device nosuch.qcow2: force-share=on can only be used with read-only images\n"},
	} {
		var out, errb bytes.Buffer
		o := c.o
		o.IO = &cmdutil.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errb}
		o.File = "nosuch.qcow2"
		err := Run(&o)
		if exitCode(err) != 1 || errb.String() != c.want || out.Len() != 0 {
			t.Errorf("%+v: exit %d, stderr %q, stdout %q; want exit 1, %q", c.o, exitCode(err), errb.String(), out.String(), c.want)
		}
	}
}

// exitCode is the exit status a command's error makes.
func exitCode(err error) int {
	var ee *cmdutil.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.Code
	}
	return 1
}
