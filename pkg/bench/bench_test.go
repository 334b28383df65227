package bench_test

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"

	"github.com/zqimg/zqimg/pkg/bench"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

func newZoned(t *testing.T, opts ...string) string {
	t.Helper()
	return testimg.Zoned(t, "4M", opts...)
}

// TestZonedRunWithinLimits: zoned runs at several depths write every
// request (more than the device holds, so zones are reset and reused),
// keep within the open and active limits, and leave the written zones
// holding the pattern up to their write pointers.
func TestZonedRunWithinLimits(t *testing.T) {
	for _, mode := range []string{bench.ZonedWrite, bench.ZonedAppend} {
		for _, depth := range []int{1, 3, 16} {
			path := newZoned(t, "zone.size=256k", "zone.max_open_zones=2", "zone.max_active_zones=3", "zone.max_append_bytes=32k", "zone.conventional_zones=1")
			d, err := zone.Open(path, image.Options{})
			if err != nil {
				t.Fatal(err)
			}
			res, err := bench.Run(d, bench.Options{Count: 400, Depth: depth, Size: 16 << 10, Pattern: 0x5c, Zoned: mode})
			if err != nil {
				t.Fatalf("%s depth %d: %v", mode, depth, err)
			}
			if res.Requests != 400 || res.Bytes != 400*16<<10 || res.Resets == 0 || res.Zones > 2 || res.Zones < 1 {
				t.Fatalf("%s depth %d: %+v", mode, depth, res)
			}
			zs, _ := d.Report(0, 64)
			active := 0
			for _, z := range zs {
				if z.Cond == zone.CondImpOpen || z.Cond == zone.CondExpOpen || z.Cond == zone.CondClosed {
					active++
				}
				if z.Type != zone.TypeSeqWriteRequired || z.WP == z.Start {
					continue
				}
				got := make([]byte, min(z.WP, z.Start+z.Cap)-z.Start)
				if _, err := d.ReadAt(got, int64(z.Start)); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, bytes.Repeat([]byte{0x5c}, len(got))) {
					i := bytes.IndexFunc(got, func(r rune) bool { return r != 0x5c })
					t.Fatalf("%s depth %d: zone at %#x (wp %#x) does not hold the pattern: byte %#x is %#x", mode, depth, z.Start, z.WP, uint64(i)+z.Start, got[i])
				}
			}
			if active > 3 {
				t.Fatalf("%s depth %d: %d active zones, limit 3", mode, depth, active)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestPlainRunOffsets: requests go to OFFSET + i*STEP modulo the size.
func TestPlainRunOffsets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.qcow2")
	testimg.File(t, path, "1M")
	d, err := zone.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := bench.Run(d, bench.Options{Count: 5, Depth: 4, Size: 4096, Step: 256 << 10, Offset: 512 << 10, Write: true, Pattern: 7}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1<<20)
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int{512 << 10, 768 << 10, 0, 256 << 10} {
		if got[off] != 7 || got[off+4095] != 7 || got[off+4096] != 0 {
			t.Fatalf("offset %#x not written as expected", off)
		}
	}
	if _, err := bench.Run(d, bench.Options{Count: 1, Depth: 1, Size: 4096, Step: 4096, Offset: 2 << 20}); err == nil {
		t.Fatal("a read beyond the end succeeded")
	}
}

// TestZonedRunEveryZoneInUse: with as many zones written at once as there
// are sequential zones (depth >= zones, no limit or an open limit alone),
// a zone that fills up is reset and reused by its own slot: every request
// completes (the run used to fail with "no zone free to write").
func TestZonedRunEveryZoneInUse(t *testing.T) {
	for _, mode := range []string{bench.ZonedWrite, bench.ZonedAppend} {
		for _, limits := range [][]string{{"zone.max_open_zones=4"}, nil, {"zone.conventional_zones=2"}} {
			path := newZoned(t, append([]string{"zone.size=1M", "zone.max_append_bytes=64k"}, limits...)...)
			d, err := zone.Open(path, image.Options{})
			if err != nil {
				t.Fatal(err)
			}
			res, err := bench.Run(d, bench.Options{Count: 300, Depth: 32, Size: 64 << 10, Pattern: 0x3c, Zoned: mode})
			if err != nil {
				t.Fatalf("%s %v: %v", mode, limits, err)
			}
			if res.Requests != 300 || res.Resets == 0 {
				t.Fatalf("%s %v: %+v", mode, limits, res)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestValidateBeforeRun: bad zoned options are refused by Validate,
// before any request.
func TestValidateBeforeRun(t *testing.T) {
	path := newZoned(t, "zone.size=256k", "zone.max_append_bytes=32k")
	d, err := zone.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, o := range []bench.Options{
		{Depth: 0, Size: 4096, Zoned: bench.ZonedWrite},
		{Depth: 1, Size: 1000, Zoned: bench.ZonedWrite},
		{Depth: 1, Size: 512 << 10, Zoned: bench.ZonedWrite},
		{Depth: 1, Size: 64 << 10, Zoned: bench.ZonedAppend},
		{Depth: 1, Size: 4096, Zoned: "fast"},
	} {
		if err := bench.Validate(d, o); err == nil {
			t.Errorf("%+v: accepted", o)
		}
	}
	if err := bench.Validate(d, bench.Options{Depth: 4, Size: 32 << 10, Zoned: bench.ZonedAppend}); err != nil {
		t.Errorf("valid options: %v", err)
	}
}
