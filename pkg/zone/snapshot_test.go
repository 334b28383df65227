package zone_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"testing"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// zstate is what a zoned device shows: its data and its zone report.
type zstate struct {
	data  []byte
	zones []zone.Zone
}

func stateOf(t testing.TB, d *zone.Device) zstate {
	t.Helper()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	z, err := d.Report(0, 1<<32)
	if err != nil {
		t.Fatal(err)
	}
	// Open states do not survive a reopen: compare conditions as stored.
	for i := range z {
		if z[i].Cond == zone.CondImpOpen || z[i].Cond == zone.CondExpOpen {
			if z[i].WP == z[i].Start {
				z[i].Cond = zone.CondEmpty
			} else {
				z[i].Cond = zone.CondClosed
			}
		}
	}
	return zstate{b, z}
}

func sameState(t testing.TB, where string, got, want zstate) {
	t.Helper()
	if len(got.zones) != len(want.zones) {
		t.Fatalf("%s: %d zones, want %d", where, len(got.zones), len(want.zones))
	}
	for i := range got.zones {
		if got.zones[i] != want.zones[i] {
			t.Fatalf("%s: zone %d is %+v, want %+v", where, i, got.zones[i], want.zones[i])
		}
	}
	if !bytes.Equal(got.data, want.data) {
		t.Fatalf("%s: data differs", where)
	}
}

func checkClean(t testing.TB, where, path string) {
	t.Helper()
	res, err := check.CheckPath(path, check.Options{ForceShare: true})
	if err != nil || !res.Clean() {
		var msgs []string
		if res != nil {
			for _, f := range res.Findings {
				msgs = append(msgs, f.Msg)
			}
		}
		t.Fatalf("%s: check not clean (%v): %v", where, err, msgs)
	}
}

// zoneActivity appends and writes into random zones, finishes and resets
// some; zone-rule refusals (limits) are skipped.
func zoneActivity(t testing.TB, rng *rand.Rand, d *zone.Device, n int) {
	t.Helper()
	h := d.Header()
	for k := 0; k < n; k++ {
		i := h.ConventionalZones + uint32(rng.Intn(int(h.NrZones-h.ConventionalZones)))
		start := int64(h.ZoneStart(i))
		var err error
		switch rng.Intn(6) {
		case 0:
			err = d.Manage(zone.OpFinish, start, int64(h.ZoneSize))
		case 1:
			err = d.Manage(zone.OpReset, start, int64(h.ZoneSize))
		default:
			z, _ := d.Report(start, 1)
			room := int64(z[0].Start+z[0].Cap) - int64(z[0].WP)
			l := min(room, 512*(1+rng.Int63n(16)))
			if l <= 0 {
				continue
			}
			_, err = d.Append([][]byte{fill(int(l), byte(1+rng.Intn(255)))}, start)
		}
		if err != nil && !zone.IsZoneError(err) {
			t.Fatal(err)
		}
	}
	if h.ConventionalZones > 0 {
		if _, err := d.WriteAt(fill(4096, byte(rng.Intn(256))), int64(rng.Intn(int(h.ZoneSize)-4096))); err != nil {
			t.Fatal(err)
		}
	}
}

// TestZonedSnapshotRestoresZones: a snapshot of a zoned image saves the
// write pointers; after more writes, finishes and resets, applying it
// restores data and zones together, also across a reopen, and the image
// checks clean.
func TestZonedSnapshotRestoresZones(t *testing.T) {
	cases := [][]string{
		{"zone.size=64k", "zone.max_open_zones=3", "zone.max_active_zones=5", "zone.max_append_bytes=16k"},
		{"zone.size=16k", "zone.capacity=12k", "zone.conventional_zones=2", "cluster_size=4k", "zone.max_append_bytes=4k"},
		{"zone.size=8k", "cluster_size=512", "refcount_bits=64", "zone.max_append_bytes=2k"},
	}
	for ci, opts := range cases {
		t.Run(fmt.Sprint(ci), func(t *testing.T) {
			path := newImage(t, "1M", opts...)
			rng := rand.New(rand.NewSource(int64(ci)))
			d := open(t, path)
			zoneActivity(t, rng, d, 40)
			want := stateOf(t, d)
			if _, err := d.CreateSnapshot("before"); err != nil {
				t.Fatal(err)
			}
			zoneActivity(t, rng, d, 60)
			after := stateOf(t, d)
			if _, err := d.CreateSnapshot("after"); err != nil {
				t.Fatal(err)
			}
			zoneActivity(t, rng, d, 20)
			if err := d.ApplySnapshot("before"); err != nil {
				t.Fatal(err)
			}
			sameState(t, "after apply", stateOf(t, d), want)
			d = reopen(t, d, path)
			sameState(t, "after apply and reopen", stateOf(t, d), want)
			// The zones work from the restored state.
			zoneActivity(t, rng, d, 10)
			if err := d.ApplySnapshot("2"); err != nil {
				t.Fatal(err)
			}
			sameState(t, "after apply of the second", stateOf(t, d), after)
			if err := d.DeleteSnapshot("before"); err != nil {
				t.Fatal(err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			checkClean(t, "end", path)
		})
	}
}

func TestSavedWPRecord(t *testing.T) {
	h := &zone.Header{ZoneSize: 1 << 20, NrZones: 10, ConventionalZones: 2}
	wp := h.InitialTable()
	for i := range wp {
		wp[i] &^= zone.ConvBit
	}
	wp[4] += 4096
	wp[5] += 1 << 20
	wp[6] += 1 << 20
	b := zone.EncodeSavedWP(h, wp)
	s, ok, err := zone.DecodeSavedWP(b, 1<<16)
	if err != nil || !ok {
		t.Fatalf("decode: ok=%v err=%v", ok, err)
	}
	for i := range wp {
		if s.WP[i] != wp[i] {
			t.Fatalf("zone %d: %#x, want %#x", i, s.WP[i], wp[i])
		}
	}
	// Any flipped bit is detected.
	for i := 8; i < len(b)*8; i++ {
		c := append([]byte(nil), b...)
		c[i/8] ^= 1 << (i % 8)
		if _, ok, err := zone.DecodeSavedWP(c, 1<<16); ok && err == nil {
			t.Fatalf("bit %d flipped: accepted", i)
		}
	}
	if _, ok, _ := zone.DecodeSavedWP([]byte("not a record at all, no"), 1<<16); ok {
		t.Fatal("garbage taken for a record")
	}
	if _, _, err := zone.DecodeSavedWP(b, 9); err == nil {
		t.Fatal("a record of 10 zones accepted with at most 9")
	}
}

// TestZonedResizeGrowShrink: growing a zoned image adds EMPTY zones;
// shrinking it back gives a device identical to the original (data, zone
// report and zoned configuration) and a clean check. Shrinking over a
// zone that is not EMPTY, and sizes that are not whole zones, are refused
// naming the zone or zone.size.
func TestZonedResizeGrowShrink(t *testing.T) {
	path := newImage(t, "512k", "zone.size=64k", "zone.max_open_zones=2", "zone.max_active_zones=4", "zone.max_append_bytes=8k", "zone.conventional_zones=1")
	d := open(t, path)
	zoneActivity(t, rand.New(rand.NewSource(3)), d, 30)
	for i := uint32(6); i < 8; i++ {
		if err := d.Manage(zone.OpReset, int64(i)*64<<10, 64<<10); err != nil {
			t.Fatal(err)
		}
	}
	d = reopen(t, d, path)
	orig := stateOf(t, d)
	origHdr := *d.Header()
	origLen := fileLen(t, path)
	if err := d.Resize(640<<10, false); err != nil {
		t.Fatal(err)
	}
	if err := d.Resize(1000<<10, false); err == nil || !errors.Is(err, zone.ErrResize) {
		t.Fatalf("size of no whole zones: %v", err)
	}
	if h := d.Header(); h.NrZones != 10 || h.MetaSize != 80 {
		t.Fatalf("after growth: %+v", h)
	}
	z, _ := d.Report(9*64<<10, 1)
	if z[0].Cond != zone.CondEmpty {
		t.Fatalf("new zone: %+v", z[0])
	}
	d = reopen(t, d, path)
	checkClean(t, "grown", path)
	// Fill the new zones and reset them: their clusters are free, at the
	// end of the file.
	for i := int64(8); i < 10; i++ {
		if _, err := d.WriteAt(fill(64<<10, 0x77), i*64<<10); err != nil {
			t.Fatal(err)
		}
		if err := d.Manage(zone.OpReset, i*64<<10, 64<<10); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Resize(384<<10, false); !errors.Is(err, image.ErrShrinkNotAllowed) {
		t.Fatalf("shrink without --shrink: %v", err)
	}
	if err := d.Resize(512<<10, true); err != nil {
		t.Fatal(err)
	}
	got := stateOf(t, d)
	sameState(t, "grown and shrunk", got, orig)
	// The shrink gives the file's tail back: the file is no longer than
	// before the growth.
	if n := fileLen(t, path); n > origLen {
		t.Fatalf("file of %d bytes after growing and shrinking back, %d before", n, origLen)
	}
	h := *d.Header()
	h.MetaOffset = origHdr.MetaOffset
	if h != origHdr {
		t.Fatalf("zoned header %+v, want %+v", h, origHdr)
	}
	// Zone 5 is not empty (the activity wrote there or it is full/closed):
	// shrinking over it is refused, naming it.
	z, _ = d.Report(0, 8)
	for i := 7; i >= 1; i-- {
		if z[i].Cond != zone.CondEmpty {
			err := d.Resize(uint64(i)*64<<10, true)
			if !errors.Is(err, zone.ErrResize) || !bytes.Contains([]byte(err.Error()), []byte(fmt.Sprintf("zone %d,", i))) {
				t.Fatalf("shrink over non-empty zone %d: %v", i, err)
			}
			break
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, "shrunk", path)
}

func fileLen(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestZonedApplyWithoutSavedWP: a snapshot of a zoned image taken without
// saved write pointers (as QEMU takes them) is refused by apply, which
// would otherwise leave the zones disagreeing with the data; the image is
// unchanged.
func TestZonedApplyWithoutSavedWP(t *testing.T) {
	path := newImage(t, "4M", "zone.size=1M")
	d := open(t, path)
	if _, err := d.Append([][]byte{fill(4096, 1)}, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Image().CreateSnapshot(image.SnapshotCreateOptions{Name: "qemu-made"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Append([][]byte{fill(4096, 2)}, 0); err != nil {
		t.Fatal(err)
	}
	before := stateOf(t, d)
	if err := d.ApplySnapshot("qemu-made"); !errors.Is(err, zone.ErrNoSavedWP) {
		t.Fatalf("apply: %v", err)
	}
	sameState(t, "after the refused apply", stateOf(t, d), before)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, "end", path)
}

func FuzzDecodeSavedWP(f *testing.F) {
	h := &zone.Header{ZoneSize: 1 << 16, NrZones: 6, ConventionalZones: 1}
	f.Add(zone.EncodeSavedWP(h, []uint64{0, 1 << 16, 2<<16 + 512, 3 << 16, 5 << 16, 5<<16 + 4096}))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, ok, err := zone.DecodeSavedWP(b, 1<<16)
		if !ok || err != nil {
			return
		}
		if uint32(len(s.WP)) != s.NrZones {
			t.Fatalf("%d write pointers for %d zones", len(s.WP), s.NrZones)
		}
		for i, wp := range s.WP {
			start := uint64(i) * s.ZoneSize
			if wp < start || wp > start+s.ZoneSize {
				t.Fatalf("zone %d: write pointer %#x outside the zone", i, wp)
			}
		}
	})
}

// TestZonedResizeKeepsFullShortZone: growing an image whose short last
// zone is FULL (written up to its end) keeps it FULL, so no zone becomes
// active (with max_active_zones 1 and another zone CLOSED, a CLOSED last
// zone would make two); its data stays and the grown part reads zeroes.
func TestZonedResizeKeepsFullShortZone(t *testing.T) {
	for _, capacity := range []string{"64k", "48k"} {
		path := newImage(t, "224k", "zone.size=64k", "zone.capacity="+capacity, "zone.max_open_zones=1", "zone.max_active_zones=1", "zone.max_append_bytes=8k")
		d := open(t, path)
		if _, err := d.WriteAt(fill(32<<10, 0x5a), 3*64<<10); err != nil { // the short last zone: 32 KiB
			t.Fatal(err)
		}
		if _, err := d.WriteAt(fill(4<<10, 0x11), 64<<10); err != nil { // zone 1: CLOSED later
			t.Fatal(err)
		}
		d = reopen(t, d, path)
		if z, _ := d.Report(3*64<<10, 1); z[0].Cond != zone.CondFull {
			t.Fatalf("capacity %s: the short last zone before the resize: %+v", capacity, z[0])
		}
		if err := d.Resize(256<<10, false); err != nil {
			t.Fatal(err)
		}
		for pass := 0; pass < 2; pass++ {
			if pass == 1 {
				d = reopen(t, d, path)
			}
			z, _ := d.Report(0, 4)
			if z[3].Cond != zone.CondFull || z[1].Cond != zone.CondClosed {
				t.Fatalf("capacity %s: after growing: %+v", capacity, z)
			}
			got := make([]byte, 64<<10)
			if _, err := d.ReadAt(got, 3*64<<10); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[:32<<10], fill(32<<10, 0x5a)) || !bytes.Equal(got[32<<10:], make([]byte, 32<<10)) {
				t.Fatalf("capacity %s: the grown zone's data changed", capacity)
			}
		}
		d.Close()
		checkClean(t, "grown", path)
	}
}
