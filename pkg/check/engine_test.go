package check_test

import (
	"bytes"
	"math/rand"
	"testing"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
	"github.com/zqimg/zqimg/pkg/zone"
)

// TestEngineImagesClean drives the engine (writes, zero writes, discards,
// zone appends, finishes and resets, several sessions) and checks that
// every image it leaves is clean: the engine keeps refcounts exact and
// persists write pointers, so a check must find nothing.
func TestEngineImagesClean(t *testing.T) {
	configs := []struct{ opts, size string }{
		{"cluster_size=4k", "4M"},
		{"cluster_size=512,refcount_bits=2", "1M"},
		{"cluster_size=64k,refcount_bits=64", "16M"},
		{"cluster_size=16k,extended_l2=on", "4M"},
		{"cluster_size=4k,compat=0.10", "4M"},
		{"cluster_size=4k,zone.mode=host-managed,zone.size=64k,zone.conventional_zones=2,zone.max_append_bytes=8k", "2M"},
		{"cluster_size=64k,zone.mode=host-managed,zone.size=16k,zone.conventional_zones=4,zone.max_append_bytes=4k", "1M"},
	}
	rng := rand.New(rand.NewSource(7))
	for _, cfg := range configs {
		f := newImage(t, cfg.opts, cfg.size)
		for session := 0; session < 4; session++ {
			img, err := image.OpenFile(f, "mem", image.Options{Features: image.IncompatZoned})
			if err != nil {
				t.Fatalf("%s: %v", cfg.opts, err)
			}
			d, err := zone.New(img)
			if err != nil {
				t.Fatalf("%s: %v", cfg.opts, err)
			}
			size := d.Size()
			for op := 0; op < 60; op++ {
				off := rng.Int63n(size) &^ 511
				n := min(int64(1+rng.Intn(64))*512, size-off)
				switch {
				case d.Zoned():
					h := d.Header()
					zs := int64(h.ZoneSize)
					zi := uint32(rng.Intn(int(h.NrZones)))
					start := int64(zi) * zs
					switch k := rng.Intn(6); {
					case zi < h.ConventionalZones:
						n = min(n, zs-(off%zs))
						off = start + off%zs
						off = min(off, start+zs-n)
						switch k % 3 {
						case 0:
							_, err = d.WriteAt(bytes.Repeat([]byte{byte(op)}, int(n)), off)
						case 1:
							err = d.WriteZeroes(off, n)
						case 2:
							err = d.Discard(off, n)
						}
					case k < 3:
						_, err = d.Append([][]byte{bytes.Repeat([]byte{byte(op)}, 512*(1+rng.Intn(8)))}, start)
					case k == 3:
						err = d.Manage(zone.OpFinish, start, zs)
					case k == 4:
						err = d.Manage(zone.OpReset, start, zs)
					default:
						err = d.Manage(zone.OpClose, start, zs)
					}
					if zone.IsZoneError(err) {
						err = nil // a full zone, too many open zones...
					}
				default:
					switch rng.Intn(3) {
					case 0:
						_, err = d.WriteAt(bytes.Repeat([]byte{byte(op)}, int(n)), off)
					case 1:
						err = d.WriteZeroes(off, n)
					case 2:
						err = d.Discard(off, n)
					}
				}
				if err != nil {
					t.Fatalf("%s: session %d op %d: %v", cfg.opts, session, op, err)
				}
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			res := mustCheck(t, imagetest.NewMemFile(f.Bytes()), check.RepairNone)
			if !res.Clean() {
				t.Fatalf("%s: session %d left an inconsistent image:\n%s", cfg.opts, session, report(res))
			}
		}
	}
}

// TestZoneResetSharedCluster: when clusters are larger than zones,
// resetting the zones of a cluster one by one must give the cluster back
// once all of them are empty (docs/zones.md: a reset discards the zone's
// clusters, giving the space back). A reset that only zeroes its part of
// the cluster leaves the emptied zones an allocated cluster wholly beyond
// their write pointers, which check rightly reports as leaked data beyond
// a write pointer.
func TestZoneResetSharedCluster(t *testing.T) {
	f := newImage(t, "cluster_size=64k,zone.mode=host-managed,zone.size=16k,zone.max_append_bytes=4k", "1M")
	writeImage(t, f, write{64 << 10, 4 << 10, 1}, write{80 << 10, 4 << 10, 2})
	img, err := image.OpenFile(f, "mem", image.Options{Features: image.IncompatZoned})
	if err != nil {
		t.Fatal(err)
	}
	d, err := zone.New(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{64 << 10, 80 << 10} {
		if err := d.Manage(zone.OpReset, off, 16<<10); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if res := mustCheck(t, f, check.RepairNone); !res.Clean() {
		t.Fatalf("zones 4-7 are empty but their cluster is still allocated:\n%s", report(res))
	}
}
