package image_test

import (
	"bytes"
	"errors"
	"fmt"
	mathrand "math/rand"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zqimg/zqimg/internal/testimg"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
	"github.com/zqimg/zqimg/pkg/zone"
)

// TestParallelOpsModel drives one image from several goroutines at once,
// each with random writes (allocating and in place, whole and partial
// clusters), zero writes, discards, reads and flushes on a region of its
// own (regions are whole clusters), checked
// against an in-memory model of its region. Two goroutines also write
// into the same clusters at different offsets, so that allocations of the
// same cluster meet. Afterwards the image checks without corruption or
// leak and reads back as the model says. Run under -race.
func TestParallelOpsModel(t *testing.T) {
	for _, cfg := range []struct {
		name        string
		clusterBits uint32
		version     uint32
		extL2       bool
	}{{"4k", 12, 3, false}, {"64k", 16, 3, false}, {"v2-4k", 12, 2, false}, {"extl2-32k", 15, 3, true}} {
		t.Run(cfg.name, func(t *testing.T) {
			const workers, region = 4, 1 << 20
			m := imagetest.NewMemFile(nil)
			if err := image.Format(m, image.CreateOptions{Size: (workers + 1) * region, ClusterBits: cfg.clusterBits, Version: cfg.version, RefcountOrder: 4, ExtendedL2: cfg.extL2}); err != nil {
				t.Fatal(err)
			}
			img, err := image.OpenFile(m, "p", image.Options{CacheBytes: 32 << 10})
			if err != nil {
				t.Fatal(err)
			}
			models := make([][]byte, workers)
			var wg sync.WaitGroup
			errs := make(chan error, workers+2)
			for w := 0; w < workers; w++ {
				models[w] = make([]byte, region)
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					errs <- regionOps(img, rand.New(rand.NewPCG(uint64(w), 7)), int64(w)*region, models[w], 300)
				}(w)
			}
			// The shared region: two writers, interleaved 512-byte
			// slots of the same clusters.
			shared := make([]byte, region)
			for w := 0; w < 2; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					base := int64(workers) * region
					for s := w; s < region/512; s += 2 {
						p := bytes.Repeat([]byte{byte(s%251 + 1)}, 512)
						if _, err := img.WriteAt(p, base+int64(s)*512); err != nil {
							errs <- fmt.Errorf("shared writer %d slot %d: %w", w, s, err)
							return
						}
						copy(shared[s*512:], p) // disjoint slots: no race
					}
					errs <- nil
				}(w)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			if r := checkImage(t, "after the parallel run", m, false); r.corruptions != 0 || r.leaks != 0 {
				t.Fatalf("check after the parallel run: %d corruptions, %d leaks:\n%s", r.corruptions, r.leaks, r.report)
			}
			img, err = image.OpenFile(m, "p", image.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			got := make([]byte, region)
			for w := 0; w <= workers; w++ {
				want := shared
				if w < workers {
					want = models[w]
				}
				if _, err := img.ReadAt(got, int64(w)*region); err != nil {
					t.Fatal(err)
				}
				if i := firstDiff(got, want); i >= 0 {
					t.Fatalf("region %d differs from the model at byte %#x", w, i)
				}
			}
		})
	}
}

// regionOps runs n random operations on [base, base+len(model)) of img,
// keeping model up to date and checking every read against it.
func regionOps(img *image.Image, rng *rand.Rand, base int64, model []byte, n int) error {
	size := int64(len(model))
	for op := 0; op < n; op++ {
		off := rng.Int64N(size)
		l := min(size-off, 1+rng.Int64N(96<<10))
		if rng.IntN(2) == 0 { // sector-aligned half the time
			off &^= 511
			l = max(512, l&^511)
			l = min(l, size-off)
		}
		switch k := rng.IntN(10); {
		case k < 5:
			p := make([]byte, l)
			for i := range p {
				p[i] = byte(op + i/512 + 1)
			}
			if _, err := img.WriteAt(p, base+off); err != nil {
				return fmt.Errorf("write %d at %#x: %w", l, base+off, err)
			}
			copy(model[off:], p)
		case k < 6:
			zero := img.WriteZeroes
			if rng.IntN(2) == 0 {
				zero = img.WriteZeroesUnmap // write -z -u
			}
			if err := zero(base+off, l); err != nil {
				return fmt.Errorf("zero %d at %#x: %w", l, base+off, err)
			}
			clear(model[off : off+l])
		case k < 7:
			if err := img.Discard(base+off, l); err != nil {
				return fmt.Errorf("discard %d at %#x: %w", l, base+off, err)
			}
			clear(model[off : off+l])
		case k < 9:
			got := make([]byte, l)
			if _, err := img.ReadAt(got, base+off); err != nil {
				return fmt.Errorf("read %d at %#x: %w", l, base+off, err)
			}
			if i := firstDiff(got, model[off:off+l]); i >= 0 {
				return fmt.Errorf("read %d at %#x differs from the model at byte %#x", l, base+off, base+off+int64(i))
			}
		default:
			if err := img.Flush(); err != nil {
				return fmt.Errorf("flush: %w", err)
			}
		}
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// holdFile holds the first WriteAt after hold() until release is closed.
type holdFile struct {
	image.File
	mu      sync.Mutex
	armed   bool
	entered chan struct{}
	release chan struct{}
}

func (h *holdFile) hold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed, h.entered, h.release = true, make(chan struct{}), make(chan struct{})
}

func (h *holdFile) WriteAt(p []byte, off int64) (int, error) {
	h.mu.Lock()
	armed := h.armed
	h.armed = false
	h.mu.Unlock()
	if armed {
		close(h.entered)
		<-h.release
	}
	return h.File.WriteAt(p, off)
}

// TestAllocationsOfOneClusterMeet: while a write allocating a cluster is
// in flight, a second write into the same cluster waits for it instead of
// allocating the cluster again; both land, and nothing leaks.
func TestAllocationsOfOneClusterMeet(t *testing.T) {
	m := imagetest.NewMemFile(nil)
	if err := image.Format(m, image.CreateOptions{Size: 1 << 20, ClusterBits: 16, Version: 3, RefcountOrder: 4}); err != nil {
		t.Fatal(err)
	}
	h := &holdFile{File: m}
	img, err := image.OpenFile(h, "h", image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(make([]byte, 512), 1<<19); err != nil { // allocates the L2 table
		t.Fatal(err)
	}
	h.hold()
	first := make(chan error, 1)
	go func() {
		_, err := img.WriteAt(bytes.Repeat([]byte{1}, 512), 0)
		first <- err
	}()
	<-h.entered // the first write is in flight, its cluster allocated
	second := make(chan error, 1)
	go func() {
		_, err := img.WriteAt(bytes.Repeat([]byte{2}, 512), 512)
		second <- err
	}()
	select {
	case err := <-second:
		t.Fatalf("a write into a cluster being allocated completed before the allocation (%v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(h.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1024)
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(bytes.Repeat([]byte{1}, 512), bytes.Repeat([]byte{2}, 512)...)) {
		t.Fatal("the two writes into one cluster did not both land")
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if r := checkImage(t, "after the meeting allocations", m, false); r.corruptions != 0 || r.leaks != 0 {
		t.Fatalf("check: %d corruptions, %d leaks:\n%s", r.corruptions, r.leaks, r.report)
	}
}

// TestParallelFullDisk: writers in regions of their own run out of space
// at once. Every write either succeeds or fails with ENOSPC; the flush and
// close succeed (metadata got its space when it was allocated); the image
// checks without corruption or leak; and every acknowledged write reads
// back after a reopen, while a failed one leaves its range either old or
// new per 512-byte sector (as on a real disk), never anything else.
func TestParallelFullDisk(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			const workers, region = 4, 1 << 20
			m := imagetest.NewMemFile(nil)
			if err := image.Format(m, image.CreateOptions{Size: workers * region, ClusterBits: 12, Version: 3, RefcountOrder: 4}); err != nil {
				t.Fatal(err)
			}
			base := m.Bytes()
			ff := imagetest.NewFaultFile(base)
			ff.SetSpace(int64(len(base)) + int64(seed)*96<<10)
			img, err := image.OpenFile(ff, "full", image.Options{NoLock: true})
			if err != nil {
				t.Fatal(err)
			}
			logs := make([][]written, workers)
			var wg sync.WaitGroup
			var enospc atomicCount
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(seed, uint64(w)))
					for op := 0; op < 60; op++ {
						off := rng.Int64N(region/512) * 512
						n := min(region-off, (1+rng.Int64N(32))*512)
						p := bytes.Repeat([]byte{byte(w*60 + op + 1)}, int(n))
						_, err := img.WriteAt(p, int64(w)*region+off)
						switch {
						case err == nil:
						case errors.Is(err, syscall.ENOSPC):
							enospc.add()
						default:
							t.Errorf("writer %d op %d: %v", w, op, err)
							return
						}
						logs[w] = append(logs[w], written{new: p, off: off, ok: err == nil})
					}
				}(w)
			}
			wg.Wait()
			if err := img.Flush(); err != nil {
				t.Fatalf("flush on a full disk: %v", err)
			}
			if err := img.Close(); err != nil {
				t.Fatalf("close on a full disk: %v", err)
			}
			if enospc.n == 0 {
				t.Fatalf("no write ran out of space (room %d bytes)", int64(seed)*96<<10)
			}
			mf := imagetest.NewMemFile(ff.Durable())
			if r := checkImage(t, "parallel full disk", mf, false); r.corruptions != 0 || r.leaks != 0 {
				t.Fatalf("check: %d corruptions, %d leaks:\n%s", r.corruptions, r.leaks, r.report)
			}
			img, err = image.OpenFile(mf, "full", image.Options{ReadOnly: true, NoLock: true})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			for w := 0; w < workers; w++ {
				got := make([]byte, region)
				if _, err := img.ReadAt(got, int64(w)*region); err != nil {
					t.Fatal(err)
				}
				if err := replayCheck(got, logs[w]); err != nil {
					t.Fatalf("writer %d: %v", w, err)
				}
			}
		})
	}
}

// written is one write of a writer's log: its data at off, and whether
// it must have reached the disk (ok: acknowledged, or made durable by a
// flush).
type written struct {
	new []byte
	off int64
	ok  bool
}

// replayCheck checks a region read back against the log of the writes into
// it (in the order they were made, all from offset 0 of the region, which
// started as zeroes): each sector holds the last ok write over it, or the
// data of a later write (which may or may not have reached the disk, per
// sector, as on a real disk), or, if no ok write covered it, zeroes or
// any write's data.
func replayCheck(got []byte, log []written) error {
	n := len(got) / 512
	allowed := make([][]byte, n)
	settled := make([]bool, n)
	for i := len(log) - 1; i >= 0; i-- {
		l := log[i]
		for s := l.off / 512; s < (l.off+int64(len(l.new)))/512; s++ {
			if settled[s] {
				continue
			}
			k := s - l.off/512
			allowed[s] = append(allowed[s], l.new[k*512:(k+1)*512]...)
			settled[s] = l.ok
		}
	}
	zero := make([]byte, 512)
	for s := 0; s < n; s++ {
		sec := got[s*512 : (s+1)*512]
		ok := !settled[s] && bytes.Equal(sec, zero)
		for k := 0; k+512 <= len(allowed[s]) && !ok; k += 512 {
			ok = bytes.Equal(sec, allowed[s][k:k+512])
		}
		if !ok {
			return fmt.Errorf("sector %d holds data no write that may have left it wrote", s)
		}
	}
	return nil
}

// flusher flushes in a loop until stop is closed or a flush fails (the
// power failed). mark runs before each flush and returns what to do once
// that flush has succeeded (record what it made durable). Wait on the
// result.
func flusher(stop <-chan struct{}, flush func() error, mark func() func()) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			durable := mark()
			if err := flush(); err != nil {
				return
			}
			durable()
		}
	}()
	return &wg
}

type atomicCount struct {
	mu sync.Mutex
	n  int
}

func (c *atomicCount) add() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

// TestParallelCrash cuts the power while four writers (allocating and
// overwriting, whole and partial clusters) and a flusher run at once. A
// write counts as durable when it completed before a flush that then
// succeeded began. After the cut (unsynced writes dropped, kept or torn),
// the image checks without corruption and every sector holds the last
// durable write over it or the data of a later one, as replayCheck says.
func TestParallelCrash(t *testing.T) {
	rounds := 200
	if testing.Short() {
		rounds = 10
	}
	const workers, region = 4, 256 << 10
	m := imagetest.NewMemFile(nil)
	if err := image.Format(m, image.CreateOptions{Size: workers * region, ClusterBits: 12, Version: 3, RefcountOrder: 4}); err != nil {
		t.Fatal(err)
	}
	base := m.Bytes()
	cuts := 0
	for round := 0; round < rounds; round++ {
		rng := rand.New(rand.NewPCG(uint64(round), 11))
		ff := imagetest.NewFaultFile(base)
		ff.PowerFailAfter(20 + rng.IntN(400))
		img, err := image.OpenFile(ff, "crash", image.Options{NoLock: true})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex // guards logs and done
		logs := make([][]written, workers)
		done := make([][]int, workers) // completed writes, by index into logs
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				for op := 0; op < 40; op++ {
					off := r.Int64N(region/512) * 512
					n := min(region-off, (1+r.Int64N(24))*512)
					p := bytes.Repeat([]byte{byte(w*40 + op + 1)}, int(n))
					mu.Lock()
					i := len(logs[w])
					logs[w] = append(logs[w], written{new: p, off: off})
					mu.Unlock()
					if _, err := img.WriteAt(p, int64(w)*region+off); err != nil {
						return // the power failed
					}
					mu.Lock()
					done[w] = append(done[w], i)
					mu.Unlock()
				}
			}(w)
		}
		fl := flusher(stop, img.Flush, func() func() {
			mu.Lock()
			defer mu.Unlock()
			snap := make([][]int, workers)
			for w := range done {
				snap[w] = append([]int(nil), done[w]...)
			}
			return func() {
				mu.Lock()
				defer mu.Unlock()
				for w := range snap {
					for _, i := range snap[w] {
						logs[w][i].ok = true
					}
				}
			}
		})
		wg.Wait()
		close(stop)
		fl.Wait()
		_ = img.Close()
		if !ff.PowerLost() {
			continue // the run ended before the cut
		}
		cuts++
		crashed := ff.Crash(mathrand.New(mathrand.NewSource(int64(round))))
		mf := imagetest.NewMemFile(crashed)
		if r := checkImage(t, fmt.Sprintf("round %d", round), mf, false); r.corruptions != 0 {
			t.Fatalf("round %d: check finds %d corruptions:\n%s", round, r.corruptions, r.report)
		}
		ro, err := image.OpenFile(mf, "crashed", image.Options{ReadOnly: true, NoLock: true})
		if err != nil {
			t.Fatalf("round %d: the crashed image does not open: %v", round, err)
		}
		for w := 0; w < workers; w++ {
			got := make([]byte, region)
			if _, err := ro.ReadAt(got, int64(w)*region); err != nil {
				t.Fatal(err)
			}
			if err := replayCheck(got, logs[w]); err != nil {
				t.Fatalf("round %d writer %d: %v", round, w, err)
			}
		}
		ro.Close()
	}
	if cuts < rounds/2 {
		t.Fatalf("the power failed in only %d of %d rounds", cuts, rounds)
	}
	t.Logf("%d power cuts during parallel writes and flushes", cuts)
}

// TestParallelZonedCrash cuts the power while four writers append to, or
// write at the write pointer of, zones of their own (more zones than open
// slots, so zones are closed implicitly under them) and a flusher runs.
// After the cut, the image checks without corruption, and in each zone
// the write pointer on disk covers at least every write that completed
// before a successful flush began, and everything below it is exactly
// what the zone's writes put there (never a write pointer ahead of its
// data).
func TestParallelZonedCrash(t *testing.T) {
	rounds := 150
	if testing.Short() {
		rounds = 10
	}
	const workers, zsize = 4, 128 << 10
	base := testimg.Bytes(t, "1M", "zone.mode=host-managed", "zone.size=128k", "cluster_size=4k", "zone.max_append_bytes=16k", "zone.max_open_zones=2")
	cuts := 0
	for round := 0; round < rounds; round++ {
		rng := rand.New(rand.NewPCG(uint64(round), 5))
		ff := imagetest.NewFaultFile(base)
		ff.PowerFailAfter(10 + rng.IntN(300))
		img, err := image.OpenFile(ff, "zcrash", image.Options{Features: image.IncompatZoned, NoLock: true})
		if err != nil {
			t.Fatal(err)
		}
		d, err := zone.New(img)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		data := make([][]byte, workers) // what each zone received, in order
		doneEnd := make([]int, workers) // bytes of data[w] completed
		durable := make([]int, workers) // bytes of data[w] made durable by a flush
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				start := int64(w) * zsize
				for op := 0; ; op++ {
					n := (1 + r.IntN(16)) * 512
					if len(data[w])+n > zsize {
						return
					}
					p := bytes.Repeat([]byte{byte(w*64 + op + 1)}, n)
					mu.Lock()
					at := len(data[w])
					data[w] = append(data[w], p...)
					mu.Unlock()
					var err error
					if op%2 == 0 {
						var pos int64
						pos, err = d.Append([][]byte{p}, start)
						if err == nil && pos != start+int64(at) {
							t.Errorf("round %d zone %d: append landed at %#x, want %#x", round, w, pos, start+int64(at))
						}
					} else {
						_, err = d.WriteAt(p, start+int64(at))
					}
					if err != nil {
						return // the power failed
					}
					mu.Lock()
					doneEnd[w] = at + n
					mu.Unlock()
				}
			}(w)
		}
		fl := flusher(stop, d.Flush, func() func() {
			mu.Lock()
			defer mu.Unlock()
			snap := append([]int(nil), doneEnd...)
			return func() {
				mu.Lock()
				defer mu.Unlock()
				copy(durable, snap)
			}
		})
		wg.Wait()
		close(stop)
		fl.Wait()
		_ = d.Close()
		if !ff.PowerLost() {
			continue
		}
		cuts++
		crashed := ff.Crash(mathrand.New(mathrand.NewSource(int64(round))))
		mf := imagetest.NewMemFile(crashed)
		if r := checkImage(t, fmt.Sprintf("round %d", round), mf, false); r.corruptions != 0 {
			t.Fatalf("round %d: check finds %d corruptions:\n%s", round, r.corruptions, r.report)
		}
		ri, err := image.OpenFile(mf, "crashed", image.Options{ReadOnly: true, NoLock: true, Features: image.IncompatZoned})
		if err != nil {
			t.Fatalf("round %d: the crashed image does not open: %v", round, err)
		}
		rd, err := zone.New(ri)
		if err != nil {
			t.Fatalf("round %d: the crashed device does not open: %v", round, err)
		}
		for w := 0; w < workers; w++ {
			z := must(rd.Report(int64(w)*zsize, 1))[0]
			wp := int(z.WP - z.Start)
			if wp < durable[w] || wp > len(data[w]) {
				t.Fatalf("round %d zone %d: write pointer at %d bytes; %d were durable, %d issued", round, w, wp, durable[w], len(data[w]))
			}
			got := make([]byte, wp)
			if _, err := rd.ReadAt(got, int64(z.Start)); err != nil {
				t.Fatal(err)
			}
			if i := firstDiff(got, data[w][:wp]); i >= 0 {
				t.Fatalf("round %d zone %d: byte %d below the write pointer (%d) is not what was written there", round, w, i, wp)
			}
		}
		rd.Close()
	}
	if cuts < rounds/2 {
		t.Fatalf("the power failed in only %d of %d rounds", cuts, rounds)
	}
	t.Logf("%d power cuts during parallel zone writes and flushes", cuts)
}
