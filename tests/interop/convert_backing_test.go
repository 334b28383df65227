package interop

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestConvertBackingMatchesQemu: convert -B BACKING -F FMT copies only the
// source's top layer (data, zero clusters as zeroes; what the source's
// backing chain gives is left to BACKING) into a new image naming
// BACKING: the image is qemu-img's byte for byte after the header
// cluster, its header qemu-img's but for the feature name table, its
// guest content and map qemu-img's. The refusals are qemu-img's.
func TestConvertBackingMatchesQemu(t *testing.T) {
	requireQemu(t)
	for _, c := range []struct {
		name string
		args []string // {} is the output
	}{
		{"overlay", []string{"-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", "top.qcow2", "{}"}},
		{"overlay-4k", []string{"-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", "-o", "cluster_size=4k", "top.qcow2", "{}"}},
		{"overlay-v2", []string{"-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", "-o", "compat=0.10", "top.qcow2", "{}"}},
		{"no-backing-source", []string{"-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", "base.qcow2", "{}"}},
		{"raw-backing", []string{"-O", "qcow2", "-B", "base.raw", "-F", "raw", "top.qcow2", "{}"}},
		{"no-format", []string{"-O", "qcow2", "-B", "base.qcow2", "top.qcow2", "{}"}},
		{"raw-output", []string{"-O", "raw", "-B", "base.qcow2", "-F", "qcow2", "top.qcow2", "{}"}},
		{"missing", []string{"-O", "qcow2", "-B", "nope", "-F", "qcow2", "top.qcow2", "{}"}},
		// -o backing_file and backing_fmt are -B and -F by other names.
		{"option-format", []string{"-O", "qcow2", "-B", "base.qcow2", "-o", "backing_fmt=qcow2", "top.qcow2", "{}"}},
		{"option-both", []string{"-O", "qcow2", "-o", "backing_file=base.qcow2,backing_fmt=qcow2", "top.qcow2", "{}"}},
		{"option-no-format", []string{"-O", "qcow2", "-o", "backing_file=base.qcow2", "top.qcow2", "{}"}},
		// Compressed: zero data over the backing file's data stays.
		{"compressed", []string{"-O", "qcow2", "-c", "-B", "base.qcow2", "-F", "qcow2", "top.qcow2", "{}"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var res [2]result
			var outs [2]string
			for i, tool := range []string{"qemu-img", zqimgBin} {
				dir := t.TempDir()
				mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "4M")
				mustRun(t, dir, "qemu-io", "-c", "write -P 1 0 2M", "base.qcow2")
				mustRun(t, dir, "qemu-img", "convert", "-O", "raw", "base.qcow2", "base.raw")
				// The overlay is larger than its backing file: zeroes past
				// the backing file's end need no writing.
				mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2", "8M")
				mustRun(t, dir, "qemu-io", "-c", "write -P 9 64k 64k", "-c", "write -z 1M 64k", "-c", "write -P 1 3M 64k", "-c", "write -P 0 3584k 4k", "-c", "write -P 5 100k 512", "-c", "write -P 0 192k 64k", "-c", "write -P 7 6M 64k", "top.qcow2")
				var args []string
				for _, a := range c.args {
					args = append(args, strings.ReplaceAll(a, "{}", "out.qcow2"))
				}
				res[i] = run(t, dir, tool, append([]string{"convert"}, args...)...)
				outs[i] = filepath.Join(dir, "out.qcow2")
			}
			if sameRefusal(t, res[0], res[1], outs[1]) {
				return
			}
			if !slices.Contains(c.args, "-c") {
				// Compressed streams are zlib's in qemu-img and Go's
				// deflate in zqimg: content and map are compared.
				compareOverlay(t, outs[0], outs[1])
			}
			mustRun(t, "", "qemu-img", "compare", outs[0], outs[1])
			sameMap(t, "qcow2", outs[0], outs[1])
			qemuCheckClean(t, outs[1])
		})
	}
}
