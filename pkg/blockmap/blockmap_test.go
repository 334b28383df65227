package blockmap_test

import (
	"bytes"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"

	"github.com/zqimg/zqimg/pkg/blockdev"
	"github.com/zqimg/zqimg/pkg/blockmap"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

func mkImage(t *testing.T, path string, size int64, opts ...string) {
	t.Helper()
	testimg.File(t, path, strconv.FormatInt(size, 10), opts...)
}

func walk(t *testing.T, d *blockdev.Disk, start, length int64) []blockmap.Entry {
	t.Helper()
	var out []blockmap.Entry
	lastSeen := false
	err := blockmap.Walk(d, start, length, func(e blockmap.Entry, last bool) error {
		if lastSeen {
			t.Fatal("entry after the last one")
		}
		lastSeen = last
		out = append(out, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !lastSeen {
		t.Fatal("no last entry")
	}
	return out
}

// Entries tile the range; contiguous data is one entry, data at host
// offsets that do not follow on is not merged; empty ranges give one
// entry of length 0.
func TestWalk(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.qcow2")
	mkImage(t, path, 4<<20)
	img, err := image.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := bytes.Repeat([]byte{1}, 65536)
	img.WriteAt(p, 2<<20) // host cluster n
	img.WriteAt(p, 65536) // n+1
	img.WriteAt(p, 0)     // n+2: guest 0 and 64k are not stored contiguously
	img.WriteAt(p, 3<<20)
	img.WriteZeroes(3<<20, 65536) // a zero cluster
	img.Close()
	d, err := blockdev.Open(path, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	es := walk(t, d, 0, -1)
	type brief struct {
		start, length int64
		data, zero    bool
	}
	want := []brief{{0, 64 << 10, true, false}, {64 << 10, 64 << 10, true, false}, {128 << 10, 2<<20 - 128<<10, false, true},
		{2 << 20, 64 << 10, true, false}, {2<<20 + 64<<10, 1<<20 - 64<<10, false, true},
		{3 << 20, 64 << 10, false, true}, {3<<20 + 64<<10, 1<<20 - 64<<10, false, true}}
	if len(es) != len(want) {
		t.Fatalf("%d entries: %+v", len(es), es)
	}
	for i, e := range es {
		w := want[i]
		if e.Start != w.start || e.Length != w.length || e.Data != w.data || e.Zero != w.zero {
			t.Errorf("entry %d: %+v, want %+v", i, e, w)
		}
	}
	if !es[5].Present || es[4].Present || es[0].File != path || !es[0].HasOffset || es[1].Offset+65536 != es[0].Offset {
		t.Errorf("present/file: %+v", es)
	}
	// Sub-ranges, and ranges beyond the end.
	if es := walk(t, d, 32<<10, 128<<10); len(es) != 3 || es[0].Start != 32<<10 || es[0].Length != 32<<10 || es[2].Length != 32<<10 {
		t.Errorf("sub-range: %+v", es)
	}
	if es := walk(t, d, 5<<20, -1); len(es) != 1 || es[0].Length != 0 || es[0].Start != 5<<20 {
		t.Errorf("beyond the end: %+v", es)
	}
	if es := walk(t, d, 0, 0); len(es) != 1 || es[0].Length != 0 {
		t.Errorf("empty range: %+v", es)
	}
}

// Zones: write pointer, condition, and the bytes stored as data below the
// write pointer (data beyond it is not counted).
func TestZones(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "z.qcow2")
	mkImage(t, path, 3<<20, "zone.mode=host-managed,zone.size=1M,zone.conventional_zones=1")
	dev, err := zone.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dev.WriteAt(bytes.Repeat([]byte{1}, 100<<10), 0)
	dev.WriteAt(bytes.Repeat([]byte{2}, 100<<10), 1<<20)
	dev.Close()
	img, _ := image.Open(path, image.Options{Features: image.IncompatZoned})
	img.WriteAt(bytes.Repeat([]byte{3}, 64<<10), 1<<20+512<<10)
	img.Close()
	d, err := blockdev.Open(path, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	zs, err := blockmap.Zones(d)
	if err != nil {
		t.Fatal(err)
	}
	if len(zs) != 3 {
		t.Fatalf("%d zones", len(zs))
	}
	// The conventional zone holds whole clusters (128 KiB); the sequential
	// one counts up to its write pointer.
	if zs[0].Cond != zone.CondNotWP || zs[0].Allocated != 128<<10 {
		t.Errorf("zone 0: %+v", zs[0])
	}
	if zs[1].Cond != zone.CondClosed || zs[1].WP != 1<<20+100<<10 || zs[1].Allocated != 100<<10 {
		t.Errorf("zone 1: %+v", zs[1])
	}
	if zs[2].Cond != zone.CondEmpty || zs[2].Allocated != 0 {
		t.Errorf("zone 2: %+v", zs[2])
	}
	plain := filepath.Join(dir, "p.qcow2")
	mkImage(t, plain, 1<<20)
	pd, _ := blockdev.Open(plain, blockdev.Options{})
	defer pd.Close()
	if zs, err := blockmap.Zones(pd); zs != nil || err != nil {
		t.Errorf("plain image: %v %v", zs, err)
	}
}
