package interop

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// A write through an L2 entry that points into metadata is refused by
// zqimg as by stock qemu-io's overlap check: the same failure line, the
// same "Preventing invalid write on metadata (overlaps with ...)" naming
// the structure, the corrupt bit set, the next read/write open refused,
// and the metadata left as it was.
func TestOverlapRefusalMatchesQemu(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	// 64 MiB, 64 KiB clusters: refcount table 0x10000, refcount block
	// 0x20000, then after a snapshot: old L1 (the snapshot's) 0x30000,
	// active L2 0x80000, active L1 0x90000, snapshot table 0xa0000.
	mustRun(t, dir, zqimgBin, "create", "-q", base, "64M")
	mustRun(t, dir, zqimgBin, "write", "-q", "-P", "0x61", base, "0", "192k")
	mustRun(t, dir, zqimgBin, "snapshot", "-c", "s1", base)
	raw := readFile(t, base)
	h := parseQcowHeader(t, raw)
	snapOff := be64(raw, 64)
	l2 := be64(raw, int(h.l1Offset)) & 0x00ffffffffffff00
	targets := map[string]uint64{
		"active L1 table":   h.l1Offset,
		"active L2 table":   l2,
		"refcount table":    h.rtOffset,
		"refcount block":    be64(raw, int(h.rtOffset)) & 0x00ffffffffffff00,
		"snapshot table":    snapOff,
		"inactive L1 table": be64(raw, int(snapOff)),
	}
	msg := regexp.MustCompile(`Preventing invalid write on metadata \(overlaps with ([^)]*)\)`)
	for kind, off := range targets {
		t.Run(kind, func(t *testing.T) {
			bad := append([]byte(nil), raw...)
			binary.BigEndian.PutUint64(bad[l2+8:], off|1<<63)
			var outs [2]result
			for i, tool := range []string{"qemu-io", zqimgBin} {
				p := filepath.Join(dir, strings.ReplaceAll(kind, " ", "_")+[]string{".q", ".z"}[i])
				writeFile(t, p, bad)
				var r result
				if i == 0 {
					r = runQemu(t, dir, tool, "-c", "write -P 0x55 64k 4k", p)
				} else {
					r = run(t, dir, tool, "io", "-c", "write -P 0x55 64k 4k", p)
				}
				outs[i] = r
				got := readFile(t, p)
				if hb := be64(got, 72); hb&2 == 0 {
					t.Errorf("%s: the corrupt bit is not set", tool)
				}
				copy(got[72:80], bad[72:80])
				from := 0
				if i == 0 {
					from = 1 << 16 // qemu-io rewrites header extensions on open
				}
				if d := firstDiff(got[from:], bad[from:]); d != "" {
					t.Errorf("%s changed the image beyond the corrupt bit: %s", tool, d)
				}
				if i == 1 {
					if r2 := run(t, dir, tool, "io", "-c", "write 0 512", p); r2.code == 0 || !strings.Contains(r2.stderr, "corrupt bit is set") {
						t.Errorf("zqimg writes to the marked image:\n%s", r2)
					}
				}
				os.Remove(p)
			}
			q, z := outs[0], outs[1]
			if q.stdout != z.stdout || !strings.Contains(z.stdout, "write failed: Input/output error") {
				t.Errorf("failure lines differ:\n%s\n%s", q, z)
			}
			qm, zm := msg.FindStringSubmatch(q.stderr), msg.FindStringSubmatch(z.stderr)
			if qm == nil || zm == nil || qm[1] != zm[1] || zm[1] != kind {
				t.Errorf("refusals differ (want the overlap with %s):\n%s\n%s", kind, q, z)
			}
		})
	}
}
