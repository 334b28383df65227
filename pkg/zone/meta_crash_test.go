package zone_test

import (
	"bytes"
	"fmt"
	"math/rand"
	"slices"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
	"github.com/zqimg/zqimg/pkg/zone"
)

func formatZoned(t *testing.T, size string, opts ...string) []byte {
	t.Helper()
	return testimg.Bytes(t, size, append([]string{"zone.mode=host-managed"}, opts...)...)
}

func openDev(t *testing.T, f image.File, ro bool) *zone.Device {
	t.Helper()
	img, err := image.OpenFile(f, "mem", image.Options{ReadOnly: ro, NoLock: true, Features: image.IncompatZoned})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	d, err := zone.New(img)
	if err != nil {
		img.Close()
		t.Fatalf("zone layer: %v", err)
	}
	return d
}

// devState is everything a zoned image shows.
type devState struct {
	st    zstate
	hdr   zone.Header // MetaOffset cleared
	snaps []string
	lazy  bool
}

func (a devState) equal(b devState) bool {
	if a.hdr != b.hdr || !slices.Equal(a.snaps, b.snaps) || a.lazy != b.lazy || !bytes.Equal(a.st.data, b.st.data) {
		return false
	}
	return slices.Equal(a.st.zones, b.st.zones)
}

func devStateOf(t *testing.T, b []byte) devState {
	t.Helper()
	d := openDev(t, imagetest.NewMemFile(b), true)
	defer d.Close()
	s := devState{st: stateOf(t, d), hdr: *d.Header()}
	s.hdr.MetaOffset = 0
	list, err := d.Image().Snapshots()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list {
		s.snaps = append(s.snaps, e.ID+" "+e.Name)
	}
	s.lazy = d.Image().Header().CompatibleFeatures&image.CompatLazyRefcounts != 0
	return s
}

// TestZonedMetadataCrashSafety cuts the power at every write and sync of
// the zoned snapshot apply (data and write pointers restored together),
// snapshot create, resizes by whole zones and amend, including the first
// move of the zoned extension into the header's first sector: every
// crashed image opens, check finds it clean, and it is as before or as
// after the operation (data, zone report, zoned configuration, snapshots).
func TestZonedMetadataCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	configs := [][]string{
		{"zone.size=64k", "zone.max_open_zones=3", "zone.max_active_zones=6", "zone.max_append_bytes=16k"},                                    // 64 KiB clusters: extension in sector 1
		{"zone.size=16k", "zone.capacity=12k", "zone.conventional_zones=1", "cluster_size=4k", "zone.max_append_bytes=4k", "refcount_bits=4"}, // no feature table
	}
	type op struct {
		name string
		run  func(d *zone.Device) error
	}
	u := func(v uint64) *uint64 { return &v }
	ops := []op{
		{"apply", func(d *zone.Device) error { return d.ApplySnapshot("old") }},
		{"create", func(d *zone.Device) error { _, err := d.CreateSnapshot("new"); return err }},
		{"grow", func(d *zone.Device) error { return d.Resize(uint64(d.Size())+2*d.Header().ZoneSize, false) }},
		{"shrink", func(d *zone.Device) error { return d.Resize(uint64(d.Size())-d.Header().ZoneSize, true) }},
		{"amend", func(d *zone.Device) error {
			on := true
			_, err := d.Amend(zone.Limits{MaxOpenZones: u(2), MaxAppendBytes: u(2048)}, &on)
			return err
		}},
	}
	points, asBefore, asAfter := 0, 0, 0
	for ci, opts := range configs {
		f := imagetest.NewMemFile(formatZoned(t, "512k", opts...))
		d := openDev(t, f, false)
		rng := rand.New(rand.NewSource(int64(ci)))
		zoneActivity(t, rng, d, 25)
		if _, err := d.CreateSnapshot("old"); err != nil {
			t.Fatal(err)
		}
		zoneActivity(t, rng, d, 25)
		// The last zone must be empty for the shrink.
		h := d.Header()
		last := h.ZoneStart(h.NrZones - 1)
		if err := d.Manage(zone.OpReset, int64(last), int64(h.ZoneSize)); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		base := f.Bytes()
		before := devStateOf(t, base)
		for _, o := range ops {
			where := fmt.Sprintf("config %d %s", ci, o.name)
			ref := imagetest.NewFaultFile(base)
			d := openDev(t, ref, false)
			start := ref.Ops()
			if err := o.run(d); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			total := ref.Ops()
			after := devStateOf(t, ref.Current())
			if after.equal(before) {
				t.Fatalf("%s: the operation changed nothing", where)
			}
			for cut := start; cut < total; cut++ {
				points++
				w := fmt.Sprintf("%s cut at operation %d of %d", where, cut, total)
				ff := imagetest.NewFaultFile(base)
				d := openDev(t, ff, false)
				ff.PowerFailAfter(cut)
				if err := o.run(d); err == nil {
					_ = d.Close()
				}
				if !ff.PowerLost() {
					t.Fatalf("%s: the power never failed", w)
				}
				crashed := ff.Crash(rand.New(rand.NewSource(int64(cut))))
				res, err := check.Check(imagetest.NewMemFile(crashed), check.Options{})
				if err != nil || res.Corruptions != 0 || res.CheckErrors != 0 || res.Leaks != 0 {
					var msgs []string
					if res != nil {
						for _, f := range res.Findings {
							msgs = append(msgs, f.Msg)
						}
					}
					t.Fatalf("%s: check (%v): %v", w, err, msgs)
				}
				got := devStateOf(t, crashed)
				switch {
				case got.equal(before):
					asBefore++
				case got.equal(after):
					asAfter++
				default:
					t.Fatalf("%s: neither before nor after:\n got header %+v snaps %v\nbefore %+v %v\n after %+v %v", w, got.hdr, got.snaps, before.hdr, before.snaps, after.hdr, after.snaps)
				}
			}
		}
	}
	t.Logf("%d crash points: %d as before, %d as after", points, asBefore, asAfter)
	if asBefore == 0 || asAfter == 0 {
		t.Errorf("the cuts do not reach both sides of the switch")
	}
}
