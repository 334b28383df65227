package zone_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
	"github.com/zqimg/zqimg/pkg/zone"
)

const (
	kib = 1 << 10
	mib = 1 << 20
)

// newImage creates a zoned image with the given -o options and returns
// its path.
func newImage(t testing.TB, size string, opts ...string) string {
	t.Helper()
	return testimg.Zoned(t, size, opts...)
}

func open(t testing.TB, path string) *zone.Device {
	t.Helper()
	d, err := zone.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func reopen(t testing.TB, d *zone.Device, path string) *zone.Device {
	t.Helper()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return open(t, path)
}

func fill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

func readBack(t testing.TB, d *zone.Device, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := d.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func zoneAt(t testing.TB, d *zone.Device, off int64) zone.Zone {
	t.Helper()
	zs, err := d.Report(off, 1)
	if err != nil || len(zs) != 1 {
		t.Fatalf("report at %#x: %v %v", off, zs, err)
	}
	return zs[0]
}

// Appended data lands at the write pointer that the append reports, not
// at the zone start (the reference patch's defect), also after a reopen.
func TestAppendDataLandsAtReportedOffset(t *testing.T) {
	path := newImage(t, "128M", "zone.size=32M", "zone.max_append_bytes=1M")
	d := open(t, path)
	type rec struct {
		off  int64
		data []byte
	}
	var recs []rec
	zs := int64(32 * mib)
	for i, n := range []int{4 * kib, 8 * kib, 512, 64 * kib, 12 * kib} {
		for _, z := range []int64{0, zs} {
			data := fill(n, byte(0x10*i+int(z/zs)+1))
			before := zoneAt(t, d, z).WP
			pos, err := d.Append([][]byte{data}, z)
			if err != nil {
				t.Fatal(err)
			}
			if uint64(pos) != before {
				t.Fatalf("append landed at %#x, write pointer was %#x", pos, before)
			}
			if got := zoneAt(t, d, z).WP; got != before+uint64(n) {
				t.Fatalf("write pointer %#x after appending %d bytes at %#x", got, n, before)
			}
			recs = append(recs, rec{pos, data})
		}
	}
	check := func(d *zone.Device) {
		for _, r := range recs {
			if got := readBack(t, d, r.off, len(r.data)); !bytes.Equal(got, r.data) {
				t.Fatalf("data appended at %#x reads back wrong (first byte %#x, want %#x)", r.off, got[0], r.data[0])
			}
		}
	}
	check(d)
	d = reopen(t, d, path)
	check(d)
	// Appending more after the reopen continues at the persisted pointer.
	pos, err := d.Append([][]byte{fill(4*kib, 0xee), fill(4*kib, 0xef)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, d, pos, 8*kib); !bytes.Equal(got, append(fill(4*kib, 0xee), fill(4*kib, 0xef)...)) {
		t.Fatal("multi-buffer append does not read back in order")
	}
	check(d)
	d.Close()
}

// Reset gives the space back: the zone's clusters drop to refcount 0, reads
// return zeroes, and rewriting the zone reuses the space.
func TestResetFreesClusters(t *testing.T) {
	path := newImage(t, "64M", "zone.size=16M")
	d := open(t, path)
	for off := int64(0); off < 16*mib; off += mib {
		if _, err := d.WriteAt(fill(mib, 0xab), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	img := d.Image()
	var hosts []uint64
	for off := int64(0); off < 16*mib; off += img.ClusterSize() {
		k, host, err := img.Map(off)
		if err != nil || k != image.Data {
			t.Fatalf("guest %#x: %v %v", off, k, err)
		}
		hosts = append(hosts, host)
	}
	sizeFull, _ := img.FileSize()
	if err := d.Manage(zone.OpReset, 0, 16*mib); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if rc, err := img.Refcount(h); err != nil || rc != 0 {
			t.Fatalf("host cluster %#x refcount %d after reset (%v)", h, rc, err)
		}
	}
	if got := readBack(t, d, 0, 16*mib); !bytes.Equal(got, make([]byte, 16*mib)) {
		t.Fatal("reset zone does not read as zeroes")
	}
	if z := zoneAt(t, d, 0); z.Cond != zone.CondEmpty || z.WP != 0 {
		t.Fatalf("zone after reset: %+v", z)
	}
	// Refill: the freed clusters are reused, the file does not grow.
	for off := int64(0); off < 16*mib; off += mib {
		if _, err := d.WriteAt(fill(mib, 0xcd), off); err != nil {
			t.Fatal(err)
		}
	}
	d = reopen(t, d, path)
	if size, _ := d.Image().FileSize(); size > sizeFull {
		t.Fatalf("file grew from %d to %d although the reset freed the space", sizeFull, size)
	}
	if got := readBack(t, d, 5*mib, 4*kib); !bytes.Equal(got, fill(4*kib, 0xcd)) {
		t.Fatal("rewritten data")
	}
	d.Close()
}

func TestManagementAppliesToEveryZoneOfTheRange(t *testing.T) {
	path := newImage(t, "128M", "zone.size=16M")
	d := open(t, path)
	if err := d.Manage(zone.OpOpen, 16*mib, 48*mib); err != nil {
		t.Fatal(err)
	}
	zs, _ := d.Report(0, 8)
	want := []zone.Cond{zone.CondEmpty, zone.CondExpOpen, zone.CondExpOpen, zone.CondExpOpen, zone.CondEmpty}
	for i, c := range want {
		if zs[i].Cond != c {
			t.Fatalf("zone %d: %v, want %v", i, zs[i].Cond, c)
		}
	}
	if err := d.Manage(zone.OpFinish, 0, 64*mib); err != nil {
		t.Fatal(err)
	}
	zs, _ = d.Report(0, 8)
	for i := 0; i < 4; i++ {
		if zs[i].Cond != zone.CondFull || zs[i].WP != zs[i].Start+zs[i].Len {
			t.Fatalf("zone %d after finish: %+v", i, zs[i])
		}
	}
	if zs[4].Cond != zone.CondEmpty {
		t.Fatalf("zone 4 outside the range changed: %+v", zs[4])
	}
	// A length reaching the end of the device need not be a multiple of
	// the zone size... here it is the whole device.
	if err := d.Manage(zone.OpReset, 0, 128*mib); err != nil {
		t.Fatal(err)
	}
	for _, z := range must(d.Report(0, 8)) {
		if z.Cond != zone.CondEmpty {
			t.Fatalf("after resetting everything: %+v", z)
		}
	}
	d.Close()
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestManagementErrors(t *testing.T) {
	path := newImage(t, "100M", "zone.size=32M", "zone.conventional_zones=1")
	d := open(t, path)
	defer d.Close()
	cases := []struct {
		op       zone.Op
		off, len int64
		err      error
		errno    syscall.Errno
	}{
		{zone.OpOpen, 4 * kib, 32 * mib, zone.ErrNotZoneStart, syscall.EINVAL},
		{zone.OpOpen, 32 * mib, 16 * mib, zone.ErrBadLength, syscall.EINVAL},
		{zone.OpOpen, 32 * mib, 0, zone.ErrBadLength, syscall.EINVAL},
		{zone.OpOpen, 0, 32 * mib, zone.ErrConventional, syscall.EIO},
		{zone.OpReset, 0, 64 * mib, zone.ErrConventional, syscall.EIO},
		{zone.OpClose, 100 * mib, 0, zone.ErrBeyondDevice, syscall.EINVAL},
		{zone.OpFinish, 96 * mib, 32 * mib, image.ErrOutOfRange, syscall.EIO},
	}
	for _, c := range cases {
		err := d.Manage(c.op, c.off, c.len)
		if !errors.Is(err, c.err) || image.Errno(err) != c.errno {
			t.Errorf("%v %#x+%#x: got %v (errno %v), want %v (%v)", c.op, c.off, c.len, err, image.Errno(err), c.err, c.errno)
		}
	}
	// The last zone is 4 MiB: a range reaching the end of the device is
	// fine without being a multiple of the zone size.
	if err := d.Manage(zone.OpFinish, 96*mib, 4*mib); err != nil {
		t.Fatal(err)
	}
	// The write pointer is start + zone_size, past the device end, as the
	// reference's finish leaves it.
	if z := zoneAt(t, d, 96*mib); z.Cond != zone.CondFull || z.WP != 96*mib+d.Header().ZoneSize {
		t.Fatalf("small last zone after finish: %+v", z)
	}
	// A reset of the whole device skips the conventional zone.
	if _, err := d.WriteAt(fill(4*kib, 0x77), 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Manage(zone.OpReset, 0, 100*mib); err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, d, 0, 4*kib); !bytes.Equal(got, fill(4*kib, 0x77)) {
		t.Fatal("whole-device reset touched the conventional zone")
	}
}

func TestWriteRules(t *testing.T) {
	path := newImage(t, "96M", "zone.size=32M", "zone.conventional_zones=1", "zone.max_append_bytes=64k")
	d := open(t, path)
	defer d.Close()
	// Conventional zone: random writes anywhere, rewrites allowed.
	for _, off := range []int64{8 * mib, 0, 8 * mib} {
		if _, err := d.WriteAt(fill(4*kib, 1), off); err != nil {
			t.Fatal(err)
		}
	}
	// ... but not into the sequential zone behind it.
	if _, err := d.WriteAt(fill(8*kib, 1), 32*mib-4*kib); !errors.Is(err, zone.ErrCrossesZone) {
		t.Fatalf("write from a conventional into a sequential zone: %v", err)
	}
	_, offWP := d.WriteAt(fill(4*kib, 1), 32*mib+4*kib)
	if !errors.Is(offWP, zone.ErrNotAtWritePointer) {
		t.Fatalf("write off the write pointer: %v", offWP)
	}
	if _, err := d.WriteAt(fill(4*kib, 1), 64*mib-4*kib); !errors.Is(err, zone.ErrNotAtWritePointer) {
		t.Fatalf("write off the write pointer: %v", err)
	}
	pastCap := d.WriteZeroes(32*mib, 33*mib)
	if !errors.Is(pastCap, zone.ErrBeyondCapacity) {
		t.Fatalf("zero write across the zone end: %v", pastCap)
	}
	if err := d.WriteZeroes(32*mib, 4*kib); err != nil {
		t.Fatal(err)
	}
	if z := zoneAt(t, d, 32*mib); z.WP != 32*mib+4*kib || z.Cond != zone.CondImpOpen {
		t.Fatalf("after a zero write: %+v", z)
	}
	if _, err := d.Append([][]byte{fill(128*kib, 1)}, 32*mib); !errors.Is(err, zone.ErrAppendTooLarge) {
		t.Fatalf("append over max_append_bytes: %v", err)
	}
	if _, err := d.Append([][]byte{fill(1000, 1)}, 32*mib); !errors.Is(err, zone.ErrAppendGranularity) {
		t.Fatalf("append of 1000 bytes: %v", err)
	}
	if _, err := d.Append([][]byte{fill(4*kib, 1)}, 33*mib); !errors.Is(err, zone.ErrNotZoneStart) {
		t.Fatalf("append not at a zone start: %v", err)
	}
	if _, err := d.Append([][]byte{fill(4*kib, 1)}, 0); !errors.Is(err, zone.ErrConventional) {
		t.Fatalf("append to a conventional zone: %v", err)
	}
	if _, err := d.Append([][]byte{fill(4*kib, 1)}, 96*mib); !errors.Is(err, zone.ErrBeyondDevice) {
		t.Fatalf("append beyond the device: %v", err)
	}
	if err := d.Discard(32*mib, 4*kib); !errors.Is(err, zone.ErrSequentialDiscard) {
		t.Fatalf("discard in a sequential zone: %v", err)
	}
	if err := d.Discard(0, 4*kib); err != nil {
		t.Fatal(err)
	}
	// The errors name the problem: the zone, the offsets in hex, and an
	// errno for the request.
	for _, tc := range []struct {
		err  error
		want []string
	}{
		{offWP, []string{"zone 1", "offset 0x2001000", "write pointer 0x2000000"}},
		{pastCap, []string{"zone 1", "offset 0x2000000", "ends at 0x4000000"}},
	} {
		var ze *zone.Error
		if !errors.As(tc.err, &ze) || ze.Errno() != syscall.EINVAL {
			t.Errorf("%v: not a *zone.Error with EINVAL", tc.err)
		}
		for _, w := range tc.want {
			if !strings.Contains(tc.err.Error(), w) {
				t.Errorf("error %q does not say %q", tc.err, w)
			}
		}
	}
}

func TestNotZoned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.qcow2")
	testimg.File(t, path, "16M")
	d := open(t, path)
	defer d.Close()
	if d.Zoned() || d.Header() != nil {
		t.Fatal("plain image reported as zoned")
	}
	_, err := d.Report(0, 1)
	if !errors.Is(err, zone.ErrNotZoned) || image.Errno(err) != syscall.ENOTSUP {
		t.Fatalf("zone report on a plain image: %v", err)
	}
	if err := d.Manage(zone.OpOpen, 0, 16*mib); !errors.Is(err, zone.ErrNotZoned) {
		t.Fatalf("zone open on a plain image: %v", err)
	}
	if _, err := d.Append([][]byte{fill(512, 1)}, 0); !errors.Is(err, zone.ErrNotZoned) {
		t.Fatalf("zone append on a plain image: %v", err)
	}
	// Plain images accept random writes.
	if _, err := d.WriteAt(fill(512, 1), 8*mib); err != nil {
		t.Fatal(err)
	}
}

// wpOnDisk reads write-pointer entry i straight from the file.
func wpOnDisk(t *testing.T, path string, i int) uint64 {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := open(t, path)
	h := d.Header()
	d.Close()
	return binary.LittleEndian.Uint64(raw[h.MetaOffset+uint64(8*i):])
}

// Write pointers reach the file only after the data they cover: a write
// advances the pointer in memory; Flush persists it; a reset persists the
// smaller pointer before the data is discarded.
func TestWritePointerPersistence(t *testing.T) {
	path := newImage(t, "64M", "zone.size=16M")
	d, err := zone.Open(path, image.Options{NoLock: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(fill(64*kib, 5), 16*mib); err != nil {
		t.Fatal(err)
	}
	if got := wpOnDisk(t, path, 1); got != 16*mib {
		t.Fatalf("write pointer reached the file before a flush: %#x", got)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := wpOnDisk(t, path, 1); got != 16*mib+64*kib {
		t.Fatalf("write pointer after flush: %#x", got)
	}
	if _, err := d.WriteAt(fill(64*kib, 6), 16*mib+64*kib); err != nil {
		t.Fatal(err)
	}
	if err := d.Manage(zone.OpReset, 16*mib, 16*mib); err != nil {
		t.Fatal(err)
	}
	if got := wpOnDisk(t, path, 1); got != 16*mib {
		t.Fatalf("reset write pointer not persisted before the discard: %#x", got)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// A damaged write-pointer entry is found the first time its part of the
// table is used (the table is read a chunk of 4096 zones at a time): the
// image opens, zones in other chunks work, and every request touching the
// damaged chunk fails with ErrBadTable naming the zone and the value.
func TestBadWritePointerFoundWhenUsed(t *testing.T) {
	path := newImage(t, "32M", "zone.size=2k", "zone.max_append_bytes=512", "cluster_size=4k")
	d := open(t, path)
	off := d.Header().MetaOffset
	d.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	const bad = 10000 // zone 10000 spans [0x1388000, 0x1388800), chunk 2
	binary.LittleEndian.PutUint64(b[:], 0x1389000)
	f.WriteAt(b[:], int64(off)+8*bad)
	f.Close()
	d, err = zone.Open(path, image.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer d.Close()
	if _, err := d.WriteAt(fill(512, 1), 0); err != nil {
		t.Fatalf("zone 0 (another chunk): %v", err)
	}
	wantBad := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, zone.ErrBadTable) || !strings.Contains(err.Error(), "zone 10000") || !strings.Contains(err.Error(), "0x1389000") {
			t.Fatalf("%s: %v; want ErrBadTable naming zone 10000 and 0x1389000", what, err)
		}
	}
	_, err = d.Report(bad*2048, 1)
	wantBad("report", err)
	_, err = d.WriteAt(fill(512, 1), bad*2048)
	wantBad("write", err)
	_, err = d.ReadAt(make([]byte, 512), 9000*2048)
	wantBad("read in the same chunk", err)
	wantBad("finish", d.Manage(zone.OpFinish, 9000*2048, 2048))
	_, err = d.Counts()
	wantBad("counts", err)
}

func TestManageReadOnly(t *testing.T) {
	path := newImage(t, "64M", "zone.size=16M")
	d := open(t, path)
	if _, err := d.Append([][]byte{fill(4*kib, 1)}, 0); err != nil {
		t.Fatal(err)
	}
	d.Close()
	ro, err := zone.Open(path, image.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	before := must(ro.Report(0, 4))
	for op := zone.OpOpen; op <= zone.OpReset; op++ {
		if err := ro.Manage(op, 0, 16*mib); !errors.Is(err, image.ErrReadOnly) {
			t.Fatalf("%v on a read-only device: %v", op, err)
		}
	}
	if after := must(ro.Report(0, 4)); !slicesEqual(before, after) {
		t.Fatalf("zones changed on a read-only device: %v -> %v", before, after)
	}
}

func slicesEqual(a, b []zone.Zone) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A reset whose write-pointer update cannot be written leaves the zones as
// they were (the state changes only once the smaller pointers are durable).
func TestResetFailureKeepsState(t *testing.T) {
	path := newImage(t, "64M", "zone.size=16M")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ff := imagetest.NewFaultFile(raw)
	img, err := image.OpenFile(ff, "z", image.Options{Features: image.IncompatZoned, NoLock: true})
	if err != nil {
		t.Fatal(err)
	}
	d, err := zone.New(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(fill(8*kib, 3), 16*mib); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	ff.PowerFailAfter(ff.Ops()) // the next write fails
	if err := d.Manage(zone.OpReset, 16*mib, 16*mib); err == nil {
		t.Fatal("reset succeeded although its write failed")
	}
	z := zoneAt(t, d, 16*mib)
	if z.WP != 16*mib+8*kib || z.Cond != zone.CondImpOpen {
		t.Fatalf("zone changed by a failed reset: %+v", z)
	}
}
