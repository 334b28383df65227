package interop

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestInvalidSubclusterEntryMatchesQemu: an extended L2 entry QEMU calls
// invalid (a data cluster with a subcluster marked both allocated and
// zero, an unallocated cluster with allocated subclusters) is refused by
// reads and writes through it as qemu-io refuses them: the image marked
// corrupt ("qcow2: Marking image as corrupt: Invalid cluster entry found
// ..."), "read failed"/"write failed: Input/output error", no data
// written; the zero bit on the descriptor, which extended entries do not
// use, is ignored as by QEMU (qemu iotest 271).
func TestInvalidSubclusterEntryMatchesQemu(t *testing.T) {
	requireQemu(t)
	bin := t.TempDir()
	zqio := filepath.Join(bin, "qemu-io")
	if err := os.Symlink(zqimgBin, zqio); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		setup string // qemu-io command before the corruption
		entry int    // L2 entry to corrupt
		desc  uint64 // OR-ed into the descriptor
		bm    uint64 // OR-ed into the bitmap
	}{
		{"allocated-both-bits", "write -q 32k 128k", 1, 0, 1 << 32},
		{"unallocated-alloc-bit", "write -q 256k 1k", 0, 0, 1},
		{"unallocated-both-bits", "write -q 256k 1k", 1, 0, 1<<32 | 1},
		{"descriptor-zero-bit", "write -q -P 0x11 0 2k", 0, 1, 0},
	} {
		for _, op := range []string{"read 0 192k", "write -P 3 0 192k", "read -P 0x11 0 1k"} {
			t.Run(c.name+"/"+strings.Fields(op)[0]+strings.Fields(op)[1], func(t *testing.T) {
				var outs [2]string
				var imgs [2][]byte
				for i, tool := range []string{"qemu-io", zqio} {
					dir := t.TempDir()
					p := filepath.Join(dir, "t.qcow2")
					mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", "t.qcow2", "1M")
					mustRun(t, dir, "qemu-io", "-c", c.setup, "t.qcow2")
					b := readFile(t, p)
					be := binary.BigEndian
					l2 := be.Uint64(b[be.Uint64(b[40:]):]) & 0x00fffffffffffe00
					o := l2 + uint64(c.entry)*16
					be.PutUint64(b[o:], be.Uint64(b[o:])|c.desc)
					be.PutUint64(b[o+8:], be.Uint64(b[o+8:])|c.bm)
					writeFile(t, p, b)
					r := run(t, dir, tool, "-c", op, "t.qcow2")
					outs[i] = strings.Join(filterTimes(r.stdout+r.stderr), "\n")
					imgs[i] = readFile(t, p)
				}
				if outs[0] != outs[1] {
					t.Errorf("zqimg as qemu-io:\n%s\nqemu-io:\n%s", outs[1], outs[0])
				}
				if d := firstDiff(imgs[1], imgs[0]); d != "" {
					t.Errorf("images differ after %q: %s", op, d)
				}
			})
		}
	}
}

// timingRE matches qemu-io's timing line ("192 KiB, 1 ops; 00.00 sec (...)").
var timingRE = regexp.MustCompile(`^[0-9.]+ [A-Za-z]+, [0-9]+ ops; .*$`)

// filterTimes returns the lines of s with the timing lines replaced.
func filterTimes(s string) []string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if timingRE.MatchString(l) {
			lines[i] = "TIMING"
		}
	}
	return lines
}
