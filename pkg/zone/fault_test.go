package zone_test

import (
	"bytes"
	"errors"
	"math/rand"
	"os"
	"reflect"
	"syscall"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
	"github.com/zqimg/zqimg/pkg/zone"
)

func TestFaultPlanWith(t *testing.T) {
	var p *zone.FaultPlan
	steps := []struct {
		first, count uint32
		cond         zone.Cond
		want         []zone.FaultRange
	}{
		{2, 3, zone.CondReadOnly, []zone.FaultRange{{First: 2, Count: 3, Cond: zone.CondReadOnly}}},
		{5, 1, zone.CondReadOnly, []zone.FaultRange{{First: 2, Count: 4, Cond: zone.CondReadOnly}}}, // merged
		{3, 2, zone.CondOffline, []zone.FaultRange{{First: 2, Count: 1, Cond: zone.CondReadOnly}, {First: 3, Count: 2, Cond: zone.CondOffline}, {First: 5, Count: 1, Cond: zone.CondReadOnly}}},
		{0, 4, 0, []zone.FaultRange{{First: 4, Count: 1, Cond: zone.CondOffline}, {First: 5, Count: 1, Cond: zone.CondReadOnly}}}, // cleared
		{0, 10, 0, nil},
	}
	for i, s := range steps {
		np, err := p.With(s.first, s.count, s.cond)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if !reflect.DeepEqual(np.Ranges, s.want) && !(len(np.Ranges) == 0 && len(s.want) == 0) {
			t.Fatalf("step %d: %v, want %v", i, np.Ranges, s.want)
		}
		if err := np.Validate(10); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		p = np
	}
	for i := uint32(0); i < zone.MaxFaultRanges; i++ {
		if p, _ = p.With(2*i, 1, zone.CondOffline); p == nil {
			t.Fatal("range refused below the limit")
		}
	}
	if _, err := p.With(100, 1, zone.CondOffline); err == nil {
		t.Fatalf("a plan of %d ranges accepted", zone.MaxFaultRanges+1)
	}
	if _, err := p.With(0, 1, zone.CondFull); err == nil {
		t.Fatal("condition FULL accepted as a fault")
	}
	if err := (&zone.FaultPlan{Ranges: []zone.FaultRange{{First: 8, Count: 4, Cond: zone.CondReadOnly}}}).Validate(10); err == nil {
		t.Fatal("a range past the last zone validated")
	}
}

// A torn update of the fault extension leaves the previous plan in force;
// with both slots damaged the extension is refused.
func TestFaultExtensionSlots(t *testing.T) {
	p1 := &zone.FaultPlan{Generation: 1, Ranges: []zone.FaultRange{{First: 1, Count: 2, Cond: zone.CondReadOnly}}}
	ext := zone.NewFaultExtension(p1)
	if got, err := zone.ParseFaultExtension(ext); err != nil || !reflect.DeepEqual(got, p1) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	// The new plan as slot 0 of a fresh extension; an update writes it
	// into slot 1 (which starts at 8 + slot size = len(ext)/2 + 4).
	next := zone.NewFaultExtension(&zone.FaultPlan{Generation: 2, Ranges: []zone.FaultRange{{First: 4, Count: 1, Cond: zone.CondOffline}}})
	slot := len(ext)/2 + 4
	last := 0 // the last byte of the new slot that differs from the old
	for i := 8; i < slot; i++ {
		if next[i] != ext[slot-8+i] {
			last = i - 8
		}
	}
	for cut := 1; cut <= last; cut++ {
		// An update of slot 1 that tore after cut bytes: slot 0 wins.
		b := bytes.Clone(ext)
		copy(b[slot:slot+cut], next[8:8+cut])
		if got, err := zone.ParseFaultExtension(b); err != nil || got.Generation != 1 {
			t.Fatalf("torn after %d bytes: %+v, %v", cut, got, err)
		}
	}
	b := bytes.Clone(ext)
	copy(b[slot:], next[8:slot])
	if got, err := zone.ParseFaultExtension(b); err != nil || got.Generation != 2 {
		t.Fatalf("complete update: %+v, %v", got, err)
	}
	bad := bytes.Clone(ext)
	bad[20] ^= 1
	if _, err := zone.ParseFaultExtension(bad); err == nil {
		t.Fatal("an extension whose only plan fails its CRC was accepted")
	}
}

func TestInjectedFaults(t *testing.T) {
	path := newImage(t, "64M", "zone.size=16M")
	d := open(t, path)
	for i := int64(0); i < 4; i++ {
		if _, err := d.WriteAt(fill(8*kib, byte(1+i)), i*16*mib); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.SetFault(zone.CondReadOnly, 16*mib, 16*mib); err != nil {
		t.Fatal(err)
	}
	if err := d.SetFault(zone.CondOffline, 32*mib, 16*mib); err != nil {
		t.Fatal(err)
	}
	for pass := 0; pass < 2; pass++ {
		if z := zoneAt(t, d, 16*mib); z.Cond != zone.CondReadOnly || z.WP != 16*mib+8*kib {
			t.Fatalf("pass %d: read-only zone %+v", pass, z)
		}
		if z := zoneAt(t, d, 32*mib); z.Cond != zone.CondOffline {
			t.Fatalf("pass %d: offline zone %+v", pass, z)
		}
		_, err := d.WriteAt(fill(512, 9), 16*mib+8*kib)
		if !errors.Is(err, zone.ErrZoneReadOnly) || image.Errno(err) != syscall.EIO {
			t.Fatalf("write to a read-only zone: %v", err)
		}
		if b := readBack(t, d, 16*mib, 8*kib); !bytes.Equal(b, fill(8*kib, 2)) {
			t.Fatal("a read-only zone does not read its data")
		}
		if _, err := d.ReadAt(make([]byte, 512), 32*mib); !errors.Is(err, zone.ErrZoneOffline) {
			t.Fatalf("read of an offline zone: %v", err)
		}
		if err := d.Manage(zone.OpFinish, 16*mib, 16*mib); !errors.Is(err, zone.ErrZoneReadOnly) {
			t.Fatalf("finish of a read-only zone: %v", err)
		}
		if _, err := d.Append([][]byte{fill(512, 1)}, 32*mib); !errors.Is(err, zone.ErrZoneOffline) {
			t.Fatalf("append to an offline zone: %v", err)
		}
		d = reopen(t, d, path) // the plan persists
	}
	// A reset of the whole device skips the faulty zones.
	if err := d.Manage(zone.OpReset, 0, 64*mib); err != nil {
		t.Fatal(err)
	}
	if b := readBack(t, d, 16*mib, 8*kib); !bytes.Equal(b, fill(8*kib, 2)) {
		t.Fatal("a whole-device reset reset a read-only zone")
	}
	if z := zoneAt(t, d, 48*mib); z.Cond != zone.CondEmpty {
		t.Fatalf("healthy zone after the reset: %+v", z)
	}
	c := must(d.Counts())
	if c[zone.CondReadOnly] != 1 || c[zone.CondOffline] != 1 || c[zone.CondEmpty] != 2 {
		t.Fatalf("counts %v", c)
	}
	// Clearing brings the zones back as they were.
	if err := d.SetFault(0, 0, 64*mib); err != nil {
		t.Fatal(err)
	}
	if z := zoneAt(t, d, 32*mib); z.Cond != zone.CondClosed {
		t.Fatalf("zone after clearing its fault: %+v", z)
	}
	if b := readBack(t, d, 32*mib, 8*kib); !bytes.Equal(b, fill(8*kib, 3)) {
		t.Fatal("data of a zone that was offline")
	}
	d.Close()
}

// An open zone that becomes faulty stops counting as open or active.
func TestFaultReleasesResources(t *testing.T) {
	d := open(t, newImage(t, "64M", "zone.size=16M", "zone.max_open_zones=1", "zone.max_active_zones=1"))
	defer d.Close()
	if _, err := d.WriteAt(fill(4*kib, 1), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(fill(4*kib, 1), 16*mib); !errors.Is(err, zone.ErrTooManyActive) {
		t.Fatalf("second active zone: %v", err)
	}
	if err := d.SetFault(zone.CondReadOnly, 0, 16*mib); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(fill(4*kib, 1), 16*mib); err != nil {
		t.Fatalf("write once the active zone is read-only: %v", err)
	}
}

// SetFault cut at every write and sync: the plan read back is the old or
// the new one, never anything else.
func TestSetFaultCrash(t *testing.T) {
	raw, err := os.ReadFile(newImage(t, "64M", "zone.size=8M", "cluster_size=512"))
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		cond    zone.Cond
		off, ln int64
	}{{zone.CondReadOnly, 0, 16 * mib}, {zone.CondOffline, 8 * mib, 8 * mib}, {0, 0, 8 * mib}}
	base := raw
	var before *zone.FaultPlan
	for _, st := range steps {
		// Reference run: count the operations.
		d, ff := faultDevice(t, base, image.CacheWriteBack)
		ops0 := ff.Ops()
		if err := d.SetFault(st.cond, st.off, st.ln); err != nil {
			t.Fatal(err)
		}
		after := d.Faults()
		n := ff.Ops() - ops0
		if n == 0 {
			t.Fatal("SetFault wrote nothing")
		}
		for cut := 0; cut <= n; cut++ {
			d, ff := faultDevice(t, base, image.CacheWriteBack)
			ff.PowerFailAfter(ff.Ops() + cut)
			_ = d.SetFault(st.cond, st.off, st.ln)
			crashed := ff.Crash(rand.New(rand.NewSource(int64(cut))))
			img, err := image.OpenFile(imagetest.NewMemFile(crashed), "c", image.Options{Features: image.IncompatZoned, ReadOnly: true})
			if err != nil {
				t.Fatalf("cut %d: %v", cut, err)
			}
			got, err := zone.New(img)
			if err != nil {
				t.Fatalf("cut %d: the crashed image does not open: %v", cut, err)
			}
			if g := got.Faults(); !samePlan(g, before) && !samePlan(g, after) {
				t.Fatalf("cut %d: plan %+v is neither the old %+v nor the new %+v", cut, g, before, after)
			}
		}
		ff.PowerFailAfter(-1)
		base = ff.Durable()
		before = after
	}
}

func samePlan(a, b *zone.FaultPlan) bool {
	if a == nil || b == nil {
		return (a == nil || len(a.Ranges) == 0) && (b == nil || len(b.Ranges) == 0)
	}
	return reflect.DeepEqual(a.Ranges, b.Ranges) || len(a.Ranges) == 0 && len(b.Ranges) == 0
}
