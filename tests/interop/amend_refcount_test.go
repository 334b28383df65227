package interop

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestAmendRefcountBitsMatchesQemu: amend -o refcount_bits=N rewrites the
// refcount structure with the new width as qemu-img amend does: qemu-img
// check finds the result clean, info reports the width, the guest content
// is unchanged; the refusals are qemu-img's, the image unchanged: a width
// that is not a power of two up to 64, a width other than 16 with
// compat=0.10, compat=0.10 from another width, a width too narrow for a
// refcount (a cluster shared with a snapshot) (qemu iotest 112).
func TestAmendRefcountBitsMatchesQemu(t *testing.T) {
	requireQemu(t)
	for _, c := range []struct {
		name  string
		setup [][]string // commands run on t.qcow2 (qemu-img/qemu-io)
		opts  string
	}{
		{"16-to-1", nil, "refcount_bits=1"},
		{"16-to-64", nil, "refcount_bits=64"},
		{"16-to-2-snapshot", [][]string{{"qemu-img", "snapshot", "-c", "foo"}}, "refcount_bits=2"},
		{"narrow-snapshot", [][]string{{"qemu-img", "snapshot", "-c", "foo"}, {"qemu-io", "-c", "write 0 16M"}}, "refcount_bits=1"},
		{"64-to-16-v2", [][]string{{"qemu-img", "amend", "-o", "refcount_bits=64"}}, "compat=0.10,refcount_bits=16"},
		{"64-v2-refused", [][]string{{"qemu-img", "amend", "-o", "refcount_bits=64"}}, "compat=0.10"},
		{"32-v2-refused", nil, "refcount_bits=32,compat=0.10"},
		{"not-power-of-two", nil, "refcount_bits=3"},
		{"too-wide", nil, "refcount_bits=128"},
		{"zero", nil, "refcount_bits=0"},
		{"v2-to-v3-and-8", [][]string{{"qemu-img", "amend", "-o", "compat=0.10"}}, "compat=1.1,refcount_bits=8"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var res [2]result
			var paths [2]string
			var before [2][]byte
			for i, tool := range []string{"qemu-img", zqimgBin} {
				dir := t.TempDir()
				paths[i] = filepath.Join(dir, "t.qcow2")
				mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "t.qcow2", "64M")
				mustRun(t, dir, "qemu-io", "-c", "write -P 5 16M 32M", "t.qcow2")
				for _, cmd := range c.setup {
					mustRun(t, dir, cmd[0], append(cmd[1:], "t.qcow2")...)
				}
				before[i] = readFile(t, paths[i])
				res[i] = run(t, dir, tool, "amend", "-o", c.opts, "t.qcow2")
			}
			if sameRefusalUnchanged(t, res[0], res[1], paths[1], before[1]) {
				return
			}
			qemuCheckClean(t, paths[1])
			mustRun(t, "", "qemu-img", "compare", paths[0], paths[1])
			if qb, zb := refcountBits(t, paths[0]), refcountBits(t, paths[1]); qb != zb {
				t.Errorf("refcount bits: zqimg %d, qemu-img %d", zb, qb)
			}
			ql := mustRun(t, "", "qemu-img", "snapshot", "-l", paths[0]).stdout
			zl := mustRun(t, "", "qemu-img", "snapshot", "-l", paths[1]).stdout
			if strings.Count(ql, "\n") != strings.Count(zl, "\n") {
				t.Errorf("snapshots: zqimg\n%s\nqemu-img\n%s", zl, ql)
			}
		})
	}
}

// refcountBits is the refcount width qemu-img info reports.
func refcountBits(t *testing.T, path string) int {
	var info struct {
		Spec struct {
			Data struct {
				RefcountBits int `json:"refcount-bits"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "", "qemu-img", "info", "--output=json", path).stdout), &info); err != nil {
		t.Fatal(err)
	}
	return info.Spec.Data.RefcountBits
}
