package image_test

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"
	"github.com/zqimg/zqimg/pkg/image"
)

// TestShrinkDropsEmptyRefcountBlocks: a shrink that frees the clusters of
// whole refcount blocks leaves no refcount table entry pointing to a
// block of zeroes, as qemu-img resize --shrink (qcow2_shrink_reftable;
// qemu iotest 163 checks it), and the data kept reads back.
func TestShrinkDropsEmptyRefcountBlocks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.qcow2")
	if err := os.WriteFile(path, testimg.Bytes(t, "3M", "cluster_size=512", "refcount_bits=64"), 0o644); err != nil {
		t.Fatal(err)
	}
	const chunk = 256 << 10
	offs := rand.New(rand.NewSource(1)).Perm(12)
	for _, i := range offs {
		img, err := image.Open(path, image.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := img.WriteAt(bytes.Repeat([]byte{0xff}, chunk), int64(i)*chunk); err != nil {
			t.Fatal(err)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
	}
	img, err := image.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Resize(1<<20, image.ResizeOptions{Shrink: true}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1<<20)
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bytes.Repeat([]byte{0xff}, 1<<20)) {
		t.Error("the data kept does not read back")
	}
	h := img.Header()
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rt := b[h.RefcountTableOffset : h.RefcountTableOffset+uint64(h.RefcountTableClusters)*512]
	for i := 0; i < len(rt); i += 8 {
		off := binary.BigEndian.Uint64(rt[i:])
		if off == 0 {
			continue
		}
		if off+512 > uint64(len(b)) {
			t.Fatalf("refcount table entry %d: block 0x%x beyond the end of the file (%d bytes)", i/8, off, len(b))
		}
		if bytes.Count(b[off:off+512], []byte{0}) == 512 {
			t.Errorf("refcount table entry %d: block 0x%x holds only zeroes", i/8, off)
		}
	}
	f, err := image.OpenOSFile(path, true, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if r := checkImage(t, "after the shrink", f, false); r.corruptions != 0 || r.leaks != 0 {
		t.Errorf("check after the shrink: %+v", r)
	}
}
