package written

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/create"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

var emulateN = flag.Int("emulate.n", 40, "number of random images TestEmulatedReference writes")

// geometry is a random zoned image layout.
type geometry struct {
	cs, zs, capacity, size uint64
	extL2                  bool
	refBits                int
	nr, conv               uint32
	maxAppend              uint64
	maxOpen, maxActive     uint32
}

// options returns the layout as qemu-img create's -o options.
func (g geometry) options() string {
	return fmt.Sprintf("cluster_size=%d,extended_l2=%s,refcount_bits=%d,zone.mode=host-managed,zone.size=%d,zone.capacity=%d,zone.conventional_zones=%d,zone.max_append_bytes=%d,zone.max_open_zones=%d,zone.max_active_zones=%d",
		g.cs, onOff(g.extL2), g.refBits, g.zs, g.capacity, g.conv, g.maxAppend, g.maxOpen, g.maxActive)
}

func (g geometry) String() string { return fmt.Sprintf("-o %s size %d", g.options(), g.size) }

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// randomGeometry draws a layout: small clusters and large, extended L2
// entries, every refcount width, a short last zone, conventional zones, a
// capacity below the zone size, open and active limits. Zones are at
// least a cluster (the reference's reset of a zone smaller than a cluster
// fails to zero it, leaving data beyond the write pointer: real data, which
// check rightly reports) and at least 4 KiB (room for max_append_bytes).
func randomGeometry(rng *rand.Rand) geometry {
	var g geometry
	g.cs = []uint64{512, 4096, 16384, 65536}[rng.Intn(4)]
	g.extL2 = g.cs >= 16384 && rng.Intn(2) == 0
	g.refBits = []int{1, 2, 4, 8, 16, 32, 64}[rng.Intn(7)]
	g.zs = max(g.cs, 4096) << rng.Intn(3)
	g.nr = uint32(2 + rng.Intn(9))
	g.size = uint64(g.nr) * g.zs
	if rng.Intn(2) == 0 {
		// A short last zone: 512 bytes to zone size - 512.
		g.size -= g.zs - 512*uint64(1+rng.Intn(int(g.zs/512)-1))
	}
	if rng.Intn(2) == 0 {
		g.conv = uint32(rng.Intn(int(g.nr)))
	}
	g.capacity = g.zs
	if rng.Intn(2) == 0 {
		g.capacity = 512 * uint64(4+rng.Intn(int(g.zs/512)-3))
	}
	g.maxAppend = min(64<<10, g.capacity-1024) &^ 511
	seq := g.nr - g.conv
	if rng.Intn(3) == 0 {
		g.maxActive = uint32(1 + rng.Intn(int(g.nr)))
	}
	if rng.Intn(3) == 0 {
		lim := seq
		if g.maxActive != 0 {
			lim = min(lim, g.maxActive)
		}
		g.maxOpen = uint32(1 + rng.Intn(int(lim)))
	}
	return g
}

// refWriter writes an image the way the reference implementation does
// through its ordinary commands (docs/reference.md), directly
// with pkg/image: a write lands at the write pointer; a zone append
// writes its data at the zone START and advances the write pointer as if
// it had not; a finish sets the write pointer to zone start + zone size
// (past the device end for a short last zone); a reset of a zone that is
// not empty sets the write pointer to the zone start and zeroes the zone
// keeping its clusters allocated (the zero flag, or with extended L2
// entries all subclusters zero, on the same host cluster); open and close
// change nothing on disk. Write pointers are stored little-endian.
type refWriter struct {
	t    testing.TB
	g    geometry
	path string
	img  *image.Image
	wp   []uint64
	data []byte // what the guest must read
	zh   *zone.Header
}

func (w *refWriter) open() {
	w.t.Helper()
	img, err := image.Open(w.path, image.Options{Features: image.IncompatZoned})
	if err != nil {
		w.t.Fatalf("%v: %v", w.g, err)
	}
	w.img = img
}

func (w *refWriter) close() {
	w.t.Helper()
	if err := w.img.Close(); err != nil {
		w.t.Fatalf("%v: %v", w.g, err)
	}
	w.img = nil
}

func (w *refWriter) start(i uint32) uint64   { return uint64(i) * w.g.zs }
func (w *refWriter) zoneLen(i uint32) uint64 { return min(w.g.zs, w.g.size-w.start(i)) }
func (w *refWriter) capEnd(i uint32) uint64 {
	return w.start(i) + min(w.g.capacity, w.zoneLen(i))
}

func (w *refWriter) write(p []byte, off uint64) {
	w.t.Helper()
	if _, err := w.img.WriteAt(p, int64(off)); err != nil {
		w.t.Fatalf("%v: write of %d bytes at 0x%x: %v", w.g, len(p), off, err)
	}
	copy(w.data[off:], p)
}

// step performs one random command.
func (w *refWriter) step(rng *rand.Rand, op int) {
	i := uint32(rng.Intn(int(w.g.nr)))
	s := w.start(i)
	fill := func(n uint64) []byte { return bytes.Repeat([]byte{byte(1 + op%250)}, int(n)) }
	if i < w.g.conv {
		// Conventional: random writes anywhere in the zone.
		n := 512 * uint64(1+rng.Intn(int(min(w.zoneLen(i), 64<<10)/512)))
		off := s + 512*uint64(rng.Intn(int((w.zoneLen(i)-n)/512)+1))
		w.write(fill(n), off)
		return
	}
	room := w.capEnd(i) - min(w.wp[i], w.capEnd(i))
	switch k := rng.Intn(10); {
	case k < 4 && room >= 512: // write at the write pointer
		n := 512 * uint64(1+rng.Intn(int(min(room, 64<<10)/512)))
		w.write(fill(n), w.wp[i])
		w.wp[i] += n
	case k < 6 && room >= 512: // zap: the data lands at the zone start
		n := 512 * uint64(1+rng.Intn(int(min(room, w.g.maxAppend)/512)))
		w.write(fill(n), s)
		w.wp[i] += n
	case k == 6: // zf
		w.wp[i] = s + w.g.zs
	case k == 7 && w.wp[i] != s && s+w.g.zs <= w.g.size: // zrs (not of a short last zone)
		w.wp[i] = s
		w.resetZone(i)
	default: // zo, zc: nothing on disk
	}
}

// resetZone zeroes zone i as the reference does, editing the L2 entries
// of the zone's clusters in the file (pkg/image would free them).
func (w *refWriter) resetZone(i uint32) {
	w.t.Helper()
	w.close()
	f, err := os.OpenFile(w.path, os.O_RDWR, 0)
	if err != nil {
		w.t.Fatal(err)
	}
	defer func() {
		if err := f.Close(); err != nil {
			w.t.Fatal(err)
		}
		w.open()
	}()
	hb := make([]byte, 4096)
	if _, err := f.ReadAt(hb, 0); err != nil {
		w.t.Fatal(err)
	}
	h, err := image.ParseHeader(hb)
	if err != nil {
		w.t.Fatal(err)
	}
	cs := w.g.cs
	entSize := uint64(8)
	if w.g.extL2 {
		entSize = 16
	}
	perL2 := cs / entSize
	be := binary.BigEndian
	var b [16]byte
	for gc := w.start(i) / cs; gc < (w.start(i)+w.g.zs)/cs; gc++ {
		l1i := gc / perL2
		if l1i >= uint64(h.L1Size) {
			break
		}
		if _, err := f.ReadAt(b[:8], int64(h.L1TableOffset+8*l1i)); err != nil {
			w.t.Fatal(err)
		}
		l2 := be.Uint64(b[:8]) & image.L1OffsetMask
		if l2 == 0 {
			continue // QEMU would allocate an L2 table for zero flags; reads as zeroes anyway
		}
		eoff := int64(l2 + (gc%perL2)*entSize)
		if _, err := f.ReadAt(b[:entSize], eoff); err != nil {
			w.t.Fatal(err)
		}
		if w.g.extL2 {
			be.PutUint64(b[8:], 0xffffffff00000000) // every subcluster zero, none allocated
		} else {
			be.PutUint64(b[:], be.Uint64(b[:])|image.OflagZero)
		}
		if _, err := f.WriteAt(b[:entSize], eoff); err != nil {
			w.t.Fatal(err)
		}
	}
	clear(w.data[w.start(i):min(w.start(i)+w.g.zs, w.g.size)])
}

// saveWPs writes the write-pointer table, little-endian.
func (w *refWriter) saveWPs() {
	w.t.Helper()
	t := make([]uint64, w.g.nr)
	for i := range t {
		t[i] = w.wp[i]
		if uint32(i) < w.g.conv {
			t[i] = w.start(uint32(i)) | zone.ConvBit
		}
	}
	f, err := os.OpenFile(w.path, os.O_RDWR, 0)
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := f.WriteAt(zone.EncodeTable(t), int64(w.zh.MetaOffset)); err != nil {
		w.t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		w.t.Fatal(err)
	}
}

// wantZones returns the zone report the image must give.
func (w *refWriter) wantZones() []zone.Zone {
	zs := make([]zone.Zone, w.g.nr)
	for i := range zs {
		zi := uint32(i)
		z := zone.Zone{Start: w.start(zi), Len: w.zoneLen(zi), WP: w.wp[i], Type: zone.TypeSeqWriteRequired}
		switch {
		case zi < w.g.conv:
			z.Type, z.Cond, z.WP = zone.TypeConventional, zone.CondNotWP, z.Start
		case z.WP == z.Start:
			z.Cond = zone.CondEmpty
		case z.WP >= w.capEnd(zi):
			z.Cond = zone.CondFull
		default:
			z.Cond = zone.CondClosed
		}
		zs[i] = z
	}
	return zs
}

// verify opens the image as zqimg does and compares the zones and the
// data with what the reference would leave.
func verify(t testing.TB, w *refWriter, path, what string) {
	t.Helper()
	d, err := zone.Open(path, image.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("%v: %s: zqimg cannot open the image: %v", w.g, what, err)
	}
	defer d.Close()
	got, err := d.Report(0, uint64(w.g.nr))
	if err != nil {
		t.Fatalf("%v: %s: zone report: %v", w.g, what, err)
	}
	for i, want := range w.wantZones() {
		g := got[i]
		if g.Start != want.Start || g.Len != want.Len || g.Cond != want.Cond || g.Type != want.Type || (g.Type != zone.TypeConventional && g.WP != want.WP) {
			t.Errorf("%v: %s: zone %d is %+v, want %+v", w.g, what, i, g, want)
		}
	}
	buf := make([]byte, w.g.size)
	if _, err := d.ReadAt(buf, 0); err != nil {
		t.Fatalf("%v: %s: read: %v", w.g, what, err)
	}
	if !bytes.Equal(buf, w.data) {
		for i := range buf {
			if buf[i] != w.data[i] {
				t.Fatalf("%v: %s: guest byte 0x%x is 0x%02x, want 0x%02x", w.g, what, i, buf[i], w.data[i])
			}
		}
	}
}

// TestEmulatedReference writes random images the way the reference
// implementation writes them (refWriter) on random geometries, and
// asserts that zqimg opens each one, reports the write pointers and
// conditions the reference left, reads the data, and that check exits 0
// with no finding; check -r leaks reclaims the zero clusters the resets
// left without changing the report or the data.
func TestEmulatedReference(t *testing.T) {
	dir := t.TempDir()
	resets := 0
	for n := 0; n < *emulateN; n++ {
		rng := rand.New(rand.NewSource(int64(n)))
		g := randomGeometry(rng)
		path := filepath.Join(dir, "e"+strconv.Itoa(n)+".qcow2")
		o, err := create.ParseOptions([]string{g.options()}, strconv.FormatUint(g.size, 10), true)
		if err != nil {
			t.Fatalf("seed %d: %v: %v", n, g, err)
		}
		spec, err := create.Resolve(o)
		if err != nil {
			t.Fatalf("seed %d: %v: %v", n, g, err)
		}
		if err := create.Create(path, spec); err != nil {
			t.Fatalf("seed %d: %v: %v", n, g, err)
		}
		w := &refWriter{t: t, g: g, path: path, wp: make([]uint64, g.nr), data: make([]byte, g.size)}
		for i := range w.wp {
			w.wp[i] = w.start(uint32(i))
		}
		w.open()
		ext, ok := w.img.Extension(zone.ExtMagic)
		if !ok {
			t.Fatalf("%v: no zoned extension", g)
		}
		if w.zh, err = zone.ParseHeader(ext); err != nil {
			t.Fatal(err)
		}
		ops := 10 + rng.Intn(40)
		for op := 0; op < ops; op++ {
			w.step(rng, op)
		}
		w.close()
		w.saveWPs()

		verify(t, w, path, "as written")
		res, err := check.CheckPath(path, check.Options{})
		if err != nil || res == nil {
			t.Fatalf("seed %d: %v: check: %v", n, g, err)
		}
		if res.ExitCode() != 0 || len(res.Findings) != 0 {
			t.Fatalf("seed %d: %v: check exits %d with findings %v", n, g, res.ExitCode(), res.Findings)
		}
		if code, out, errOut := zqimg(nil, "check", path); code != 0 || errOut != "" {
			t.Fatalf("seed %d: %v: zqimg check: exit %d\n%s%s", n, g, code, out, errOut)
		}
		if res.Zoned.ZeroBeyondWP > 0 {
			resets++
		}
		rep, err := check.CheckPath(path, check.Options{Repair: check.RepairLeaks})
		if err != nil || rep.ExitCode() != 0 || len(problems(rep)) != 0 || rep.Zoned.ZeroBeyondWPReclaimed != res.Zoned.ZeroBeyondWP {
			t.Fatalf("seed %d: %v: check -r leaks: %v %+v", n, g, err, rep)
		}
		verify(t, w, path, "after check -r leaks")
		again, err := check.CheckPath(path, check.Options{})
		if err != nil || again.ExitCode() != 0 || len(again.Findings) != 0 || again.Zoned.ZeroBeyondWP != 0 {
			t.Fatalf("seed %d: %v: after check -r leaks: %v %+v", n, g, err, again)
		}
	}
	t.Logf("%d of %d images had zero clusters beyond a write pointer", resets, *emulateN)
	if *emulateN >= 20 && resets == 0 {
		t.Error("no image had zero clusters beyond a write pointer: the resets were not emulated")
	}
}
