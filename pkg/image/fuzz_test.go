package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// Fuzz targets. Each must be fast and must never panic; errors are fine.
// Seeds come from the reference images in testdata (read at test time) and
// from small images made in memory; regression inputs live in
// testdata/fuzz/<target>.

// smallGolden lists golden images small enough to seed whole-image targets.
var smallGolden = []string{"cluster4k"}

// headerGolden lists golden images whose header cluster seeds header targets.
var headerGolden = []string{"plain-v2", "plain-default", "plain-extl2", "plain-c512-rc1", "iotest", "conv-cap", "cluster4k", "small-last-zone"}

func FuzzParseHeader(f *testing.F) {
	for _, name := range headerGolden {
		f.Add(goldenPrefix(f, name, 1024))
	}
	f.Add(make([]byte, 72))
	// Snapshot table fields QEMU refuses: too many, unaligned, wrapping.
	for _, snap := range [][2]uint64{{MaxSnapshots + 1, 0}, {1, 0x30200}, {0, 0x1234}, {2, 0xffffffffffff0000}, {MaxSnapshots, 1<<63 - 0x10000}} {
		b := goldenPrefix(f, "plain-default", 1024)
		binary.BigEndian.PutUint32(b[HdrNbSnapshots:], uint32(snap[0]))
		binary.BigEndian.PutUint64(b[HdrSnapshotsOffset:], snap[1])
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if hc, cerr := ParseHeaderForCheck(b); (cerr == nil) != (err == nil || errors.As(err, new(*SnapshotTableError))) || (err == nil && !reflect.DeepEqual(h, hc)) {
			t.Fatalf("ParseHeaderForCheck: %v; ParseHeader: %v", cerr, err)
		}
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FormatError", err)
			}
			if h != nil {
				t.Fatalf("header returned with an error")
			}
			return
		}
		if n := uint64(h.NbSnapshots); n > MaxSnapshots || h.SnapshotsOffset%h.ClusterSize() != 0 || h.SnapshotsOffset+n*40 > 1<<63-1 {
			t.Fatalf("accepted a snapshot table QEMU refuses: %d at 0x%x", n, h.SnapshotsOffset)
		}
		if h.ClusterBits < MinClusterBits || h.ClusterBits > MaxClusterBits || h.RefcountOrder > 6 {
			t.Fatalf("accepted out-of-range fields: %+v", h)
		}
		n := int(h.HeaderLength)
		if n > len(b) || (h.Version == 3 && n < HeaderV3MinSize) || (h.Version == 2 && n != HeaderV2Size) {
			t.Fatalf("header length %d for version %d in %d bytes", n, h.Version, len(b))
		}
		// Marshal writes back what was read, except the padding 105..111
		// when unknown fields follow (QEMU rewrites it as zeroes).
		m := h.Marshal()
		want := append([]byte(nil), b[:n]...)
		if n > HeaderV3Size {
			clear(want[HeaderV3MinSize+1 : HeaderV3Size])
		}
		if !bytes.Equal(m, want) {
			t.Fatalf("Marshal does not give back the header:\n got %x\nwant %x", m, want)
		}
		h2, err := ParseHeader(m)
		if err != nil {
			t.Fatalf("reparse of Marshal: %v", err)
		}
		if !reflect.DeepEqual(h, h2) {
			t.Fatalf("reparse differs:\n%+v\n%+v", h, h2)
		}
	})
}

func FuzzParseExtensions(f *testing.F) {
	for _, name := range headerGolden {
		b := goldenPrefix(f, name, 1024)
		f.Add(b, 112, 1024)
		f.Add(b, 72, 600)
	}
	f.Add(ext(0x12345678, 3, []byte{1, 2, 3}, []byte{9, 9, 9, 9, 9}), 0, 16)
	// QEMU's "Header extension too large": an extension header crossing
	// the end, an end marker whose length crosses it.
	f.Add(ext(0x12345678, 0, nil, []byte{1, 2, 3, 4}), 0, 12)
	f.Add(ext(0, 9, nil, make([]byte, 8)), 0, 16)
	f.Fuzz(func(t *testing.T, b []byte, start, end int) {
		// Callers pass a start inside the buffer (the header length).
		if start < 0 {
			start = -(start + 1)
		}
		start %= len(b) + 1
		exts, err := ParseExtensions(b, start, end)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Off < int64(start) || fe.Off >= int64(len(b)) {
				t.Fatalf("error %v does not name an offset in the area", err)
			}
			return
		}
		// Re-encoding and parsing again gives the same extensions.
		var area []byte
		for _, e := range exts {
			if e.Magic == ExtEnd {
				t.Fatalf("end marker returned as an extension")
			}
			area = AppendExtension(area, e)
		}
		if len(area) > len(b)+7*len(exts) {
			t.Fatalf("%d bytes of extensions from a %d byte buffer", len(area), len(b))
		}
		area = AppendExtension(area, Extension{})
		again, err := ParseExtensions(area, 0, len(area))
		if err != nil || len(again) != len(exts) {
			t.Fatalf("reparse: %d extensions, %v; want %d", len(again), err, len(exts))
		}
		for i := range exts {
			if again[i].Magic != exts[i].Magic || !bytes.Equal(again[i].Data, exts[i].Data) {
				t.Fatalf("extension %d changed on reparse", i)
			}
		}
	})
}

func FuzzFeatureTable(f *testing.F) {
	b := goldenPrefix(f, "plain-default", 1024)
	f.Add(b[0x78 : 0x78+432])
	f.Add(MarshalFeatureTable([]Feature{{0, 63, "x"}}))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		fs, err := ParseFeatureTable(data)
		if err != nil {
			if len(data)%FeatureEntrySize == 0 {
				t.Fatalf("error on a table of %d bytes: %v", len(data), err)
			}
			return
		}
		if len(fs) != len(data)/FeatureEntrySize {
			t.Fatalf("%d entries from %d bytes", len(fs), len(data))
		}
		m := MarshalFeatureTable(fs)
		if len(m) != len(data) {
			t.Fatalf("marshal: %d bytes, want %d", len(m), len(data))
		}
		// Type, bit and the name up to its first NUL are kept; the bytes
		// after the NUL are zero in the re-encoding.
		for i, ft := range fs {
			e, d := m[i*48:(i+1)*48], data[i*48:(i+1)*48]
			if e[0] != d[0] || e[1] != d[1] || !bytes.Equal(e[2:2+len(ft.Name)], d[2:2+len(ft.Name)]) {
				t.Fatalf("entry %d changed", i)
			}
			if bytes.IndexByte([]byte(ft.Name), 0) >= 0 || len(ft.Name) > 46 {
				t.Fatalf("entry %d name %q", i, ft.Name)
			}
			if !bytes.Equal(e[2+len(ft.Name):], make([]byte, 46-len(ft.Name))) {
				t.Fatalf("entry %d not zero padded", i)
			}
		}
		fs2, err := ParseFeatureTable(m)
		if err != nil || !reflect.DeepEqual(fs, fs2) {
			t.Fatalf("reparse: %v %v", fs2, err)
		}
	})
}

func FuzzL2Entry(f *testing.F) {
	f.Add(uint64(0x50000)|OflagCopied, uint64(0), uint8(16), uint64(0), uint8(0))
	f.Add(OflagZero, uint64(0), uint8(9), uint64(100), uint8(0))
	f.Add(uint64(0x90000)|OflagCopied, uint64(0x0000003000000f), uint8(16), uint64(2048*3+5), uint8(1))
	f.Add(compressedEntry(16, 0x100200, 5), uint64(0), uint8(16), uint64(0), uint8(0))
	f.Add(compressedEntry(9, 0x3ff, 1), uint64(0), uint8(9), uint64(511), uint8(2))
	f.Add(compressedEntry(21, 1<<49-1, 8191), uint64(0), uint8(21), uint64(1), uint8(0))
	f.Add(^uint64(0), ^uint64(0), uint8(14), ^uint64(0), uint8(3))
	f.Fuzz(func(t *testing.T, e, bm uint64, cbIn uint8, inC uint64, flags uint8) {
		cb := MinClusterBits + uint32(cbIn)%(MaxClusterBits-MinClusterBits+1)
		extL2 := flags&1 != 0 && cb >= 14 // QEMU requires 16K clusters for extended L2
		version := uint32(3)
		if flags&2 != 0 && !extL2 {
			version = 2
		}
		img := entryImage(cb, version, extL2)
		inC %= img.cs
		m, host, n := img.classify(L2Entry{e, bm}, inC)
		if m < mapUnallocated || m > mapCompressed {
			t.Fatalf("mapping %d", m)
		}
		if n == 0 || inC+n > img.cs {
			t.Fatalf("run of %d bytes at %d in a cluster of %d", n, inC, img.cs)
		}
		if !extL2 && n != img.cs-inC {
			t.Fatalf("standard entry: run %d, want %d", n, img.cs-inC)
		}
		if extL2 && m != mapCompressed && (inC+n)%img.subSize != 0 && inC+n != img.cs {
			t.Fatalf("run ends at %d, inside a subcluster", inC+n)
		}
		switch {
		case e&OflagCompressed != 0:
			if m != mapCompressed {
				t.Fatalf("compressed entry mapped as %s", mapName(m))
			}
		case m == mapData:
			if host != e&L2OffsetMask+inC {
				t.Fatalf("host %#x for entry %#x at %d", host, e, inC)
			}
		}
		off, length := L2Entry{Desc: e}.CompressedRange(img.cb)
		x := 62 - (cb - 8)
		if off >= 1<<x || off != e&(1<<x-1) {
			t.Fatalf("compressed offset %#x does not fit %d bits", off, x)
		}
		if length == 0 || length > 2*img.cs || (off+length)%512 != 0 {
			t.Fatalf("compressed range [%#x, +%d)", off, length)
		}
		if want := (e>>x&(1<<(cb-8)-1)+1)*512 - off%512; length != want {
			t.Fatalf("compressed length %d, want %d", length, want)
		}
	})
}

func FuzzRefcountBlock(f *testing.F) {
	f.Add(goldenPrefix(f, "plain-c512-rc1", 0x600)[0x400:], uint8(0), uint64(130), uint64(1))
	f.Add(goldenPrefix(f, "plain-default", 0x20000+64)[0x20000:], uint8(4), uint64(3), uint64(0xffff))
	f.Add(bytes.Repeat([]byte{0xa5}, 64), uint8(6), uint64(7), uint64(1<<63))
	f.Add([]byte{0x0f}, uint8(2), uint64(1), uint64(9))
	f.Fuzz(func(t *testing.T, block []byte, orderIn uint8, idx, v uint64) {
		order := uint32(orderIn % 7)
		w := uint64(1) << order
		entries := uint64(len(block)) * 8 / w
		if entries == 0 {
			return
		}
		idx %= entries
		model := refModel{w: w}
		for _, i := range []uint64{idx, (idx + 1) % entries, entries - 1} {
			if got, want := GetRefcount(block, i, order), model.get(block, i); got != want {
				t.Fatalf("order %d: Get(%d) = %#x, model %#x", order, i, got, want)
			}
		}
		v &= MaxRefcount(order)
		want := append([]byte(nil), block...)
		model.set(want, idx, v)
		SetRefcount(block, idx, order, v)
		if !bytes.Equal(block, want) {
			t.Fatalf("order %d: Set(%d, %#x) changed other bits", order, idx, v)
		}
		if got := GetRefcount(block, idx, order); got != v {
			t.Fatalf("order %d: Get(%d) = %#x after Set(%#x)", order, idx, got, v)
		}
	})
}

// fuzzImages returns small images made in memory: data written through
// the engine in several layouts, and hand-made compressed clusters.
func fuzzImages(tb testing.TB) [][]byte {
	tb.Helper()
	var out [][]byte
	layouts := []CreateOptions{
		{Size: 64 << 10, ClusterBits: 9, Version: 3, RefcountOrder: 4},
		{Size: 64 << 10, ClusterBits: 9, Version: 2, RefcountOrder: 4},
		{Size: 64 << 10, ClusterBits: 9, Version: 3, RefcountOrder: 0},
		{Size: 64 << 10, ClusterBits: 10, Version: 3, RefcountOrder: 6},
		{Size: 128 << 10, ClusterBits: 14, Version: 3, RefcountOrder: 4, ExtendedL2: true},
	}
	for _, o := range layouts {
		f := imagetest.NewMemFile(nil)
		if err := Format(f, o); err != nil {
			tb.Fatal(err)
		}
		img, err := OpenFile(f, "mem", Options{NoBacking: true})
		if err != nil {
			tb.Fatal(err)
		}
		buf := bytes.Repeat([]byte("zqimg fuzz seed "), 256)
		for _, w := range []struct{ off, n int64 }{{0, 700}, {4096, 4096}, {int64(o.Size) - 1536, 1536}, {20000, 300}} {
			if _, err := img.WriteAt(buf[:w.n], w.off); err != nil {
				tb.Fatal(err)
			}
		}
		if err := img.WriteZeroes(8192, 2048); err != nil {
			tb.Fatal(err)
		}
		if err := img.Close(); err != nil {
			tb.Fatal(err)
		}
		out = append(out, f.Bytes())
	}
	for _, ct := range []uint8{CompressionZlib, CompressionZstd} {
		f, _ := newCompressedImage(tb, ct)
		out = append(out, f.Bytes())
	}
	return out
}

// exerciseImage calls the image's methods over a few ranges; only panics
// and hangs are failures.
func exerciseImage(img *Image, write bool) {
	size := img.Size()
	_ = img.Header()
	_ = img.Extensions()
	_, _ = img.Extension(ExtZoned)
	_ = img.Features()
	_, _ = img.BackingFile()
	cs := img.ClusterSize()
	buf := make([]byte, 8192)
	for _, off := range []int64{0, size / 2, size - 4096, size - 1, cs - 100} {
		n := int64(len(buf))
		if off < 0 {
			off = 0
		}
		if off+n > size {
			n = size - off
		}
		if n < 0 {
			continue
		}
		_, _ = img.ReadAt(buf[:n], off)
	}
	_, _ = img.ReadAt(buf[:1], size) // out of range
	for _, off := range []uint64{0, uint64(cs), 2 * uint64(cs), uint64(cs) << 20, 1 << 62} {
		_, _ = img.Refcount(off)
		_ = img.MetadataOverlap(off, uint64(cs))
	}
	if write {
		for i := range buf {
			buf[i] = byte(i)
		}
		for _, w := range []struct{ off, n int64 }{{0, 512}, {size / 2, 3000}, {cs - 100, 200}, {size - 700, 700}} {
			if w.off < 0 || w.off+w.n > size {
				continue
			}
			_, _ = img.WriteAt(buf[:w.n], w.off)
		}
		_ = img.WriteZeroes(0, min(size, 3*cs))
		_ = img.Discard(size/4, min(size-size/4, 2*cs+512))
		_ = img.Flush()
		_, _ = img.ReadAt(buf[:min(int64(len(buf)), size)], 0)
	}
	_ = img.Close()
	_, _ = img.ReadAt(buf[:1], 0) // closed
}

// newBoundedFile returns an in-memory copy of data that refuses to grow by
// more than 8 MiB (corrupt entries may point writes anywhere below 2^56).
func newBoundedFile(data []byte) *imagetest.MemFile {
	m := imagetest.NewMemFile(data)
	m.SetLimit(int64(len(data)) + 8<<20)
	return m
}

func FuzzOpenImage(f *testing.F) {
	for _, name := range smallGolden {
		f.Add(golden(f, name))
	}
	for _, b := range fuzzImages(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := OpenFile(imagetest.NewMemFile(data), "fuzz", Options{ReadOnly: true, NoBacking: true, Features: IncompatZoned})
		if err != nil {
			_ = Errno(err)
			return
		}
		exerciseImage(img, false)
		// The same bytes opened for writing: writes may fail, but must
		// neither panic nor hang.
		img, err = OpenFile(newBoundedFile(data), "fuzz", Options{NoBacking: true, Features: IncompatZoned})
		if err != nil {
			return
		}
		exerciseImage(img, true)
	})
}
