package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
)

// Resize errors, worded as qemu-img's.
var (
	// ErrShrinkNotAllowed: a smaller size without ResizeOptions.Shrink.
	ErrShrinkNotAllowed = errors.New("Use the --shrink option to perform a shrink operation.")
	// ErrV2Snapshots: qcow2 version 2 images with snapshots keep their size.
	ErrV2Snapshots = errors.New("Can't resize a v2 image which has snapshots")
	// ErrSizeUnaligned: qcow2 sizes are whole 512-byte sectors.
	ErrSizeUnaligned = errors.New("The new size must be a multiple of 512")
	// ErrZeroAdded: the area a growth adds cannot be made to read as
	// zeroes over a longer backing file (version 2 images have no zero
	// clusters; a compressed cluster cannot be zeroed in part).
	ErrZeroAdded error = zeroAddedError{}
)

// zeroAddedError is ErrZeroAdded: ENOTSUP, worded as qemu-img's.
type zeroAddedError struct{}

func (zeroAddedError) Error() string {
	return "Failed to zero out new clusters: " + Strerror(syscall.ENOTSUP)
}

func (zeroAddedError) Unwrap() error { return syscall.ENOTSUP }

// ResizeOptions adjust Resize.
type ResizeOptions struct {
	// Shrink allows a size smaller than the current one: everything
	// beyond the new end is discarded.
	Shrink bool
	// Tables replace metadata tables of a layer above this package in the
	// same atomic switch (the zoned write-pointer table).
	Tables []TableUpdate
	// Preallocation allocates the added area as qemu-img resize
	// --preallocation=MODE does (growing only).
	Preallocation PreallocMode
}

// Resize changes the virtual disk size to size bytes (a multiple of 512).
//
// Growing extends the L1 table when the new size needs more entries: the
// new table is written to new clusters, and one header write switches the
// size and the table (txn). Shrinking drops every cluster wholly beyond
// the new end from the active image (snapshots keep theirs), in copies of
// the L2 tables that change, and switches the same way. A crash leaves the
// old or the new size, never a mixture.
func (img *Image) Resize(size uint64, o ResizeOptions) error {
	img.lock()
	defer img.unlock()
	if err := img.writable(); err != nil {
		return err
	}
	if size%512 != 0 {
		return ErrSizeUnaligned
	}
	old := img.hdr.Size
	if size < old && o.Preallocation != PreallocOff {
		return ErrPreallocShrink
	}
	if size < old && !o.Shrink {
		return ErrShrinkNotAllowed
	}
	if img.hdr.Version < 3 && img.hdr.NbSnapshots > 0 && size != old {
		return ErrV2Snapshots
	}
	// A backing file longer than the old size would show through in the
	// added area: it is made to read as zeroes (QEMU's truncate with
	// BDRV_REQ_ZERO_WRITE), which version 2 images cannot.
	zeroNew := size > old && img.backingLongerThan(old)
	if zeroNew && img.hdr.Version < 3 {
		return ErrZeroAdded
	}
	if err := img.flush(); err != nil {
		return err
	}
	if size >= old && len(o.Tables) == 0 {
		// Growing: QEMU's way, each step crash-safe on its own (a crash
		// leaks clusters at worst). A larger L1 table is written to new
		// clusters, the header switched to it (one write in the first
		// sector), the old one freed; then the size, one header field.
		if need := ceilDiv(size, img.cs*img.l2Ents); need > img.l1.len() {
			if err := img.growL1(need, size); err != nil {
				return err
			}
		}
		if zeroNew {
			// Durable before the size: a crash never shows the backing
			// file's data in the added area.
			if err := img.prepareAdded(old, size, o.Preallocation); err != nil {
				return err
			}
		}
		if err := img.writeHeaderField(HdrSize, 8, size); err != nil {
			return err
		}
		if err := img.f.Sync(); err != nil {
			return err
		}
		img.hdr.Size = size
		if zeroNew {
			return nil // prepareAdded did what afterGrow does
		}
		return img.afterGrow(old, size, o)
	}
	t, err := img.beginTxn()
	if err != nil {
		return err
	}
	l1 := img.l1.slice()
	changed, err := t.dropBeyond(l1, size)
	if err != nil {
		return err
	}
	need := ceilDiv(size, img.cs*img.l2Ents)
	if changed || need > uint64(len(l1)) {
		if err := t.inc(img.hdr.L1TableOffset, img.l1.len()*8, -1); err != nil {
			return err
		}
		if err := t.setL1(l1, size); err != nil {
			return err
		}
	} else {
		t.size = size
	}
	t.tables = o.Tables
	if err := t.commit(); err != nil {
		return err
	}
	if size < old {
		// The tables the shrink rewrote, where they are now.
		moved := make([]TableUpdate, len(o.Tables))
		for i, u := range o.Tables {
			u.OldOff, u.OldLen = t.placed[i], uint64(len(u.Data))
			moved[i] = u
		}
		return img.giveBackTail(moved)
	}
	return img.afterGrow(old, size, o)
}

// backingLongerThan reports whether the backing file is longer than n
// bytes (counted in whole 512-byte sectors, as QEMU counts it).
func (img *Image) backingLongerThan(n uint64) bool {
	z, ok := img.backing.(*zeroPastEnd)
	return ok && uint64(z.size+511)/512*512 > n
}

// prepareAdded makes [old, size), the area a growth over a longer
// backing file adds, read as zeroes before the header says size, as
// QEMU's qcow2_co_truncate with BDRV_REQ_ZERO_WRITE does: preallocated
// as mode says (falloc and full allocate every new subcluster as data,
// which the file reads as zeroes); else (off, metadata: after the
// metadata is preallocated) zero clusters and zero subclusters from the
// first subcluster boundary at or after old (no data written, allocations
// kept) and the bytes before it written with zeroes. Then flushed and
// synced. Nothing beyond old is visible until the size switches: a crash
// before leaves the old size, and at worst leaked clusters.
func (img *Image) prepareAdded(old, size uint64, mode PreallocMode) error {
	img.hdr.Size = size // the writes below address the added area
	defer func() { img.hdr.Size = old }()
	if mode == PreallocFalloc || mode == PreallocFull {
		if err := img.preallocData(old, size, mode, true); err != nil {
			return err
		}
		return img.flush()
	}
	if err := img.preallocate(old, size, mode); err != nil {
		return err
	}
	zs := roundUp(old, img.subSize)
	if size > zs {
		ok, err := img.zeroizeSubclusters(zs, size, zeroKeep)
		if err != nil {
			return err
		}
		if !ok {
			return ErrZeroAdded
		}
	}
	if zs > old {
		if err := img.writeZeroBytes(old, min(zs, size)); err != nil {
			return err
		}
	}
	return img.flush()
}

// growL1 replaces the active L1 table by one of n entries (QEMU's
// qcow2_grow_l1_table with an exact size): allocated first fit, written
// (n*8 bytes) and synced with its refcounts, then the header's L1 size and
// offset are switched in one write and synced, and the old table freed.
func (img *Image) growL1(n, size uint64) error {
	if n*8 > MaxL1Bytes {
		return fmt.Errorf("Failed to grow the L1 table: File too large (a virtual size of %d bytes needs %d L1 entries, at most %d fit: %w)", size, n, MaxL1Bytes/8, syscall.EFBIG)
	}
	oldOff, oldLen := img.hdr.L1TableOffset, img.l1.len()
	off, err := img.rc.alloc(n * 8)
	if err != nil {
		return err
	}
	if err := img.rc.writeBlocksSync(); err != nil {
		return err
	}
	buf := make([]byte, n*8)
	for i, e := range img.l1.nonZero() {
		binary.BigEndian.PutUint64(buf[i*8:], e)
	}
	if _, err := img.f.WriteAt(buf, int64(off)); err != nil {
		return err
	}
	if err := img.f.Sync(); err != nil {
		return err
	}
	var hb [12]byte
	binary.BigEndian.PutUint32(hb[0:], uint32(n))
	binary.BigEndian.PutUint64(hb[4:], off)
	if _, err := img.f.WriteAt(hb[:], HdrL1Size); err != nil {
		return err
	}
	if err := img.f.Sync(); err != nil {
		return err
	}
	l1 := newSparseTable(n)
	for i, e := range img.l1.nonZero() {
		l1.set(i, e)
	}
	img.l1 = l1
	img.hdr.L1Size, img.hdr.L1TableOffset = uint32(n), off
	clear(img.l1Dirty)
	img.metaChanged()
	if oldLen > 0 {
		if err := img.rc.update(oldOff, oldLen*8, 1, true); err != nil {
			return err
		}
	}
	return img.rc.writeBlocksSync()
}

// afterGrow finishes a resize from old to size bytes once the new size is
// in place: the added area is preallocated as o says, and bytes of the old
// last cluster beyond the old end made to read as zeroes.
func (img *Image) afterGrow(old, size uint64, o ResizeOptions) error {
	if size > old && o.Preallocation != PreallocOff {
		// After the switch to the new size: a crash leaves the new size
		// with part of the area allocated, which reads the same.
		if err := img.preallocate(old, size, o.Preallocation); err != nil {
			return err
		}
		if err := img.flush(); err != nil {
			return err
		}
	}
	// A size that was not a whole number of clusters may leave bytes of
	// the last cluster beyond the old end: they must read as zeroes now
	// that they are part of the disk.
	if size > old && old%img.cs != 0 {
		end := min(size, roundUp(old, img.cs))
		g := old
		t, err := img.l2Table(g >> (img.cb + img.l2Bits))
		if err != nil {
			return err
		}
		if t != nil {
			e := img.entry(t, (g>>img.cb)&(img.l2Ents-1))
			if !img.readsZero(e, g&(img.cs-1), end-g) {
				if err := img.writeChunk(make([]byte, end-g), g); err != nil {
					return err
				}
				return img.flush()
			}
		}
	}
	return nil
}

// dropBeyond removes from the active L1 table l1 (changed in place) every
// reference to a cluster lying wholly at or beyond size bytes: whole L2
// tables beyond it are dropped with their data, and the L2 table across it
// is copied without the entries beyond. It reports whether l1 changed.
func (t *txn) dropBeyond(l1 []uint64, size uint64) (bool, error) {
	img := t.img
	span := img.cs * img.l2Ents
	firstCluster := ceilDiv(size, img.cs) // first cluster wholly beyond
	changed := false
	for i, e := range l1 {
		l2 := e & L1OffsetMask
		if l2 == 0 {
			continue
		}
		base := uint64(i) * span
		if base+span <= firstCluster*img.cs {
			continue // wholly inside the disk
		}
		tb, err := t.readTable(l2, fmt.Sprintf("the L2 table of L1 entry %d", i))
		if err != nil {
			return false, err
		}
		if base >= firstCluster*img.cs {
			if err := t.forEachRef(tb, -1); err != nil {
				return false, err
			}
			if err := t.inc(l2, t.cs, -1); err != nil {
				return false, err
			}
			l1[i], changed = 0, true
			continue
		}
		// The table straddles the new end: drop the entries beyond.
		from := firstCluster - base/img.cs
		cp := append([]byte(nil), tb...)
		dropped := make([]byte, len(tb))
		any := false
		for j := from; j < img.l2Ents; j++ {
			o := j * img.entSize
			if binary.BigEndian.Uint64(cp[o:]) != 0 || (img.extL2 && binary.BigEndian.Uint64(cp[o+8:]) != 0) {
				any = true
				copy(dropped[o:o+img.entSize], cp[o:o+img.entSize])
				clear(cp[o : o+img.entSize])
			}
		}
		if !any {
			continue
		}
		if err := t.forEachRef(dropped, -1); err != nil {
			return false, err
		}
		if err := t.inc(l2, t.cs, -1); err != nil {
			return false, err
		}
		off, err := t.allocWrite(cp)
		if err != nil {
			return false, err
		}
		if t.rc[off/t.cs] == 1 {
			off |= OflagCopied
		}
		l1[i], changed = off, true
	}
	return changed, nil
}

// giveBackTail cuts the file after its last cluster in use, as qemu-img
// resize --shrink does. The clusters a shrink dropped are free once it
// has committed, but the tables it rewrote (the L1 table, an L2 table
// across the new end, tables of layers above: tables) and its refcount
// structure went where clusters were free in both states, typically past
// them. A second transaction that changes nothing else moves the active
// L1 table, the unshared active L2 tables that have a free cluster below
// them, the tables, and the refcount structure into the lowest free
// clusters (first fit); then the file is truncated after the last cluster
// whose refcount is not zero, and synced. Each step is crash-safe: a
// crash leaves the file longer than it need be, never a reference beyond
// its end.
func (img *Image) giveBackTail(tables []TableUpdate) error {
	t, err := img.beginTxn()
	if err != nil {
		return err
	}
	l1 := img.l1.slice()
	for i, e := range l1 {
		l2 := L1Entry(e).Offset()
		if l2 == 0 || !L1Entry(e).Copied() || t.findFree(t.next, 1)*t.cs > l2 {
			continue
		}
		tb, err := t.readTable(l2, fmt.Sprintf("the L2 table of L1 entry %d", i))
		if err != nil {
			return err
		}
		off, err := t.allocWrite(tb)
		if err != nil {
			return err
		}
		if err := t.inc(l2, t.cs, -1); err != nil {
			return err
		}
		l1[i] = off | OflagCopied
	}
	if err := t.inc(img.hdr.L1TableOffset, img.l1.len()*8, -1); err != nil {
		return err
	}
	if err := t.setL1(l1, img.hdr.Size); err != nil {
		return err
	}
	t.tables = tables
	if err := t.commit(); err != nil {
		return err
	}
	last, err := img.rc.lastUsed()
	if err != nil {
		return err
	}
	fileSize, err := img.f.Size()
	if err != nil {
		return err
	}
	end := uint64(last+1) * img.cs
	if uint64(fileSize) <= end {
		return nil
	}
	if err := img.f.Truncate(int64(end)); err != nil {
		return err
	}
	return img.f.Sync()
}
