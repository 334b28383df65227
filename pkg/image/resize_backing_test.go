package image_test

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// TestGrowOverLongerBackingCrash: growing an image whose backing file is
// longer than its old size makes the added area read as zeroes, never as
// the backing file; the power cut at every write and sync of the resize
// (unsynced writes dropped, kept or torn) leaves the old size with the old
// content, or the new size with the added area reading as zeroes. Plain
// and extended L2 images, old sizes inside a cluster and a subcluster,
// with and without preallocation. Version 2 images are refused,
// unchanged (they cannot zero clusters).
func TestGrowOverLongerBackingCrash(t *testing.T) {
	dir := t.TempDir()
	const baseSize = 1 << 20
	if err := os.WriteFile(filepath.Join(dir, "base.raw"), bytes.Repeat([]byte{0xff}, baseSize), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "t.qcow2") // the backing file resolves beside it
	for _, c := range []struct {
		name     string
		opts     []string
		old      string
		prealloc image.PreallocMode
	}{
		{"plain", nil, "512k", image.PreallocOff},
		{"plain-odd", []string{"cluster_size=4k"}, "503k", image.PreallocOff},
		{"extl2-odd", []string{"extended_l2=on"}, "503k", image.PreallocOff},
		{"extl2-metadata", []string{"extended_l2=on"}, "503k", image.PreallocMetadata},
		{"extl2-falloc", []string{"extended_l2=on"}, "503k", image.PreallocFalloc},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := append([]string{"backing_file=base.raw", "backing_fmt=raw"}, c.opts...)
			base := testimg.Bytes(t, c.old, opts...)
			img := open(t, imagetest.NewMemFile(bytes.Clone(base)), path)
			oldSize := img.Size()
			img.Close()
			// Data in the old last cluster, before the old end.
			base = rewrite(t, base, path, oldSize-2048)
			img = open(t, imagetest.NewMemFile(bytes.Clone(base)), path)
			want := make([]byte, oldSize)
			if _, err := img.ReadAt(want, 0); err != nil {
				t.Fatal(err)
			}
			img.Close()
			const newSize = 2 << 20
			rng := rand.New(rand.NewSource(int64(len(c.name))))
			for cut := 0; ; cut++ {
				f := imagetest.NewFaultFile(base)
				img := open(t, f, path)
				f.PowerFailAfter(f.Ops() + cut)
				err := img.Resize(newSize, image.ResizeOptions{Preallocation: c.prealloc})
				if !f.PowerLost() {
					if err != nil {
						t.Fatalf("Resize: %v", err)
					}
					img.Close()
					checkGrown(t, "uninterrupted", f.Current(), path, want, newSize)
					if cut == 0 {
						t.Fatal("test premise: the resize wrote nothing")
					}
					return
				}
				img.Close()
				for k := 0; k < 4; k++ {
					b := f.Crash(rng)
					where := fmt.Sprintf("cut %d, crash %d", cut, k)
					ci := open(t, imagetest.NewMemFile(b), path)
					size := ci.Size()
					ci.Close()
					switch size {
					case oldSize:
						checkGrown(t, where, b, path, want, oldSize)
					case newSize:
						checkGrown(t, where, b, path, want, newSize)
					default:
						t.Fatalf("%s: size %d, want %d or %d", where, size, oldSize, newSize)
					}
				}
			}
		})
	}
	t.Run("v2-refused", func(t *testing.T) {
		base := testimg.Bytes(t, "512k", "backing_file=base.raw", "backing_fmt=raw", "compat=0.10")
		f := imagetest.NewMemFile(bytes.Clone(base))
		img := open(t, f, path)
		err := img.Resize(2<<20, image.ResizeOptions{})
		img.Close()
		if err == nil || err.Error() != "Failed to zero out new clusters: Operation not supported" {
			t.Fatalf("Resize of a version 2 image: %v", err)
		}
		if !bytes.Equal(f.Bytes(), base) {
			t.Fatal("the refused resize changed the image")
		}
	})
}

func open(t *testing.T, f image.File, path string) *image.Image {
	t.Helper()
	img, err := image.OpenFile(f, path, image.Options{NoLock: true})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// rewrite returns the image base with 2 KiB of 7s written at off.
func rewrite(t *testing.T, base []byte, path string, off int64) []byte {
	t.Helper()
	f := imagetest.NewMemFile(bytes.Clone(base))
	img := open(t, f, path)
	if _, err := img.WriteAt(bytes.Repeat([]byte{7}, 2048), off); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Bytes()
}

// checkGrown requires the image b to be size bytes that read as want and
// then zeroes.
func checkGrown(t *testing.T, where string, b []byte, path string, want []byte, size int64) {
	t.Helper()
	img := open(t, imagetest.NewMemFile(b), path)
	defer img.Close()
	if img.Size() != size {
		t.Fatalf("%s: size %d, want %d", where, img.Size(), size)
	}
	got := make([]byte, size)
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if !bytes.Equal(got[:len(want)], want) {
		t.Fatalf("%s: the old area changed", where)
	}
	for i, v := range got[len(want):] {
		if v != 0 {
			t.Fatalf("%s: the added area reads 0x%x at %d (the backing file shows through)", where, v, len(want)+i)
		}
	}
}
