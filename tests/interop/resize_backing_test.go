package interop

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestResizeOverLargerBackingMatchesQemu: growing an image whose backing
// file is longer than its old size must not let the backing file show
// through in the added area: it reads as zeroes, as after qemu-img resize
// (QEMU zeroes it: zero clusters or zero subclusters, and the part of a
// subcluster before them written with zeroes). Version 2 images, which
// have no zero clusters, are refused as qemu-img refuses them, unchanged.
// Content, map and exit status are qemu-img's, with and without extended
// L2 entries, preallocation, and old sizes that end inside a cluster or a
// subcluster, by resize and by amend -o size= (qemu iotest 271).
func TestResizeOverLargerBackingMatchesQemu(t *testing.T) {
	requireQemu(t)
	for _, c := range []struct {
		name   string
		create []string // create options (-o)
		old    string
		resize []string // resize options; {"amend"}: amend -o size= instead
		write  string   // a qemu-io command on the image before the resize
	}{
		{"plain", []string{"compat=1.1"}, "512k", nil, ""},
		{"plain-odd", []string{"compat=1.1"}, "500k", nil, "write -P 7 490k 10k"},
		{"plain-4k", []string{"cluster_size=4k"}, "503k", nil, ""},
		{"extl2", []string{"extended_l2=on"}, "512k", nil, ""},
		{"extl2-odd-subcluster", []string{"extended_l2=on"}, "503k", nil, "write -P 7 500k 3k"},
		{"extl2-prealloc-create", []string{"extended_l2=on,preallocation=metadata"}, "512k", nil, ""},
		{"extl2-resize-metadata", []string{"extended_l2=on"}, "503k", []string{"--preallocation=metadata"}, ""},
		{"extl2-resize-falloc", []string{"extended_l2=on"}, "503k", []string{"--preallocation=falloc"}, ""},
		{"extl2-resize-full", []string{"extended_l2=on"}, "503k", []string{"--preallocation=full"}, ""},
		{"shorter-backing", []string{"compat=1.1"}, "1M", nil, ""},
		{"v2", []string{"compat=0.10"}, "512k", nil, ""},
		// amend -o size= grows the same way.
		{"amend", []string{"compat=1.1"}, "500k", []string{"amend"}, "write -P 7 490k 10k"},
		{"amend-extl2", []string{"extended_l2=on"}, "503k", []string{"amend"}, ""},
		{"amend-v2", []string{"compat=0.10"}, "512k", []string{"amend"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var res [2]result
			var paths [2]string
			var before [2][]byte
			for i, tool := range []string{"qemu-img", zqimgBin} {
				dir := t.TempDir()
				mustRun(t, dir, "qemu-img", "create", "-q", "-f", "raw", "base.raw", "1M")
				mustRun(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0xff 0 1M", "base.raw")
				paths[i] = filepath.Join(dir, "t.qcow2")
				mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", strings.Join(c.create, ","), "-F", "raw", "-b", "base.raw", "t.qcow2", c.old)
				if c.write != "" {
					mustRun(t, dir, "qemu-io", "-c", c.write, "t.qcow2")
				}
				before[i] = readFile(t, paths[i])
				args := append(append([]string{"resize", "-q"}, c.resize...), "t.qcow2", "2M")
				if len(c.resize) > 0 && c.resize[0] == "amend" {
					args = []string{"amend", "-o", "size=2M", "t.qcow2"}
				}
				res[i] = run(t, dir, tool, args...)
			}
			if sameRefusalUnchanged(t, res[0], res[1], paths[1], before[1]) {
				return
			}
			mustRun(t, "", "qemu-img", "compare", paths[0], paths[1])
			sameMap(t, "qcow2", paths[0], paths[1])
			qemuCheckClean(t, paths[1])
		})
	}
}
