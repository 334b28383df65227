package convert

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/pkg/blockdev"
)

// TestSourcesConcatenate: several disks read end to end, each padded
// with zeroes to a whole 512-byte sector; block status runs
// end at each disk's end, and the padding is zero.
func TestSourcesConcatenate(t *testing.T) {
	dir := t.TempDir()
	var disks []*blockdev.Disk
	var want []byte
	for i, n := range []int{1000, 4096, 700} {
		b := bytes.Repeat([]byte{byte(i + 1)}, n)
		p := filepath.Join(dir, string(rune('a'+i))+".raw")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := blockdev.Open(p, blockdev.Options{Format: blockdev.Raw})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		disks = append(disks, d)
		want = append(want, b...)
		// A raw disk's size is its file's, rounded up to 512 bytes (as
		// qemu counts it); a concatenation pads every disk but the last
		// to 512 bytes, which raw disks are already.
		want = append(want, make([]byte, d.Size()-int64(n))...)
	}
	s := newSources(disks[0], disks[1:])
	if s.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d", s.Size(), len(want))
	}
	got := make([]byte, len(want))
	if _, err := s.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("concatenation reads wrong bytes")
	}
	// A read across the padding and into the next disk.
	p := make([]byte, 100)
	if _, err := s.ReadAt(p, 990); err != nil || !bytes.Equal(p, want[990:1090]) {
		t.Fatalf("read at 990: %v", err)
	}
	if _, err := s.ReadAt(p, s.Size()-50); err == nil {
		t.Fatal("read past the end succeeded")
	}
	var runs []int64
	for off := int64(0); off < s.Size(); {
		st, err := s.Status(off, s.Size()-off)
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, off+st.Len)
		if off == 1000 && !st.Zero {
			t.Errorf("padding at 1000 not zero: %+v", st)
		}
		off += st.Len
	}
	for _, end := range []int64{1024, 1024 + 4096, s.Size()} {
		found := false
		for _, r := range runs {
			found = found || r == end
		}
		if !found {
			t.Errorf("no status run ends at %d (runs end at %v)", end, runs)
		}
	}
}
