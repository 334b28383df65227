package check

import (
	"fmt"
	"slices"

	"github.com/zqimg/zqimg/pkg/image"
)

// Entries pointing into metadata.
//
// An L1 entry whose L2 table, or an L2 entry whose data cluster, lies in
// a metadata structure (the header, the active L1 table, the refcount
// table or a refcount block, the snapshot table, a snapshot's L1 table,
// the write-pointer table)
// is wrong: QEMU's check only sees a refcount too low for the references
// and, repairing, raises it, which makes guest writes go into the
// metadata (or metadata updates into guest data). A repair clears such
// an entry instead; the range then reads as zeroes.
//
// The set of metadata clusters comes from the read-only pass before the
// repair (hints.metadata), which knows every reference: a refcount block
// only counts when its content is plausible (most of the refcounts it
// holds agree with the references), since a refcount table entry pointing
// at a data cluster makes the block the wrong one, and the write-pointer
// table only when its entries are possible.

// metaSet is a set of metadata clusters with the name of the structure
// each belongs to: a bitmap for the lookups (one per guest cluster the
// walk meets) and the names for the messages.
type metaSet struct {
	bits  []uint64
	names map[uint64]string
}

func (m *metaSet) add(k uint64, what string) {
	if w := k / 64; w >= uint64(len(m.bits)) {
		m.bits = append(m.bits, make([]uint64, w+1-uint64(len(m.bits)))...)
	}
	if m.bits[k/64]&(1<<(k%64)) != 0 {
		return
	}
	m.bits[k/64] |= 1 << (k % 64)
	if m.names == nil {
		m.names = map[uint64]string{}
	}
	m.names[k] = what
}

// name returns the structure cluster k belongs to, or "".
func (m *metaSet) name(k uint64) string {
	if m == nil || k/64 >= uint64(len(m.bits)) || m.bits[k/64]&(1<<(k%64)) == 0 {
		return ""
	}
	return m.names[k]
}

// metadataClusters returns the clusters of the metadata structures,
// named. With final, refcount blocks and the write-pointer table are only
// included when their content is plausible (known after the walk).
func (c *checker) metadataClusters(final bool) *metaSet {
	h := c.hdr
	m := &metaSet{}
	add := func(off, size uint64, what string) {
		if size == 0 || off+size < off || off >= c.fileSize {
			return
		}
		last := min(off+size-1, c.fileSize-1) >> c.cb
		for k := off >> c.cb; k <= last; k++ {
			m.add(k, what)
		}
	}
	add(0, c.cs, "the header")
	add(h.L1TableOffset, uint64(h.L1Size)*8, "the active L1 table")
	add(h.RefcountTableOffset, c.reftableN*8, "the refcount table")
	for i, e := range c.reftable {
		off := e & image.RefTableOffMask
		if off == 0 || off&(c.cs-1) != 0 || e&image.RefTableReserved != 0 {
			continue
		}
		// Only a block some entry points into needs to be judged.
		if final && c.intoMeta[off>>c.cb] > 0 && !c.refblockPlausible(uint64(i), off>>c.cb) {
			continue
		}
		add(off, c.cs, fmt.Sprintf("refcount block %d", i))
	}
	if h.NbSnapshots > 0 {
		add(h.SnapshotsOffset, c.snapshotsSize, "the snapshot table")
	}
	for _, sn := range c.snapshots {
		add(sn.l1Off, uint64(sn.l1Size)*8, fmt.Sprintf("the L1 table of snapshot ID %s", sn.id))
	}
	if z := c.z; z != nil && z.tableSize > 0 && !c.unsafeTable && (!final || z.plausible) {
		add(z.tableOff, z.tableSize, "the write-pointer table")
	}
	for _, t := range []extent{c.located, c.keptTable} {
		add(t.off, t.size, "the write-pointer table")
	}
	return m
}

// refblockPlausible reports whether refcount block ti, in cluster k, holds
// refcounts: at least three quarters of the clusters it covers that
// something refers to (not counting references a repair removes) have
// exactly the refcount the references give them. (Clusters nothing refers
// to are left out: damage that loses a table leaks many clusters.)
func (c *checker) refblockPlausible(ti, k uint64) bool {
	first := ti << c.rbBits
	end := min(first+c.rbEnts, c.nb)
	var inUse, match uint64
	for i := first; i < end; i++ {
		u := c.used.get(i)
		if u == 0 {
			continue
		}
		u -= min(u, c.intoMeta[i]+c.garbage[i])
		if i == k || u == 0 {
			continue
		}
		s, ok := c.storedAt(i)
		if !ok {
			return false
		}
		inUse++
		if s == u {
			match++
		}
	}
	return match*4 >= inUse*3
}

// metaSetInUse returns the set of metadata clusters entries are checked
// against: a repairing pass uses the set of the read-only pass before it;
// a read-only pass the structures known before the walk.
func (c *checker) metaSetInUse() *metaSet {
	if c.metadata != nil {
		return c.metadata
	}
	return c.candidates
}

// intoMetadata names the metadata structure [off, off+size) lies in, or
// returns "".
func (c *checker) intoMetadata(off, size uint64) string {
	set := c.metaSetInUse()
	if set == nil || size == 0 || off+size < off {
		return ""
	}
	for k := off >> c.cb; k <= (off+size-1)>>c.cb; k++ {
		if what := set.name(k); what != "" {
			return what
		}
	}
	return ""
}

// has reports whether cluster k is in the set (nil: empty).
func (m *metaSet) has(k uint64) bool {
	return m != nil && k/64 < uint64(len(m.bits)) && m.bits[k/64]&(1<<(k%64)) != 0
}

// noteIntoMeta records, in a read-only pass, a reference into metadata
// that is about to be counted (inc; a reference the refcount width
// cannot count is not).
func (c *checker) noteIntoMeta(off, size uint64) {
	if c.walkingGarbage || c.beyondEOF(off, size) {
		return
	}
	if c.intoMeta == nil {
		c.intoMeta = map[uint64]uint64{}
	}
	for k := off >> c.cb; k <= (off+size-1)>>c.cb; k++ {
		if c.used.get(k) < c.rmax {
			c.intoMeta[k]++
		}
	}
}

// checkIntoMeta handles the L2 entry s whose host range is [off,
// off+size): when it lies in metadata, a repair makes the entry read as
// zeroes (done reports it); a read-only pass notes the reference and
// counts it as usual.
func (c *checker) checkIntoMeta(w *l2Walk, s *l2Slot, off, size uint64) (done bool, err error) {
	if set := c.metaSetInUse(); !set.has(off>>c.cb) && !set.has((off+size-1)>>c.cb) {
		return false, nil // the common case, answered by the bitmap
	}
	if size == c.cs && off&(c.cs-1) != 0 {
		return false, nil // unaligned: realigned or cleared later
	}
	what := c.intoMetadata(off, size)
	if what == "" {
		return false, nil
	}
	if c.metadata == nil {
		c.noteIntoMeta(off, size)
		return false, nil
	}
	if !w.repair {
		return false, nil
	}
	c.report(finding(KindCorruption, ProblemEntryIntoMetadata, "Repairing l2 entry of guest offset 0x%x: its cluster at 0x%x lies in %s; the entry now reads as zeroes", s.guest, off, what).at(off).guest(s.guest).cluster(off >> c.cb).repaired(true))
	return true, c.setL2(w, s, c.zeroEntry())
}

// zeroBeyondWP handles the entry s of an allocated cluster at host offset
// off that holds no data (zero flag, or no allocated subcluster): when it
// lies wholly at or beyond the write pointer of a sequential zone it is
// what the reference's zone reset leaves, not damage. It is counted as
// reclaimable or, when the walk repairs leaks and may write the table,
// given back: the entry becomes a plain zero entry (reads do not change),
// then the refcount is lowered (done).
func (c *checker) zeroBeyondWP(w *l2Walk, s *l2Slot, off uint64) (done bool, err error) {
	zi := c.z.beyond(s.guest, c.cs)
	if zi < 0 {
		return false, nil
	}
	zr := c.res.Zoned
	if w.fix&RepairLeaks == 0 || !c.writable(w.off, c.cs) {
		zr.ZeroBeyondWP++
		return false, nil
	}
	if err := c.setL2(w, s, c.zeroEntry()); err != nil {
		return false, err
	}
	c.dropRef(off, c.cs)
	zr.ZeroBeyondWPReclaimed++
	if c.reclaimed == nil {
		c.reclaimed = map[int64]int64{}
	}
	c.reclaimed[zi]++
	return true, nil
}

// reportReclaimed reports, one line per zone, the zero clusters the walk
// of the active L1 table reclaimed.
func (c *checker) reportReclaimed() {
	if len(c.reclaimed) == 0 {
		return
	}
	zones := make([]int64, 0, len(c.reclaimed))
	for zi := range c.reclaimed {
		zones = append(zones, zi)
	}
	slices.Sort(zones)
	for _, zi := range zones {
		wp := c.z.wp[zi]
		c.report(finding(KindInfo, ProblemZeroBeyondWP, "Reclaiming %d zero clusters beyond write pointer: zone %d wp=0x%x", c.reclaimed[zi], zi, wp).zone(zi, int64(wp)).repaired(true))
	}
	c.reclaimed = nil
}
