package image_test

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
)

// heapInUse returns the bytes of heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestHugeSparseL1StaysSmall: an image of 2 PiB has an L1 table of 4 Mi
// entries (32 MiB), almost all zero. Holding eight of them open (as a
// backing chain does) costs memory for their used entries, not 8 × 32 MiB.
func TestHugeSparseL1StaysSmall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "huge.qcow2")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	of, err := image.OpenOSFile(path, false, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := image.Format(of, image.CreateOptions{Size: 2 << 50, ClusterBits: 16, Version: 3, RefcountOrder: 4}); err != nil {
		t.Fatal(err)
	}
	of.Close()
	w, err := image.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// One used L1 entry near the end of the table.
	if _, err := w.WriteAt([]byte{9}, 2<<50-4096); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	before := heapInUse()
	var imgs []*image.Image
	for range 8 {
		img, err := image.Open(path, image.Options{ReadOnly: true, NoLock: true})
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	grew := int64(heapInUse()) - int64(before)
	for _, img := range imgs {
		p := make([]byte, 1)
		if _, err := img.ReadAt(p, 2<<50-4096); err != nil || p[0] != 9 {
			t.Errorf("read through the sparse L1: %v %v", p, err)
		}
		img.Close()
	}
	t.Logf("heap grew by %d KiB for 8 open 2 PiB images", grew>>10)
	if grew > 16<<20 {
		t.Errorf("8 open 2 PiB images hold %d MiB of heap, want < 16 MiB", grew>>20)
	}
}
