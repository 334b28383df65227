package info_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/info"
	"github.com/zqimg/zqimg/pkg/zone"
)

func mk(t *testing.T, size string, opts ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "i.qcow2")
	testimg.File(t, p, size, opts...)
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
	if z.Conditions == nil || *z.Conditions != want || z.NrZones != 7 || z.ZoneSize != 16<<20 || z.MaxOpenZones != 2 || z.TableSize != 56 || z.Model != "host-managed" {
		t.Fatalf("zoned info: %+v", z)
	}
}

// zonedExtOffset returns the file offset of the zoned extension's header
// (magic, length), found by walking the header extensions.
func zonedExtOffset(t *testing.T, b []byte) int {
	t.Helper()
	h, err := image.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	for off := int(h.HeaderLength); off+8 <= len(b); {
		magic := binary.BigEndian.Uint32(b[off:])
		n := int(binary.BigEndian.Uint32(b[off+4:]))
		if magic == image.ExtZoned {
			return off
		}
		if magic == 0 {
			break
		}
		off += 8 + (n+7)&^7
	}
	t.Fatal("no zoned extension")
	return 0
}

// TestDescribeDamaged: info describes an image whose zoned metadata is
// damaged (zone.Open refuses it) as qemu-img info describes a corrupt
// image: the configuration as stored, corrupt, and the problems; it never
// writes to the image.
func TestDescribeDamaged(t *testing.T) {
	p := mk(t, "100M", "zone.mode=host-managed,zone.size=16M,zone.conventional_zones=1")
	d, err := zone.Open(p, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, z := range []int64{1, 2} {
		if _, err := d.WriteAt(make([]byte, 4096), z*16<<20); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Manage(zone.OpFinish, 3*16<<20, 16<<20); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	ext := zonedExtOffset(t, good)
	meta := binary.BigEndian.Uint64(good[ext+8+48:])
	healthy := info.Conditions{NotWP: 1, Empty: 3, Closed: 2, Full: 1, Active: 2, Sequence: 6}
	cases := []struct {
		name    string
		damage  func(b []byte)
		model   string
		conds   *info.Conditions
		problem string
	}{
		{"healthy", func(b []byte) {}, "host-managed", &healthy, ""},
		{"wp-outside-zone", func(b []byte) { binary.LittleEndian.PutUint64(b[meta+8*2:], 0x7000000) }, "host-managed",
			&info.Conditions{NotWP: 1, Empty: 3, Closed: 1, Full: 1, Active: 1, Sequence: 6, Invalid: 1}, "write pointer 0x7000000 of zone 2 lies outside the zone"},
		{"byte-swapped", func(b []byte) {
			for i := uint64(0); i < 7; i++ {
				binary.BigEndian.PutUint64(b[meta+8*i:], binary.LittleEndian.Uint64(b[meta+8*i:]))
			}
		}, "host-managed", &healthy, "stored byte-swapped"},
		{"meta-offset-0", func(b []byte) { binary.BigEndian.PutUint64(b[ext+8+48:], 0) }, "host-managed", nil, "zonedmeta_offset 0x0"},
		{"zone-size-bad", func(b []byte) { binary.BigEndian.PutUint64(b[ext+8+4:], 3<<20) }, "host-managed", nil, "zone_size 3145728"},
		{"model-bad", func(b []byte) { b[ext+8] = 7 }, "unknown (7)", nil, "unknown zone model 7"},
		{"extension-missing", func(b []byte) { binary.BigEndian.PutUint32(b[ext:], 0x12345678) }, "unknown", nil, "zoned extension 0x007a6264 is missing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), good...)
			tc.damage(b)
			q := filepath.Join(t.TempDir(), "d.qcow2")
			if err := os.WriteFile(q, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.problem != "" {
				// Open validates the table lazily: reading every zone must fail.
				if d, err := zone.Open(q, image.Options{ReadOnly: true}); err == nil {
					_, err = d.Counts()
					d.Close()
					if err == nil {
						t.Fatal("zone.Open accepts the damaged image: the test damages nothing")
					}
				}
			}
			inf, err := info.Describe(q, false)
			if err != nil {
				t.Fatalf("info: %v", err)
			}
			z := inf.FormatSpecific.Data.Zoned
			if z == nil || z.Model != tc.model || z.Corrupt != (tc.problem != "") {
				t.Fatalf("zoned info %+v", z)
			}
			if (z.Conditions == nil) != (tc.conds == nil) || z.Conditions != nil && *z.Conditions != *tc.conds {
				t.Errorf("conditions %+v, want %+v", z.Conditions, tc.conds)
			}
			found := tc.problem == "" && len(z.Problems) == 0
			for _, p := range z.Problems {
				found = found || strings.Contains(p, tc.problem)
			}
			if !found {
				t.Errorf("problems %q, want one saying %q", z.Problems, tc.problem)
			}
			js, _ := json.Marshal(inf)
			if strings.Contains(string(js), `"corrupt":true`) != (tc.problem != "") {
				t.Errorf("JSON: %s", js)
			}
			after, err := os.ReadFile(q)
			if err != nil || !bytes.Equal(after, b) {
				t.Error("info changed the image")
			}
		})
	}
}
