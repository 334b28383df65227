package image_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"
	"github.com/zqimg/zqimg/pkg/image"
)

// TestExtL2WriteOverBackingAllocatesTouchedSubclusters: with extended L2
// entries, a write into a cluster the overlay does not hold allocates
// only the subclusters it touches (their other bytes copied from the
// backing file); the other subclusters stay unallocated and keep reading
// the backing file, as QEMU leaves them (qemu iotest 271).
func TestExtL2WriteOverBackingAllocatesTouchedSubclusters(t *testing.T) {
	dir := t.TempDir()
	base, ov := filepath.Join(dir, "base.raw"), filepath.Join(dir, "ov.qcow2")
	if err := os.WriteFile(base, bytes.Repeat([]byte{0xff}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ov, testimg.Bytes(t, "1M", "extended_l2=on", "backing_file=base.raw", "backing_fmt=raw"), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := image.Open(ov, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	const sub = 2048 // 64 KiB clusters, 32 subclusters
	// 1000 bytes inside subcluster 2 of cluster 1, and a write from the
	// middle of subcluster 5 to the middle of subcluster 7 of cluster 2.
	writes := [][2]int64{{64<<10 + 2*sub + 100, 1000}, {128<<10 + 5*sub + 1024, 2 * sub}}
	want := bytes.Repeat([]byte{0xff}, 1<<20)
	for _, w := range writes {
		p := bytes.Repeat([]byte{0x11}, int(w[1]))
		if _, err := img.WriteAt(p, w[0]); err != nil {
			t.Fatal(err)
		}
		copy(want[w[0]:], p)
	}
	got := make([]byte, 1<<20)
	if _, err := img.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("content differs (%v)", err)
	}
	allocated := map[int64]bool{64<<10 + 2*sub: true, 128<<10 + 5*sub: true, 128<<10 + 6*sub: true, 128<<10 + 7*sub: true}
	for off := int64(64 << 10); off < 192<<10; off += sub {
		x, err := img.BlockStatus(off, sub)
		if err != nil {
			t.Fatal(err)
		}
		if isData := x.Kind == image.Data; isData != allocated[off] {
			t.Errorf("subcluster at %#x: %v, want allocated %v", off, x.Kind, allocated[off])
		}
	}
}
