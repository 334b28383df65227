package check_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
	"github.com/zqimg/zqimg/pkg/zone"
)

// plainBase is a 64 MiB image with 64 KiB clusters and data in guest
// clusters 0-15 (pattern 1) and 160-161 (pattern 2). Layout (QEMU's):
// header 0, refcount table 1, refcount block 2, L1 3, L2 4, data 5-22.
func plainBase(t testing.TB) []byte {
	f := newImage(t, "", "64M")
	writeImage(t, f, write{0, 1 << 20, 1}, write{10 << 20, 128 << 10, 2})
	return f.Bytes()
}

// zonedBase is a 16 MiB zoned image, 1 MiB zones, 2 conventional, 64 KiB
// clusters: zone 0 holds 128 KiB (pattern 1), zone 2 256 KiB (pattern 2,
// wp 0x240000), zone 3 64 KiB (pattern 3, wp 0x310000). Layout: header 0,
// refcount table 1, block 2, write-pointer table 3, L1 4, L2 5, data 6-12.
func zonedBase(t testing.TB) []byte {
	f := newImage(t, "zone.mode=host-managed,zone.size=1M,zone.conventional_zones=2", "16M")
	writeImage(t, f, write{0, 128 << 10, 1}, write{2 << 20, 256 << 10, 2}, write{3 << 20, 64 << 10, 3})
	return f.Bytes()
}

// zonedCapBase has zones of 1 MiB with a capacity of 768 KiB.
func zonedCapBase(t testing.TB) []byte {
	f := newImage(t, "zone.mode=host-managed,zone.size=1M,zone.capacity=768k,zone.conventional_zones=1", "8M")
	writeImage(t, f, write{1 << 20, 128 << 10, 4})
	return f.Bytes()
}

type corpusCase struct {
	name   string
	base   func(testing.TB) []byte
	mutate func(t testing.TB, r *raw)
	// Either the image cannot be checked (an error like wantErr, see
	// sameError)...
	wantErr error
	// ...or a check reports every finding of want and exits with wantExit.
	want     []want
	wantExit int
	// repairs are reported by the repairing pass of -r all.
	repairs []want
	// still: -r all cannot repair these, which a check of the repaired
	// image still reports; when empty, the image must be clean after the
	// repair.
	still []want
	// verify checks the repaired image.
	verify func(t testing.TB, f image.File)
}

// sameError reports whether err is, or wraps, an error of want's type
// with want's identifying fields: the header field offset of an
// *image.FormatError, the names of an *image.UnsupportedFeatureError.
func sameError(err, want error) bool {
	switch w := want.(type) {
	case *image.FormatError:
		var fe *image.FormatError
		return errors.As(err, &fe) && fe.Off == w.Off
	case *image.UnsupportedFeatureError:
		var ue *image.UnsupportedFeatureError
		return errors.As(err, &ue) && slices.Equal(ue.Names, w.Names)
	}
	panic(fmt.Sprintf("sameError: no rule for %T", want))
}

// headerErr is the error of a header field (at byte offset off) that makes
// an image unusable.
func headerErr(off int64) error { return &image.FormatError{Off: off} }

func wantData(off int64, n int, p byte) func(testing.TB, image.File) {
	return func(t testing.TB, f image.File) {
		t.Helper()
		if got := readImage(t, f, off, n); !bytes.Equal(got, bytes.Repeat([]byte{p}, n)) {
			t.Errorf("guest bytes at 0x%x after the repair are not %#x (first bytes %x)", off, p, got[:8])
		}
	}
}

func all(vs ...func(testing.TB, image.File)) func(testing.TB, image.File) {
	return func(t testing.TB, f image.File) {
		for _, v := range vs {
			v(t, f)
		}
	}
}

func wantWP(zi, want uint64) func(testing.TB, image.File) {
	return func(t testing.TB, f image.File) {
		t.Helper()
		b := f.(*imagetest.MemFile).Bytes()
		r := rawOf(t, b)
		if got := r.wp(t, zi) &^ zone.ConvBit; got != want {
			t.Errorf("write pointer of zone %d is 0x%x after the repair, want 0x%x", zi, got, want)
		}
	}
}

// wantRawWP checks the write-pointer table entry of zone zi, with its
// conventional bit.
func wantRawWP(zi, want uint64) func(testing.TB, image.File) {
	return func(t testing.TB, f image.File) {
		t.Helper()
		if got := rawOf(t, f.(*imagetest.MemFile).Bytes()).wp(t, zi); got != want {
			t.Errorf("write-pointer table entry of zone %d is 0x%x after the repair, want 0x%x", zi, got, want)
		}
	}
}

// wantZoned checks the zoned extension of the repaired image.
func wantZoned(ok func(*zone.Header) bool) func(testing.TB, image.File) {
	return func(t testing.TB, f image.File) {
		t.Helper()
		if h := rawOf(t, f.(*imagetest.MemFile).Bytes()).zoned(t); !ok(h) {
			t.Errorf("zoned extension after the repair: %+v", h)
		}
	}
}

// Finding shorthands for the corpus.
func corrupt(p check.Problem) want { return is(p, check.KindCorruption) }
func leak(p check.Problem) want    { return is(p, check.KindLeak) }

var (
	rebuilt      = is(check.ProblemRebuild, check.KindInfo)
	zonedExtBad  = corrupt(check.ProblemZonedExtension)
	tableAt30000 = corrupt(check.ProblemZonedTable).fixed().at(0x30000) // zonedmeta_offset pointed to the table
)

var corpus = []corpusCase{
	// Headers that cannot be checked.
	{name: "bad-magic", base: plainBase, mutate: func(t testing.TB, r *raw) { r.b[0] = 'X' },
		wantErr: headerErr(image.HdrMagic)},
	{name: "bad-version", base: plainBase, mutate: func(t testing.TB, r *raw) { r.put32(image.HdrVersion, 4) },
		wantErr: headerErr(image.HdrVersion)},
	{name: "version-1", base: plainBase, mutate: func(t testing.TB, r *raw) { r.put32(image.HdrVersion, 1) },
		wantErr: headerErr(image.HdrVersion)},
	{name: "cluster-bits-8", base: plainBase, mutate: func(t testing.TB, r *raw) { r.put32(image.HdrClusterBits, 8) },
		wantErr: headerErr(image.HdrClusterBits)},
	{name: "cluster-bits-22", base: plainBase, mutate: func(t testing.TB, r *raw) { r.put32(image.HdrClusterBits, 22) },
		wantErr: headerErr(image.HdrClusterBits)},
	{name: "unknown-feature", base: plainBase, mutate: func(t testing.TB, r *raw) { r.put64(image.HdrIncompatibleFeatures, 1<<40) },
		wantErr: &image.UnsupportedFeatureError{Names: []string{"Unknown incompatible feature: 10000000000"}}},
	{name: "unknown-feature-named", base: plainBase, mutate: func(t testing.TB, r *raw) {
		r.put64(image.HdrIncompatibleFeatures, image.IncompatDataFile|1<<40)
	}, wantErr: &image.UnsupportedFeatureError{Names: []string{"external data file", "Unknown incompatible feature: 10000000000"}}},
	{name: "refcount-order-7", base: plainBase, mutate: func(t testing.TB, r *raw) { r.put32(image.HdrRefcountOrder, 7) },
		wantErr: headerErr(image.HdrRefcountOrder)},

	// L1 and L2 entries (plainBase: L1 at 0x30000, its L2 table at
	// 0x40000, guest cluster n in host cluster 5+n).
	{name: "l1-entry-past-eof", base: plainBase,
		mutate: func(t testing.TB, r *raw) { r.put64(r.l1Off(0), image.OflagCopied|1000<<16) },
		want: []want{
			corrupt(check.ProblemBeyondEOF).at(1000 << 16),
			corrupt(check.ProblemL1Copied).cluster(1000).guest(0),
			leak(check.ProblemRefcount).cluster(4),
		},
		wantExit: 2,
		repairs:  []want{corrupt(check.ProblemBeyondEOF).fixed().at(1000 << 16)},
		verify:   wantData(0, 4096, 0)},
	{name: "l1-entry-unaligned", base: plainBase,
		mutate:   func(t testing.TB, r *raw) { r.put64(r.l1Off(0), r.l1(0)+512) },
		want:     []want{corrupt(check.ProblemL1Unaligned).at(0x40200)},
		wantExit: 2,
		repairs:  []want{corrupt(check.ProblemL1Unaligned).fixed().at(0x40200)},
		verify:   all(wantData(0, 1<<20, 1), wantData(10<<20, 128<<10, 2))},
	{name: "l1-reserved-bits", base: plainBase,
		mutate:   func(t testing.TB, r *raw) { r.put64(r.l1Off(0), r.l1(0)|1<<60) },
		want:     []want{corrupt(check.ProblemL1Reserved).at(0x30000)},
		wantExit: 2,
		repairs:  []want{corrupt(check.ProblemL1Reserved).fixed().at(0x30000)},
		verify:   wantData(0, 1<<20, 1)},
	{name: "l2-entry-past-eof", base: plainBase,
		mutate: func(t testing.TB, r *raw) { r.setL2(1, image.OflagCopied|1000<<16) },
		want: []want{
			corrupt(check.ProblemBeyondEOF).at(1000 << 16),
			leak(check.ProblemRefcount).cluster(6),
			corrupt(check.ProblemCopied).cluster(1000).guest(0x10000),
		},
		wantExit: 2,
		repairs:  []want{corrupt(check.ProblemBeyondEOF).fixed().at(1000 << 16).guest(0x10000)},
		verify:   all(wantData(0, 64<<10, 1), wantData(64<<10, 64<<10, 0), wantData(128<<10, 64<<10, 1))},
	{name: "l2-entry-unaligned", base: plainBase,
		mutate: func(t testing.TB, r *raw) { r.setL2(1, r.l2(1)+512) },
		want: []want{
			corrupt(check.ProblemL2Unaligned).at(0x60200).guest(0x10000),
			corrupt(check.ProblemRefcount).cluster(7),
		},
		wantExit: 2,
		repairs:  []want{corrupt(check.ProblemL2Unaligned).fixed().at(0x60200).guest(0x10000)},
		verify:   wantData(0, 1<<20, 1)},
	{name: "l2-prealloc-unaligned", base: plainBase,
		mutate:   func(t testing.TB, r *raw) { r.setL2(1, r.l2(1)+512|image.OflagZero) },
		want:     []want{corrupt(check.ProblemL2Unaligned).at(0x60200).guest(0x10000)},
		wantExit: 2,
		repairs:  []want{corrupt(check.ProblemL2Unaligned).fixed().at(0x60200).guest(0x10000)},
		verify:   all(wantData(0, 64<<10, 1), wantData(64<<10, 64<<10, 0))},
	{name: "l2-reserved-bits", base: plainBase,
		mutate:   func(t testing.TB, r *raw) { r.setL2(1, r.l2(1)|1<<57) },
		want:     []want{corrupt(check.ProblemL2Reserved).at(0x40008).guest(0x10000)},
		wantExit: 2,
		repairs:  []want{corrupt(check.ProblemL2Reserved).fixed().at(0x40008).guest(0x10000)},
		verify:   wantData(0, 1<<20, 1)},
	{name: "copied-cleared", base: plainBase,
		mutate:   func(t testing.TB, r *raw) { r.setL2(3, r.l2(3)&^image.OflagCopied) },
		want:     []want{corrupt(check.ProblemCopied).cluster(8).guest(0x30000)},
		wantExit: 2,
		repairs:  []want{corrupt(check.ProblemCopied).fixed().cluster(8).guest(0x30000)},
		verify:   wantData(0, 1<<20, 1)},

	// Refcounts.
	{name: "leak", base: plainBase,
		mutate: func(t testing.TB, r *raw) { r.setRefcount(20, 3) },
		want: []want{
			leak(check.ProblemRefcount).cluster(20),
			corrupt(check.ProblemCopied).cluster(20).guest(15 << 16),
		},
		wantExit: 2,
		repairs:  []want{leak(check.ProblemRefcount).fixed().cluster(20)}},
	{name: "refcount-0-under-used", base: plainBase,
		mutate: func(t testing.TB, r *raw) { r.setRefcount(r.hostCluster(2), 0) },
		want: []want{
			corrupt(check.ProblemRefcount).cluster(7),
			corrupt(check.ProblemCopied).cluster(7).guest(0x20000),
		},
		wantExit: 2,
		repairs:  []want{rebuilt},
		verify:   all(wantData(0, 1<<20, 1), wantData(10<<20, 128<<10, 2))},
	{name: "refcount-table-over-l1", base: plainBase,
		// The refcount table is the L1 table: its entry 0 (OFLAG_COPIED
		// and the L2 table offset) points far beyond the file.
		mutate: func(t testing.TB, r *raw) { r.put64(image.HdrRefcountTableOffset, r.h.L1TableOffset) },
		want: []want{
			corrupt(check.ProblemRefcountTable).at(image.OflagCopied | 0x40000),
			corrupt(check.ProblemRefcount).cluster(3),
		},
		wantExit: 2,
		repairs:  []want{rebuilt},
		verify:   all(wantData(0, 1<<20, 1), wantData(10<<20, 128<<10, 2))},
	{name: "refcount-block-unaligned", base: plainBase,
		mutate: func(t testing.TB, r *raw) { r.put64(r.h.RefcountTableOffset, 2<<16+512) },
		want: []want{
			corrupt(check.ProblemRefcountTable).at(2<<16 + 512),
			corrupt(check.ProblemRefcount).cluster(0),
		},
		wantExit: 2,
		repairs:  []want{rebuilt},
		verify:   wantData(0, 1<<20, 1)},
	{name: "dirty-lazy-refcounts", base: plainBase,
		mutate: func(t testing.TB, r *raw) {
			r.put64(image.HdrIncompatibleFeatures, r.u64(image.HdrIncompatibleFeatures)|image.IncompatDirty)
			r.put64(image.HdrCompatibleFeatures, r.u64(image.HdrCompatibleFeatures)|image.CompatLazyRefcounts)
			for gc := uint64(4); gc < 16; gc++ {
				r.setRefcount(r.hostCluster(gc), 0)
			}
		},
		want:     []want{corrupt(check.ProblemRefcount).cluster(9)},
		wantExit: 2,
		verify: func(t testing.TB, f image.File) {
			b := f.(*imagetest.MemFile).Bytes()
			if binary.BigEndian.Uint64(b[image.HdrIncompatibleFeatures:])&(image.IncompatDirty|image.IncompatCorrupt) != 0 {
				t.Errorf("dirty bit still set after the repair")
			}
			wantData(0, 1<<20, 1)(t, f)
		}},

	// Zoned extension (zonedBase: write-pointer table at 0x30000).
	// 40 bytes: the next extension header is then zonedmeta_size, read
	// as an end marker whose length (8 × nr_zones) stays in the cluster
	// (48 would make zonedmeta_offset one whose length crosses the end of
	// the cluster, which QEMU refuses as "Header extension too large").
	{name: "zoned-ext-too-short", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			binary.BigEndian.PutUint32(r.b[r.zonedExt(t)-4:], 40)
		},
		want:     []want{zonedExtBad},
		wantExit: 2,
		still:    []want{zonedExtBad}},
	{name: "zoned-ext-missing", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			binary.BigEndian.PutUint32(r.b[r.zonedExt(t)-8:], 0x12345678)
		},
		want:     []want{corrupt(check.ProblemZonedExtensionMissing)},
		wantExit: 2,
		still:    []want{corrupt(check.ProblemZonedExtensionMissing)}},
	{name: "zoned-bit-clear", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			r.put64(image.HdrIncompatibleFeatures, r.u64(image.HdrIncompatibleFeatures)&^image.IncompatZoned)
		},
		want:     []want{corrupt(check.ProblemZonedFeatureBit)},
		wantExit: 2,
		repairs:  []want{corrupt(check.ProblemZonedFeatureBit).fixed()},
		verify:   all(wantData(2<<20, 256<<10, 2), wantWP(2, 0x240000))},
	{name: "zoned-nr-zones-wrong", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.NrZones = 17
			r.setZoned(t, h)
		},
		want:     []want{zonedExtBad},
		wantExit: 2,
		repairs:  []want{zonedExtBad.fixed()},
		verify:   all(wantZoned(func(h *zone.Header) bool { return h.NrZones == 16 }), wantData(2<<20, 256<<10, 2), wantWP(2, 0x240000), wantWP(3, 0x310000))},
	{name: "zoned-nr-zones-small", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.NrZones = 8
			r.setZoned(t, h)
		},
		want:     []want{zonedExtBad},
		wantExit: 2,
		repairs:  []want{zonedExtBad.fixed()},
		verify:   all(wantZoned(func(h *zone.Header) bool { return h.NrZones == 16 && h.MetaSize == 128 }), wantWP(2, 0x240000), wantWP(15, 0xf00000))},
	{name: "zoned-meta-size-wrong", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.MetaSize = 200
			r.setZoned(t, h)
		},
		want:     []want{zonedExtBad},
		wantExit: 2,
		repairs:  []want{zonedExtBad.fixed()},
		verify:   wantZoned(func(h *zone.Header) bool { return h.MetaSize == 128 })},
	{name: "zoned-max-open-too-big", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.MaxOpenZones = 100
			r.setZoned(t, h)
		},
		want:     []want{zonedExtBad},
		wantExit: 2,
		repairs:  []want{zonedExtBad.fixed()},
		verify:   wantZoned(func(h *zone.Header) bool { return h.MaxOpenZones == 14 })},
	// Zones 2 and 3 are CLOSED: two active zones, with a limit of 1 (what
	// a resize that turned a FULL short last zone CLOSED left behind).
	{name: "zoned-too-many-active", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.MaxActiveZones, h.MaxOpenZones = 1, 1
			r.setZoned(t, h)
		},
		want:     []want{is(check.ProblemActiveZones, check.KindCorruption)},
		wantExit: 2,
		repairs:  []want{is(check.ProblemActiveZones, check.KindCorruption).fixed()},
		verify:   wantZoned(func(h *zone.Header) bool { return h.MaxActiveZones == 2 && h.MaxOpenZones == 1 })},
	{name: "zoned-max-append-bad", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.MaxAppendBytes = 4<<20 + 3
			r.setZoned(t, h)
		},
		want:     []want{zonedExtBad},
		wantExit: 2,
		repairs:  []want{zonedExtBad.fixed()},
		verify: wantZoned(func(h *zone.Header) bool {
			return h.MaxAppendBytes%512 == 0 && uint64(h.MaxAppendBytes) < h.ZoneCapacity
		})},
	{name: "zoned-zone-size-bad", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.ZoneSize = 3 << 20
			r.setZoned(t, h)
		},
		want:     []want{zonedExtBad},
		wantExit: 2,
		still:    []want{zonedExtBad}},
	{name: "zoned-table-past-eof", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.MetaOffset = 1000 << 16
			r.setZoned(t, h)
		},
		want:     []want{corrupt(check.ProblemZonedTable).at(1000 << 16)},
		wantExit: 2,
		repairs:  []want{tableAt30000},
		verify:   all(wantWP(2, 0x240000), wantWP(3, 0x310000), wantData(2<<20, 256<<10, 2))},
	{name: "zoned-table-unaligned", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.MetaOffset += 512
			r.setZoned(t, h)
		},
		want:     []want{corrupt(check.ProblemZonedTable).at(0x30200)},
		wantExit: 2,
		repairs:  []want{tableAt30000},
		verify:   all(wantWP(2, 0x240000), wantWP(3, 0x310000), wantData(2<<20, 256<<10, 2))},
	{name: "zoned-table-over-l1", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.MetaOffset = r.h.L1TableOffset
			r.setZoned(t, h)
		},
		want: []want{
			corrupt(check.ProblemZonedTableOverlap).cluster(4),
			corrupt(check.ProblemRefcount).cluster(4),
		},
		wantExit: 2,
		repairs:  []want{tableAt30000},
		verify:   all(wantWP(2, 0x240000), wantWP(3, 0x310000), wantData(2<<20, 256<<10, 2))},
	{name: "zoned-table-refcount-0", base: zonedBase,
		mutate:   func(t testing.TB, r *raw) { r.setRefcount(3, 0) },
		want:     []want{corrupt(check.ProblemRefcount).cluster(3)},
		wantExit: 2,
		repairs:  []want{rebuilt},
		verify:   all(wantWP(2, 0x240000), wantData(2<<20, 256<<10, 2))},

	// Write pointers.
	{name: "wp-outside-zone", base: zonedBase,
		mutate:   func(t testing.TB, r *raw) { r.setWP(t, 5, 0x900000) },
		want:     []want{corrupt(check.ProblemWritePointer).zone(5).wp(0x900000).at(0x30000 + 8*5)},
		wantExit: 2,
		repairs:  []want{corrupt(check.ProblemWritePointer).fixed().zone(5)},
		verify:   wantWP(5, 0x600000)},
	{name: "wp-below-zone", base: zonedBase,
		mutate: func(t testing.TB, r *raw) { r.setWP(t, 3, 0x100000) },
		want: []want{
			corrupt(check.ProblemWritePointer).zone(3).wp(0x100000),
			leak(check.ProblemDataBeyondWP).zone(3).wp(0x300000).guest(0x300000),
		},
		wantExit: 2,
		repairs: []want{
			corrupt(check.ProblemWritePointer).fixed().zone(3),
			leak(check.ProblemDataBeyondWP).fixed().zone(3).wp(0x300000).guest(0x300000),
		},
		verify: all(wantWP(3, 0x300000), wantData(3<<20, 64<<10, 0))},
	{name: "wp-unaligned", base: zonedBase,
		mutate:   func(t testing.TB, r *raw) { r.setWP(t, 3, 0x310100) },
		want:     []want{corrupt(check.ProblemWritePointer).zone(3).wp(0x310100)},
		wantExit: 2,
		repairs:  []want{corrupt(check.ProblemWritePointer).fixed().zone(3)},
		verify:   all(wantWP(3, 0x310000), wantData(3<<20, 64<<10, 3))},
	{name: "wp-beyond-capacity", base: zonedCapBase,
		mutate:   func(t testing.TB, r *raw) { r.setWP(t, 2, 0x2e0000) },
		want:     []want{corrupt(check.ProblemWritePointer).zone(2).wp(0x2e0000)},
		wantExit: 2,
		repairs:  []want{corrupt(check.ProblemWritePointer).fixed().zone(2)},
		verify:   wantWP(2, 0x2c0000)},
	{name: "wp-sequential-with-conv-bit", base: zonedBase,
		mutate:   func(t testing.TB, r *raw) { r.setWP(t, 3, 0x310000|zone.ConvBit) },
		want:     []want{corrupt(check.ProblemWritePointer).zone(3).wp(0x310000)},
		wantExit: 2,
		repairs:  []want{corrupt(check.ProblemWritePointer).fixed().zone(3)},
		verify:   all(wantWP(3, 0x310000), wantRawWP(3, 0x310000), wantData(3<<20, 64<<10, 3))},
	{name: "wp-conventional-without-bit", base: zonedBase,
		mutate:   func(t testing.TB, r *raw) { r.setWP(t, 1, 0x100000) },
		want:     []want{corrupt(check.ProblemWritePointer).zone(1).wp(0x100000)},
		wantExit: 2,
		repairs:  []want{corrupt(check.ProblemWritePointer).fixed().zone(1)},
		verify:   all(wantRawWP(1, 0x100000|zone.ConvBit), wantData(0, 128<<10, 1))},
	{name: "wp-table-byte-swapped", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			off := r.zoned(t).MetaOffset
			for i := uint64(0); i < 16; i++ {
				v := binary.LittleEndian.Uint64(r.b[off+8*i:])
				binary.BigEndian.PutUint64(r.b[off+8*i:], v)
			}
		},
		want:     []want{corrupt(check.ProblemZonedByteSwap).at(0x30000)},
		wantExit: 2,
		repairs:  []want{corrupt(check.ProblemZonedByteSwap).fixed().at(0x30000)},
		verify:   all(wantWP(0, 0), wantWP(2, 0x240000), wantWP(3, 0x310000), wantData(2<<20, 256<<10, 2))},
	{name: "data-beyond-wp", base: zonedBase,
		mutate: func(t testing.TB, r *raw) { r.setWP(t, 2, 0x210000) },
		want: []want{
			leak(check.ProblemDataBeyondWP).zone(2).wp(0x210000).guest(0x210000).at(0x90000),
			leak(check.ProblemDataBeyondWP).zone(2).wp(0x210000).guest(0x230000).at(0xb0000),
		},
		wantExit: 3,
		repairs:  []want{leak(check.ProblemDataBeyondWP).fixed().zone(2).wp(0x210000).guest(0x210000).at(0x90000)},
		verify:   all(wantWP(2, 0x210000), wantData(2<<20, 64<<10, 2), wantData(0x210000, 192<<10, 0))},
	{name: "data-in-empty-zone", base: zonedBase,
		mutate:   func(t testing.TB, r *raw) { r.setWP(t, 3, 0x300000) },
		want:     []want{leak(check.ProblemDataBeyondWP).zone(3).wp(0x300000).guest(0x300000).at(0xc0000)},
		wantExit: 3,
		repairs:  []want{leak(check.ProblemDataBeyondWP).fixed().zone(3).wp(0x300000).guest(0x300000).at(0xc0000)},
		verify:   all(wantWP(3, 0x300000), wantData(3<<20, 64<<10, 0), wantData(2<<20, 256<<10, 2))},
}

func TestCorpus(t *testing.T) {
	for _, tc := range corpus {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.base(t)
			tc.mutate(t, rawOf(t, b))
			res, err := check.Check(imagetest.NewMemFile(b), check.Options{})
			if tc.wantErr != nil {
				if res != nil || !sameError(err, tc.wantErr) {
					t.Fatalf("want no result and an error like %#v, got error %v and\n%s", tc.wantErr, err, report(res))
				}
				// A repair refuses the image as well.
				f := imagetest.NewMemFile(b)
				if res, err := check.Check(f, check.Options{Repair: check.RepairAll}); res != nil || err == nil {
					t.Fatalf("repair of an image that cannot be checked: %v\n%s", err, report(res))
				}
				if !bytes.Equal(f.Bytes(), b) {
					t.Fatal("repair of an image that cannot be checked wrote to it")
				}
				return
			}
			if err != nil || res == nil {
				t.Fatalf("check failed: %v\n%s", err, report(res))
			}
			for _, w := range tc.want {
				if !has(res, w) {
					t.Errorf("no finding %v in\n%s", w, report(res))
				}
			}
			if got := res.ExitCode(); got != tc.wantExit {
				t.Errorf("exit code %d, want %d\n%s", got, tc.wantExit, report(res))
			}
			// The counters agree with the findings of a read-only pass.
			var c, l int64
			for _, f := range res.Findings {
				switch f.Kind {
				case check.KindCorruption:
					c++
				case check.KindLeak:
					l++
				}
				if f.Repaired {
					t.Errorf("a read-only check repaired: %s", f.Msg)
				}
			}
			if c != res.Corruptions || l != res.Leaks {
				t.Errorf("findings count %d corruptions and %d leaks, the result %d and %d", c, l, res.Corruptions, res.Leaks)
			}

			f := imagetest.NewMemFile(b)
			fixed, err := check.Check(f, check.Options{Repair: check.RepairAll})
			if err != nil || fixed == nil {
				t.Fatalf("repair failed: %v\n%s", err, report(fixed))
			}
			rp := fixed
			if fixed.Repair != nil {
				rp = fixed.Repair
			}
			for _, w := range tc.repairs {
				if !has(rp, w) {
					t.Errorf("no repair finding %v in\n%s", w, report(fixed))
				}
			}
			t.Logf("check:\n%srepair:\n%s", report(res), report(fixed))
			again := mustCheck(t, f, check.RepairNone)
			if len(tc.still) > 0 {
				for _, w := range tc.still {
					if !has(again, w) || again.Clean() {
						t.Errorf("after the repair, want %v still reported, got\n%s", w, report(again))
					}
				}
				return
			}
			if !fixed.Clean() || !again.Clean() {
				t.Fatalf("not clean after the repair:\n%s\nchecked again:\n%s", report(fixed), report(again))
			}
			if fixed.CorruptionsFixed+fixed.LeaksFixed == 0 {
				t.Errorf("a repair that changed the image counts nothing fixed:\n%s", report(fixed))
			}
			if tc.verify != nil {
				tc.verify(t, f)
			}
			// The engine opens the repaired image for writing.
			img, err := image.OpenFile(imagetest.NewMemFile(f.Bytes()), "mem", image.Options{Features: image.IncompatZoned})
			if err != nil {
				t.Fatalf("the engine cannot open the repaired image: %v", err)
			}
			if _, err := zone.New(img); err != nil {
				t.Fatalf("the zoned layer refuses the repaired image: %v", err)
			}
			img.Close()
		})
	}
}
