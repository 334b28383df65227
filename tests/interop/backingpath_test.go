package interop

import (
	"os"
	"path/filepath"
	"testing"
)

// TestInfoBackingPathFormsMatchQemu: info and info --backing-chain name
// backing files as stock qemu-img does, in human and JSON output, for
// backing file names that are relative, start with ./ or ../, are
// absolute, or hold .. components, and for top images named relatively,
// with ./ or absolutely: the "actual path" (full-backing-filename) is the
// overlay's directory as written joined to the name, never cleaned, and
// every image of the chain is named that way.
func TestInfoBackingPathFormsMatchQemu(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	q := func(args ...string) { mustRun(t, dir, "qemu-img", args...) }
	q("create", "-q", "-f", "qcow2", "base.qcow2", "1M")
	overlay := func(img, backing string) {
		q("create", "-q", "-f", "qcow2", "-b", backing, "-F", "qcow2", img)
	}
	overlay("rel.qcow2", "base.qcow2")
	overlay("dot.qcow2", "./base.qcow2")
	overlay("sub/up.qcow2", "../base.qcow2")
	overlay("dotdot.qcow2", "./sub/../base.qcow2")
	overlay("abs.qcow2", filepath.Join(dir, "sub")+"/../base.qcow2")
	overlay("sub/deep.qcow2", "../sub/./up.qcow2")
	overlay("top.qcow2", "sub/deep.qcow2")
	for _, img := range []string{
		"rel.qcow2", "./rel.qcow2", "dot.qcow2", "sub/up.qcow2", "./sub/up.qcow2",
		filepath.Join(dir, "sub", "up.qcow2"), "sub/../sub/up.qcow2", "dotdot.qcow2",
		"abs.qcow2", "top.qcow2", "./top.qcow2", filepath.Join(dir, "top.qcow2"),
	} {
		for _, chain := range []bool{false, true} {
			for _, out := range []string{"human", "json"} {
				args := []string{"info", "--output=" + out}
				if chain {
					args = append(args, "--backing-chain")
				}
				args = append(args, img)
				z := zq(t, dir, args...)
				r := runQemu(t, dir, "qemu-img", args...)
				if r.code != 0 {
					t.Fatalf("qemu-img failed:\n%s", r)
				}
				if z.code != 0 || normInfo(z.stdout) != normInfo(r.stdout) {
					t.Errorf("%v differs from qemu-img:\n%s\n%s", args, z, r)
				}
			}
		}
	}
}
