package image

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Page-cache writes start their writeback every writeBehindBytes (a hint
// only: the data stays as written); a Sync forgets what it made durable;
// cache mode unsafe, which never syncs, gives no hint either.
func TestWriteBehind(t *testing.T) {
	for _, tc := range []struct {
		cache CacheMode
		hints int
	}{
		{CacheWriteBack, 2},
		{CacheUnsafe, 0},
	} {
		path := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := OpenFileOptions(path, FileOptions{NoLock: true, Cache: tc.cache})
		if err != nil {
			t.Fatal(err)
		}
		chunk := bytes.Repeat([]byte{0x5a}, 64<<10)
		const total = 20 << 20
		for off := int64(0); off < total; off += int64(len(chunk)) {
			if _, err := f.WriteAt(chunk, off); err != nil {
				t.Fatal(err)
			}
			if f.behind.pending >= writeBehindBytes {
				t.Fatalf("%v: %d bytes written without a hint", tc.cache, f.behind.pending)
			}
		}
		if f.behind.hints != tc.hints {
			t.Errorf("%v: %d hints for %d MiB, want %d", tc.cache, f.behind.hints, total>>20, tc.hints)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if f.behind.pending != 0 {
			t.Errorf("%v: %d bytes pending after Sync", tc.cache, f.behind.pending)
		}
		f.Close()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != total || bytes.Count(b, chunk[:1]) != total {
			t.Errorf("%v: file of %d bytes does not hold what was written", tc.cache, len(b))
		}
	}
}
