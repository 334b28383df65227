package image_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"
	"github.com/zqimg/zqimg/pkg/image"
)

// TestWriteZeroesOverBackingZeroes: a write of zeroes over part of an
// overlay cluster whose other bytes read as zeroes through the backing
// file (unallocated or zero there) marks the whole cluster zero, as
// QEMU's qcow2 driver does (qemu iotest 154); where the backing file has
// data outside the request, the cluster is written and keeps that data.
func TestWriteZeroesOverBackingZeroes(t *testing.T) {
	const k = 1024
	for _, c := range []struct {
		name           string
		baseData       [2]int64 // offset, length of 0x11 in the base (512-byte clusters)
		zeroOff, zeroN int64
		wantKind       image.Kind
	}{
		{"base-empty", [2]int64{0, 0}, 5 * k, 2 * k, image.Zero},
		{"base-data-inside", [2]int64{5 * k, k}, 5 * k, 2 * k, image.Zero},
		{"base-data-outside", [2]int64{4 * k, k}, 5 * k, 2 * k, image.Data},
		{"base-data-after", [2]int64{7 * k, 512}, 5 * k, 2 * k, image.Data},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			base, ov := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "ov.qcow2")
			if err := os.WriteFile(base, testimg.Bytes(t, "1M", "cluster_size=512"), 0o644); err != nil {
				t.Fatal(err)
			}
			if c.baseData[1] > 0 {
				b, err := image.Open(base, image.Options{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := b.WriteAt(bytes.Repeat([]byte{0x11}, int(c.baseData[1])), c.baseData[0]); err != nil {
					t.Fatal(err)
				}
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(ov, testimg.Bytes(t, "1M", "cluster_size=4k", "backing_file=base.qcow2", "backing_fmt=qcow2"), 0o644); err != nil {
				t.Fatal(err)
			}
			img, err := image.Open(ov, image.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			want := make([]byte, 8*k)
			if _, err := img.ReadAt(want, 0); err != nil {
				t.Fatal(err)
			}
			clear(want[c.zeroOff : c.zeroOff+c.zeroN])
			if err := img.WriteZeroes(c.zeroOff, c.zeroN); err != nil {
				t.Fatal(err)
			}
			x, err := img.BlockStatus(4*k, 4*k)
			if err != nil {
				t.Fatal(err)
			}
			if x.Kind != c.wantKind || x.Len != 4*k {
				t.Errorf("cluster at 4k: %v for %d bytes, want %v for 4096", x.Kind, x.Len, c.wantKind)
			}
			got := make([]byte, 8*k)
			if _, err := img.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("content after the write of zeroes differs")
			}
		})
	}
}
