package interop

import (
	"strings"
	"testing"
)

// TestVMStateMatchesQemu: write -b and read -b address the same VM state
// area as qemu-io's (past the virtual disk, saved with snapshots): what
// one tool writes the other reads, at 0 and far out (1 TiB, which grows
// the L1 table), across a snapshot taken by qemu-img and applied by zqimg;
// the image stays clean for qemu-img check and the disk is untouched.
// Misuse is refused with qemu-io's words (qemu iotests 022, 029).
func TestVMStateMatchesQemu(t *testing.T) {
	requireQemu(t)
	for _, c := range []struct{ writer, reader string }{{zqimgBin, "qemu-io"}, {"qemu-io", zqimgBin}} {
		dir := t.TempDir()
		mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "t.qcow2", "64M")
		w := []string{"io"}
		if c.writer == "qemu-io" {
			w = nil
		}
		mustRun(t, dir, c.writer, append(w, "-c", "write -P 0x22 0 64k", "-c", "write -b -P 0x11 0 4k", "-c", "write -b -P 0x33 1T 4k", "t.qcow2")...)
		mustRun(t, dir, "qemu-img", "snapshot", "-c", "s", "t.qcow2")
		mustRun(t, dir, c.writer, append(w, "-c", "write -b -P 0x44 1T 4k", "t.qcow2")...)
		if c.writer == zqimgBin {
			mustRun(t, dir, zqimgBin, "snapshot", "-a", "s", "t.qcow2")
		} else {
			mustRun(t, dir, "qemu-img", "snapshot", "-a", "s", "t.qcow2")
		}
		r := []string{"io"}
		if c.reader == "qemu-io" {
			r = nil
		}
		out := mustRun(t, dir, c.reader, append(r, "-c", "read -b -P 0x11 0 4k", "-c", "read -b -P 0x33 1T 4k", "-c", "read -b -P 0 1M 4k", "-c", "read -P 0x22 0 64k", "t.qcow2")...)
		if strings.Contains(out.stdout, "verification failed") {
			t.Errorf("%s wrote, %s read:\n%s", c.writer, c.reader, out.stdout)
		}
		qemuCheckClean(t, dir+"/t.qcow2")
	}
	// Refusals, worded as qemu-io's.
	dir := t.TempDir()
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "t.qcow2", "1M")
	for _, cmd := range []string{"write -b 1 512", "write -b 0 100", "read -b 7 512", "write -b -z 0 512", "write -b -f 0 512"} {
		q := run(t, dir, "qemu-io", "-c", cmd, "t.qcow2")
		z := run(t, dir, zqimgBin, "io", "-c", cmd, "t.qcow2")
		if q.stdout != z.stdout {
			t.Errorf("%q: zqimg %q, qemu-io %q", cmd, z.stdout, q.stdout)
		}
	}
}
