package interop

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenFailuresWordedAsQemu: zqimg run as qemu-img or qemu-io (links of
// those names) words the failure to open an image as stock qemu-img and
// qemu-io 7.2 do, byte for byte: header fields QEMU refuses (iotests 054
// and 080), unknown incompatible features named from the image's feature
// name table (036), a missing backing file (069) and an unknown backing
// format (114). Each case runs on its own copy of the same image in the
// same relative place, so that the messages name the same file.
func TestOpenFailuresWordedAsQemu(t *testing.T) {
	requireQemu(t)
	bin := t.TempDir()
	for _, name := range []string{"qemu-img", "qemu-io"} {
		if err := os.Symlink(zqimgBin, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	stock := "/usr/bin"
	be := binary.BigEndian
	u32 := func(off int, v uint32) func(*testing.T, string, []byte) {
		return func(_ *testing.T, _ string, b []byte) { be.PutUint32(b[off:], v) }
	}
	u64 := func(off int, v uint64) func(*testing.T, string, []byte) {
		return func(_ *testing.T, _ string, b []byte) { be.PutUint64(b[off:], v) }
	}
	all := func(ps ...func(*testing.T, string, []byte)) func(*testing.T, string, []byte) {
		return func(t *testing.T, dir string, b []byte) {
			for _, p := range ps {
				p(t, dir, b)
			}
		}
	}
	// table replaces the image's header extensions by a feature name
	// table holding data.
	table := func(data string) func(*testing.T, string, []byte) {
		return func(_ *testing.T, _ string, b []byte) {
			clear(b[0x70:0x1000])
			be.PutUint32(b[0x70:], extFeatureTable)
			be.PutUint32(b[0x74:], uint32(len(data)))
			copy(b[0x78:], data)
		}
	}
	entry := func(typ, bit byte, name string) string {
		e := make([]byte, 48)
		e[0], e[1] = typ, bit
		copy(e[2:], name)
		return string(e)
	}
	read := []string{"-c", "read 0 512", "t.qcow2"}
	tests := []struct {
		name    string
		size    string // of the image made by stock qemu-img create
		backing bool   // the image has a backing file t.qcow2.base (qcow2)
		patch   func(t *testing.T, dir string, b []byte)
		prog    string
		args    []string
	}{
		{"header length 2^32-1", "64M", false, u32(100, 0xffffffff), "qemu-io", read},
		{"header length 2^31-1", "64M", false, u32(100, 0x7fffffff), "qemu-io", read},
		{"backing file offset 2^64-1", "64M", false, u64(8, ^uint64(0)), "qemu-io", read},
		{"extension header crossing the backing file name", "64M", false,
			all(u64(8, 0x74), u32(0x70, 0x12345678), u32(0x74, 0x7fffffff)), "qemu-io", read},
		{"extension crossing the cluster", "64M", false, all(u32(0x70, 0x12345678), u32(0x74, 0x7fffffff)), "qemu-io", read},
		{"refcount table of 2^32-1 clusters", "64M", false, u32(56, 0xffffffff), "qemu-io", read},
		{"refcount table of 0x20001 clusters", "64M", false, u32(56, 0x20001), "qemu-io", read},
		{"refcount table unaligned", "64M", false, u64(48, 0x1234567890abcdef), "qemu-io", read},
		{"refcount table huge offset", "64M", false, all(u64(48, 0xffffffffffff0000), u32(56, 0x7f)), "qemu-io", read},
		{"2^32-1 snapshots", "64M", false, u32(60, 0xffffffff), "qemu-io", read},
		{"snapshot table unaligned", "64M", false, u64(64, 0x1234567890abcdef), "qemu-io", read},
		{"L1 table of 2^32-1 entries", "64M", false, u32(36, 0xffffffff), "qemu-io", read},
		{"L1 table huge offset", "64M", false, all(u64(40, 0x7fffffffffff0000), u32(36, 0xffff)), "qemu-io", read},
		{"L1 table unaligned", "64M", false, all(u64(40, 0x1234567890abcdef), u32(36, 1)), "qemu-io", read},
		{"L1 table too small", "64M", false, u32(36, 0), "qemu-img", []string{"info", "t.qcow2"}},
		{"backing file name too long", "64M", false, all(u64(8, 0x1000), u32(16, 0xffffffff)), "qemu-io", read},
		{"corrupt bit, opened read/write", "64M", false, u64(72, 2), "qemu-io", read},
		{"image too big", "4G", false, u64(24, 1<<60), "qemu-img", []string{"check", "t.qcow2"}},
		{"unknown feature without a table", "64M", false, all(table(""), u64(72, 1<<63)), "qemu-img", []string{"info", "t.qcow2"}},
		{"unknown feature, short table entry", "64M", false, all(table("\x00\x3fTest feature"), u64(72, 7<<61)), "qemu-img", []string{"info", "t.qcow2"}},
		{"unknown features, table of mixed types", "64M", false,
			all(table(entry(1, 61, "test1")+entry(0, 62, "test2")+entry(2, 63, "test3")+entry(0, 60, "test4")), u64(72, 7<<61)),
			"qemu-img", []string{"info", "t.qcow2"}},
		{"missing backing file", "64M", true, func(t *testing.T, dir string, _ []byte) {
			if err := os.Remove(filepath.Join(dir, "t.qcow2.base")); err != nil {
				t.Fatal(err)
			}
		}, "qemu-io", []string{"-c", "quit", "t.qcow2"}},
		{"unknown backing format", "64M", true, func(t *testing.T, _ string, b []byte) {
			h := parseQcowHeader(t, b)
			off := int(h.headerLen)
			for be.Uint32(b[off:]) != extBackingFormat {
				off += 8 + (int(be.Uint32(b[off+4:]))+7)/8*8
			}
			if string(b[off+8:off+13]) != "qcow2" {
				t.Fatalf("backing format %q", b[off+8:off+13])
			}
			be.PutUint32(b[off+4:], 3)
			copy(b[off+8:], "foo\x00\x00")
		}, "qemu-io", []string{"-c", "read 0 4k", "t.qcow2"}},
	}
	// The unknown backing format overridden (qemu-io's open -o
	// backing.driver=qcow2): the image opens and reads.
	override := tests[len(tests)-1]
	override.name, override.args = "backing format overridden", []string{"-c", "open -o backing.driver=qcow2 t.qcow2", "-c", "read -q -P 0 0 4k"}
	tests = append(tests, override)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out [2]result
			for i, prog := range []string{bin, stock} {
				dir := t.TempDir()
				if tc.backing {
					mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "t.qcow2.base", tc.size)
					mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "t.qcow2.base", "-F", "qcow2", "t.qcow2", tc.size)
				} else {
					mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "t.qcow2", tc.size)
				}
				p := filepath.Join(dir, "t.qcow2")
				b := readFile(t, p)
				tc.patch(t, dir, b)
				writeFile(t, p, b)
				out[i] = runIn(t, prog, dir, tc.prog, tc.args, "")
				if after := readFile(t, p); i == 0 && string(after) != string(b) {
					t.Errorf("zqimg changed the image it refused")
				}
			}
			if out[0].stderr != out[1].stderr || out[0].stdout != out[1].stdout || out[0].code != out[1].code {
				t.Errorf("%s %s:\nzqimg:\n%s\nstock:\n%s", tc.prog, strings.Join(tc.args, " "), out[0], out[1])
			}
			if refused := out[1].code != 0; refused != (tc.name != override.name) {
				t.Errorf("stock %s: exit status %d", tc.prog, out[1].code)
			}
		})
	}
}

// TestUnalignedRefblockWriteAsQemu: iotest 305's image (1 KiB clusters,
// 64-bit refcounts, refcount block 1 at the unaligned offset 0x20600, a
// free cluster described by each refcount block). zqimg run as qemu-io
// opens it as stock qemu-io does, and the write that needs a refcount of
// block 1 prints what stock prints ("qcow2: Marking image as corrupt:
// Refblock offset 0x20600 unaligned (reftable index: 0x1); ...", then
// "write failed: Input/output error"); afterwards stock qemu-img check
// reports the two images alike, their corrupt bit set.
func TestUnalignedRefblockWriteAsQemu(t *testing.T) {
	requireQemu(t)
	bin := t.TempDir()
	if err := os.Symlink(zqimgBin, filepath.Join(bin, "qemu-io")); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	p := filepath.Join(src, "t.qcow2")
	mustRun(t, "", "qemu-img", "create", "-q", "-f", "qcow2", "-o", "refcount_bits=64,cluster_size=1k", p, "1M")
	mustRun(t, "", "qemu-io", "-c", "write 0 124k", p)
	mustRun(t, "", "qemu-io", "-c", "discard 121k 1k", p)
	mustRun(t, "", "qemu-io", "-c", "discard 123k 1k", p)
	b := readFile(t, p)
	rt := binary.BigEndian.Uint64(b[48:])
	b[rt+14] = 0x06
	var out, checks [2]result
	for i, prog := range []string{bin, "/usr/bin"} {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "t.qcow2"), b)
		out[i] = runIn(t, prog, dir, "qemu-io", []string{"-c", "write 121k 3k", "t.qcow2"}, "")
		checks[i] = runQemu(t, dir, "qemu-img", "check", "t.qcow2")
		h := readHeader(t, filepath.Join(dir, "t.qcow2"))
		if h.incompat != 2 {
			t.Errorf("%s: incompatible features 0x%x, want the corrupt bit", prog, h.incompat)
		}
	}
	if out[0].stderr != out[1].stderr || out[0].code != out[1].code || !strings.Contains(out[1].stderr, "Refblock offset 0x20600 unaligned") {
		t.Errorf("zqimg:\n%s\nstock:\n%s", out[0], out[1])
	}
	if out[0].stdout != "write failed: Input/output error\n" || out[0].stdout != out[1].stdout {
		t.Errorf("stdout: zqimg %q, stock %q", out[0].stdout, out[1].stdout)
	}
	checks[0].cmdline, checks[1].cmdline = "", ""
	if checks[0] != checks[1] {
		t.Errorf("check after the write:\nzqimg's image:\n%s\nstock's image:\n%s", checks[0], checks[1])
	}
}

// TestCreateBackingOpenWordedAsQemu: zqimg run as qemu-img create words a
// backing file it cannot open as stock qemu-img does: the open error
// itself, QEMU's wording, after the new image's name (a missing file, a
// header QEMU refuses, an unknown format, a file of another format).
func TestCreateBackingOpenWordedAsQemu(t *testing.T) {
	requireQemu(t)
	bin := t.TempDir()
	if err := os.Symlink(zqimgBin, filepath.Join(bin, "qemu-img")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		patch  func(b []byte)
		format string
	}{
		{"missing", nil, "qcow2"},
		{"header length 2^32-1", func(b []byte) { binary.BigEndian.PutUint32(b[100:], 0xffffffff) }, "qcow2"},
		{"L1 table too small", func(b []byte) { binary.BigEndian.PutUint32(b[36:], 0) }, "qcow2"},
		{"unknown format", func([]byte) {}, "foo"},
		{"not qcow2", func(b []byte) { copy(b, "XXXX") }, "qcow2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out [2]result
			for i, prog := range []string{bin, "/usr/bin"} {
				dir := t.TempDir()
				if tc.patch != nil {
					p := filepath.Join(dir, "b.qcow2")
					mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "b.qcow2", "1M")
					b := readFile(t, p)
					tc.patch(b)
					writeFile(t, p, b)
				}
				out[i] = runIn(t, prog, dir, "qemu-img", []string{"create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", tc.format, "t.qcow2", "1M"}, "")
			}
			if out[0].stderr != out[1].stderr || out[0].code != out[1].code || out[1].code == 0 {
				t.Errorf("zqimg:\n%s\nstock:\n%s", out[0], out[1])
			}
		})
	}
}
