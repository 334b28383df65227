package check_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// snapshotImage returns a version 3 image with data and n snapshots.
func snapshotImage(t testing.TB, opts string, n int) []byte {
	t.Helper()
	f := newImage(t, opts, "2M")
	writeImage(t, f, write{0, 16 << 10, 1}, write{1 << 20, 8 << 10, 2})
	img, err := image.OpenFile(f, "mem", image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := img.CreateSnapshot(image.SnapshotCreateOptions{Name: fmt.Sprintf("sn%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Bytes()
}

// cutSnapshotExtra rewrites the snapshot table in place with the extra
// data of the entries in keep cut to that many bytes (the table only gets
// shorter): what 261 makes of a version 2 image forced to version 3.
func cutSnapshotExtra(t testing.TB, r *raw, keep map[int]int) {
	t.Helper()
	off := r.h.SnapshotsOffset
	entries, err := image.ParseSnapshotTable(r.b[off:], r.h.NbSnapshots, off, r.cs())
	if err != nil {
		t.Fatal(err)
	}
	old := image.SnapshotTableSize(entries)
	for i, k := range keep {
		entries[i].Extra = entries[i].Extra[:k]
	}
	clear(r.b[off : off+old])
	copy(r.b[off:], image.MarshalSnapshotTable(entries))
}

// claimSnapshotExtra makes snapshot table entry i claim n bytes of extra
// data (its length field only, as iotest 261 pokes it: the bytes after
// its own extra data are taken for the rest, and its ID and name).
func claimSnapshotExtra(t testing.TB, r *raw, i int, n uint32) {
	t.Helper()
	off := r.h.SnapshotsOffset
	entries, err := image.ParseSnapshotTable(r.b[off:], r.h.NbSnapshots, off, r.cs())
	if err != nil {
		t.Fatal(err)
	}
	at := off + image.SnapshotTableSize(entries[:i])
	binary.BigEndian.PutUint32(r.b[at+36:], n)
}

// TestRepairTooMuchSnapshotExtra: a snapshot table entry claiming more
// than 1 KiB of extra data stops check (the table cannot be read: "Too
// much extra metadata in snapshot table entry N", a check error, the
// image unchanged); check -r all cuts the extra data to 1 KiB and
// rewrites the table, as qemu-img does (iotest 261): the second check is
// clean, the snapshots keep their L1 tables, the data is unchanged.
func TestRepairTooMuchSnapshotExtra(t *testing.T) {
	orig := snapshotImage(t, "cluster_size=4k", 3)
	want := guestData(t, orig)
	claimSnapshotExtra(t, rawOf(t, orig), 1, 3000)
	before := bytes.Clone(orig)
	mf := imagetest.NewMemFile(orig)
	res, err := check.Check(mf, check.Options{})
	if err == nil || res == nil || res.CheckErrors == 0 || !strings.Contains(report(res), "Too much extra metadata in snapshot table entry 1") {
		t.Fatalf("check: error %v; want the table refused:\n%s", err, report(res))
	}
	if !bytes.Equal(mf.Bytes(), before) {
		t.Fatal("check changed the image")
	}
	res, err = check.Check(mf, check.Options{Repair: check.RepairAll})
	if err != nil || !res.Clean() || res.CorruptionsFixed == 0 || !strings.Contains(report(res.Repair), "Discarding too much extra metadata in snapshot table entry 1 (3000 > 1024)") {
		t.Fatalf("check -r all: %v\n%s", err, report(res))
	}
	b := mf.Bytes()
	r := rawOf(t, b)
	entries, err := image.ParseSnapshotTable(b[r.h.SnapshotsOffset:], r.h.NbSnapshots, r.h.SnapshotsOffset, r.cs())
	if err != nil || len(entries) != 3 {
		t.Fatalf("the repaired table: %v (%d entries)", err, len(entries))
	}
	if n := len(entries[1].Extra); n != 1024 {
		t.Errorf("entry 1 keeps %d bytes of extra data, want 1024", n)
	}
	if !bytes.Equal(guestData(t, b), want) {
		t.Error("the repair changed the guest data")
	}
}

// TestRepairIncompleteSnapshotEntries: a version 3 snapshot table entry
// with less than 16 bytes of extra data is a corruption that check -r all
// repairs as qemu-img does (iotest 261): "Repairing snapshot table entry N
// is incomplete", the entry completed to 24 bytes (disk size = the
// image's size, icount -1), counted as repaired corruptions, the second
// check clean, the snapshots and data unchanged. Without -r it is only
// reported.
func TestRepairIncompleteSnapshotEntries(t *testing.T) {
	for _, opts := range []string{"cluster_size=4k", "cluster_size=512,refcount_bits=64", ""} {
		orig := snapshotImage(t, opts, 3)
		cutSnapshotExtra(t, rawOf(t, orig), map[int]int{0: 0, 2: 8})
		ro := mustCheck(t, imagetest.NewMemFile(orig), check.RepairNone)
		var msgs []string
		for _, f := range ro.Findings {
			msgs = append(msgs, f.Msg)
		}
		want := []string{"ERROR snapshot table entry 0 is incomplete", "ERROR snapshot table entry 2 is incomplete"}
		if ro.Corruptions != 2 || fmt.Sprint(msgs) != fmt.Sprint(want) {
			t.Fatalf("%q: check: %d corruptions, %q", opts, ro.Corruptions, msgs)
		}
		f := imagetest.NewMemFile(append([]byte(nil), orig...))
		res := mustCheck(t, f, check.RepairAll)
		msgs = nil
		if res.Repair == nil {
			t.Fatalf("%q: no repairing pass", opts)
		}
		for _, fd := range res.Repair.Findings {
			msgs = append(msgs, fd.Msg)
		}
		want = []string{"Repairing snapshot table entry 0 is incomplete", "Repairing snapshot table entry 2 is incomplete"}
		if res.CorruptionsFixed != 2 || res.LeaksFixed != 0 || !res.Clean() || fmt.Sprint(msgs) != fmt.Sprint(want) {
			t.Fatalf("%q: repair: fixed %d corruptions, %d leaks, clean %v: %q", opts, res.CorruptionsFixed, res.LeaksFixed, res.Clean(), msgs)
		}
		if again := mustCheck(t, imagetest.NewMemFile(f.Bytes()), check.RepairNone); !again.Clean() || again.Leaks != 0 {
			t.Fatalf("%q: after the repair:\n%s", opts, report(again))
		}
		img, err := image.OpenFile(imagetest.NewMemFile(f.Bytes()), "mem", image.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		list, err := img.Snapshots()
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range list {
			ds, ok := e.DiskSize()
			// The completed entries get icount -1; sn1 keeps its 0.
			if e.Name != fmt.Sprintf("sn%d", i) || len(e.Extra) != image.SnapshotKnownExtraSize || !ok || ds != uint64(img.Size()) || (e.ICount() == -1) != (i != 1) {
				t.Errorf("%q: snapshot %d after the repair: %q, extra %x", opts, i, e.Name, e.Extra)
			}
		}
		img.Close()
		if !bytes.Equal(guestData(t, f.Bytes()), guestData(t, orig)) {
			t.Errorf("%q: the repair changed the guest data", opts)
		}
	}
}
