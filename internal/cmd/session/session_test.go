package session

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/internal/testimg"
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

// TestRunAIOAndDiscardOptions: qemu-io's --aio and -d values are checked
// before the image is opened, with qemu-io's messages; aio=native needs an
// O_DIRECT cache mode, as in qemu.
func TestRunAIOAndDiscardOptions(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Cache: "writeback", Format: "qcow2", AIO: "posix", discard: "ignore"}, "zqimg: Invalid aio option: posix\n"},
		{Options{Cache: "writeback", Format: "qcow2", AIO: "threads", discard: "trim"}, "zqimg: Invalid discard option: trim\n"},
		{Options{Cache: "writeback", Format: "qcow2", AIO: "native", discard: "ignore"},
			"zqimg: can't open device nosuch.qcow2: aio=native was specified, but it requires cache.direct=on, which was not specified.\n"},
		{Options{Cache: "writeback", Format: "qcow2", AIO: "threads", nativeAIO: true, discard: "ignore"},
			"zqimg: can't open device nosuch.qcow2: aio=native was specified, but it requires cache.direct=on, which was not specified.\n"},
	} {
		var out, errb bytes.Buffer
		o := c.o
		o.IO = &cmdutil.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errb}
		o.File = "nosuch.qcow2"
		err := Run(&o)
		if exitCode(err) != 1 || errb.String() != c.want || out.Len() != 0 {
			t.Errorf("%+v: exit %d, stderr %q; want exit 1, %q", c.o, exitCode(err), errb.String(), c.want)
		}
	}
}

// TestRunAsQemuIO: under the name qemu-io the session accepts qemu-io's
// --aio modes, prints the "qemu-io> " prompt before each command read
// from standard input and prefixes its messages with "qemu-io: ".
func TestRunAsQemuIO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.qcow2")
	testimg.File(t, path, "1M")
	for _, aio := range []string{"threads", "io_uring"} {
		var out, errb bytes.Buffer
		ios := &cmdutil.IOStreams{In: strings.NewReader("write -q -P 0x11 0 512\nread -q -P 0x11 0 512\n"), Out: &out, ErrOut: &errb, Prog: "qemu-io"}
		cmd := NewCmdIO(ios, nil)
		cmd.SetArgs([]string{"--aio", aio, "-m", "-d", "unmap", "-f", "qcow2", path})
		if err := cmd.Execute(); err != nil {
			t.Fatalf("--aio %s: %v (stderr %q)", aio, err, errb.String())
		}
		if got := out.String(); got != "qemu-io> qemu-io> qemu-io> " || errb.Len() != 0 {
			t.Errorf("--aio %s: stdout %q stderr %q, want three prompts and no message", aio, got, errb.String())
		}
	}
	var out, errb bytes.Buffer
	ios := &cmdutil.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errb, Prog: "qemu-io"}
	cmd := NewCmdIO(ios, nil)
	cmd.SilenceErrors = true
	cmd.SetArgs([]string{"-r", "-c", "write 0 512", path})
	if err := cmd.Execute(); exitCode(err) != 1 || errb.String() != "qemu-io: Block node is read-only\n" {
		t.Errorf("read-only write: exit %d, stderr %q, want 1 and a qemu-io: message", exitCode(err), errb.String())
	}
}

// TestQemuIOWithoutImage: as qemu-io, the session starts without an image
// (commands fail with "no file open") and open opens one; zqimg io still
// wants exactly one file.
func TestQemuIOWithoutImage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.qcow2")
	testimg.File(t, path, "1M")
	var out, errb bytes.Buffer
	ios := &cmdutil.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errb, Prog: "qemu-io"}
	cmd := NewCmdIO(ios, nil)
	cmd.SilenceErrors = true
	cmd.SetArgs([]string{"-c", "read -q 0 512", "-c", "open -o driver=qcow2 " + path, "-c", "write -q -P 0x3c 0 512", "-c", "close", "-c", "open -r " + path, "-c", "read -q -P 0x3c 0 512"})
	if err := cmd.Execute(); exitCode(err) != 1 || errb.String() != "no file open, try 'help open'\n" || out.Len() != 0 {
		t.Errorf("exit %d, stderr %q, stdout %q", exitCode(err), errb.String(), out.String())
	}
	ios = &cmdutil.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errb}
	cmd = NewCmdIO(ios, nil)
	cmd.SilenceErrors = true
	cmd.SetArgs([]string{"-c", "length"})
	if err := cmd.Execute(); err == nil || err.Error() != "Expecting one image file name" {
		t.Errorf("zqimg io without a file: %v", err)
	}
}
