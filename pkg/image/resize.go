package image

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Resize errors, worded as qemu-img's.
var (
	// ErrShrinkNotAllowed: a smaller size without ResizeOptions.Shrink.
	ErrShrinkNotAllowed = errors.New("Use the --shrink option to perform a shrink operation.")
	// ErrV2Snapshots: qcow2 version 2 images with snapshots keep their size.
	ErrV2Snapshots = errors.New("Can't resize a v2 image which has snapshots")
	// ErrSizeUnaligned: qcow2 sizes are whole 512-byte sectors.
	ErrSizeUnaligned = errors.New("The new size must be a multiple of 512")
)

// ResizeOptions adjust Resize.
type ResizeOptions struct {
	// Shrink allows a size smaller than the current one: everything
	// beyond the new end is discarded.
	Shrink bool
	// Tables replace metadata tables of a layer above this package in the
	// same atomic switch (the zoned write-pointer table).
	Tables []TableUpdate
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
	if size < old && !o.Shrink {
		return ErrShrinkNotAllowed
	}
	if img.hdr.Version < 3 && img.hdr.NbSnapshots > 0 && size != old {
		return ErrV2Snapshots
	}
	if err := img.flush(); err != nil {
		return err
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
	} else if size >= old && len(o.Tables) == 0 {
		// A growth within the L1 table: only the size changes, in one
		// write of the header's size field (in the first sector), as
		// qcow2_co_truncate grows in place; the refcount structure
		// stays where it is.
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], size)
		if err := img.writeSync(b[:], HdrSize); err != nil {
			return err
		}
		img.hdr.Size = size
		return img.zeroPastOldEnd(old, size)
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
	return img.zeroPastOldEnd(old, size)
}

// zeroPastOldEnd makes the bytes of the last cluster beyond an old size
// that was not a whole number of clusters read as zeroes after a growth:
// they are part of the disk now.
func (img *Image) zeroPastOldEnd(old, size uint64) error {
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
