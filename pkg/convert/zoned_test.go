package convert_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"

	"github.com/zqimg/zqimg/pkg/blockdev"
	"github.com/zqimg/zqimg/pkg/blockmap"
	pcheck "github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/compare"
	"github.com/zqimg/zqimg/pkg/convert"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// zonedConfig is a zoned image configuration of the tests.
type zonedConfig struct {
	name string
	opts []string
	size string
}

var zonedConfigs = []zonedConfig{
	{"64k-clusters", []string{"zone.mode=host-managed,zone.size=256k,zone.max_open_zones=3,zone.max_active_zones=4"}, "3M"},
	{"conv-capacity-4k", []string{"zone.mode=host-managed,zone.size=128k,zone.capacity=96k,zone.conventional_zones=2,zone.max_append_bytes=32k,cluster_size=4k"}, "2M+64k"},
	{"zones-smaller-than-clusters", []string{"zone.mode=host-managed,zone.size=16k,zone.conventional_zones=1,zone.max_append_bytes=4k"}, "1M"},
	{"short-last-zone-512", []string{"zone.mode=host-managed,zone.size=64k,zone.max_append_bytes=8k,cluster_size=512,refcount_bits=64"}, "1M-4k"},
}

func parseSize(t testing.TB, s string) string {
	t.Helper()
	var n int64
	for _, part := range strings.Split(strings.ReplaceAll(s, "-", "+-"), "+") {
		sign := int64(1)
		if strings.HasPrefix(part, "-") {
			sign, part = -1, part[1:]
		}
		mul := int64(1)
		switch part[len(part)-1] {
		case 'k':
			mul, part = 1<<10, part[:len(part)-1]
		case 'M':
			mul, part = 1<<20, part[:len(part)-1]
		}
		var v int64
		fmt.Sscan(part, &v)
		n += sign * v * mul
	}
	return fmt.Sprint(n)
}

func createImage(t testing.TB, path string, opts []string, size string) {
	t.Helper()
	testimg.File(t, path, parseSize(t, size), opts...)
}

// zonedSource builds a zoned image with random writes at the write
// pointers (data ending on zeroes in some zones, on data in others),
// appends, finished and reset zones, random writes in conventional zones,
// and data left beyond write pointers (as a crash leaves it). It returns
// the device's bytes as a reader sees them (zeroes beyond write pointers)
// and the zones that ended on a non-zero sector.
func zonedSource(t *testing.T, rng *rand.Rand, path string, c zonedConfig) ([]byte, *zone.Header) {
	t.Helper()
	createImage(t, path, c.opts, c.size)
	d, err := zone.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := d.Header()
	size := d.Size()
	model := make([]byte, size)
	pattern := func(n int64, zeroTail bool) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Intn(7)) // compressible, with zero bytes
		}
		if rng.Intn(3) == 0 {
			// a run of zeroes inside
			a := rng.Int63n(n)
			clear(p[a:min(n, a+rng.Int63n(8192))])
		}
		if zeroTail {
			clear(p[n-min(n, 512*(1+rng.Int63n(3))):])
		} else {
			p[n-1] = 0xee
		}
		return p
	}
	zs := int64(h.ZoneSize)
	// Two zones written a little and finished: the last one (short in
	// some configurations) and the first sequential one (whose capacity
	// may be less than its size). The random operations leave them be.
	protected := map[int]bool{}
	for _, i := range []uint32{h.NrZones - 1, h.ConventionalZones} {
		start := int64(i) * zs
		p := pattern(2048, false)
		if _, err := d.WriteAt(p, start); err != nil {
			t.Fatal(err)
		}
		copy(model[start:], p)
		if err := d.Manage(zone.OpFinish, start, min(zs, size-start)); err != nil {
			t.Fatal(err)
		}
		protected[int(i)] = true
	}
	for k := 0; k < 40; k++ {
		zones, err := d.Report(0, uint64(h.NrZones))
		if err != nil {
			t.Fatal(err)
		}
		i := rng.Intn(len(zones))
		if protected[i] {
			continue
		}
		z := zones[i]
		capEnd := int64(z.Start + z.Cap)
		switch {
		case z.Type == zone.TypeConventional:
			off := int64(z.Start) + rng.Int63n(int64(z.Len))
			n := 1 + rng.Int63n(min(int64(z.Start+z.Len)-off, 20000))
			p := pattern(n, false)
			if _, err := d.WriteAt(p, off); err != nil {
				t.Fatalf("conventional write: %v", err)
			}
			copy(model[off:], p)
		case rng.Intn(8) == 0 && z.Cond != zone.CondEmpty:
			if err := d.Manage(zone.OpReset, int64(z.Start), min(zs, size-int64(z.Start))); err != nil {
				t.Fatalf("reset: %v", err)
			}
			clear(model[z.Start : z.Start+z.Len])
		case rng.Intn(8) == 0 && z.Cond != zone.CondFull:
			if err := d.Manage(zone.OpFinish, int64(z.Start), min(zs, size-int64(z.Start))); err != nil && !errors.Is(err, zone.ErrTooManyActive) {
				t.Fatalf("finish: %v", err)
			}
		case int64(z.WP) < capEnd:
			room := capEnd - int64(z.WP)
			n := 512 * (1 + rng.Int63n(min(room, 40000)/512))
			if n > room {
				n = room
			}
			p := pattern(n, rng.Intn(3) == 0)
			if _, err := d.WriteAt(p, int64(z.WP)); err != nil {
				if errors.Is(err, zone.ErrTooManyActive) {
					continue
				}
				t.Fatalf("write at the write pointer of zone %d: %v", i, err)
			}
			copy(model[z.WP:], p)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// Data beyond write pointers, written below the zoned layer.
	d, err = zone.Open(path, image.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	zones, _ := d.Report(0, uint64(h.NrZones))
	d.Close()
	img, err := image.Open(path, image.Options{Features: image.IncompatZoned})
	if err != nil {
		t.Fatal(err)
	}
	injected := 0
	for _, z := range zones {
		if z.Type == zone.TypeConventional || z.WP >= z.Start+z.Cap || (rng.Intn(2) == 0 && injected > 0) {
			continue
		}
		injected++
		n := min(int64(z.Start+z.Cap-z.WP), 3000)
		if _, err := img.WriteAt(bytes.Repeat([]byte{0xbd}, int(n)), int64(z.WP)); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if injected == 0 {
		t.Fatal("no zone to leave data beyond its write pointer in")
	}
	return model, h
}

func openDisk(t testing.TB, path, format string) *blockdev.Disk {
	t.Helper()
	d, err := blockdev.Open(path, blockdev.Options{Format: format})
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	return d
}

func readDisk(t testing.TB, d *blockdev.Disk) []byte {
	t.Helper()
	p := make([]byte, d.Size())
	if _, err := d.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	return p
}

func checkClean(t testing.TB, path string) {
	t.Helper()
	r, err := pcheck.CheckPath(path, pcheck.Options{})
	if err != nil || !r.Clean() {
		var b strings.Builder
		if r != nil {
			for _, f := range r.Findings {
				b.WriteString(f.Msg + "\n")
			}
		}
		t.Fatalf("check of %s: %v\n%s", filepath.Base(path), err, b.String())
	}
}

func doConvert(t testing.TB, src *blockdev.Disk, dst, format string, compress bool, opts ...string) *convert.Result {
	t.Helper()
	res, err := convert.Convert(convert.Request{Source: src, Dest: dst, Format: format, Options: opts, Compress: compress})
	if err != nil {
		t.Fatalf("convert to %s: %v", filepath.Base(dst), err)
	}
	return res
}

func identical(t testing.TB, a, b string) *compare.Result {
	t.Helper()
	da, db := openDisk(t, a, ""), openDisk(t, b, "")
	defer da.Close()
	defer db.Close()
	r, err := compare.Compare(da, db, compare.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Zoned images: reads and map stop at write pointers; conversions to
// qcow2 with another cluster size, compressed with zlib and zstd, keep
// every write pointer and the data, check clean and compare identical;
// a raw export holds the device's bytes, and importing it back gives the
// same data, and the same write pointers for zones that ended on non-zero
// data.
func TestZonedConversions(t *testing.T) {
	for ci, c := range zonedConfigs {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			rng := rand.New(rand.NewSource(int64(ci) + 1))
			srcPath := filepath.Join(dir, "src.qcow2")
			model, h := zonedSource(t, rng, srcPath, c)
			src := openDisk(t, srcPath, "qcow2")
			defer src.Close()
			if got := readDisk(t, src); !bytes.Equal(got, model) {
				t.Fatal("the source does not read as the model (data beyond write pointers?)")
			}
			// map: no data at or beyond a write pointer.
			zones := src.Zones()
			err := blockmap.Walk(src, 0, -1, func(e blockmap.Entry, last bool) error {
				if !e.Data {
					return nil
				}
				for off := e.Start; off < e.Start+e.Length; {
					z := zones[uint64(off)/h.ZoneSize]
					if uint64(off) >= blockdev.ValidEnd(z) {
						return fmt.Errorf("map reports data at 0x%x, at or beyond the write pointer 0x%x of the zone at 0x%x", off, z.WP, z.Start)
					}
					off = int64(z.Start + z.Len)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// The random source covers what the test is about.
			var closed, finished, full int
			for _, z := range zones {
				switch {
				case z.Cond == zone.CondClosed:
					closed++
				case z.Cond == zone.CondFull && z.WP > z.Start+z.Cap:
					finished++
				case z.Cond == zone.CondFull:
					full++
				}
			}
			if closed == 0 || full+finished < 2 || (finished == 0 && (h.ZoneCapacity < h.ZoneSize || zones[len(zones)-1].Len < h.ZoneSize)) {
				t.Fatalf("source has %d closed, %d finished, %d full zones: not a useful test", closed, finished, full)
			}
			if r, _ := pcheck.CheckPath(srcPath, pcheck.Options{}); int64(h.ZoneSize) >= src.Image().ClusterSize() && (r == nil || r.Zoned == nil || r.Zoned.DataBeyondWP == 0) {
				t.Fatal("source has no data beyond write pointers: not a useful test")
			}
			cs := src.Image().ClusterSize()
			other := map[int64]string{512: "4k", 4096: "64k", 65536: "512"}[cs]
			for _, v := range []struct {
				name     string
				compress bool
				opts     []string
			}{
				{"cluster-" + other, false, []string{"cluster_size=" + other}},
				{"zlib", true, nil},
				{"zstd-extl2", true, []string{"compression_type=zstd,cluster_size=16k,extended_l2=on"}},
				{"limits", false, []string{"zone.max_open_zones=1,refcount_bits=2"}},
			} {
				dst := filepath.Join(dir, v.name+".qcow2")
				res := doConvert(t, src, dst, "qcow2", v.compress, v.opts...)
				checkClean(t, dst)
				if r := identical(t, srcPath, dst); r.Kind != compare.Identical {
					t.Fatalf("%s: compare says %v", v.name, r.Lines())
				}
				d := openDisk(t, dst, "")
				for i, z := range d.Zones() {
					if z.WP != zones[i].WP || z.Cond != zones[i].Cond {
						t.Fatalf("%s: zone %d: write pointer 0x%x (%v), source 0x%x (%v)", v.name, i, z.WP, z.Cond, zones[i].WP, zones[i].Cond)
					}
				}
				if !bytes.Equal(readDisk(t, d), model) {
					t.Fatalf("%s: data differs", v.name)
				}
				// Whole clusters below write pointers are compressed, so
				// zones smaller than a cluster never are.
				dcs := d.Image().ClusterSize()
				if v.compress && res.Compressed == 0 && int64(h.ZoneSize) >= dcs {
					t.Errorf("%s: no cluster was compressed", v.name)
				}
				if v.compress && res.Compressed != 0 && int64(h.ZoneSize) < dcs && h.ConventionalZones == 0 {
					t.Errorf("%s: %d clusters compressed in zones smaller than a cluster", v.name, res.Compressed)
				}
				d.Close()
			}
			// Raw export and import.
			rawPath := filepath.Join(dir, "dev.raw")
			doConvert(t, src, rawPath, "raw", false)
			raw, err := os.ReadFile(rawPath)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(raw, model) {
				t.Fatal("the raw export is not the device's bytes")
			}
			rawDisk := openDisk(t, rawPath, "raw")
			back := filepath.Join(dir, "back.qcow2")
			geometry := fmt.Sprintf("zone.mode=host-managed,zone.size=%d,zone.capacity=%d,zone.conventional_zones=%d,zone.max_append_bytes=%d,cluster_size=%d",
				h.ZoneSize, h.ZoneCapacity, h.ConventionalZones, h.MaxAppendBytes, cs)
			res := doConvert(t, rawDisk, back, "qcow2", false, geometry)
			rawDisk.Close()
			if len(res.Warnings) == 0 || !strings.Contains(strings.Join(res.Warnings, "\n"), "cannot be told from unwritten space") {
				t.Errorf("import warnings: %q", res.Warnings)
			}
			checkClean(t, back)
			b := openDisk(t, back, "")
			defer b.Close()
			if !bytes.Equal(readDisk(t, b), model) {
				t.Fatal("import: data differs")
			}
			allSame := true
			for i, z := range b.Zones() {
				sz := zones[i]
				if sz.Type == zone.TypeConventional {
					continue
				}
				end := int64(blockdev.ValidEnd(sz))
				endsOnData := end > int64(sz.Start) && sz.WP <= sz.Start+sz.Cap && !bytes.Equal(model[end-512:end], make([]byte, 512))
				if endsOnData && z.WP != sz.WP {
					t.Errorf("import: zone %d ended on data at 0x%x but has its write pointer at 0x%x", i, sz.WP, z.WP)
				}
				if z.WP > sz.WP {
					t.Errorf("import: zone %d: write pointer 0x%x beyond the source's 0x%x", i, z.WP, sz.WP)
				}
				allSame = allSame && z.WP == sz.WP
			}
			r := identical(t, srcPath, back)
			if allSame != (r.Kind == compare.Identical) {
				t.Errorf("all write pointers equal %v, but compare says %v", allSame, r.Lines())
			}
			if !allSame && r.Kind != compare.ZoneWritePointer {
				t.Errorf("compare: %v, want a write pointer mismatch", r.Lines())
			}
		})
	}
}
