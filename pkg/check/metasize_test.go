package check_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
	"github.com/zqimg/zqimg/pkg/zone"
)

// TestRepairKeepsTableOfBadMetaSize: a zonedmeta_size of 0 or of 2^32 or
// more says nothing of the write-pointer table. -r all sets it to
// 8 × nr_zones and keeps the table: its cluster stays referenced, the
// write pointers are those written, the image opens and a second check is
// clean.
func TestRepairKeepsTableOfBadMetaSize(t *testing.T) {
	for _, size := range []uint64{0, 1 << 32, 8*zone.MaxZones + 1, ^uint64(0)} {
		b := zonedBase(t)
		r := rawOf(t, b)
		zh := r.zoned(t)
		want := bytes.Clone(b[zh.MetaOffset : zh.MetaOffset+zh.MetaSize])
		tableCluster := zh.MetaOffset / r.cs()
		if r.refcount(tableCluster) != 1 || r.wp(t, 2) != 2<<20+256<<10 || r.wp(t, 3) != 3<<20+64<<10 {
			t.Fatalf("unexpected base image: table refcount %d, wp %#x %#x", r.refcount(tableCluster), r.wp(t, 2), r.wp(t, 3))
		}
		zh.MetaSize = size
		r.setZoned(t, zh)
		f := imagetest.NewMemFile(b)

		res := mustCheck(t, f, check.RepairNone)
		if res.ExitCode() != 2 || !has(res, is(check.ProblemZonedExtension, check.KindCorruption)) {
			t.Fatalf("zonedmeta_size %d: check does not report it:\n%s", size, report(res))
		}
		res = mustCheck(t, f, check.RepairAll)
		if !res.Clean() || res.Repair == nil || !has(res.Repair, is(check.ProblemZonedExtension, check.KindCorruption).fixed()) || res.Repair.LeaksFixed != 0 {
			t.Fatalf("zonedmeta_size %d: -r all:\n%s", size, report(res))
		}
		after := rawOf(t, f.Bytes())
		got := after.zoned(t)
		if got.MetaSize != 8*uint64(got.NrZones) || got.MetaOffset != zh.MetaOffset {
			t.Errorf("zonedmeta_size %d: repaired to size %d at %#x, want %d at %#x", size, got.MetaSize, got.MetaOffset, 8*got.NrZones, zh.MetaOffset)
		}
		if rc := after.refcount(tableCluster); rc != 1 {
			t.Errorf("zonedmeta_size %d: the table's cluster has refcount %d after the repair", size, rc)
		}
		if !bytes.Equal(f.Bytes()[zh.MetaOffset:zh.MetaOffset+got.MetaSize], want) {
			t.Errorf("zonedmeta_size %d: the write pointers changed", size)
		}
		if res := mustCheck(t, f, check.RepairNone); !res.Clean() {
			t.Errorf("zonedmeta_size %d: second check:\n%s", size, report(res))
		}
		img, err := image.OpenFile(f, "mem", image.Options{ReadOnly: true, Features: image.IncompatZoned})
		if err != nil {
			t.Fatal(err)
		}
		d, err := zone.New(img)
		if err != nil {
			t.Fatalf("zonedmeta_size %d: the repaired image does not open: %v", size, err)
		}
		d.Close()
		if got := readImage(t, f, 2<<20, 256<<10); !bytes.Equal(got, bytes.Repeat([]byte{2}, 256<<10)) {
			t.Errorf("zonedmeta_size %d: zone 2's data changed", size)
		}
	}
}

// TestRepairKeepsTableWhereTheExtensionPoints: an extension that cannot
// be repaired (unknown zone model) with zonedmeta_size 0 still points to
// the table; -r all must not free the table's cluster as leaked.
func TestRepairKeepsTableWhereTheExtensionPoints(t *testing.T) {
	b := zonedBase(t)
	r := rawOf(t, b)
	zh := r.zoned(t)
	want := bytes.Clone(b[zh.MetaOffset : zh.MetaOffset+zh.MetaSize])
	tableCluster := zh.MetaOffset / r.cs()
	zh.Model, zh.MetaSize = 7, 0
	r.setZoned(t, zh)
	f := imagetest.NewMemFile(b)
	res, err := run(t, f, check.RepairAll)
	if res == nil {
		t.Fatal(err)
	}
	if res.Repair != nil && res.Repair.LeaksFixed != 0 || res.LeaksFixed != 0 {
		t.Errorf("the repair freed clusters:\n%s", report(res))
	}
	after := rawOf(t, f.Bytes())
	if rc := after.refcount(tableCluster); rc != 1 {
		t.Errorf("the table's cluster has refcount %d after the repair:\n%s", rc, report(res))
	}
	if !bytes.Equal(f.Bytes()[zh.MetaOffset:zh.MetaOffset+uint64(len(want))], want) {
		t.Errorf("the write pointers changed")
	}
}

// TestCheckReportsL1PastEOF: an active L1 table that runs past the end of
// the file by less than a cluster (QEMU reads the rest as zeroes) makes
// open fail, so check reports it as a corruption (exit 2), and -r all
// extends the file over it: the image then opens and checks clean.
func TestCheckReportsL1PastEOF(t *testing.T) {
	for _, over := range []uint64{8, 4096} {
		f := newImage(t, "cluster_size=64k", "64M")
		b := f.Bytes()
		r := rawOf(t, b)
		off := r.h.L1TableOffset
		n := (uint64(len(b))-off+over)/8 + 1 // ends past the end of the file
		binary.BigEndian.PutUint32(b[image.HdrL1Size:], uint32(n))
		if end := off + 8*n; end <= uint64(len(b)) || end >= uint64(len(b))+r.cs() {
			t.Fatalf("L1 table [%#x, %#x) in a file of %d bytes", off, end, len(b))
		}
		f = imagetest.NewMemFile(b)
		if _, err := image.OpenFile(f, "mem", image.Options{ReadOnly: true}); err == nil {
			t.Fatalf("open accepts an L1 table past the end of the file")
		}
		res := mustCheck(t, f, check.RepairNone)
		if res.ExitCode() != 2 || !has(res, is(check.ProblemBeyondEOF, check.KindCorruption).at(off)) {
			t.Fatalf("overhang %d: check does not report the L1 table:\n%s", over, report(res))
		}
		res = mustCheck(t, f, check.RepairAll)
		if !res.Clean() || res.Repair == nil || !has(res.Repair, is(check.ProblemBeyondEOF, check.KindCorruption).fixed()) {
			t.Fatalf("overhang %d: -r all:\n%s", over, report(res))
		}
		img, err := image.OpenFile(f, "mem", image.Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("overhang %d: the repaired image does not open: %v", over, err)
		}
		img.Close()
		if res := mustCheck(t, f, check.RepairNone); !res.Clean() {
			t.Errorf("overhang %d: second check:\n%s", over, report(res))
		}
	}
}
