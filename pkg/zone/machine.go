package zone

import (
	"container/list"
	"errors"
	"fmt"
	"syscall"
)

// Cond is a zone condition, numbered as Linux's BLK_ZONE_COND_*.
type Cond uint8

// Zone conditions.
const (
	CondNotWP   Cond = 0
	CondEmpty   Cond = 1
	CondImpOpen Cond = 2
	CondExpOpen Cond = 3
	CondClosed  Cond = 4
	// CondReadOnly and CondOffline exist only as injected faults (see
	// FaultPlan): the zoned format does not persist them.
	CondReadOnly Cond = 13
	CondFull     Cond = 14
	CondOffline  Cond = 15
)

// String returns the condition's Linux name (EMPTY, IMP_OPEN, ...).
func (c Cond) String() string {
	switch c {
	case CondNotWP:
		return "NOT_WP"
	case CondEmpty:
		return "EMPTY"
	case CondImpOpen:
		return "IMP_OPEN"
	case CondExpOpen:
		return "EXP_OPEN"
	case CondClosed:
		return "CLOSED"
	case CondFull:
		return "FULL"
	case CondReadOnly:
		return "READONLY"
	case CondOffline:
		return "OFFLINE"
	}
	return fmt.Sprintf("COND_%d", uint8(c))
}

// Short returns blkzone's two-letter name of the condition (em, oi, ...).
func (c Cond) Short() string {
	switch c {
	case CondNotWP:
		return "nw"
	case CondEmpty:
		return "em"
	case CondImpOpen:
		return "oi"
	case CondExpOpen:
		return "oe"
	case CondClosed:
		return "cl"
	case CondFull:
		return "fu"
	case CondReadOnly:
		return "ro"
	case CondOffline:
		return "of"
	}
	return fmt.Sprintf("x%X", uint8(c))
}

// Type is a zone type, numbered as Linux's BLK_ZONE_TYPE_*.
type Type uint8

// Zone types.
const (
	TypeConventional     Type = 1
	TypeSeqWriteRequired Type = 2
)

// String returns the type's Linux name.
func (t Type) String() string {
	switch t {
	case TypeConventional:
		return "CONVENTIONAL"
	case TypeSeqWriteRequired:
		return "SEQ_WRITE_REQUIRED"
	}
	return fmt.Sprintf("TYPE_%d", uint8(t))
}

// Zone describes one zone as a zone report gives it. Bytes.
type Zone struct {
	Start uint64
	Len   uint64
	Cap   uint64
	WP    uint64
	Type  Type
	Cond  Cond
}

const (
	notOpen = iota
	impOpen
	expOpen
)

// machine is the zone state machine of docs/zones.md, on write pointers held
// in memory. Open states exist only here; EMPTY, CLOSED and FULL follow
// from the write pointer. It performs no I/O.
type machine struct {
	zoneSize, capacity, size uint64
	nr, conv                 uint32
	maxOpen, maxActive       uint32

	wp   []uint64 // absolute byte offsets; a conventional zone holds its start
	open []uint8  // notOpen, impOpen or expOpen
	lru  *list.List
	lrue map[uint32]*list.Element // implicitly open zones; front = most recently written

	// busy counts the writes in flight per zone (Device.zoneWrite): a
	// busy zone is open and is never closed implicitly.
	busy map[uint32]int

	nrImp, nrExp, nrClosed uint32
	// faults holds the injected READ ONLY and OFFLINE zones (nil: none);
	// such zones are never open or active.
	faults *FaultPlan
	// counted says nrClosed is exact: it is computed (countClosed) the
	// first time the active limit or the counts are needed, because that
	// needs every write pointer; until then it is not used.
	counted bool
}

// newMachine builds the state of a freshly opened image: every zone that
// is neither empty nor full is CLOSED (countClosed counts them).
func newMachine(h *Header, size uint64, wp []uint64) *machine {
	return &machine{
		zoneSize: h.ZoneSize, capacity: h.ZoneCapacity, size: size,
		nr: h.NrZones, conv: h.ConventionalZones,
		maxOpen: h.MaxOpenZones, maxActive: h.MaxActiveZones,
		wp: wp, open: make([]uint8, h.NrZones),
		lru: list.New(), lrue: map[uint32]*list.Element{},
		busy: map[uint32]int{},
	}
}

// countClosed counts the CLOSED zones; every write pointer must be loaded.
func (m *machine) countClosed() {
	if m.counted {
		return
	}
	m.nrClosed = 0
	for i := m.conv; i < m.nr; i++ {
		if m.cond(i) == CondClosed {
			m.nrClosed++
		}
	}
	m.counted = true
}

func (m *machine) start(i uint32) uint64 { return uint64(i) * m.zoneSize }

// zoneLen is zone_size except for a smaller last zone (Header.ZoneLen).
func (m *machine) zoneLen(i uint32) uint64 { return min(m.zoneSize, m.size-m.start(i)) }

// capEnd is the first byte past the writable part of zone i.
func (m *machine) capEnd(i uint32) uint64 { return m.start(i) + min(m.capacity, m.zoneLen(i)) }

func (m *machine) cond(i uint32) Cond {
	if f := m.faults.Cond(i); f != 0 {
		return f
	}
	if i < m.conv {
		return CondNotWP
	}
	switch m.open[i] {
	case expOpen:
		return CondExpOpen
	case impOpen:
		return CondImpOpen
	}
	switch wp := m.wp[i]; {
	case wp == m.start(i):
		return CondEmpty
	case wp >= m.capEnd(i):
		return CondFull
	}
	return CondClosed
}

func (m *machine) zone(i uint32) Zone {
	z := Zone{Start: m.start(i), Len: m.zoneLen(i), WP: m.wp[i], Cond: m.cond(i), Type: TypeSeqWriteRequired}
	z.Cap = min(m.capacity, z.Len)
	if i < m.conv {
		z.Type, z.Cap = TypeConventional, z.Len
	}
	return z
}

func (m *machine) active() uint32 { return m.nrImp + m.nrExp + m.nrClosed }

// leave removes zone i from the accounting of its current condition.
func (m *machine) leave(i uint32) {
	switch m.cond(i) {
	case CondImpOpen:
		m.lru.Remove(m.lrue[i])
		delete(m.lrue, i)
		m.nrImp--
	case CondExpOpen:
		m.nrExp--
	case CondClosed:
		m.nrClosed--
	}
	m.open[i] = notOpen
}

// enter puts zone i (whose write pointer is already set) into c's
// accounting; for EMPTY and FULL only the write pointer matters.
func (m *machine) enter(i uint32, c Cond) {
	switch c {
	case CondImpOpen:
		m.open[i] = impOpen
		m.lrue[i] = m.lru.PushFront(i)
		m.nrImp++
	case CondExpOpen:
		m.open[i] = expOpen
		m.nrExp++
	case CondClosed:
		if m.wp[i] == m.start(i) {
			return // an explicitly opened empty zone closes to EMPTY
		}
		m.nrClosed++
	}
}

// canActivate reports whether one more zone may become active.
func (m *machine) canActivate() bool {
	return m.maxActive == 0 || m.active() < m.maxActive
}

// openSlot makes room for one more open zone, closing the least recently
// written implicitly open zone if the open limit is reached. It fails with
// ErrTooManyOpen when every open zone is explicitly open.
func (m *machine) openSlot(i uint32) error {
	if m.maxOpen == 0 || m.nrImp+m.nrExp < m.maxOpen {
		return nil
	}
	if m.nrImp == 0 {
		return zerr(ErrTooManyOpen, syscall.EINVAL, "zone %d cannot be opened: all %d open zones (max_open_zones) are explicitly open", i, m.maxOpen)
	}
	for el := m.lru.Back(); el != nil; el = el.Prev() {
		if j := el.Value.(uint32); m.busy[j] == 0 {
			m.leave(j)
			m.enter(j, CondClosed)
			return nil
		}
	}
	return errSlotsBusy
}

// errSlotsBusy: the open limit is reached and every implicitly open zone
// has a write in flight; the caller waits for one to complete.
var errSlotsBusy = errors.New("every implicitly open zone has a write in flight")

// begin marks zone i, whose resources acquire got, busy with a write in
// flight: an EMPTY or CLOSED zone becomes implicitly open now, so that the
// open and active counts hold while the data moves.
func (m *machine) begin(i uint32) {
	if c := m.cond(i); c == CondEmpty || c == CondClosed {
		m.leave(i)
		m.enter(i, CondImpOpen)
	}
	m.busy[i]++
}

// end completes a write begun at begin: on success the write pointer
// moves to newWP (wrote); on failure the zone returns to prev, its
// condition before begin, and the write pointer stays.
func (m *machine) end(i uint32, prev Cond, newWP uint64, ok bool) {
	if m.busy[i]--; m.busy[i] == 0 {
		delete(m.busy, i)
	}
	if ok {
		m.wrote(i, newWP)
		return
	}
	if (prev == CondEmpty || prev == CondClosed) && m.cond(i) == CondImpOpen {
		m.leave(i)
		m.enter(i, prev)
	}
}

// acquire gets the resources zone i needs to become open: an active slot
// if it is EMPTY, and an open slot if it is EMPTY or CLOSED. activeCode is
// the errno reported when the active limit is reached.
func (m *machine) acquire(i uint32, activeCode syscall.Errno) error {
	switch m.cond(i) {
	case CondEmpty:
		if !m.canActivate() {
			return zerr(ErrTooManyActive, activeCode, "zone %d cannot be opened: %d zones are already active (max_active_zones %d)", i, m.active(), m.maxActive)
		}
		return m.openSlot(i)
	case CondClosed:
		return m.openSlot(i)
	}
	return nil
}

// checkFault refuses an operation on zone i when it is read-only or
// offline (an injected fault): EIO, as a device fails such commands.
func (m *machine) checkFault(i uint32, what string) error {
	switch m.faults.Cond(i) {
	case CondReadOnly:
		return zerr(ErrZoneReadOnly, syscall.EIO, "%s: zone %d is read-only (injected fault)", what, i)
	case CondOffline:
		return zerr(ErrZoneOffline, syscall.EIO, "%s: zone %d is offline (injected fault)", what, i)
	}
	return nil
}

// checkWrite validates a write of n bytes at off into sequential zone i.
func (m *machine) checkWrite(i uint32, off, n uint64) error {
	if err := m.checkFault(i, "write"); err != nil {
		return err
	}
	if off != m.wp[i] {
		return zerr(ErrNotAtWritePointer, syscall.EINVAL, "write at offset 0x%x is not at the write pointer 0x%x of zone %d", off, m.wp[i], i)
	}
	if off+n > m.capEnd(i) {
		return zerr(ErrBeyondCapacity, syscall.EINVAL, "write of %d bytes at offset 0x%x exceeds the capacity of zone %d, which ends at 0x%x", n, off, i, m.capEnd(i))
	}
	return nil
}

// wrote records that zone i was written up to newWP (resources acquired).
func (m *machine) wrote(i uint32, newWP uint64) {
	c := m.cond(i)
	m.leave(i)
	m.wp[i] = newWP
	switch {
	case newWP >= m.capEnd(i):
		// FULL: no longer open or active.
	case c == CondExpOpen:
		m.enter(i, CondExpOpen)
	default:
		m.enter(i, CondImpOpen)
	}
}

func (m *machine) openZone(i uint32) error {
	switch m.cond(i) {
	case CondEmpty, CondClosed:
		if err := m.acquire(i, syscall.EBUSY); err != nil {
			return err
		}
	case CondImpOpen:
	default: // EXP_OPEN: nothing to do; FULL: stays FULL
		return nil
	}
	m.leave(i)
	m.enter(i, CondExpOpen)
	return nil
}

func (m *machine) closeZone(i uint32) {
	switch m.cond(i) {
	case CondImpOpen, CondExpOpen:
		m.leave(i)
		m.enter(i, CondClosed)
	}
}

// finishZone makes zone i FULL, acquiring on the way the resources an
// EMPTY or CLOSED zone needs, as a device does.
func (m *machine) finishZone(i uint32) error {
	if err := m.prepareFinish(i); err != nil {
		return err
	}
	m.setFull(i)
	return nil
}

// prepareFinish acquires what finishing zone i needs (nothing for a FULL
// or open zone).
func (m *machine) prepareFinish(i uint32) error {
	switch m.cond(i) {
	case CondEmpty, CondClosed:
		return m.acquire(i, syscall.EBUSY)
	}
	return nil
}

// setFull puts zone i's write pointer at start + zone_size.
func (m *machine) setFull(i uint32) {
	if m.cond(i) == CondFull {
		return
	}
	m.leave(i)
	// start + zone_size also for a short last zone, as the reference
	// writes it, so that both see the zone FULL.
	m.wp[i] = m.start(i) + m.zoneSize
}

// openRange explicitly opens every zone of [first, end), or none: it
// first checks that the open and active limits allow the whole range
// (implicitly open zones outside the range may be closed to make room),
// then opens the zones.
func (m *machine) openRange(first, end uint32) error {
	if end == first+1 {
		return m.openZone(first) // one zone: all or nothing already
	}
	var needOpen, needActive, impIn uint32
	for i := first; i < end; i++ {
		switch m.cond(i) {
		case CondEmpty:
			needOpen++
			needActive++
		case CondClosed:
			needOpen++
		case CondImpOpen:
			impIn++
		}
	}
	if m.maxActive != 0 && m.active()+needActive > m.maxActive {
		return zerr(ErrTooManyActive, syscall.EBUSY, "zones %d-%d cannot be opened: they need %d more active zones and %d zones are already active (max_active_zones %d)", first, end-1, needActive, m.active(), m.maxActive)
	}
	if m.maxOpen != 0 {
		// Zones that stay open afterwards: the explicitly open ones, the
		// range, and the implicitly open ones outside it that are not
		// closed to make room.
		keep := m.nrExp + impIn + needOpen
		if keep > m.maxOpen {
			return zerr(ErrTooManyOpen, syscall.EINVAL, "zones %d-%d cannot be opened: they need %d more open zones and %d zones would stay explicitly open (max_open_zones %d)", first, end-1, needOpen, m.nrExp+impIn, m.maxOpen)
		}
	}
	// Feasible: implicitly open zones of the range become explicitly open
	// first, so that making room never closes a zone of the range.
	for i := first; i < end; i++ {
		if m.cond(i) == CondImpOpen {
			m.leave(i)
			m.enter(i, CondExpOpen)
		}
	}
	for i := first; i < end; i++ {
		if err := m.openZone(i); err != nil {
			return fmt.Errorf("zone open of zone %d after the limits were checked: %w", i, err)
		}
	}
	return nil
}

func (m *machine) resetZone(i uint32) {
	m.leave(i)
	m.wp[i] = m.start(i)
}

// counts returns how many zones are in each condition.
func (m *machine) counts() map[Cond]uint32 {
	c := map[Cond]uint32{CondNotWP: 0, CondEmpty: 0, CondImpOpen: m.nrImp, CondExpOpen: m.nrExp, CondClosed: m.nrClosed, CondFull: 0}
	for i := uint32(0); i < m.nr; i++ {
		switch k := m.cond(i); k {
		case CondImpOpen, CondExpOpen, CondClosed:
			// counted incrementally
		default:
			c[k]++
		}
	}
	return c
}
