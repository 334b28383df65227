package zone_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
	"github.com/zqimg/zqimg/pkg/zone"
)

// faultDevice opens the image at path through a FaultFile.
func faultDevice(t *testing.T, b []byte, cache image.CacheMode) (*zone.Device, *imagetest.FaultFile) {
	t.Helper()
	ff := imagetest.NewFaultFile(b)
	return faultReopen(t, ff, cache), ff
}

func faultReopen(t *testing.T, ff *imagetest.FaultFile, cache image.CacheMode) *zone.Device {
	t.Helper()
	img, err := image.OpenFile(ff, "z", image.Options{Features: image.IncompatZoned, NoLock: true, Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	d, err := zone.New(img)
	if err != nil {
		t.Fatal(err)
	}
	d.SetWriteThrough(cache.WriteThrough())
	return d
}

func nonZero(b []byte) int {
	return bytes.IndexFunc(b, func(r rune) bool { return r != 0 })
}

// Clusters beyond a write pointer (what a crash can leave) never read as
// data, and a finish discards them before its write pointer is durable.
func TestNothingBeyondTheWritePointerIsData(t *testing.T) {
	path := newImage(t, "64M", "zone.size=16M")
	d := open(t, path)
	if _, err := d.WriteAt(fill(64*kib, 0x11), 16*mib); err != nil {
		t.Fatal(err)
	}
	// Stale data beyond the write pointer, written around the zone rules
	// as a crash between the data and the write pointer leaves it.
	if _, err := d.Image().WriteAt(fill(192*kib, 0x5a), 16*mib+64*kib); err != nil {
		t.Fatal(err)
	}
	if i := nonZero(readBack(t, d, 16*mib+64*kib, 192*kib)); i >= 0 {
		t.Fatalf("byte %#x beyond the write pointer reads as data", 16*mib+64*kib+i)
	}
	if b := readBack(t, d, 16*mib, 64*kib); !bytes.Equal(b, fill(64*kib, 0x11)) {
		t.Fatal("data below the write pointer does not read back")
	}
	if err := d.Manage(zone.OpFinish, 16*mib, 16*mib); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if z := zoneAt(t, d, 16*mib); z.Cond != zone.CondFull {
			t.Fatalf("zone after finish: %+v", z)
		}
		if j := nonZero(readBack(t, d, 16*mib+64*kib, 16*mib-64*kib)); j >= 0 {
			t.Fatalf("finished zone exposes stale data at %#x", 16*mib+64*kib+j)
		}
		d = reopen(t, d, path)
	}
	d.Close()
}

// The reproduction of issue 7: write, flush, reset, power lost before the
// reset's discard reached the disk, then finish: the zone must read zeroes
// (the reference, and zqimg before, showed the old data under the new
// write pointer).
func TestResetCutThenFinishReadsZero(t *testing.T) {
	raw, err := os.ReadFile(newImage(t, "64M", "zone.size=8M"))
	if err != nil {
		t.Fatal(err)
	}
	d, ff := faultDevice(t, raw, image.CacheWriteBack)
	if _, err := d.WriteAt(fill(1*mib, 0x5a), 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.Manage(zone.OpReset, 0, 8*mib); err != nil {
		t.Fatal(err)
	}
	// kill -9: everything not synced is lost.
	ff2 := imagetest.NewFaultFile(ff.Durable())
	d = faultReopen(t, ff2, image.CacheWriteBack)
	if z := zoneAt(t, d, 0); z.Cond != zone.CondEmpty {
		t.Fatalf("zone after the cut reset: %+v", z)
	}
	if i := nonZero(readBack(t, d, 0, 1*mib)); i >= 0 {
		t.Fatalf("reset zone reads old data at %#x", i)
	}
	if err := d.Manage(zone.OpFinish, 0, 8*mib); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	d = faultReopen(t, imagetest.NewFaultFile(ff2.Durable()), image.CacheWriteBack)
	defer d.Close()
	if z := zoneAt(t, d, 0); z.Cond != zone.CondFull {
		t.Fatalf("zone after finish: %+v", z)
	}
	if i := nonZero(readBack(t, d, 0, 8*mib)); i >= 0 {
		t.Fatalf("finished zone reads stale data at %#x", i)
	}
}

// With writethrough, a reset and a finish are durable when they return.
func TestWritethroughManagementIsDurable(t *testing.T) {
	raw, err := os.ReadFile(newImage(t, "64M", "zone.size=8M"))
	if err != nil {
		t.Fatal(err)
	}
	d, ff := faultDevice(t, raw, image.CacheWriteThrough)
	if _, err := d.WriteAt(fill(1*mib, 0x5a), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(fill(64*kib, 0x33), 8*mib); err != nil {
		t.Fatal(err)
	}
	if err := d.Manage(zone.OpReset, 0, 8*mib); err != nil {
		t.Fatal(err)
	}
	if err := d.Manage(zone.OpFinish, 8*mib, 8*mib); err != nil {
		t.Fatal(err)
	}
	img, err := image.OpenFile(imagetest.NewMemFile(ff.Durable()), "z", image.Options{Features: image.IncompatZoned, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 16*mib)
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	// Read through the raw image: the discards themselves are durable.
	if i := nonZero(got[:8*mib]); i >= 0 {
		t.Fatalf("reset zone still holds data at %#x on disk", i)
	}
	if !bytes.Equal(got[8*mib:8*mib+64*kib], fill(64*kib, 0x33)) || nonZero(got[8*mib+64*kib:]) >= 0 {
		t.Fatal("finished zone: wrong data on disk")
	}
	d2, err := zone.New(img)
	if err != nil {
		t.Fatal(err)
	}
	if z := zoneAt(t, d2, 0); z.Cond != zone.CondEmpty {
		t.Fatalf("reset not durable: %+v", z)
	}
	if z := zoneAt(t, d2, 8*mib); z.Cond != zone.CondFull {
		t.Fatalf("finish not durable: %+v", z)
	}
}

// Sequential zones take whole 512-byte sectors; conventional zones keep
// qcow2's byte granularity.
func TestSequentialZonesTakeSectors(t *testing.T) {
	d := open(t, newImage(t, "64M", "zone.size=16M", "zone.conventional_zones=1"))
	defer d.Close()
	for _, c := range []struct{ off, n int64 }{{16 * mib, 1000}, {16*mib + 100, 512}, {16 * mib, 511}} {
		_, err := d.WriteAt(fill(int(c.n), 1), c.off)
		if !errors.Is(err, zone.ErrUnaligned) || image.Errno(err) != syscall.EINVAL {
			t.Errorf("write of %d bytes at %#x: %v; want ErrUnaligned (EINVAL)", c.n, c.off, err)
		}
		if err := d.WriteZeroes(c.off, c.n); !errors.Is(err, zone.ErrUnaligned) {
			t.Errorf("zero write of %d bytes at %#x: %v; want ErrUnaligned", c.n, c.off, err)
		}
	}
	if z := zoneAt(t, d, 16*mib); z.WP != 16*mib {
		t.Fatalf("refused writes moved the write pointer to %#x", z.WP)
	}
	if _, err := d.Append([][]byte{fill(1000, 1)}, 16*mib); !errors.Is(err, zone.ErrAppendGranularity) {
		t.Errorf("append of 1000 bytes: %v", err)
	}
	if _, err := d.WriteAt(fill(1000, 7), 12345); err != nil {
		t.Fatalf("byte-granular write to a conventional zone: %v", err)
	}
	if b := readBack(t, d, 12345, 1000); !bytes.Equal(b, fill(1000, 7)) {
		t.Fatal("conventional zone data")
	}
}

// An explicit open of a range opens every zone or none.
func TestOpenRangeAllOrNothing(t *testing.T) {
	d := open(t, newImage(t, "64M", "zone.size=8M", "zone.max_open_zones=3", "zone.max_active_zones=4"))
	defer d.Close()
	if err := d.Manage(zone.OpOpen, 0, 8*mib); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(fill(4*kib, 1), 8*mib); err != nil { // implicitly open
		t.Fatal(err)
	}
	before := must(d.Report(0, 8))
	// Zones 2-4 need three more open slots: only one can be had by closing
	// zone 1 (implicitly open), so nothing may change.
	err := d.Manage(zone.OpOpen, 16*mib, 24*mib)
	if !errors.Is(err, zone.ErrTooManyOpen) && !errors.Is(err, zone.ErrTooManyActive) {
		t.Fatalf("open of zones 2-4: %v; want a limit error", err)
	}
	if after := must(d.Report(0, 8)); !slicesEqual(before, after) {
		t.Fatalf("a failed open changed zones:\n%v\n%v", before, after)
	}
	// Zones 1-2 fit: zone 1 (implicitly open) becomes explicitly open.
	if err := d.Manage(zone.OpOpen, 8*mib, 16*mib); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 8 * mib, 16 * mib} {
		if z := zoneAt(t, d, off); z.Cond != zone.CondExpOpen {
			t.Fatalf("zone at %#x: %v", off, z.Cond)
		}
	}
}

// Once the engine marks an image corrupt, nothing writes to it: neither a
// zone reset nor the flush of Close.
func TestCorruptImageIsNotWritten(t *testing.T) {
	path := newImage(t, "64M", "zone.size=16M")
	d := open(t, path)
	if _, err := d.WriteAt(fill(64*kib, 9), 16*mib); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Make the L2 entry of the data point at an unaligned data cluster:
	// the image opens, and the first read of the data finds the damage.
	h := must(image.ParseHeader(raw))
	l2 := binary.BigEndian.Uint64(raw[h.L1TableOffset:]) & image.L1OffsetMask
	raw[l2+(16*mib/(64*kib))*8+6] |= 0x02 // +0x200: not cluster aligned
	d, ff := faultDevice(t, raw, image.CacheWriteBack)
	if _, err := d.ReadAt(make([]byte, 4096), 16*mib); !errors.Is(err, image.ErrCorrupt) {
		t.Fatalf("read through a bad L1 entry: %v", err)
	}
	ops := ff.Ops() // the corrupt bit was written
	if err := d.Manage(zone.OpReset, 16*mib, 16*mib); !errors.Is(err, image.ErrCorrupt) {
		t.Fatalf("reset of a corrupt image: %v", err)
	}
	if _, err := d.Append([][]byte{fill(512, 1)}, 0); !errors.Is(err, image.ErrCorrupt) {
		t.Fatalf("append to a corrupt image: %v", err)
	}
	d.Close()
	if ff.Ops() != ops {
		t.Fatalf("%d writes or syncs reached a corrupt image", ff.Ops()-ops)
	}
}
