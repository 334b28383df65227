package interop

import (
	"path/filepath"
	"testing"
)

// TestConvertNullCoMatchesQemu: convert reads a json: source of QEMU's
// null-co driver ('driver': 'null-co', 'size': N, 'read-zeroes': true) as
// qemu-img does: zeroes, which -S 512 leaves unwritten and -S 0 writes as
// data; the outputs' content and map are qemu-img's (qemu iotest 150).
func TestConvertNullCoMatchesQemu(t *testing.T) {
	requireQemu(t)
	const src = "json:{ 'driver': 'null-co', 'size': 1048576, 'read-zeroes': true }"
	for _, c := range []struct {
		name string
		args []string
		fmt  string
	}{
		{"sparse", []string{"-O", "qcow2", "-S", "512"}, "qcow2"},
		{"full", []string{"-O", "qcow2", "-S", "0"}, "qcow2"},
		{"compressed", []string{"-O", "qcow2", "-c", "-S", "0"}, "qcow2"},
		{"raw", []string{"-O", "raw", "-S", "0"}, "raw"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var outs [2]string
			for i, tool := range []string{"qemu-img", zqimgBin} {
				dir := t.TempDir()
				outs[i] = filepath.Join(dir, "out")
				mustRun(t, dir, tool, append(append([]string{"convert"}, c.args...), src, "out")...)
			}
			mustRun(t, "", "qemu-img", "compare", "-f", c.fmt, "-F", c.fmt, outs[0], outs[1])
			sameMap(t, c.fmt, outs[0], outs[1])
		})
	}
	// An unknown size, as qemu-img: the null-co default of 1 GiB.
	dir := t.TempDir()
	zq(t, dir, "convert", "-O", "qcow2", "json:{'driver': 'null-co', 'read-zeroes': true}", "g.qcow2")
	mustRun(t, dir, "qemu-img", "convert", "-O", "qcow2", "json:{'driver': 'null-co', 'read-zeroes': true}", "q.qcow2")
	mustRun(t, dir, "qemu-img", "compare", "g.qcow2", "q.qcow2")
}
