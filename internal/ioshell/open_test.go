package ioshell

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// reopenShell returns a qemu-io shell on a new image opened read-write
// through its Open function, which records the requests it is given.
func reopenShell(t *testing.T, size string, opts ...string) (*Shell, *bytes.Buffer, *bytes.Buffer, *[]OpenRequest) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "r.qcow2")
	testimg.File(t, path, size, opts...)
	var reqs []OpenRequest
	open := func(r OpenRequest) (Device, error) {
		reqs = append(reqs, r)
		mode := image.CacheWriteThrough
		if r.Cache != "" {
			m, err := image.ParseCacheMode(r.Cache)
			if err != nil {
				return nil, err
			}
			mode = m
		}
		d, err := zone.Open(r.Path, image.Options{ReadOnly: r.ReadOnly, Cache: mode})
		if err != nil {
			return nil, err
		}
		return d, nil
	}
	cur := OpenRequest{Path: path}
	d, err := open(cur)
	if err != nil {
		t.Fatal(err)
	}
	s, out, errb := qemuShell(d.(*zone.Device))
	s.Open, s.Current = open, cur
	t.Cleanup(func() {
		if s.Dev != nil {
			s.Dev.Close()
		}
	})
	return s, out, errb, &reqs
}

// TestReopenReadOnly: reopen -r makes writes fail with qemu-io's message,
// reopen -w allows them again, and the data written before is kept (QEMU's
// iotest 187).
func TestReopenReadOnly(t *testing.T) {
	s, out, errb, _ := reopenShell(t, "1M")
	runLines(t, s, out, errb, "write -q -P 0x41 0 64k", "reopen -r")
	expectFail(t, s, errb, "write 0 64k", "qemu-io: Block node is read-only\n")
	if !s.Dev.ReadOnly() {
		t.Errorf("not read-only after reopen -r")
	}
	runLines(t, s, out, errb, "read -q -P 0x41 0 64k", "reopen -w", "write -q -P 0x42 64k 64k", "read -q -P 0x41 0 64k", "read -q -P 0x42 64k 64k")
}

// TestReopenCache: reopen -c changes the cache mode; cache.direct and
// cache.no-flush change it too, keeping writethrough or writeback.
func TestReopenCache(t *testing.T) {
	s, out, errb, reqs := reopenShell(t, "1M")
	runLines(t, s, out, errb, "reopen -c writeback", "reopen -o cache.no-flush=on", "reopen -c writethrough", "reopen -o cache.direct=off")
	var got []string
	for _, r := range (*reqs)[1:] {
		got = append(got, r.Cache)
	}
	// The last reopen changes nothing: the image is not reopened.
	if strings.Join(got, " ") != "writeback unsafe writethrough" {
		t.Errorf("cache modes %q", got)
	}
}

// TestReopenErrors: what qemu-io's reopen refuses, with its messages (QEMU's
// iotest 133); the image stays open, as it was.
func TestReopenErrors(t *testing.T) {
	s, _, errb, reqs := reopenShell(t, "1M")
	for _, c := range []struct{ line, stderr string }{
		{"reopen -o node-name=foo", "qemu-io: Cannot change the option 'node-name'\n"},
		{"reopen -o file.node-name=foo", "qemu-io: Cannot change the option 'node-name'\n"},
		{"reopen -o driver=raw", "qemu-io: Cannot change the option 'driver'\n"},
		{"reopen -o file.driver=qcow2", "qemu-io: Cannot change the option 'driver'\n"},
		{"reopen -o backing.driver=file", "qemu-io: Cannot change the option 'driver'\n"},
		{"reopen -r -o read-only=on", "qemu-io: Cannot set both -r/-w and 'read-only'\n"},
		{"reopen -w -o read-only=on", "qemu-io: Cannot set both -r/-w and 'read-only'\n"},
		{"reopen -c none -o cache.direct=on", "qemu-io: Cannot set both -c and the cache options\n"},
		{"reopen -o read-only=foo", "qemu-io: Parameter 'read-only' expects 'on' or 'off'\n"},
		{"reopen -o cache.no-flush=bar", "qemu-io: Parameter 'cache.no-flush' expects 'on' or 'off'\n"},
		{"reopen -o auto-read-only=qux", "qemu-io: Parameter 'auto-read-only' expects 'on' or 'off'\n"},
		{"reopen -o foo=bar", "qemu-io: Cannot change the option 'foo'\n"},
		{"reopen -o file.filename=/x", "qemu-io: Cannot change the option 'filename'\n"},
		{"reopen -o lazy-refcounts=on", "qemu-io: option 'lazy-refcounts=on' is not supported by zqimg\n"},
		{"reopen -r -w", "qemu-io: Only one -r/-w option may be given\n"},
		{"reopen -c bogus", "qemu-io: Invalid cache option: bogus\n"},
	} {
		expectFail(t, s, errb, c.line, c.stderr)
	}
	if len(*reqs) != 1 || s.Dev == nil {
		t.Errorf("refused reopens opened the image again: %d opens", len(*reqs))
	}
	var out bytes.Buffer
	s.Out.Reset(&out)
	ok := s.Run("reopen x")
	s.Flush()
	if ok || !strings.HasPrefix(out.String(), "reopen [(-r|-w)] [-c cache] [-o options] -- ") {
		t.Errorf("reopen x: %q", out.String())
	}
	// Unchanged driver and node names are accepted.
	errb.Reset()
	for _, l := range []string{"reopen -o driver=qcow2", "reopen -o file.driver=file", "reopen -o auto-read-only=on"} {
		if !s.Run(l) {
			t.Errorf("%s: %q", l, errb.String())
		}
	}
}

// TestOpenNodeNames: node names given to open can be repeated by reopen,
// not changed.
func TestOpenNodeNames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n.qcow2")
	testimg.File(t, path, "1M")
	s, _, errb := qemuShell(nil)
	s.Open = func(r OpenRequest) (Device, error) {
		return zone.Open(r.Path, image.Options{ReadOnly: r.ReadOnly})
	}
	if !s.Run("open -o node-name=foo,file.node-name=bar " + path) {
		t.Fatalf("open: %q", errb.String())
	}
	defer func() { s.Dev.Close() }()
	if !s.Run("reopen -o node-name=foo") || !s.Run("reopen -o file.node-name=bar") || !s.Run("reopen") {
		t.Errorf("unchanged node names refused: %q", errb.String())
	}
	expectFail(t, s, errb, "reopen -o node-name=baz", "qemu-io: Cannot change the option 'node-name'\n")
	expectFail(t, s, errb, "reopen -o backing.node-name=foo", "qemu-io: Cannot change the option 'node-name'\n")
}

// TestOpenProtocolDrivers: open -o driver=file|host_device|host_cdrom
// checks the file as QEMU's drivers do, with their messages (QEMU's iotest
// 226); a file that passes is opened as a raw file.
func TestOpenProtocolDrivers(t *testing.T) {
	dir := t.TempDir()
	s, _, errb := qemuShell(nil)
	var opened []OpenRequest
	s.Open = func(r OpenRequest) (Device, error) {
		opened = append(opened, r)
		return nil, os.ErrInvalid
	}
	for _, c := range []struct{ line, stderr string }{
		{"open -r -o driver=file,filename=" + dir, "qemu-io: can't open: 'file' driver requires '" + dir + "' to be a regular file\n"},
		{"open -o driver=file,filename=" + dir, "qemu-io: can't open: Could not open '" + dir + "': Is a directory\n"},
		{"open -r -o driver=file,filename=/dev/null,locking=off", "qemu-io: can't open: 'file' driver requires '/dev/null' to be a regular file\n"},
		{"open -o driver=file,filename=/dev/null,locking=off", "qemu-io: can't open: 'file' driver requires '/dev/null' to be a regular file\n"},
		{"open -r -o driver=host_device,filename=" + dir, "qemu-io: can't open: 'host_device' driver requires '" + dir + "' to be either a character or block device\n"},
		{"open -o driver=host_cdrom,filename=" + dir, "qemu-io: can't open: Could not open '" + dir + "': Is a directory\n"},
		{"open -o driver=qcow2", "qemu-io: can't open: The 'file' block driver requires a file name\n"},
		{"open -o driver=vvfat x", "qemu-io: can't open device x: option 'driver=vvfat' is not supported by zqimg\n"},
		{"open -o driver=qcow2,file.locking=off x", "qemu-io: can't open device x: option 'file.locking=off' is not supported by zqimg\n"},
		{"open -o read-only=maybe x", "qemu-io: can't open device x: Parameter 'read-only' expects 'on' or 'off'\n"},
	} {
		expectFail(t, s, errb, c.line, c.stderr)
	}
	if len(opened) != 0 {
		t.Errorf("refused opens reached Open: %+v", opened)
	}
	for _, l := range []string{"open -r -o driver=host_cdrom,filename=/dev/null", "open -o driver=host_device,filename=/dev/null,locking=off", "open -o driver=raw,file.locking=off /dev/null"} {
		opened = nil
		s.Run(l)
		if len(opened) != 1 || opened[0].Format != "raw" || opened[0].Path != "/dev/null" || opened[0].NoLock != strings.Contains(l, "locking=off") {
			t.Errorf("%s: requests %+v, want /dev/null as raw", l, opened)
		}
	}
}

// TestOpenByOptions: the file may be named by the options alone, and
// read-only and the cache options reach the request.
func TestOpenByOptions(t *testing.T) {
	var got OpenRequest
	s, _, errb := qemuShell(nil)
	s.Open = func(r OpenRequest) (Device, error) { got = r; return nil, os.ErrPermission }
	for _, c := range []struct {
		line string
		want OpenRequest
	}{
		{"open -o driver=qcow2,file.filename=/a,read-only=on", OpenRequest{Path: "/a", ReadOnly: true}},
		{"open -o driver=qcow2,file.driver=qcow2,file.file.filename=/b", OpenRequest{Path: "/b", Nested: true}},
		{"open -t writeback -o cache.direct=on /c", OpenRequest{Path: "/c", Cache: "none"}},
		{"open -s -o cache.no-flush=on,filename=/d", OpenRequest{Path: "/d", Snapshot: true, Cache: "unsafe"}},
		{"open -o filename=/e,,f", OpenRequest{Path: "/e,f"}},
	} {
		got = OpenRequest{}
		errb.Reset()
		s.Run(c.line)
		if got.Path != c.want.Path || got.ReadOnly != c.want.ReadOnly || got.Nested != c.want.Nested || got.Cache != c.want.Cache || got.Snapshot != c.want.Snapshot {
			t.Errorf("%s: request %+v, want %+v (stderr %q)", c.line, got, c.want, errb.String())
		}
	}
}

// TestCacheSizeOptions: qcow2's cache options are checked as qemu checks
// them, with its messages (QEMU's iotest 103), and give the L2 cache
// budget.
func TestCacheSizeOptions(t *testing.T) {
	for _, c := range []struct {
		opts  string
		bytes int
		err   string
	}{
		{"cache-size=1.25M,l2-cache-size=1M,refcount-cache-size=0.25M", 0, "cache-size, l2-cache-size and refcount-cache-size may not be set at the same time"},
		{"cache-size=1M,l2-cache-size=2M", 0, "l2-cache-size may not exceed cache-size"},
		{"cache-size=1M,refcount-cache-size=2M", 0, "refcount-cache-size may not exceed cache-size"},
		{"cache-size=0,l2-cache-size=0,refcount-cache-size=0", 0, "cache-size, l2-cache-size and refcount-cache-size may not be set at the same time"},
		{"cache-size=0", 1, ""},
		{"l2-cache-size=0", 1, ""},
		{"refcount-cache-size=0", 0, ""},
		{"cache-size=2M", 2 << 20, ""},
		{"cache-size=2M,l2-cache-size=1M", 1 << 20, ""},
		{"cache-size=2M,refcount-cache-size=1M", 1 << 20, ""},
		{"l2-cache-size=1M,refcount-cache-size=0.25M", 1 << 20, ""},
		{"l2-cache-size=x", 0, "Parameter 'l2-cache-size' expects a non-negative number below 2^64"},
	} {
		r, err := requestFromOptions(OpenRequest{Path: "p"}, parseOptList(c.opts))
		var n int
		if err == nil {
			n, err = r.L2CacheBytes()
		}
		if got := fmt.Sprint(err); (c.err == "" && err != nil) || (c.err != "" && got != c.err) || n != c.bytes {
			t.Errorf("%s: %d, %v; want %d, %q", c.opts, n, err, c.bytes, c.err)
		}
	}
	for _, c := range []struct {
		size string
		ok   bool
	}{{"256", false}, {"4242", false}, {"128k", false}, {"512", true}, {"16k", true}, {"64k", true}} {
		r, err := requestFromOptions(OpenRequest{Path: "p"}, parseOptList("l2-cache-entry-size="+c.size))
		if err != nil {
			t.Fatal(err)
		}
		err = r.CheckCacheEntrySize(65536)
		if c.ok != (err == nil) || (err != nil && err.Error() != "L2 cache entry size must be a power of two between 512 and the cluster size (65536)") {
			t.Errorf("l2-cache-entry-size=%s: %v", c.size, err)
		}
	}
}

// TestBlkdebugPassthrough: blkdebug names and options are opened as the
// image beneath (requests pass through unchanged: the request limits are
// accepted); of the rules, only [inject-error] on l2_update under the
// qcow2 driver is taken, others are refused (QEMU's iotests 033, 177, 204,
// 268).
func TestBlkdebugPassthrough(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.conf")
	rules := filepath.Join(dir, "rules.conf")
	if err := os.WriteFile(empty, []byte("# nothing\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rules, []byte("[inject-error]\nevent = \"l2_update\"\nerrno = \"28\"\nonce = \"on\"\nimmediately = \"off\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.conf")
	if err := os.WriteFile(other, []byte("[inject-error]\nevent = \"l1_update\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state.conf")
	if err := os.WriteFile(state, []byte("[set-state]\nstate = \"1\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		line, path, err string
	}{
		{"open -o driver=blkdebug,image.driver=qcow2,align=4k,max-transfer=64k blkdebug::/x", "/x", ""},
		{"open -o driver=blkdebug,image.driver=qcow2,align=512,opt-write-zero=15M,max-write-zero=15M,opt-discard=15M,max-discard=15M blkdebug::/x", "/x", ""},
		{"open -o driver=qcow2,file.align=4k blkdebug::/y", "/y", ""},
		{"open blkdebug:" + empty + ":/z", "/z", ""},
		{"open -o driver=qcow2,file.driver=blkdebug,file.image.filename=/w", "/w", ""},
		{"open blkdebug:" + rules + ":/z", "/z", ""},
		{"open blkdebug:" + other + ":/z", "", "blkdebug event 'l1_update' in " + other + ": not supported by zqimg (only l2_update and read_aio)"},
		{"open blkdebug:" + state + ":/z", "", "blkdebug rule [set-state] in " + state + ": not supported by zqimg (only [inject-error])"},
		{"open -o driver=blkdebug,image.driver=qcow2,config=" + rules + " blkdebug::/x", "", "blkdebug rules above the qcow2 driver are not supported by zqimg (put blkdebug under it: blkdebug:CONFIG:FILE)"},
		{"open blkdebug:/z", "", "blkdebug requires both config file and image path"},
		{"open -o driver=qcow2,file.image.filename=/w", "", "option 'file.image.filename=/w' is not supported by zqimg"},
		{"open -o driver=qcow2,file.align=4k /y", "", "option 'file.align=4k' is not supported by zqimg"},
		{"open -o driver=blkdebug,image.driver=qcow2,align=x blkdebug::/x", "", "Parameter 'align' expects a non-negative number below 2^64"},
	} {
		var got OpenRequest
		s, _, errb := qemuShell(nil)
		s.Open = func(r OpenRequest) (Device, error) { got = r; return nil, os.ErrPermission }
		s.Run(c.line)
		if c.err == "" && (got.Path != c.path || got.Format != "") {
			t.Errorf("%s: request %+v (stderr %q), want %s as qcow2", c.line, got, errb.String(), c.path)
		}
		if c.err != "" && !strings.HasSuffix(errb.String(), ": "+c.err+"\n") {
			t.Errorf("%s: stderr %q, want %q", c.line, errb.String(), c.err)
		}
	}
}

// TestInjectRules: a blkdebug [inject-error] rule on l2_update becomes an
// event hook that fails with its errno, every time or once.
func TestInjectRules(t *testing.T) {
	rules, err := parseBlkdebugConfig("# c\n[inject-error]\nevent = \"l2_update\"\nerrno = \"28\"\nonce = \"on\"\n", "c")
	if err != nil || len(rules) != 1 || rules[0] != (InjectRule{Event: "l2_update", Errno: syscall.ENOSPC, Once: true}) {
		t.Fatalf("rules %+v, %v", rules, err)
	}
	r := OpenRequest{Inject: append(rules, InjectRule{Event: "l2_update", Errno: syscall.EIO})}
	ev := r.EventFunc()
	for i, want := range []syscall.Errno{syscall.ENOSPC, syscall.EIO, syscall.EIO} {
		if err := ev("l2_update"); !errors.Is(err, want) {
			t.Errorf("event %d: %v, want %v", i, err, want)
		}
	}
	if err := ev("other"); err != nil {
		t.Errorf("another event: %v", err)
	}
	if (&OpenRequest{}).EventFunc() != nil {
		t.Errorf("a hook without rules")
	}
	if _, err := parseBlkdebugConfig("[inject-error]\nerrno = \"5\"\n", "c"); err == nil {
		t.Errorf("a rule without an event was accepted")
	}
}
