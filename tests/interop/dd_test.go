package interop

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestDDMatchesQemu: zqimg dd makes qemu-img dd's output byte for byte
// (raw and qcow2; block sizes that divide the input or not; skip and
// count, count taken from the start of the input as qemu-img takes it; a
// skip past the end), and refuses what qemu-img refuses with its words
// (qemu iotests 159 and 170 run the common cases).
func TestDDMatchesQemu(t *testing.T) {
	requireQemu(t)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"raw-default", []string{"if=in.qcow2", "of=out"}},
		{"qcow2-bs5", []string{"-O", "qcow2", "bs=5", "count=30000", "if=in.qcow2", "of=out"}},
		{"qcow2-64k", []string{"-O", "qcow2", "bs=64k", "if=in.qcow2", "of=out"}},
		{"raw-skip-count", []string{"bs=4k", "skip=3", "count=40", "if=in.qcow2", "of=out"}},
		{"qcow2-count", []string{"-O", "qcow2", "bs=1M", "count=1", "if=in.qcow2", "of=out"}},
		{"skip-beyond", []string{"bs=1M", "skip=9", "if=in.qcow2", "of=out"}},
		{"raw-input", []string{"-f", "raw", "-O", "qcow2", "bs=3k", "if=in.raw", "of=out"}},
		{"no-output", []string{"if=in.qcow2"}},
		{"bad-operand", []string{"if=in.qcow2", "of=out", "conv=notrunc"}},
		{"no-equals", []string{"if=in.qcow2", "of=out", "junk"}},
		{"bad-bs", []string{"bs=0", "if=in.qcow2", "of=out"}},
		{"bad-bs-suffix", []string{"bs=1Q", "if=in.qcow2", "of=out"}},
		{"bad-format", []string{"-O", "foo", "if=in.qcow2", "of=out"}},
		{"missing-input", []string{"if=nope.qcow2", "of=out"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var res [2]result
			var outs [2][]byte
			var paths [2]string
			var exists [2]bool
			for i, tool := range []string{"qemu-img", zqimgBin} {
				dir := t.TempDir()
				mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "in.qcow2", "3M")
				mustRun(t, dir, "qemu-io", "-c", "write -P 7 0 1M", "-c", "write -P 9 1500k 100k", "-c", "write -z 2M 64k", "in.qcow2")
				mustRun(t, dir, "qemu-img", "convert", "-O", "raw", "in.qcow2", "in.raw")
				res[i] = run(t, dir, tool, append([]string{"dd"}, c.args...)...)
				paths[i] = filepath.Join(dir, "out")
				b, err := os.ReadFile(paths[i])
				outs[i], exists[i] = b, err == nil
			}
			q, z := res[0], res[1]
			if q.code != z.code {
				t.Fatalf("exit status: zqimg %d, qemu-img %d\n%s\n%s", z.code, q.code, z, q)
			}
			sameMessages(t, q, z)
			if exists[0] != exists[1] {
				t.Fatalf("output exists: zqimg %v, qemu-img %v", exists[1], exists[0])
			}
			switch {
			case !exists[0]:
			case slices.Contains(c.args, "qcow2"):
				// Byte for byte but the header cluster's feature name
				// table (zqimg writes the zoned reference's).
				compareOverlay(t, paths[0], paths[1])
				mustRun(t, "", "qemu-img", "compare", paths[0], paths[1])
				qemuCheckClean(t, paths[1])
			case !bytes.Equal(outs[0], outs[1]):
				t.Errorf("outputs differ (%d bytes by zqimg, %d by qemu-img)", len(outs[1]), len(outs[0]))
			}
		})
	}
}
