package check

import (
	"encoding/binary"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/internal/arith"
)

// calculate counts the references of every structure (QEMU's
// calculate_refcounts, plus the zoned write-pointer table) and checks the
// L1 and L2 entries on the way. With repairErrors in fix it repairs
// entries as it goes (reference removals only; see doc.go).
func (c *checker) calculate(fix Mode) error {
	h := c.hdr
	if fix&repairErrors != 0 {
		if err := c.bringTablesInside(); err != nil {
			return err
		}
	}
	c.checkL1Overhang()
	c.inc(0, c.cs)
	if err := c.checkZoned(fix); err != nil {
		return err
	}
	if c.metadata == nil {
		// A read-only pass notes the references into metadata (see
		// sharedTables); the repairing pass after it gets the final set.
		c.candidates = c.metadataClusters(false)
	}
	if err := c.checkL1(h.L1TableOffset, uint64(h.L1Size), true, fix); err != nil {
		return err
	}
	c.reportReclaimed()
	if err := c.checkSnapshotL1s(fix); err != nil {
		return err
	}
	c.inc(h.SnapshotsOffset, c.snapshotsSize)
	c.inc(h.RefcountTableOffset, c.reftableN*8)
	if h.CryptMethod == 2 {
		if e := c.ext(image.ExtCrypto); e != nil && len(e.Data) >= 16 {
			c.inc(binary.BigEndian.Uint64(e.Data), binary.BigEndian.Uint64(e.Data[8:]))
		}
	}
	if err := c.checkBitmaps(); err != nil {
		return err
	}
	c.checkRefblocks()
	if fix&repairErrors != 0 {
		if err := c.resolveDeferred(fix); err != nil {
			return err
		}
	}
	c.checkZonedOverlap()
	c.locate()
	if fix != RepairNone {
		c.applyDropped()
	}
	return c.syncWrites()
}

// bringTablesInside repairs the L1 tables and the snapshot table that lie
// one cluster or more beyond the end of the file (a truncated file), and
// an active L1 table that runs past it at all (which opening the image
// refuses), before anything is counted.
func (c *checker) bringTablesInside() error {
	h := c.hdr
	if err := c.extendOver(h.L1TableOffset, uint64(h.L1Size)*8, "the active L1 table", true); err != nil {
		return err
	}
	if err := c.dropLostSnapshots(); err != nil {
		return err
	}
	for _, sn := range c.snapshots {
		if sn.l1Size <= maxL1Entries {
			if err := c.extendOver(sn.l1Off, uint64(sn.l1Size)*8, "the L1 table of snapshot "+sn.id, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// extendOver repairs a table that lies one cluster or more beyond the end
// of the file (a truncated file), or with overhang any part of it: the
// file is extended with zeroes over it (to a cluster boundary), so that
// the table reads as empty there and is counted, as QEMU does for a
// refcount block outside the image. Growing a file is always safe; it is
// not done by more than Options.MaxExtend bytes.
func (c *checker) extendOver(off, size uint64, what string, overhang bool) error {
	if size == 0 || off+size < off || off+size > c.fileSize+c.maxExtend {
		return nil
	}
	if !c.beyondEOF(off, size) && !(overhang && off+size > c.fileSize) {
		return nil
	}
	end := arith.RoundUp(off+size, c.cs)
	if err := c.f.Truncate(int64(end)); err != nil {
		return c.ioError(err, "extending the file to %d bytes", end)
	}
	c.wrote = true
	c.res.changed, c.res.extended = true, true
	c.report(finding(KindCorruption, ProblemBeyondEOF, "Repairing %s at 0x%x runs past the end of the file (%d bytes); the file is extended to %d bytes, the table reads as zeroes", what, off, c.fileSize, end).at(off).repaired(true))
	c.fileSize = end
	return c.syncWrites()
}

// checkL1Overhang reports an active L1 table that runs past the end of the
// file by less than a cluster (one cluster or more is reported when it is
// counted, see inc). QEMU reads the part past the end as zeroes and
// qemu-img check says nothing; zqimg refuses to open such an image, so it
// is a corruption here, which -r all repairs by extending the file
// (bringTablesInside).
func (c *checker) checkL1Overhang() {
	h := c.hdr
	off, size := h.L1TableOffset, uint64(h.L1Size)*8
	if size == 0 || off+size <= c.fileSize || c.beyondEOF(off, size) {
		return
	}
	c.report(finding(KindCorruption, ProblemBeyondEOF, "ERROR the active L1 table [%#x, %#x) runs past the end of the file (%d bytes); the image cannot be opened", off, off+size, c.fileSize).at(off))
}

// l1Walk is the walk of one L1 table (checkL1).
type l1Walk struct {
	off    uint64   // file offset of the table
	l1     []uint64 // its entries inside the file
	active bool     // the header's L1 table
	fix    Mode     // what the walk may repair
	repair bool     // fix repairs errors and the table is writable
}

// checkL1 counts an L1 table and everything it refers to (QEMU's
// check_refcounts_l1). active is true for the header's L1 table.
func (c *checker) checkL1(off, size uint64, active bool, fix Mode) error {
	if size == 0 {
		return nil
	}
	c.inc(off, size*8)
	c.countClusters(&c.l1Refs, off, size*8)
	l1, err := c.readEntries(off, size)
	if err != nil {
		return err
	}
	if active {
		c.l1 = l1
	}
	// A table that is also something else is not repaired.
	w := &l1Walk{off: off, l1: l1, active: active, fix: fix, repair: fix&repairErrors != 0 && c.writable(off, size*8)}
	for i, e := range l1 {
		if e == 0 {
			continue
		}
		if err := c.checkL1Entry(w, uint64(i), image.L1Entry(e)); err != nil {
			return err
		}
	}
	return nil
}

// checkL1Entry checks entry i of an L1 table, e, and walks its L2 table.
// An entry pointing to an unaligned L2 table or beyond the end of the file
// is repaired later (resolveDeferred), once every reference is known.
func (c *checker) checkL1Entry(w *l1Walk, i uint64, e image.L1Entry) error {
	eoff := w.off + i*8
	if r := e.Reserved(); r != 0 {
		f := finding(KindCorruption, ProblemL1Reserved, pick(w.repair,
			"ERROR found L1 entry with reserved bits set: %x",
			"Repairing L1 entry with reserved bits set: %x (bits cleared)"), uint64(e)).at(eoff)
		if err := c.reportFix(f, w.repair, func() error { e &^= image.L1Entry(r); return c.setL1(w, i, e) }); err != nil {
			return err
		}
		if w.repair && e == 0 {
			return nil
		}
	}
	l2off := e.Offset()
	if w.repair && l2off == 0 {
		// QEMU would read the header cluster as the L2 table.
		c.report(finding(KindCorruption, ProblemL1Reserved, "Repairing L1 entry %d: %x has no L2 table offset; entry cleared", i, uint64(e)).at(eoff).repaired(true))
		return c.setL1(w, i, 0)
	}
	if what := c.intoMetadata(l2off, c.cs); what != "" && l2off&(c.cs-1) == 0 {
		if w.repair {
			c.report(finding(KindCorruption, ProblemEntryIntoMetadata, "Repairing L1 entry %d: its L2 table offset 0x%x lies in %s; entry cleared", i, l2off, what).at(eoff).repaired(true))
			return c.setL1(w, i, 0)
		}
		if c.metadata == nil {
			return c.walkGarbageL2(w, i, e)
		}
	}
	if w.repair && (l2off&(c.cs-1) != 0 || c.beyondEOF(l2off, c.cs)) {
		c.deferredL1 = append(c.deferredL1, deferredL1{tableOff: w.off, index: i, entry: e, active: w.active})
		return nil
	}
	c.inc(l2off, c.cs)
	c.countClusters(&c.l2Refs, l2off, c.cs)
	if l2off&(c.cs-1) != 0 {
		c.report(finding(KindCorruption, ProblemL1Unaligned, "ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted", l2off).at(l2off))
	}
	if w.active && c.inlineCopied && l2off != 0 {
		c.checkL1Copied(i, e)
	}
	l2fix := w.fix
	if !w.repair {
		l2fix &^= repairErrors
	}
	return c.checkL2(l2off, i, w.active, l2fix)
}

// walkGarbageL2 counts, in a read-only pass, an L1 entry whose "L2 table"
// lies in metadata, and walks it as QEMU does; none of it is a reason to
// keep a repair from writing a table (see sharedTables): the repair clears
// the entry.
func (c *checker) walkGarbageL2(w *l1Walk, i uint64, e image.L1Entry) error {
	l2off := e.Offset()
	c.noteIntoMeta(l2off, c.cs)
	c.inc(l2off, c.cs)
	if w.active && c.inlineCopied && l2off != 0 {
		c.checkL1Copied(i, e)
	}
	c.walkingGarbage = true
	err := c.checkL2(l2off, i, w.active, w.fix&^repairErrors)
	c.walkingGarbage = false
	return err
}

// setL1 rewrites entry i of the L1 table of w.
func (c *checker) setL1(w *l1Walk, i uint64, e image.L1Entry) error {
	w.l1[i] = uint64(e)
	c.setActiveL1(w.active, i, e)
	return c.writeU64(w.off+i*8, uint64(e))
}

// setActiveL1 updates entry i of the active L1 table kept in memory.
func (c *checker) setActiveL1(active bool, i uint64, e image.L1Entry) {
	if active && i < uint64(len(c.l1)) {
		c.l1[i] = uint64(e)
	}
}

// l2Walk is the walk of one L2 table (checkL2).
type l2Walk struct {
	off    uint64 // file offset of the table
	t      []byte // its content
	active bool   // of the active L1 table
	fix    Mode   // what the walk may repair
	repair bool   // fix repairs errors and the table is writable
	zoned  bool   // write pointers apply (an active table of a zoned image)
	next   uint64 // host offset that would continue the last data cluster (fragmentation)
}

// l2Slot is an entry of the L2 table being walked.
type l2Slot struct {
	j     uint64 // index in the table
	guest uint64 // guest offset of its cluster
	e     image.L2Entry
}

// setL2 rewrites the entry of s in the L2 table of w, in memory and in the
// file.
func (c *checker) setL2(w *l2Walk, s *l2Slot, e image.L2Entry) error {
	s.e = e
	return c.write(e.Put(w.t, s.j, c.extL2), w.off+s.j*c.entSize)
}

// zeroEntry returns the entry that makes a cluster read as zeroes without
// any host cluster: the zero flag in version 3, every subcluster zero with
// extended L2 entries, unallocated in version 2.
func (c *checker) zeroEntry() image.L2Entry {
	switch {
	case c.extL2:
		return image.L2Entry{Bitmap: image.BitmapAllZero}
	case c.hdr.Version >= 3:
		return image.L2Entry{Desc: image.OflagZero}
	}
	return image.L2Entry{}
}

// unmapEntry returns the entry that reads like e without its host
// cluster: zeroes, except that with extended L2 entries the unallocated
// subclusters stay unallocated (they read from the backing file).
func (c *checker) unmapEntry(e image.L2Entry) image.L2Entry {
	if c.extL2 {
		return image.L2Entry{Bitmap: (e.Bitmap | e.Bitmap<<32) & image.BitmapAllZero}
	}
	return c.zeroEntry()
}

// holdsData reports whether an allocated entry's host cluster holds data:
// not the zero flag, and with extended L2 entries an allocated subcluster.
func (c *checker) holdsData(e image.L2Entry) bool {
	if c.extL2 {
		return e.HasData()
	}
	return e.Type(false) == image.ClusterNormal
}

// checkL2 counts the clusters an L2 table refers to and checks its
// entries (QEMU's check_refcounts_l2). Guest offsets are computed from
// the L1 index l1i.
func (c *checker) checkL2(l2off, l1i uint64, active bool, fix Mode) error {
	if l2off >= c.fileSize {
		// Reads as zeroes: nothing allocated, nothing to check.
		return nil
	}
	t, err := c.readCluster(l2off)
	if err != nil {
		return err
	}
	w := &l2Walk{off: l2off, t: t, active: active, fix: fix,
		repair: fix&repairErrors != 0 && c.writable(l2off, c.cs),
		zoned:  active && c.z != nil && c.z.wp != nil}
	for j := uint64(0); j < c.l2Ents; j++ {
		s := &l2Slot{j: j, guest: (l1i*c.l2Ents + j) << c.cb, e: image.DecodeL2Entry(t, j, c.extL2)}
		if s.e == (image.L2Entry{}) {
			continue
		}
		if err := c.checkL2Entry(w, s); err != nil {
			return err
		}
	}
	return nil
}

// checkL2Entry checks one L2 entry and counts what it refers to.
func (c *checker) checkL2Entry(w *l2Walk, s *l2Slot) error {
	if r := s.e.Reserved(); r != 0 {
		f := finding(KindCorruption, ProblemL2Reserved, pick(w.repair,
			"ERROR found l2 entry with reserved bits set: %x",
			"Repairing l2 entry with reserved bits set: %x (bits cleared)"), s.e.Desc).at(w.off + s.j*c.entSize).guest(s.guest)
		fixed := image.L2Entry{Desc: s.e.Desc &^ r, Bitmap: s.e.Bitmap}
		if err := c.reportFix(f, w.repair, func() error { return c.setL2(w, s, fixed) }); err != nil {
			return err
		}
	}
	switch s.e.Type(c.extL2) {
	case image.ClusterCompressed:
		return c.checkCompressed(w, s)
	case image.ClusterZeroAlloc, image.ClusterNormal:
		return c.checkAllocated(w, s)
	case image.ClusterUnallocated:
		if s.e.HasData() {
			f := finding(KindCorruption, ProblemSubclusterBitmap, "%s", pick(w.repair,
				"ERROR: Unallocated cluster has non-zero subcluster allocation map",
				"Repairing unallocated cluster with non-zero subcluster allocation map (subclusters now read as zeroes)")).guest(s.guest)
			fixed := image.L2Entry{Desc: s.e.Desc, Bitmap: c.unmapEntry(s.e).Bitmap}
			return c.reportFix(f, w.repair, func() error { return c.setL2(w, s, fixed) })
		}
	}
	return nil
}

// checkCompressed checks a compressed entry and counts the host clusters
// its byte range touches.
func (c *checker) checkCompressed(w *l2Walk, s *l2Slot) error {
	coff, csize := s.e.CompressedRange(c.cb)
	if s.e.Copied() {
		f := finding(KindCorruption, ProblemCompressedCopied, pick(w.repair,
			"ERROR: coffset=0x%x: copied flag must never be set for compressed clusters",
			"Repairing coffset=0x%x: copied flag must never be set for compressed clusters (flag cleared)"), coff).at(coff).guest(s.guest)
		// QEMU goes on with the flag cleared, repairing or not.
		s.e.Desc &^= image.OflagCopied
		if err := c.reportFix(f, w.repair, func() error { return c.setL2(w, s, s.e) }); err != nil {
			return err
		}
	}
	if s.e.Bitmap != 0 {
		f := finding(KindCorruption, ProblemSubclusterBitmap, "%s compressed cluster %d with non-zero subcluster allocation bitmap, entry=0x%x", verb(w.repair), s.j, s.e.Desc).at(coff).guest(s.guest)
		if err := c.reportFix(f, w.repair, func() error { return c.setL2(w, s, image.L2Entry{Desc: s.e.Desc}) }); err != nil || !w.repair {
			return err // as QEMU, the cluster is not counted
		}
	}
	if w.repair && c.beyondEOF(coff, csize) {
		return c.clearBeyondEOF(w, s, coff)
	}
	if done, err := c.checkIntoMeta(w, s, coff, csize); done || err != nil {
		return err
	}
	if w.zoned {
		if done, err := c.checkBeyondWP(w, s, coff, csize); done || err != nil {
			return err
		}
	}
	c.inc(coff, csize)
	if w.active {
		c.res.AllocatedClusters++
		c.res.CompressedClusters++
		c.res.FragmentedClusters++
	}
	return nil
}

// checkAllocated checks an entry that refers to a whole host cluster
// (normal, or preallocated zero) and counts that cluster.
func (c *checker) checkAllocated(w *l2Walk, s *l2Slot) error {
	off := s.e.Offset()
	if s.e.BitmapConflicts() != 0 {
		f := finding(KindCorruption, ProblemSubclusterBitmap, "%s offset=%x: Allocated cluster has corrupted subcluster allocation bitmap", verb(w.repair), off).at(off).guest(s.guest)
		// The allocation bit wins: the subcluster keeps its data.
		fixed := image.L2Entry{Desc: s.e.Desc, Bitmap: s.e.Bitmap &^ (s.e.BitmapConflicts() << 32)}
		if err := c.reportFix(f, w.repair, func() error { return c.setL2(w, s, fixed) }); err != nil {
			return err
		}
	}
	if done, err := c.checkIntoMeta(w, s, off, c.cs); done || err != nil {
		return err
	}
	aligned := off&(c.cs-1) == 0
	if !aligned {
		if done, err := c.checkUnaligned(w, s); done || err != nil {
			return err
		}
	}
	if w.repair && c.beyondEOF(off, c.cs) {
		return c.clearBeyondEOF(w, s, off)
	}
	if w.zoned && aligned {
		var done bool
		var err error
		if !c.holdsData(s.e) {
			// No data in it: what the reference's zone reset leaves.
			done, err = c.zeroBeyondWP(w, s, off)
		} else {
			done, err = c.checkBeyondWP(w, s, off, c.cs)
		}
		if done || err != nil {
			return err
		}
	}
	if w.active {
		c.res.AllocatedClusters++
		if w.next != 0 && off != w.next {
			c.res.FragmentedClusters++
		}
		w.next = off + c.cs
	}
	c.inc(off, c.cs)
	if w.active && c.inlineCopied {
		c.checkL2Copied(s)
	}
	return nil
}

// checkUnaligned handles an allocated entry whose host offset is not
// cluster aligned. One without data is made to read as zeroes (repair);
// one with data is repaired once every reference is known
// (resolveDeferred), or reported. done reports that the walk of the entry
// ends here.
func (c *checker) checkUnaligned(w *l2Walk, s *l2Slot) (done bool, err error) {
	off := s.e.Offset()
	if !c.holdsData(s.e) {
		f := finding(KindCorruption, ProblemL2Unaligned, "%s offset=%x: Preallocated cluster is not properly aligned; L2 entry corrupted.", verb(w.repair), off).at(off).guest(s.guest)
		return w.repair, c.reportFix(f, w.repair, func() error { return c.setL2(w, s, c.unmapEntry(s.e)) })
	}
	if w.repair {
		c.deferredL2 = append(c.deferredL2, deferredL2{l2Off: w.off, slot: *s, active: w.active})
		return true, nil
	}
	c.report(finding(KindCorruption, ProblemL2Unaligned, "ERROR offset=%x: Data cluster is not properly aligned; L2 entry corrupted.", off).at(off).guest(s.guest))
	return false, nil
}

// clearBeyondEOF makes an entry whose cluster (at off) lies beyond the end
// of the file read as zeroes (the data is gone).
func (c *checker) clearBeyondEOF(w *l2Walk, s *l2Slot, off uint64) error {
	c.report(finding(KindCorruption, ProblemBeyondEOF, "Repairing offset=%x: Cluster of guest offset 0x%x lies beyond the end of the file; L2 entry cleared.", off, s.guest).at(off).guest(s.guest).repaired(true))
	return c.setL2(w, s, c.zeroEntry())
}

// checkL1Copied checks OFLAG_COPIED of an active L1 entry against the
// stored refcount of its L2 table, for the report after the compare.
func (c *checker) checkL1Copied(i uint64, e image.L1Entry) {
	l2off := e.Offset()
	rc, ok := c.storedAt(l2off >> c.cb)
	if !ok || (rc == 1) == e.Copied() {
		return
	}
	c.copied = append(c.copied, finding(KindCorruption, ProblemL1Copied, "ERROR OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d", i, uint64(e), rc).at(l2off).cluster(l2off>>c.cb).guest(i*c.l2Ents<<c.cb))
	c.copiedCorrupt++
}

// checkL2Copied checks OFLAG_COPIED of an active data cluster entry s.
func (c *checker) checkL2Copied(s *l2Slot) {
	off := s.e.Offset()
	rc, ok := c.storedAt(off >> c.cb)
	if !ok || (rc == 1) == s.e.Copied() {
		return
	}
	c.copied = append(c.copied, finding(KindCorruption, ProblemCopied, "ERROR OFLAG_COPIED data cluster: l2_entry=%x refcount=%d", s.e.Desc, rc).at(off).cluster(off>>c.cb).guest(s.guest))
	c.copiedCorrupt++
}

// An L1 entry to repair once every reference is known.
type deferredL1 struct {
	tableOff uint64
	index    uint64
	entry    image.L1Entry
	active   bool
}

// An L2 entry to repair once every reference is known.
type deferredL2 struct {
	l2Off  uint64
	slot   l2Slot
	active bool
}

// resolveDeferred repairs the entries pointing to unaligned clusters or
// beyond the end of the file, once every other reference is known: an
// entry is realigned to the start of the cluster it points into when that
// cluster is allocated (stored refcount not 0) and nothing else refers to
// it, otherwise it is cleared.
func (c *checker) resolveDeferred(fix Mode) error {
	l1s := c.deferredL1
	c.deferredL1 = nil
	for _, d := range l1s {
		if err := c.resolveL1(d, fix); err != nil {
			return err
		}
	}
	l2s := c.deferredL2
	c.deferredL2 = nil
	for _, d := range l2s {
		if err := c.resolveL2(d); err != nil {
			return err
		}
	}
	return nil
}

// resolveL1 repairs an L1 entry pointing to an unaligned L2 table or
// beyond the end of the file; a realigned table is then walked.
func (c *checker) resolveL1(d deferredL1, fix Mode) error {
	l2off := d.entry.Offset()
	eoff := d.tableOff + d.index*8
	a := l2off &^ (c.cs - 1)
	var f Finding
	ne := image.L1Entry(0)
	switch {
	case c.beyondEOF(l2off, c.cs):
		f = finding(KindCorruption, ProblemBeyondEOF, "Repairing l2_offset=%x: L2 table lies beyond the end of the file; L1 entry %d cleared", l2off, d.index)
	case c.canRealign(a):
		f = finding(KindCorruption, ProblemL1Unaligned, "Repairing l2_offset=%x: Table is not cluster aligned; L1 entry realigned to %x", l2off, a)
		ne = image.L1Entry(a) | d.entry&image.L1Entry(image.OflagCopied)
	default:
		f = finding(KindCorruption, ProblemL1Unaligned, "Repairing l2_offset=%x: Table is not cluster aligned; L1 entry %d cleared", l2off, d.index)
	}
	c.report(f.at(l2off).repaired(true))
	if err := c.writeU64(eoff, uint64(ne)); err != nil {
		return err
	}
	c.setActiveL1(d.active, d.index, ne)
	if ne == 0 {
		return nil
	}
	c.inc(a, c.cs)
	c.countClusters(&c.l2Refs, a, c.cs)
	return c.checkL2(a, d.index, d.active, fix)
}

// resolveL2 repairs an L2 entry with data pointing to an unaligned cluster.
// A cluster beyond a write pointer is not realigned: it would be data the
// zone does not hold.
func (c *checker) resolveL2(d deferredL2) error {
	s := &d.slot
	off := s.e.Offset()
	a := off &^ (c.cs - 1)
	w := &l2Walk{off: d.l2Off, t: make([]byte, c.cs)}
	if err := c.readAt(w.t, w.off); err != nil {
		return err
	}
	beyond := d.active && c.z != nil && c.z.wp != nil && c.z.beyond(s.guest, c.cs) >= 0
	if !beyond && c.canRealign(a) {
		c.report(finding(KindCorruption, ProblemL2Unaligned, "Repairing offset=%x: Data cluster is not properly aligned; L2 entry realigned to %x.", off, a).at(off).guest(s.guest).repaired(true))
		if err := c.setL2(w, s, image.L2Entry{Desc: s.e.Desc&^image.L2OffsetMask | a, Bitmap: s.e.Bitmap}); err != nil {
			return err
		}
		c.inc(a, c.cs)
		return nil
	}
	c.report(finding(KindCorruption, ProblemL2Unaligned, "Repairing offset=%x: Data cluster is not properly aligned; L2 entry cleared, the cluster at guest offset 0x%x now reads as zeroes.", off, s.guest).at(off).guest(s.guest).repaired(true))
	return c.setL2(w, s, c.unmapEntry(s.e))
}

// canRealign reports whether an entry pointing into the cluster at a may
// be realigned to it: a is inside the file, allocated, and nothing else
// refers to it.
func (c *checker) canRealign(a uint64) bool {
	if a == 0 || a+c.cs > c.fileSize {
		return false
	}
	rc, ok := c.storedAt(a >> c.cb)
	return ok && rc >= 1 && c.used.get(a>>c.cb) == 0
}
