package image_test

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
)

// Direct I/O (cache modes none and directsync) goes through aligned bounce
// buffers for requests the device would refuse: any offset, length and
// buffer address reads and writes exactly what a buffered file would, and
// the file never grows past the last byte written.
func TestOSFileDirectIO(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := image.OpenFileOptions(path, image.FileOptions{NoLock: true, Cache: image.CacheNone})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.DirectIOError(); err != nil {
		t.Logf("no direct I/O here (%v): the test checks the page-cache path only", err)
	}
	rng := rand.New(rand.NewSource(1))
	var want []byte
	for i := 0; i < 400; i++ {
		off := rng.Int63n(64 << 10)
		n := 1 + rng.Intn(9000)
		buf := make([]byte, n+7)[rng.Intn(7):][:n] // any buffer alignment
		rng.Read(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatalf("write %d bytes at %d: %v", n, off, err)
		}
		if end := off + int64(n); end > int64(len(want)) {
			want = append(want, make([]byte, end-int64(len(want)))...)
		}
		copy(want[off:], buf)
		if size, _ := f.Size(); size != int64(len(want)) {
			t.Fatalf("after a write of %d bytes at %d the file is %d bytes, want %d", n, off, size, len(want))
		}
		roff := rng.Int63n(int64(len(want)))
		rn := 1 + rng.Intn(9000)
		got := make([]byte, rn+5)[rng.Intn(5):][:rn]
		m, err := f.ReadAt(got, roff)
		wantN := min(rn, len(want)-int(roff))
		if m != wantN || (m < rn && err == nil) || (m == rn && err != nil) {
			t.Fatalf("read %d bytes at %d: %d, %v; want %d", rn, roff, m, err, wantN)
		}
		if !bytes.Equal(got[:m], want[roff:roff+int64(m)]) {
			t.Fatalf("read %d bytes at %d: wrong data", rn, roff)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(b, want) {
		t.Fatalf("file content differs from what was written (%v)", err)
	}
}

// ZeroRange zeroes, reserves and extends, whatever fallocate mode the file
// system has.
func TestOSFileZeroRange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, bytes.Repeat([]byte{7}, 10000), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := image.OpenOSFile(path, false, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.ZeroRange(4096, 4096); err != nil {
		t.Fatal(err)
	}
	if err := f.ZeroRange(12288, 8192); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if len(b) != 20480 || !bytes.Equal(b[:4096], bytes.Repeat([]byte{7}, 4096)) ||
		bytes.IndexByte(b[4096:8192], 7) >= 0 || !bytes.Equal(b[8192:10000], bytes.Repeat([]byte{7}, 1808)) ||
		bytes.IndexByte(b[10000:], 7) >= 0 {
		t.Fatalf("zero range: length %d, content wrong", len(b))
	}
	if a, _ := f.AllocatedBytes(); a < 20480 {
		t.Fatalf("zeroed range not reserved: %d bytes allocated", a)
	}
}
