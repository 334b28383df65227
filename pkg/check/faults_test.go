package check_test

import (
	"bytes"
	"testing"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// The zone fault plan: a valid one is listed and is no problem; a damaged
// one (zqimg refuses to open the image then) is a corruption that -r all
// repairs by storing an empty plan; a plan whose ranges lie beyond the
// zones too.
func TestZoneFaultPlan(t *testing.T) {
	for _, c := range []struct {
		name   string
		damage func(ext []byte)
		bad    bool
	}{
		{"valid", func([]byte) {}, false},
		{"both slots fail their CRC", func(ext []byte) { ext[8+20] ^= 0xff }, true},
		{"range beyond the zones", nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newImage(t, "cluster_size=4k,zone.mode=host-managed,zone.size=1M", "4M")
			img, err := image.OpenFile(f, "f", image.Options{Features: image.IncompatZoned})
			if err != nil {
				t.Fatal(err)
			}
			plan := &zone.FaultPlan{Generation: 1, Ranges: []zone.FaultRange{{First: 1, Count: 1, Cond: zone.CondReadOnly}}}
			if c.damage == nil {
				plan.Ranges[0].Count = 9 // zones 1-9 of 4
			}
			ext := zone.NewFaultExtension(plan)
			if c.damage != nil {
				c.damage(ext)
			}
			if err := img.AppendExtension(zone.FaultExtMagic, ext); err != nil {
				t.Fatal(err)
			}
			img.Close()
			res, err := check.Check(f, check.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if n := res.Count(check.ProblemZoneFaultPlan, check.KindCorruption); (n == 1) != c.bad || res.Corruptions != int64(n) {
				t.Fatalf("check: %d zone-fault-plan corruptions (%d in all), want bad=%v", n, res.Corruptions, c.bad)
			}
			if !c.bad {
				found := false
				for _, fd := range res.Findings {
					found = found || fd.Kind == check.KindInfo && bytes.Contains([]byte(fd.Msg), []byte("zones 1-1 read-only"))
				}
				if !found {
					t.Fatal("a valid plan is not listed")
				}
				return
			}
			if _, err := zone.New(mustOpen(t, f)); err == nil {
				t.Fatal("the damaged plan did not stop zone.New: the test damages nothing")
			}
			res, err = check.Check(f, check.Options{Repair: check.RepairAll})
			if err != nil {
				t.Fatal(err)
			}
			if res.Corruptions != 0 || res.Count(check.ProblemZoneFaultPlan, check.KindCorruption) != 0 {
				t.Fatalf("after -r all: %d corruptions", res.Corruptions)
			}
			d, err := zone.New(mustOpen(t, f))
			if err != nil {
				t.Fatalf("after -r all the image does not open: %v", err)
			}
			if p := d.Faults(); p == nil || len(p.Ranges) != 0 {
				t.Fatalf("plan after the repair: %+v", p)
			}
		})
	}
}

func mustOpen(t *testing.T, f image.File) *image.Image {
	t.Helper()
	img, err := image.OpenFile(f, "f", image.Options{Features: image.IncompatZoned, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	return img
}
