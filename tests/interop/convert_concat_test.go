package interop

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestConvertConcatMatchesQemu: convert SRC1 SRC2 ... DST concatenates the
// sources in order, as qemu-img does (each but the last rounded up to
// 512 bytes): the output's guest content and allocation map are
// qemu-img's, compressed or not, with sources whose sizes are not
// multiples of the output's cluster size, raw sources of odd sizes
// included, and into an existing image with -n. The refusals (-B, a
// snapshot name, with several sources) are qemu-img's and leave nothing
// behind (qemu iotest 122).
func TestConvertConcatMatchesQemu(t *testing.T) {
	requireQemu(t)
	for _, c := range []struct {
		name string
		args []string // {} is the output
	}{
		{"qcow2", []string{"-O", "qcow2", "a.qcow2", "b.qcow2", "c.qcow2", "{}"}},
		{"compressed", []string{"-O", "qcow2", "-c", "a.qcow2", "b.qcow2", "c.qcow2", "{}"}},
		{"misaligned-compressed", []string{"-O", "qcow2", "-c", "m1.qcow2", "m2.qcow2", "{}"}},
		{"misaligned", []string{"-O", "qcow2", "m1.qcow2", "m2.qcow2", "{}"}},
		{"raw-odd", []string{"-O", "qcow2", "odd.raw", "a.qcow2", "odd.raw", "{}"}},
		{"to-raw", []string{"-O", "raw", "a.qcow2", "odd.raw", "b.qcow2", "{}"}},
		{"existing", []string{"-n", "-O", "qcow2", "a.qcow2", "b.qcow2", "{}"}},
		{"backing", []string{"-O", "qcow2", "-B", "a.qcow2", "-F", "qcow2", "a.qcow2", "b.qcow2", "{}"}},
		{"backing-compressed", []string{"-O", "qcow2", "-c", "-B", "a.qcow2", "-F", "qcow2", "a.qcow2", "b.qcow2", "{}"}},
		{"snapshot", []string{"-O", "qcow2", "-l", "s1", "a.qcow2", "b.qcow2", "{}"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var res [2]result
			var outs [2]string
			for i, tool := range []string{"qemu-img", zqimgBin} {
				dir := t.TempDir()
				for k, img := range []string{"a", "b", "c"} {
					p := img + ".qcow2"
					mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
					mustRun(t, dir, "qemu-io", "-c", "write -P "+string(rune('1'+k))+" 0 64k", "-c", "write -P 9 3M 8k", p)
				}
				mustRun(t, dir, "qemu-img", "snapshot", "-c", "s1", "a.qcow2")
				// 1023k images of 1k clusters: a destination cluster
				// straddles them.
				mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=1024", "m1.qcow2", "1023k")
				mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=1024", "m2.qcow2", "1023k")
				mustRun(t, dir, "qemu-io", "-c", "write -P 0x11 16k 16k", "-c", "write -P 0x22 130k 130k", "-c", "write -P 0x33 1022k 1k", "m1.qcow2")
				mustRun(t, dir, "qemu-io", "-c", "write -P 0x44 0 1k", "m2.qcow2")
				odd := make([]byte, 1000)
				for j := range odd {
					odd[j] = byte(j%250 + 1)
				}
				writeFile(t, filepath.Join(dir, "odd.raw"), odd)
				if c.args[0] == "-n" {
					mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "out.qcow2", "16M")
					mustRun(t, dir, "qemu-io", "-c", "write -P 7 0 16M", "out.qcow2")
				}
				var args []string
				for _, a := range c.args {
					args = append(args, strings.ReplaceAll(a, "{}", "out."+outFormat(c.args)))
				}
				res[i] = run(t, dir, tool, append([]string{"convert"}, args...)...)
				outs[i] = filepath.Join(dir, "out."+outFormat(c.args))
			}
			if sameRefusal(t, res[0], res[1], outs[1]) {
				return
			}
			f := outFormat(c.args)
			mustRun(t, "", "qemu-img", "compare", "-f", f, "-F", f, outs[0], outs[1])
			if f == "raw" {
				if d := firstDiff(readFile(t, outs[1]), readFile(t, outs[0])); d != "" {
					t.Errorf("raw outputs differ: %s", d)
				}
				return
			}
			sameMap(t, f, outs[0], outs[1])
			qemuCheckClean(t, outs[1])
		})
	}
}

// outFormat is the -O of a convert command line.
func outFormat(args []string) string {
	for i, a := range args {
		if a == "-O" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return "raw"
}
