package interop

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/internal/testbin"
)

// TestProtectedSymlinksMatchQemu: with fs.protected_symlinks=1, a link in
// a sticky world-writable directory owned by another user is refused by
// create and convert as by qemu-img (Permission denied, same message and
// exit status), and its target is left as it was.
func TestProtectedSymlinksMatchQemu(t *testing.T) {
	needQemu(t)
	old := []byte("old content")
	dir, real, _ := testbin.ProtectedSymlinks(t, old)
	if err := os.Symlink("missing", filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(dir, "dangling"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "src.raw"), bytes.Repeat([]byte{0x5a}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"create", "-f", "qcow2", "link", "1M"},
		{"create", "-f", "qcow2", "dangling", "1M"},
		{"convert", "-f", "raw", "-O", "raw", "src.raw", "link"},
		{"convert", "-f", "raw", "-O", "qcow2", "src.raw", "link"},
		{"convert", "-f", "raw", "-O", "raw", "src.raw", "dangling"},
	} {
		q, z := sameRun(t, dir, args...)
		if q.code == 0 || z.code == 0 {
			t.Errorf("the protected link was followed:\n%s\n%s", q, z)
		}
		if got, _ := os.ReadFile(real); !bytes.Equal(got, old) {
			t.Fatalf("%v changed the link's target", args)
		}
		if fileExists(filepath.Join(dir, "missing")) {
			t.Fatalf("%v created the dangling link's target", args)
		}
	}
}

// TestSymlinksMatchQemu: through an ordinary link (in a directory that is
// not sticky) create and convert write the file the link names, as
// qemu-img does: the link stays a link, a dangling link's target is
// created, and the content is the same.
func TestSymlinksMatchQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	src := bytes.Repeat([]byte("zqimg sy"), 1<<17) // 1 MiB: qemu-img rounds sizes to sectors
	if err := os.WriteFile(filepath.Join(dir, "src.raw"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args     []string
		existing bool
	}{
		{[]string{"convert", "-f", "raw", "-O", "raw", "src.raw", "link"}, true},
		{[]string{"convert", "-f", "raw", "-O", "raw", "src.raw", "link"}, false},
		{[]string{"convert", "-f", "raw", "-O", "qcow2", "src.raw", "link"}, true},
		{[]string{"create", "-f", "qcow2", "link", "1M"}, true},
		{[]string{"create", "-f", "qcow2", "link", "1M"}, false},
	} {
		var outs [2][]byte
		for i, tool := range []string{"qemu-img", "zqimg"} {
			removeAll(t, filepath.Join(dir, "link"), filepath.Join(dir, "real"))
			if err := os.Symlink("real", filepath.Join(dir, "link")); err != nil {
				t.Fatal(err)
			}
			if tc.existing {
				if err := os.WriteFile(filepath.Join(dir, "real"), []byte("old"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var r result
			if tool == "qemu-img" {
				r = runQemu(t, dir, "qemu-img", tc.args...)
			} else {
				r = zq(t, dir, tc.args...)
			}
			if r.code != 0 {
				t.Fatalf("%s", r)
			}
			if st, err := os.Lstat(filepath.Join(dir, "link")); err != nil || st.Mode()&os.ModeSymlink == 0 {
				t.Fatalf("%s: the link is no longer a link", r.cmdline)
			}
			if tc.args[0] == "convert" && tc.args[4] == "raw" {
				outs[i], _ = os.ReadFile(filepath.Join(dir, "real"))
				if !bytes.Equal(outs[i], src) {
					t.Fatalf("%s: the link's target is not the source", r.cmdline)
				}
			} else {
				outs[i] = []byte(run(t, dir, "qemu-img", "info", "--output=json", "real").stdout)
			}
		}
		if !bytes.Equal(outs[0], outs[1]) {
			t.Errorf("%v (existing %v): qemu-img and zqimg made different files:\n%s\n%s", tc.args, tc.existing, outs[0], outs[1])
		}
	}
}
