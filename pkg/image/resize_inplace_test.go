package image_test

import (
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// TestResizeGrowInPlace: a growth that needs no more L1 entries changes
// only the size field, as qemu-img resize does: the L1 table and the
// refcount structure stay where they are (iotest 061 prints them), and
// the image checks clean with its data.
func TestResizeGrowInPlace(t *testing.T) {
	f := imagetest.NewMemFile(formatImage(t, crashConfig{"g", nil, "64M"}))
	img := openMem(t, f)
	if _, err := img.WriteAt([]byte{0x2a}, 42<<20); err != nil {
		t.Fatal(err)
	}
	before := img.Header()
	if err := img.Resize(128<<20, image.ResizeOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	img = openMem(t, imagetest.NewMemFile(f.Bytes()))
	defer img.Close()
	h := img.Header()
	if h.Size != 128<<20 || h.L1TableOffset != before.L1TableOffset || h.RefcountTableOffset != before.RefcountTableOffset {
		t.Fatalf("size %d, L1 table 0x%x (was 0x%x), refcount table 0x%x (was 0x%x)",
			h.Size, h.L1TableOffset, before.L1TableOffset, h.RefcountTableOffset, before.RefcountTableOffset)
	}
	p := make([]byte, 1)
	if _, err := img.ReadAt(p, 42<<20); err != nil || p[0] != 0x2a {
		t.Fatalf("data after the growth: %x, %v", p, err)
	}
	if r := checkImage(t, "grown", imagetest.NewMemFile(f.Bytes()), false); r.corruptions != 0 || r.leaks != 0 {
		t.Fatalf("check:\n%s", r.report)
	}
}
