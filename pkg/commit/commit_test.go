package commit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"
	"github.com/zqimg/zqimg/pkg/image"
)

func mk(t *testing.T, path, size string, opts ...string) {
	t.Helper()
	if err := os.WriteFile(path, testimg.Bytes(t, size, opts...), 0o644); err != nil {
		t.Fatal(err)
	}
}

func rw(t *testing.T, path string, f func(img *image.Image)) {
	t.Helper()
	img, err := image.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f(img)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string, opts image.Options) []byte {
	t.Helper()
	opts.ReadOnly = true
	img, err := image.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCommitMovesDataAndEmpties: the base gets the overlay's data and
// zeroes (growing to the overlay's size), the overlay reads the same and
// holds nothing afterwards.
func TestCommitMovesDataAndEmpties(t *testing.T) {
	dir := t.TempDir()
	b, o := filepath.Join(dir, "b.qcow2"), filepath.Join(dir, "o.qcow2")
	mk(t, b, "2M")
	rw(t, b, func(img *image.Image) { img.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 0) })
	mk(t, o, "4M", "backing_file=b.qcow2", "backing_fmt=qcow2")
	rw(t, o, func(img *image.Image) {
		img.WriteAt(bytes.Repeat([]byte{9}, 10000), 100000)
		img.WriteZeroes(0, 64<<10)
		img.WriteAt(bytes.Repeat([]byte{5}, 512), 3<<20)
	})
	want := read(t, o, image.Options{})
	if err := Commit(Request{File: o}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, b, image.Options{}); !bytes.Equal(got, want) {
		t.Fatalf("base content differs from the overlay's before the commit (len %d vs %d)", len(got), len(want))
	}
	if got := read(t, o, image.Options{}); !bytes.Equal(got, want) {
		t.Fatal("the overlay reads differently after the commit")
	}
	if own := read(t, o, image.Options{NoBacking: true}); bytes.ContainsFunc(own, func(r rune) bool { return r != 0 }) {
		t.Fatal("the overlay still holds data")
	}
	img, _ := image.Open(o, image.Options{ReadOnly: true, NoBacking: true})
	defer img.Close()
	for off := int64(0); off < img.Size(); {
		e, err := img.BlockStatus(off, img.Size()-off)
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind != image.Unallocated {
			t.Fatalf("overlay range at %d is %v, want unallocated", off, e.Kind)
		}
		off += e.Len
	}
}

func TestCommitRefusals(t *testing.T) {
	dir := t.TempDir()
	nb, z := filepath.Join(dir, "nb.qcow2"), filepath.Join(dir, "z.qcow2")
	mk(t, nb, "1M")
	mk(t, z, "4M", "zone.mode=host-managed", "zone.size=1M")
	for _, c := range []struct {
		r    Request
		want error
	}{
		{Request{File: nb}, ErrNoBacking},
		{Request{File: z}, ErrZoned},
	} {
		before, _ := os.ReadFile(c.r.File)
		if err := Commit(c.r); !errors.Is(err, c.want) {
			t.Errorf("%+v: got %v, want %v", c.r, err, c.want)
		}
		if after, _ := os.ReadFile(c.r.File); !bytes.Equal(before, after) {
			t.Errorf("%+v: the image changed", c.r)
		}
	}
}

// TestCommitIntoDeeperBase: commit -b with a base below the overlay's own
// backing file writes what the overlay and the intermediate image store
// (the overlay's where both do) into the base; overlay and intermediate
// stay as they were (qemu iotest 097).
func TestCommitIntoDeeperBase(t *testing.T) {
	dir := t.TempDir()
	b, m, o := filepath.Join(dir, "b.qcow2"), filepath.Join(dir, "m.qcow2"), filepath.Join(dir, "o.qcow2")
	mk(t, b, "4M")
	rw(t, b, func(img *image.Image) { img.WriteAt(bytes.Repeat([]byte{1}, 192<<10), 1<<20) })
	mk(t, m, "4M", "backing_file=b.qcow2", "backing_fmt=qcow2")
	rw(t, m, func(img *image.Image) {
		img.WriteAt(bytes.Repeat([]byte{2}, 128<<10), 1<<20+64<<10)
		img.WriteZeroes(2<<20, 64<<10)
	})
	mk(t, o, "4M", "backing_file=m.qcow2", "backing_fmt=qcow2")
	rw(t, o, func(img *image.Image) {
		img.WriteAt(bytes.Repeat([]byte{3}, 64<<10), 1<<20+128<<10)
		img.WriteAt(bytes.Repeat([]byte{4}, 512), 4<<20-512)
	})
	want := read(t, o, image.Options{})
	beforeO, _ := os.ReadFile(o)
	beforeM, _ := os.ReadFile(m)
	if err := Commit(Request{File: o, Base: b}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, b, image.Options{}); !bytes.Equal(got, want) {
		t.Fatal("the base does not read what the overlay read before the commit")
	}
	if after, _ := os.ReadFile(o); !bytes.Equal(after, beforeO) {
		t.Error("the overlay changed")
	}
	if after, _ := os.ReadFile(m); !bytes.Equal(after, beforeM) {
		t.Error("the intermediate image changed")
	}
	// A file that is not in the chain is refused, nothing written.
	x := filepath.Join(dir, "x.qcow2")
	mk(t, x, "4M")
	beforeB, _ := os.ReadFile(b)
	var nf *BaseNotFoundError
	if err := Commit(Request{File: o, Base: x}); !errors.As(err, &nf) {
		t.Errorf("commit -b a stranger: %v", err)
	}
	if after, _ := os.ReadFile(b); !bytes.Equal(after, beforeB) {
		t.Error("the base changed on a refused commit")
	}
}
