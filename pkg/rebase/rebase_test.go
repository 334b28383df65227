package rebase

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"
	"github.com/zqimg/zqimg/pkg/image"
)

func mkImage(t *testing.T, path, size string, opts ...string) {
	t.Helper()
	if err := os.WriteFile(path, testimg.Bytes(t, size, opts...), 0o644); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path string, b byte, off, n int64) {
	t.Helper()
	img, err := image.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{b}, int(n)), off); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
}

func content(t *testing.T, path string) ([]byte, string) {
	t.Helper()
	img, err := image.Open(path, image.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	name, _ := img.BackingFile()
	return b, name
}

func TestCompareSectors(t *testing.T) {
	a, b := make([]byte, 2048), make([]byte, 2048)
	b[600] = 1 // sector 1 differs
	if d, n := compareSectors(a, b); d || n != 512 {
		t.Fatalf("got %v %d, want same for 512", d, n)
	}
	if d, n := compareSectors(a[512:], b[512:]); !d || n != 512 {
		t.Fatalf("got %v %d, want differ for 512", d, n)
	}
	if d, n := compareSectors(a[1024:], b[1024:]); d || n != 1024 {
		t.Fatalf("got %v %d, want same for 1024", d, n)
	}
}

// TestRebaseKeepsContent: safe mode onto a different base, then onto
// none, keeps the guest's view; the data the image held is untouched.
func TestRebaseKeepsContent(t *testing.T) {
	dir := t.TempDir()
	b1, b2, ov := filepath.Join(dir, "b1.qcow2"), filepath.Join(dir, "b2.qcow2"), filepath.Join(dir, "ov.qcow2")
	mkImage(t, b1, "2M")
	mkImage(t, b2, "4M")
	write(t, b1, 1, 0, 1<<20)
	write(t, b2, 2, 512<<10, 1<<20)
	mkImage(t, ov, "4M", "backing_file=b1.qcow2", "backing_fmt=qcow2", "cluster_size=4k")
	write(t, ov, 9, 100<<10, 10<<10)
	want, _ := content(t, ov)
	if err := Rebase(Request{File: ov, Backing: "b2.qcow2", BackingFormat: "qcow2"}); err != nil {
		t.Fatal(err)
	}
	got, name := content(t, ov)
	if name != "b2.qcow2" || !bytes.Equal(got, want) {
		t.Fatalf("after rebase onto b2: backing %q, content equal %v", name, bytes.Equal(got, want))
	}
	if err := Rebase(Request{File: ov}); err != nil {
		t.Fatal(err)
	}
	got, name = content(t, ov)
	if name != "" || !bytes.Equal(got, want) {
		t.Fatalf("after removing the backing file: backing %q, content equal %v", name, bytes.Equal(got, want))
	}
}

// TestRebaseRefusals: refused requests leave the file as it was.
func TestRebaseRefusals(t *testing.T) {
	dir := t.TempDir()
	b1, ov, z := filepath.Join(dir, "b1.qcow2"), filepath.Join(dir, "ov.qcow2"), filepath.Join(dir, "z.qcow2")
	mkImage(t, b1, "2M")
	mkImage(t, ov, "2M", "backing_file=b1.qcow2", "backing_fmt=qcow2")
	mkImage(t, z, "4M", "zone.mode=host-managed", "zone.size=1M")
	for _, c := range []struct {
		r    Request
		want error
	}{
		{Request{File: ov, Backing: "b1.qcow2"}, ErrNoBackingFormat},
		{Request{File: ov, Format: "raw", Backing: "b1.qcow2", BackingFormat: "qcow2"}, ErrNotSupported},
		{Request{File: ov, Backing: "missing", BackingFormat: "qcow2"}, os.ErrNotExist},
		{Request{File: z, Unsafe: true}, ErrZoned},
		{Request{File: ov, Backing: "z.qcow2", BackingFormat: "qcow2"}, nil},
	} {
		before, _ := os.ReadFile(c.r.File)
		err := Rebase(c.r)
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%+v: got %v, want %v", c.r, err, c.want)
		}
		if after, _ := os.ReadFile(c.r.File); !bytes.Equal(before, after) {
			t.Errorf("%+v: the image changed", c.r)
		}
	}
}

// TestRebaseFromNoBackingKeepsContent: an image without a backing file
// rebased onto one keeps reading zeroes where it holds no data, in whole
// and in partly written clusters, version 2 and 3 (qemu iotest 252).
func TestRebaseFromNoBackingKeepsContent(t *testing.T) {
	for _, compat := range []string{"0.10", "1.1"} {
		t.Run(compat, func(t *testing.T) {
			dir := t.TempDir()
			base, ov := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "ov.qcow2")
			mkImage(t, base, "1M")
			write(t, base, 0x11, 0, 1<<20)
			mkImage(t, ov, "1M", "compat="+compat, "cluster_size=64k")
			write(t, ov, 0x22, 0, 128<<10)
			write(t, ov, 0x33, 200<<10, 1000) // part of a cluster, unaligned
			want, _ := content(t, ov)
			if err := Rebase(Request{File: ov, Backing: "base.qcow2", BackingFormat: "qcow2"}); err != nil {
				t.Fatal(err)
			}
			got, name := content(t, ov)
			if name != "base.qcow2" {
				t.Fatalf("backing %q", name)
			}
			if i := firstDiff(got, want); i >= 0 {
				t.Fatalf("content changed at offset %#x: %#x, want %#x", i, got[i], want[i])
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
