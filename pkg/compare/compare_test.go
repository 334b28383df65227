package compare_test

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"

	"github.com/zqimg/zqimg/pkg/blockdev"
	"github.com/zqimg/zqimg/pkg/compare"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

func mkImage(t *testing.T, path string, size int64, opts ...string) {
	t.Helper()
	testimg.File(t, path, strconv.FormatInt(size, 10), opts...)
}

func write(t *testing.T, path string, p []byte, off int64) {
	t.Helper()
	d, err := zone.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, a, b string, o compare.Options) *compare.Result {
	t.Helper()
	da, err := blockdev.Open(a, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer da.Close()
	db, err := blockdev.Open(b, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r, err := compare.Compare(da, db, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func lines(r *compare.Result) string {
	var b bytes.Buffer
	for _, l := range r.Lines() {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// The first differing byte is found at sector granularity wherever it
// lies (data against data, data against zeroes, in the excess of a
// larger image), against a model of the contents.
func TestCompareFindsFirstDifference(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewSource(1))
	const size = 3 << 20
	for k := 0; k < 20; k++ {
		a, b := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2")
		os.Remove(a)
		os.Remove(b)
		mkImage(t, a, size)
		mkImage(t, b, size, "cluster_size=4k")
		common := bytes.Repeat([]byte{9}, 1<<20)
		write(t, a, common, 512<<10)
		write(t, b, common, 512<<10)
		off := rng.Int63n(size)
		p := []byte{byte(1 + rng.Intn(200))}
		if k%2 == 0 {
			write(t, a, p, off)
		} else {
			write(t, b, p, off)
		}
		inCommon := off >= 512<<10 && off < 512<<10+1<<20
		if inCommon && p[0] == 9 {
			continue
		}
		r := run(t, a, b, compare.Options{})
		if r.Kind != compare.Content || r.Offset != off/512*512 {
			t.Fatalf("difference at %d: %q", off, lines(r))
		}
	}
	a := filepath.Join(dir, "a.qcow2")
	if r := run(t, a, a, compare.Options{Strict: true}); r.Kind != compare.Identical || lines(r) != "Images are identical.\n" {
		t.Errorf("an image against itself: %q", lines(r))
	}
}

// Sizes: the excess of the larger image must read as zeroes; -s refuses
// different sizes and different allocation.
func TestCompareSizes(t *testing.T) {
	dir := t.TempDir()
	small, big := filepath.Join(dir, "s.qcow2"), filepath.Join(dir, "b.qcow2")
	mkImage(t, small, 1<<20)
	mkImage(t, big, 2<<20)
	if r := run(t, small, big, compare.Options{}); lines(r) != "Warning: Image size mismatch!\nImages are identical.\n" || r.Kind != compare.Identical {
		t.Errorf("zero excess: %q", lines(r))
	}
	if r := run(t, big, small, compare.Options{Strict: true}); lines(r) != "Strict mode: Image size mismatch!\n" {
		t.Errorf("strict: %q", lines(r))
	}
	write(t, big, []byte{1}, 1<<20+5000)
	if r := run(t, small, big, compare.Options{}); lines(r) != "Warning: Image size mismatch!\nContent mismatch at offset 1053184!\n" {
		t.Errorf("data in the excess: %q", lines(r))
	}
	// Same contents, different allocation: a zero cluster against an
	// unallocated one.
	z1, z2 := filepath.Join(dir, "z1.qcow2"), filepath.Join(dir, "z2.qcow2")
	mkImage(t, z1, 1<<20)
	mkImage(t, z2, 1<<20)
	img, err := image.Open(z1, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(make([]byte, 65536), 65536); err != nil { // allocates zeroes
		t.Fatal(err)
	}
	img.Close()
	if r := run(t, z1, z2, compare.Options{}); r.Kind != compare.Identical {
		t.Errorf("zeroes against unallocated: %q", lines(r))
	}
	// Strict mode compares the whole status, end-of-file flag included:
	// the unallocated run before the zero cluster does not reach the end
	// of the image, the other image's does (qemu-img says the same).
	if r := run(t, z1, z2, compare.Options{Strict: true}); lines(r) != "Strict mode: Offset 0 block status mismatch!\n" {
		t.Errorf("strict allocation: %q", lines(r))
	}
}

// Zoned images: a plain and a zoned image differ; so do different
// geometries and write pointers, the first differing zone named, offsets
// in hex; data beyond a write pointer does not count; limits do not.
func TestCompareZoned(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "plain.qcow2")
	mkImage(t, p, 4<<20)
	z := func(name string, opts ...string) string {
		path := filepath.Join(dir, name)
		mkImage(t, path, 4<<20, append([]string{"zone.mode=host-managed,zone.size=1M"}, opts...)...)
		return path
	}
	z1 := z("z1.qcow2")
	if r := run(t, z1, p, compare.Options{}); r.Kind != compare.ZonedVsPlain || lines(r) != "Zone model mismatch: '"+z1+"' is zoned, '"+p+"' is not!\n" {
		t.Errorf("zoned vs plain: %q", lines(r))
	}
	if r := run(t, p, z1, compare.Options{}); r.Kind != compare.ZonedVsPlain {
		t.Errorf("plain vs zoned: %q", lines(r))
	}
	for _, tc := range []struct {
		opts []string
		want string
	}{
		{[]string{"zone.capacity=512k"}, "Zone geometry mismatch: zone capacity 0x100000 vs 0x80000!\n"},
		{[]string{"zone.conventional_zones=1"}, "Zone geometry mismatch: 0 vs 1 conventional zones!\n"},
	} {
		other := z("other.qcow2", tc.opts...)
		if r := run(t, z1, other, compare.Options{}); lines(r) != tc.want {
			t.Errorf("%v: %q, want %q", tc.opts, lines(r), tc.want)
		}
		os.Remove(other)
	}
	z2 := filepath.Join(dir, "z2.qcow2")
	mkImage(t, z2, 4<<20, "zone.mode=host-managed,zone.size=512k")
	if r := run(t, z1, z2, compare.Options{}); lines(r) != "Zone geometry mismatch: zone size 0x100000 vs 0x80000!\n" {
		t.Errorf("zone size: %q", lines(r))
	}
	z3 := z("z3.qcow2", "zone.max_open_zones=2,zone.max_append_bytes=4k")
	if r := run(t, z1, z3, compare.Options{}); r.Kind != compare.Identical {
		t.Errorf("different limits: %q", lines(r))
	}
	write(t, z1, bytes.Repeat([]byte{5}, 8192), 2<<20)
	write(t, z3, bytes.Repeat([]byte{5}, 4096), 2<<20)
	if r := run(t, z1, z3, compare.Options{}); lines(r) != "Write pointer mismatch in zone 2 (start 0x200000): 0x202000 vs 0x201000!\n" {
		t.Errorf("write pointers: %q", lines(r))
	}
	// Data beyond z3's write pointer (below the zoned layer) does not
	// count: equal write pointers, equal data below them.
	write(t, z3, bytes.Repeat([]byte{5}, 4096), 2<<20+4096)
	img, err := image.Open(z3, image.Options{Features: image.IncompatZoned})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{0xee}, 65536), 3<<20); err != nil {
		t.Fatal(err)
	}
	img.Close()
	if r := run(t, z1, z3, compare.Options{}); r.Kind != compare.Identical {
		t.Errorf("data beyond a write pointer counted: %q", lines(r))
	}
}

func TestCompareProgress(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2")
	mkImage(t, a, 5<<20)
	mkImage(t, b, 3<<20)
	write(t, a, bytes.Repeat([]byte{1}, 3<<20), 0)
	write(t, b, bytes.Repeat([]byte{1}, 3<<20), 0)
	var last, total int64
	calls := 0
	r := run(t, a, b, compare.Options{Progress: func(done, tot int64) {
		if done < last {
			t.Errorf("progress went back from %d to %d", last, done)
		}
		last, total = done, tot
		calls++
	}})
	if r.Kind != compare.Identical || calls < 2 || last != 5<<20 || total != 5<<20 {
		t.Errorf("%q; %d calls, last %d of %d", lines(r), calls, last, total)
	}
}
