package interop

import (
	"path/filepath"
	"testing"
)

// TestRebaseMatchesQemu: `rebase` (safe, -b "", -u, onto a shorter or
// longer base, a raw base) leaves the image qemu-img rebase leaves: the
// same guest content (qemu-img compare), the same header but for the
// feature name table, the same clusters after the header cluster.
func TestRebaseMatchesQemu(t *testing.T) {
	requireQemu(t)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"safe", []string{"-b", "b2.qcow2", "-F", "qcow2"}},
		{"safe-raw", []string{"-b", "b2.raw", "-F", "raw"}},
		{"remove", []string{"-b", ""}},
		{"shorter-old", []string{"-b", "b2.qcow2", "-F", "qcow2"}},
		{"unsafe", []string{"-u", "-b", "b2.qcow2", "-F", "raw"}},
		{"unsafe-remove", []string{"-u"}},
		{"unsafe-long-name", []string{"-u", "-b", "dir/../dir/../dir/../dir/../dir/../dir/../dir/../dir/../dir/../dir/../dir/../dir/../dir/../dir/../b2.qcow2", "-F", "qcow2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var paths [2]string
			for i, tool := range []string{"qemu-img", zqimgBin} {
				dir := t.TempDir()
				old := "8M"
				if c.name == "shorter-old" {
					old = "1M"
				}
				mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "b1.qcow2", old)
				mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "b2.qcow2", "8M")
				if c.name == "shorter-old" {
					mustRun(t, dir, "qemu-io", "-c", "write -P 1 0 512k", "b1.qcow2")
				} else {
					mustRun(t, dir, "qemu-io", "-c", "write -P 1 0 1M", "-c", "write -P 3 3M 4k", "b1.qcow2")
				}
				mustRun(t, dir, "mkdir", "dir")
				if c.name == "shorter-old" {
					mustRun(t, dir, "qemu-io", "-c", "write -P 7 0 8M", "b2.qcow2")
				} else {
					mustRun(t, dir, "qemu-io", "-c", "write -P 2 512k 1M", "-c", "write -P 3 3M 4k", "b2.qcow2")
				}
				mustRun(t, dir, "qemu-img", "convert", "-O", "raw", "b2.qcow2", "b2.raw")
				mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "b1.qcow2", "-F", "qcow2", "ov.qcow2", "8M")
				mustRun(t, dir, "qemu-io", "-c", "write -P 9 100k 10k", "-c", "write -P 8 2M 512", "ov.qcow2")
				before := filepath.Join(dir, "before.qcow2")
				mustRun(t, dir, "qemu-img", "convert", "-O", "qcow2", "ov.qcow2", before)
				args := append([]string{"rebase"}, c.args...)
				r := run(t, dir, tool, append(args, "ov.qcow2")...)
				if r.code != 0 {
					t.Fatalf("%s failed:\n%s", tool, r)
				}
				paths[i] = filepath.Join(dir, "ov.qcow2")
				if c.name != "unsafe" && c.name != "unsafe-remove" && c.name != "unsafe-long-name" {
					// Safe mode keeps what the guest sees.
					mustRun(t, dir, "qemu-img", "compare", before, paths[i])
				}
				qemuCheckClean(t, paths[i])
			}
			compareOverlay(t, paths[0], paths[1])
			if c.name != "unsafe-long-name" {
				mustRun(t, "", "qemu-img", "compare", paths[0], paths[1])
			}
		})
	}
}
