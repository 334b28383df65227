package interop

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
)

// snapshotExtras returns the extra data of every snapshot table entry.
func snapshotExtras(t *testing.T, path string) [][]byte {
	t.Helper()
	b := readFile(t, path)
	h, err := image.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.NbSnapshots == 0 {
		return nil
	}
	entries, err := image.ParseSnapshotTable(b[h.SnapshotsOffset:], h.NbSnapshots, h.SnapshotsOffset, h.ClusterSize())
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, e := range entries {
		out = append(out, e.Extra)
	}
	return out
}

// cutExtra rewrites an image's snapshot table in place with the extra
// data of entry i cut to keep[i] bytes (iotest 261's v2 template).
func cutExtra(t *testing.T, path string, keep map[int]int) {
	t.Helper()
	b := readFile(t, path)
	h, err := image.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	off := h.SnapshotsOffset
	entries, err := image.ParseSnapshotTable(b[off:], h.NbSnapshots, off, h.ClusterSize())
	if err != nil {
		t.Fatal(err)
	}
	old := min(image.SnapshotTableSize(entries), uint64(len(b))-off)
	for i, k := range keep {
		entries[i].Extra = entries[i].Extra[:k]
	}
	clear(b[off : off+old])
	copy(b[off:], image.MarshalSnapshotTable(entries))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestAmendCompatMatchesQemu: an image amended to compat=0.10 or 1.1 by
// zqimg and the same image amended by qemu-img read the same (qemu-img
// compare), both check clean with qemu-img, and have the same header
// fields and extensions (the feature name table's length aside: zqimg
// writes the reference's) and the same snapshot extra data.
func TestAmendCompatMatchesQemu(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", base, "64M")
	runQemuIO(t, base, []string{"write -P 0x2a 0 256k"})
	cases := []struct {
		name, create, opts string
		backing            bool
		prep               []string // qemu-io commands
		snapshot           bool
		after              []string // qemu-io commands after the snapshot
		cut                map[int]int
	}{
		{name: "down-zero", create: "compat=1.1,lazy_refcounts=on", opts: "compat=0.10",
			prep: []string{"write -z 0 128k", "write -P 0x11 1M 192k", "write -z 1M 64k"}},
		{name: "down-backing", create: "compat=1.1", opts: "compat=0.10", backing: true,
			prep: []string{"write -z 0 64k", "write -P 0x11 128k 64k", "write -z 128k 64k"}},
		{name: "down-snapshot", create: "compat=1.1", opts: "compat=v2",
			prep: []string{"write -P 0x33 0 128k", "write -z 0 64k", "write -z 512k 128k"}, snapshot: true,
			after: []string{"write -P 0x44 64k 64k", "write -z 2M 64k"}},
		{name: "down-backing-snapshot", create: "compat=1.1", opts: "compat=0.10", backing: true,
			prep: []string{"write -z 0 128k"}, snapshot: true, after: []string{"write -P 0x42 0 64k"}},
		{name: "up", create: "compat=0.10", opts: "compat=1.1",
			prep: []string{"write -P 0x2a 42M 64k"}},
		{name: "up-lazy-size", create: "compat=0.10", opts: "compat=1.1,lazy_refcounts=on,size=128M",
			prep: []string{"write -P 0x2a 42M 64k"}},
		{name: "up-snapshots", create: "compat=0.10", opts: "compat=v3",
			prep: []string{"write -P 0x2a 0 64k"}, snapshot: true, after: []string{"write -P 0x2b 0 64k"}},
		{name: "up-incomplete", create: "compat=0.10", opts: "compat=1.1",
			prep: []string{"write -P 0x2a 0 64k"}, snapshot: true, cut: map[int]int{0: 0, 1: 8, 2: 20}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(dir, tc.name+".src.qcow2")
			args := []string{"create", "-q", "-f", "qcow2", "-o", tc.create}
			if tc.backing {
				args = append(args, "-b", base, "-F", "qcow2")
			}
			mustRun(t, dir, "qemu-img", append(args, src, "64M")...)
			runQemuIO(t, src, tc.prep)
			if tc.snapshot {
				n := 1
				if tc.cut != nil {
					n = 3
				}
				for i := 0; i < n; i++ {
					mustRun(t, dir, "qemu-img", "snapshot", "-c", fmt.Sprintf("sn%d", i), src)
				}
				if len(tc.after) > 0 {
					runQemuIO(t, src, tc.after)
				}
			}
			if tc.cut != nil {
				cutExtra(t, src, tc.cut)
			}
			q, z := filepath.Join(dir, tc.name+".q.qcow2"), filepath.Join(dir, tc.name+".z.qcow2")
			for _, p := range []string{q, z} {
				if err := os.WriteFile(p, readFile(t, src), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			mustRun(t, dir, "qemu-img", "amend", "-o", tc.opts, q)
			if r := zq(t, dir, "amend", "-o", tc.opts, z); r.code != 0 || r.stderr != "" {
				t.Fatalf("zqimg amend -o %s:\n%s", tc.opts, r)
			}
			qemuCheckClean(t, z)
			if r := runQemu(t, dir, "qemu-img", "compare", q, z); r.code != 0 {
				t.Fatalf("qemu-img compare:\n%s", r)
			}
			qh, zh := parseQcowHeader(t, readFile(t, q)), parseQcowHeader(t, readFile(t, z))
			qb, zb := qh.raw, zh.raw
			for _, f := range []struct {
				name string
				off  int
				n    int
			}{{"version", 4, 4}, {"size", 24, 8}, {"nb_snapshots", 60, 4}, {"incompatible", 72, 8}, {"compatible", 80, 8}, {"autoclear", 88, 8}, {"refcount_order", 96, 4}, {"header_length", 100, 4}} {
				if qh.version < 3 && f.off >= 72 {
					continue
				}
				if !bytes.Equal(qb[f.off:f.off+f.n], zb[f.off:f.off+f.n]) {
					t.Errorf("header %s: qemu-img %x, zqimg %x", f.name, qb[f.off:f.off+f.n], zb[f.off:f.off+f.n])
				}
			}
			if extList(qh.exts) != extList(zh.exts) && !(qh.version == 3 && len(qh.exts) == len(zh.exts)) {
				t.Errorf("extensions: qemu-img %s, zqimg %s", extList(qh.exts), extList(zh.exts))
			}
			for i, e := range qh.exts {
				if i < len(zh.exts) && (e.magic != zh.exts[i].magic || (e.magic != 0x6803f857 && !bytes.Equal(e.data, zh.exts[i].data))) {
					t.Errorf("extension %d: qemu-img 0x%08x %x, zqimg 0x%08x %x", i, e.magic, e.data, zh.exts[i].magic, zh.exts[i].data)
				}
			}
			if qe, ze := snapshotExtras(t, q), snapshotExtras(t, z); fmt.Sprintf("%x", qe) != fmt.Sprintf("%x", ze) {
				t.Errorf("snapshot extra data: qemu-img %x, zqimg %x", qe, ze)
			}
		})
	}

	// Refusals: qemu-img's words, nothing written.
	for _, tc := range []struct{ create, opts string }{
		{"compat=1.1,refcount_bits=8", "compat=0.10"},
		{"compat=1.1,extended_l2=on", "compat=0.10"},
		{"compat=0.10", "lazy_refcounts=on"},
		{"compat=0.10", "compat=0.10,lazy_refcounts=on"},
		{"compat=1.1", "compat=0.42"},
		{"compat=1.1", "data_file=foo"},
		{"compat=1.1", "data_file_raw=on"},
		{"compat=1.1", "backing_file=foo.qcow2,backing_fmt=qcow2"},
	} {
		p := filepath.Join(dir, "r.qcow2")
		mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", tc.create, p, "1M")
		before := readFile(t, p)
		z := zq(t, dir, "amend", "-o", tc.opts, "r.qcow2")
		if !bytes.Equal(readFile(t, p), before) {
			t.Errorf("%s, amend -o %s: the refused amend wrote", tc.create, tc.opts)
		}
		q := runQemu(t, dir, "qemu-img", "amend", "-o", tc.opts, "r.qcow2")
		if z.code != q.code || asQemu(z.stderr) != q.stderr {
			t.Errorf("%s, amend -o %s:\nzqimg:\n%s\nqemu-img:\n%s", tc.create, tc.opts, z, q)
		}
	}
}

// TestCheckRepairIncompleteSnapshotsMatchesQemu: a version 2 image whose
// snapshot entries have no or 8 bytes of extra data, forced to version 3
// (iotest 261's "botched v3"), is reported and repaired by zqimg check -r
// all with qemu-img check's lines, and the repaired snapshot table holds
// the extra data qemu-img's repair writes.
func TestCheckRepairIncompleteSnapshotsMatchesQemu(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.qcow2")
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", src, "64M")
	for _, n := range []string{"sn0", "sn1", "sn2"} {
		mustRun(t, dir, "qemu-img", "snapshot", "-c", n, src)
	}
	cutExtra(t, src, map[int]int{0: 0, 2: 8})
	b := readFile(t, src)
	copy(b[4:], []byte{0, 0, 0, 3})
	copy(b[96:], []byte{0, 0, 0, 4, 0, 0, 0, 0x68})
	q, z := filepath.Join(dir, "q.qcow2"), filepath.Join(dir, "z.qcow2")
	for _, p := range []string{q, z} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"check"}, {"check", "-r", "all"}, {"check"}} {
		qr := runQemu(t, dir, "qemu-img", append(args, "q.qcow2")...)
		zr := zq(t, dir, append(args, "z.qcow2")...)
		if zr.code != qr.code || zr.stdout != qr.stdout || asQemu(zr.stderr) != qr.stderr {
			t.Errorf("%v:\nzqimg:\n%s\nqemu-img:\n%s", args, zr, qr)
		}
	}
	if qe, ze := snapshotExtras(t, q), snapshotExtras(t, z); fmt.Sprintf("%x", qe) != fmt.Sprintf("%x", ze) {
		t.Errorf("snapshot extra data: qemu-img %x, zqimg %x", qe, ze)
	}
	qemuCheckClean(t, z)
}

// TestAmendProgressMatchesQemu: amend -p prints the bytes qemu-img amend
// -p prints, for a downgrade (without and with a snapshot: one frame per
// L1 entry looked at) and an upgrade.
func TestAmendProgressMatchesQemu(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", base, "4G")
	for i, tc := range []struct {
		create, opts string
		snapshot     bool
	}{
		{"compat=1.1", "compat=0.10", false},
		{"compat=1.1", "compat=0.10", true},
		{"compat=0.10", "compat=1.1", true},
		{"compat=1.1", "lazy_refcounts=on", false},
	} {
		src := filepath.Join(dir, fmt.Sprintf("s%d.qcow2", i))
		mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", tc.create, "-b", base, "-F", "qcow2", src, "4G")
		runQemuIO(t, src, []string{"write -z 0 64k", "write -z 1G 64k", "write -z 2G 64k", "write -z 3G 64k"})
		if tc.snapshot {
			mustRun(t, dir, "qemu-img", "snapshot", "-c", "foo", src)
		}
		q, z := filepath.Join(dir, fmt.Sprintf("q%d.qcow2", i)), filepath.Join(dir, fmt.Sprintf("z%d.qcow2", i))
		for _, p := range []string{q, z} {
			if err := os.WriteFile(p, readFile(t, src), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		qr := runQemu(t, dir, "qemu-img", "amend", "-p", "-o", tc.opts, q)
		zr := zq(t, dir, "amend", "-p", "-o", tc.opts, z)
		if qr.code != 0 || zr.code != qr.code || zr.stdout != qr.stdout || zr.stderr != "" {
			t.Errorf("amend -p -o %s (snapshot %v):\nzqimg:   %q %s\nqemu-img: %q %s", tc.opts, tc.snapshot, zr.stdout, zr.stderr, qr.stdout, qr.stderr)
		}
		qemuCheckClean(t, z)
		if r := runQemu(t, dir, "qemu-img", "compare", q, z); r.code != 0 {
			t.Errorf("qemu-img compare:\n%s", r)
		}
	}
}
