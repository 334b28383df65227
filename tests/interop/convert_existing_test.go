package interop

import (
	"path/filepath"
	"testing"
)

// TestConvertNoCreateMatchesQemu: convert -n writes into an existing
// image (full of other data, as large as the source or larger) what
// qemu-img convert -n writes: the guest content and the allocation map of
// the target are qemu-img's (raw: the same bytes and blocks); a target
// that is too small or missing is refused by both.
func TestConvertNoCreateMatchesQemu(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "src.qcow2", "4M")
	mustRun(t, dir, "qemu-io", "-c", "write -P 1 0 8k", "-c", "write -P 2 1M 64k", "-c", "write -z 2M 128k", "-c", "write -P 3 3M 512", "src.qcow2")
	for _, c := range []struct{ name, fmt, size string }{
		{"qcow2", "qcow2", "4M"}, {"qcow2-larger", "qcow2", "8M"}, {"raw", "raw", "4M"}, {"raw-larger", "raw", "6M"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var paths [2]string
			for i, tool := range []string{"qemu-img", zqimgBin} {
				p := filepath.Join(dir, c.name+"-"+[]string{"q", "z"}[i]+"."+c.fmt)
				mustRun(t, dir, "qemu-img", "create", "-q", "-f", c.fmt, p, c.size)
				mustRun(t, dir, "qemu-io", "-f", c.fmt, "-c", "write -P 7 0 "+c.size, p)
				if r := run(t, dir, tool, "convert", "-n", "-O", c.fmt, "src.qcow2", p); r.code != 0 {
					t.Fatalf("%s failed:\n%s", tool, r)
				}
				paths[i] = p
			}
			mustRun(t, "", "qemu-img", "compare", "-f", c.fmt, "-F", c.fmt, paths[0], paths[1])
			qm := mustRun(t, "", "qemu-img", "map", "-f", c.fmt, "--output=json", paths[0]).stdout
			zm := mustRun(t, "", "qemu-img", "map", "-f", c.fmt, "--output=json", paths[1]).stdout
			if qm != zm {
				t.Errorf("map: zqimg\n%s\nqemu-img\n%s", zm, qm)
			}
			if c.fmt == "raw" {
				if d := firstDiff(readFile(t, paths[1]), readFile(t, paths[0])); d != "" {
					t.Errorf("raw outputs differ: %s", d)
				}
			} else {
				qemuCheckClean(t, paths[1])
			}
		})
	}
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "small.qcow2", "1M")
	for _, dst := range []string{"small.qcow2", "missing.qcow2"} {
		qr := run(t, dir, "qemu-img", "convert", "-n", "-O", "qcow2", "src.qcow2", dst)
		zr := zq(t, dir, "convert", "-n", "-O", "qcow2", "src.qcow2", dst)
		if qr.code == 0 || zr.code == 0 {
			t.Errorf("%s: qemu-img exit %d, zqimg exit %d; want both refused", dst, qr.code, zr.code)
		}
		if qe, ze := qr.stderr[len("qemu-img: "):], zr.stderr[len("zqimg: "):]; qe != ze {
			t.Errorf("%s: zqimg says %q, qemu-img %q", dst, ze, qe)
		}
	}
}
