package info_test

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/pkg/create"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/info"
	"github.com/zqimg/zqimg/pkg/zone"
)

func mk(t *testing.T, size string, opts ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "i.qcow2")
	o, err := create.ParseOptions(opts, size, true)
	if err != nil {
		t.Fatal(err)
	}
	s, err := create.Resolve(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := create.Create(p, s); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDescribePlain(t *testing.T) {
	inf, err := info.Describe(mk(t, "1G", "compat=0.10"), false)
	if err != nil {
		t.Fatal(err)
	}
	d := inf.FormatSpecific.Data
	if inf.VirtualSize != 1<<30 || inf.ClusterSize != 65536 || d.Compat != "0.10" || d.RefcountBits != 16 ||
		d.LazyRefcounts != nil || d.Corrupt != nil || d.ExtendedL2 != nil || d.Zoned != nil || inf.ActualSize <= 0 {
		t.Fatalf("v2 image: %+v %+v", inf, d)
	}
	// Version 2 omits the v3-only keys, as qemu-img does.
	b, _ := json.Marshal(inf)
	var m map[string]any
	json.Unmarshal(b, &m)
	data := m["format-specific"].(map[string]any)["data"].(map[string]any)
	if len(data) != 3 {
		t.Fatalf("v2 format-specific data keys: %v", data)
	}
	inf, err = info.Describe(mk(t, "100M", "extended_l2=on,lazy_refcounts=on,compression_type=zstd,refcount_bits=64"), false)
	if err != nil {
		t.Fatal(err)
	}
	d = inf.FormatSpecific.Data
	if d.Compat != "1.1" || !*d.LazyRefcounts || !*d.ExtendedL2 || *d.Corrupt || d.CompressionType != "zstd" || d.RefcountBits != 64 {
		t.Fatalf("v3 image: %+v", d)
	}
}

func TestDescribeZonedCounts(t *testing.T) {
	p := mk(t, "100M", "zone.mode=host-managed,zone.size=16M,zone.conventional_zones=1,zone.max_open_zones=2")
	d, err := zone.Open(p, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for _, z := range []int64{1, 2, 3} {
		if _, err := d.WriteAt(buf, z*16<<20); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Manage(zone.OpFinish, 4*16<<20, 16<<20); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	inf, err := info.Describe(p, false)
	if err != nil {
		t.Fatal(err)
	}
	z := inf.FormatSpecific.Data.Zoned
	if z == nil {
		t.Fatal("no zoned section")
	}
	// 7 zones (the last one 4M): 1 conventional, 3 written (CLOSED after
	// the reopen), 1 finished, 2 empty.
	want := info.Conditions{NotWP: 1, Empty: 2, Closed: 3, Full: 1, Active: 3, Sequence: 6}
	if z.Conditions != want || z.NrZones != 7 || z.ZoneSize != 16<<20 || z.MaxOpenZones != 2 || z.TableSize != 56 || z.Model != "host-managed" {
		t.Fatalf("zoned info: %+v", z)
	}
}
