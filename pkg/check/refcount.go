package check

import (
	"encoding/binary"
	"slices"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/internal/arith"
)

// loadRefcounts reads the refcount table and the stored refcount of every
// cluster of the file into memory (one read of each refcount block).
func (c *checker) loadRefcounts() error {
	t, err := c.readEntries(c.hdr.RefcountTableOffset, c.reftableN)
	if err != nil {
		return err
	}
	c.reftable = t
	c.badBlock = nil
	// One cluster of slack: a reference may reach into the cluster after
	// the end of the file.
	n := c.nb + 1
	c.stored = newCounts(n)
	for ti, e := range c.reftable {
		first := uint64(ti) << c.rbBits
		if first >= n {
			break
		}
		off := e & image.RefTableOffMask
		if off == 0 {
			continue
		}
		if off&(c.cs-1) != 0 {
			if c.badBlock == nil {
				c.badBlock = map[uint64]bool{}
			}
			c.badBlock[uint64(ti)] = true
			continue
		}
		blk, err := c.readCluster(off)
		if err != nil {
			return err
		}
		cnt := min(c.rbEnts, n-first)
		if c.order == 4 {
			for j := uint64(0); j < cnt; j++ {
				v := binary.BigEndian.Uint16(blk[2*j:])
				if v == countBig {
					c.stored.set(first+j, uint64(v))
				} else {
					c.stored.a[first+j] = v
				}
			}
			continue
		}
		for j := uint64(0); j < cnt; j++ {
			if v := image.GetRefcount(blk, j, c.order); v != 0 {
				c.stored.set(first+j, v)
			}
		}
	}
	return nil
}

// storedAt returns the stored refcount of cluster ci; ok is false when its
// refcount block cannot be used (unaligned offset), where QEMU fails to
// read the refcount.
func (c *checker) storedAt(ci uint64) (uint64, bool) {
	ti := ci >> c.rbBits
	if c.badBlock[ti] {
		return 0, false
	}
	if ci < c.stored.n() {
		return c.stored.get(ci), true
	}
	if ti >= uint64(len(c.reftable)) {
		return 0, true
	}
	off := c.reftable[ti] & image.RefTableOffMask
	if off == 0 {
		return 0, true
	}
	// Rare: a reference beyond the clusters loaded (beyond the end of the
	// file). Read just the entry.
	i := ci & (c.rbEnts - 1)
	var b [8]byte
	width := max(uint64(1)<<c.order/8, 1)
	pos := i << c.order / 8
	if err := c.readAt(b[:width], off+pos); err != nil {
		return 0, false
	}
	blk := make([]byte, pos+width)
	copy(blk[pos:], b[:width])
	return image.GetRefcount(blk, i, c.order), true
}

// setStored changes the stored refcount of ci in memory and marks it to be
// written by writeRefcounts.
func (c *checker) setStored(ci, v uint64) {
	c.stored.grow(ci + 1)
	c.stored.set(ci, v)
	if c.dirtyRC == nil {
		c.dirtyRC = map[uint64]struct{}{}
	}
	c.dirtyRC[ci] = struct{}{}
}

// checkRefblocks checks the refcount table entries and counts the
// refcount blocks (QEMU's check_refblocks). A broken entry requires the
// refcount structure to be rebuilt.
func (c *checker) checkRefblocks() {
	for i, e := range c.reftable {
		off := e & image.RefTableOffMask
		cl := off >> c.cb
		switch {
		case e&image.RefTableReserved != 0:
			c.brokenRefblock(finding(KindCorruption, ProblemRefcountTable, "ERROR refcount table entry %d has reserved bits set", i))
			continue
		case off&(c.cs-1) != 0:
			c.brokenRefblock(finding(KindCorruption, ProblemRefcountTable, "ERROR refcount block %d is not cluster aligned; refcount table entry corrupted", i).at(off))
			continue
		case cl >= c.nb:
			// QEMU's -r all grows the file to cover the block; a rebuild
			// (which replaces the block) is as good and needs no write far
			// beyond the end of the file.
			c.brokenRefblock(finding(KindCorruption, ProblemRefcountTable, "ERROR refcount block %d is outside image", i).at(off).cluster(cl))
			continue
		}
		if off == 0 {
			continue
		}
		c.inc(off, c.cs)
		if rc := c.used.get(cl); rc != 1 {
			c.brokenRefblock(finding(KindCorruption, ProblemRefcountTable, "ERROR refcount block %d refcount=%d", i, rc).at(off).cluster(cl))
		}
	}
}

// brokenRefblock reports a refcount table entry or block that makes the
// refcount structure unusable: it must be rebuilt.
func (c *checker) brokenRefblock(f Finding) {
	c.report(f)
	c.rebuild = true
}

// compare compares the stored refcounts with the references (QEMU's
// compare_refcounts) and, as fix allows, plans repairs of the stored
// refcounts (written by writeRefcounts). It returns the highest cluster in
// use.
func (c *checker) compare(fix Mode) uint64 {
	var highest uint64
	sa := c.stored.a
	ua := c.used.a
	for i := uint64(0); i < c.nb; i++ {
		if i < uint64(len(sa)) && i < uint64(len(ua)) && sa[i] == ua[i] && sa[i] != countBig && (c.badBlock == nil || !c.badBlock[i>>c.rbBits]) {
			if sa[i] != 0 {
				highest = i
			}
			continue
		}
		r1, _ := c.storedAt(i)
		r2 := c.used.get(i)
		if r1 > 0 || r2 > 0 {
			highest = i
		}
		if r1 == r2 {
			continue
		}
		var fixKind Kind
		switch {
		case r1 == 0:
			c.rebuild = true
		case r1 > r2 && fix&RepairLeaks != 0:
			fixKind = KindLeak
		case r1 < r2 && fix&repairErrors != 0:
			fixKind = KindCorruption
		}
		var f Finding
		switch {
		case fixKind != KindInfo:
			f = finding(fixKind, ProblemRefcount, "Repairing cluster %d refcount=%d reference=%d", i, r1, r2)
			f.Repaired = true
			c.setStored(i, r2)
		case r1 < r2:
			f = finding(KindCorruption, ProblemRefcount, "ERROR cluster %d refcount=%d reference=%d", i, r1, r2)
		default:
			f = finding(KindLeak, ProblemRefcount, "Leaked cluster %d refcount=%d reference=%d", i, r1, r2)
		}
		c.report(f.clusterAt(i, c.cb))
	}
	return highest
}

// writeRefcounts writes the planned stored refcounts into the refcount
// blocks: first every raise, synced, then every lowering, synced, so that
// no refcount is ever below the references on disk. Reference removals
// made by the walk are synced before.
func (c *checker) writeRefcounts() error {
	if err := c.syncWrites(); err != nil {
		return err
	}
	if len(c.dirtyRC) == 0 {
		return nil
	}
	cis := make([]uint64, 0, len(c.dirtyRC))
	for ci := range c.dirtyRC {
		cis = append(cis, ci)
	}
	slices.Sort(cis)
	for _, raise := range []bool{true, false} {
		for i := 0; i < len(cis); {
			ti := cis[i] >> c.rbBits
			j := i
			for j < len(cis) && cis[j]>>c.rbBits == ti {
				j++
			}
			if err := c.writeBlock(ti, cis[i:j], raise); err != nil {
				return err
			}
			i = j
		}
		if err := c.syncWrites(); err != nil {
			return err
		}
	}
	c.dirtyRC = nil
	return nil
}

// writeBlock updates refcount block ti for the clusters cis: the raises or
// the lowerings only.
func (c *checker) writeBlock(ti uint64, cis []uint64, raise bool) error {
	if ti >= uint64(len(c.reftable)) {
		return nil
	}
	off := c.reftable[ti] & image.RefTableOffMask
	if off == 0 || off&(c.cs-1) != 0 {
		return nil
	}
	blk := make([]byte, c.cs)
	if err := c.readAt(blk, off); err != nil {
		return err
	}
	changed := false
	for _, ci := range cis {
		i := ci & (c.rbEnts - 1)
		disk := image.GetRefcount(blk, i, c.order)
		want := min(c.stored.get(ci), c.rmax)
		if (raise && want > disk) || (!raise && want < disk) {
			image.SetRefcount(blk, i, c.order, want)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return c.write(blk, off)
}

// allocIMRT finds count free clusters in the references and takes them,
// growing the image when needed (QEMU's alloc_clusters_imrt). Clusters of
// the refcount structure being replaced are never taken.
func (c *checker) allocIMRT(count uint64, firstFree *uint64, avoid *avoidSet) uint64 {
	cl := *firstFree
	firstGap := true
	var contiguous uint64
	for ; cl < c.nb && contiguous < count; cl++ {
		if c.used.get(cl) == 0 && !avoid.has(cl) {
			contiguous++
			if firstGap {
				*firstFree = cl
				firstGap = false
			}
		} else if contiguous > 0 {
			contiguous = 0
		}
	}
	// Beyond the clusters known everything is free, except what must be
	// avoided.
	for contiguous < count {
		if n := avoid.skip(cl); n != cl {
			contiguous = 0
			cl = n
			continue
		}
		contiguous++
		cl++
	}
	if cl > c.nb {
		c.nb = cl
		c.used.grow(c.nb)
	}
	cl -= contiguous
	for i := uint64(0); i < count; i++ {
		c.used.set(cl+i, 1)
	}
	return cl << c.cb
}

// avoidSet holds clusters a rebuild must not allocate: single clusters and
// byte ranges.
type avoidSet struct {
	cb       uint32
	clusters map[uint64]bool
	ranges   [][2]uint64 // [first, end) cluster ranges
}

// maxAvoid bounds the ranges a rebuild steps over: a larger one is
// garbage (no table is that large), and stepping over it would grow the
// file without bound.
const maxAvoid = 64 << 20

func (a *avoidSet) add(off, size uint64) {
	if size == 0 || size > maxAvoid || off+size < off {
		return
	}
	a.ranges = append(a.ranges, [2]uint64{off, off + size})
}

func (a *avoidSet) has(cl uint64) bool { return a.skip(cl) != cl }

// skip returns the first cluster at or after cl that is not avoided.
func (a *avoidSet) skip(cl uint64) uint64 {
	if a == nil {
		return cl
	}
	for moved := true; moved; {
		moved = false
		if a.clusters[cl] {
			cl++
			moved = true
		}
		off, end := cl<<a.cb, (cl+1)<<a.cb
		for _, r := range a.ranges {
			if off < r[1] && r[0] < end {
				cl = (r[1]-1)>>a.cb + 1
				off, end = cl<<a.cb, (cl+1)<<a.cb
				moved = true
			}
		}
	}
	return cl
}

// writeRefblocks writes the refcount blocks covering the used clusters of
// [first, end), allocating the missing ones (QEMU's
// rebuild_refcounts_write_refblocks). It reports whether the table grew.
func (c *checker) writeRefblocks(first, end uint64, table *[]uint64, avoid *avoidSet) (bool, error) {
	var firstFree uint64
	grown := false
	for cl := first; cl < end; cl++ {
		if c.used.get(cl) == 0 {
			continue
		}
		bi := cl >> c.rbBits
		start := bi << c.rbBits
		var boff uint64
		if bi < uint64(len(*table)) && (*table)[bi] != 0 {
			boff = (*table)[bi]
		} else {
			firstFree = max(firstFree, start)
			boff = c.allocIMRT(1, &firstFree, avoid)
			if boff>>c.cb >= end {
				end = boff>>c.cb + 1
			}
			if uint64(len(*table)) <= bi {
				n := arith.RoundUp((bi+1)*8, c.cs) / 8
				*table = append(*table, make([]uint64, n-uint64(len(*table)))...)
				grown = true
			}
			(*table)[bi] = boff
		}
		blk := make([]byte, c.cs)
		for j := uint64(0); j < c.rbEnts; j++ {
			if v := c.used.get(start + j); v != 0 {
				image.SetRefcount(blk, j, c.order, min(v, c.rmax))
			}
		}
		if err := c.write(blk, boff); err != nil {
			return false, err
		}
		cl = start + c.rbEnts - 1
	}
	return grown, nil
}

// rebuildRefcounts replaces the refcount structure by one built from the
// references (QEMU's rebuild_refcount_structure): new refcount blocks and
// a new table are written in clusters nothing refers to, made durable,
// and then the header is switched to them in one write. The old structure
// is left in place, unreferenced (its clusters are freed afterwards like
// any leak).
func (c *checker) rebuildRefcounts() error {
	// Reference removals made by the walk must be durable before a
	// structure that no longer counts them.
	if err := c.syncWrites(); err != nil {
		return err
	}
	avoid := c.rebuildAvoid()
	var table []uint64
	if _, err := c.writeRefblocks(0, c.nb, &table, avoid); err != nil {
		return err
	}
	var tableOff, tableClusters uint64
	for {
		tableClusters = arith.CeilDiv(uint64(len(table))*8, c.cs)
		var firstFree uint64
		tableOff = c.allocIMRT(tableClusters, &firstFree, avoid)
		// The table's own clusters need refcounts too.
		grown, err := c.writeRefblocks(tableOff>>c.cb, tableOff>>c.cb+tableClusters, &table, avoid)
		if err != nil {
			return err
		}
		if !grown {
			break
		}
	}
	b := make([]byte, tableClusters*c.cs)
	for i, v := range table {
		binary.BigEndian.PutUint64(b[i*8:], v)
	}
	if err := c.write(b, tableOff); err != nil {
		return err
	}
	if err := c.syncWrites(); err != nil {
		return err
	}
	if err := c.switchRefcountTable(tableOff, tableClusters); err != nil {
		return err
	}
	table = append(table, make([]uint64, c.reftableN-uint64(len(table)))...)
	c.reftable = table
	c.badBlock = nil
	c.stored = c.used.clone()
	c.dirtyRC = nil
	return nil
}

// rebuildAvoid returns the clusters a rebuild must not allocate: never the
// old refcount structure (it stays in use until the header switches), nor
// a table the header points to: such a table may lie beyond the end of the
// file, where nothing counts it.
func (c *checker) rebuildAvoid() *avoidSet {
	h := c.hdr
	avoid := &avoidSet{cb: c.cb, clusters: map[uint64]bool{}}
	avoid.add(h.RefcountTableOffset, c.reftableN*8)
	for _, e := range c.reftable {
		if off := e & image.RefTableOffMask; off != 0 {
			avoid.clusters[off>>c.cb] = true
		}
	}
	avoid.add(h.L1TableOffset, uint64(h.L1Size)*8)
	avoid.add(h.SnapshotsOffset, c.snapshotsSize)
	for _, sn := range c.snapshots {
		avoid.add(sn.l1Off, uint64(sn.l1Size)*8)
	}
	if c.z != nil {
		avoid.add(c.z.h.MetaOffset, c.z.h.MetaSize)
	}
	avoid.add(c.keptTable.off, c.keptTable.size)
	avoid.add(c.located.off, c.located.size)
	return avoid
}

// switchRefcountTable points the header to the refcount table of the given
// clusters at off: refcount_table_offset and refcount_table_clusters, which
// follows it, in one sector write, synced.
func (c *checker) switchRefcountTable(off, clusters uint64) error {
	var hb [image.HdrRefcountTableClusters + 4 - image.HdrRefcountTableOffset]byte
	binary.BigEndian.PutUint64(hb[0:], off)
	binary.BigEndian.PutUint32(hb[image.HdrRefcountTableClusters-image.HdrRefcountTableOffset:], uint32(clusters))
	if err := c.write(hb[:], image.HdrRefcountTableOffset); err != nil {
		return err
	}
	if err := c.syncWrites(); err != nil {
		return err
	}
	c.hdr.RefcountTableOffset = off
	c.hdr.RefcountTableClusters = uint32(clusters)
	c.reftableN = clusters * c.cs / 8
	return nil
}
