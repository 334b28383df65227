package image

import (
	"encoding/binary"
	"fmt"
	"syscall"
)

// txn changes the image's metadata as one atomic step: snapshot create,
// apply and delete, and resize. QEMU changes refcounts, OFLAG_COPIED flags
// and tables in place, so that a crash in the middle can leave a flag that
// disagrees with its refcount (which check reports as a corruption). A txn
// instead builds the new state beside the current one:
//
//   - every table of the current state that must change is written to new
//     clusters (tables reachable only from inactive snapshot L1 tables may
//     be fixed in place: their flags are not used);
//   - the refcounts of the new state are computed in memory and written as
//     a complete new refcount structure (refcount blocks and table) in
//     clusters that are free in both states;
//   - all of that is written and synced, and then one write of the
//     header's first 512-byte sector (disks persist a sector whole or not
//     at all) switches the virtual size, the L1 table, the refcount table,
//     the snapshot table and any extension data lying in that sector.
//
// Before the switch the old state is intact on disk (the new clusters are
// free in it); after it, the new state is complete, and the old state's
// structures are free in the new refcounts. The image must have been
// flushed (no dirty metadata, no pending frees) before beginTxn.
type txn struct {
	img *Image
	cs  uint64
	old []uint64 // refcount of each cluster before the transaction
	rc  []uint64 // after; the refcount structures are added at commit
	// next is where the search for free clusters starts.
	next uint64
	// limit is the end of the host clusters that exist: the file, and
	// the clusters this transaction allocates. A reference at or beyond
	// it is corrupt, and refcounts beyond it are not kept, so that the
	// arrays are sized by the file, not by an offset a table names.
	limit uint64

	writes []txnWrite

	l1    []uint64 // the new active L1 table (nil: none)
	l1Off uint64
	l1Set bool
	size  uint64

	snapSet bool
	nbSnap  uint32
	snapOff uint64

	tables []TableUpdate
	placed []uint64 // where commit put each of tables' Data

	// order is the refcount order (log2 of the refcount width in bits)
	// of the new refcount structure: the image's, or a new width.
	order uint32
}

type txnWrite struct {
	off     uint64
	data    []byte
	reserve bool // newly allocated clusters: reserve their space first
}

// TableUpdate replaces a metadata table owned by a layer above this package
// (the zoned write-pointer table) as part of a snapshot apply or a resize:
// the old clusters are freed, Data is written to new clusters, and the
// header extension Magic gets the data Patch returns for the new offset.
// The extension must lie in the header's first sector (see
// MoveExtensionFirst), so that it changes in the same atomic write.
type TableUpdate struct {
	Magic          uint32
	OldOff, OldLen uint64
	Data           []byte
	Patch          func(newOff uint64) []byte
}

// beginTxn reads the current refcounts. The image must be flushed.
func (img *Image) beginTxn() (*txn, error) {
	r := &img.rc
	fileSize, err := img.f.Size()
	if err != nil {
		return nil, err
	}
	t := &txn{img: img, cs: img.cs, size: img.hdr.Size, l1Off: img.hdr.L1TableOffset,
		nbSnap: img.hdr.NbSnapshots, snapOff: img.hdr.SnapshotsOffset, order: img.rc.order}
	n := ceilDiv(uint64(fileSize), img.cs)
	t.limit = n * img.cs
	t.old = make([]uint64, n)
	blk := make([]byte, img.cs)
	for ti, e := range r.table.nonZero() {
		off := e & RefTableOffMask
		if off == 0 {
			continue
		}
		if off&(img.cs-1) != 0 || off+img.cs > uint64(fileSize) {
			return nil, &CorruptionError{Off: int64(r.tableOff) + int64(ti)*8, Msg: fmt.Sprintf("refcount block %d at offset 0x%x is misaligned or beyond the end of the file", ti, off)}
		}
		if err := readFull(img.f, blk, int64(off)); err != nil {
			return nil, fmt.Errorf("reading refcount block %d at offset 0x%x: %w", ti, off, err)
		}
		base := uint64(ti) << r.rbBits
		for j := uint64(0); j < r.rbEnts; j++ {
			if base+j >= n {
				// Beyond the end of the file: no cluster, nothing to
				// count (the new refcounts drop such a leak).
				break
			}
			if v := GetRefcount(blk, j, r.order); v != 0 {
				t.old[base+j] = v
			}
		}
	}
	t.rc = append([]uint64(nil), t.old...)
	// The refcount structures are rebuilt at commit: drop the old ones.
	if err := t.inc(r.tableOff, r.table.len()*8, -1); err != nil {
		return nil, err
	}
	for ti, e := range r.table.nonZero() {
		if off := e & RefTableOffMask; off != 0 {
			if err := t.inc(off, img.cs, -1); err != nil {
				return nil, fmt.Errorf("refcount block %d: %w", ti, err)
			}
		}
	}
	return t, nil
}

// grow makes the refcount arrays cover n clusters.
func (t *txn) grow(n uint64) {
	if uint64(len(t.old)) < n {
		t.old = append(t.old, make([]uint64, n-uint64(len(t.old)))...)
	}
	if t.rc != nil && uint64(len(t.rc)) < n {
		t.rc = append(t.rc, make([]uint64, n-uint64(len(t.rc)))...)
	}
}

// inc adds delta to the new refcount of every cluster touched by
// [off, off+length).
func (t *txn) inc(off, length uint64, delta int64) error {
	if length == 0 {
		return nil
	}
	if off > MaxHostOffset || length > MaxHostOffset-off {
		return &CorruptionError{Off: int64(off & MaxHostOffset), Msg: fmt.Sprintf("host range 0x%x+%d is beyond the largest host offset", off, length)}
	}
	if off >= t.limit {
		return t.beyond(off, length)
	}
	first, last := off/t.cs, (off+length-1)/t.cs
	t.grow(last + 1)
	max := t.img.rc.max
	for c := first; c <= last; c++ {
		v := t.rc[c]
		switch {
		case delta < 0 && v < uint64(-delta):
			return &CorruptionError{Off: int64(c * t.cs), Msg: fmt.Sprintf("refcount of cluster %d would drop below zero (refcount %d)", c, t.old[c])}
		case delta < 0:
			v -= uint64(-delta)
		case v+uint64(delta) > max || v+uint64(delta) < v:
			return fmt.Errorf("refcount of cluster %d would exceed %d, the largest %d-bit refcount: %w", c, max, 1<<t.img.rc.order, syscall.ERANGE)
		default:
			v += uint64(delta)
		}
		t.rc[c] = v
	}
	return nil
}

// beyond describes a reference to [off, off+length) beyond t.limit.
func (t *txn) beyond(off, length uint64) error {
	return &CorruptionError{Off: -1, Msg: fmt.Sprintf("a reference to host offset 0x%x (%d bytes) lies beyond the end of the file (%d bytes); run 'zqimg check' on the image", off, length, t.limit)}
}

// free reports whether cluster c is unused both before and after.
func (t *txn) free(c uint64) bool {
	return c >= uint64(len(t.rc)) || (t.old[c] == 0 && t.rc[c] == 0)
}

// findFree returns the first run of n clusters free before and after,
// searching from cluster from.
func (t *txn) findFree(from, n uint64) uint64 {
	start := from
	for c := from; ; c++ {
		if c == 0 || !t.free(c) {
			start = c + 1
			continue
		}
		if c+1-start == n {
			return start
		}
	}
}

// alloc takes n contiguous clusters (refcount 1) and returns their offset.
func (t *txn) alloc(n uint64) (uint64, error) {
	if n == 0 {
		return 0, fmt.Errorf("internal error: allocation of 0 clusters")
	}
	c := t.findFree(t.next, n)
	if (c+n)*t.cs-1 > MaxHostOffset {
		return 0, fmt.Errorf("image file would exceed the maximum host offset: %w", syscall.EFBIG)
	}
	t.grow(c + n)
	t.limit = max(t.limit, (c+n)*t.cs)
	for i := c; i < c+n; i++ {
		t.rc[i] = 1
	}
	t.next = c + n
	return c * t.cs, nil
}

// allocWrite allocates clusters for data and queues its write.
func (t *txn) allocWrite(data []byte) (uint64, error) {
	off, err := t.alloc(ceilDiv(uint64(len(data)), t.cs))
	if err != nil {
		return 0, err
	}
	t.writes = append(t.writes, txnWrite{off: off, data: data, reserve: true})
	return off, nil
}

// writeAt queues a write into clusters that stay where they are (only
// tables of inactive snapshots, whose flags nothing reads).
func (t *txn) writeAt(data []byte, off uint64) {
	t.writes = append(t.writes, txnWrite{off: off, data: data})
}

// readTable reads the cluster-sized table at off (an L2 table).
func (t *txn) readTable(off uint64, what string) ([]byte, error) {
	img := t.img
	if off&(t.cs-1) != 0 {
		return nil, &CorruptionError{Off: int64(off), Msg: fmt.Sprintf("%s at offset 0x%x is not cluster aligned", what, off)}
	}
	if c := off / t.cs; c >= uint64(len(t.old)) || t.old[c] == 0 {
		return nil, &CorruptionError{Off: int64(off), Msg: fmt.Sprintf("%s at offset 0x%x is beyond the end of the file or has refcount 0", what, off)}
	}
	b := make([]byte, t.cs)
	if err := readFull(img.f, b, int64(off)); err != nil {
		return nil, fmt.Errorf("reading %s at offset 0x%x: %w", what, off, err)
	}
	return b, nil
}

// readL1 reads an L1 table of n entries at off.
func (t *txn) readL1(off uint64, n uint32, what string) ([]uint64, error) {
	if n == 0 {
		return nil, nil
	}
	fileSize, err := t.img.f.Size()
	if err != nil {
		return nil, err
	}
	if off&(t.cs-1) != 0 || off+uint64(n)*8 > uint64(fileSize) {
		return nil, &CorruptionError{Off: int64(off), Msg: fmt.Sprintf("%s (%d entries at offset 0x%x) is misaligned or extends past the end of the file", what, n, off)}
	}
	b := make([]byte, uint64(n)*8)
	if err := readFull(t.img.f, b, int64(off)); err != nil {
		return nil, fmt.Errorf("reading %s at offset 0x%x: %w", what, off, err)
	}
	l1 := make([]uint64, n)
	for i := range l1 {
		l1[i] = binary.BigEndian.Uint64(b[i*8:])
		if l2 := l1[i] & L1OffsetMask; l2 != 0 && l2&(t.cs-1) != 0 {
			return nil, &CorruptionError{Off: int64(off) + int64(i)*8, Msg: fmt.Sprintf("%s: L2 table offset 0x%x of entry %d is not cluster aligned", what, l2, i)}
		}
	}
	return l1, nil
}

// forEachRef adds delta to the refcount of every host cluster an L2 table
// references (data, preallocated zero, compressed).
func (t *txn) forEachRef(tb []byte, delta int64) error {
	img := t.img
	for i := uint64(0); i < img.l2Ents; i++ {
		e := binary.BigEndian.Uint64(tb[i*img.entSize:])
		if e&OflagCompressed != 0 {
			off, length := L2Entry{Desc: e}.CompressedRange(img.cb)
			if err := t.inc(off, length, delta); err != nil {
				return err
			}
			continue
		}
		host := e & L2OffsetMask
		if host == 0 {
			continue
		}
		if host&(t.cs-1) != 0 {
			return &CorruptionError{Off: int64(host), Msg: fmt.Sprintf("data cluster offset 0x%x (L2 entry %d) is not cluster aligned", host, i)}
		}
		if err := t.inc(host, t.cs, delta); err != nil {
			return err
		}
	}
	return nil
}

// dropTree removes one reference from an L1 table, its L2 tables and
// everything they reference (QEMU's qcow2_update_snapshot_refcount with
// addend -1).
func (t *txn) dropTree(l1Off uint64, l1 []uint64) error {
	if len(l1) > 0 {
		if err := t.inc(l1Off, uint64(len(l1))*8, -1); err != nil {
			return err
		}
	}
	for i, e := range l1 {
		l2 := e & L1OffsetMask
		if l2 == 0 {
			continue
		}
		tb, err := t.readTable(l2, fmt.Sprintf("the L2 table of L1 entry %d of the L1 table at 0x%x", i, l1Off))
		if err != nil {
			return err
		}
		if err := t.forEachRef(tb, -1); err != nil {
			return err
		}
		if err := t.inc(l2, t.cs, -1); err != nil {
			return err
		}
	}
	return nil
}

// activeL2s returns the L2 tables of the current active L1 table.
func (t *txn) activeL2s() map[uint64]bool {
	m := map[uint64]bool{}
	for _, e := range t.img.l1.nonZero() {
		if l2 := e & L1OffsetMask; l2 != 0 {
			m[l2] = true
		}
	}
	return m
}

// setL1 makes l1 the active L1 table, in new clusters, for a virtual disk
// of size bytes (the table is extended with empty entries to cover it).
// The caller accounts for the old active L1 table's clusters.
func (t *txn) setL1(l1 []uint64, size uint64) error {
	img := t.img
	need := ceilDiv(size, img.cs*img.l2Ents)
	if need*8 > MaxL1Bytes {
		return fmt.Errorf("Failed to grow the L1 table: File too large (a virtual size of %d bytes needs %d L1 entries, at most %d fit: %w)", size, need, MaxL1Bytes/8, syscall.EFBIG)
	}
	if uint64(len(l1)) < need {
		l1 = append(l1, make([]uint64, need-uint64(len(l1)))...)
	}
	t.l1, t.l1Set, t.size, t.l1Off = l1, true, size, 0
	if len(l1) == 0 {
		return nil
	}
	b := make([]byte, len(l1)*8)
	for i, e := range l1 {
		binary.BigEndian.PutUint64(b[i*8:], e)
	}
	off, err := t.allocWrite(b)
	if err != nil {
		return err
	}
	t.l1Off = off
	return nil
}

// setSnapshots replaces the snapshot table (oldSize: bytes of the current one).
func (t *txn) setSnapshots(entries []SnapshotEntry, oldSize uint64) error {
	img := t.img
	if img.hdr.NbSnapshots > 0 {
		if err := t.inc(img.hdr.SnapshotsOffset, oldSize, -1); err != nil {
			return err
		}
	}
	t.snapSet, t.nbSnap, t.snapOff = true, uint32(len(entries)), 0
	if len(entries) == 0 {
		return nil
	}
	for i := range entries {
		entries[i].CompleteExtra(img.hdr.Size)
	}
	b := MarshalSnapshotTable(entries)
	if uint64(len(b)) > MaxSnapshotTableSize {
		return fmt.Errorf("snapshot table of %d bytes exceeds %d: %w", len(b), MaxSnapshotTableSize, syscall.EFBIG)
	}
	off, err := t.allocWrite(b)
	if err != nil {
		return err
	}
	t.snapOff = off
	return nil
}

// fixActiveCopied sets OFLAG_COPIED in the active tables exactly where the
// new refcount is 1, copying the tables that change (and then the L1 table).
func (t *txn) fixActiveCopied() error {
	img := t.img
	l1 := img.l1.slice()
	changed := false
	for i, e := range img.l1.nonZero() {
		l2 := e & L1OffsetMask
		if l2 == 0 {
			continue
		}
		tb, err := t.readTable(l2, fmt.Sprintf("the L2 table of L1 entry %d", i))
		if err != nil {
			return err
		}
		fixed, err := t.fixCopied(tb)
		if err != nil {
			return fmt.Errorf("the L2 table of L1 entry %d: %w", i, err)
		}
		if fixed {
			if err := t.inc(l2, t.cs, -1); err != nil {
				return err
			}
			off, err := t.allocWrite(tb)
			if err != nil {
				return err
			}
			l2 = off
		}
		ne := l2
		if t.rc[l2/t.cs] == 1 {
			ne |= OflagCopied
		}
		if ne != e {
			l1[i], changed = ne, true
		}
	}
	if !changed {
		return nil
	}
	if err := t.inc(img.hdr.L1TableOffset, img.l1.len()*8, -1); err != nil {
		return err
	}
	return t.setL1(l1, t.size)
}

// fixCopied sets OFLAG_COPIED on the entries of tb whose cluster has a new
// refcount of 1 and clears it on the others; it reports a change. An
// entry naming a cluster beyond the end of the file is refused.
func (t *txn) fixCopied(tb []byte) (bool, error) {
	img := t.img
	changed := false
	for i := uint64(0); i < img.l2Ents; i++ {
		o := i * img.entSize
		e := binary.BigEndian.Uint64(tb[o:])
		host := e & L2OffsetMask
		if e&OflagCompressed != 0 || host == 0 {
			continue
		}
		if host >= t.limit {
			return false, t.beyond(host, t.cs)
		}
		ne := e &^ OflagCopied
		if c := host / t.cs; c < uint64(len(t.rc)) && t.rc[c] == 1 {
			ne |= OflagCopied
		}
		if ne != e {
			binary.BigEndian.PutUint64(tb[o:], ne)
			changed = true
		}
	}
	return changed, nil
}

// commit writes the new state and switches to it.
func (t *txn) commit() (err error) {
	img := t.img
	defer func() {
		if err != nil {
			// Tables of inactive snapshots may have been fixed in place
			// behind the (clean) cache: forget what it holds.
			img.l2c = newMetaCache(img.f, int(img.cs), img.l2c.max*img.l2c.size, "L2 table")
			img.l2c.guard = img.tableGuard(metaActiveL2)
		}
	}()
	// Extension data to patch in the header's first sector.
	type patch struct {
		at   int
		data []byte
	}
	var patches []patch
	for _, u := range t.tables {
		at, ok := img.extensionDataOffset(u.Magic)
		if !ok {
			return fmt.Errorf("header extension 0x%08x is missing", u.Magic)
		}
		if err := t.inc(u.OldOff, u.OldLen, -1); err != nil {
			return err
		}
		off, err := t.allocWrite(u.Data)
		if err != nil {
			return err
		}
		t.placed = append(t.placed, off)
		d := u.Patch(off)
		if at+len(d) > 512 {
			return fmt.Errorf("header extension 0x%08x (bytes %d-%d of the header) does not lie in the first sector, which is the only one written atomically", u.Magic, at, at+len(d))
		}
		patches = append(patches, patch{at, d})
	}
	rtOff, rtClusters, blocks, err := t.placeRefcounts()
	if err != nil {
		return err
	}
	for _, w := range t.writes {
		if w.reserve {
			if err := img.f.ZeroRange(int64(w.off), int64(roundUp(uint64(len(w.data)), t.cs))); err != nil {
				return fmt.Errorf("reserving space for new metadata at 0x%x: %w", w.off, err)
			}
		}
	}
	areaStart := blocks[0].off
	areaLen := rtOff + rtClusters*t.cs - areaStart
	if err := img.f.ZeroRange(int64(areaStart), int64(areaLen)); err != nil {
		return fmt.Errorf("reserving space for the new refcount structure at 0x%x: %w", areaStart, err)
	}
	for _, w := range append(t.writes, blocks...) {
		if _, err := img.f.WriteAt(w.data, int64(w.off)); err != nil {
			return fmt.Errorf("writing new metadata at 0x%x: %w", w.off, err)
		}
	}
	if err := img.f.Sync(); err != nil {
		return err
	}
	// The switch: one sector.
	sec := make([]byte, 512)
	if err := readFull(img.f, sec, 0); err != nil {
		return err
	}
	be := binary.BigEndian
	be.PutUint64(sec[24:], t.size)
	l1Size := uint32(len(t.l1))
	if !t.l1Set {
		l1Size, t.l1Off = img.hdr.L1Size, img.hdr.L1TableOffset
	}
	be.PutUint32(sec[36:], l1Size)
	be.PutUint64(sec[40:], t.l1Off)
	be.PutUint64(sec[48:], rtOff)
	be.PutUint32(sec[56:], uint32(rtClusters))
	be.PutUint32(sec[60:], t.nbSnap)
	be.PutUint64(sec[64:], t.snapOff)
	if t.order != img.rc.order {
		be.PutUint32(sec[HdrRefcountOrder:], t.order) // version 3 only
	}
	for _, p := range patches {
		copy(sec[p.at:], p.data)
	}
	if _, err := img.f.WriteAt(sec, 0); err != nil {
		return err
	}
	// From here on the new state is what the file holds (or will, once
	// synced): the in-memory state follows it.
	serr := img.f.Sync()
	img.hdr.Size = t.size
	img.hdr.L1Size = l1Size
	img.hdr.L1TableOffset = t.l1Off
	img.hdr.RefcountTableOffset = rtOff
	img.hdr.RefcountTableClusters = uint32(rtClusters)
	img.hdr.NbSnapshots = t.nbSnap
	img.hdr.SnapshotsOffset = t.snapOff
	img.hdr.RefcountOrder = t.order
	if t.l1Set {
		img.l1 = sparseFrom(t.l1)
	}
	clear(img.l1Dirty)
	for i, u := range t.tables {
		for j := range img.exts {
			if img.exts[j].Magic == u.Magic {
				img.exts[j].Data = append([]byte(nil), patches[i].data...)
			}
		}
	}
	img.l2c = newMetaCache(img.f, int(img.cs), img.l2c.max*img.l2c.size, "L2 table")
	img.l2c.guard = img.tableGuard(metaActiveL2)
	for i, u := range t.tables {
		img.moveLayerTable(u.OldOff, t.placed[i], uint64(len(u.Data)))
	}
	fileSize, ferr := img.f.Size()
	if ferr != nil {
		return ferr
	}
	img.rc = refcounts{}
	if ierr := img.rc.init(img, fileSize); ierr != nil {
		return ierr
	}
	return serr
}

// placeRefcounts lays out a refcount structure for the new refcounts in
// clusters free before and after: a refcount block for every range of
// clusters holding a cluster in use (the structure's own clusters
// included), then the refcount table. A block that would hold only zeroes
// is left out (its table entry 0), as qcow2_shrink_reftable leaves it,
// but to fill the space reserved when the structure's own placement
// needed fewer blocks than first thought. Blocks lie in index order from
// the first cluster of the area. It returns the table's offset and
// clusters, and the writes of blocks and table.
func (t *txn) placeRefcounts() (rtOff, rtClusters uint64, writes []txnWrite, err error) {
	// The new structure's geometry: refcounts of t.order bits.
	r := struct{ rbEnts uint64 }{t.cs * 8 >> t.order}
	perTable := t.cs / 8
	usedEnd := uint64(len(t.rc))
	for usedEnd > 0 && t.rc[usedEnd-1] == 0 {
		usedEnd--
	}
	// base: the blocks holding a cluster in use before the structure.
	var base []bool
	for c := uint64(0); c < usedEnd; c++ {
		if t.rc[c] != 0 {
			bi := c / r.rbEnts
			for uint64(len(base)) <= bi {
				base = append(base, false)
			}
			base[bi] = true
			c = (bi+1)*r.rbEnts - 1 // next block
		}
	}
	count := func(set []bool) (n, hi uint64) {
		for i, in := range set {
			if in {
				n, hi = n+1, uint64(i)+1
			}
		}
		return n, hi
	}
	with := func(start, n uint64) []bool {
		set := append([]bool(nil), base...)
		for bi := start / r.rbEnts; bi <= (start+n-1)/r.rbEnts; bi++ {
			for uint64(len(set)) <= bi {
				set = append(set, false)
			}
			set[bi] = true
		}
		return set
	}
	nb, hi := count(base)
	nb = max(1, nb)
	nt := max(1, ceilDiv(hi, perTable))
	var start uint64
	var set []bool
	for {
		start = t.findFree(1, nb+nt)
		set = with(start, nb+nt)
		needB, needHi := count(set)
		needT := ceilDiv(needHi, perTable)
		if needB <= nb && needT <= nt {
			break
		}
		nb, nt = max(nb, needB), max(nt, needT)
	}
	// Fill the reservation: zero blocks at the lowest free indices.
	n, _ := count(set)
	for bi := uint64(0); n < nb; bi++ {
		for uint64(len(set)) <= bi {
			set = append(set, false)
		}
		if !set[bi] {
			set[bi], n = true, n+1
		}
	}
	if nt*t.cs > MaxRefTableBytes && nt > 1 {
		return 0, 0, nil, fmt.Errorf("refcount table would exceed %d bytes: %w", MaxRefTableBytes, syscall.EFBIG)
	}
	t.grow(start + nb + nt)
	for c := start; c < start+nb+nt; c++ {
		t.rc[c] = 1
	}
	table := make([]byte, nt*t.cs)
	k := uint64(0)
	for ti, in := range set {
		if !in {
			continue
		}
		b := make([]byte, t.cs)
		base := uint64(ti) * r.rbEnts
		for j := uint64(0); j < r.rbEnts && base+j < uint64(len(t.rc)); j++ {
			if v := t.rc[base+j]; v != 0 {
				SetRefcount(b, j, t.order, v)
			}
		}
		off := (start + k) * t.cs
		k++
		binary.BigEndian.PutUint64(table[ti*8:], off)
		writes = append(writes, txnWrite{off: off, data: b})
	}
	rtOff = (start + nb) * t.cs
	writes = append(writes, txnWrite{off: rtOff, data: table})
	return rtOff, nt, writes, nil
}

// extensionDataOffset returns where the data of the first header extension
// with the given magic lies in the header cluster.
func (img *Image) extensionDataOffset(magic uint32) (int, bool) {
	off := int(img.hdr.HeaderLength)
	for _, e := range img.exts {
		if e.Magic == magic {
			return off + 8, true
		}
		off += 8 + int(roundUp(uint64(len(e.Data)), 8))
	}
	return 0, false
}
