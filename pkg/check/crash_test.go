package check_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"testing"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
	"github.com/zqimg/zqimg/pkg/zone"
)

// dangerous returns the states a repair must never create, even when
// interrupted, that a check r of the image b finds: a cluster whose
// refcount is below its references, and OFLAG_COPIED set on a data cluster
// whose refcount is not 1 (a write would go into a shared cluster).
func dangerous(t testing.TB, r *check.Result, b []byte) map[string]bool {
	m := map[string]bool{}
	for _, f := range r.Findings {
		switch {
		case f.Problem == check.ProblemRefcount && f.Kind == check.KindCorruption:
			m[fmt.Sprintf("cluster %d: refcount below the references", f.Cluster)] = true
		case f.Problem == check.ProblemCopied && copiedSet(t, b, uint64(f.Guest)):
			// The flag disagrees with a refcount of 1 when it is clear:
			// set, the refcount is not 1.
			m[fmt.Sprintf("cluster %d: OFLAG_COPIED set with a refcount other than 1", f.Cluster)] = true
		}
	}
	return m
}

// copiedSet reports whether the active L2 entry of guest offset g in the
// image b has OFLAG_COPIED set.
func copiedSet(t testing.TB, b []byte, g uint64) bool {
	r := rawOf(t, b)
	off := r.l2Off(g / r.cs())
	return off+8 <= uint64(len(b)) && r.u64(off)&image.OflagCopied != 0
}

// guestData reads the whole virtual disk.
func guestData(t testing.TB, b []byte) []byte {
	t.Helper()
	img, err := image.OpenFile(imagetest.NewMemFile(b), "mem", image.Options{ReadOnly: true, Features: image.IncompatZoned})
	if err != nil {
		t.Fatalf("the engine cannot open the image: %v", err)
	}
	defer img.Close()
	p := make([]byte, img.Size())
	if _, err := img.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	return p
}

// wps returns the write-pointer table entries (nil for a plain image).
func wps(t testing.TB, b []byte) []uint64 {
	r := rawOf(t, b)
	if r.h.IncompatibleFeatures&image.IncompatZoned == 0 {
		return nil
	}
	z := r.zoned(t)
	if z.MetaOffset+z.MetaSize > uint64(len(b)) {
		return nil
	}
	return zone.DecodeTable(b[z.MetaOffset : z.MetaOffset+z.MetaSize])
}

type crashCase struct {
	name   string
	image  func(testing.TB) []byte
	mutate func(testing.TB, *raw)
}

var crashCases = []crashCase{
	{"incomplete-snapshots", func(t testing.TB) []byte {
		return snapshotImage(t, "cluster_size=4k", 3)
	}, func(t testing.TB, r *raw) {
		cutSnapshotExtra(t, r, map[int]int{0: 0, 1: 8})
		r.setRefcount(r.hostCluster(1), 3) // and a leak
	}},
	{"snapshot-too-much-extra", func(t testing.TB) []byte {
		return snapshotImage(t, "cluster_size=4k", 3)
	}, func(t testing.TB, r *raw) {
		claimSnapshotExtra(t, r, 2, 2000)
	}},
	{"too-many-snapshots", func(t testing.TB) []byte {
		// A version 2 image (all-zero entries are valid there) listing
		// four entries more than 65536 in a table that the file holds.
		f := newImage(t, "compat=0.10,cluster_size=4k", "2M")
		writeImage(t, f, write{0, 16 << 10, 1})
		b := f.Bytes()
		off := (uint64(len(b)) + 4095) &^ 4095
		n := uint64(image.MaxSnapshots + 4)
		end := (off + n*40 + 4095) &^ 4095
		b = append(b, make([]byte, end-uint64(len(b)))...)
		r := rawOf(t, b)
		for k := off / 4096; k < end/4096; k++ {
			r.setRefcount(k, 1)
		}
		return b
	}, func(t testing.TB, r *raw) {
		// The table fills the end of the file.
		n := uint64(image.MaxSnapshots + 4)
		r.put32(image.HdrNbSnapshots, uint32(n))
		r.put64(image.HdrSnapshotsOffset, uint64(len(r.b))-(n*40+4095)&^4095)
	}},
	{"plain-refcounts", func(t testing.TB) []byte {
		f := newImage(t, "cluster_size=4k", "2M")
		writeImage(t, f, write{0, 32 << 10, 1}, write{1 << 20, 16 << 10, 2})
		return f.Bytes()
	}, func(t testing.TB, r *raw) {
		r.setRefcount(r.hostCluster(1), 3)               // leak (and OFLAG_COPIED wrong)
		r.setL2(2, r.l2(2)&^image.OflagCopied)           // OFLAG_COPIED missing
		r.setL2(3, r.l2(3)+512)                          // unaligned
		r.setL2(4, image.OflagCopied|uint64(len(r.b))*4) // beyond the end
	}},
	{"plain-rebuild", func(t testing.TB) []byte {
		f := newImage(t, "cluster_size=4k", "2M")
		writeImage(t, f, write{0, 32 << 10, 1}, write{1 << 20, 16 << 10, 2})
		return f.Bytes()
	}, func(t testing.TB, r *raw) {
		r.setRefcount(r.hostCluster(5), 0) // rebuild
		r.setRefcount(r.hostCluster(1), 2) // leak
		r.put64(image.HdrIncompatibleFeatures, r.u64(image.HdrIncompatibleFeatures)|image.IncompatDirty)
	}},
	{"zoned", func(t testing.TB) []byte {
		f := newImage(t, "cluster_size=4k,zone.mode=host-managed,zone.size=64k,zone.conventional_zones=1,zone.max_append_bytes=4k", "1M")
		writeImage(t, f, write{0, 8 << 10, 1}, write{64 << 10, 32 << 10, 2}, write{128 << 10, 16 << 10, 3}, write{192 << 10, 8 << 10, 4})
		return f.Bytes()
	}, func(t testing.TB, r *raw) {
		r.setWP(t, 1, 64<<10+8<<10)        // data beyond the write pointer
		r.setWP(t, 2, 128<<10+16<<10+100)  // unaligned
		r.setWP(t, 4, 0x900000)            // outside the zone
		r.setRefcount(r.hostCluster(0), 2) // leak
	}},
	{"zoned-swapped-rebuild", func(t testing.TB) []byte {
		f := newImage(t, "cluster_size=4k,zone.mode=host-managed,zone.size=64k,zone.max_append_bytes=4k", "1M")
		writeImage(t, f, write{0, 8 << 10, 1}, write{64 << 10, 32 << 10, 2})
		return f.Bytes()
	}, func(t testing.TB, r *raw) {
		z := r.zoned(t)
		for i := uint64(0); i < uint64(z.NrZones); i++ {
			v := binary.LittleEndian.Uint64(r.b[z.MetaOffset+8*i:])
			binary.BigEndian.PutUint64(r.b[z.MetaOffset+8*i:], v)
		}
		r.setRefcount(r.hostCluster(17), 0) // rebuild
	}},
}

// TestRepairCrashSafe interrupts repairs at every write and sync, with every
// unsynced write dropped, kept or torn, and requires of the image left
// behind: no refcount below its references and no OFLAG_COPIED on a shared
// cluster that were not there before; every write pointer either the old
// or the repaired one, and the data below it intact; and a new repair
// completes it to the same guest data as an uninterrupted repair.
func TestRepairCrashSafe(t *testing.T) {
	for _, tc := range crashCases {
		t.Run(tc.name, func(t *testing.T) {
			orig := tc.image(t)
			tc.mutate(t, rawOf(t, orig))
			// A snapshot table that cannot be read stops a check (only
			// -r all goes on): such a state reports nothing more.
			var unreadable *check.SnapshotTableError
			before, err := check.Check(imagetest.NewMemFile(orig), check.Options{})
			if before == nil || err != nil && !errors.As(err, &unreadable) {
				t.Fatalf("check: %v", err)
			}
			origUnreadable := err != nil
			if before.Clean() {
				t.Fatal("the damaged image is clean")
			}
			allowed := dangerous(t, before, orig)
			origWP := wps(t, orig)
			var origData []byte
			if origWP != nil {
				origData = guestData(t, orig)
			}

			full := imagetest.NewFaultFile(orig)
			res, err := check.Check(full, check.Options{Repair: check.RepairAll})
			if err != nil || !res.Clean() {
				t.Fatalf("uninterrupted repair: %v\n%s", err, report(res))
			}
			want := guestData(t, full.Current())
			finalWP := wps(t, full.Current())
			t.Logf("%d operations, %d leaks and %d corruptions repaired", full.Ops(), res.LeaksFixed, res.CorruptionsFixed)

			rng := rand.New(rand.NewSource(1))
			for n := 0; n < full.Ops(); n++ {
				for trial := 0; trial < 3; trial++ {
					cf := imagetest.NewFaultFile(orig)
					cf.PowerFailAfter(n)
					if _, err := check.Check(cf, check.Options{Repair: check.RepairAll}); err == nil {
						t.Fatalf("write %d: the repair did not see the power loss", n)
					}
					b := cf.Crash(rng)
					after, err := check.Check(imagetest.NewMemFile(b), check.Options{})
					if err != nil && after != nil && errors.As(err, &unreadable) {
						if !origUnreadable {
							t.Fatalf("write %d: the interrupted repair made the snapshot table unreadable: %v", n, err)
						}
					} else if err != nil || after == nil {
						t.Fatalf("write %d: the interrupted image cannot be checked: %v", n, err)
					}
					for m := range dangerous(t, after, b) {
						if !allowed[m] {
							t.Errorf("write %d: interrupted repair left %q\n%s", n, m, report(after))
						}
					}
					if origWP != nil {
						got := wps(t, b)
						data := guestData(t, b)
						for i, w := range got {
							if w != origWP[i] && w != finalWP[i] {
								t.Errorf("write %d: zone %d write pointer 0x%x is neither the old 0x%x nor the repaired 0x%x", n, i, w, origWP[i], finalWP[i])
							}
							zs := uint64(64 << 10)
							start, wp := uint64(i)*zs, w&^zone.ConvBit
							if w&zone.ConvBit != 0 {
								wp = start + zs
							}
							if wp > start && wp <= uint64(len(data)) && wp-start <= zs &&
								!bytes.Equal(data[start:wp], origData[start:wp]) {
								t.Errorf("write %d: data below the write pointer of zone %d changed", n, i)
							}
						}
					}
					mf := imagetest.NewMemFile(b)
					fixed, err := check.Check(mf, check.Options{Repair: check.RepairAll})
					if err != nil || !fixed.Clean() {
						t.Fatalf("write %d: repairing the interrupted image: %v\n%s", n, err, report(fixed))
					}
					if got := guestData(t, mf.Bytes()); !bytes.Equal(got, want) {
						t.Errorf("write %d: the completed repair reads differently from an uninterrupted one", n)
					}
				}
			}
		})
	}
}
