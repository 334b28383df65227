package image_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"runtime/debug"
	"syscall"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"

	"github.com/zqimg/zqimg/pkg/create"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
	"github.com/zqimg/zqimg/pkg/zone"
)

var (
	crashScenarios = flag.Int("crash.scenarios", 200, "random operation sequences in TestCrashConsistency")
	crashStep      = flag.Int("crash.step", 1, "cut the power at every k-th write, truncation or sync")
	crashSeed      = flag.Int64("crash.seed", 1, "first random seed")
)

// crashConfig is an image configuration for the crash tests.
type crashConfig struct {
	name string
	opts []string // -o options
	size string
}

var crashConfigs = []crashConfig{
	{"zoned-64k", []string{"zone.mode=host-managed", "zone.size=256k", "zone.max_append_bytes=64k", "zone.max_open_zones=3", "zone.max_active_zones=4"}, "2M"},
	{"zoned-4k-conv", []string{"zone.mode=host-managed", "zone.size=128k", "zone.capacity=96k", "zone.conventional_zones=2", "zone.max_append_bytes=32k", "cluster_size=4k", "refcount_bits=1"}, "2M"},
	{"zoned-512-rc64", []string{"zone.mode=host-managed", "zone.size=64k", "zone.max_append_bytes=16k", "cluster_size=512", "refcount_bits=64"}, "1M"},
	{"plain-4k", []string{"cluster_size=4k"}, "2M"},
	{"plain-512-v2", []string{"cluster_size=512", "compat=0.10"}, "1M"},
	{"plain-extl2", []string{"extended_l2=on", "cluster_size=16k"}, "2M"},
}

// formatImage returns the bytes of a freshly created image.
func formatImage(t testing.TB, c crashConfig) []byte {
	t.Helper()
	return testimg.Bytes(t, c.size, c.opts...)
}

type opKind int

const (
	opWrite opKind = iota
	opZero
	opDiscard
	opAppend
	opManage
	opFlush
)

type crashOp struct {
	kind     opKind
	off, n   int64
	pattern  byte
	zoneOp   zone.Op
	appendTo int // zone index for appends
}

// genOp makes a random operation for the device's current state: writes go
// to the write pointer of sequential zones, as a file system on a zoned
// device issues them.
func genOp(rng *rand.Rand, d *zone.Device) crashOp {
	size := d.Size()
	if !d.Zoned() {
		off := rng.Int63n(size)
		l := min(size-off, 1+rng.Int63n(96<<10))
		switch r := rng.Intn(10); {
		case r < 6:
			return crashOp{kind: opWrite, off: off, n: l, pattern: byte(1 + rng.Intn(254))}
		case r < 7:
			return crashOp{kind: opZero, off: off, n: l}
		case r < 8:
			return crashOp{kind: opDiscard, off: off, n: l}
		}
		return crashOp{kind: opFlush}
	}
	h := d.Header()
	i := rng.Intn(int(h.NrZones))
	z := must(d.Report(int64(h.ZoneStart(uint32(i))), 1))[0]
	start, zlen := int64(z.Start), int64(z.Len)
	room := max(0, int64(z.Start+z.Cap)-int64(z.WP))
	conv := z.Type == zone.TypeConventional
	switch r := rng.Intn(20); {
	case r < 8:
		if conv {
			off := start + rng.Int63n(zlen)
			return crashOp{kind: opWrite, off: off, n: min(1+rng.Int63n(8<<10), start+zlen-off), pattern: byte(1 + rng.Intn(254))}
		}
		kind := opWrite
		if rng.Intn(5) == 0 {
			kind = opZero
		}
		return crashOp{kind: kind, off: int64(z.WP), n: min(512*(1+rng.Int63n(32)), room), pattern: byte(1 + rng.Intn(254))}
	case r < 12:
		return crashOp{kind: opAppend, appendTo: i, n: min(512*(1+rng.Int63n(int64(h.MaxAppendBytes)/512)), room)}
	case r < 17:
		return crashOp{kind: opManage, zoneOp: zone.Op(rng.Intn(4)), off: start, n: zlen}
	case r < 18:
		if conv {
			return crashOp{kind: opDiscard, off: start, n: zlen}
		}
	}
	return crashOp{kind: opFlush}
}

// tracker follows what the device acknowledged: the live content, the
// content and write pointers at the last completed flush, and which sectors
// were touched after it.
type tracker struct {
	live, flushed []byte
	touched       []bool // per 512-byte sector, since the last completed flush
	resetSince    map[int]bool
	flushedWP     []uint64
}

func newTracker(size int64) *tracker {
	return &tracker{live: make([]byte, size), flushed: make([]byte, size), touched: make([]bool, (size+511)/512), resetSince: map[int]bool{}}
}

// spare is a tracker and a read buffer kept between crash points (each
// crash point needs image-sized buffers; allocating them every time made
// the allocator the test's main cost).
var spare struct {
	tr  *tracker
	buf []byte
}

// reusedTracker returns an empty tracker for a device of size bytes.
func reusedTracker(size int64) *tracker {
	tr := spare.tr
	if tr == nil || int64(len(tr.live)) != size {
		tr = newTracker(size)
		spare.tr = tr
		return tr
	}
	clear(tr.live)
	clear(tr.flushed)
	clear(tr.touched)
	clear(tr.resetSince)
	tr.flushedWP = nil
	return tr
}

// readBuf returns a buffer of n bytes, reused between calls.
func readBuf(n int64) []byte {
	if int64(cap(spare.buf)) < n {
		spare.buf = make([]byte, n)
	}
	return spare.buf[:n]
}

func (tr *tracker) touch(off, n int64) {
	for s := off / 512; s < (off+n+511)/512 && s < int64(len(tr.touched)); s++ {
		tr.touched[s] = true
	}
}

func (tr *tracker) flushedNow(d *zone.Device) {
	// Only touched sectors can differ between the live and flushed copies.
	for s, touched := range tr.touched {
		if touched {
			lo, hi := s*512, min((s+1)*512, len(tr.live))
			copy(tr.flushed[lo:hi], tr.live[lo:hi])
		}
	}
	clear(tr.touched)
	clear(tr.resetSince)
	tr.flushedWP = nil
	if d.Zoned() {
		for _, z := range must(d.Report(0, 1<<32)) {
			tr.flushedWP = append(tr.flushedWP, z.WP)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// apply runs op on the device. The op's range is marked touched before it
// runs: if the power fails in the middle, its effect is undetermined.
func apply(d *zone.Device, op crashOp, tr *tracker) error {
	h := d.Header()
	switch op.kind {
	case opWrite:
		tr.touch(op.off, op.n)
		if _, err := d.WriteAt(bytes.Repeat([]byte{op.pattern}, int(op.n)), op.off); err != nil {
			return err
		}
		copy(tr.live[op.off:], bytes.Repeat([]byte{op.pattern}, int(op.n)))
	case opZero, opDiscard:
		tr.touch(op.off, op.n)
		var err error
		if op.kind == opZero {
			err = d.WriteZeroes(op.off, op.n)
		} else {
			err = d.Discard(op.off, op.n)
		}
		if err != nil {
			return err
		}
		clear(tr.live[op.off : op.off+op.n])
	case opAppend:
		start := int64(h.ZoneStart(uint32(op.appendTo)))
		zs := must(d.Report(start, 1))
		tr.touch(int64(zs[0].WP), op.n)
		pos, err := d.Append([][]byte{bytes.Repeat([]byte{0xcd}, int(op.n))}, start)
		if err != nil {
			return err
		}
		copy(tr.live[pos:], bytes.Repeat([]byte{0xcd}, int(op.n)))
	case opManage:
		if op.zoneOp == zone.OpReset {
			tr.touch(op.off, op.n)
			tr.resetSince[int(uint64(op.off)/h.ZoneSize)] = true
		}
		if err := d.Manage(op.zoneOp, op.off, op.n); err != nil {
			return err
		}
		if op.zoneOp == zone.OpReset {
			clear(tr.live[op.off : op.off+op.n])
		}
	case opFlush:
		if err := d.Flush(); err != nil {
			return err
		}
		tr.flushedNow(d)
	}
	return nil
}

func openDevice(f image.File) (*zone.Device, error) {
	img, err := image.OpenFile(f, "crash.qcow2", image.Options{Features: image.IncompatZoned, NoLock: true})
	if err != nil {
		return nil, err
	}
	d, err := zone.New(img)
	if err != nil {
		img.Close()
		return nil, err
	}
	return d, nil
}

// TestCrashConsistency cuts the power at every k-th write of random
// operation sequences and checks each crashed image: it opens, check finds
// no corruption (leaks allowed), no write pointer lies over data that was
// not durably written, every operation acknowledged before the last flush
// reads back exactly, and check -r all leaves it clean.
func TestCrashConsistency(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	// The test allocates and drops many image-sized buffers.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	points := 0
	for sc := 0; sc < *crashScenarios; sc++ {
		cfg := crashConfigs[sc%len(crashConfigs)]
		seed := *crashSeed + int64(sc)
		base := formatImage(t, cfg)
		// The reference run counts the writes of the whole sequence.
		ref := imagetest.NewFaultFile(base)
		d, err := openDevice(ref)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewSource(seed))
		tr := newTracker(d.Size())
		var ops []crashOp
		for len(ops) < 40 {
			op := genOp(rng, d)
			if op.n == 0 && op.kind != opFlush {
				continue
			}
			if err := apply(d, op, tr); err != nil {
				if zone.IsZoneError(err) {
					continue // refused by the zone rules (limits): not part of the sequence
				}
				t.Fatalf("%s seed %d: op %+v failed without a crash: %v", cfg.name, seed, op, err)
			}
			ops = append(ops, op)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		total := ref.Ops()
		for cut := 0; cut < total; cut += *crashStep {
			points++
			crashAt(t, cfg, seed, base, ops, cut)
		}
	}
	t.Logf("%d crash points; %d left leaked clusters, %d left data beyond a write pointer (all repaired)", points, crashStats.leaky, crashStats.beyondWP)
	// The default run cuts at least 20,000 points (issue 7).
	if *crashScenarios >= 200 && *crashStep == 1 && points < 20000 {
		t.Errorf("only %d crash points", points)
	}
	// Crashes that lose nothing would prove little: the cuts must reach
	// the states the ordering has to survive.
	if points > 1000 && (crashStats.leaky == 0 || crashStats.beyondWP == 0) {
		t.Errorf("no crash left leaks (%d) or data beyond a write pointer (%d)", crashStats.leaky, crashStats.beyondWP)
	}
}

var crashStats struct{ leaky, beyondWP int }

func crashAt(t *testing.T, cfg crashConfig, seed int64, base []byte, ops []crashOp, cut int) {
	t.Helper()
	where := fmt.Sprintf("%s seed %d cut at operation %d", cfg.name, seed, cut)
	ff := imagetest.NewFaultFile(base)
	d, err := openDevice(ff)
	if err != nil {
		t.Fatal(err)
	}
	tr := reusedTracker(d.Size())
	tr.flushedNow(d)
	ff.PowerFailAfter(cut)
	for _, op := range ops {
		if err := apply(d, op, tr); err != nil {
			if !errors.Is(err, imagetest.ErrPowerLost) && !ff.PowerLost() {
				t.Fatalf("%s: %+v: %v", where, op, err)
			}
			break
		}
	}
	if !ff.PowerLost() {
		// The reference run ended with a close; so does this one.
		if err := d.Close(); err != nil && !ff.PowerLost() {
			t.Fatalf("%s: close: %v", where, err)
		}
	}
	if !ff.PowerLost() {
		t.Fatalf("%s: the power never failed", where)
	}
	crashed := ff.Crash(rand.New(rand.NewSource(seed*7919 + int64(cut))))
	verifyCrashed(t, where, crashed, tr)
}

// verifyCrashed checks a crashed image, repairs it and checks it again.
func verifyCrashed(t *testing.T, where string, crashed []byte, tr *tracker) {
	t.Helper()
	mf := imagetest.NewMemFile(crashed)
	res := checkImage(t, where, mf, false)
	if res.corruptions != 0 {
		t.Fatalf("%s: check finds %d corruptions after the crash:\n%s", where, res.corruptions, res.report)
	}
	if res.leaks > 0 {
		crashStats.leaky++
	}
	if res.dataBeyondWP > 0 {
		crashStats.beyondWP++
	}
	verifyContent(t, where, mf, tr)
	finishReadsZero(t, where, imagetest.NewMemFile(mf.Bytes()))
	res = checkImage(t, where, mf, true)
	if res.corruptions != 0 || res.leaks != 0 {
		t.Fatalf("%s: after check -r all: %d corruptions, %d leaks:\n%s", where, res.corruptions, res.leaks, res.report)
	}
	verifyContent(t, where, mf, tr)
}

// verifyContent opens the image and compares it with what was acknowledged.
func verifyContent(t *testing.T, where string, f image.File, tr *tracker) {
	t.Helper()
	d, err := openDevice(f)
	if err != nil {
		t.Fatalf("%s: crashed image does not open: %v", where, err)
	}
	defer d.Close()
	got := readBuf(d.Size())
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatalf("%s: read: %v", where, err)
	}
	for s, touched := range tr.touched {
		if touched {
			continue
		}
		lo, hi := s*512, min((s+1)*512, len(got))
		if !bytes.Equal(got[lo:hi], tr.flushed[lo:hi]) {
			t.Fatalf("%s: sector %d (offset %#x), flushed before the crash and untouched since, reads back wrong", where, s, lo)
		}
	}
	if !d.Zoned() {
		return
	}
	for i, z := range must(d.Report(0, 1<<32)) {
		if z.Type != zone.TypeSeqWriteRequired {
			continue
		}
		// Below the durable write pointer, data must be what was written.
		if !bytes.Equal(got[z.Start:z.WP], tr.live[z.Start:z.WP]) && !bytes.Equal(got[z.Start:z.WP], tr.flushed[z.Start:z.WP]) {
			t.Fatalf("%s: zone %d: write pointer %#x lies over data that was not durably written", where, i, z.WP)
		}
		if tr.flushedWP != nil && !tr.resetSince[i] && z.WP < tr.flushedWP[i] {
			t.Fatalf("%s: zone %d: write pointer %#x is behind the flushed one %#x", where, i, z.WP, tr.flushedWP[i])
		}
	}
}

var zeroes = make([]byte, 1<<20)

// firstNonZero returns the index of the first non-zero byte of b, or -1.
func firstNonZero(b []byte) int {
	for off := 0; off < len(b); off += len(zeroes) {
		chunk := b[off:min(off+len(zeroes), len(b))]
		if !bytes.Equal(chunk, zeroes[:len(chunk)]) {
			for i, c := range chunk {
				if c != 0 {
					return off + i
				}
			}
		}
	}
	return -1
}

// finishReadsZero finishes every sequential zone of a crashed image that is
// not FULL and checks that nothing a crash left beyond a write pointer
// (unacknowledged data, or the old data of a zone whose reset was cut)
// surfaces: from the old write pointer to the zone end the zone reads
// zeroes, before and after a reopen.
func finishReadsZero(t *testing.T, where string, f image.File) {
	t.Helper()
	d, err := openDevice(f)
	if err != nil {
		t.Fatalf("%s: crashed image does not open: %v", where, err)
	}
	if !d.Zoned() {
		d.Close()
		return
	}
	type span struct{ wp, end uint64 }
	var spans []span
	for _, z := range must(d.Report(0, 1<<32)) {
		if z.Type != zone.TypeSeqWriteRequired || z.Cond == zone.CondFull {
			continue
		}
		if err := d.Manage(zone.OpFinish, int64(z.Start), int64(z.Len)); err != nil {
			if zone.IsZoneError(err) {
				continue // the open or active limit: not this zone's turn
			}
			t.Fatalf("%s: finish of zone at %#x: %v", where, z.Start, err)
		}
		spans = append(spans, span{z.WP, z.Start + z.Len})
	}
	zeroes := func(stage string) {
		for _, sp := range spans {
			got := readBuf(int64(sp.end - sp.wp))
			if _, err := d.ReadAt(got, int64(sp.wp)); err != nil {
				t.Fatalf("%s: read: %v", where, err)
			}
			if i := firstNonZero(got); i >= 0 {
				t.Fatalf("%s: %s, a finished zone reads non-zero data at %#x, beyond its write pointer %#x before the finish", where, stage, sp.wp+uint64(i), sp.wp)
			}
		}
	}
	zeroes("after the finish")
	if err := d.Close(); err != nil {
		t.Fatalf("%s: close after finishing: %v", where, err)
	}
	if d, err = openDevice(f); err != nil {
		t.Fatalf("%s: reopen after finishing: %v", where, err)
	}
	defer d.Close()
	zeroes("after a reopen")
}

func TestFaultFile(t *testing.T) {
	f := imagetest.NewFaultFile(make([]byte, 4096))
	f.WriteAt(bytes.Repeat([]byte{1}, 1024), 0)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte{2}, 2048), 512)
	f.PowerFailAfter(2)
	if _, err := f.WriteAt([]byte{3}, 0); !errors.Is(err, imagetest.ErrPowerLost) {
		t.Fatalf("write after the power failed: %v", err)
	}
	if !bytes.Equal(f.Durable()[512:1024], bytes.Repeat([]byte{1}, 512)) || f.Durable()[1024] != 0 {
		t.Fatal("Durable holds an unsynced write")
	}
	seen := map[string]bool{}
	for seed := int64(0); seed < 256; seed++ {
		img := f.Crash(rand.New(rand.NewSource(seed)))
		if !bytes.Equal(img[:512], bytes.Repeat([]byte{1}, 512)) {
			t.Fatal("synced data lost")
		}
		// The unsynced write survives as any subset of its 4 sectors,
		// each whole or not at all.
		kept := ""
		for s := 0; s < 4; s++ {
			b := img[512+s*512 : 512+(s+1)*512]
			old := byte(0)
			if s == 0 {
				old = 1
			}
			switch {
			case bytes.Equal(b, bytes.Repeat([]byte{2}, 512)):
				kept += "1"
			case bytes.Equal(b, bytes.Repeat([]byte{old}, 512)):
				kept += "0"
			default:
				t.Fatalf("seed %d: sector %d torn inside a sector", seed, s+1)
			}
		}
		seen[kept] = true
	}
	// Every subset, including non-prefixes such as 0101, shows up.
	if len(seen) != 16 {
		t.Fatalf("crashes kept %d of the 16 subsets of sectors: %v", len(seen), seen)
	}
}

func TestFaultFileSpace(t *testing.T) {
	f := imagetest.NewFaultFile(make([]byte, 4096))
	f.SetSpace(8192)
	n, err := f.WriteAt(bytes.Repeat([]byte{7}, 8192), 2048)
	if !errors.Is(err, syscall.ENOSPC) || n != 6144 {
		t.Fatalf("write past the space: %d, %v; want 6144, ENOSPC", n, err)
	}
	if err := f.ZeroRange(8000, 512); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("zero range past the space: %v", err)
	}
	if sz, _ := f.Size(); sz != 8192 {
		t.Fatalf("size %d after the failed zero range, want 8192", sz)
	}
	if err := f.ZeroRange(4096, 512); err != nil {
		t.Fatal(err)
	}
	if b := f.Current(); b[4096] != 0 || b[4608] != 7 {
		t.Fatalf("zero range: %x %x", b[4096], b[4608])
	}
}

// TestCrashDuringCreate cuts the power at every write of image.Format. A
// cut Format must report the failure (pkg/create then deletes its
// temporary file, so the target is never replaced by a half-made image);
// when Format returns success its image is durable and checks clean.
func TestCrashDuringCreate(t *testing.T) {
	points := 0
	for _, cfg := range crashConfigs {
		o, err := create.ParseOptions(cfg.opts, cfg.size, true)
		if err != nil {
			t.Fatal(err)
		}
		spec, err := create.Resolve(o)
		if err != nil {
			t.Fatal(err)
		}
		ref := imagetest.NewFaultFile(nil)
		if err := image.Format(ref, spec.Image); err != nil {
			t.Fatal(err)
		}
		total := ref.Ops()
		for cut := 0; cut <= total; cut++ {
			points++
			ff := imagetest.NewFaultFile(nil)
			ff.PowerFailAfter(cut)
			err := image.Format(ff, spec.Image)
			if cut < total {
				if err == nil {
					t.Fatalf("%s: Format reported success although the power failed at operation %d of %d", cfg.name, cut, total)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: Format failed without a crash: %v", cfg.name, err)
			}
			// Everything is synced: even a crash now keeps the whole image.
			crashed := ff.Crash(rand.New(rand.NewSource(int64(cut))))
			res := checkImage(t, cfg.name, imagetest.NewMemFile(crashed), false)
			if res.corruptions != 0 || res.leaks != 0 {
				t.Fatalf("%s: a completed create is not clean after a crash:\n%s", cfg.name, res.report)
			}
		}
	}
	t.Logf("%d crash points during create", points)
}
