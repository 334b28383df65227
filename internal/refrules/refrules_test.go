package refrules

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/pkg/zone"
)

// TestReferenceImagesPass: every image the reference made (its create
// cases and the images it wrote) passes the checks encoded here.
func TestReferenceImagesPass(t *testing.T) {
	var files []string
	for _, g := range []string{"../../testdata/reference/create/*.qcow2", "../../testdata/written/*.qcow2"} {
		m, err := filepath.Glob(g)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 10 {
		t.Fatalf("only %d reference images found", len(files))
	}
	for _, f := range files {
		if err := CheckFile(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestCheckRefuses: each check refuses what the reference refuses, and
// nothing else.
func TestCheckRefuses(t *testing.T) {
	good := zone.Header{Model: 1, ZoneSize: 1 << 20, ZoneCapacity: 1 << 20, ConventionalZones: 1, NrZones: 8,
		MaxActiveZones: 4, MaxOpenZones: 2, MaxAppendBytes: 64 << 10, MetaSize: 64}
	const size = 8 << 20
	if err := Check(zone.ExtSize, &good, size); err != nil {
		t.Fatalf("a valid header: %v", err)
	}
	for _, tc := range []struct {
		change func(h *zone.Header)
		want   string
	}{
		{func(h *zone.Header) { h.NrZones = 9 }, "nr_zones field is wrong"},
		{func(h *zone.Header) { h.ZoneSize = 0 }, "zone_size 0"},
		{func(h *zone.Header) { h.ZoneCapacity = 2 << 20 }, "exceeds zone size"},
		{func(h *zone.Header) { h.MaxAppendBytes = 1<<20 - 512 }, "max append bytes"},
		{func(h *zone.Header) { h.ConventionalZones = 8 }, "Conventional_zones 8 exceeds nr_zones 8"},
		{func(h *zone.Header) { h.MaxActiveZones = 9 }, "Max_active_zones 9 exceeds nr_zones 8"},
		{func(h *zone.Header) { h.MaxOpenZones = 8; h.MaxActiveZones = 8 }, "number of SWRzones 7"},
		{func(h *zone.Header) { h.MaxActiveZones = 0 }, "Max_open_zones 2 exceeds max_active_zones 0"},
		{func(h *zone.Header) { h.MaxOpenZones = 5 }, "Max_open_zones 5 exceeds max_active_zones 4"},
	} {
		h := good
		tc.change(&h)
		err := Check(zone.ExtSize, &h, size)
		var r *Refusal
		if !errors.As(err, &r) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want a refusal containing %q", h, err, tc.want)
		}
	}
	if err := Check(zone.ExtSize-1, &good, size); err == nil {
		t.Error("a short extension passes")
	}
	// No limits at all (both 0) and an active limit alone are accepted.
	h := good
	h.MaxOpenZones, h.MaxActiveZones = 0, 0
	if err := Check(zone.ExtSize, &h, size); err != nil {
		t.Errorf("no limits: %v", err)
	}
	h.MaxActiveZones = 3
	if err := Check(zone.ExtSize, &h, size); err != nil {
		t.Errorf("active limit alone: %v", err)
	}
}
