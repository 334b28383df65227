package image

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// formatFile formats a new image with o in a temporary file and returns
// its path.
func formatFile(t *testing.T, o CreateOptions) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "p.qcow2")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	of := WrapOSFile(f)
	if err := Format(of, o); err != nil {
		t.Fatalf("Format(%+v): %v", o, err)
	}
	if err := of.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFormatPreallocation checks the layouts of preallocated images
// against what stock qemu-img 7.2 makes (the offsets and lengths below
// are those of its images; tests/interop compares the bytes):
// preallocation=metadata maps every cluster, L2 table first, data after,
// and extends the file sparsely; falloc and full put new refcount
// structures after the L1 table, the data right after them, the L2 table
// in the freed first refcount table, and reserve the data.
func TestFormatPreallocation(t *testing.T) {
	const cs = 64 << 10
	for _, c := range []struct {
		mode           PreallocMode
		size           uint64
		fileSize       int64
		reftable, l2   uint64
		data           uint64
		minAlloc       int64 // bytes the file system must have allocated at least
		maxAlloc       int64 // and at most (0: no limit)
		clustersMapped uint64
	}{
		{PreallocMetadata, 64 << 20, 67436544, 0x10000, 0x40000, 0x50000, 0, 1 << 20, 1024},
		// A partly covered last cluster is written whole (QEMU's
		// copy-on-write of its tail), so the file ends at its end.
		{PreallocMetadata, 1536, 393216, 0x10000, 0x40000, 0x50000, cs, 1 << 20, 1},
		{PreallocFalloc, 64 << 20, 67436544, 0x40000, 0x10000, 0x50000, 64 << 20, 0, 1024},
		{PreallocFull, 64 << 20, 67436544, 0x40000, 0x10000, 0x50000, 64 << 20, 0, 1024},
	} {
		p := formatFile(t, CreateOptions{Size: c.size, ClusterBits: 16, Version: 3, RefcountOrder: 4, Preallocation: c.mode})
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != c.fileSize {
			t.Errorf("%v %d: file size %d, want %d", c.mode, c.size, st.Size, c.fileSize)
		}
		if alloc := st.Blocks * 512; alloc < c.minAlloc || (c.maxAlloc > 0 && alloc > c.maxAlloc) {
			t.Errorf("%v %d: %d bytes allocated, want [%d, %d]", c.mode, c.size, alloc, c.minAlloc, c.maxAlloc)
		}
		img, err := Open(p, Options{ReadOnly: true, NoLock: true})
		if err != nil {
			t.Fatal(err)
		}
		h := img.Header()
		if h.RefcountTableOffset != c.reftable || h.L1TableOffset != 0x30000 {
			t.Errorf("%v %d: refcount table at 0x%x, L1 table at 0x%x", c.mode, c.size, h.RefcountTableOffset, h.L1TableOffset)
		}
		if l1 := img.l1.get(0); l1 != c.l2|OflagCopied {
			t.Errorf("%v %d: L1 entry 0x%x, want 0x%x", c.mode, c.size, l1, c.l2|OflagCopied)
		}
		tb, err := img.l2Table(0)
		if err != nil {
			t.Fatal(err)
		}
		for i := uint64(0); i < img.l2Ents; i++ {
			want := uint64(0)
			if i < c.clustersMapped {
				want = (c.data + i*cs) | OflagCopied
			}
			if e := img.entry(tb, i); e.Desc != want {
				t.Errorf("%v %d: L2 entry %d is 0x%x, want 0x%x", c.mode, c.size, i, e.Desc, want)
				break
			}
		}
		buf := make([]byte, min(c.size, 1<<20))
		if _, err := img.ReadAt(buf, int64(c.size)-int64(len(buf))); err != nil {
			t.Fatal(err)
		}
		if !allZeroBytes(buf) {
			t.Errorf("%v %d: the disk does not read as zeroes", c.mode, c.size)
		}
		img.Close()
	}
}

func allZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func TestParsePrealloc(t *testing.T) {
	for _, s := range []string{"off", "metadata", "falloc", "full"} {
		m, ok := ParsePrealloc(s)
		if !ok || m.String() != s {
			t.Errorf("ParsePrealloc(%q) = %v, %v", s, m, ok)
		}
	}
	if _, ok := ParsePrealloc("1234"); ok {
		t.Error("ParsePrealloc accepted 1234")
	}
}

// TestResizePreallocation: growing with a preallocation mode maps the new
// area as qemu-img resize --preallocation does (for a 1 MiB image of 64
// KiB clusters grown by 1 MiB: the L2 table at 0x40000, the new clusters
// from 0x50000; falloc and full: new refcount structures at 0x40000, the
// data from 0x50000, the L2 table in the freed first refcount table), and
// refuses to shrink with one.
func TestResizePreallocation(t *testing.T) {
	const cs = 64 << 10
	for _, c := range []struct {
		mode     PreallocMode
		l2, data uint64
		minAlloc int64
	}{
		{PreallocMetadata, 0x40000, 0x50000, 0},
		{PreallocFalloc, 0x10000, 0x50000, 1 << 20},
		{PreallocFull, 0x10000, 0x50000, 1 << 20},
	} {
		p := formatFile(t, CreateOptions{Size: 1 << 20, ClusterBits: 16, Version: 3, RefcountOrder: 4})
		img, err := Open(p, Options{NoLock: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := img.Resize(1<<20, ResizeOptions{Shrink: true, Preallocation: c.mode}); err != nil {
			t.Errorf("%v: resizing to the same size: %v", c.mode, err)
		}
		if err := img.Resize(512<<10, ResizeOptions{Shrink: true, Preallocation: c.mode}); err != ErrPreallocShrink {
			t.Errorf("%v: shrinking: %v, want ErrPreallocShrink", c.mode, err)
		}
		if err := img.Resize(2<<20, ResizeOptions{Preallocation: c.mode}); err != nil {
			t.Fatalf("%v: %v", c.mode, err)
		}
		if l1 := img.l1.get(0); l1 != c.l2|OflagCopied {
			t.Errorf("%v: L1 entry 0x%x, want 0x%x", c.mode, l1, c.l2|OflagCopied)
		}
		tb, err := img.l2Table(0)
		if err != nil {
			t.Fatal(err)
		}
		for i := uint64(0); i < 32; i++ {
			want := uint64(0)
			if i >= 16 {
				want = (c.data + (i-16)*cs) | OflagCopied
			}
			if e := img.entry(tb, i); e.Desc != want {
				t.Errorf("%v: L2 entry %d is 0x%x, want 0x%x", c.mode, i, e.Desc, want)
				break
			}
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != int64(c.data+1<<20) || st.Blocks*512 < c.minAlloc {
			t.Errorf("%v: file of %d bytes, %d allocated", c.mode, st.Size, st.Blocks*512)
		}
	}
}
