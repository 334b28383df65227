package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// overlapBase returns a 64 MiB image (64 KiB clusters) with data in guest
// clusters 0 to 2, and with a snapshot when snap is set, flushed.
func overlapBase(t *testing.T, extL2, snap bool) []byte {
	return overlapBaseSize(t, extL2, snap, 64<<20)
}

func overlapBaseSize(t *testing.T, extL2, snap bool, size uint64) []byte {
	t.Helper()
	m := imagetest.NewMemFile(nil)
	if err := Format(m, CreateOptions{Size: size, ClusterBits: 16, Version: 3, RefcountOrder: 4, ExtendedL2: extL2}); err != nil {
		t.Fatal(err)
	}
	img, err := OpenFile(m, "base", Options{NoLock: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{0x61}, 3<<16), 0); err != nil {
		t.Fatal(err)
	}
	if snap {
		if _, err := img.CreateSnapshot(SnapshotCreateOptions{Name: "s1"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), m.Bytes()...)
}

// overlapTarget returns the host offset of the metadata named kind (QEMU's
// name) in the image b.
func overlapTarget(t *testing.T, b []byte, kind string) uint64 {
	t.Helper()
	h, err := ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	l1e0 := binary.BigEndian.Uint64(b[h.L1TableOffset:]) & L1OffsetMask
	switch kind {
	case "qcow2_header":
		return 0x200 // only a compressed entry can point into cluster 0
	case "active L1 table":
		return h.L1TableOffset
	case "active L2 table":
		return l1e0
	case "refcount table":
		return h.RefcountTableOffset
	case "refcount block":
		return binary.BigEndian.Uint64(b[h.RefcountTableOffset:]) & RefTableOffMask
	case "snapshot table":
		return h.SnapshotsOffset
	case "inactive L1 table":
		s, err := ParseSnapshotTable(b[h.SnapshotsOffset:], h.NbSnapshots, h.SnapshotsOffset, 1<<16)
		if err != nil {
			t.Fatal(err)
		}
		return s[0].L1Offset
	}
	t.Fatalf("unknown kind %q", kind)
	return 0
}

// setL2 sets the L2 entry of guest cluster gc (in the first L2 table).
func setL2(b []byte, extL2 bool, gc uint64, e L2Entry) {
	h, _ := ParseHeader(b)
	l2 := binary.BigEndian.Uint64(b[h.L1TableOffset:]) & L1OffsetMask
	e.Put(b[l2:l2+1<<16], gc, extL2)
}

// refusedOverlap checks that err is the refusal of an operation over the
// metadata kind, that the file changed in nothing but the corrupt bit,
// and that the image now only opens read-only.
func refusedOverlap(t *testing.T, err error, kind string, free bool, before []byte, m *imagetest.MemFile) {
	t.Helper()
	var oe *OverlapError
	if !errors.As(err, &oe) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want an OverlapError", err)
	}
	if oe.Metadata != kind || oe.Free != free || !oe.Marked {
		t.Errorf("refusal %+v, want metadata %q, free %v, marked", oe, kind, free)
	}
	want := fmt.Sprintf("(overlaps with %s)", kind)
	if !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Errorf("message %q does not say %q", err, want)
	}
	after := m.Bytes()
	h, _ := ParseHeader(after)
	if h.IncompatibleFeatures&IncompatCorrupt == 0 {
		t.Error("the corrupt bit is not set")
	}
	// Apart from the feature bits, not a byte changed.
	fixed := append([]byte(nil), after...)
	copy(fixed[HdrIncompatibleFeatures:HdrIncompatibleFeatures+8], before[HdrIncompatibleFeatures:])
	if !bytes.Equal(fixed, before) {
		i := 0
		for i < min(len(fixed), len(before)) && fixed[i] == before[i] {
			i++
		}
		t.Errorf("the file changed (lengths %d, %d; first difference at 0x%x)", len(before), len(after), i)
	}
	if _, err := OpenFile(imagetest.NewMemFile(after), "again", Options{NoLock: true}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("read/write open of the marked image: %v, want ErrCorrupt", err)
	}
	ro, err := OpenFile(imagetest.NewMemFile(after), "again", Options{NoLock: true, ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open of the marked image: %v", err)
	}
	if _, err := ro.ReadAt(make([]byte, 512), 0); err != nil {
		t.Errorf("read of the marked image: %v", err)
	}
}

// An L2 entry that points into metadata is never written through: a
// write of guest data there, or one that would drop the entry's
// reference, is refused, nothing is written, and the image is marked
// corrupt. Every kind of metadata, every way an entry is written through.
func TestWriteThroughMetadataRefused(t *testing.T) {
	kinds := []string{"active L1 table", "active L2 table", "refcount table", "refcount block", "snapshot table", "inactive L1 table"}
	type way struct {
		name  string
		extL2 bool
		entry func(host uint64) L2Entry
		free  bool // the write drops the reference rather than writing in place
		op    func(img *Image) error
	}
	write := func(img *Image) error { _, err := img.WriteAt(bytes.Repeat([]byte{0x55}, 4096), 1<<16+512); return err }
	writeAll := func(img *Image) error { _, err := img.WriteAt(bytes.Repeat([]byte{0x55}, 1<<16), 1<<16); return err }
	ways := []way{
		{"in place", false, func(h uint64) L2Entry { return L2Entry{Desc: h | OflagCopied} }, false, write},
		{"in place, whole cluster", false, func(h uint64) L2Entry { return L2Entry{Desc: h | OflagCopied} }, false, writeAll},
		{"in place, extended L2", true, func(h uint64) L2Entry { return L2Entry{Desc: h | OflagCopied, Bitmap: 1} }, false, write},
		{"zero, allocated", false, func(h uint64) L2Entry { return L2Entry{Desc: h | OflagCopied | OflagZero} }, false, write},
		{"shared (copy on write)", false, func(h uint64) L2Entry { return L2Entry{Desc: h} }, true, writeAll},
		{"compressed", false, func(h uint64) L2Entry { return L2Entry{Desc: h | OflagCompressed} }, true, writeAll},
		{"discard", false, func(h uint64) L2Entry { return L2Entry{Desc: h | OflagCopied} }, true,
			func(img *Image) error { return img.Discard(1<<16, 1<<16) }},
	}
	for _, w := range ways {
		for _, kind := range append(kinds, "qcow2_header") {
			if kind == "qcow2_header" && w.name != "compressed" {
				continue // a cluster-aligned offset into cluster 0 is 0: unallocated
			}
			t.Run(w.name+"/"+kind, func(t *testing.T) {
				snap := kind == "snapshot table" || kind == "inactive L1 table"
				b := overlapBase(t, w.extL2, snap)
				setL2(b, w.extL2, 1, w.entry(overlapTarget(t, b, kind)))
				before := append([]byte(nil), b...)
				m := imagetest.NewMemFile(b)
				img, err := OpenFile(m, "bad", Options{NoLock: true})
				if err != nil {
					t.Fatal(err)
				}
				err = w.op(img)
				if cerr := img.Close(); cerr != nil {
					t.Errorf("close after the refusal: %v", cerr)
				}
				refusedOverlap(t, err, kind, w.free, before, m)
			})
		}
	}
}

// An L1 entry that points into metadata other than its own L2 table is
// not written through either: with OFLAG_COPIED the table would be
// changed in place, without it copied and its cluster freed.
func TestL2TableInMetadataRefused(t *testing.T) {
	for _, kind := range []string{"active L1 table", "refcount table", "refcount block", "active L2 table"} {
		for _, copied := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/copied=%v", kind, copied), func(t *testing.T) {
				b := overlapBaseSize(t, false, false, 1<<30)
				h, _ := ParseHeader(b)
				e := overlapTarget(t, b, kind)
				if copied {
					e |= OflagCopied
				}
				// L1 entry 1 (guest offset 512 MiB) points there.
				binary.BigEndian.PutUint64(b[h.L1TableOffset+8:], e)
				before := append([]byte(nil), b...)
				m := imagetest.NewMemFile(b)
				img, err := OpenFile(m, "bad", Options{NoLock: true})
				if err != nil {
					t.Fatal(err)
				}
				// Entry 8 of the "table" is 0 there: the write allocates
				// a cluster and changes the table.
				_, err = img.WriteAt(bytes.Repeat([]byte{0x55}, 4096), 512<<20+8<<16)
				img.Close()
				refusedOverlap(t, err, kind, !copied, before, m)
			})
		}
	}
}

// The refusals leave sound images alone: writes, rewrites, discards,
// compressed writes and snapshots on a clean image pass the check.
func TestOverlapCheckPassesSoundImage(t *testing.T) {
	for _, extL2 := range []bool{false, true} {
		b := overlapBase(t, extL2, true)
		m := imagetest.NewMemFile(b)
		img, err := OpenFile(m, "good", Options{NoLock: true})
		if err != nil {
			t.Fatal(err)
		}
		p := bytes.Repeat([]byte{0x42}, 3<<16)
		for _, off := range []int64{0, 512, 1 << 20, 40 << 20} {
			if _, err := img.WriteAt(p, off); err != nil {
				t.Fatalf("write at %d: %v", off, err)
			}
		}
		if err := img.Discard(1<<20, 1<<16); err != nil {
			t.Fatal(err)
		}
		if _, err := img.CreateSnapshot(SnapshotCreateOptions{Name: "s2"}); err != nil {
			t.Fatal(err)
		}
		if _, err := img.WriteAt(p, 0); err != nil {
			t.Fatal(err)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		if h, _ := ParseHeader(m.Bytes()); h.IncompatibleFeatures&IncompatCorrupt != 0 {
			t.Fatal("a sound image was marked corrupt")
		}
	}
}
