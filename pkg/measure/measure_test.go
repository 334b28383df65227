package measure_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"

	"github.com/zqimg/zqimg/pkg/blockdev"
	"github.com/zqimg/zqimg/pkg/convert"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/measure"
	"github.com/zqimg/zqimg/pkg/zone"
)

func measureNew(t *testing.T, size uint64, opts ...string) *measure.Result {
	t.Helper()
	r, err := measure.Measure(measure.Request{Format: "qcow2", Options: opts, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A zoned image's write-pointer table is metadata: it adds its clusters
// (8 bytes per zone, rounded up to clusters) to both sizes.
func TestMeasureCountsWritePointerTable(t *testing.T) {
	for _, tc := range []struct {
		size  uint64
		cs    uint64
		zones []string
		nr    uint64
	}{
		{1 << 30, 65536, []string{"zone.mode=host-managed,zone.size=4M"}, 256},
		{1 << 30, 4096, []string{"zone.mode=host-managed,zone.size=64k,zone.max_append_bytes=4k"}, 16384},
		{100 << 20, 512, []string{"zone.mode=host-managed,zone.size=1M,zone.conventional_zones=3"}, 100},
	} {
		cl := "cluster_size=" + strconv.FormatUint(tc.cs, 10)
		plain := measureNew(t, tc.size, cl)
		zoned := measureNew(t, tc.size, append([]string{cl}, tc.zones...)...)
		table := (tc.nr*8 + tc.cs - 1) / tc.cs * tc.cs
		// The refcount structure may need a little more for the table.
		for _, d := range []uint64{zoned.FullyAllocated - plain.FullyAllocated, zoned.Required - plain.Required} {
			if d < table || d > table+2*tc.cs {
				t.Errorf("%v: zoned sizes exceed the plain ones by %d bytes, the table takes %d", tc.zones, d, table)
			}
		}
	}
}

func mkImage(t *testing.T, path string, opts []string, size uint64) {
	t.Helper()
	testimg.File(t, path, strconv.FormatUint(size, 10), opts...)
}

func fileSize(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(st.Size())
}

// A zoned image with every zone written full takes the fully allocated
// size; measuring a zoned source counts its data below write pointers
// only (data beyond them changes nothing), and converting it takes no more
// than the required size.
func TestMeasureZonedImages(t *testing.T) {
	dir := t.TempDir()
	opts := []string{"zone.mode=host-managed,zone.size=1M,zone.conventional_zones=2,zone.max_append_bytes=4k,cluster_size=4k"}
	const size = 32 << 20
	full := filepath.Join(dir, "full.qcow2")
	mkImage(t, full, opts, size)
	d, err := zone.Open(full, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0x5a}, 1<<20)
	for off := int64(0); off < size; off += 1 << 20 {
		if _, err := d.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	m := measureNew(t, size, opts...)
	if got := fileSize(t, full); got > m.FullyAllocated || m.FullyAllocated-got > 4*4096 {
		t.Errorf("a full zoned image takes %d bytes, measure says %d", got, m.FullyAllocated)
	}

	src := filepath.Join(dir, "src.qcow2")
	mkImage(t, src, opts, size)
	d, err = zone.Open(src, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{100 << 10, 3 << 20, 7 << 20, 20 << 20} {
		if _, err := d.WriteAt(data[:300<<10], off/(1<<20)*(1<<20)); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	measureSrc := func() *measure.Result {
		disk, err := blockdev.Open(src, blockdev.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer disk.Close()
		// Like convert, measure uses create's defaults (64k clusters)
		// for what -o does not say, and the source's zoned configuration.
		r, err := measure.Measure(measure.Request{Format: "qcow2", Source: disk, Options: []string{"cluster_size=4k"}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	before := measureSrc()
	if before.FullyAllocated != m.FullyAllocated {
		t.Errorf("a zoned source keeps its configuration: fully allocated %d, want %d", before.FullyAllocated, m.FullyAllocated)
	}
	wantData := uint64(4 * 300 << 10)
	if before.Required != m.Required+wantData {
		t.Errorf("required %d, want %d (metadata) + %d (data)", before.Required, m.Required, wantData)
	}
	img, err := image.Open(src, image.Options{Features: image.IncompatZoned})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(data, 10<<20); err != nil { // an empty zone
		t.Fatal(err)
	}
	if _, err := img.WriteAt(data[:64<<10], 3<<20+400<<10); err != nil { // beyond a write pointer
		t.Fatal(err)
	}
	img.Close()
	if after := measureSrc(); after.Required != before.Required || after.FullyAllocated != before.FullyAllocated {
		t.Errorf("data beyond write pointers counted: required %d, before %d", after.Required, before.Required)
	}
	disk, err := blockdev.Open(src, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.qcow2")
	if _, err := convert.Convert(convert.Request{Source: disk, Dest: out, Format: "qcow2", Options: []string{"cluster_size=4k"}}); err != nil {
		t.Fatal(err)
	}
	disk.Close()
	if got := fileSize(t, out); got > before.Required {
		t.Errorf("converted image takes %d bytes, more than the required %d", got, before.Required)
	}
}

func TestMeasureRaw(t *testing.T) {
	r, err := measure.Measure(measure.Request{Format: "raw", Size: 1000})
	if err != nil || r.Required != 1024 || r.FullyAllocated != 1024 || r.Bitmaps != nil {
		t.Errorf("raw: %+v, %v", r, err)
	}
	if _, err := measure.Measure(measure.Request{Format: "raw", Size: 1, Options: []string{"cluster_size=4k"}}); err == nil {
		t.Error("raw accepted cluster_size")
	}
	if _, err := measure.Measure(measure.Request{Format: "vdi", Size: 1}); err == nil {
		t.Error("unknown format accepted")
	}
}
