package check

import (
	"encoding/binary"
	"fmt"

	"github.com/zqimg/zqimg/pkg/image"
)

// calculate counts the references of every structure (QEMU's
// calculate_refcounts, plus the zoned write-pointer table) and checks the
// L1 and L2 entries on the way. With repairErrors in fix it repairs
// entries as it goes (reference removals only; see doc.go).
func (c *checker) calculate(fix Mode) error {
	h := c.hdr
	if fix&repairErrors != 0 {
		if err := c.extendOver(h.L1TableOffset, uint64(h.L1Size)*8, "the active L1 table"); err != nil {
			return err
		}
		if err := c.dropLostSnapshots(); err != nil {
			return err
		}
		for _, sn := range c.snapshots {
			if sn.l1Size <= maxL1Entries {
				if err := c.extendOver(sn.l1Off, uint64(sn.l1Size)*8, "the L1 table of snapshot "+sn.id); err != nil {
					return err
				}
			}
		}
	}
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
	for _, sn := range c.snapshots {
		if sn.l1Off&(c.cs-1) != 0 {
			f := finding(KindCorruption, ProblemSnapshot, "ERROR snapshot %s (%s) l1_offset=%s: L1 table is not cluster aligned; snapshot table entry corrupted", sn.id, sn.name, hexAlt(sn.l1Off))
			f.Offset = int64(sn.l1Off)
			c.report(f)
			continue
		}
		if sn.l1Size > maxL1Entries {
			c.report(finding(KindCorruption, ProblemSnapshot, "ERROR snapshot %s (%s) l1_size=%s: L1 table is too large; snapshot table entry corrupted", sn.id, sn.name, hexAlt(uint64(sn.l1Size))))
			continue
		}
		if err := c.checkL1(sn.l1Off, uint64(sn.l1Size), false, fix); err != nil {
			return err
		}
	}
	c.inc(h.SnapshotsOffset, c.snapshotsSize)
	c.inc(h.RefcountTableOffset, c.reftableN*8)
	if h.CryptMethod == 2 {
		if e := c.ext(image.ExtCrypto); e != nil && len(e.data) >= 16 {
			c.inc(binary.BigEndian.Uint64(e.data), binary.BigEndian.Uint64(e.data[8:]))
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

// maxExtend bounds how far beyond its end a repair extends the file to
// bring a table back inside it. (A variable for the fuzz tests, which use
// in-memory files.)
var maxExtend uint64 = 64 << 20

// extendOver repairs a table that lies one cluster or more beyond the end
// of the file (a truncated file): the file is extended with zeroes over
// it, so that the table reads as empty and is counted, as QEMU does for a
// refcount block outside the image. Growing a file is always safe.
func (c *checker) extendOver(off, size uint64, what string) error {
	if size == 0 || !c.beyondEOF(off, size) || off+size < off || off+size > c.fileSize+maxExtend {
		return nil
	}
	end := (off + size + c.cs - 1) &^ (c.cs - 1)
	if err := c.f.Truncate(int64(end)); err != nil {
		return c.ioError(err, "extending the file to %d bytes", end)
	}
	c.wrote = true
	c.res.changed = true
	f := finding(KindCorruption, ProblemBeyondEOF, "Repairing %s at 0x%x lies beyond the end of the file (%d bytes); the file is extended to %d bytes, the table reads as zeroes", what, off, c.fileSize, end)
	f.Offset, f.Repaired = int64(off), true
	c.report(f)
	c.fileSize = end
	return c.syncWrites()
}

// dropLostSnapshots repairs a snapshot table lying one cluster or more
// beyond the end of the file (a truncated file): the snapshots are gone, so
// the header stops listing them (their clusters are then leaks).
func (c *checker) dropLostSnapshots() error {
	h := c.hdr
	if h.NbSnapshots == 0 || !c.beyondEOF(h.SnapshotsOffset, c.snapshotsSize) || c.headerShared {
		return nil
	}
	f := finding(KindCorruption, ProblemSnapshot, "Repairing the snapshot table at 0x%x lies beyond the end of the file (%d bytes); its %d snapshots are dropped", h.SnapshotsOffset, c.fileSize, h.NbSnapshots)
	f.Offset, f.Repaired = int64(h.SnapshotsOffset), true
	c.report(f)
	var b [12]byte
	if err := c.write(b[:], 60); err != nil {
		return err
	}
	if err := c.syncWrites(); err != nil {
		return err
	}
	h.NbSnapshots, h.SnapshotsOffset = 0, 0
	c.snapshots, c.snapshotsSize, c.snapCorruption = nil, 0, 0
	return nil
}

// checkL1 counts an L1 table and everything it refers to (QEMU's
// check_refcounts_l1). active is true for the header's L1 table.
func (c *checker) checkL1(off, size uint64, active bool, fix Mode) error {
	if size == 0 {
		return nil
	}
	c.inc(off, size*8)
	c.tableRef(&c.l1Refs, off, size*8)
	l1, err := c.readEntries(off, size)
	if err != nil {
		return err
	}
	if active {
		c.l1 = l1
	}
	// A table that is also something else is not repaired.
	repair := fix&repairErrors != 0 && c.writable(off, size*8)
	for i, e := range l1 {
		if e == 0 {
			continue
		}
		eoff := off + uint64(i)*8
		if e&image.L1ReservedMask != 0 {
			f := finding(KindCorruption, ProblemL1Reserved, "ERROR found L1 entry with reserved bits set: %x", e)
			if repair {
				f.Msg = fmt.Sprintf("Repairing L1 entry with reserved bits set: %x (bits cleared)", e)
			}
			f.Offset = int64(eoff)
			f.Repaired = repair
			c.report(f)
			if repair {
				e &^= image.L1ReservedMask
				if err := c.setL1(off, uint64(i), e, l1, active); err != nil {
					return err
				}
				if e == 0 {
					continue
				}
			}
		}
		l2off := e & image.L1OffsetMask
		if repair && l2off == 0 {
			// QEMU would read the header cluster as the L2 table.
			f := finding(KindCorruption, ProblemL1Reserved, "Repairing L1 entry %d: %x has no L2 table offset; entry cleared", i, e)
			f.Offset, f.Repaired = int64(eoff), true
			c.report(f)
			if err := c.setL1(off, uint64(i), 0, l1, active); err != nil {
				return err
			}
			continue
		}
		if what := c.intoMetadata(l2off, c.cs); what != "" && l2off&(c.cs-1) == 0 {
			if repair {
				f := finding(KindCorruption, ProblemEntryIntoMetadata, "Repairing L1 entry %d: its L2 table offset 0x%x lies in %s; entry cleared", i, l2off, what)
				f.Offset, f.Repaired = int64(eoff), true
				c.report(f)
				if err := c.setL1(off, uint64(i), 0, l1, active); err != nil {
					return err
				}
				continue
			}
			if c.metadata == nil {
				// A read-only pass counts the reference and walks the
				// "L2 table" as QEMU does; none of it is a reason to
				// keep a repair from writing a table (see sharedTables).
				c.noteIntoMeta(l2off, c.cs)
				c.inc(l2off, c.cs)
				if active && c.inlineCopied && l2off != 0 {
					c.checkL1Copied(uint64(i), e)
				}
				c.walkingGarbage = true
				err := c.checkL2(l2off, uint64(i), active, fix&^repairErrors)
				c.walkingGarbage = false
				if err != nil {
					return err
				}
				continue
			}
		}
		if repair && (l2off&(c.cs-1) != 0 || c.beyondEOF(l2off, c.cs)) {
			c.deferredL1 = append(c.deferredL1, deferredL1{tableOff: off, index: uint64(i), entry: e, active: active})
			continue
		}
		c.inc(l2off, c.cs)
		c.tableRef(&c.l2Refs, l2off, c.cs)
		if l2off&(c.cs-1) != 0 {
			f := finding(KindCorruption, ProblemL1Unaligned, "ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted", l2off)
			f.Offset = int64(l2off)
			c.report(f)
		}
		if active && c.inlineCopied && l2off != 0 {
			c.checkL1Copied(uint64(i), e)
		}
		l2fix := fix
		if !repair {
			l2fix &^= repairErrors
		}
		if err := c.checkL2(l2off, uint64(i), active, l2fix); err != nil {
			return err
		}
	}
	return nil
}

// setL1 rewrites entry i of the L1 table at off.
func (c *checker) setL1(off, i, e uint64, l1 []uint64, active bool) error {
	l1[i] = e
	if active && c.l1 != nil && i < uint64(len(c.l1)) {
		c.l1[i] = e
	}
	return c.writeU64(off+i*8, e)
}

// l2Entry decodes entry j of an L2 table.
func (c *checker) l2Entry(t []byte, j uint64) (e, bm uint64) {
	o := j * c.entSize
	e = binary.BigEndian.Uint64(t[o:])
	if c.extL2 {
		bm = binary.BigEndian.Uint64(t[o+8:])
	}
	return e, bm
}

// setL2 rewrites entry j of the L2 table at l2off, in t and in the file.
func (c *checker) setL2(t []byte, l2off, j, e, bm uint64) error {
	o := j * c.entSize
	binary.BigEndian.PutUint64(t[o:], e)
	b := t[o : o+8]
	if c.extL2 {
		binary.BigEndian.PutUint64(t[o+8:], bm)
		b = t[o : o+16]
	}
	return c.write(b, l2off+o)
}

// zeroEntry returns the entry (and bitmap) that makes a cluster read as
// zeroes without any host cluster: the zero flag in version 3, the
// subcluster zero bits with extended L2 entries, unallocated in version 2.
func (c *checker) zeroEntry(bm uint64) (uint64, uint64) {
	switch {
	case c.extL2:
		return 0, bitmapAllZeroes
	case c.hdr.Version >= 3:
		return image.OflagZero, 0
	}
	return 0, 0
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
	repair := fix&repairErrors != 0 && c.writable(l2off, c.cs)
	meta := c.metaSetInUse()
	frag := active
	zoned := active && c.z != nil && c.z.wp != nil
	var next uint64
	for j := uint64(0); j < c.l2Ents; j++ {
		e, bm := c.l2Entry(t, j)
		if e == 0 && bm == 0 {
			continue
		}
		guest := (l1i*c.l2Ents + j) << c.cb
		typ := c.clusterType(e)
		if typ != ctCompressed && e&l2StdReservedMask != 0 {
			f := finding(KindCorruption, ProblemL2Reserved, "ERROR found l2 entry with reserved bits set: %x", e)
			if repair {
				f.Msg = fmt.Sprintf("Repairing l2 entry with reserved bits set: %x (bits cleared)", e)
			}
			f.Offset, f.Guest, f.Repaired = int64(l2off+j*c.entSize), int64(guest), repair
			c.report(f)
			if repair {
				e &^= l2StdReservedMask
				if err := c.setL2(t, l2off, j, e, bm); err != nil {
					return err
				}
				typ = c.clusterType(e)
			}
		}
		switch typ {
		case ctCompressed:
			coff, csize := c.compressedRange(e)
			if e&image.OflagCopied != 0 {
				f := finding(KindCorruption, ProblemCompressedCopied, "ERROR: coffset=0x%x: copied flag must never be set for compressed clusters", coff)
				if repair {
					f.Msg = fmt.Sprintf("Repairing coffset=0x%x: copied flag must never be set for compressed clusters (flag cleared)", coff)
				}
				f.Offset, f.Guest, f.Repaired = int64(coff), int64(guest), repair
				c.report(f)
				e &^= image.OflagCopied
				if repair {
					if err := c.setL2(t, l2off, j, e, bm); err != nil {
						return err
					}
				}
			}
			if bm != 0 {
				f := finding(KindCorruption, ProblemSubclusterBitmap, "%s compressed cluster %d with non-zero subcluster allocation bitmap, entry=0x%x", verb(repair), j, e)
				f.Offset, f.Guest, f.Repaired = int64(coff), int64(guest), repair
				c.report(f)
				if !repair {
					break
				}
				bm = 0
				if err := c.setL2(t, l2off, j, e, bm); err != nil {
					return err
				}
			}
			if repair && c.beyondEOF(coff, csize) {
				if err := c.clearBeyondEOF(t, l2off, j, guest, coff, csize, bm); err != nil {
					return err
				}
				continue
			}
			if !meta.has(coff>>c.cb) && !meta.has((coff+csize-1)>>c.cb) {
				// not into metadata
			} else if done, err := c.checkIntoMeta(t, l2off, j, guest, coff, csize, bm, repair); err != nil || done {
				if err != nil {
					return err
				}
				continue
			}
			if zoned {
				if done, err := c.checkBeyondWP(t, l2off, j, guest, coff, csize, repair && c.z.repair); err != nil || done {
					if err != nil {
						return err
					}
					continue
				}
			}
			c.inc(coff, csize)
			if frag {
				c.res.AllocatedClusters++
				c.res.CompressedClusters++
				c.res.FragmentedClusters++
			}
		case ctZeroAlloc, ctNormal:
			off := e & image.L2OffsetMask
			if (bm>>32)&bm != 0 {
				f := finding(KindCorruption, ProblemSubclusterBitmap, "%s offset=%x: Allocated cluster has corrupted subcluster allocation bitmap", verb(repair), off)
				f.Offset, f.Guest, f.Repaired = int64(off), int64(guest), repair
				c.report(f)
				if repair {
					bm &^= (bm & bitmapAllAlloc) << 32
					if err := c.setL2(t, l2off, j, e, bm); err != nil {
						return err
					}
				}
			}
			if !meta.has(off >> c.cb) {
				// not into metadata
			} else if done, err := c.checkIntoMeta(t, l2off, j, guest, off, c.cs, bm, repair); err != nil || done {
				if err != nil {
					return err
				}
				continue
			}
			if off&(c.cs-1) != 0 {
				contains := e&image.OflagZero == 0
				if c.extL2 {
					contains = bm&bitmapAllAlloc != 0
				}
				if !contains {
					f := finding(KindCorruption, ProblemL2Unaligned, "%s offset=%x: Preallocated cluster is not properly aligned; L2 entry corrupted.", verb(repair), off)
					f.Offset, f.Guest, f.Repaired = int64(off), int64(guest), repair
					c.report(f)
					if repair {
						ze, zbm := c.zeroEntry(bm)
						if c.extL2 {
							zbm = (bm | bm<<32) & bitmapAllZeroes
						}
						if err := c.setL2(t, l2off, j, ze, zbm); err != nil {
							return err
						}
						continue
					}
				} else if repair {
					c.deferredL2 = append(c.deferredL2, deferredL2{l2Off: l2off, index: j, entry: e, bitmap: bm, active: active, guest: guest})
					continue
				} else {
					f := finding(KindCorruption, ProblemL2Unaligned, "ERROR offset=%x: Data cluster is not properly aligned; L2 entry corrupted.", off)
					f.Offset, f.Guest = int64(off), int64(guest)
					c.report(f)
				}
			}
			if repair && c.beyondEOF(off, c.cs) {
				if err := c.clearBeyondEOF(t, l2off, j, guest, off, c.cs, bm); err != nil {
					return err
				}
				continue
			}
			if zoned && off&(c.cs-1) == 0 && (typ == ctZeroAlloc || c.extL2 && bm&bitmapAllAlloc == 0) {
				// No data in it: what the reference's zone reset leaves.
				reclaim := fix&RepairLeaks != 0 && c.writable(l2off, c.cs)
				if done, err := c.zeroBeyondWP(t, l2off, j, guest, off, bm, reclaim); err != nil || done {
					if err != nil {
						return err
					}
					continue
				}
			} else if zoned && off&(c.cs-1) == 0 {
				if done, err := c.checkBeyondWP(t, l2off, j, guest, off, c.cs, repair && c.z.repair); err != nil || done {
					if err != nil {
						return err
					}
					continue
				}
			}
			if frag {
				c.res.AllocatedClusters++
				if next != 0 && off != next {
					c.res.FragmentedClusters++
				}
				next = off + c.cs
			}
			c.inc(off, c.cs)
		case ctUnallocated:
			if bm&bitmapAllAlloc != 0 {
				f := finding(KindCorruption, ProblemSubclusterBitmap, "ERROR: Unallocated cluster has non-zero subcluster allocation map")
				if repair {
					f.Msg = "Repairing unallocated cluster with non-zero subcluster allocation map (subclusters now read as zeroes)"
				}
				f.Guest, f.Repaired = int64(guest), repair
				c.report(f)
				if repair {
					bm = (bm | bm<<32) & bitmapAllZeroes
					if err := c.setL2(t, l2off, j, e, bm); err != nil {
						return err
					}
				}
			}
		}
		if active && c.inlineCopied && (typ == ctNormal || typ == ctZeroAlloc) {
			c.checkL2Copied(e)
		}
	}
	return nil
}

// clearBeyondEOF makes an entry whose cluster lies beyond the end of the
// file read as zeroes (the data is gone).
func (c *checker) clearBeyondEOF(t []byte, l2off, j, guest, off, size, bm uint64) error {
	f := finding(KindCorruption, ProblemBeyondEOF, "Repairing offset=%x: Cluster of guest offset 0x%x lies beyond the end of the file; L2 entry cleared.", off, guest)
	f.Offset, f.Guest, f.Repaired = int64(off), int64(guest), true
	c.report(f)
	ze, zbm := c.zeroEntry(bm)
	return c.setL2(t, l2off, j, ze, zbm)
}

// checkL1Copied checks OFLAG_COPIED of an active L1 entry against the
// stored refcount of its L2 table, for the report after the compare.
func (c *checker) checkL1Copied(i, e uint64) {
	l2off := e & image.L1OffsetMask
	rc, ok := c.storedAt(l2off >> c.cb)
	if !ok || (rc == 1) == (e&image.OflagCopied != 0) {
		return
	}
	f := finding(KindCorruption, ProblemCopied, "ERROR OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d", i, e, rc)
	f.Offset, f.Cluster = int64(l2off), int64(l2off>>c.cb)
	c.copied = append(c.copied, f)
	c.copiedCorrupt++
}

// checkL2Copied checks OFLAG_COPIED of an active data cluster entry.
func (c *checker) checkL2Copied(e uint64) {
	off := e & image.L2OffsetMask
	rc, ok := c.storedAt(off >> c.cb)
	if !ok || (rc == 1) == (e&image.OflagCopied != 0) {
		return
	}
	f := finding(KindCorruption, ProblemCopied, "ERROR OFLAG_COPIED data cluster: l2_entry=%x refcount=%d", e, rc)
	f.Offset, f.Cluster = int64(off), int64(off>>c.cb)
	c.copied = append(c.copied, f)
	c.copiedCorrupt++
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
		l2off := d.entry & image.L1OffsetMask
		eoff := d.tableOff + d.index*8
		if c.beyondEOF(l2off, c.cs) {
			f := finding(KindCorruption, ProblemBeyondEOF, "Repairing l2_offset=%x: L2 table lies beyond the end of the file; L1 entry %d cleared", l2off, d.index)
			f.Offset, f.Repaired = int64(l2off), true
			c.report(f)
			if err := c.writeU64(eoff, 0); err != nil {
				return err
			}
			c.setActiveL1(d, 0)
			continue
		}
		a := l2off &^ (c.cs - 1)
		if c.canRealign(a) {
			ne := a | d.entry&image.OflagCopied
			f := finding(KindCorruption, ProblemL1Unaligned, "Repairing l2_offset=%x: Table is not cluster aligned; L1 entry realigned to %x", l2off, a)
			f.Offset, f.Repaired = int64(l2off), true
			c.report(f)
			if err := c.writeU64(eoff, ne); err != nil {
				return err
			}
			c.setActiveL1(d, ne)
			c.inc(a, c.cs)
			c.tableRef(&c.l2Refs, a, c.cs)
			if err := c.checkL2(a, d.index, d.active, fix); err != nil {
				return err
			}
			continue
		}
		f := finding(KindCorruption, ProblemL1Unaligned, "Repairing l2_offset=%x: Table is not cluster aligned; L1 entry %d cleared", l2off, d.index)
		f.Offset, f.Repaired = int64(l2off), true
		c.report(f)
		if err := c.writeU64(eoff, 0); err != nil {
			return err
		}
		c.setActiveL1(d, 0)
	}
	l2s := c.deferredL2
	c.deferredL2 = nil
	for _, d := range l2s {
		off := d.entry & image.L2OffsetMask
		a := off &^ (c.cs - 1)
		t := make([]byte, c.cs)
		if err := c.readAt(t, d.l2Off); err != nil {
			return err
		}
		beyond := d.active && c.z != nil && c.z.wp != nil && c.z.beyond(d.guest, c.cs) >= 0
		if !beyond && c.canRealign(a) {
			ne := d.entry&^image.L2OffsetMask | a
			f := finding(KindCorruption, ProblemL2Unaligned, "Repairing offset=%x: Data cluster is not properly aligned; L2 entry realigned to %x.", off, a)
			f.Offset, f.Guest, f.Repaired = int64(off), int64(d.guest), true
			c.report(f)
			if err := c.setL2(t, d.l2Off, d.index, ne, d.bitmap); err != nil {
				return err
			}
			c.inc(a, c.cs)
			continue
		}
		f := finding(KindCorruption, ProblemL2Unaligned, "Repairing offset=%x: Data cluster is not properly aligned; L2 entry cleared, the cluster at guest offset 0x%x now reads as zeroes.", off, d.guest)
		f.Offset, f.Guest, f.Repaired = int64(off), int64(d.guest), true
		c.report(f)
		ze, zbm := c.zeroEntry(d.bitmap)
		if c.extL2 {
			zbm = (d.bitmap | d.bitmap<<32) & bitmapAllZeroes
		}
		if err := c.setL2(t, d.l2Off, d.index, ze, zbm); err != nil {
			return err
		}
	}
	return nil
}

func (c *checker) setActiveL1(d deferredL1, e uint64) {
	if d.active && d.index < uint64(len(c.l1)) {
		c.l1[d.index] = e
	}
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

// readSnapshots reads the snapshot table (qcow2_check_read_snapshot_table
// and qcow2_do_read_snapshots). A table that cannot be read stops the
// check; incomplete entries are corruptions.
func (c *checker) readSnapshots() error {
	h := c.hdr
	n := uint64(h.NbSnapshots)
	if n == 0 {
		return nil
	}
	start := h.SnapshotsOffset
	pos := start
	var hb [40]byte
	for i := uint64(0); i < n; i++ {
		pos = (pos + 7) &^ 7
		if err := c.readAt(hb[:], pos); err != nil {
			return err
		}
		be := binary.BigEndian
		sn := snapshot{
			l1Off:  be.Uint64(hb[0:]),
			l1Size: be.Uint32(hb[8:]),
			extra:  be.Uint32(hb[36:]),
		}
		idLen, nameLen := uint64(be.Uint16(hb[12:])), uint64(be.Uint16(hb[14:]))
		pos += 40
		if sn.extra > maxSnapshotExtra {
			msg := fmt.Sprintf("Too much extra metadata in snapshot table entry %d", i)
			c.report(finding(KindCheckError, ProblemSnapshot, "ERROR failed to read the snapshot table: %s", msg))
			return fmt.Errorf("%s", msg)
		}
		pos += uint64(sn.extra)
		names := make([]byte, idLen+nameLen)
		if err := c.readAt(names, pos); err != nil {
			return err
		}
		sn.id, sn.name = string(names[:idLen]), string(names[idLen:])
		pos += idLen + nameLen
		if pos-start > maxSnapshotsSize {
			msg := "Snapshot table is too big"
			c.report(finding(KindCheckError, ProblemSnapshot, "ERROR failed to read the snapshot table: %s", msg))
			return fmt.Errorf("%s", msg)
		}
		c.snapshots = append(c.snapshots, sn)
	}
	c.snapshotsSize = pos - start
	if h.Version >= 3 {
		for i, sn := range c.snapshots {
			if sn.extra < 16 {
				c.res.Findings = append(c.res.Findings, finding(KindCorruption, ProblemSnapshot, "ERROR snapshot table entry %d is incomplete", i))
				c.snapCorruption++
			}
		}
	}
	return nil
}

// checkBitmaps counts the bitmap directory, the bitmap tables and the
// bitmap data clusters (qcow2_check_bitmaps_refcounts). The directory was
// validated when the image was opened (loadBitmaps).
func (c *checker) checkBitmaps() error {
	if c.bitmaps == nil {
		return nil
	}
	c.inc(c.bitmapDirOff, c.bitmapDirSize)
	for _, bm := range c.bitmaps {
		c.inc(bm.tableOff, bm.tableSize*8)
		tab, err := c.readEntries(bm.tableOff, bm.tableSize)
		if err != nil {
			return err
		}
		for i, te := range tab {
			off := te & bmeOffsetMask
			if te&bmeReservedMask != 0 || (off != 0 && (te&1 != 0 || off&(c.cs-1) != 0)) {
				f := finding(KindCorruption, ProblemBitmaps, "ERROR bitmap '%s': invalid bitmap table entry %d: 0x%x", bm.name, i, te)
				f.Offset = int64(bm.tableOff + uint64(i)*8)
				c.report(f)
				continue
			}
			if off != 0 {
				c.inc(off, c.cs)
			}
		}
	}
	return nil
}

// Bitmap table entries.
const (
	bmeOffsetMask   = 0x00fffffffffffe00
	bmeReservedMask = 0xff000000000001fe
)

type bitmap struct {
	name      string
	tableOff  uint64
	tableSize uint64 // entries
}

// loadBitmaps validates the bitmaps extension and the bitmap directory as
// QEMU does when it opens an image (qcow2_read_extensions and
// bitmap_list_load): a broken directory makes the image unusable. Without
// the autoclear bit the bitmaps are inconsistent and ignored (their
// clusters are then leaked, as qemu-img check reports them).
func (c *checker) loadBitmaps() error {
	e := c.ext(image.ExtBitmaps)
	if e == nil || c.hdr.AutoclearFeatures&image.AutoclearBitmaps == 0 {
		return nil
	}
	if len(e.data) != 24 {
		return fmt.Errorf("bitmaps_ext: Invalid extension length")
	}
	be := binary.BigEndian
	nb := be.Uint32(e.data[0:])
	dirSize := be.Uint64(e.data[8:])
	dirOff := be.Uint64(e.data[16:])
	switch {
	case be.Uint32(e.data[4:]) != 0:
		return fmt.Errorf("bitmaps_ext: Reserved field is not zero")
	case nb > 65535:
		return fmt.Errorf("bitmaps_ext: Image has %d bitmaps, exceeding the QEMU supported maximum of 65535", nb)
	case nb == 0:
		return fmt.Errorf("found bitmaps extension with zero bitmaps")
	case dirOff&(c.cs-1) != 0:
		return fmt.Errorf("bitmaps_ext: invalid bitmap directory offset")
	case dirSize > 1024*65535:
		return fmt.Errorf("bitmaps_ext: bitmap directory size (%d) exceeds the maximum supported size (%d)", dirSize, 1024*65535)
	case dirSize == 0:
		return fmt.Errorf("Requested bitmap directory size is zero")
	}
	// Bytes beyond the end of the file read as zeroes.
	dir := make([]byte, dirSize)
	if err := c.readAt(dir, dirOff); err != nil {
		return err
	}
	var bms []bitmap
	pos := uint64(0)
	for pos < dirSize {
		if pos+24 > dirSize {
			return fmt.Errorf("Broken bitmap directory")
		}
		d := dir[pos:]
		if uint32(len(bms)) >= nb {
			return fmt.Errorf("More bitmaps found than specified in header extension")
		}
		tOff := be.Uint64(d[0:])
		tSize := uint64(be.Uint32(d[8:]))
		flags := be.Uint32(d[12:])
		typ, gran := d[16], d[17]
		nameLen := uint64(be.Uint16(d[18:]))
		extra := uint64(be.Uint32(d[20:]))
		esize := (24 + extra + nameLen + 7) &^ 7
		if pos+esize > dirSize {
			return fmt.Errorf("Broken bitmap directory")
		}
		if extra != 0 {
			return fmt.Errorf("Bitmap extra data is not supported")
		}
		name := string(dir[pos+24 : pos+24+nameLen])
		phys := tSize * c.cs
		size := c.hdr.Size
		if tSize == 0 || tOff == 0 || tOff&(c.cs-1) != 0 || tSize > 0x8000000 || gran > 31 || gran < 9 ||
			flags&^7 != 0 || nameLen > 1023 || typ != 1 ||
			phys > 0x20000000 ||
			(flags&1 == 0 && size > phys*8<<gran) {
			return fmt.Errorf("Bitmap '%s' doesn't satisfy the constraints", name)
		}
		bms = append(bms, bitmap{name: name, tableOff: tOff, tableSize: tSize})
		pos += esize
	}
	if uint32(len(bms)) != nb {
		return fmt.Errorf("Less bitmaps found than specified in header extension")
	}
	c.bitmaps, c.bitmapDirOff, c.bitmapDirSize = bms, dirOff, dirSize
	return nil
}
