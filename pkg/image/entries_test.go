package image

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"math/rand"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// entryImage returns an Image with just the fields classify and
// compressedRange look at.
func entryImage(cb uint32, version uint32, extL2 bool) *Image {
	img := &Image{cb: cb, cs: 1 << cb, extL2: extL2, subSize: 1 << cb, hdr: Header{Version: version, ClusterBits: cb}}
	if extL2 {
		img.subSize = img.cs / 32
		img.hdr.IncompatibleFeatures = IncompatExtL2
	}
	return img
}

func mapName(m mapping) string {
	if m < 0 || m > mapCompressed {
		return "invalid"
	}
	return [...]string{"unallocated", "zero", "data", "compressed"}[m]
}

func TestClassifyStandard(t *testing.T) {
	const cs = 65536
	const host = 0x5_0000
	tests := []struct {
		name     string
		version  uint32
		e        uint64
		inC      uint64
		want     mapping
		wantHost uint64 // for data
	}{
		{"unallocated", 3, 0, 0, mapUnallocated, 0},
		{"unallocated, copied bit alone", 3, OflagCopied, 100, mapUnallocated, 0},
		{"zero flag", 3, OflagZero, 0, mapZero, 0},
		{"zero flag on a preallocated cluster", 3, host | OflagCopied | OflagZero, 512, mapZero, 0},
		{"normal", 3, host | OflagCopied, 0, mapData, host},
		{"normal, shared (no copied bit)", 3, host, 4097, mapData, host + 4097},
		{"normal, last byte", 3, host | OflagCopied, cs - 1, mapData, host + cs - 1},
		// Bits 56-61 and 1-8 are reserved: not part of the offset.
		{"reserved bits ignored in the offset", 3, host | 0x3f<<56 | 0x1fe | OflagCopied, 7, mapData, host + 7},
		{"offset bit 55", 3, 1<<55 | OflagCopied, 0, mapData, 1 << 55},
		// Version 2 has no zero flag.
		{"v2: zero flag ignored", 2, host | OflagCopied | OflagZero, 3, mapData, host + 3},
		{"v2: lone zero flag is unallocated", 2, OflagZero, 0, mapUnallocated, 0},
		{"compressed", 3, OflagCompressed | 0x123456, 100, mapCompressed, 0},
		{"compressed, zero bit set", 3, OflagCompressed | 0x1, 0, mapCompressed, 0},
		{"v2 compressed", 2, OflagCompressed | 1<<61 | 0x200, 9, mapCompressed, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := entryImage(16, tc.version, false)
			m, h, n := img.classify(L2Entry{tc.e, 0xffffffffffffffff}, tc.inC)
			if m != tc.want {
				t.Errorf("mapping %s, want %s", mapName(m), mapName(tc.want))
			}
			// A standard cluster maps alike up to its end.
			if n != cs-tc.inC {
				t.Errorf("run %d, want %d", n, cs-tc.inC)
			}
			if m == mapData && h != tc.wantHost {
				t.Errorf("host offset %#x, want %#x", h, tc.wantHost)
			}
		})
	}
}

func TestClassifyExtendedL2(t *testing.T) {
	const cs = 65536
	const sub = cs / 32 // 2048
	const host = 0x9_0000
	alloc := func(s ...int) uint64 {
		var bm uint64
		for _, i := range s {
			bm |= 1 << i
		}
		return bm
	}
	zero := func(s ...int) uint64 {
		var bm uint64
		for _, i := range s {
			bm |= 1 << (32 + i)
		}
		return bm
	}
	tests := []struct {
		name string
		e    uint64
		bm   uint64
		inC  uint64
		want mapping
		run  uint64
	}{
		{"all unallocated", 0, 0, 0, mapUnallocated, cs},
		{"all unallocated, mid cluster", host | OflagCopied, 0, 3*sub + 5, mapUnallocated, cs - 3*sub - 5},
		{"all allocated", host | OflagCopied, 0xffffffff, 0, mapData, cs},
		{"all zero", 0, 0xffffffff00000000, sub, mapZero, cs - sub},
		// Subclusters 0-3 allocated, 4-5 zero, the rest unallocated.
		{"run of allocated", host | OflagCopied, alloc(0, 1, 2, 3) | zero(4, 5), 0, mapData, 4 * sub},
		{"inside the allocated run", host | OflagCopied, alloc(0, 1, 2, 3) | zero(4, 5), sub + 7, mapData, 3*sub - 7},
		{"run of zero", host | OflagCopied, alloc(0, 1, 2, 3) | zero(4, 5), 4 * sub, mapZero, 2 * sub},
		{"unallocated tail", host | OflagCopied, alloc(0, 1, 2, 3) | zero(4, 5), 6 * sub, mapUnallocated, 26 * sub},
		{"last subcluster", host | OflagCopied, alloc(31), 31*sub + 1, mapData, sub - 1},
		{"single zero subcluster", 0, zero(7), 7 * sub, mapZero, sub},
		{"alternating", host, alloc(0, 2, 4), 2 * sub, mapData, sub},
		{"alternating gap", host, alloc(0, 2, 4), 3 * sub, mapUnallocated, sub},
		// The zero flag of standard entries has no meaning with extended L2.
		{"zero flag ignored", host | OflagZero, alloc(0), 0, mapData, sub},
		{"compressed ignores the bitmap", OflagCompressed | 0x1000, alloc(0) | zero(1), 0, mapCompressed, cs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := entryImage(16, 3, true)
			m, h, n := img.classify(L2Entry{tc.e, tc.bm}, tc.inC)
			if m != tc.want || n != tc.run {
				t.Errorf("got %s run %d, want %s run %d", mapName(m), n, mapName(tc.want), tc.run)
			}
			if m == mapData && h != (tc.e&L2OffsetMask)+tc.inC {
				t.Errorf("host %#x, want %#x", h, (tc.e&L2OffsetMask)+tc.inC)
			}
		})
	}
}

// TestClassifyExtendedL2Random checks classify against a per-byte reading
// of the bitmap: a run covers bytes of one state only and stops where the
// state changes or the cluster ends.
func TestClassifyExtendedL2Random(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for _, cb := range []uint32{14, 16, 21} {
		img := entryImage(cb, 3, true)
		cs := img.cs
		sub := cs / 32
		state := func(bm, off uint64) mapping {
			s := off / sub
			switch {
			case bm>>s&1 == 1:
				return mapData
			case bm>>(32+s)&1 == 1:
				return mapZero
			}
			return mapUnallocated
		}
		for k := 0; k < 500; k++ {
			// Valid bitmaps never set both bits of a subcluster.
			a := uint64(rng.Uint32())
			z := uint64(rng.Uint32()) &^ a
			if k%3 == 0 { // longer runs
				a = uint64(rng.Uint32() & rng.Uint32() & rng.Uint32())
				z = uint64(rng.Uint32()&rng.Uint32()) &^ a
			}
			bm := a | z<<32
			inC := uint64(rng.Int63n(int64(cs)))
			m, _, n := img.classify(L2Entry{0x20000 | OflagCopied, bm}, inC)
			if m != state(bm, inC) {
				t.Fatalf("cb %d bm %#x inC %d: %s, want %s", cb, bm, inC, mapName(m), mapName(state(bm, inC)))
			}
			if n == 0 || inC+n > cs {
				t.Fatalf("cb %d bm %#x inC %d: run %d", cb, bm, inC, n)
			}
			// Check the run at subcluster granularity (plus its ends).
			for off := inC; off < inC+n; off = (off/sub + 1) * sub {
				if state(bm, off) != m {
					t.Fatalf("cb %d bm %#x inC %d: byte %d in the run is %s", cb, bm, inC, off, mapName(state(bm, off)))
				}
			}
			if end := inC + n; end < cs && state(bm, end) == m {
				t.Fatalf("cb %d bm %#x inC %d: run stops at %d although the state continues", cb, bm, inC, end)
			}
		}
	}
}

// compressedEntry builds a compressed cluster descriptor from the
// specification: x = 62 - (cluster_bits - 8); bits 0..x-1 hold the host
// offset, bits x..61 the number of additional 512-byte sectors, bit 62 is
// the compressed flag.
func compressedEntry(cb uint32, off, extraSectors uint64) uint64 {
	x := 62 - (cb - 8)
	return OflagCompressed | extraSectors<<x | off
}

func TestCompressedRange(t *testing.T) {
	for cb := uint32(9); cb <= 21; cb++ {
		img := entryImage(cb, 3, false)
		x := 62 - (cb - 8)
		maxOff := uint64(1)<<x - 1
		maxExtra := uint64(1)<<(cb-8) - 1 // the field is 62-x = cb-8 bits wide
		tests := []struct {
			off, extra uint64
		}{
			{0, 0},
			{512, 0},
			{0x12345, 3},
			{0x200000 + 0x1ff, 1},
			{0x7_0000_0001, maxExtra},
			{maxOff, 0},
			{maxOff, maxExtra},
			{maxOff &^ 511, maxExtra / 2},
		}
		for _, tc := range tests {
			tc.extra = min(tc.extra, maxExtra) // 512-byte clusters have a 1-bit field
			e := compressedEntry(cb, tc.off, tc.extra)
			// The copied bit (63) is never part of a compressed descriptor,
			// but must not leak into the fields if set.
			for _, flag := range []uint64{0, OflagCopied} {
				off, length := L2Entry{Desc: e | flag}.CompressedRange(img.cb)
				wantLen := (tc.extra+1)*512 - tc.off%512
				if off != tc.off || length != wantLen {
					t.Errorf("cb %d off %#x extra %d flag %#x: got (%#x, %d), want (%#x, %d)",
						cb, tc.off, tc.extra, flag, off, length, tc.off, wantLen)
				}
				// The data ends on a sector boundary.
				if (off+length)%512 != 0 {
					t.Errorf("cb %d: range [%#x, +%d) does not end on a sector", cb, off, length)
				}
			}
		}
		// At most 2^(cb-8) sectors: twice the cluster size.
		_, length := L2Entry{Desc: compressedEntry(cb, 0, maxExtra)}.CompressedRange(img.cb)
		if length != 2*img.cs {
			t.Errorf("cb %d: largest compressed range %d, want %d", cb, length, 2*img.cs)
		}
	}
	// Hand-built descriptors, bit by bit, for 64K clusters: x = 54.
	img := entryImage(16, 3, false)
	// offset 0x10_0200, 5 additional sectors: 5<<54 = 0x0140000000000000.
	if off, n := (L2Entry{Desc: 0x4000000000000000 | 0x0140000000000000 | 0x100200}).CompressedRange(img.cb); off != 0x100200 || n != 6*512 {
		t.Errorf("64K: got (%#x, %d)", off, n)
	}
	// 512-byte clusters: x = 61, one size bit (61).
	img = entryImage(9, 3, false)
	if off, n := (L2Entry{Desc: 0x4000000000000000 | 0x2000000000000000 | 0x3ff}).CompressedRange(img.cb); off != 0x3ff || n != 2*512-0x1ff {
		t.Errorf("512: got (%#x, %d)", off, n)
	}
	// 2M clusters: x = 49, 13 size bits (49..61).
	img = entryImage(21, 3, false)
	if off, n := (L2Entry{Desc: 0x4000000000000000 | 0x3ffe000000000000 | 0x1_ffff_ffff_ffff}).CompressedRange(img.cb); off != 0x1_ffff_ffff_ffff || n != 8192*512-0x1ff {
		t.Errorf("2M: got (%#x, %d)", off, n)
	}
}

// newCompressedImage makes a 1 MiB image with 4K clusters whose first guest
// cluster is stored compressed at an unaligned host offset, and returns it
// with the plain data.
func newCompressedImage(t testing.TB, ctype uint8) (*imagetest.MemFile, []byte) {
	t.Helper()
	const cb = 12
	const cs = 1 << cb
	f := imagetest.NewMemFile(nil)
	if err := Format(f, CreateOptions{Size: 1 << 20, ClusterBits: cb, Version: 3, RefcountOrder: 4, CompressionType: ctype}); err != nil {
		t.Fatal(err)
	}
	b := f.Bytes()
	h, err := ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	plain := make([]byte, cs)
	for i := range plain {
		plain[i] = byte(i * 7 / 13)
	}
	var comp bytes.Buffer
	switch ctype {
	case CompressionZlib:
		w, _ := flate.NewWriter(&comp, flate.BestCompression)
		w.Write(plain)
		w.Close()
	case CompressionZstd:
		w, _ := zstd.NewWriter(&comp)
		w.Write(plain)
		w.Close()
	}
	l2 := uint64(len(b)+cs-1) / cs * cs
	data := l2 + cs + 0x1a0 // not sector aligned
	extra := (data+uint64(comp.Len())-1)/512 - data/512
	img := make([]byte, data+uint64(comp.Len())+300)
	copy(img, b)
	binary.BigEndian.PutUint64(img[h.L1TableOffset:], l2|OflagCopied)
	binary.BigEndian.PutUint64(img[l2:], compressedEntry(cb, data, extra))
	copy(img[data:], comp.Bytes())
	// Garbage after the compressed data: must not be needed.
	for i := data + uint64(comp.Len()); i < uint64(len(img)); i++ {
		img[i] = 0xee
	}
	return imagetest.NewMemFile(img), plain
}

// TestReadCompressedCluster reads a compressed cluster through the
// descriptor built from the specification: it only decompresses if
// compressedRange finds the right bytes.
func TestReadCompressedCluster(t *testing.T) {
	for _, ctype := range []uint8{CompressionZlib, CompressionZstd} {
		f, plain := newCompressedImage(t, ctype)
		img, err := OpenFile(f, "mem", Options{ReadOnly: true, NoBacking: true})
		if err != nil {
			t.Fatalf("type %d: %v", ctype, err)
		}
		got := make([]byte, len(plain)+512)
		if _, err := img.ReadAt(got, 0); err != nil {
			t.Fatalf("type %d: ReadAt: %v", ctype, err)
		}
		if !bytes.Equal(got[:len(plain)], plain) || !bytes.Equal(got[len(plain):], make([]byte, 512)) {
			t.Errorf("type %d: compressed cluster reads wrong data", ctype)
		}
		// A read from inside the cluster.
		part := make([]byte, 100)
		if _, err := img.ReadAt(part, 1000); err != nil || !bytes.Equal(part, plain[1000:1100]) {
			t.Errorf("type %d: partial read: %v", ctype, err)
		}
		img.Close()
	}
}

// TestReadCompressedTooShort: a descriptor one sector short of the data
// fails with a corruption error instead of returning garbage.
func TestReadCompressedTooShort(t *testing.T) {
	f, _ := newCompressedImage(t, CompressionZlib)
	b := f.Bytes()
	h, _ := ParseHeader(b)
	l2 := binary.BigEndian.Uint64(b[h.L1TableOffset:]) & L1OffsetMask
	e := binary.BigEndian.Uint64(b[l2:])
	x := 62 - (h.ClusterBits - 8)
	extra := e >> x & (1<<(h.ClusterBits-8) - 1)
	if extra == 0 {
		t.Skip("compressed data fits one sector")
	}
	binary.BigEndian.PutUint64(b[l2:], compressedEntry(h.ClusterBits, e&(1<<x-1), extra-1))
	img, err := OpenFile(imagetest.NewMemFile(b), "mem", Options{ReadOnly: true, NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	_, err = img.ReadAt(make([]byte, 512), 0)
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("read of a truncated compressed cluster: %v, want ErrCorrupt", err)
	}
}
