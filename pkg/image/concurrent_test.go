package image_test

import (
	"bytes"
	"sync"
	"testing"

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
