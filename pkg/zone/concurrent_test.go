package zone_test

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
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

// openGated opens a zoned image over a GateFile, with every write pointer
// loaded and the L2 table allocated (a write to the last zone), so that
// the gate then sees only the data transfers of the requests under test.
func openGated(t *testing.T, path string) (*zone.Device, *imagetest.GateFile) {
	t.Helper()
	f, err := image.OpenOSFile(path, false, false)
	if err != nil {
		t.Fatal(err)
	}
	g := imagetest.NewGateFile(f)
	img, err := image.OpenFile(g, path, image.Options{Features: image.IncompatZoned})
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	d, err := zone.New(img)
	if err != nil {
		img.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	h := d.Header()
	must(d.Counts())
	last := int64(h.NrZones-1) * int64(h.ZoneSize)
	if _, err := d.WriteAt(fill(64*kib, 0xee), last); err != nil {
		t.Fatal(err)
	}
	return d, g
}

// TestParallelZoneRequests: writes and appends to different zones, and
// reads, are really in flight at once (the gate file holds each transfer
// until four are inside it together); each lands where it should.
func TestParallelZoneRequests(t *testing.T) {
	for _, kind := range []string{"write", "append", "read"} {
		t.Run(kind, func(t *testing.T) {
			path := newImage(t, "64M", "zone.size=4M")
			d, g := openGated(t, path)
			const n = 4
			if kind == "read" {
				for w := 0; w < n; w++ {
					if _, err := d.WriteAt(fill(64*kib, byte(w+1)), int64(w)*4*mib); err != nil {
						t.Fatal(err)
					}
				}
			}
			g.Arm(n, 3*time.Second)
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for w := 0; w < n; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					start := int64(w) * 4 * mib
					var err error
					switch kind {
					case "write":
						_, err = d.WriteAt(fill(64*kib, byte(w+1)), start)
					case "append":
						var pos int64
						if pos, err = d.Append([][]byte{fill(64*kib, byte(w+1))}, start); err == nil && pos != start {
							err = fmt.Errorf("append to zone %d landed at %#x", w, pos)
						}
					case "read":
						buf := make([]byte, 64*kib)
						if _, err = d.ReadAt(buf, start); err == nil && !bytes.Equal(buf, fill(64*kib, byte(w+1))) {
							err = fmt.Errorf("zone %d read back other data", w)
						}
					}
					errs <- err
				}(w)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			for w := 0; w < n; w++ {
				start := int64(w) * 4 * mib
				if z := zoneAt(t, d, start); z.WP != uint64(start)+64*kib {
					t.Fatalf("zone %d: write pointer %#x, want %#x", w, z.WP, start+64*kib)
				}
				if b := readBack(t, d, start, 64*kib); !bytes.Equal(b, fill(64*kib, byte(w+1))) {
					t.Fatalf("zone %d: data differs", w)
				}
			}
		})
	}
}

// TestParallelWritesKeepZoneLimits: writers in more zones than
// max_open_zones at once; a zone with a write in flight is never closed
// implicitly, so the open and active counts hold at every moment (a
// monitor samples them) and every write lands.
func TestParallelWritesKeepZoneLimits(t *testing.T) {
	path := newImage(t, "64M", "zone.size=4M", "cluster_size=4k", "zone.max_open_zones=2", "zone.max_active_zones=12")
	d := open(t, path)
	defer d.Close()
	const writers, perWriter = 8, 24
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	stop := make(chan struct{})
	var mon sync.WaitGroup
	mon.Add(1)
	go func() {
		defer mon.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := d.Counts()
			if err != nil {
				errs <- err
				return
			}
			if open := c[zone.CondImpOpen] + c[zone.CondExpOpen]; open > 2 {
				errs <- fmt.Errorf("%d zones open, max_open_zones 2: %v", open, c)
				return
			}
		}
	}()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			start := int64(w) * 4 * mib
			for i := 0; i < perWriter; i++ {
				if _, err := d.WriteAt(fill(4*kib, byte(w*perWriter+i+1)), start+int64(i)*4*kib); err != nil {
					errs <- fmt.Errorf("writer %d op %d: %w", w, i, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(stop)
	mon.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for w := 0; w < writers; w++ {
		start := int64(w) * 4 * mib
		if z := zoneAt(t, d, start); z.WP != uint64(start)+perWriter*4*kib {
			t.Fatalf("zone %d: %+v", w, z)
		}
		for i := 0; i < perWriter; i++ {
			if b := readBack(t, d, start+int64(i)*4*kib, 4*kib); !bytes.Equal(b, fill(4*kib, byte(w*perWriter+i+1))) {
				t.Fatalf("writer %d op %d: data differs", w, i)
			}
		}
	}
}
