package ioshell

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// qemuShell returns a shell on d that speaks as qemu-io.
func qemuShell(d *zone.Device) (*Shell, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	s := New(d, &out, &errb)
	s.Prog, s.Terse = "qemu-io", true
	return s, &out, &errb
}

// runLines runs each line, which must succeed, and returns the output.
func runLines(t *testing.T, s *Shell, out, errb *bytes.Buffer, lines ...string) string {
	t.Helper()
	out.Reset()
	for _, l := range lines {
		if !s.Run(l) {
			s.Flush()
			t.Fatalf("%s failed: stdout %q stderr %q", l, out.String(), errb.String())
		}
	}
	s.Flush()
	return out.String()
}

// expectFail runs line, which must fail with exactly this on stderr.
func expectFail(t *testing.T, s *Shell, errb *bytes.Buffer, line, stderr string) {
	t.Helper()
	errb.Reset()
	if s.Run(line) {
		t.Errorf("%s succeeded", line)
	}
	s.Flush()
	if errb.String() != stderr {
		t.Errorf("%s: stderr %q, want %q", line, errb.String(), stderr)
	}
}

// TestTruncate: truncate grows and shrinks the image (no --shrink guard),
// the new area reads as zeroes, and sizes qcow2 or the zone rules refuse
// are reported with qemu-io's wording.
func TestTruncate(t *testing.T) {
	d := newDevice(t, "1M", image.Options{})
	s, out, errb := qemuShell(d)
	got := runLines(t, s, out, errb, "write -q -P 0x11 0 1M", "truncate 3M", "length", "read -q -P 0x11 0 1M", "read -q -P 0 1M 2M",
		"t 512k", "length", "truncate -m off 1M", "length", "read -q -P 0x11 0 512k", "read -q -P 0 512k 512k")
	if got != "3 MiB\n512 KiB\n1 MiB\n" {
		t.Errorf("lengths: %q", got)
	}
	expectFail(t, s, errb, "truncate 1000", "qemu-io: The new size must be a multiple of 512\n")
	expectFail(t, s, errb, "truncate -m foo 2M", "qemu-io: Invalid preallocation mode 'foo'\n")
	expectFail(t, s, errb, "truncate -m full 2M", "qemu-io: Unsupported preallocation mode 'full' (zqimg only truncates with preallocation=off)\n")
	expectFail(t, s, errb, "truncate", "bad argument count 0 to truncate, expected between 1 and 3 arguments\n")
	if d.Size() != 1<<20 {
		t.Errorf("size %d after refused truncates", d.Size())
	}
}

// TestTruncateHidesBacking: growing an overlay whose backing file is
// larger makes the new area read as zeroes, not as the backing file.
func TestTruncateHidesBacking(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	testimg.File(t, base, "4M")
	b, err := zone.Open(base, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt(bytes.Repeat([]byte{0x22}, 4<<20), 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	top := filepath.Join(dir, "top.qcow2")
	testimg.File(t, top, "1M", "backing_file="+base, "backing_fmt=qcow2")
	d, err := zone.Open(top, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, out, errb := qemuShell(d)
	runLines(t, s, out, errb, "read -q -P 0x22 0 1M", "truncate 4M", "read -q -P 0x22 0 1M", "read -q -P 0 1M 3M")
}

// TestTruncateZoned: a zoned image grows by whole zones; other sizes are
// refused with the zone rule, and the size does not change.
func TestTruncateZoned(t *testing.T) {
	d := newDevice(t, "4M", image.Options{}, "zone.mode=host-managed", "zone.size=1M")
	s, out, errb := qemuShell(d)
	if got := runLines(t, s, out, errb, "truncate 5M", "length", "zrp 4M 1"); !strings.HasPrefix(got, "5 MiB\nstart: 0x2000, len 0x800, cap 0x800, wptr 0x2000, zcond:1,") {
		t.Errorf("after truncate 5M: %q", got)
	}
	errb.Reset()
	if s.Run("truncate 5632k") || !strings.Contains(errb.String(), "is not a whole number of zones") || !strings.HasPrefix(errb.String(), "qemu-io: ") {
		t.Errorf("truncate 5632k: stderr %q", errb.String())
	}
	if d.Size() != 5<<20 {
		t.Errorf("size %d", d.Size())
	}
}

// TestMap: map prints qemu-io's runs of allocated and unallocated bytes;
// a write of zeroes makes clusters allocated (zero clusters) whether or not
// it may unmap. This is the start of QEMU's iotest 179.
func TestMap(t *testing.T) {
	d := newDevice(t, "64M", image.Options{})
	s, out, errb := qemuShell(d)
	got := runLines(t, s, out, errb, "write -q -z -u 2M 2M", "write -q -z 6M 2M", "map")
	want := `2 MiB (0x200000) bytes not allocated at offset 0 bytes (0x0)
2 MiB (0x200000) bytes     allocated at offset 2 MiB (0x200000)
2 MiB (0x200000) bytes not allocated at offset 4 MiB (0x400000)
2 MiB (0x200000) bytes     allocated at offset 6 MiB (0x600000)
56 MiB (0x3800000) bytes not allocated at offset 8 MiB (0x800000)
`
	if got != want {
		t.Errorf("map:\n%s\nwant:\n%s", got, want)
	}
	expectFail(t, s, errb, "map 0", "bad argument count 1 to map, expected 0 arguments\n")
}

// TestWriteZeroesUnmap: write -z -u over data frees its clusters (zero
// clusters without a host offset, the file's clusters given back), while
// write -z keeps them (zero clusters with their host offset).
func TestWriteZeroesUnmap(t *testing.T) {
	d := newDevice(t, "4M", image.Options{})
	s, out, errb := qemuShell(d)
	runLines(t, s, out, errb, "write -q -P 0x33 0 4M", "write -q -z 0 1M", "write -q -z -u 1M 1M", "read -q -P 0 0 2M", "read -q -P 0x33 2M 2M")
	img := d.Image()
	for _, c := range []struct {
		off       int64
		hostValid bool
	}{{0, true}, {1 << 20, false}} {
		x, err := img.BlockStatus(c.off, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if x.Kind != image.Zero || x.Len != 1<<20 || x.HostValid != c.hostValid {
			t.Errorf("at %d: %+v, want 1 MiB of zero clusters, host offset %v", c.off, x, c.hostValid)
		}
	}
	if got := runLines(t, s, out, errb, "map"); got != "4 MiB (0x400000) bytes     allocated at offset 0 bytes (0x0)\n" {
		t.Errorf("map: %q", got)
	}
}

// TestMapZoned: in a sequential zone only the bytes below the write
// pointer are allocated.
func TestMapZoned(t *testing.T) {
	d := newDevice(t, "4M", image.Options{}, "zone.mode=host-managed", "zone.size=1M")
	s, out, errb := qemuShell(d)
	got := runLines(t, s, out, errb, "zap 1M 64k", "map")
	want := `1 MiB (0x100000) bytes not allocated at offset 0 bytes (0x0)
64 KiB (0x10000) bytes     allocated at offset 1 MiB (0x100000)
2.938 MiB (0x2f0000) bytes not allocated at offset 1.062 MiB (0x110000)
`
	if got != want {
		t.Errorf("map:\n%s\nwant:\n%s", got, want)
	}
}

// TestAlloc: alloc counts the bytes of a range this image stores (zero
// clusters included, not the backing file's), 512 by default, and leaves
// bytes beyond the end out of the count, as qemu-io's alloc.
func TestAlloc(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	testimg.File(t, base, "4M")
	b, err := zone.Open(base, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt(bytes.Repeat([]byte{1}, 4<<20), 0); err != nil {
		t.Fatal(err)
	}
	b.Close()
	top := filepath.Join(dir, "top.qcow2")
	testimg.File(t, top, "4M", "backing_file="+base, "backing_fmt=qcow2")
	d, err := zone.Open(top, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, out, errb := qemuShell(d)
	got := runLines(t, s, out, errb, "write -q 64k 64k", "write -q -z 192k 64k", "alloc 0 256k", "a 64k", "alloc 1M 64k", "alloc 4032k 1M", "alloc 8M")
	want := `131072/262144 bytes allocated at offset 0 bytes
512/512 bytes allocated at offset 64 KiB
0/65536 bytes allocated at offset 1 MiB
0/65536 bytes allocated at offset 3.938 MiB
0/0 bytes allocated at offset 8 MiB
`
	if got != want {
		t.Errorf("alloc:\n%s\nwant:\n%s", got, want)
	}
	expectFail(t, s, errb, "alloc", "bad argument count 0 to alloc, expected between 1 and 2 arguments\n")
}

// TestInfo: info prints qemu-io's lines for a qcow2 image (version 3 and
// 2, extended L2 entries halving the VM state alignment).
func TestInfo(t *testing.T) {
	for _, c := range []struct {
		opts []string
		want string
	}{
		{nil, `format name: qcow2
cluster size: 64 KiB
vm state offset: 512 MiB
Format specific information:
    compat: 1.1
    compression type: zlib
    lazy refcounts: false
    refcount bits: 16
    corrupt: false
    extended l2: false
`},
		{[]string{"compat=0.10", "cluster_size=4096"}, `format name: qcow2
cluster size: 4 KiB
vm state offset: 100 MiB
Format specific information:
    compat: 0.10
    compression type: zlib
    refcount bits: 16
`},
		{[]string{"extended_l2=on,compression_type=zstd,lazy_refcounts=on,refcount_bits=4"}, `format name: qcow2
cluster size: 64 KiB
vm state offset: 256 MiB
Format specific information:
    compat: 1.1
    compression type: zstd
    lazy refcounts: true
    refcount bits: 4
    corrupt: false
    extended l2: true
`},
	} {
		d := newDevice(t, "100M", image.Options{}, c.opts...)
		s, out, errb := qemuShell(d)
		if got := runLines(t, s, out, errb, "info"); got != c.want {
			t.Errorf("%v:\n%s\nwant:\n%s", c.opts, got, c.want)
		}
	}
}

// TestNullDevice: a null-co device (json:{'driver': 'null-co', ...}) has
// the size asked for, reads zeroes with read-zeroes=on, drops writes;
// info prints its format name twice and fails, as qemu-io's (QEMU's
// iotest 133).
func TestNullDevice(t *testing.T) {
	r, err := RequestFromJSON(OpenRequest{}, `json:{'driver': 'null-co', 'size': 65536, 'read-zeroes': true}`)
	if err != nil || r.Format != "null-co" || r.NullSize != 65536 || !r.NullReadZeroes {
		t.Fatalf("request %+v, %v", r, err)
	}
	var out, errb bytes.Buffer
	s := New(NewNull(r.NullSize, r.NullReadZeroes, false), &out, &errb)
	s.Prog, s.Terse = "qemu-io", true
	got := runLines(t, s, &out, &errb, "write -q -P 0x11 0 4k", "read -q -P 0 0 4k", "length")
	if got != "64 KiB\n" {
		t.Errorf("length: %q", got)
	}
	out.Reset()
	if s.Run("info") {
		t.Errorf("info succeeded")
	}
	s.Flush()
	if out.String() != "format name: null-co\nformat name: null-co\n" {
		t.Errorf("info: %q", out.String())
	}
}

// TestParseJSONFilename: json: names with single or double quotes,
// nested objects, numbers and booleans.
func TestParseJSONFilename(t *testing.T) {
	opts, err := parseJSONFilename(`json:{"driver": "qcow2", 'file': {'driver': 'file', 'filename': 'a\'b "c"'}, 'read-only': true, "x": 5}`)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(opts)
	if want := `[{driver qcow2} {file.driver file} {file.filename a'b "c"} {read-only on} {x 5}]`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if _, err := parseJSONFilename(`json:{'driver': `); err == nil {
		t.Errorf("a broken json: name was accepted")
	}
	r, err := RequestFromJSON(OpenRequest{}, `json:{'driver': 'qcow2', 'file': {'driver': 'file', 'filename': '/x.qcow2'}}`)
	if err != nil || r.Path != "/x.qcow2" || r.Format != "" {
		t.Errorf("qcow2 over file: %+v, %v", r, err)
	}
}

// TestAdvisoryDiscard: as qemu-io, discard takes whole clusters only
// (parts of clusters keep their data, the partial last cluster of the
// image goes when the range reaches the end), and leaves a version 2
// image with a backing file as it is (QEMU's iotest 290); as zqimg, the
// range always reads as zeroes afterwards.
func TestAdvisoryDiscard(t *testing.T) {
	d := newDevice(t, "1000k", image.Options{})
	s, out, errb := qemuShell(d)
	s.AdvisoryDiscard = true
	runLines(t, s, out, errb, "write -q -P 0xaa 0 1000k", "discard -q 1000 200k", "discard -q 900k 100k",
		"read -q -P 0xaa 0 64k", "read -q -P 0xaa 192k 8k", "read -q -P 0 64k 128k", "read -q -P 0 960k 40k", "read -q -P 0xaa 896k 64k")
	s.AdvisoryDiscard = false
	runLines(t, s, out, errb, "discard -q 1000 200k", "read -q -P 0 1000 200k", "read -q -P 0xaa 0 1000")

	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	testimg.File(t, base, "128k")
	top := filepath.Join(dir, "top.qcow2")
	testimg.File(t, top, "128k", "compat=0.10", "backing_file="+base, "backing_fmt=qcow2")
	d2, err := zone.Open(top, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	s2, out2, errb2 := qemuShell(d2)
	s2.AdvisoryDiscard = true
	got := runLines(t, s2, out2, errb2, "write -q -P 0x01 0 128k", "discard 0 128k", "read -q -P 0x01 0 128k")
	if !strings.HasPrefix(got, "discard 131072/131072 bytes at offset 0\n") {
		t.Errorf("discard output %q", got)
	}
}
