package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// iotest305Image builds iotest 305's image: 1 KiB clusters, 64-bit
// refcounts (128 per refcount block), 124 KiB written and guest clusters
// 121 and 123 discarded (their host clusters, one described by refcount
// block 0 and one by block 1, are free), then the offset of refcount
// block 1 made unaligned (0x20600). It returns the bytes.
func iotest305Image(t *testing.T) []byte {
	t.Helper()
	f := imagetest.NewMemFile(nil)
	if err := Format(f, CreateOptions{Size: 1 << 20, ClusterBits: 10, Version: 3, RefcountOrder: 6}); err != nil {
		t.Fatal(err)
	}
	img, err := OpenFile(f, "t", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{0xcd}, 124<<10), 0); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{121 << 10, 123 << 10} {
		if err := img.Discard(off, 1<<10); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	b := f.Bytes()
	rt := binary.BigEndian.Uint64(b[HdrRefcountTableOffset:])
	if e := binary.BigEndian.Uint64(b[rt+8:]); e != 0x20400 {
		t.Fatalf("refcount table entry 1 is 0x%x, want 0x20400 (the layout changed)", e)
	}
	b[rt+14] = 0x06 // as the test pokes it: 0x20400 -> 0x20600
	return b
}

// TestUnalignedRefblockAsQemu: an image whose refcount block 1 has an
// unaligned offset, while no metadata has its refcount there, opens for
// writing as QEMU opens it (iotest 305). A write that needs a refcount of
// that block fails with a CorruptionError worded as QEMU's ("Refblock
// offset 0x20600 unaligned (reftable index: 0x1)"), First set, and the
// image is marked corrupt; no metadata is changed but the corrupt bit,
// and every later write is refused.
func TestUnalignedRefblockAsQemu(t *testing.T) {
	b := iotest305Image(t)
	before := bytes.Clone(b)
	f := imagetest.NewMemFile(bytes.Clone(b))
	img, err := OpenFile(f, "t", Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	_, err = img.WriteAt(bytes.Repeat([]byte{0x11}, 3<<10), 121<<10)
	var ce *CorruptionError
	if !errors.As(err, &ce) || !ce.First || ce.QEMU != "Refblock offset 0x20600 unaligned (reftable index: 0x1)" {
		t.Fatalf("write: %v (%+v); want the first CorruptionError with QEMU's words", err, ce)
	}
	if Errno(err).Error() != "input/output error" {
		t.Errorf("errno %v, want EIO", Errno(err))
	}
	_, err = img.WriteAt([]byte{1}, 0)
	var c2 *CorruptionError
	if !errors.Is(err, ErrCorrupt) || errors.As(err, &c2) && c2.First {
		t.Errorf("write after the corruption: %v; want ErrCorrupt, not a first event", err)
	}
	img.Close()
	after := f.Bytes()
	if got := binary.BigEndian.Uint64(after[HdrIncompatibleFeatures:]); got != IncompatCorrupt {
		t.Errorf("incompatible features 0x%x, want the corrupt bit", got)
	}
	// Every metadata cluster is as it was: header (but the corrupt
	// bit), L1 and refcount tables, refcount block 0, L2 tables. A
	// changed cluster is a free one (refcount 0 in block 0: where the
	// write put guest cluster 121 before it needed block 1 for 123), or
	// the data cluster of guest cluster 122, which the write covers
	// (a failed write leaves its range undefined).
	h, err := ParseHeader(before)
	if err != nil {
		t.Fatal(err)
	}
	cs := int(h.ClusterSize())
	rb0 := int(binary.BigEndian.Uint64(before[h.RefcountTableOffset:]))
	l2 := binary.BigEndian.Uint64(before[h.L1TableOffset:]) & L1OffsetMask
	data122 := int(binary.BigEndian.Uint64(before[l2+122*8:])&L2OffsetMask) / cs
	for c := 0; c < len(before)/cs; c++ {
		if c == data122 && c != 0 {
			continue
		}
		x, y := before[c*cs:(c+1)*cs], after[c*cs:(c+1)*cs]
		if c == 0 {
			x, y = bytes.Clone(x), bytes.Clone(y)
			clear(x[HdrIncompatibleFeatures : HdrIncompatibleFeatures+8])
			clear(y[HdrIncompatibleFeatures : HdrIncompatibleFeatures+8])
		}
		if bytes.Equal(x, y) {
			continue
		}
		if c >= 128 || binary.BigEndian.Uint64(before[rb0+8*c:]) != 0 {
			t.Errorf("cluster %d (refcount in block 0: %d) changed", c, binary.BigEndian.Uint64(before[rb0+8*c:]))
		}
	}
	if len(after) != len(before) {
		t.Errorf("file grew from %d to %d bytes", len(before), len(after))
	}
	// Read-only, the image reads.
	ro, err := OpenFile(imagetest.NewMemFile(bytes.Clone(b)), "t", Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 1024)
	if _, err := ro.ReadAt(p, 120<<10); err != nil || p[0] != 0xcd {
		t.Errorf("read: %x, %v", p[0], err)
	}
	ro.Close()
}

// TestUnalignedRefblockOfMetadataRefused: when a metadata cluster's
// refcount lies in the refcount block whose offset is unaligned, a
// writable open is refused as before, and nothing is written.
func TestUnalignedRefblockOfMetadataRefused(t *testing.T) {
	b := iotest305Image(t)
	rt := binary.BigEndian.Uint64(b[HdrRefcountTableOffset:])
	b[rt+6] = 0x06 // refcount block 0: 0x....00 -> unaligned
	if binary.BigEndian.Uint64(b[rt:])&0x3ff == 0 {
		t.Fatalf("refcount block 0 offset still aligned: 0x%x", binary.BigEndian.Uint64(b[rt:]))
	}
	f := imagetest.NewMemFile(bytes.Clone(b))
	if img, err := OpenFile(f, "t", Options{}); err == nil {
		img.Close()
		t.Fatal("opened")
	} else if !errors.Is(err, ErrCorrupt) {
		t.Errorf("error %v, want ErrCorrupt", err)
	}
	if !bytes.Equal(f.Bytes(), b) {
		t.Error("refused open changed the file")
	}
}
