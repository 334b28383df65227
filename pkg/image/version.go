package image

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// VersionError is a compat change (Upgrade, Downgrade) refused before
// anything was written. Msg is qemu-img's wording where it has one.
type VersionError struct{ Msg string }

func (e *VersionError) Error() string { return e.Msg }

// ErrVersionChange is wrapped by every VersionError.
var ErrVersionChange = errors.New("the qcow2 version cannot be changed")

func (e *VersionError) Unwrap() error { return ErrVersionChange }

// VersionOptions adjust Upgrade and Downgrade.
type VersionOptions struct {
	// Progress, when set, is called with the work done of the total, as
	// QEMU's amend status callback: an upgrade reports 0, 1 and 2 of 2
	// steps (snapshot table, header); a downgrade each L1 entry (active,
	// then every snapshot's) whose zero clusters were looked at.
	Progress func(done, total int64)
}

func (o VersionOptions) progress(done, total int64) {
	if o.Progress != nil {
		o.Progress(done, total)
	}
}

// Upgrade makes a version 2 image version 3 (qemu-img amend -o compat=1.1,
// QEMU's qcow2_upgrade). Version 3 requires every snapshot table entry to
// hold at least the 64-bit VM state size and the disk size in its extra
// data: when one does not, the snapshot table is first rewritten with the
// 24 bytes QEMU defines in every entry (CompleteExtra), as one atomic
// transaction (txn). Then the header is switched to version 3 — header
// length 112, no feature bits, the feature name table — in one write of
// the first sector, or in the steps of SetBacking when the new header
// reaches into the second sector. A crash leaves a valid version 2 image
// (with the old or the completed snapshot table) or the version 3 one. An
// image of version 3 is left as it is.
func (img *Image) Upgrade(o VersionOptions) error {
	img.lock()
	defer img.unlock()
	if img.hdr.Version >= 3 {
		return img.writable()
	}
	entries, tableSize, err := img.snapshotsToChange()
	if err != nil {
		return err
	}
	o.progress(0, 2)
	incomplete := false
	for i := range entries {
		if len(entries[i].Extra) < 16 {
			incomplete = true
		}
	}
	if incomplete {
		t, err := img.beginTxn()
		if err != nil {
			return err
		}
		if err := t.setSnapshots(entries, tableSize); err != nil {
			return err
		}
		if err := t.commit(); err != nil {
			return fmt.Errorf("Failed to update the snapshot table: %w", err)
		}
	}
	o.progress(1, 2)
	old, oh, oexts, err := img.readHeaderState()
	if err != nil {
		return err
	}
	nh := *oh
	nh.Version = 3
	nh.HeaderLength = HeaderV3Size
	nh.IncompatibleFeatures, nh.CompatibleFeatures, nh.AutoclearFeatures = 0, 0, 0
	nh.RefcountOrder = 4
	nh.CompressionType = CompressionZlib
	nh.Extra = nil
	exts := img.headerExtensions(&nh, oexts)
	if err := img.switchHeader(old, &nh, exts, img.backingName, "Failed to update the image header"); err != nil {
		return err
	}
	img.hdr = nh
	img.setExtensions(&nh, exts)
	o.progress(2, 2)
	return nil
}

// headerExtensions orders the extensions as qcow2_update_header writes
// them: the backing format, the feature name table (version 3 with
// clusters above 4 KiB), then the others (oexts) in their order.
func (img *Image) headerExtensions(nh *Header, oexts []Extension) []Extension {
	var exts []Extension
	for _, e := range oexts {
		if e.Magic == ExtBackingFormat {
			exts = append(exts, e)
		}
	}
	if nh.Version >= 3 && img.cs > 4096 {
		exts = append(exts, Extension{Magic: ExtFeatureTable, Data: MarshalFeatureTable(defaultFeatures)})
	}
	for _, e := range oexts {
		if e.Magic != ExtBackingFormat && e.Magic != ExtFeatureTable {
			exts = append(exts, e)
		}
	}
	return exts
}

// Downgrade makes a version 3 image version 2 (qemu-img amend -o
// compat=0.10, QEMU's qcow2_downgrade). It is refused, before anything is
// written, when the image uses what version 2 cannot express: a refcount
// width other than 16 bits, an incompatible feature (extended L2 entries,
// the zoned format, a data file, zstd-compressed clusters), a snapshot
// whose disk size differs from the image's or whose VM state does not fit
// in 32 bits.
//
// Version 2 has no zero flag, so every zero cluster is first expanded
// (qcow2_expand_zero_clusters), in the active and the snapshots' L2
// tables: an unallocated zero cluster of an image without a backing file
// becomes unallocated, and a preallocated one referenced only there
// becomes a data cluster of zeroes (the cluster is zeroed, synced, then
// the flag cleared in place); both read the same before and after, so a
// crash between the writes is harmless. When a zero cluster needs a new
// cluster (a backing file would show through, or its preallocated cluster
// is shared), the L2 tables that change, the L1 tables pointing to them
// and the snapshot table are written to new clusters in one atomic
// transaction (txn). Then the header becomes the 72-byte version 2 header,
// without feature bits and the feature name table, in one atomic switch.
func (img *Image) Downgrade(o VersionOptions) error {
	img.lock()
	defer img.unlock()
	if img.hdr.Version < 3 {
		return img.writable()
	}
	entries, tableSize, err := img.snapshotsToChange()
	if err != nil {
		return err
	}
	if err := img.checkDowngrade(entries, img.hdr.Size, img.hdr.RefcountOrder); err != nil {
		return err
	}
	h := &img.hdr
	z, err := img.planZeroExpansion(entries, o)
	if err != nil {
		return err
	}
	if h.IncompatibleFeatures&IncompatCompression != 0 && z.compressed {
		return errZstdDowngrade
	}
	if err := img.expandZeros(z, entries, tableSize); err != nil {
		return fmt.Errorf("Failed to turn zero into data clusters: %w", err)
	}
	old, oh, oexts, err := img.readHeaderState()
	if err != nil {
		return err
	}
	nh := *oh
	nh.Version = 2
	nh.HeaderLength = HeaderV2Size
	nh.IncompatibleFeatures, nh.CompatibleFeatures, nh.AutoclearFeatures = 0, 0, 0
	nh.CompressionType = CompressionZlib
	nh.Extra = nil
	// The other extensions stay, as qcow2_update_header keeps them (a
	// bitmaps extension too: without its autoclear bit it is ignored).
	exts := img.headerExtensions(&nh, oexts)
	if err := img.switchHeader(old, &nh, exts, img.backingName, "Failed to update the image header"); err != nil {
		return err
	}
	img.hdr = nh
	img.setExtensions(&nh, exts)
	return nil
}

// CheckDowngrade returns the VersionError Downgrade would refuse with when
// the image had the virtual size size and refcounts refcountBits wide (0:
// its own width) (nil: it would go ahead). Nothing is written to the image
// (cached metadata is written back).
func (img *Image) CheckDowngrade(size uint64, refcountBits int) error {
	img.lock()
	defer img.unlock()
	if img.hdr.Version < 3 {
		return nil
	}
	entries, _, err := img.snapshotsToChange()
	if err != nil {
		return err
	}
	order := img.hdr.RefcountOrder
	if refcountBits != 0 {
		if order, err = refcountOrder(refcountBits); err != nil {
			return err
		}
	}
	if err := img.checkDowngrade(entries, size, order); err != nil {
		return err
	}
	if img.hdr.IncompatibleFeatures&IncompatCompression == 0 {
		return nil
	}
	z, err := img.planZeroExpansion(entries, VersionOptions{})
	if err != nil {
		return err
	}
	if z.compressed {
		return errZstdDowngrade
	}
	return nil
}

var errZstdDowngrade = &VersionError{Msg: "Cannot downgrade an image with zstd compression type and existing compressed clusters"}

func (img *Image) checkDowngrade(entries []SnapshotEntry, size uint64, refcountOrder uint32) error {
	h := &img.hdr
	if h.IncompatibleFeatures&IncompatZoned != 0 {
		return &VersionError{Msg: "Cannot downgrade a zoned image: the zoned format requires compat=1.1"}
	}
	if refcountOrder != 4 {
		return &VersionError{Msg: "compat=0.10 requires refcount_bits=16"}
	}
	if h.IncompatibleFeatures&IncompatDataFile != 0 {
		return &VersionError{Msg: "Cannot downgrade an image with a data file"}
	}
	for i := range entries {
		ds, ok := entries[i].DiskSize()
		if !ok {
			ds = size
		}
		if entries[i].VMStateSize() > 0xffffffff || ds != size {
			return &VersionError{Msg: "Internal snapshots prevent downgrade of image"}
		}
	}
	if bits := h.IncompatibleFeatures &^ IncompatCompression; bits != 0 {
		return &VersionError{Msg: fmt.Sprintf("Cannot downgrade an image with incompatible features 0x%x set", bits)}
	}
	return nil
}

// zeroPlan is what Downgrade's zero expansion changes.
type zeroPlan struct {
	// tables: the new content of each L2 table with zero clusters, by
	// offset; alloc lists the entries (index) that need a new cluster.
	tables map[uint64][]byte
	alloc  map[uint64][]uint64
	// zero: preallocated clusters to zero in place.
	zero []uint64
	// nref: the L1 entries pointing to each L2 table.
	nref       map[uint64]uint64
	l1s        [][]uint64 // the snapshots' L1 tables, in table order
	compressed bool
}

// planZeroExpansion reads every L2 table (active and snapshots') and plans
// the expansion of its zero clusters. The image is flushed.
func (img *Image) planZeroExpansion(entries []SnapshotEntry, o VersionOptions) (*zeroPlan, error) {
	t, err := img.beginTxn()
	if err != nil {
		return nil, err
	}
	z := &zeroPlan{tables: map[uint64][]byte{}, alloc: map[uint64][]uint64{}, nref: map[uint64]uint64{}}
	var order []uint64
	total := int64(img.l1.len())
	for i := range entries {
		total += int64(entries[i].L1Size)
	}
	var done int64
	count := func(l1 []uint64) {
		for _, e := range l1 {
			if l2 := e & L1OffsetMask; l2 != 0 {
				if z.nref[l2] == 0 {
					order = append(order, l2)
				}
				z.nref[l2]++
			}
			done++
			o.progress(done, total)
		}
	}
	count(img.l1.slice())
	for i := range entries {
		l1, err := t.readL1(entries[i].L1Offset, entries[i].L1Size, fmt.Sprintf("the L1 table of snapshot %s", entries[i].ID))
		if err != nil {
			return nil, err
		}
		z.l1s = append(z.l1s, l1)
		count(l1)
	}
	// refs: references to each data cluster, through every L1 table.
	refs := map[uint64]uint64{}
	tables := map[uint64][]byte{}
	for _, l2 := range order {
		tb, err := t.readTable(l2, fmt.Sprintf("the L2 table at 0x%x", l2))
		if err != nil {
			return nil, err
		}
		tables[l2] = tb
		for i := uint64(0); i < img.l2Ents; i++ {
			e := binary.BigEndian.Uint64(tb[i*img.entSize:])
			if e&OflagCompressed != 0 {
				z.compressed = true
				continue
			}
			if host := e & L2OffsetMask; host != 0 {
				refs[host] += z.nref[l2]
			}
		}
	}
	be := binary.BigEndian
	for _, l2 := range order {
		tb := tables[l2]
		var nt []byte
		for i := uint64(0); i < img.l2Ents; i++ {
			e := be.Uint64(tb[i*img.entSize:])
			if e&OflagCompressed != 0 || e&OflagZero == 0 {
				continue
			}
			if nt == nil {
				nt = append([]byte(nil), tb...)
			}
			host := e & L2OffsetMask
			switch {
			case host == 0 && img.backingName == "":
				be.PutUint64(nt[i*img.entSize:], 0)
			case host != 0 && host&(img.cs-1) == 0 && refs[host] == z.nref[l2] &&
				host/img.cs < uint64(len(t.old)) && t.old[host/img.cs] == refs[host]:
				// Referenced only here: zeroed in place, then a data
				// cluster.
				ne := host
				if refs[host] == 1 {
					ne |= OflagCopied
				}
				be.PutUint64(nt[i*img.entSize:], ne)
				z.zero = append(z.zero, host)
			default:
				z.alloc[l2] = append(z.alloc[l2], i)
			}
		}
		if nt != nil {
			z.tables[l2] = nt
		}
	}
	return z, nil
}

// expandZeros carries out a zero plan: in place when no entry needs a new
// cluster, else in a transaction.
func (img *Image) expandZeros(z *zeroPlan, entries []SnapshotEntry, tableSize uint64) error {
	if len(z.tables) == 0 {
		return nil
	}
	defer func() {
		// The tables were changed behind the (clean) cache.
		img.l2c = newMetaCache(img.f, int(img.cs), img.l2c.max*img.l2c.size, "L2 table")
		img.l2c.guard = img.tableGuard(metaActiveL2)
	}()
	if len(z.alloc) == 0 {
		for _, host := range z.zero {
			if err := img.f.ZeroRange(int64(host), int64(img.cs)); err != nil {
				return err
			}
		}
		if len(z.zero) > 0 {
			if err := img.f.Sync(); err != nil {
				return err
			}
		}
		for l2, nt := range z.tables {
			if _, err := img.f.WriteAt(nt, int64(l2)); err != nil {
				return err
			}
		}
		return img.f.Sync()
	}
	t, err := img.beginTxn()
	if err != nil {
		return err
	}
	be := binary.BigEndian
	moved := map[uint64]uint64{}
	for l2, nt := range z.tables {
		n := z.nref[l2]
		for _, i := range z.alloc[l2] {
			e := be.Uint64(nt[i*img.entSize:])
			if host := e & L2OffsetMask; host != 0 {
				if err := t.inc(host, img.cs, -int64(n)); err != nil {
					return err
				}
			}
			off, err := t.allocWrite(make([]byte, img.cs))
			if err != nil {
				return err
			}
			t.rc[off/img.cs] = n
			ne := off
			if n == 1 {
				ne |= OflagCopied
			}
			be.PutUint64(nt[i*img.entSize:], ne)
		}
		if err := t.inc(l2, img.cs, -int64(n)); err != nil {
			return err
		}
		off, err := t.allocWrite(nt)
		if err != nil {
			return err
		}
		t.rc[off/img.cs] = n
		moved[l2] = off
	}
	for _, host := range z.zero {
		// Read as zeroes in the old state (zero flag): zeroed in place.
		t.writeAt(make([]byte, img.cs), host)
	}
	// The copies take the place of the tables (same references, same
	// refcounts, so the same flags).
	relink := func(l1 []uint64) ([]uint64, bool) {
		out := append([]uint64(nil), l1...)
		changed := false
		for i, e := range out {
			if n, ok := moved[e&L1OffsetMask]; ok {
				out[i] = n | e&^L1OffsetMask
				changed = true
			}
		}
		return out, changed
	}
	if l1, changed := relink(img.l1.slice()); changed {
		if err := t.inc(img.hdr.L1TableOffset, img.l1.len()*8, -1); err != nil {
			return err
		}
		if err := t.setL1(l1, img.hdr.Size); err != nil {
			return err
		}
	}
	snapChanged := false
	for i := range entries {
		l1, changed := relink(z.l1s[i])
		if !changed {
			continue
		}
		if err := t.inc(entries[i].L1Offset, uint64(len(l1))*8, -1); err != nil {
			return err
		}
		b := make([]byte, len(l1)*8)
		for j, e := range l1 {
			be.PutUint64(b[j*8:], e)
		}
		off, err := t.allocWrite(b)
		if err != nil {
			return err
		}
		entries[i].L1Offset = off
		snapChanged = true
	}
	if snapChanged {
		if err := t.setSnapshots(entries, tableSize); err != nil {
			return err
		}
	}
	return t.commit()
}
