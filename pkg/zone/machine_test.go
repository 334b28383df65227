package zone

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

const (
	kib = 1 << 10
	mib = 1 << 20
)

// testMachine builds the state of a fresh image: zones of zs bytes with
// capacity capa over size bytes, conv conventional zones and the limits.
func testMachine(zs, capa, size uint64, conv, maxOpen, maxActive uint32) *machine {
	h := &Header{ZoneSize: zs, ZoneCapacity: capa, NrZones: uint32((size + zs - 1) / zs),
		ConventionalZones: conv, MaxOpenZones: maxOpen, MaxActiveZones: maxActive}
	wp := h.InitialTable()
	for i := range wp {
		wp[i] &^= ConvBit
	}
	m := newMachine(h, size, wp)
	m.countClosed()
	return m
}

// state renders every zone's condition with blkzone's short names.
func state(m *machine) string {
	var s []string
	for i := uint32(0); i < m.nr; i++ {
		s = append(s, m.cond(i).Short())
	}
	return strings.Join(s, " ")
}

// write appends n bytes at zone i's write pointer through the same steps
// the device takes: validate, acquire resources, record.
func write(m *machine, i uint32, n uint64) error {
	if err := m.checkWrite(i, m.wp[i], n); err != nil {
		return err
	}
	if err := m.acquire(i, syscall.EINVAL); err != nil {
		return err
	}
	m.wrote(i, m.wp[i]+n)
	return nil
}

func mustWrite(t *testing.T, m *machine, i uint32, n uint64) {
	t.Helper()
	if err := write(m, i, n); err != nil {
		t.Fatalf("write %d bytes to zone %d: %v", n, i, err)
	}
}

func expect(t *testing.T, m *machine, want string, imp, exp, closed uint32) {
	t.Helper()
	if got := state(m); got != want {
		t.Fatalf("zone conditions\n got  %s\n want %s", got, want)
	}
	if m.nrImp != imp || m.nrExp != exp || m.nrClosed != closed {
		t.Fatalf("counts imp/exp/closed = %d/%d/%d, want %d/%d/%d", m.nrImp, m.nrExp, m.nrClosed, imp, exp, closed)
	}
	// The counters must always agree with the conditions.
	c := map[Cond]uint32{}
	for i := uint32(0); i < m.nr; i++ {
		c[m.cond(i)]++
	}
	if c[CondImpOpen] != m.nrImp || c[CondExpOpen] != m.nrExp || c[CondClosed] != m.nrClosed || uint32(m.lru.Len()) != m.nrImp {
		t.Fatalf("counters %d/%d/%d (lru %d) disagree with conditions %v", m.nrImp, m.nrExp, m.nrClosed, m.lru.Len(), c)
	}
}

func TestWriteTransitions(t *testing.T) {
	m := testMachine(mib, mib, 4*mib, 0, 0, 0)
	expect(t, m, "em em em em", 0, 0, 0)
	mustWrite(t, m, 0, 4*kib) // EMPTY -> IMP_OPEN
	expect(t, m, "oi em em em", 1, 0, 0)
	mustWrite(t, m, 0, 4*kib) // IMP_OPEN stays IMP_OPEN
	expect(t, m, "oi em em em", 1, 0, 0)
	mustWrite(t, m, 0, mib-8*kib) // reaches the capacity -> FULL
	expect(t, m, "fu em em em", 0, 0, 0)
	if m.wp[0] != mib {
		t.Fatalf("wp = %#x, want %#x", m.wp[0], mib)
	}
	mustWrite(t, m, 1, mib) // EMPTY -> FULL in one write
	expect(t, m, "fu fu em em", 0, 0, 0)

	// EXP_OPEN stays EXP_OPEN when written, and becomes FULL at capacity.
	if err := m.openZone(2); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, m, 2, 512)
	expect(t, m, "fu fu oe em", 0, 1, 0)
	mustWrite(t, m, 2, mib-512)
	expect(t, m, "fu fu fu em", 0, 0, 0)

	// CLOSED -> IMP_OPEN.
	mustWrite(t, m, 3, 512)
	m.closeZone(3)
	expect(t, m, "fu fu fu cl", 0, 0, 1)
	mustWrite(t, m, 3, 512)
	expect(t, m, "fu fu fu oi", 1, 0, 0)
}

func TestWriteErrors(t *testing.T) {
	m := testMachine(mib, 768*kib, 2*mib, 0, 0, 0)
	if err := m.checkWrite(0, 4096, 512); !errors.Is(err, ErrNotAtWritePointer) {
		t.Fatalf("write off the write pointer: got %v", err)
	}
	// Capacity 768 KiB (not a power of two): a write crossing it fails,
	// one ending exactly on it makes the zone FULL.
	if err := m.checkWrite(0, 0, 768*kib+512); !errors.Is(err, ErrBeyondCapacity) {
		t.Fatalf("write beyond capacity: got %v", err)
	}
	mustWrite(t, m, 0, 512*kib)
	mustWrite(t, m, 0, 256*kib)
	expect(t, m, "fu em", 0, 0, 0)
	if err := write(m, 0, 512); !errors.Is(err, ErrBeyondCapacity) {
		t.Fatalf("write to a FULL zone: got %v", err)
	}
	var ze *Error
	if err := m.checkWrite(1, 0, 512); !errors.As(err, &ze) || ze.Code != syscall.EINVAL || !strings.Contains(ze.Msg, "0x100000") {
		t.Fatalf("error should carry EINVAL and name the write pointer: %v", err)
	}
}

func TestLRUClosesLeastRecentlyWritten(t *testing.T) {
	m := testMachine(mib, mib, 4*mib, 0, 2, 0)
	mustWrite(t, m, 0, 512)
	mustWrite(t, m, 1, 512)
	mustWrite(t, m, 0, 512) // zone 0 is now the most recently written
	mustWrite(t, m, 2, 512) // open limit reached: zone 1 (LRU) is closed
	expect(t, m, "oi cl oi em", 2, 0, 1)
	mustWrite(t, m, 3, 512) // now zone 0 is the LRU
	expect(t, m, "cl cl oi oi", 2, 0, 2)
	mustWrite(t, m, 1, 512) // CLOSED zone reopens, zone 2 closed
	expect(t, m, "cl oi cl oi", 2, 0, 2)
}

func TestLRUSkipsExplicitlyOpenZones(t *testing.T) {
	m := testMachine(mib, mib, 4*mib, 0, 2, 0)
	if err := m.openZone(0); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, m, 1, 512)
	mustWrite(t, m, 2, 512) // closes zone 1, the only implicitly open zone
	expect(t, m, "oe cl oi em", 1, 1, 1)
}

func TestAllOpenZonesExplicit(t *testing.T) {
	m := testMachine(mib, mib, 4*mib, 0, 2, 0)
	for _, i := range []uint32{0, 1} {
		if err := m.openZone(i); err != nil {
			t.Fatal(err)
		}
	}
	err := write(m, 2, 512)
	if !errors.Is(err, ErrTooManyOpen) {
		t.Fatalf("write with every open zone explicitly open: got %v", err)
	}
	expect(t, m, "oe oe em em", 0, 2, 0) // nothing changed
	if err := m.openZone(3); !errors.Is(err, ErrTooManyOpen) {
		t.Fatalf("explicit open beyond the limit: got %v", err)
	}
	if err := m.finishZone(3); !errors.Is(err, ErrTooManyOpen) {
		t.Fatalf("finish of an EMPTY zone needs an open slot: got %v", err)
	}
	// Writing to an explicitly open zone needs no new resource.
	mustWrite(t, m, 0, 512)
	expect(t, m, "oe oe em em", 0, 2, 0)
}

func TestActiveLimitFromEmpty(t *testing.T) {
	m := testMachine(mib, mib, 4*mib, 0, 0, 2)
	mustWrite(t, m, 0, 512)
	mustWrite(t, m, 1, 512)
	m.closeZone(0) // CLOSED is still active
	expect(t, m, "cl oi em em", 1, 0, 1)
	err := write(m, 2, 512)
	var ze *Error
	if !errors.Is(err, ErrTooManyActive) || !errors.As(err, &ze) || ze.Code != syscall.EINVAL {
		t.Fatalf("write to an EMPTY zone at the active limit: got %v", err)
	}
	if err := m.openZone(2); !errors.Is(err, ErrTooManyActive) || !errors.As(err, &ze) || ze.Code != syscall.EBUSY {
		t.Fatalf("open of an EMPTY zone at the active limit: got %v", err)
	}
	if err := m.finishZone(2); !errors.Is(err, ErrTooManyActive) {
		t.Fatalf("finish of an EMPTY zone at the active limit: got %v", err)
	}
	// CLOSED and open zones need no new active slot.
	mustWrite(t, m, 0, 512)
	if err := m.finishZone(1); err != nil {
		t.Fatal(err)
	}
	expect(t, m, "oi fu em em", 1, 0, 0)
	mustWrite(t, m, 2, 512) // an active slot was given back by the finish
	expect(t, m, "oi fu oi em", 2, 0, 0)
}

// A write into a CLOSED zone at both limits closes the LRU implicitly open
// zone; the active count does not change (docs/zones.md, NVMe ZNS behaviour).
func TestClosedZoneAtBothLimits(t *testing.T) {
	m := testMachine(mib, mib, 4*mib, 0, 1, 2)
	mustWrite(t, m, 0, 512)
	mustWrite(t, m, 1, 512) // closes zone 0
	expect(t, m, "cl oi em em", 1, 0, 1)
	mustWrite(t, m, 0, 512) // closes zone 1
	expect(t, m, "oi cl em em", 1, 0, 1)
	if err := write(m, 2, 512); !errors.Is(err, ErrTooManyActive) {
		t.Fatalf("EMPTY zone at the active limit: got %v", err)
	}
}

func TestLimitsZeroMeanNone(t *testing.T) {
	m := testMachine(mib, mib, 64*mib, 0, 0, 0)
	for i := uint32(0); i < 64; i++ {
		mustWrite(t, m, i, 512)
	}
	if m.nrImp != 64 {
		t.Fatalf("%d implicitly open zones, want 64", m.nrImp)
	}
	for i := uint32(0); i < 64; i++ {
		m.closeZone(i)
	}
	if m.nrClosed != 64 || m.active() != 64 {
		t.Fatalf("closed %d active %d, want 64", m.nrClosed, m.active())
	}
}

func TestOpenTransitions(t *testing.T) {
	m := testMachine(mib, mib, 5*mib, 0, 3, 4)
	mustWrite(t, m, 1, 512)
	mustWrite(t, m, 2, 512)
	m.closeZone(2)
	mustWrite(t, m, 3, mib)
	expect(t, m, "em oi cl fu em", 1, 0, 1)
	for _, i := range []uint32{0, 1, 2, 3} {
		if err := m.openZone(i); err != nil {
			t.Fatalf("open zone %d: %v", i, err)
		}
	}
	// EMPTY, IMP_OPEN and CLOSED become EXP_OPEN; FULL is unchanged.
	expect(t, m, "oe oe oe fu em", 0, 3, 0)
	if err := m.openZone(0); err != nil { // EXP_OPEN: no-op
		t.Fatal(err)
	}
	expect(t, m, "oe oe oe fu em", 0, 3, 0)
}

func TestCloseTransitions(t *testing.T) {
	m := testMachine(mib, mib, 5*mib, 0, 0, 0)
	if err := m.openZone(0); err != nil { // explicitly open, empty
		t.Fatal(err)
	}
	if err := m.openZone(1); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, m, 1, 512) // explicitly open with data
	mustWrite(t, m, 2, 512) // implicitly open
	mustWrite(t, m, 3, mib) // full
	expect(t, m, "oe oe oi fu em", 1, 2, 0)
	for i := uint32(0); i < 5; i++ {
		m.closeZone(i)
	}
	// An explicitly opened empty zone closes to EMPTY.
	expect(t, m, "em cl cl fu em", 0, 0, 2)
	m.closeZone(1) // CLOSED: no-op
	expect(t, m, "em cl cl fu em", 0, 0, 2)
}

func TestFinishTransitions(t *testing.T) {
	m := testMachine(mib, 768*kib, 4*mib+256*kib, 0, 0, 0)
	mustWrite(t, m, 1, 512)
	mustWrite(t, m, 2, 512)
	m.closeZone(2)
	if err := m.openZone(3); err != nil {
		t.Fatal(err)
	}
	for i := uint32(0); i < m.nr; i++ {
		if err := m.finishZone(i); err != nil {
			t.Fatalf("finish zone %d: %v", i, err)
		}
	}
	expect(t, m, "fu fu fu fu fu", 0, 0, 0)
	// finish puts the write pointer at start + zone_size (not the capacity
	// end), also in the last zone, which is only 256 KiB long: its write
	// pointer lies past the device end, as the reference writes it.
	for i := uint32(0); i < 4; i++ {
		if want := uint64(i+1) * mib; m.wp[i] != want {
			t.Fatalf("zone %d wp %#x, want %#x", i, m.wp[i], want)
		}
	}
	if want := uint64(5 * mib); m.wp[4] != want {
		t.Fatalf("last zone wp %#x, want %#x", m.wp[4], want)
	}
	if err := m.finishZone(0); err != nil { // FULL: no-op
		t.Fatal(err)
	}
}

func TestResetTransitions(t *testing.T) {
	m := testMachine(mib, mib, 5*mib, 0, 0, 0)
	if err := m.openZone(0); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, m, 1, 512)
	mustWrite(t, m, 2, 512)
	m.closeZone(2)
	mustWrite(t, m, 3, mib)
	expect(t, m, "oe oi cl fu em", 1, 1, 1)
	for i := uint32(0); i < 5; i++ {
		m.resetZone(i)
	}
	expect(t, m, "em em em em em", 0, 0, 0)
	for i := uint32(0); i < 5; i++ {
		if m.wp[i] != uint64(i)*mib {
			t.Fatalf("zone %d wp %#x after reset", i, m.wp[i])
		}
	}
}

// Reopening turns every open zone CLOSED and counts it at once.
func TestReopenCountsClosed(t *testing.T) {
	m := testMachine(mib, mib, 6*mib, 1, 0, 0)
	mustWrite(t, m, 1, 512)
	if err := m.openZone(2); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, m, 2, 512)
	if err := m.openZone(3); err != nil { // open but empty
		t.Fatal(err)
	}
	mustWrite(t, m, 4, mib)
	mustWrite(t, m, 5, 512)
	m.closeZone(5)
	expect(t, m, "nw oi oe oe fu cl", 1, 2, 1)

	h := &Header{ZoneSize: mib, ZoneCapacity: mib, NrZones: 6, ConventionalZones: 1}
	r := newMachine(h, 6*mib, append([]uint64(nil), m.wp...))
	r.countClosed() // the device does this when the active limit or the counts need it
	expect(t, r, "nw cl cl em fu cl", 0, 0, 3)
	c := r.counts()
	if c[CondClosed] != 3 || c[CondEmpty] != 1 || c[CondFull] != 1 || c[CondNotWP] != 1 {
		t.Fatalf("counts after reopen: %v", c)
	}
}

func TestSmallLastZoneAndCapacity(t *testing.T) {
	// 100 MiB in 32 MiB zones: the last zone is 4 MiB, its capacity is
	// capped at its length.
	m := testMachine(32*mib, 24*mib, 100*mib, 0, 0, 0)
	z := m.zone(3)
	if z.Len != 4*mib || z.Cap != 4*mib || z.Start != 96*mib {
		t.Fatalf("last zone %+v", z)
	}
	if z := m.zone(0); z.Len != 32*mib || z.Cap != 24*mib {
		t.Fatalf("zone 0 %+v", z)
	}
	if err := write(m, 3, 4*mib+512); !errors.Is(err, ErrBeyondCapacity) {
		t.Fatalf("write past the small last zone: got %v", err)
	}
	mustWrite(t, m, 3, 4*mib)
	if m.cond(3) != CondFull {
		t.Fatalf("last zone not full: %v", m.cond(3))
	}
}

func TestConventionalZones(t *testing.T) {
	m := testMachine(mib, mib, 4*mib, 2, 0, 0)
	for i := uint32(0); i < 2; i++ {
		z := m.zone(i)
		if z.Cond != CondNotWP || z.Type != TypeConventional || z.WP != z.Start || z.Cap != z.Len {
			t.Fatalf("conventional zone %d: %+v", i, z)
		}
	}
	if z := m.zone(2); z.Type != TypeSeqWriteRequired || z.Cond != CondEmpty {
		t.Fatalf("sequential zone 2: %+v", z)
	}
}

func TestCondAndTypeNames(t *testing.T) {
	for _, c := range []struct {
		cond        Cond
		name, short string
		number      uint8
	}{
		{CondNotWP, "NOT_WP", "nw", 0}, {CondEmpty, "EMPTY", "em", 1}, {CondImpOpen, "IMP_OPEN", "oi", 2},
		{CondExpOpen, "EXP_OPEN", "oe", 3}, {CondClosed, "CLOSED", "cl", 4}, {CondFull, "FULL", "fu", 14},
	} {
		if c.cond.String() != c.name || c.cond.Short() != c.short || uint8(c.cond) != c.number {
			t.Errorf("%d: %s/%s", c.number, c.cond, c.cond.Short())
		}
	}
	if TypeConventional.String() != "CONVENTIONAL" || uint8(TypeConventional) != 1 ||
		TypeSeqWriteRequired.String() != "SEQ_WRITE_REQUIRED" || uint8(TypeSeqWriteRequired) != 2 {
		t.Error("zone type names or numbers")
	}
}
