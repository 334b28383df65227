package image

import (
	"bytes"
	"math/bits"
	"slices"
	"testing"
)

// The masks of an entry split its 64 bits: every bit is exactly one of
// offset, reserved or a flag.
func TestEntryMasksPartition(t *testing.T) {
	for _, tc := range []struct {
		name  string
		masks []uint64
	}{
		{"L1", []uint64{L1OffsetMask, L1ReservedMask, OflagCopied}},
		{"L2 standard", []uint64{L2OffsetMask, L2ReservedMask, OflagCopied, OflagCompressed, OflagZero}},
	} {
		var all uint64
		n := 0
		for _, m := range tc.masks {
			all |= m
			n += bits.OnesCount64(m)
		}
		if all != ^uint64(0) || n != 64 {
			t.Errorf("%s: the masks cover %#x with %d bits, want every bit once", tc.name, all, n)
		}
	}
}

func TestL1Entry(t *testing.T) {
	e := L1Entry(OflagCopied | 1<<60 | 0x12340000 | 0x3)
	if e.Offset() != 0x12340000 || !e.Copied() || e.Reserved() != 1<<60|0x3 {
		t.Errorf("offset %#x copied %v reserved %#x", e.Offset(), e.Copied(), e.Reserved())
	}
	if e := L1Entry(0x50000); e.Copied() || e.Reserved() != 0 || e.Offset() != 0x50000 {
		t.Errorf("plain entry: %#x %v %#x", e.Offset(), e.Copied(), e.Reserved())
	}
}

func TestL2EntryType(t *testing.T) {
	const host = 0x70000
	for _, tc := range []struct {
		name     string
		e        L2Entry
		extended bool
		want     ClusterType
	}{
		{"empty", L2Entry{}, false, ClusterUnallocated},
		{"copied only", L2Entry{Desc: OflagCopied}, false, ClusterUnallocated},
		{"data", L2Entry{Desc: host | OflagCopied}, false, ClusterNormal},
		{"zero flag", L2Entry{Desc: OflagZero}, false, ClusterZeroPlain},
		{"preallocated zero", L2Entry{Desc: host | OflagZero}, false, ClusterZeroAlloc},
		{"compressed", L2Entry{Desc: OflagCompressed | 0x1234}, false, ClusterCompressed},
		{"compressed wins over the zero flag", L2Entry{Desc: OflagCompressed | OflagZero}, false, ClusterCompressed},
		{"extended: no zero flag", L2Entry{Desc: host | OflagZero, Bitmap: BitmapAllZero}, true, ClusterNormal},
		{"extended: bitmap alone", L2Entry{Bitmap: BitmapAllZero}, true, ClusterUnallocated},
		{"extended compressed", L2Entry{Desc: OflagCompressed | host}, true, ClusterCompressed},
	} {
		if got := tc.e.Type(tc.extended); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestL2EntryReserved(t *testing.T) {
	if r := (L2Entry{Desc: 0x70000 | 1<<57 | 0x2 | OflagZero | OflagCopied}).Reserved(); r != 1<<57|0x2 {
		t.Errorf("reserved %#x", r)
	}
	// A compressed descriptor uses those bits for its offset and size.
	if r := (L2Entry{Desc: OflagCompressed | 1<<57 | 0x2}).Reserved(); r != 0 {
		t.Errorf("compressed entry: reserved %#x", r)
	}
}

func TestL2EntryPutDecode(t *testing.T) {
	for _, extended := range []bool{false, true} {
		tab := make([]byte, 4096)
		n := L2EntrySize(extended)
		e := L2Entry{Desc: OflagCopied | 0x123450000}
		if extended {
			e.Bitmap = 0x0000ff00000000ff
		}
		b := e.Put(tab, 3, extended)
		if uint64(len(b)) != n || &b[0] != &tab[3*n] {
			t.Fatalf("extended %v: Put returned %d bytes at the wrong place", extended, len(b))
		}
		if got := DecodeL2Entry(tab, 3, extended); got != e {
			t.Errorf("extended %v: decoded %+v, want %+v", extended, got, e)
		}
		// Nothing else changed.
		if !bytes.Equal(tab[:3*n], make([]byte, 3*n)) || !bytes.Equal(tab[4*n:], make([]byte, len(tab)-int(4*n))) {
			t.Errorf("extended %v: Put wrote outside the entry", extended)
		}
	}
}

func TestL2EntrySubclusters(t *testing.T) {
	// Subcluster 0 allocated, 1 zero, 2 both (invalid: the data wins), 3
	// neither.
	e := L2Entry{Desc: 0x70000, Bitmap: 1<<0 | 1<<(32+1) | 1<<2 | 1<<(32+2)}
	want := []Subcluster{SubData, SubZero, SubData, SubUnallocated}
	for s, w := range want {
		if got := e.Subcluster(uint64(s)); got != w {
			t.Errorf("subcluster %d: %v, want %v", s, got, w)
		}
	}
	if c := e.BitmapConflicts(); c != 1<<2 {
		t.Errorf("conflicts %#x, want subcluster 2", c)
	}
	if !e.HasData() || (L2Entry{Bitmap: BitmapAllZero}).HasData() {
		t.Error("HasData")
	}
}

func TestFeatureNames(t *testing.T) {
	table := []Feature{{FeatureIncompatible, 5, "my zoned"}, {FeatureCompatible, 6, "not incompatible"}}
	got := FeatureNames(table, 1<<5|1<<6|1<<2|1<<40)
	want := []string{"my zoned", "external data file", "Unknown incompatible feature: 10000000040"}
	if !slices.Equal(got, want) {
		t.Errorf("names %q, want %q", got, want)
	}
	// The image's table is used first, the default names after.
	if got := FeatureNames(nil, 1<<4); !slices.Equal(got, []string{"extended L2 entries"}) {
		t.Errorf("default names: %q", got)
	}
	// The last feature name table is the image's, read as QEMU reads it:
	// padded with zeroes to whole entries.
	exts := []Extension{
		{Magic: ExtFeatureTable, Data: MarshalFeatureTable([]Feature{{FeatureIncompatible, 7, "first"}})},
		{Magic: ExtFeatureTable, Data: MarshalFeatureTable([]Feature{{FeatureIncompatible, 7, "second"}})},
		{Magic: ExtFeatureTable, Data: []byte{1, 2, 3}},
	}
	if ft := FeatureTable(exts); !slices.Equal(ft, []Feature{{1, 2, "\x03"}}) {
		t.Errorf("feature table %+v", ft)
	}
}

// TestFeatureTableAsQEMU: iotest 036 adds a feature name table of one
// entry shorter than 48 bytes ("\x00\x3fTest feature"), and tables whose
// entries are followed by an empty one; QEMU names the refused features
// from them.
func TestFeatureTableAsQEMU(t *testing.T) {
	short := append([]byte{0, 63}, "Test feature"...)
	ft := FeatureTable([]Extension{{Magic: ExtFeatureTable, Data: short}})
	if !slices.Equal(ft, []Feature{{FeatureIncompatible, 63, "Test feature"}}) {
		t.Fatalf("short table: %+v", ft)
	}
	if got := FeatureNames(ft, 0xe000000000000000); !slices.Equal(got, []string{"Test feature", "Unknown incompatible feature: 6000000000000000"}) {
		t.Errorf("names %q", got)
	}
	// An entry with an empty name ends the table.
	data := MarshalFeatureTable([]Feature{{FeatureIncompatible, 61, "test1"}, {FeatureIncompatible, 62, ""}, {FeatureIncompatible, 63, "after"}})
	if got := FeatureNames(FeatureTable([]Extension{{Magic: ExtFeatureTable, Data: data}}), 0xe000000000000000); !slices.Equal(got, []string{"test1", "Unknown incompatible feature: c000000000000000"}) {
		t.Errorf("names %q", got)
	}
	if FeatureTable(nil) != nil {
		t.Error("no table")
	}
}
