package interop

import (
	"path/filepath"
	"testing"
)

// TestConvertSnapshotMatchesQemu: convert -l reads an internal snapshot's
// disk instead of the active one, named by ID or name or by
// snapshot.id/snapshot.name; the output reads as qemu-img's, and the
// refusals (unknown snapshot, bad parameter) are qemu-img's (qemu iotest
// 029).
func TestConvertSnapshotMatchesQemu(t *testing.T) {
	requireQemu(t)
	for _, param := range []string{"s1", "1", "snapshot.name=s1", "snapshot.id=2", "snapshot.id=1,snapshot.name=s1", "nope", "snapshot.id=1,snapshot.name=s2", "snapshot.size=1"} {
		t.Run(param, func(t *testing.T) {
			t.Parallel()
			var res [2]result
			var outs [2]string
			for i, tool := range []string{"qemu-img", zqimgBin} {
				dir := t.TempDir()
				mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "t.qcow2", "4M")
				mustRun(t, dir, "qemu-io", "-c", "write -P 1 0 1M", "t.qcow2")
				mustRun(t, dir, "qemu-img", "snapshot", "-c", "s1", "t.qcow2")
				mustRun(t, dir, "qemu-io", "-c", "write -P 2 512k 1M", "t.qcow2")
				mustRun(t, dir, "qemu-img", "snapshot", "-c", "s2", "t.qcow2")
				mustRun(t, dir, "qemu-io", "-c", "write -P 3 3M 64k", "t.qcow2")
				res[i] = run(t, dir, tool, "convert", "-O", "qcow2", "-l", param, "t.qcow2", "out.qcow2")
				outs[i] = filepath.Join(dir, "out.qcow2")
			}
			if q, z := res[0], res[1]; q.code != z.code {
				t.Fatalf("exit status: zqimg %d, qemu-img %d\n%s\n%s", z.code, q.code, z, q)
			}
			if sameRefusal(t, res[0], res[1], outs[1]) {
				return
			}
			mustRun(t, "", "qemu-img", "compare", outs[0], outs[1])
		})
	}
}
