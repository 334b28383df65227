package interop

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSnapshotTableRepairMatchesQemu: snapshot tables qemu-img refuses to
// open (an entry with more than 1 KiB of extra data, a table of more than
// 64 MiB, more than 65536 entries) are refused by zqimg with qemu-img's
// messages, by info and by check alike, the file unchanged; check -r all
// repairs them as qemu-img does (same lines, same counts): the extra data
// cut to 1 KiB and the table rewritten, the overhanging entries dropped
// and their clusters freed. qemu-img then finds zqimg's repaired image
// clean, with as many snapshots as in its own (qemu iotest 261).
func TestSnapshotTableRepairMatchesQemu(t *testing.T) {
	requireQemu(t)
	// zqimg run as qemu-img words open failures as qemu-img does.
	bin := t.TempDir()
	zqAsQemu := filepath.Join(bin, "qemu-img")
	if err := os.Symlink(zqimgBin, zqAsQemu); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		build func(t *testing.T, path string)
	}{
		{"too-much-extra", buildTooMuchExtra},
		{"table-too-big", buildTableTooBig},
		{"too-many", buildTooManySnapshots},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			orig := filepath.Join(dir, "orig.qcow2")
			c.build(t, orig)
			var paths [2]string
			for i, tool := range []string{"q", "z"} {
				paths[i] = filepath.Join(dir, tool+".qcow2")
				writeFile(t, paths[i], readFile(t, orig))
			}
			for _, args := range [][]string{{"info"}, {"check"}} {
				q := run(t, "", "qemu-img", append(args, paths[0])...)
				z := run(t, "", zqAsQemu, append(args, paths[1])...)
				if q.code == 0 || z.code != q.code {
					t.Errorf("%v: exit qemu-img %d, zqimg %d", args, q.code, z.code)
				}
				if qe, ze := normalizeTool(q.stderr, paths[0]), normalizeTool(z.stderr, paths[1]); qe != ze {
					t.Errorf("%v: zqimg says\n%s\nqemu-img\n%s", args, ze, qe)
				}
				if string(readFile(t, paths[1])) != string(readFile(t, orig)) {
					t.Fatalf("%v changed the image", args)
				}
			}
			q := run(t, "", "qemu-img", "check", "-r", "all", paths[0])
			z := run(t, "", zqAsQemu, "check", "-r", "all", paths[1])
			if q.code != z.code {
				t.Errorf("check -r all: exit qemu-img %d, zqimg %d\n%s\n%s", q.code, z.code, q, z)
			}
			if qo, zo := normalizeTool(q.stderr+q.stdout, paths[0]), normalizeTool(z.stderr+z.stdout, paths[1]); qo != zo {
				t.Errorf("check -r all: zqimg says\n%s\nqemu-img\n%s", zo, qo)
			}
			qemuCheckClean(t, paths[1])
			if qn, zn := nbSnapshots(t, paths[0]), nbSnapshots(t, paths[1]); qn != zn {
				t.Errorf("snapshots after the repair: zqimg %d, qemu-img %d", zn, qn)
			}
			if c.name == "too-much-extra" {
				// The rewritten table is qemu-img's: same entries, the
				// extra data cut to 1 KiB.
				ql := mustRun(t, "", "qemu-img", "snapshot", "-l", paths[0]).stdout
				zl := mustRun(t, "", "qemu-img", "snapshot", "-l", paths[1]).stdout
				if ql != zl {
					t.Errorf("snapshot -l after the repair: zqimg's image\n%s\nqemu-img's\n%s", zl, ql)
				}
			}
		})
	}
}

// normalizeTool drops the image's path from a tool's output.
func normalizeTool(s, path string) string {
	return strings.ReplaceAll(s, path, "IMG")
}

// nbSnapshots reads the header's snapshot count.
func nbSnapshots(t *testing.T, path string) uint32 {
	b := readFile(t, path)
	return binary.BigEndian.Uint32(b[60:])
}

// pokeFile writes b at off of the file at path.
func pokeFile(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func u32b(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func u64b(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
func u16b(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// snapEntrySize is the length of the snapshot table entry at off, padding
// included.
func snapEntrySize(b []byte, off int) int {
	be := binary.BigEndian
	n := 40 + int(be.Uint32(b[off+36:])) + int(be.Uint16(b[off+12:])) + int(be.Uint16(b[off+14:]))
	return (n + 7) / 8 * 8
}

// buildTooMuchExtra: four snapshots made by qemu-img, the last one
// claiming 64 KiB of extra data (which reaches into a free cluster).
func buildTooMuchExtra(t *testing.T, path string) {
	mustRun(t, "", "qemu-img", "create", "-q", "-f", "qcow2", path, "64M")
	for _, sn := range []string{"sn0", "sn1", "sn2", "sn3"} {
		mustRun(t, "", "qemu-img", "snapshot", "-c", sn, path)
	}
	b := readFile(t, path)
	off := int(binary.BigEndian.Uint64(b[64:]))
	for i := 0; i < 3; i++ {
		off += snapEntrySize(b, off)
	}
	pokeFile(t, path, int64(off+36), u32b(0x10000))
}

// refblock0Allocate sets the refcount of the clusters of [lo, hi) to 1
// in the first refcount block (16-bit refcounts, 64 KiB clusters).
func refblock0Allocate(t *testing.T, path string, lo, hi int64) {
	b := readFile(t, path)
	rt := binary.BigEndian.Uint64(b[48:])
	rb := int64(binary.BigEndian.Uint64(b[rt:]))
	for k := lo >> 16; k < (hi+0xffff)>>16; k++ {
		pokeFile(t, path, rb+2*k, u16b(1))
	}
}

// buildTableTooBig: a snapshot table at 1 MiB of entries with 1 KiB of
// extra data and ID and name of 65535 bytes each, one entry more than 64
// MiB hold; the last entry has an L1 table (at 0xe0000) with one L2
// table (at 0xf0000).
func buildTableTooBig(t *testing.T, path string) {
	mustRun(t, "", "qemu-img", "create", "-q", "-f", "qcow2", path, "64M")
	entry := make([]byte, 40)
	copy(entry[12:], u16b(0xffff))
	copy(entry[14:], u16b(0xffff))
	copy(entry[36:], u32b(1024))
	const snSize = 40 + 1024 + 65535 + 65535 + 2
	pokeFile(t, path, 64, u64b(1<<20))
	off, written, count := int64(1<<20), 0, 0
	for written <= 64<<20 {
		pokeFile(t, path, off, entry)
		off += snSize
		written += snSize
		count++
	}
	if err := os.Truncate(path, off); err != nil {
		t.Fatal(err)
	}
	pokeFile(t, path, off-snSize, u64b(0xe0000))
	pokeFile(t, path, off-snSize+8, u32b(1))
	pokeFile(t, path, 1<<20-2*65536, u64b(0x80000000000f0000))
	refblock0Allocate(t, path, 1<<20-2*65536, off)
	pokeFile(t, path, 60, u32b(uint32(count)))
}

// buildTooManySnapshots: a version 2 image listing 131072 all-zero
// snapshot table entries at 1 MiB; entry 65536 has an L1 table (at
// 0xe0000) with one L2 table (at 0xf0000).
func buildTooManySnapshots(t *testing.T, path string) {
	mustRun(t, "", "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", path, "64M")
	pokeFile(t, path, 64, u64b(1<<20))
	pokeFile(t, path, 60, u32b(0x20000))
	end := int64(1<<20 + 40*131072)
	if err := os.Truncate(path, end); err != nil {
		t.Fatal(err)
	}
	pokeFile(t, path, 1<<20+40*65536, u64b(0xe0000))
	pokeFile(t, path, 1<<20+40*65536+8, u32b(1))
	pokeFile(t, path, 1<<20-2*65536, u64b(0x80000000000f0000))
	refblock0Allocate(t, path, 1<<20-2*65536, end)
}
