package zone

import (
	"bytes"
	"errors"
	"syscall"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// Fuzz targets for the zoned layer. Each must be fast and must never
// panic; errors are fine. Seeds come from the reference images (read at
// test time) and from small zoned images made in memory; regression
// inputs live in testdata/fuzz/<target>.

// zonedLayout describes a small zoned image to make in memory.
type zonedLayout struct {
	cb    uint32
	order uint32
	vsize uint64
	h     Header
}

var fuzzLayouts = []zonedLayout{
	// 8 zones of 8K, 512-byte clusters.
	{9, 4, 64 << 10, Header{Model: 1, ZoneSize: 8 << 10, ZoneCapacity: 8 << 10, NrZones: 8, MaxOpenZones: 2, MaxActiveZones: 3, MaxAppendBytes: 2 << 10}},
	// Conventional zones, a capacity below the zone size, 1-bit refcounts.
	{9, 0, 64 << 10, Header{Model: 1, ZoneSize: 16 << 10, ZoneCapacity: 12 << 10, ConventionalZones: 1, NrZones: 4, MaxAppendBytes: 4 << 10}},
	// A smaller last zone, 4K clusters, 64-bit refcounts.
	{12, 6, 40 << 10, Header{Model: 1, ZoneSize: 16 << 10, ZoneCapacity: 16 << 10, NrZones: 3, MaxOpenZones: 1, MaxAppendBytes: 8 << 10}},
}

// makeZoned lays out a fresh zoned image as create does (header, refcount
// table, refcount block, write-pointer table, L1 table) and returns it.
func makeZoned(tb testing.TB, l zonedLayout) []byte {
	tb.Helper()
	h := l.h
	h.MetaSize = 8 * uint64(h.NrZones)
	if err := h.Validate(l.vsize); err != nil {
		tb.Fatal(err)
	}
	f := imagetest.NewMemFile(nil)
	err := image.Format(f, image.CreateOptions{
		Size: l.vsize, ClusterBits: l.cb, Version: 3, RefcountOrder: l.order,
		Incompatible: image.IncompatZoned,
		Tables: []image.Table{{
			Data: EncodeTable(h.InitialTable()),
			Extension: func(off uint64) image.Extension {
				hh := h
				hh.MetaOffset = off
				return image.Extension{Magic: ExtMagic, Data: hh.Marshal()}
			},
		}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return f.Bytes()
}

// writtenZoned returns the layout's image after some writes, so that the
// write-pointer table holds empty, closed and full zones.
func writtenZoned(tb testing.TB, l zonedLayout) []byte {
	tb.Helper()
	f := imagetest.NewMemFile(makeZoned(tb, l))
	img, err := image.OpenFile(f, "mem", image.Options{NoBacking: true, Features: image.IncompatZoned})
	if err != nil {
		tb.Fatal(err)
	}
	d, err := New(img)
	if err != nil {
		tb.Fatal(err)
	}
	conv := int64(l.h.ConventionalZones)
	zs := int64(l.h.ZoneSize)
	buf := bytes.Repeat([]byte{0x5a}, 1024)
	if conv > 0 {
		if _, err := d.WriteAt(buf, 0); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := d.WriteAt(buf, conv*zs); err != nil {
		tb.Fatal(err)
	}
	if err := d.Manage(OpFinish, (conv+1)*zs, zs); err != nil {
		tb.Fatal(err)
	}
	if err := d.Close(); err != nil {
		tb.Fatal(err)
	}
	return f.Bytes()
}

func FuzzZonedHeader(f *testing.F) {
	for _, g := range zonedGoldens {
		vsize, _, data := zgoldenExt(f, g.name)
		f.Add(data, vsize)
	}
	h := validZoned()
	f.Add(h.Marshal(), uint64(0))
	f.Add([]byte{1, 2, 3}, uint64(512))
	f.Fuzz(func(t *testing.T, data []byte, vsize uint64) {
		h, err := ParseHeader(data)
		if err != nil {
			var fe *FieldError
			if len(data) == ExtSize || !errors.As(err, &fe) || fe.Field != "length" {
				t.Fatalf("%d bytes: %v", len(data), err)
			}
			return
		}
		if !bytes.Equal(h.Marshal(), data) {
			t.Fatalf("Marshal does not give back the extension")
		}
		err = h.Validate(vsize)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" || fe.Msg == "" {
				t.Fatalf("Validate: %v (%T)", err, err)
			}
			return
		}
		// What Validate accepts satisfies the format's rules.
		zs := h.ZoneSize
		switch {
		case h.Model != ModelHostManaged || h.Reserved != [3]byte{}:
			t.Fatalf("accepted model %d reserved %x", h.Model, h.Reserved)
		case zs < 512 || zs&(zs-1) != 0:
			t.Fatalf("accepted zone size %d", zs)
		case h.ZoneCapacity == 0 || h.ZoneCapacity > zs || h.ZoneCapacity%512 != 0:
			t.Fatalf("accepted capacity %d", h.ZoneCapacity)
		case h.NrZones == 0 || h.NrZones > MaxZones:
			t.Fatalf("accepted %d zones", h.NrZones)
		case uint64(h.NrZones-1)*zs >= vsize || uint64(h.NrZones)*zs < vsize:
			t.Fatalf("%d zones of %d do not make %d bytes", h.NrZones, zs, vsize)
		case h.ConventionalZones >= h.NrZones:
			t.Fatalf("accepted %d conventional zones of %d", h.ConventionalZones, h.NrZones)
		case h.MaxActiveZones > h.NrZones || h.MaxOpenZones > h.NrZones-h.ConventionalZones:
			t.Fatalf("accepted limits %d/%d", h.MaxActiveZones, h.MaxOpenZones)
		case h.MaxActiveZones != 0 && h.MaxOpenZones > h.MaxActiveZones:
			t.Fatalf("accepted max_open %d > max_active %d", h.MaxOpenZones, h.MaxActiveZones)
		case h.MaxAppendBytes%512 != 0 || uint64(h.MaxAppendBytes)+512 >= h.ZoneCapacity:
			t.Fatalf("accepted max_append %d", h.MaxAppendBytes)
		case h.MetaSize != 8*uint64(h.NrZones):
			t.Fatalf("accepted table size %d", h.MetaSize)
		}
		// The initial table of a valid header is valid.
		if h.NrZones <= 4096 {
			for i, e := range h.InitialTable() {
				zl := min(zs, vsize-uint64(i)*zs)
				if p := h.EntryProblem(uint32(i), e, zl); p != "" {
					t.Fatalf("initial entry %d: %s", i, p)
				}
			}
		}
	})
}

func FuzzWPTable(f *testing.F) {
	for _, g := range zonedGoldens {
		if g.h.MetaSize > 4096 {
			continue
		}
		vsize, _, data := zgoldenExt(f, g.name)
		f.Add(data, vsize, zgoldenRange(f, g.name, int64(g.h.MetaOffset), int(g.h.MetaSize)))
	}
	for _, l := range fuzzLayouts {
		h := l.h
		h.MetaSize = 8 * uint64(h.NrZones)
		t := h.InitialTable()
		t[len(t)-1] += 1024
		f.Add(h.Marshal(), l.vsize, EncodeTable(t))
	}
	f.Fuzz(func(t *testing.T, ext []byte, vsize uint64, table []byte) {
		entries := DecodeTable(table)
		if len(entries) != len(table)/8 {
			t.Fatalf("%d entries from %d bytes", len(entries), len(table))
		}
		if enc := EncodeTable(entries); !bytes.Equal(enc, table[:len(table)/8*8]) {
			t.Fatalf("EncodeTable(DecodeTable(b)) differs from b")
		}
		h, err := ParseHeader(ext)
		if err != nil || h.Validate(vsize) != nil {
			return
		}
		for i, e := range entries {
			if i >= int(h.NrZones) {
				break
			}
			z := uint32(i)
			start := h.ZoneStart(z)
			zl := min(h.ZoneSize, vsize-start)
			p := h.EntryProblem(z, e, zl)
			if p != "" {
				continue
			}
			// An accepted entry obeys the rules of docs/zones.md.
			if z < h.ConventionalZones {
				if e != start|ConvBit {
					t.Fatalf("conventional zone %d: accepted %#x", z, e)
				}
				continue
			}
			capEnd := start + min(h.ZoneCapacity, zl)
			if e&ConvBit != 0 || e < start || e%512 != 0 || (e > capEnd && e != start+zl) {
				t.Fatalf("sequential zone %d [%#x, +%#x) cap end %#x: accepted %#x", z, start, zl, capEnd, e)
			}
		}
	})
}

// exerciseDevice runs the operations ops selects on d; only panics and
// hangs are failures.
func exerciseDevice(d *Device, ops []byte) {
	size := d.Size()
	zones, err := d.Report(0, 1<<20)
	if err != nil || len(zones) == 0 {
		_ = d.Close()
		return
	}
	_, _ = d.Counts()
	_ = d.Header()
	buf := bytes.Repeat([]byte{0xc3}, 8192)
	if len(ops) > 24 {
		ops = ops[:24]
	}
	for k, op := range ops {
		z := zones[int(op>>3)%len(zones)]
		if r, err := d.Report(int64(z.Start), 1); err == nil && len(r) == 1 {
			z = r[0]
		}
		n := int64(512 * (1 + k%4))
		switch op & 7 {
		case 0:
			_, _ = d.WriteAt(buf[:n], int64(z.WP))
		case 1:
			_, _ = d.Append([][]byte{buf[:n], buf[:512]}, int64(z.Start))
		case 2:
			_ = d.Manage(OpOpen, int64(z.Start), int64(z.Len))
		case 3:
			_ = d.Manage(OpClose, int64(z.Start), int64(z.Len))
		case 4:
			_ = d.Manage(OpFinish, int64(z.Start), int64(z.Len))
		case 5:
			_ = d.Manage(OpReset, int64(z.Start), int64(z.Len))
		case 6:
			_, _ = d.ReadAt(buf[:min(n, size-int64(z.Start))], int64(z.Start))
			_ = d.WriteZeroes(int64(z.WP), n)
			_ = d.Discard(int64(z.Start), n)
		case 7:
			_ = d.Flush()
			// Edges: empty requests, the end of the device, whole-device ops.
			_, _ = d.WriteAt(nil, int64(z.WP))
			_, _ = d.WriteAt(nil, size)
			_ = d.WriteZeroes(size, 0)
			_ = d.Discard(size, 512)
			_, _ = d.Append(nil, int64(z.Start))
			_, _ = d.WriteAt(buf[:1], size-1)
			_ = d.Manage(OpReset, 0, size)
			_, _ = d.Report(size-1, 2)
		}
	}
	_ = d.Flush()
	_ = d.Close()
}

func FuzzOpenZoned(f *testing.F) {
	f.Add(zgoldenRange(f, "cluster4k", 0, 16640), []byte{0, 8, 16, 1, 7})
	for _, l := range fuzzLayouts {
		f.Add(makeZoned(f, l), []byte{0, 0, 9, 2, 10, 3, 4, 13, 5, 6, 7})
		f.Add(writtenZoned(f, l), []byte{8, 1, 17, 4, 7, 0})
	}
	f.Fuzz(func(t *testing.T, data []byte, ops []byte) {
		opts := image.Options{ReadOnly: true, NoBacking: true, Features: image.IncompatZoned}
		img, err := image.OpenFile(imagetest.NewMemFile(data), "fuzz", opts)
		if err != nil {
			return
		}
		d, err := New(img)
		if err != nil {
			_ = img.Close()
			return
		}
		if d.Zoned() {
			_, _ = d.Report(0, 1<<20)
			_, _ = d.Counts()
		}
		_ = d.Close()
		// A writable copy: writes may fail, but must neither panic nor hang.
		opts.ReadOnly = false
		mf := imagetest.NewMemFile(data)
		mf.SetLimit(int64(len(data)) + 4<<20) // corrupt entries may point writes anywhere
		img, err = image.OpenFile(mf, "fuzz", opts)
		if err != nil {
			return
		}
		d, err = New(img)
		if err != nil {
			_ = img.Close()
			return
		}
		exerciseDevice(d, ops)
	})
}

// openMem opens image bytes as a writable device.
func openMem(t *testing.T, b []byte) *Device {
	t.Helper()
	img, err := image.OpenFile(imagetest.NewMemFile(b), "mem", image.Options{NoBacking: true, Features: image.IncompatZoned})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(img)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Regression (FuzzOpenZoned): an empty write at the end of a device whose
// size is a multiple of the zone size indexed the zone past the last one
// and panicked.
func TestEmptyRequestsAtDeviceEnd(t *testing.T) {
	d := openMem(t, makeZoned(t, fuzzLayouts[0])) // 8 zones of 8K
	size := d.Size()
	if n, err := d.WriteAt(nil, size); n != 0 || err != nil {
		t.Errorf("empty write at the end: %d, %v", n, err)
	}
	if err := d.WriteZeroes(size, 0); err != nil {
		t.Errorf("empty zero write at the end: %v", err)
	}
	if err := d.Discard(size, 512); err == nil {
		t.Errorf("discard beyond the end succeeded")
	}
	if _, err := d.WriteAt(make([]byte, 1), size); !errors.Is(err, image.ErrOutOfRange) {
		t.Errorf("write beyond the end: %v", err)
	}
	// Nothing changed.
	for _, z := range zmust(d.Report(0, 100)) {
		if z.WP != z.Start || z.Cond != CondEmpty {
			t.Errorf("zone at %#x: wp %#x cond %v", z.Start, z.WP, z.Cond)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// Regression (FuzzOpenZoned): an append with no buffers indexed bufs[0].
// An empty append is refused (EINVAL) and changes nothing.
func TestAppendWithoutBuffers(t *testing.T) {
	d := openMem(t, makeZoned(t, fuzzLayouts[0]))
	defer d.Close()
	if _, err := d.WriteAt(make([]byte, 1024), 8192); err != nil {
		t.Fatal(err)
	}
	for _, bufs := range [][][]byte{nil, {{}}, {{}, {}}} {
		_, err := d.Append(bufs, 8192)
		if !errors.Is(err, ErrAppendGranularity) || image.Errno(err) != syscall.EINVAL {
			t.Errorf("empty append of %d buffers: %v; want ErrAppendGranularity (EINVAL)", len(bufs), err)
		}
	}
	if z := zmust(d.Report(8192, 1))[0]; z.WP != 8192+1024 {
		t.Errorf("empty append moved the write pointer to %#x", z.WP)
	}
}

func zmust[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// An append to a FULL zone must fail: its data may only land inside the
// zone it names (docs/zones.md: "data lands at wp"; the write may not cross
// the zone's capacity). A zone filled to zone_size (or finished) has its
// write pointer at the next zone's start.
func TestAppendToFullZone(t *testing.T) {
	for _, how := range []string{"written full", "finished"} {
		t.Run(how, func(t *testing.T) {
			d := openMem(t, makeZoned(t, fuzzLayouts[0])) // zones of 8K, capacity 8K
			defer d.Close()
			const zs = 8192
			switch how {
			case "written full":
				for off := int64(zs); off < 2*zs; off += 2048 {
					if _, err := d.WriteAt(bytes.Repeat([]byte{1}, 2048), off); err != nil {
						t.Fatal(err)
					}
				}
			case "finished":
				if err := d.Manage(OpFinish, zs, zs); err != nil {
					t.Fatal(err)
				}
			}
			if z := zmust(d.Report(zs, 1))[0]; z.Cond != CondFull {
				t.Fatalf("zone 1 is %v", z.Cond)
			}
			pos, err := d.Append([][]byte{bytes.Repeat([]byte{2}, 512)}, zs)
			if err == nil {
				t.Errorf("append to a full zone succeeded, data landed at %#x (zone %d)", pos, pos/zs)
			}
			if z := zmust(d.Report(2*zs, 1))[0]; z.WP != 2*zs || z.Cond != CondEmpty {
				t.Errorf("append to zone 1 changed zone 2: wp %#x, %v", z.WP, z.Cond)
			}
		})
	}
}

// A discard that reaches a sequential zone fails with ErrSequentialDiscard
// ("use a zone reset"), wherever in the zone it starts.
func TestDiscardInSequentialZone(t *testing.T) {
	l := fuzzLayouts[1] // zone 0 conventional, zones of 16K
	d := openMem(t, makeZoned(t, l))
	defer d.Close()
	const zs = 16 << 10
	if err := d.Discard(0, 4096); err != nil {
		t.Errorf("discard in the conventional zone: %v", err)
	}
	for _, off := range []int64{zs, zs + 512, 2*zs + 4096} {
		if err := d.Discard(off, 512); !errors.Is(err, ErrSequentialDiscard) {
			t.Errorf("discard at %#x: %v, want ErrSequentialDiscard", off, err)
		}
	}
	if err := d.Discard(zs-512, 1024); !errors.Is(err, ErrSequentialDiscard) {
		t.Errorf("discard from the conventional into a sequential zone: %v", err)
	}
}

// Regression: a write-pointer table offset so large that offset + size
// wraps around 2^64 passed the "inside the file" check and reached the
// file as a negative offset (a panic with an in-memory file).
func TestTableOffsetWraps(t *testing.T) {
	// 8193 zones of 1K: a table of 65544 bytes.
	l := zonedLayout{9, 4, 8193 << 10, Header{Model: 1, ZoneSize: 1 << 10, ZoneCapacity: 1 << 10, NrZones: 8193}}
	b := makeZoned(t, l)
	_, at := findZonedExt(t, b)
	h, err := ParseHeader(b[at : at+ExtSize])
	if err != nil {
		t.Fatal(err)
	}
	h.MetaOffset = ^uint64(0) - 511 // 2^64 - 512: cluster aligned, wraps to 65032
	if uint64(len(b)) < h.MetaOffset+h.MetaSize {
		t.Fatalf("file of %d bytes too short for the wrapped end %d", len(b), h.MetaOffset+h.MetaSize)
	}
	copy(b[at:], h.Marshal())
	img, err := image.OpenFile(imagetest.NewMemFile(b), "mem", image.Options{ReadOnly: true, NoBacking: true, Features: image.IncompatZoned})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	_, err = New(img)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "zonedmeta_offset" {
		t.Errorf("New: %v, want a zonedmeta_offset error", err)
	}
}

// findZonedExt returns the offset of the zoned extension's data in an
// image's header cluster, walking the extensions by hand.
func findZonedExt(t *testing.T, b []byte) (*image.Header, int) {
	t.Helper()
	h, err := image.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	for off := int(h.HeaderLength); off+8 <= int(h.ClusterSize()); {
		magic, n := be32(b[off:]), int(be32(b[off+4:]))
		if magic == ExtMagic {
			return h, off + 8
		}
		if magic == 0 {
			break
		}
		off += 8 + (n+7)/8*8
	}
	t.Fatal("no zoned extension")
	return nil, 0
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// A zone_size of 2^63 passes Validate (a single zone larger than the
// device), but Manage computes with int64(zone_size), which is negative:
// a reset or finish of the whole device returns success and changes
// nothing.
func TestManageZoneSize2To63(t *testing.T) {
	l := zonedLayout{9, 4, 64 << 10, Header{Model: 1, ZoneSize: 1 << 63, ZoneCapacity: 32 << 10, NrZones: 1, MaxAppendBytes: 4096}}
	d := openMem(t, makeZoned(t, l))
	defer d.Close()
	if _, err := d.WriteAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Manage(OpReset, 0, d.Size()); err == nil {
		if z := zmust(d.Report(0, 1))[0]; z.WP != 0 || z.Cond != CondEmpty {
			t.Errorf("reset of the only zone succeeded but left wp %#x, %v", z.WP, z.Cond)
		}
	}
	if err := d.Manage(OpFinish, 0, d.Size()); err == nil {
		if z := zmust(d.Report(0, 1))[0]; z.Cond != CondFull {
			t.Errorf("finish of the only zone succeeded but left wp %#x, %v", z.WP, z.Cond)
		}
	}
}

// FuzzParseFaultExtension: any bytes either decode to a plan that encodes
// back to a valid extension, or fail; never a panic.
func FuzzParseFaultExtension(f *testing.F) {
	f.Add(NewFaultExtension(&FaultPlan{Generation: 3, Ranges: []FaultRange{{1, 2, CondReadOnly}, {5, 1, CondOffline}}}))
	f.Add(make([]byte, FaultExtSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseFaultExtension(b)
		if err != nil {
			return
		}
		if len(p.Ranges) > MaxFaultRanges {
			t.Fatalf("%d ranges", len(p.Ranges))
		}
		q, err := ParseFaultExtension(NewFaultExtension(p))
		if err != nil || q.Generation != p.Generation || len(q.Ranges) != len(p.Ranges) {
			t.Fatalf("re-encoded plan: %+v, %v; was %+v", q, err, p)
		}
		_ = p.Validate(1 << 20)
		_ = p.Cond(3)
	})
}
