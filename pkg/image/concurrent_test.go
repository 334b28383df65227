package image_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// Image satisfies io.ReaderAt, whose contract allows parallel calls: many
// readers and a writer at once must neither race (run under -race) nor
// read anything but what was written.
func TestConcurrentReadersAndWriter(t *testing.T) {
	m := imagetest.NewMemFile(nil)
	if err := image.Format(m, image.CreateOptions{Size: 16 << 20, ClusterBits: 12, Version: 3, RefcountOrder: 4}); err != nil {
		t.Fatal(err)
	}
	img, err := image.OpenFile(m, "c", image.Options{CacheBytes: 64 << 10}) // a small cache: evictions while reading
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	const chunks = 256 // of 64 KiB; chunk i holds byte i+1 once written
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < chunks; i++ {
			if _, err := img.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 64<<10), int64(i)<<16); err != nil {
				errs <- err
				return
			}
			if i%32 == 0 {
				if err := img.Flush(); err != nil {
					errs <- err
					return
				}
			}
		}
	}()
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for k := 0; k < 300; k++ {
				i := (k*13 + r*7) % chunks
				if _, err := img.ReadAt(buf, int64(i)<<16); err != nil {
					errs <- err
					return
				}
				// Either not written yet (zeroes) or written whole.
				if b := buf[0]; (b != 0 && b != byte(i+1)) || !bytes.Equal(buf, bytes.Repeat([]byte{b}, len(buf))) {
					errs <- errTorn
					return
				}
			}
		}(r)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

var errTorn = bytesError("a read saw a partly written chunk")

type bytesError string

func (e bytesError) Error() string { return string(e) }

// TestParallelTransfers: reads, and writes over allocated clusters, are
// really in flight at once: the gate file holds each data transfer until
// four are inside it together, which an image that serialises them never
// lets happen. The data is then what each writer wrote.
func TestParallelTransfers(t *testing.T) {
	for _, write := range []bool{false, true} {
		name := map[bool]string{false: "read", true: "overwrite"}[write]
		t.Run(name, func(t *testing.T) {
			const n, cs = 4, 64 << 10
			m := imagetest.NewMemFile(nil)
			if err := image.Format(m, image.CreateOptions{Size: 16 << 20, ClusterBits: 16, Version: 3, RefcountOrder: 4}); err != nil {
				t.Fatal(err)
			}
			g := imagetest.NewGateFile(m)
			img, err := image.OpenFile(g, "g", image.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			for i := 0; i < n; i++ { // allocate the clusters, cache the L2 table
				if _, err := img.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, cs), int64(i)*cs); err != nil {
					t.Fatal(err)
				}
			}
			if err := img.Flush(); err != nil {
				t.Fatal(err)
			}
			g.Arm(n, 3*time.Second)
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					buf := make([]byte, 4096)
					var err error
					if write {
						_, err = img.WriteAt(bytes.Repeat([]byte{byte(0x80 + i)}, len(buf)), int64(i)*cs+4096)
					} else if _, err = img.ReadAt(buf, int64(i)*cs+4096); err == nil && !bytes.Equal(buf, bytes.Repeat([]byte{byte(i + 1)}, len(buf))) {
						err = errTorn
					}
					errs <- err
				}(i)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if !write {
				return
			}
			if err := img.Flush(); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < n; i++ {
				want := bytes.Repeat([]byte{byte(i + 1)}, cs)
				copy(want[4096:8192], bytes.Repeat([]byte{byte(0x80 + i)}, 4096))
				got := make([]byte, cs)
				if _, err := img.ReadAt(got, int64(i)*cs); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("cluster %d after the parallel overwrites: %v", i, err)
				}
			}
		})
	}
}

// TestInPlaceWriteIsSynced: an overwrite that took the parallel path
// marks the file changed once its data is written, so the next Flush
// syncs it.
func TestInPlaceWriteIsSynced(t *testing.T) {
	f := imagetest.NewFaultFile(nil)
	if err := image.Format(f, image.CreateOptions{Size: 1 << 20, ClusterBits: 16, Version: 3, RefcountOrder: 4}); err != nil {
		t.Fatal(err)
	}
	img, err := image.OpenFile(f, "s", image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if _, err := img.WriteAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	before := f.Syncs()
	if _, err := img.WriteAt(bytes.Repeat([]byte{7}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if f.Syncs() == before {
		t.Fatal("Flush after an in-place overwrite did not sync")
	}
	got := make([]byte, 4096)
	durable := imagetest.NewMemFile(f.Durable())
	img2, err := image.OpenFile(durable, "d", image.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img2.Close()
	if _, err := img2.ReadAt(got, 0); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{7}, 4096)) {
		t.Fatalf("the flushed overwrite is not durable: %v", err)
	}
}
