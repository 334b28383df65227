package check_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// findings returns the findings of r (and of its repairing passes) with
// problem p.
func findings(r *check.Result, p check.Problem) []check.Finding {
	var fs []check.Finding
	if r == nil {
		return nil
	}
	fs = append(fs, findings(r.Repair, p)...)
	for _, f := range r.Findings {
		if f.Problem == p {
			fs = append(fs, f)
		}
	}
	return fs
}

// problemsOf returns the findings of r that count (not progress lines).
func problemsOf(r *check.Result) []check.Finding {
	var fs []check.Finding
	for _, f := range r.Findings {
		if f.Kind != check.KindInfo {
			fs = append(fs, f)
		}
	}
	return fs
}

// resetLikeReference does to zone zi of r what the reference's zone
// reset does: the write pointer back to the zone start, every cluster of
// the zone zeroed and kept allocated (zero flag; with extended L2 entries,
// every subcluster zero and none allocated).
func resetLikeReference(t testing.TB, r *raw, zi uint64) {
	t.Helper()
	zh := r.zoned(t)
	extL2 := r.h.ExtendedL2()
	for gc := zi * zh.ZoneSize / r.cs(); gc < (zi+1)*zh.ZoneSize/r.cs(); gc++ {
		if r.l1(gc/r.h.L2Entries())&image.L1OffsetMask == 0 {
			continue
		}
		if extL2 {
			r.put64(r.l2Off(gc)+8, 0xffffffff00000000)
		} else {
			r.setL2(gc, r.l2(gc)|image.OflagZero)
		}
	}
	r.setWP(t, zi, zi*zh.ZoneSize)
}

// The reference's reset leaves zero clusters allocated beyond the write
// pointer: they read as zeroes and are no damage (no finding, exit 0),
// only reclaimable space, which -r leaks gives back without changing what
// the image reads. Data beyond a write pointer (a crash) stays a leak.
func TestZeroClustersBeyondWP(t *testing.T) {
	for _, opts := range []string{
		"zone.mode=host-managed,zone.size=1M,zone.conventional_zones=2",
		"cluster_size=64k,extended_l2=on,zone.mode=host-managed,zone.size=1M,zone.conventional_zones=2",
		"cluster_size=4k,refcount_bits=1,zone.mode=host-managed,zone.size=1M,zone.conventional_zones=2",
	} {
		t.Run(opts, func(t *testing.T) {
			f := newImage(t, opts, "16M")
			writeImage(t, f, write{0, 128 << 10, 1}, write{2 << 20, 256 << 10, 2}, write{3 << 20, 64 << 10, 3}, write{4 << 20, 64 << 10, 4})
			b := f.Bytes()
			r := rawOf(t, b)
			resetLikeReference(t, r, 2)
			zeroes := int64(256<<10) / int64(r.cs())

			res := mustCheck(t, imagetest.NewMemFile(b), check.RepairNone)
			if res.ExitCode() != 0 || len(res.Findings) != 0 || res.Zoned.ZeroBeyondWP != zeroes {
				t.Fatalf("want a clean image with %d reclaimable zero clusters:\n%s%+v", zeroes, report(res), res.Zoned)
			}

			// Data beyond a write pointer next to it is still reported.
			r.setWP(t, 4, 4<<20)
			res = mustCheck(t, imagetest.NewMemFile(b), check.RepairNone)
			beyond := findings(res, check.ProblemDataBeyondWP)
			if res.ExitCode() != 3 || len(beyond) == 0 || len(beyond) != len(problemsOf(res)) || beyond[0].Kind != check.KindLeak || beyond[0].Zone != 4 {
				t.Fatalf("want only data beyond the write pointer of zone 4 reported (exit 3):\n%s", report(res))
			}
			if res.Zoned.ZeroBeyondWP != zeroes {
				t.Errorf("%d zero clusters beyond write pointers, want %d", res.Zoned.ZeroBeyondWP, zeroes)
			}

			// -r leaks reclaims the zero clusters and leaves the data.
			mf := imagetest.NewMemFile(b)
			before := readImage(t, mf, 0, 16<<20)
			fixed := mustCheck(t, mf, check.RepairLeaks)
			if fixed.ExitCode() != 3 || fixed.Repair == nil || fixed.Zoned.ZeroBeyondWPReclaimed != zeroes || fixed.Zoned.ZeroBeyondWP != 0 {
				t.Fatalf("-r leaks: want %d zero clusters reclaimed and the data beyond zone 4's write pointer left:\n%s%+v", zeroes, report(fixed), fixed.Zoned)
			}
			if rec := findings(fixed, check.ProblemZeroBeyondWP); len(rec) != 1 || rec[0].Zone != 2 || rec[0].Kind != check.KindInfo || !rec[0].Repaired {
				t.Errorf("-r leaks: want one reclaim line for zone 2:\n%s", report(fixed))
			}
			if fixed.LeaksFixed != 0 || fixed.CorruptionsFixed != 0 {
				t.Errorf("-r leaks counted the reclaimed zero clusters as leaks or corruptions:\n%s", report(fixed))
			}
			if !bytes.Equal(readImage(t, mf, 0, 16<<20), before) {
				t.Error("-r leaks changed what the image reads")
			}
			fixed = mustCheck(t, mf, check.RepairAll)
			if !fixed.Clean() || fixed.Zoned.DataBeyondWPFixed != int64(64<<10)/int64(r.cs()) {
				t.Fatalf("-r all:\n%s", report(fixed))
			}
			again := mustCheck(t, mf, check.RepairNone)
			if !again.Clean() || len(again.Findings) != 0 || again.Zoned.ZeroBeyondWP != 0 {
				t.Fatalf("after the repairs:\n%s", report(again))
			}
			if !bytes.Equal(readImage(t, mf, 0, 4<<20), before[:4<<20]) {
				t.Error("the repairs changed the data before the write pointers")
			}
		})
	}
}

// A last zone shorter than zone_size is finished at zone start +
// zone_size (past the device end): that is FULL, not damage; a write
// pointer above the zone end is clamped there.
func TestShortLastZoneFinished(t *testing.T) {
	f := newImage(t, "zone.mode=host-managed,zone.size=1M", "3584k")
	writeImage(t, f, write{3 << 20, 64 << 10, 5})
	b := f.Bytes()
	r := rawOf(t, b)
	r.setWP(t, 3, 4<<20)
	if res := mustCheck(t, imagetest.NewMemFile(b), check.RepairNone); !res.Clean() || len(res.Findings) != 0 {
		t.Fatalf("a finished short last zone:\n%s", report(res))
	}
	for _, bad := range []uint64{4<<20 + 512, 3<<20 + 768<<10, 6 << 20} {
		r.setWP(t, 3, bad)
		res := mustCheck(t, imagetest.NewMemFile(b), check.RepairNone)
		if wp := findings(res, check.ProblemWritePointer); res.ExitCode() != 2 || len(wp) != 1 || wp[0].Zone != 3 {
			t.Fatalf("write pointer 0x%x:\n%s", bad, report(res))
		}
		mf := imagetest.NewMemFile(append([]byte(nil), b...))
		if fixed := mustCheck(t, mf, check.RepairAll); !fixed.Clean() {
			t.Fatalf("write pointer 0x%x, repaired:\n%s", bad, report(fixed))
		}
		wantWP(3, 4<<20)(t, mf)
		wantData(3<<20, 64<<10, 5)(t, mf)
	}
}

// metaDamage points an L1 or L2 entry into a metadata structure.
type metaDamage struct {
	name   string
	zoned  bool
	big    bool // on plainBig
	mutate func(t testing.TB, r *raw)
	keep   func(testing.TB, image.File) // what must survive the repair
}

// plainBig is a 1 GiB image (two L1 entries) with 1 MiB of data at 0:
// header 0, refcount table 1, refcount block 2, L1 3, L2 4, data 5-20.
func plainBig(t testing.TB) []byte {
	f := newImage(t, "", "1G")
	writeImage(t, f, write{0, 1 << 20, 1})
	return f.Bytes()
}

// metaDamages: plainBase is header 0, refcount table 1, refcount block 2,
// L1 3, L2 4, data 5-22; zonedBase has the write-pointer table in 3, L1
// in 4 and L2 in 5. Both have one L1 entry.
var metaDamages = []metaDamage{
	{name: "l1-to-refcount-table", mutate: func(t testing.TB, r *raw) { r.put64(r.l1Off(0), image.OflagCopied|1<<16) }},
	{name: "l1-to-refcount-block", mutate: func(t testing.TB, r *raw) { r.put64(r.l1Off(0), image.OflagCopied|2<<16) }},
	{name: "l1-to-l1", mutate: func(t testing.TB, r *raw) { r.put64(r.l1Off(0), image.OflagCopied|3<<16) }},
	{name: "l1-1-to-l1", big: true, mutate: func(t testing.TB, r *raw) { r.put64(r.l1Off(1), image.OflagCopied|3<<16) },
		keep: wantData(0, 1<<20, 1)},
	{name: "l1-1-to-refcount-block", big: true, mutate: func(t testing.TB, r *raw) { r.put64(r.l1Off(1), image.OflagCopied|2<<16) },
		keep: wantData(0, 1<<20, 1)},
	{name: "l2-to-refcount-table", mutate: func(t testing.TB, r *raw) { r.setL2(3, image.OflagCopied|1<<16) },
		keep: all(wantData(0, 192<<10, 1), wantData(3<<16, 64<<10, 0), wantData(4<<16, 768<<10, 1))},
	{name: "l2-to-refcount-block", mutate: func(t testing.TB, r *raw) { r.setL2(3, image.OflagCopied|2<<16) },
		keep: all(wantData(0, 192<<10, 1), wantData(3<<16, 64<<10, 0), wantData(4<<16, 768<<10, 1))},
	{name: "l2-to-l1", mutate: func(t testing.TB, r *raw) { r.setL2(3, image.OflagCopied|3<<16) },
		keep: all(wantData(0, 192<<10, 1), wantData(3<<16, 64<<10, 0), wantData(10<<20, 128<<10, 2))},
	{name: "l2-to-wp-table", zoned: true, mutate: func(t testing.TB, r *raw) { r.setL2(1, image.OflagCopied|3<<16) },
		keep: all(wantWP(2, 0x240000), wantData(2<<20, 256<<10, 2), wantData(0, 64<<10, 1), wantData(64<<10, 64<<10, 0))},
	{name: "l1-to-wp-table", zoned: true, mutate: func(t testing.TB, r *raw) { r.put64(r.l1Off(0), image.OflagCopied|3<<16) },
		keep: all(wantWP(2, 0x240000), wantWP(3, 0x310000))},
	{name: "l2-to-l1-zoned", zoned: true, mutate: func(t testing.TB, r *raw) { r.setL2(0x21, image.OflagCopied|4<<16) },
		keep: all(wantWP(2, 0x240000), wantData(2<<20, 64<<10, 2), wantData(0x210000, 64<<10, 0), wantData(0x220000, 128<<10, 2))},
}

// metaBase returns the image tc damages.
func metaBase(t testing.TB, tc metaDamage) []byte {
	switch {
	case tc.zoned:
		return zonedBase(t)
	case tc.big:
		return plainBig(t)
	}
	return plainBase(t)
}

// writeAfterRepair writes to a repaired image as a user would: into the
// range an entry was cleared from, new clusters (new L2 tables, refcount
// updates), through the zoned layer.
func writeAfterRepair(t testing.TB, f image.File, zoned, big bool) {
	t.Helper()
	if big {
		// One session per write, as separate zqimg write commands.
		for _, w := range []write{{64 << 10, 64 << 10, 7}, {128 << 10, 64 << 10, 8}, {512 << 20, 4 << 20, 9},
			{513 << 20, 64 << 10, 10}, {960 << 20, 64 << 10, 11}, {2 << 20, 1 << 20, 12}} {
			writeImage(t, f, w)
		}
		return
	}
	if zoned {
		writeImage(t, f, write{0, 256 << 10, 7}, write{0x310000, 128 << 10, 8}, write{9 << 20, 64 << 10, 9}, write{0x240000, 64 << 10, 10})
		return
	}
	writeImage(t, f, write{3 << 16, 64 << 10, 7}, write{32 << 20, 256 << 10, 8}, write{0, 4096, 9}, write{40 << 20, 2 << 20, 10}, write{(64 << 20) - 65536, 65536, 11})
}

// An L1 or L2 entry pointing into metadata is cleared by -r all, not
// covered by a raised refcount (which lets guest writes and metadata
// updates overwrite each other): after the repair and more writes, the
// image stays clean.
func TestEntryIntoMetadata(t *testing.T) {
	for _, tc := range metaDamages {
		t.Run(tc.name, func(t *testing.T) {
			b := metaBase(t, tc)
			tc.mutate(t, rawOf(t, b))
			if res := mustCheck(t, imagetest.NewMemFile(b), check.RepairNone); res.Clean() {
				t.Fatalf("the damage is not found:\n%s", report(res))
			}
			mf := imagetest.NewMemFile(b)
			fixed := mustCheck(t, mf, check.RepairAll)
			if !fixed.Clean() {
				t.Fatalf("not clean after -r all:\n%s", report(fixed))
			}
			cleared := findings(fixed, check.ProblemEntryIntoMetadata)
			if len(cleared) != 1 || !cleared[0].Repaired || cleared[0].Kind != check.KindCorruption {
				t.Fatalf("want the entry cleared:\n%s", report(fixed))
			}
			if tc.keep != nil {
				tc.keep(t, mf)
			}
			writeAfterRepair(t, mf, tc.zoned, tc.big)
			if again := mustCheck(t, mf, check.RepairNone); !again.Clean() || len(again.Findings) != 0 {
				t.Fatalf("after writing to the repaired image:\n%s", report(again))
			}
		})
	}
}

// TestEntryIntoMetadataQemu: stock qemu-img check agrees that the
// repaired, then written, plain images are clean.
func TestEntryIntoMetadataQemu(t *testing.T) {
	qemuImg, _ := requireQemu(t)
	dir := t.TempDir()
	for _, tc := range metaDamages {
		if tc.zoned {
			continue // stock qemu-img does not open zoned images
		}
		b := metaBase(t, tc)
		tc.mutate(t, rawOf(t, b))
		mf := imagetest.NewMemFile(b)
		mustCheck(t, mf, check.RepairAll)
		writeAfterRepair(t, mf, false, tc.big)
		p := filepath.Join(dir, tc.name+".qcow2")
		if err := os.WriteFile(p, mf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		if q := qemuJSON(t, qemuImg, p); q.exit != 0 || q.Corruptions != 0 || q.Leaks != 0 {
			t.Errorf("%s: qemu-img check: %s\n%s", tc.name, q, q.out)
		}
		if z := zqimgJSON(t, p); z.exit != 0 {
			t.Errorf("%s: zqimg check: %s\n%s", tc.name, z, z.out)
		}
	}
}

// A refcount table entry pointing at a data cluster makes that cluster a
// "refcount block" whose content is no refcounts: the data entry is the
// right one and is kept; the refcount structure is rebuilt.
func TestRefcountBlockOverData(t *testing.T) {
	b := plainBase(t)
	r := rawOf(t, b)
	r.put64(r.h.RefcountTableOffset, r.host(3))
	mf := imagetest.NewMemFile(b)
	fixed := mustCheck(t, mf, check.RepairAll)
	if len(findings(fixed, check.ProblemEntryIntoMetadata)) != 0 {
		t.Errorf("a data entry was cleared:\n%s", report(fixed))
	}
	if !fixed.Clean() {
		t.Fatalf("not clean after -r all:\n%s", report(fixed))
	}
	wantData(0, 1<<20, 1)(t, mf)
	wantData(10<<20, 128<<10, 2)(t, mf)
}

// When the zoned extension does not lead to the write-pointer table, a
// repair must not free the table's clusters as leaked (an allocation
// would then overwrite the write pointers): the check finds the table
// where it is and counts it; -r all points zonedmeta_offset to it when the
// rest of the extension is valid.
func TestLostWritePointerTable(t *testing.T) {
	setMeta := func(v uint64) func(testing.TB, *raw) {
		return func(t testing.TB, r *raw) {
			h := r.zoned(t)
			h.MetaOffset = v
			r.setZoned(t, h)
		}
	}
	cases := []struct {
		name   string
		mutate func(testing.TB, *raw)
		fixed  bool // the extension is repaired (else it stays broken)
	}{
		{"offset-0", setMeta(0), true},
		{"offset-unaligned", setMeta(0x30000 + 512), true},
		{"offset-past-eof", setMeta(1000 << 16), true},
		{"offset-over-l1", setMeta(0x40000), true},
		{"offset-over-data", setMeta(0x60000), true},
		{"offset-free-cluster", setMeta(0x100000), true},
		{"extension-missing", func(t testing.TB, r *raw) {
			binary.BigEndian.PutUint32(r.b[r.zonedExt(t)-8:], 0x12345678)
		}, false},
		{"extension-length", func(t testing.TB, r *raw) {
			// 40, not 48: see zoned-ext-too-short in the corpus.
			binary.BigEndian.PutUint32(r.b[r.zonedExt(t)-4:], 40)
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := zonedBase(t)
			if len(b) < 0x110000 {
				b = append(b, make([]byte, 0x110000-len(b))...)
			}
			table := append([]byte(nil), b[0x30000:0x30080]...)
			tc.mutate(t, rawOf(t, b))
			res := mustCheck(t, imagetest.NewMemFile(b), check.RepairNone)
			for _, f := range findings(res, check.ProblemRefcount) {
				if f.Cluster == 3 {
					t.Errorf("the table's cluster is reported: %s", f.Msg)
				}
			}
			for _, mode := range []check.Mode{check.RepairLeaks, check.RepairAll} {
				mf := imagetest.NewMemFile(append([]byte(nil), b...))
				fixed := mustCheck(t, mf, mode)
				r := rawOf(t, mf.Bytes())
				if rc := r.refcount(3); rc != 1 {
					t.Fatalf("-r %v: the table's cluster has refcount %d:\n%s", mode, rc, report(fixed))
				}
				if mode != check.RepairAll {
					continue
				}
				if tc.fixed {
					if !fixed.Clean() || r.zoned(t).MetaOffset != 0x30000 {
						t.Fatalf("-r all: want zonedmeta_offset 0x30000 and a clean image:\n%s", report(fixed))
					}
					all(wantWP(2, 0x240000), wantWP(3, 0x310000), wantData(2<<20, 256<<10, 2))(t, mf)
					writeImage(t, mf, write{0x310000, 64 << 10, 6}, write{5 << 20, 192 << 10, 7})
					all(wantWP(3, 0x320000), wantWP(5, 0x530000))(t, mf)
				} else {
					// The extension stays broken; the engine can still
					// write (plain qcow2 writes), and must not allocate
					// over the table.
					img, err := image.OpenFile(mf, "mem", image.Options{Features: image.IncompatZoned})
					if err != nil {
						t.Fatal(err)
					}
					for off := int64(6 << 20); off < 9<<20; off += 64 << 10 {
						if _, err := img.WriteAt(bytes.Repeat([]byte{9}, 64<<10), off); err != nil {
							t.Fatal(err)
						}
					}
					if err := img.Close(); err != nil {
						t.Fatal(err)
					}
				}
				if got := mf.Bytes()[0x30000:0x30080]; !tc.fixed && !bytes.Equal(got, table) {
					t.Fatalf("-r all: the write-pointer table was overwritten")
				}
			}
		})
	}
}

// A problem -r all cannot repair is reported once, by the second check,
// as not repaired; not again as if it were new.
func TestUnrepairedReportedOnce(t *testing.T) {
	badZoneSize := func(t testing.TB, r *raw) {
		h := r.zoned(t)
		h.ZoneSize = 3 << 20
		r.setZoned(t, h)
	}
	for _, withLeak := range []bool{false, true} {
		b := zonedBase(t)
		r := rawOf(t, b)
		badZoneSize(t, r)
		if withLeak {
			r.setRefcount(r.hostCluster(0), 2)
		}
		fixed := mustCheck(t, imagetest.NewMemFile(b), check.RepairAll)
		ext := findings(fixed, check.ProblemZonedExtension)
		if len(ext) != 1 || !ext[0].Unrepaired || !strings.HasSuffix(ext[0].Msg, "(could not be repaired)") {
			t.Fatalf("leak %v: want the zoned extension problem once, as not repaired:\n%s", withLeak, report(fixed))
		}
		if fixed.ExitCode() != 2 {
			t.Errorf("leak %v: exit %d, want 2", withLeak, fixed.ExitCode())
		}
		if withLeak {
			if fixed.Repair == nil || fixed.LeaksFixed != 1 {
				t.Fatalf("the leak was not repaired:\n%s", report(fixed))
			}
			for _, f := range fixed.Repair.Findings {
				if f.Problem == check.ProblemZonedExtension {
					t.Errorf("the repairing pass lists the unrepaired problem: %s", f.Msg)
				}
			}
		}
		// A check alone does not say "could not be repaired".
		res := mustCheck(t, imagetest.NewMemFile(b), check.RepairNone)
		for _, f := range res.Findings {
			if f.Unrepaired {
				t.Errorf("a check without repair marks %q", f.Msg)
			}
		}
	}
}

// A repair that extends the file over an L1 table lying past its end must
// also clear an L1 entry pointing into the part of the table that was
// beyond the end: one -r all repairs the image completely (the read-only
// pass before the extension did not know that part as metadata).
func TestEntryIntoExtendedTable(t *testing.T) {
	b := plainBase(t) // L1 table in cluster 3, 23 clusters
	r := rawOf(t, b)
	cs := r.cs()
	// Move the L1 table to a new last cluster and make it two clusters
	// long: its second cluster lies beyond the end of the file.
	end := uint64(len(b))
	b = append(b, make([]byte, cs)...)
	r = rawOf(t, b)
	copy(b[end:], b[r.h.L1TableOffset:r.h.L1TableOffset+8])
	r.setRefcount(end/cs, 1)
	r.setRefcount(r.h.L1TableOffset/cs, 0)
	r.put64(image.HdrL1TableOffset, end)
	r.put32(image.HdrL1Size, uint32(2*cs/8))
	r = rawOf(t, b)
	r.put64(r.l1Off(1), image.OflagCopied|(end+cs)) // into the table's second cluster

	mf := imagetest.NewMemFile(b)
	fixed := mustCheck(t, mf, check.RepairAll)
	if !fixed.Clean() || !has(fixed.Repair, corrupt(check.ProblemEntryIntoMetadata).fixed().at(end+8)) {
		t.Fatalf("want the entry into the L1 table cleared:\n%s", report(fixed))
	}
	if again := mustCheck(t, mf, check.RepairAll); again.CorruptionsFixed+again.LeaksFixed != 0 || !again.Clean() {
		t.Fatalf("a second repair fixes more:\n%s", report(again))
	}
	wantData(0, 1<<20, 1)(t, mf)
}
