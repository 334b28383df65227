package check_test

import (
	"bytes"
	"encoding/binary"
	"strings"
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
	// Either the image cannot be checked (wantErr, in the error)...
	wantErr string
	// ...or a check reports every wantMsg and exits with wantExit.
	wantMsg  []string
	wantExit int
	// repairMsg are reported by the repairing pass of -r all.
	repairMsg []string
	// unrepaired: -r all leaves stillMsg reported; otherwise the image
	// must be clean after the repair.
	unrepaired bool
	stillMsg   string
	// verify checks the repaired image.
	verify func(t testing.TB, f image.File)
}

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

var corpus = []corpusCase{
	// Headers that cannot be checked.
	{name: "bad-magic", base: plainBase, mutate: func(t testing.TB, r *raw) { r.b[0] = 'X' },
		wantErr: "bad magic"},
	{name: "bad-version", base: plainBase, mutate: func(t testing.TB, r *raw) { r.put32(4, 4) },
		wantErr: "unsupported qcow2 version 4"},
	{name: "version-1", base: plainBase, mutate: func(t testing.TB, r *raw) { r.put32(4, 1) },
		wantErr: "unsupported qcow2 version 1"},
	{name: "cluster-bits-8", base: plainBase, mutate: func(t testing.TB, r *raw) { r.put32(20, 8) },
		wantErr: "unsupported cluster size: 2^8"},
	{name: "cluster-bits-22", base: plainBase, mutate: func(t testing.TB, r *raw) { r.put32(20, 22) },
		wantErr: "unsupported cluster size: 2^22"},
	{name: "unknown-feature", base: plainBase, mutate: func(t testing.TB, r *raw) { r.put64(72, 1<<40) },
		wantErr: "Unsupported qcow2 feature(s): Unknown incompatible feature: 10000000000"},
	{name: "refcount-order-7", base: plainBase, mutate: func(t testing.TB, r *raw) { r.put32(96, 7) },
		wantErr: "refcount_order 7"},

	// L1 and L2 entries.
	{name: "l1-entry-past-eof", base: plainBase,
		mutate: func(t testing.TB, r *raw) { r.put64(r.l1Off(0), image.OflagCopied|1000<<16) },
		wantMsg: []string{
			"ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x3e80000 size 0x10000",
			"ERROR OFLAG_COPIED L2 cluster: l1_index=0 l1_entry=8000000003e80000 refcount=0",
			"Leaked cluster 4 refcount=1 reference=0",
		},
		wantExit:  2,
		repairMsg: []string{"Repairing l2_offset=3e80000: L2 table lies beyond the end of the file; L1 entry 0 cleared"},
		verify:    wantData(0, 4096, 0)},
	{name: "l1-entry-unaligned", base: plainBase,
		mutate:    func(t testing.TB, r *raw) { r.put64(r.l1Off(0), r.l1(0)+512) },
		wantMsg:   []string{"ERROR l2_offset=40200: Table is not cluster aligned; L1 entry corrupted"},
		wantExit:  2,
		repairMsg: []string{"Repairing l2_offset=40200: Table is not cluster aligned; L1 entry realigned to 40000"},
		verify:    all(wantData(0, 1<<20, 1), wantData(10<<20, 128<<10, 2))},
	{name: "l1-reserved-bits", base: plainBase,
		mutate:    func(t testing.TB, r *raw) { r.put64(r.l1Off(0), r.l1(0)|1<<60) },
		wantMsg:   []string{"ERROR found L1 entry with reserved bits set: 9000000000040000"},
		wantExit:  2,
		repairMsg: []string{"Repairing L1 entry with reserved bits set: 9000000000040000 (bits cleared)"},
		verify:    wantData(0, 1<<20, 1)},
	{name: "l2-entry-past-eof", base: plainBase,
		mutate: func(t testing.TB, r *raw) { r.setL2(1, image.OflagCopied|1000<<16) },
		wantMsg: []string{
			"ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x3e80000 size 0x10000",
			"Leaked cluster 6 refcount=1 reference=0",
			"ERROR OFLAG_COPIED data cluster: l2_entry=8000000003e80000 refcount=0",
		},
		wantExit:  2,
		repairMsg: []string{"Repairing offset=3e80000: Cluster of guest offset 0x10000 lies beyond the end of the file; L2 entry cleared."},
		verify:    all(wantData(0, 64<<10, 1), wantData(64<<10, 64<<10, 0), wantData(128<<10, 64<<10, 1))},
	{name: "l2-entry-unaligned", base: plainBase,
		mutate: func(t testing.TB, r *raw) { r.setL2(1, r.l2(1)+512) },
		wantMsg: []string{
			"ERROR offset=60200: Data cluster is not properly aligned; L2 entry corrupted.",
			"ERROR cluster 7 refcount=1 reference=2",
		},
		wantExit:  2,
		repairMsg: []string{"Repairing offset=60200: Data cluster is not properly aligned; L2 entry realigned to 60000."},
		verify:    wantData(0, 1<<20, 1)},
	{name: "l2-prealloc-unaligned", base: plainBase,
		mutate:    func(t testing.TB, r *raw) { r.setL2(1, r.l2(1)+512|image.OflagZero) },
		wantMsg:   []string{"ERROR offset=60200: Preallocated cluster is not properly aligned; L2 entry corrupted."},
		wantExit:  2,
		repairMsg: []string{"Repairing offset=60200: Preallocated cluster is not properly aligned; L2 entry corrupted."},
		verify:    all(wantData(0, 64<<10, 1), wantData(64<<10, 64<<10, 0))},
	{name: "l2-reserved-bits", base: plainBase,
		mutate:   func(t testing.TB, r *raw) { r.setL2(1, r.l2(1)|1<<57) },
		wantMsg:  []string{"ERROR found l2 entry with reserved bits set: 8200000000060000"},
		wantExit: 2,
		verify:   wantData(0, 1<<20, 1)},
	{name: "copied-cleared", base: plainBase,
		mutate:    func(t testing.TB, r *raw) { r.setL2(3, r.l2(3)&^image.OflagCopied) },
		wantMsg:   []string{"ERROR OFLAG_COPIED data cluster: l2_entry=80000 refcount=1"},
		wantExit:  2,
		repairMsg: []string{"Repairing OFLAG_COPIED data cluster: l2_entry=80000 refcount=1"},
		verify:    wantData(0, 1<<20, 1)},

	// Refcounts.
	{name: "leak", base: plainBase,
		mutate: func(t testing.TB, r *raw) { r.setRefcount(20, 3) },
		wantMsg: []string{
			"Leaked cluster 20 refcount=3 reference=1",
			"ERROR OFLAG_COPIED data cluster: l2_entry=8000000000140000 refcount=3",
		},
		wantExit:  2,
		repairMsg: []string{"Repairing cluster 20 refcount=3 reference=1"}},
	{name: "refcount-0-under-used", base: plainBase,
		mutate: func(t testing.TB, r *raw) { r.setRefcount(r.hostCluster(2), 0) },
		wantMsg: []string{
			"ERROR cluster 7 refcount=0 reference=1",
			"ERROR OFLAG_COPIED data cluster: l2_entry=8000000000070000 refcount=0",
		},
		wantExit:  2,
		repairMsg: []string{"Rebuilding refcount structure"},
		verify:    all(wantData(0, 1<<20, 1), wantData(10<<20, 128<<10, 2))},
	{name: "refcount-table-over-l1", base: plainBase,
		mutate: func(t testing.TB, r *raw) { r.put64(48, r.h.L1TableOffset) },
		wantMsg: []string{
			"ERROR refcount block 0 is outside image",
			"ERROR cluster 3 refcount=0 reference=2",
		},
		wantExit:  2,
		repairMsg: []string{"Rebuilding refcount structure"},
		verify:    all(wantData(0, 1<<20, 1), wantData(10<<20, 128<<10, 2))},
	{name: "refcount-block-unaligned", base: plainBase,
		mutate: func(t testing.TB, r *raw) { r.put64(r.h.RefcountTableOffset, 2<<16+512) },
		wantMsg: []string{
			"ERROR refcount block 0 is not cluster aligned; refcount table entry corrupted",
			"ERROR cluster 0 refcount=0 reference=1",
		},
		wantExit:  2,
		repairMsg: []string{"Rebuilding refcount structure"},
		verify:    wantData(0, 1<<20, 1)},
	{name: "dirty-lazy-refcounts", base: plainBase,
		mutate: func(t testing.TB, r *raw) {
			r.put64(72, r.u64(72)|image.IncompatDirty)
			r.put64(80, r.u64(80)|image.CompatLazyRefcounts)
			for gc := uint64(4); gc < 16; gc++ {
				r.setRefcount(r.hostCluster(gc), 0)
			}
		},
		wantMsg:  []string{"ERROR cluster 9 refcount=0 reference=1"},
		wantExit: 2,
		verify: func(t testing.TB, f image.File) {
			b := f.(*imagetest.MemFile).Bytes()
			if binary.BigEndian.Uint64(b[72:])&(image.IncompatDirty|image.IncompatCorrupt) != 0 {
				t.Errorf("dirty bit still set after the repair")
			}
			wantData(0, 1<<20, 1)(t, f)
		}},

	// Zoned extension.
	{name: "zoned-ext-too-short", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			binary.BigEndian.PutUint32(r.b[r.zonedExt(t)-4:], 48)
		},
		wantMsg:    []string{"ERROR zoned extension: zoned extension is 48 bytes, expected 56"},
		wantExit:   2,
		unrepaired: true, stillMsg: "expected 56"},
	{name: "zoned-ext-missing", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			binary.BigEndian.PutUint32(r.b[r.zonedExt(t)-8:], 0x12345678)
		},
		wantMsg:    []string{"ERROR zoned extension: incompatible feature bit 5 (zoned format) is set but the zoned extension (magic 0x007a6264) is missing"},
		wantExit:   2,
		unrepaired: true, stillMsg: "is missing"},
	{name: "zoned-bit-clear", base: zonedBase,
		mutate:    func(t testing.TB, r *raw) { r.put64(72, r.u64(72)&^image.IncompatZoned) },
		wantMsg:   []string{"ERROR zoned extension: the zoned extension is present but incompatible feature bit 5 (zoned format) is clear"},
		wantExit:  2,
		repairMsg: []string{"Repairing zoned extension: the zoned extension is present but incompatible feature bit 5"},
		verify:    all(wantData(2<<20, 256<<10, 2), wantWP(2, 0x240000))},
	{name: "zoned-nr-zones-wrong", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.NrZones = 17
			r.setZoned(t, h)
		},
		wantMsg:   []string{"ERROR zoned extension: nr_zones 17 does not match the virtual size: 16777216 bytes in zones of 1048576 bytes make 16 zones"},
		wantExit:  2,
		repairMsg: []string{"Repairing zoned extension: nr_zones 17 does not match"},
		verify:    all(wantData(2<<20, 256<<10, 2), wantWP(2, 0x240000), wantWP(3, 0x310000))},
	{name: "zoned-nr-zones-small", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.NrZones = 8
			r.setZoned(t, h)
		},
		wantMsg:   []string{"ERROR zoned extension: nr_zones 8 does not match the virtual size"},
		wantExit:  2,
		repairMsg: []string{"Repairing zoned extension: nr_zones 8"},
		verify:    all(wantWP(2, 0x240000), wantWP(15, 0xf00000))},
	{name: "zoned-meta-size-wrong", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.MetaSize = 200
			r.setZoned(t, h)
		},
		wantMsg:  []string{"ERROR zoned extension: zonedmeta_size 200 must be 8 × nr_zones = 128"},
		wantExit: 2},
	{name: "zoned-max-open-too-big", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.MaxOpenZones = 100
			r.setZoned(t, h)
		},
		wantMsg:   []string{"ERROR zoned extension: max_open_zones 100 exceeds the 14 sequential zones"},
		wantExit:  2,
		repairMsg: []string{"Repairing zoned extension: max_open_zones 100 exceeds the 14 sequential zones"}},
	{name: "zoned-max-append-bad", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.MaxAppendBytes = 4<<20 + 3
			r.setZoned(t, h)
		},
		wantMsg:  []string{"ERROR zoned extension: max_append_bytes 4194307 is not a multiple of 512"},
		wantExit: 2},
	{name: "zoned-zone-size-bad", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.ZoneSize = 3 << 20
			r.setZoned(t, h)
		},
		wantMsg:    []string{"ERROR zoned extension: zone_size 3145728 is not a power of two of at least 512"},
		wantExit:   2,
		unrepaired: true, stillMsg: "zone_size 3145728"},
	{name: "zoned-table-past-eof", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.MetaOffset = 1000 << 16
			r.setZoned(t, h)
		},
		wantMsg:   []string{"ERROR zoned: write-pointer table [0x3e80000, 0x3e80080) extends past the end of the file"},
		wantExit:  2,
		repairMsg: []string{"the write-pointer table lies at 0x30000; zonedmeta_offset set to it"},
		verify:    all(wantWP(2, 0x240000), wantWP(3, 0x310000), wantData(2<<20, 256<<10, 2))},
	{name: "zoned-table-unaligned", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.MetaOffset += 512
			r.setZoned(t, h)
		},
		wantMsg:   []string{"ERROR zoned: write-pointer table offset 0x30200 is not a non-zero multiple of the cluster size 65536"},
		wantExit:  2,
		repairMsg: []string{"the write-pointer table lies at 0x30000; zonedmeta_offset set to it"},
		verify:    all(wantWP(2, 0x240000), wantWP(3, 0x310000), wantData(2<<20, 256<<10, 2))},
	{name: "zoned-table-over-l1", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.MetaOffset = r.h.L1TableOffset
			r.setZoned(t, h)
		},
		wantMsg: []string{
			"ERROR zoned: write-pointer table cluster 4 (offset 0x40000) is also used by the active L1 table",
			"ERROR cluster 4 refcount=1 reference=2",
		},
		wantExit:  2,
		repairMsg: []string{"Repairing zoned: zonedmeta_offset 0x40000 does not point to the write-pointer table; the write-pointer table lies at 0x30000; zonedmeta_offset set to it"},
		verify:    all(wantWP(2, 0x240000), wantWP(3, 0x310000), wantData(2<<20, 256<<10, 2))},
	{name: "zoned-table-refcount-0", base: zonedBase,
		mutate:    func(t testing.TB, r *raw) { r.setRefcount(3, 0) },
		wantMsg:   []string{"ERROR cluster 3 refcount=0 reference=1"},
		wantExit:  2,
		repairMsg: []string{"Rebuilding refcount structure"},
		verify:    all(wantWP(2, 0x240000), wantData(2<<20, 256<<10, 2))},

	// Write pointers.
	{name: "wp-outside-zone", base: zonedBase,
		mutate:    func(t testing.TB, r *raw) { r.setWP(t, 5, 0x900000) },
		wantMsg:   []string{"ERROR zone 5: write pointer 0x900000 of zone 5 lies outside the zone [0x500000, 0x600000]"},
		wantExit:  2,
		repairMsg: []string{"Repairing zone 5: write pointer 0x900000 of zone 5 lies outside the zone [0x500000, 0x600000]; set to 0x600000"},
		verify:    wantWP(5, 0x600000)},
	{name: "wp-below-zone", base: zonedBase,
		mutate:    func(t testing.TB, r *raw) { r.setWP(t, 3, 0x100000) },
		wantMsg:   []string{"ERROR zone 3: write pointer 0x100000 of zone 3 lies outside the zone", "Leaked data beyond write pointer: zone 3 wp=0x300000 cluster 0x300000"},
		wantExit:  2,
		repairMsg: []string{"set to 0x300000", "Discarding data beyond write pointer: zone 3 wp=0x300000 cluster 0x300000"},
		verify:    all(wantWP(3, 0x300000), wantData(3<<20, 64<<10, 0))},
	{name: "wp-unaligned", base: zonedBase,
		mutate:    func(t testing.TB, r *raw) { r.setWP(t, 3, 0x310100) },
		wantMsg:   []string{"ERROR zone 3: write pointer 0x310100 of zone 3 is not 512-byte aligned"},
		wantExit:  2,
		repairMsg: []string{"set to 0x310000"},
		verify:    all(wantWP(3, 0x310000), wantData(3<<20, 64<<10, 3))},
	{name: "wp-beyond-capacity", base: zonedCapBase,
		mutate:    func(t testing.TB, r *raw) { r.setWP(t, 2, 0x2e0000) },
		wantMsg:   []string{"ERROR zone 2: write pointer 0x2e0000 of zone 2 lies between the capacity end 0x2c0000 and the zone end 0x300000"},
		wantExit:  2,
		repairMsg: []string{"set to 0x2c0000"},
		verify:    wantWP(2, 0x2c0000)},
	{name: "wp-sequential-with-conv-bit", base: zonedBase,
		mutate:    func(t testing.TB, r *raw) { r.setWP(t, 3, 0x310000|zone.ConvBit) },
		wantMsg:   []string{"ERROR zone 3: zone 3 is sequential but its entry 0x800000000310000 has the conventional bit"},
		wantExit:  2,
		repairMsg: []string{"set to 0x310000"},
		verify:    all(wantWP(3, 0x310000), wantData(3<<20, 64<<10, 3))},
	{name: "wp-conventional-without-bit", base: zonedBase,
		mutate:    func(t testing.TB, r *raw) { r.setWP(t, 1, 0x100000) },
		wantMsg:   []string{"ERROR zone 1: zone 1 is conventional but its entry 0x100000 lacks the conventional bit"},
		wantExit:  2,
		repairMsg: []string{"set to 0x800000000100000"},
		verify:    wantData(0, 128<<10, 1)},
	{name: "wp-table-byte-swapped", base: zonedBase,
		mutate: func(t testing.TB, r *raw) {
			off := r.zoned(t).MetaOffset
			for i := uint64(0); i < 16; i++ {
				v := binary.LittleEndian.Uint64(r.b[off+8*i:])
				binary.BigEndian.PutUint64(r.b[off+8*i:], v)
			}
		},
		wantMsg:   []string{"ERROR zoned: the write-pointer table is stored byte-swapped (big-endian entries)"},
		wantExit:  2,
		repairMsg: []string{"Repairing zoned: the write-pointer table is stored byte-swapped"},
		verify:    all(wantWP(0, 0), wantWP(2, 0x240000), wantWP(3, 0x310000), wantData(2<<20, 256<<10, 2))},
	{name: "data-beyond-wp", base: zonedBase,
		mutate: func(t testing.TB, r *raw) { r.setWP(t, 2, 0x210000) },
		wantMsg: []string{
			"Leaked data beyond write pointer: zone 2 wp=0x210000 cluster 0x210000 (host 0x90000)",
			"Leaked data beyond write pointer: zone 2 wp=0x210000 cluster 0x230000 (host 0xb0000)",
		},
		wantExit: 3,
		repairMsg: []string{
			"Discarding data beyond write pointer: zone 2 wp=0x210000 cluster 0x210000 (host 0x90000)",
		},
		verify: all(wantWP(2, 0x210000), wantData(2<<20, 64<<10, 2), wantData(0x210000, 192<<10, 0))},
	{name: "data-in-empty-zone", base: zonedBase,
		mutate:    func(t testing.TB, r *raw) { r.setWP(t, 3, 0x300000) },
		wantMsg:   []string{"Leaked data beyond write pointer: zone 3 wp=0x300000 cluster 0x300000 (host 0xc0000)"},
		wantExit:  3,
		repairMsg: []string{"Discarding data beyond write pointer: zone 3 wp=0x300000 cluster 0x300000 (host 0xc0000)"},
		verify:    all(wantWP(3, 0x300000), wantData(3<<20, 64<<10, 0), wantData(2<<20, 256<<10, 2))},
}

func TestCorpus(t *testing.T) {
	for _, tc := range corpus {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.base(t)
			tc.mutate(t, rawOf(t, b))
			res, err := check.Check(imagetest.NewMemFile(b), check.Options{})
			if tc.wantErr != "" {
				if res != nil || err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want no result and an error containing %q, got error %v and\n%s", tc.wantErr, err, report(res))
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
			for _, m := range tc.wantMsg {
				if !hasMsg(res, m) {
					t.Errorf("no finding %q in\n%s", m, report(res))
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
			for _, m := range tc.repairMsg {
				if !hasMsg(rp, m) {
					t.Errorf("no repair finding %q in\n%s", m, report(fixed))
				}
			}
			t.Logf("check:\n%srepair:\n%s", report(res), report(fixed))
			again := mustCheck(t, f, check.RepairNone)
			if tc.unrepaired {
				if !hasMsg(again, tc.stillMsg) || again.Clean() {
					t.Errorf("after the repair, want %q still reported, got\n%s", tc.stillMsg, report(again))
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
