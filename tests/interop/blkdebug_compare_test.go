package interop

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCompareBlkdebugReadErrorMatchesQemu: compare opens a blkdebug:CONF:FILE
// operand and carries out its read_aio error rule: the read fails as
// qemu-img's does ("Error while reading offset 0 of NAME: Input/output
// error", exit 4), after the size warning when the sizes differ (qemu
// iotest 074).
func TestCompareBlkdebugReadErrorMatchesQemu(t *testing.T) {
	requireQemu(t)
	for _, size2 := range []string{"same", "0"} {
		var res [2]result
		for i, tool := range []string{"qemu-img", zqimgBin} {
			dir := t.TempDir()
			conf := "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nonce = \"off\"\n"
			if err := os.WriteFile(filepath.Join(dir, "blkdebug.conf"), []byte(conf), 0o644); err != nil {
				t.Fatal(err)
			}
			mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "t.qcow2", "64M")
			if size2 == "same" {
				mustRun(t, dir, "cp", "t.qcow2", "t2.qcow2")
			} else {
				mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "t2.qcow2", "0")
			}
			mustRun(t, dir, "qemu-io", "-c", "write -P 102 512 512", "t.qcow2")
			res[i] = run(t, dir, tool, "compare", "blkdebug:blkdebug.conf:t.qcow2", "t2.qcow2")
		}
		q, z := res[0], res[1]
		if q.code != z.code || q.stdout != z.stdout {
			t.Errorf("size %s: zqimg %s\nqemu-img %s", size2, z, q)
		}
		if qe, ze := q.stderr[len("qemu-img: "):], z.stderr[min(len(z.stderr), len("zqimg: ")):]; qe != ze {
			t.Errorf("size %s: message: zqimg %q, qemu-img %q", size2, ze, qe)
		}
	}
}
