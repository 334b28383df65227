package zone_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
	"github.com/zqimg/zqimg/pkg/zone"
)

// Benchmarks of the zoned layer. Images are made by pkg/create as
// `zqimg create` makes them; the "file" variants run on a regular file in
// b.TempDir (page cache; only Flush syncs), the "mem" variants on the same
// image loaded into memory, to separate the layer's CPU cost from the
// kernel's. Creating images and replacing a full device by a fresh one
// happen with the timer stopped.

// benchMakeImage creates an image with zqimg's create path and returns its path.
func benchMakeImage(tb testing.TB, dir, name, opts, size string) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	testimg.File(tb, path, size, opts)
	return path
}

// benchDevStore hands out fresh devices of one configuration.
type benchDevStore struct {
	tb         testing.TB
	mem        bool
	dir        string
	opts, size string
	n          int
	cur        string
	template   []byte             // the empty image, for the mem variant
	reserve    int                // bytes reserved for a mem image
	file       *imagetest.MemFile // mem: the current image's file; its array is reused
}

func newBenchDevStore(b *testing.B, mem bool, opts, size string, written int64) *benchDevStore {
	s := &benchDevStore{tb: b, mem: mem, dir: b.TempDir(), opts: opts, size: size}
	if mem {
		p := benchMakeImage(b, s.dir, "template.qcow2", opts, size)
		t, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		s.template = t
		s.reserve = len(t) + int(written+written/8) + 4<<20
	}
	return s
}

// fresh returns a new, empty device; the previous image file is removed
// (close its device first).
func (s *benchDevStore) fresh() *zone.Device {
	s.tb.Helper()
	if s.mem {
		// Reuse the previous device's array, cleared with the timer stopped.
		if s.file == nil {
			s.file = imagetest.NewMemFile(nil)
		}
		s.file.Reserve(s.reserve)
		s.file.Reset(s.template)
		f := s.file
		img, err := image.OpenFile(f, "mem.qcow2", image.Options{Features: image.IncompatZoned})
		if err != nil {
			s.tb.Fatal(err)
		}
		d, err := zone.New(img)
		if err != nil {
			s.tb.Fatal(err)
		}
		return d
	}
	if s.cur != "" {
		os.Remove(s.cur)
	}
	s.n++
	s.cur = benchMakeImage(s.tb, s.dir, fmt.Sprintf("zoned%d.qcow2", s.n), s.opts, s.size)
	d, err := zone.Open(s.cur, image.Options{})
	if err != nil {
		s.tb.Fatal(err)
	}
	return d
}

func benchCloseDev(tb testing.TB, d *zone.Device) {
	tb.Helper()
	if err := d.Close(); err != nil {
		tb.Fatal(err)
	}
}

const (
	benchFillSize     = 256 << 20
	benchFillZoneSize = 16 << 20
	benchFillOpts     = "zone.mode=host-managed,zone.size=16M,zone.max_append_bytes=64k"
)

var benchBackings = []struct {
	name string
	mem  bool
}{{"file", false}, {"mem", true}}

// benchFillZones writes 64 KiB per op at the write pointer of the current zone,
// zone after zone, by append or by WriteAt; a full device is replaced by a
// fresh one with the timer stopped. Compare with pkg/image's
// BenchmarkWriteSeq64K for the zoned layer's overhead.
func benchFillZones(b *testing.B, appendOp bool) {
	for _, bk := range benchBackings {
		b.Run(bk.name, func(b *testing.B) {
			s := newBenchDevStore(b, bk.mem, benchFillOpts, "256M", benchFillSize)
			d := s.fresh()
			buf := bytes.Repeat([]byte{0xcd}, 64<<10)
			bufs := [][]byte{buf}
			b.SetBytes(int64(len(buf)))
			wp := int64(0)
			for b.Loop() {
				if wp == benchFillSize {
					b.StopTimer()
					benchCloseDev(b, d)
					d = s.fresh()
					wp = 0
					b.StartTimer()
				}
				if appendOp {
					at, err := d.Append(bufs, wp&^(benchFillZoneSize-1))
					if err != nil {
						b.Fatal(err)
					}
					if at != wp {
						b.Fatalf("append landed at %d, want the write pointer %d", at, wp)
					}
				} else if _, err := d.WriteAt(buf, wp); err != nil {
					b.Fatal(err)
				}
				wp += int64(len(buf))
			}
			benchCloseDev(b, d)
		})
	}
}

// BenchmarkAppend64K: zone appends of 64 KiB filling 16 MiB zones.
func BenchmarkAppend64K(b *testing.B) { benchFillZones(b, true) }

// BenchmarkWriteAtWP: 64 KiB writes at the write pointer filling 16 MiB zones.
func BenchmarkWriteAtWP(b *testing.B) { benchFillZones(b, false) }

const (
	benchManyZones     = 1 << 20
	benchManyZonesOpts = "zone.mode=host-managed,zone.size=4k,zone.max_append_bytes=2k"
	benchManyZonesSize = "4G"
)

// benchMakeManyZones returns an image with 1,048,576 zones of 4 KiB, a few of
// them written (so that the report has more than one condition).
func benchMakeManyZones(b *testing.B) string {
	b.Helper()
	p := benchMakeImage(b, b.TempDir(), "many.qcow2", benchManyZonesOpts, benchManyZonesSize)
	d, err := zone.Open(p, image.Options{})
	if err != nil {
		b.Fatal(err)
	}
	buf := bytes.Repeat([]byte{0xcd}, 512)
	for z := int64(0); z < benchManyZones; z += benchManyZones / 64 {
		if _, err := d.WriteAt(buf, z*4096); err != nil {
			b.Fatal(err)
		}
	}
	benchCloseDev(b, d)
	return p
}

// BenchmarkReport1MZones iterates Zones over all 1,048,576 zones of an open
// device (one op = one full report; the ns/zone metric divides it).
func BenchmarkReport1MZones(b *testing.B) {
	p := benchMakeManyZones(b)
	d, err := zone.Open(p, image.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	var n uint64
	var sum uint64
	for b.Loop() {
		seq, err := d.Zones(0, benchManyZones)
		if err != nil {
			b.Fatal(err)
		}
		n = 0
		for z, err := range seq {
			if err != nil {
				b.Fatal(err)
			}
			sum += z.WP + uint64(z.Cond)
			n++
		}
	}
	if n != benchManyZones {
		b.Fatalf("report yielded %d zones, want %d", n, benchManyZones)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchManyZones, "ns/zone")
	_ = sum
}

// BenchmarkOpen1MZones opens (read-only) and closes a device with
// 1,048,576 zones: reading and validating the 8 MiB write-pointer table and
// building the zone state, the fixed cost of every `zqimg zrp` on it.
func BenchmarkOpen1MZones(b *testing.B) {
	p := benchMakeManyZones(b)
	for b.Loop() {
		d, err := zone.Open(p, image.Options{ReadOnly: true})
		if err != nil {
			b.Fatal(err)
		}
		if err := d.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
