package blockdev_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"

	"github.com/zqimg/zqimg/pkg/blockdev"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

func mkImage(t *testing.T, path string, size int64, opts ...string) {
	t.Helper()
	testimg.File(t, path, strconv.FormatInt(size, 10), opts...)
}

func open(t *testing.T, path, format string) *blockdev.Disk {
	t.Helper()
	d, err := blockdev.Open(path, blockdev.Options{Format: format})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// statuses lists the runs of a disk.
func statuses(t *testing.T, d *blockdev.Disk, f func(off, n int64) (blockdev.Status, error)) []blockdev.Status {
	t.Helper()
	var out []blockdev.Status
	for off := int64(0); off < d.Size(); {
		s, err := f(off, d.Size()-off)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
		off += s.Len
	}
	return out
}

func TestProbe(t *testing.T) {
	dir := t.TempDir()
	q := filepath.Join(dir, "a.qcow2")
	mkImage(t, q, 1<<20)
	r := filepath.Join(dir, "a.img")
	os.WriteFile(r, []byte("QFI"), 0o644) // too short for a qcow2 header
	for path, want := range map[string]string{q: "qcow2", r: "raw"} {
		if got, err := blockdev.Probe(path); err != nil || got != want {
			t.Errorf("Probe(%s) = %s, %v; want %s", filepath.Base(path), got, err, want)
		}
	}
	if _, err := blockdev.Open(filepath.Join(dir, "missing"), blockdev.Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := blockdev.Open(dir, blockdev.Options{}); err == nil {
		t.Error("a directory opened")
	}
	var ue *blockdev.UnknownFormatError
	if _, err := blockdev.Open(q, blockdev.Options{Format: "vmdk"}); !errors.As(err, &ue) {
		t.Errorf("unknown format: %v", err)
	}
	if _, err := blockdev.Open(r, blockdev.Options{Format: "qcow2"}); err == nil {
		t.Error("a raw file opened as qcow2")
	}
	// A qcow2 file read as raw is its bytes.
	d := open(t, q, "raw")
	b := make([]byte, 4)
	if _, err := d.ReadAt(b, 0); err != nil || !bytes.Equal(b, []byte{'Q', 'F', 'I', 0xfb}) {
		t.Errorf("raw read of a qcow2 file: %x, %v", b, err)
	}
}

// Raw files: data and holes as the file system reports them; every byte
// allocated at its own offset; a size rounded up to whole sectors whose
// tail reads as zeroes.
func TestRawStatus(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte{1}, 8192), 1<<20)
	f.WriteAt([]byte{2, 2, 2}, 3<<20) // the file ends 3 bytes into a sector
	f.Close()
	d := open(t, path, "")
	if d.Format() != "raw" || d.Size() != 3<<20+512 {
		t.Fatalf("format %s, size %d", d.Format(), d.Size())
	}
	var data int64
	for _, s := range statuses(t, d, d.Status) {
		if !s.Allocated || !s.OffsetValid || s.Data == s.Zero || s.File != path {
			t.Errorf("raw status %+v", s)
		}
		if s.Data {
			data += s.Len
		}
	}
	// File systems allocate in blocks of at least a sector.
	if data < 8192+512 || data > 8192+2*65536 {
		t.Errorf("%d bytes of data reported", data)
	}
	tail := make([]byte, 512)
	if _, err := d.ReadAt(tail, 3<<20); err != nil || !bytes.Equal(tail[:4], []byte{2, 2, 2, 0}) {
		t.Errorf("tail: %v %v", tail[:4], err)
	}
}

// A backing chain: the top layer's status leaves unallocated ranges to
// the backing file; Status answers from the first layer that allocates,
// MapStatus counts the depth; both see zeroes beyond a short backing file.
func TestBackingChainStatus(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	mkImage(t, base, 1<<20)
	img, err := image.Open(base, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt(bytes.Repeat([]byte{1}, 65536), 0)
	img.Close()
	// zqimg create makes no backing files: write the header fields.
	top := filepath.Join(dir, "top.qcow2")
	mkImage(t, top, 2<<20, "cluster_size=64k")
	b, _ := os.ReadFile(top)
	name := "base.qcow2"
	// The backing file name after the header extensions, in the header
	// cluster; no backing format: probed.
	boff := 4096
	copy(b[boff:], name)
	putBE64(b[8:], uint64(boff))
	putBE32(b[16:], uint32(len(name)))
	os.WriteFile(top, b, 0o644)
	d := open(t, filepath.Join(dir, "top.qcow2"), "")
	if d.Backing() == nil {
		t.Fatal("no backing disk")
	}
	s, err := d.LayerStatus(0, d.Size())
	if err != nil || s.Allocated || s.Zero || s.Data || s.Len != 2<<20 {
		t.Errorf("top layer at 0: %+v %v", s, err)
	}
	s, err = d.Status(0, d.Size())
	if err != nil || !s.Allocated || !s.Data || s.Len != 65536 || s.Depth != 1 {
		t.Errorf("chain at 0: %+v %v", s, err)
	}
	s, err = d.MapStatus(65536, d.Size()-65536)
	if err != nil || s.Allocated || !s.Zero || s.Depth != 1 {
		t.Errorf("map at 64k: %+v %v", s, err)
	}
	s, err = d.MapStatus(1<<20, 1<<20)
	if err != nil || !s.Zero || s.Depth != 0 || !s.EOF {
		t.Errorf("map beyond the backing file: %+v %v", s, err)
	}
	p := make([]byte, 65536)
	if _, err := d.ReadAt(p, 0); err != nil || p[0] != 1 {
		t.Errorf("read through the chain: %v %v", p[0], err)
	}
	if got := blockdev.BackingPath("dir/top.qcow2", "b.qcow2"); got != "dir/b.qcow2" {
		t.Errorf("BackingPath: %s", got)
	}
	if got := blockdev.BackingPath("./x/top", "/abs/b"); got != "/abs/b" {
		t.Errorf("BackingPath: %s", got)
	}
}

func putBE64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (56 - 8*i))
	}
}

func putBE32(b []byte, v uint32) {
	for i := 0; i < 4; i++ {
		b[i] = byte(v >> (24 - 8*i))
	}
}

// Zoned images: data at or beyond a write pointer reads as zeroes and is
// reported as unallocated zeroes; below it, as stored.
func TestZonedClipping(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "z.qcow2")
	mkImage(t, path, 4<<20, "zone.mode=host-managed,zone.size=1M,zone.capacity=768k,zone.conventional_zones=1")
	dev, err := zone.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dev.WriteAt(bytes.Repeat([]byte{3}, 8192), 1<<20)
	dev.WriteAt(bytes.Repeat([]byte{4}, 4096), 0)
	dev.Manage(zone.OpFinish, 2<<20, 1<<20)
	dev.Close()
	img, err := image.Open(path, image.Options{Features: image.IncompatZoned})
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt(bytes.Repeat([]byte{9}, 65536), 1<<20+65536)  // beyond the write pointer
	img.WriteAt(bytes.Repeat([]byte{9}, 4096), 2<<20+800<<10) // finished zone, beyond the capacity
	img.Close()
	d := open(t, path, "")
	if !d.Zoned() || len(d.Zones()) != 4 || d.ZoneHeader().ZoneCapacity != 768<<10 {
		t.Fatalf("zones: %+v", d.Zones())
	}
	all := make([]byte, d.Size())
	if _, err := d.ReadAt(all, 0); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, d.Size())
	copy(want, bytes.Repeat([]byte{4}, 4096))
	copy(want[1<<20:], bytes.Repeat([]byte{3}, 8192))
	if !bytes.Equal(all, want) {
		t.Error("data beyond write pointers is read")
	}
	for off := int64(0); off < d.Size(); {
		s, err := d.Status(off, d.Size()-off)
		if err != nil {
			t.Fatal(err)
		}
		if s.Data {
			z := d.Zones()[off>>20]
			if uint64(off+s.Len) > blockdev.ValidEnd(z) {
				t.Errorf("data reported at [%#x, %#x), zone data ends at %#x", off, off+s.Len, blockdev.ValidEnd(z))
			}
		}
		off += s.Len
	}
	if v := blockdev.ValidEnd(d.Zones()[2]); v != 2<<20+768<<10 {
		t.Errorf("finished zone: data ends at %#x", v)
	}
}

// setBacking makes the qcow2 image at path name backing (no format: probed),
// writing the name into the header cluster as qemu-img does.
func setBacking(t *testing.T, path, backing string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	boff := 4096
	copy(b[boff:], backing)
	putBE64(b[8:], uint64(boff))
	putBE32(b[16:], uint32(len(backing)))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// openFDs counts the descriptors of this process open on each file.
func openFDs(t *testing.T) map[string]int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	m := map[string]int{}
	for _, e := range ents {
		if p, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil {
			m[p]++
		}
	}
	return m
}

// TestChainOpensEachImageOnce: a backing chain of 40 images is opened with
// one descriptor per image file, not once per overlay above it (which
// made a chain of 41 sparse images cost gigabytes), and reads and block
// status still descend the whole chain.
func TestChainOpensEachImageOnce(t *testing.T) {
	const n = 40
	dir := t.TempDir()
	paths := make([]string, n)
	for i := range paths {
		paths[i] = filepath.Join(dir, "i"+strconv.Itoa(i)+".qcow2")
		mkImage(t, paths[i], 4<<20, "cluster_size=64k")
		if i > 0 {
			setBacking(t, paths[i], filepath.Base(paths[i-1]))
		}
	}
	img, err := image.Open(paths[0], image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{7}, 512), 1<<20); err != nil {
		t.Fatal(err)
	}
	img.Close()
	d := open(t, paths[n-1], "")
	fds := openFDs(t)
	for i, p := range paths {
		if fds[p] != 1 {
			t.Errorf("image %d of the chain is open %d times, want once", i, fds[p])
		}
	}
	depth := 0
	for b := d; b.Backing() != nil; b = b.Backing() {
		depth++
		if want := filepath.Join(dir, "i"+strconv.Itoa(n-1-depth)+".qcow2"); b.Backing().Path() != want {
			t.Errorf("backing at depth %d is %s, want %s", depth, b.Backing().Path(), want)
		}
	}
	if depth != n-1 {
		t.Errorf("chain depth %d, want %d", depth, n-1)
	}
	p := make([]byte, 1024)
	if _, err := d.ReadAt(p, 1<<20-512); err != nil || p[511] != 0 || p[512] != 7 || p[1023] != 7 {
		t.Errorf("read through the chain: %v %v", p[511:513], err)
	}
	s, err := d.Status(1<<20, 512)
	if err != nil || !s.Data || s.Depth != n-1 {
		t.Errorf("status through the chain: %+v %v", s, err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for i, p := range paths {
		if c := openFDs(t)[p]; c != 0 {
			t.Errorf("image %d still open %d times after Close", i, c)
		}
	}
}
