package interop

import (
	"path/filepath"
	"strings"
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
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "tbase.qcow2", "4M")
	mustRun(t, dir, "qemu-io", "-c", "write -P 9 0 4M", "tbase.qcow2")
	// An overlay source: what its backing file gives is not copied by -B.
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "sbase.qcow2", "4M")
	mustRun(t, dir, "qemu-io", "-c", "write -P 4 0 2M", "sbase.qcow2")
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "sbase.qcow2", "-F", "qcow2", "top.qcow2", "4M")
	mustRun(t, dir, "qemu-io", "-c", "write -P 5 64k 64k", "-c", "write -z 1M 128k", "-c", "write -P 0 1536k 64k", "-c", "write -P 6 3M 64k", "top.qcow2")
	for _, c := range []struct {
		name, fmt, size string
		create          []string // more create options of the target
		empty           bool     // the target is left empty (else full of data)
		args            []string // more convert options
		src             string   // the source (default src.qcow2)
	}{
		{name: "qcow2", fmt: "qcow2", size: "4M"}, {name: "qcow2-larger", fmt: "qcow2", size: "8M"}, {name: "raw", fmt: "raw", size: "4M"}, {name: "raw-larger", fmt: "raw", size: "6M"},
		// An empty target: zeroes are written as zeroes all the same
		// (zero flags in version 3; version 2 deallocates).
		{name: "qcow2-empty", fmt: "qcow2", size: "4M", empty: true},
		{name: "qcow2-empty-v2", fmt: "qcow2", size: "4M", create: []string{"-o", "compat=0.10"}, empty: true},
		// A target with a backing file of data: the source's zeroes must
		// read as zeroes, not as the target's backing file.
		{name: "qcow2-backed", fmt: "qcow2", size: "4M", create: []string{"-b", "tbase.qcow2", "-F", "qcow2"}, empty: true},
		// -n -B: the source's top layer only; the target keeps its own
		// (no) backing file.
		{name: "qcow2-B", fmt: "qcow2", size: "4M", args: []string{"-B", "tbase.qcow2", "-F", "qcow2"}, src: "top.qcow2"},
		{name: "qcow2-B-backed", fmt: "qcow2", size: "4M", create: []string{"-b", "tbase.qcow2", "-F", "qcow2"}, args: []string{"-B", "tbase.qcow2", "-F", "qcow2"}, empty: true, src: "top.qcow2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var paths [2]string
			for i, tool := range []string{"qemu-img", zqimgBin} {
				p := filepath.Join(dir, c.name+"-"+[]string{"q", "z"}[i]+"."+c.fmt)
				mustRun(t, dir, "qemu-img", append(append([]string{"create", "-q", "-f", c.fmt}, c.create...), p, c.size)...)
				if !c.empty {
					mustRun(t, dir, "qemu-io", "-f", c.fmt, "-c", "write -P 7 0 "+c.size, p)
				}
				src := c.src
				if src == "" {
					src = "src.qcow2"
				}
				args := append(append([]string{"convert", "-n", "-O", c.fmt}, c.args...), src, p)
				if r := run(t, dir, tool, args...); r.code != 0 {
					t.Fatalf("%s failed:\n%s", tool, r)
				}
				paths[i] = p
			}
			mustRun(t, "", "qemu-img", "compare", "-f", c.fmt, "-F", c.fmt, paths[0], paths[1])
			sameMap(t, c.fmt, paths[0], paths[1])
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
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "dst.qcow2", "4M")
	for _, c := range []struct {
		dst  string
		args []string
	}{
		{"small.qcow2", nil}, {"missing.qcow2", nil},
		// -o has nothing to act on without a creation.
		{"dst.qcow2", []string{"-o", "preallocation=metadata"}},
		{"dst.qcow2", []string{"-o", "backing_file=tbase.qcow2,backing_fmt=qcow2"}},
	} {
		before := readFileIfAny(filepath.Join(dir, c.dst))
		args := append(append([]string{"convert", "-n", "-O", "qcow2"}, c.args...), "src.qcow2", c.dst)
		qr := run(t, dir, "qemu-img", args...)
		zr := zq(t, dir, args...)
		if qr.code == 0 || zr.code == 0 {
			t.Errorf("%s %v: qemu-img exit %d, zqimg exit %d; want both refused", c.dst, c.args, qr.code, zr.code)
		}
		if qe, ze := strings.TrimPrefix(qr.stderr, "qemu-img: "), strings.TrimPrefix(zr.stderr, "zqimg: "); qe != ze {
			t.Errorf("%s %v: zqimg says %q, qemu-img %q", c.dst, c.args, ze, qe)
		}
		if after := readFileIfAny(filepath.Join(dir, c.dst)); string(after) != string(before) {
			t.Errorf("%s %v: refused, yet the target changed", c.dst, c.args)
		}
	}
}
