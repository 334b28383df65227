package zone_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

var modelSteps = flag.Int("model.steps", 300, "steps per configuration in TestDeviceAgainstModel")

// The model below restates docs/zones.md's zone rules as plainly as possible,
// independently of pkg/zone's state machine: zone states are stored, not
// derived, and the least recently written implicitly open zone is found by
// scanning timestamps.

type mstate int

const (
	mEmpty mstate = iota
	mImp
	mExp
	mClosed
	mFull
	mConv
)

var condOf = map[mstate]zone.Cond{mEmpty: zone.CondEmpty, mImp: zone.CondImpOpen, mExp: zone.CondExpOpen,
	mClosed: zone.CondClosed, mFull: zone.CondFull, mConv: zone.CondNotWP}

type mzone struct {
	start, length, capa, wp uint64
	st                      mstate
	lastWrite               int
}

type model struct {
	zs, size           uint64
	zones              []mzone
	maxOpen, maxActive int
	maxAppend          uint64
	clock              int
	data               []byte
}

func newModel(size, zs, capa uint64, conv, maxOpen, maxActive int, maxAppend uint64) *model {
	m := &model{zs: zs, size: size, maxOpen: maxOpen, maxActive: maxActive, maxAppend: maxAppend, data: make([]byte, size)}
	for start := uint64(0); start < size; start += zs {
		z := mzone{start: start, length: min(zs, size-start), wp: start}
		z.capa = min(capa, z.length)
		if len(m.zones) < conv {
			z.st, z.capa = mConv, z.length
		}
		m.zones = append(m.zones, z)
	}
	return m
}

func (m *model) count(states ...mstate) int {
	n := 0
	for _, z := range m.zones {
		for _, s := range states {
			if z.st == s {
				n++
			}
		}
	}
	return n
}

// openSlot frees an open slot by closing the least recently written
// implicitly open zone when the open limit is reached.
func (m *model) openSlot() error {
	if m.maxOpen == 0 || m.count(mImp, mExp) < m.maxOpen {
		return nil
	}
	lru := -1
	for i, z := range m.zones {
		if z.st == mImp && (lru < 0 || z.lastWrite < m.zones[lru].lastWrite) {
			lru = i
		}
	}
	if lru < 0 {
		return zone.ErrTooManyOpen
	}
	m.zones[lru].st = mClosed
	return nil
}

// resources gets what zone i needs to become open.
func (m *model) resources(i int) error {
	switch m.zones[i].st {
	case mEmpty:
		if m.maxActive != 0 && m.count(mImp, mExp, mClosed) >= m.maxActive {
			return zone.ErrTooManyActive
		}
		return m.openSlot()
	case mClosed:
		return m.openSlot()
	}
	return nil
}

func (m *model) write(off, n uint64, b byte) error {
	if off+n > m.size {
		return image.ErrOutOfRange
	}
	i := int(off / m.zs)
	z := &m.zones[i]
	if z.st == mConv {
		if n > 0 && m.zones[(off+n-1)/m.zs].st != mConv {
			return zone.ErrCrossesZone
		}
		copy(m.data[off:off+n], bytes.Repeat([]byte{b}, int(n)))
		return nil
	}
	if off%512 != 0 || n%512 != 0 {
		return zone.ErrUnaligned
	}
	return m.writeZone(i, off, n, b)
}

// writeZone writes n bytes at off into sequential zone i.
func (m *model) writeZone(i int, off, n uint64, b byte) error {
	z := &m.zones[i]
	if off != z.wp {
		return zone.ErrNotAtWritePointer
	}
	if off+n > z.start+z.capa {
		return zone.ErrBeyondCapacity
	}
	if n == 0 {
		return nil
	}
	if err := m.resources(i); err != nil {
		return err
	}
	copy(m.data[off:off+n], bytes.Repeat([]byte{b}, int(n)))
	z.wp += n
	m.clock++
	z.lastWrite = m.clock
	switch {
	case z.wp == z.start+z.capa:
		z.st = mFull
	case z.st != mExp:
		z.st = mImp
	}
	return nil
}

func (m *model) appendz(off uint64, lens []uint64) (uint64, error) {
	if off >= m.size {
		return 0, zone.ErrBeyondDevice
	}
	if off%m.zs != 0 {
		return 0, zone.ErrNotZoneStart
	}
	var total uint64
	for _, l := range lens {
		if l%512 != 0 {
			return 0, zone.ErrAppendGranularity
		}
		total += l
	}
	if total == 0 {
		return 0, zone.ErrAppendGranularity
	}
	if total > m.maxAppend {
		return 0, zone.ErrAppendTooLarge
	}
	i := int(off / m.zs)
	z := m.zones[i]
	if z.st == mConv {
		return 0, zone.ErrConventional
	}
	// The data goes to this zone's write pointer, whatever zone that
	// offset would otherwise address (a FULL zone's pointer is the next
	// zone's start).
	return z.wp, m.writeZone(i, z.wp, total, 0xcd)
}

func (m *model) manage(op zone.Op, off, length uint64) error {
	if off > m.size || m.size-off < length {
		return image.ErrOutOfRange
	}
	if off >= m.size {
		return zone.ErrBeyondDevice
	}
	if off%m.zs != 0 {
		return zone.ErrNotZoneStart
	}
	if length == 0 || (off+length < m.size && length%m.zs != 0) {
		return zone.ErrBadLength
	}
	first, end := int(off/m.zs), int((off+length+m.zs-1)/m.zs)
	whole := op == zone.OpReset && off == 0 && length == m.size
	for i := first; i < end && !whole; i++ {
		if m.zones[i].st == mConv {
			return zone.ErrConventional
		}
	}
	if op == zone.OpOpen {
		return m.openRange(first, end)
	}
	for i := first; i < end; i++ {
		z := &m.zones[i]
		if z.st == mConv {
			continue
		}
		switch op {
		case zone.OpClose:
			if z.st == mImp || z.st == mExp {
				z.st = mClosed
				if z.wp == z.start {
					z.st = mEmpty
				}
			}
		case zone.OpFinish:
			if z.st == mFull {
				continue
			}
			if err := m.resources(i); err != nil {
				return err
			}
			z.st, z.wp = mFull, z.start+m.zs
		case zone.OpReset:
			z.st, z.wp = mEmpty, z.start
			clear(m.data[z.start : z.start+z.length])
		}
	}
	return nil
}

// openRange opens every zone of [first, end) explicitly, or none: the
// range needs an active slot per EMPTY zone (checked first) and an open
// slot per EMPTY or CLOSED zone; implicitly open zones outside the range
// are closed (least recently written first) to make room.
func (m *model) openRange(first, end int) error {
	needActive, needOpen, stayOpen := 0, 0, m.count(mExp)
	for i := first; i < end; i++ {
		switch m.zones[i].st {
		case mEmpty:
			needActive++
			needOpen++
		case mClosed:
			needOpen++
		case mImp:
			stayOpen++
		}
	}
	if m.maxActive != 0 && m.count(mImp, mExp, mClosed)+needActive > m.maxActive {
		return zone.ErrTooManyActive
	}
	if m.maxOpen != 0 && stayOpen+needOpen > m.maxOpen {
		return zone.ErrTooManyOpen
	}
	for i := first; i < end; i++ {
		if m.zones[i].st == mImp {
			m.zones[i].st = mExp
		}
	}
	for i := first; i < end; i++ {
		switch m.zones[i].st {
		case mEmpty, mClosed:
			if err := m.openSlot(); err != nil {
				return fmt.Errorf("model: open slot after the check: %w", err)
			}
			m.zones[i].st = mExp
		}
	}
	return nil
}

// reopen: open states live in memory only.
func (m *model) reopen() {
	for i := range m.zones {
		if z := &m.zones[i]; z.st == mImp || z.st == mExp {
			z.st = mClosed
			if z.wp == z.start {
				z.st = mEmpty
			}
		}
	}
}

type modelConfig struct {
	size, zs, capa, maxAppend string
	conv, maxOpen, maxActive  int
	cluster                   string
}

func TestDeviceAgainstModel(t *testing.T) {
	seen := map[error]int{}
	lruCloses := 0
	defer func() {
		// The random sequences must reach every rule, or the test proves little.
		for _, e := range []error{zone.ErrNotAtWritePointer, zone.ErrBeyondCapacity, zone.ErrCrossesZone,
			zone.ErrTooManyOpen, zone.ErrTooManyActive, zone.ErrConventional, zone.ErrNotZoneStart,
			zone.ErrBadLength, zone.ErrAppendTooLarge, zone.ErrAppendGranularity, zone.ErrUnaligned} {
			if seen[e] == 0 && !t.Failed() {
				t.Errorf("no step produced %q", e)
			}
		}
		if lruCloses == 0 && !t.Failed() {
			t.Error("no write closed a least recently written zone")
		}
		t.Logf("errors seen: %v; LRU closes: %d", seen, lruCloses)
	}()
	configs := []modelConfig{
		{"4M", "256k", "256k", "64k", 0, 2, 3, "64k"},
		{"4M", "256k", "192k", "64k", 1, 3, 0, "4k"},
		{"3712k", "256k", "160k", "32k", 2, 0, 4, "64k"}, // small last zone, capacity not a power of two
		{"2M", "128k", "128k", "16k", 0, 1, 1, "4k"},
		{"2M", "128k", "96k", "16k", 1, 0, 0, "512"},
		{"8M", "1M", "1M", "128k", 0, 4, 6, "2M"}, // zones smaller than a cluster
		{"4M", "256k", "256k", "64k", 0, 3, 3, "64k"},
	}
	for ci, cfg := range configs {
		t.Run(fmt.Sprint(ci), func(t *testing.T) {
			opts := []string{"zone.size=" + cfg.zs, "zone.capacity=" + cfg.capa, "zone.max_append_bytes=" + cfg.maxAppend,
				fmt.Sprintf("zone.conventional_zones=%d", cfg.conv), "cluster_size=" + cfg.cluster}
			if cfg.maxActive > 0 {
				opts = append(opts, fmt.Sprintf("zone.max_active_zones=%d", cfg.maxActive))
			}
			opts = append(opts, fmt.Sprintf("zone.max_open_zones=%d", cfg.maxOpen))
			path := newImage(t, cfg.size, opts...)
			d := open(t, path)
			h := d.Header()
			m := newModel(uint64(d.Size()), h.ZoneSize, h.ZoneCapacity, cfg.conv, int(h.MaxOpenZones), int(h.MaxActiveZones), uint64(h.MaxAppendBytes))
			rng := rand.New(rand.NewSource(int64(ci) + 1))
			defer func() { d.Close() }()
			for step := 0; step < *modelSteps; step++ {
				closedBefore := m.count(mClosed)
				desc, derr, merr := runStep(t, rng, d, m)
				if merr != nil {
					seen[merr]++
				} else if m.count(mClosed) > closedBefore && desc[0] != 'c' {
					lruCloses++
				}
				if desc == "reopen" {
					d = reopen(t, d, path)
					m.reopen()
				}
				if (derr == nil) != (merr == nil) || (merr != nil && !errors.Is(derr, merr)) {
					t.Fatalf("step %d %s: device error %v, model error %v", step, desc, derr, merr)
				}
				compare(t, step, desc, d, m, rng)
			}
		})
	}
}

func runStep(t *testing.T, rng *rand.Rand, d *zone.Device, m *model) (string, error, error) {
	zs := m.zs
	nz := len(m.zones)
	zi := rng.Intn(nz)
	z := m.zones[zi]
	unit := uint64(512) << rng.Intn(5)
	n := unit * uint64(1+rng.Intn(16))
	if rng.Intn(8) == 0 && z.wp-z.start < z.capa {
		n = z.capa - (z.wp - z.start) // exactly to the capacity
	}
	switch r := rng.Intn(100); {
	case r < 35: // write at the write pointer (or anywhere in a conventional zone)
		off := z.wp
		if z.st == mConv {
			off = z.start + uint64(rng.Intn(int(z.length/512)))*512
			n = min(n, m.size-off)
		}
		switch rng.Intn(20) {
		case 0, 1:
			off += 512 // off the write pointer
		case 2:
			n += 100 // not a whole number of sectors
		case 3:
			off += 100 // an unaligned offset
		}
		b := byte(rng.Intn(255) + 1)
		derr := writeDev(d, off, n, b)
		return fmt.Sprintf("write %#x+%#x", off, n), derr, m.write(off, n, b)
	case r < 40: // zero write
		off := z.wp
		if z.st == mConv {
			off = z.start
		}
		derr := d.WriteZeroes(int64(off), int64(n))
		return fmt.Sprintf("zero write %#x+%#x", off, n), derr, m.write(off, n, 0)
	case r < 60: // zone append
		var lens []uint64
		for k := 0; k < 1+rng.Intn(3); k++ {
			l := uint64(512) * uint64(1+rng.Intn(int(m.maxAppend/512/2+1)))
			if rng.Intn(20) == 0 {
				l += 100
			}
			lens = append(lens, l)
		}
		off := z.start
		if rng.Intn(15) == 0 {
			off += 512
		}
		bufs := make([][]byte, len(lens))
		for k, l := range lens {
			bufs[k] = bytes.Repeat([]byte{0xcd}, int(l))
		}
		pos, derr := d.Append(bufs, int64(off))
		mpos, merr := m.appendz(off, lens)
		if derr == nil && merr == nil && uint64(pos) != mpos {
			t.Fatalf("append landed at %#x, model says %#x", pos, mpos)
		}
		return fmt.Sprintf("append %#x %v", off, lens), derr, merr
	case r < 88: // zone management on a range of zones
		op := zone.Op(rng.Intn(4))
		first := zi
		count := 1 + rng.Intn(3)
		off := uint64(first) * zs
		length := uint64(count) * zs
		switch rng.Intn(12) {
		case 0:
			off += 512
		case 1:
			length -= 512
		case 2:
			off, length = 0, m.size
		}
		if off+length > m.size && rng.Intn(2) == 0 {
			length = m.size - off // reach the end of the device
		}
		derr := d.Manage(op, int64(off), int64(length))
		return fmt.Sprintf("%v %#x+%#x", op, off, length), derr, m.manage(op, off, length)
	case r < 94:
		return "flush", d.Flush(), nil
	default:
		return "reopen", nil, nil
	}
}

func writeDev(d *zone.Device, off, n uint64, b byte) error {
	_, err := d.WriteAt(bytes.Repeat([]byte{b}, int(n)), int64(off))
	return err
}

func compare(t *testing.T, step int, desc string, d *zone.Device, m *model, rng *rand.Rand) {
	t.Helper()
	zs, err := d.Report(0, uint64(len(m.zones)))
	if err != nil {
		t.Fatal(err)
	}
	for i, z := range zs {
		mz := m.zones[i]
		if z.Cond != condOf[mz.st] || z.WP != mz.wp || z.Start != mz.start || z.Len != mz.length || z.Cap != mz.capa {
			t.Fatalf("step %d (%s): zone %d is %+v, model says cond %v wp %#x start %#x len %#x cap %#x",
				step, desc, i, z, condOf[mz.st], mz.wp, mz.start, mz.length, mz.capa)
		}
	}
	counts := must(d.Counts())
	if int(counts[zone.CondImpOpen]) != m.count(mImp) || int(counts[zone.CondExpOpen]) != m.count(mExp) ||
		int(counts[zone.CondClosed]) != m.count(mClosed) || int(counts[zone.CondFull]) != m.count(mFull) {
		t.Fatalf("step %d (%s): counts %v", step, desc, counts)
	}
	// Data: one random zone every step, everything now and then.
	check := func(off, n uint64) {
		got := make([]byte, n)
		if _, err := d.ReadAt(got, int64(off)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, m.data[off:off+n]) {
			for k := range got {
				if got[k] != m.data[off+uint64(k)] {
					t.Fatalf("step %d (%s): byte %#x reads %#x, model %#x", step, desc, off+uint64(k), got[k], m.data[off+uint64(k)])
				}
			}
		}
	}
	if step%25 == 0 {
		check(0, m.size)
	} else {
		z := m.zones[rng.Intn(len(m.zones))]
		check(z.start, z.length)
	}
}
