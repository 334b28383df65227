package zone_test

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/zqimg/zqimg/pkg/zone"
)

// TestConcurrentRequests drives one device from many goroutines at once,
// as the mount and bench do: writers append to their own zones, readers
// read every zone and report zones, one goroutine flushes. Run under
// -race (scripts/test.sh does): the device and the image must be safe
// for concurrent use. Every append lands where it says, and the data
// reads back.
func TestConcurrentRequests(t *testing.T) {
	path := newImage(t, "64M", "zone.size=4M", "zone.max_append_bytes=16k", "cluster_size=4k")
	d := open(t, path)
	const writers, perWriter = 6, 40
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			start := int64(w) * 4 * mib
			for i := 0; i < perWriter; i++ {
				buf := bytes.Repeat([]byte{byte(w*perWriter + i + 1)}, 8*kib)
				var pos int64
				var err error
				if i%2 == 0 {
					pos, err = d.Append([][]byte{buf}, start)
				} else {
					z := must(d.Report(start, 1))[0]
					pos = int64(z.WP)
					_, err = d.WriteAt(buf, pos)
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d op %d: %w", w, i, err)
					return
				}
				if pos != start+int64(i)*8*kib {
					errs <- fmt.Errorf("writer %d op %d landed at %#x", w, i, pos)
					return
				}
			}
		}(w)
	}
	stop := make(chan struct{})
	var bg sync.WaitGroup
	for r := 0; r < 3; r++ {
		bg.Add(1)
		go func(r int) {
			defer bg.Done()
			buf := make([]byte, 64*kib)
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := d.ReadAt(buf, int64((k*7+r)%1000)*64*kib); err != nil {
					errs <- err
					return
				}
				if _, err := d.Report(0, 16); err != nil {
					errs <- err
					return
				}
				if r == 0 && k%10 == 0 {
					if err := d.Flush(); err != nil {
						errs <- err
						return
					}
				}
			}
		}(r)
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	d = reopen(t, d, path)
	defer d.Close()
	for w := 0; w < writers; w++ {
		for i := 0; i < perWriter; i++ {
			off := int64(w)*4*mib + int64(i)*8*kib
			if b := readBack(t, d, off, 8*kib); !bytes.Equal(b, bytes.Repeat([]byte{byte(w*perWriter + i + 1)}, 8*kib)) {
				t.Fatalf("writer %d op %d: data at %#x", w, i, off)
			}
		}
		if z := zoneAt(t, d, int64(w)*4*mib); z.WP != uint64(w)*4*mib+perWriter*8*kib || z.Cond != zone.CondClosed {
			t.Fatalf("zone %d after the run: %+v", w, z)
		}
	}
}
