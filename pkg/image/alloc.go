package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"syscall"
)

// refcounts holds the refcount table in memory and the refcount block cache.
// Its allocation algorithm is QEMU's (first fit from a moving free-cluster
// index; new refcount blocks placed so that they describe themselves; the
// table grown into a fresh self-describing area), so that images laid out
// by this package match qemu-img's byte for byte.
type refcounts struct {
	img      *Image
	order    uint32
	rbBits   uint32 // log2 of entries per refcount block
	rbEnts   uint64 // entries per refcount block
	max      uint64 // largest storable refcount
	table    sparseTable
	tableOff uint64
	maxIdx   uint64 // highest table index in use (QEMU's max_refcount_table_index)
	freeIdx  uint64 // next cluster index to try when allocating
	rbc      *metaCache
	// dirtyTable holds refcount table entries that point to new refcount
	// blocks and are not written yet: writeback writes them after the
	// blocks are durable and before anything that depends on them.
	dirtyTable map[uint64]struct{}
}

// errAgain asks an allocation to restart its search: new refcount metadata
// may now occupy the clusters it had picked.
var errAgain = errors.New("refcount metadata allocated; retry")

func (r *refcounts) init(img *Image, fileSize int64) error {
	h := &img.hdr
	r.img = img
	r.order = h.RefcountOrder
	r.rbEnts = img.cs * 8 >> r.order
	r.rbBits = uint32(log2(r.rbEnts))
	r.max = MaxRefcount(r.order)
	r.tableOff = h.RefcountTableOffset
	n := uint64(h.RefcountTableClusters) * img.cs / 8
	if r.tableOff+n*8 > uint64(fileSize) {
		return formatErr(int64(r.tableOff), "refcount table (%d clusters) extends past the end of the file (%d bytes)", h.RefcountTableClusters, fileSize)
	}
	t, err := readSparseTable(img.f, int64(r.tableOff), n)
	if err != nil {
		return err
	}
	r.table = t
	r.updateMaxIdx()
	r.rbc = newMetaCache(img.f, int(img.cs), 4<<20, "refcount block")
	r.rbc.guard = img.tableGuard(metaRefBlock)
	r.dirtyTable = map[uint64]struct{}{}
	img.metaChanged()
	return nil
}

// writeTable writes the dirty refcount table entries. The blocks they point
// to must already be durable.
func (r *refcounts) writeTable() error {
	idx := make([]uint64, 0, len(r.dirtyTable))
	for i := range r.dirtyTable {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	var b [8]byte
	for _, i := range idx {
		binary.BigEndian.PutUint64(b[:], r.table.get(i))
		if _, err := r.img.f.WriteAt(b[:], int64(r.tableOff+i*8)); err != nil {
			return fmt.Errorf("writing refcount table entry %d: %w", i, err)
		}
		delete(r.dirtyTable, i)
	}
	return nil
}

func (r *refcounts) updateMaxIdx() {
	r.maxIdx = 0
	for i, e := range r.table.nonZero() {
		if e&RefTableOffMask != 0 {
			r.maxIdx = i
		}
	}
}

// block returns the refcount block at table index ti, or nil if none.
func (r *refcounts) block(ti uint64) (*cacheEntry, error) {
	if ti >= r.table.len() {
		return nil, nil
	}
	off := r.table.get(ti) & RefTableOffMask
	if off == 0 {
		return nil, nil
	}
	if off&(r.img.cs-1) != 0 {
		return nil, r.img.signalCorruptionQ(int64(r.tableOff+ti*8), fmt.Sprintf("Refblock offset %#x unaligned (reftable index: %#x)", off, ti),
			"refcount block offset 0x%x is not cluster aligned (refcount table entry %d)", off, ti)
	}
	b, err := r.rbc.get(off)
	if errors.Is(err, ErrTruncated) {
		return nil, r.img.beyondEOFError(off, fmt.Sprintf("refcount block %d (refcount table entry %d)", ti, ti))
	}
	return b, err
}

// get returns the refcount of cluster index ci (0 where no block exists).
func (r *refcounts) get(ci uint64) (uint64, error) {
	b, err := r.block(ci >> r.rbBits)
	if err != nil || b == nil {
		return 0, err
	}
	return GetRefcount(b.data, ci&(r.rbEnts-1), r.order), nil
}

// lastUsed returns the index of the last cluster whose refcount is not
// zero (QEMU's qcow2_get_last_cluster), or -1 if none is.
func (r *refcounts) lastUsed() (int64, error) {
	for ti := int64(r.maxIdx); ti >= 0; ti-- {
		b, err := r.block(uint64(ti))
		if err != nil {
			return 0, err
		}
		if b == nil {
			continue
		}
		for j := int64(r.rbEnts) - 1; j >= 0; j-- {
			if GetRefcount(b.data, uint64(j), r.order) != 0 {
				return ti<<r.rbBits + j, nil
			}
		}
	}
	return -1, nil
}

// allocNoref finds n contiguous clusters with refcount 0 without taking
// them (QEMU's alloc_clusters_noref).
func (r *refcounts) allocNoref(bytes uint64) (uint64, error) {
	n := ceilDiv(bytes, r.img.cs)
retry:
	for i := uint64(0); i < n; i++ {
		ci := r.freeIdx
		r.freeIdx++
		rc, err := r.get(ci)
		if err != nil {
			return 0, err
		}
		if rc != 0 {
			goto retry
		}
	}
	if r.freeIdx > 0 && r.freeIdx-1 > MaxHostOffset>>r.img.cb {
		return 0, fmt.Errorf("image file would exceed the maximum host offset: %w", syscall.EFBIG)
	}
	return (r.freeIdx - n) << r.img.cb, nil
}

// alloc allocates bytes (rounded up to clusters) of contiguous clusters
// with refcount 1 and returns their host offset.
func (r *refcounts) alloc(bytes uint64) (uint64, error) {
	for {
		off, err := r.allocNoref(bytes)
		if err != nil {
			return 0, err
		}
		err = r.update(off, bytes, 1, false)
		if errors.Is(err, errAgain) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return off, nil
	}
}

// update adds (or, with decrease, subtracts) addend to the refcount of
// every cluster touched by [off, off+length). On failure the clusters
// already changed are restored.
func (r *refcounts) update(off, length, addend uint64, decrease bool) error {
	if length == 0 {
		return nil
	}
	cs := r.img.cs
	start := off &^ (cs - 1)
	last := (off + length - 1) &^ (cs - 1)
	var blk *cacheEntry
	oldTi := ^uint64(0)
	var err error
	co := start
	for ; co <= last; co += cs {
		ci := co >> r.img.cb
		ti := ci >> r.rbBits
		if ti != oldTi {
			blk, err = r.allocBlock(ci)
			if errors.Is(err, errAgain) && r.freeIdx > start>>r.img.cb {
				// Retry from the same clusters first: they may still be
				// free (the new block went elsewhere), as QEMU does.
				r.freeIdx = start >> r.img.cb
			}
			if err != nil {
				break
			}
			oldTi = ti
		}
		bi := ci & (r.rbEnts - 1)
		rc := GetRefcount(blk.data, bi, r.order)
		if decrease {
			if rc < addend {
				err = r.img.signalCorruption(int64(co), "refcount of cluster %d would drop below zero (refcount %d)", ci, rc)
				break
			}
			rc -= addend
		} else {
			if rc+addend < rc || rc+addend > r.max {
				err = fmt.Errorf("refcount of cluster %d would exceed %d: %w", ci, r.max, syscall.ERANGE)
				break
			}
			rc += addend
		}
		if rc == 0 && ci < r.freeIdx {
			r.freeIdx = ci
		}
		SetRefcount(blk.data, bi, r.order, rc)
		r.rbc.markDirty(blk)
		if rc == 0 {
			r.img.l2c.discard(co)
			if co != blk.off {
				r.rbc.discard(co)
			}
		}
	}
	if err != nil && co > start {
		if e := r.update(start, co-start, addend, !decrease); e != nil {
			return fmt.Errorf("%w (and restoring refcounts failed: %v)", err, e)
		}
	}
	return err
}

// allocBlock returns the refcount block covering cluster ci, creating it if
// needed (QEMU's alloc_refcount_block). When it creates one it returns
// errAgain, because the new block may sit where the caller meant to put data.
func (r *refcounts) allocBlock(ci uint64) (*cacheEntry, error) {
	img := r.img
	ti := ci >> r.rbBits
	if b, err := r.block(ti); err != nil || b != nil {
		return b, err
	}
	newBlock, err := r.allocNoref(img.cs)
	if err != nil {
		return nil, err
	}
	if newBlock == 0 {
		return nil, img.signalCorruption(-1, "refusing to allocate a refcount block at offset 0")
	}
	// Reserve the block's space now, so that a full disk fails this
	// request rather than the writeback of the block later.
	if err := img.f.ZeroRange(int64(newBlock), int64(img.cs)); err != nil {
		return nil, fmt.Errorf("reserving space for a new refcount block: %w", err)
	}
	var blk *cacheEntry
	if (newBlock>>img.cb)>>r.rbBits == ti {
		// The block describes itself.
		blk = r.rbc.getEmpty(newBlock)
		SetRefcount(blk.data, (newBlock>>img.cb)&(r.rbEnts-1), r.order, 1)
	} else {
		if err := r.update(newBlock, img.cs, 1, false); err != nil {
			return nil, err
		}
		blk = r.rbc.getEmpty(newBlock)
	}
	r.rbc.markDirty(blk)
	if ti < r.table.len() {
		// Hook the block up in memory; writeback writes the table entry
		// once the block is durable (QEMU writes both synchronously).
		r.table.set(ti, newBlock)
		img.metaAdd(metaRefBlock, newBlock, ti)
		r.dirtyTable[ti] = struct{}{}
		r.maxIdx = max(r.maxIdx, ti)
		return nil, errAgain
	}
	// Table growth writes the new blocks and table synchronously.
	if err := r.writeBlocksSync(); err != nil {
		return nil, err
	}
	// The table is full: build a new, larger one in a fresh area after
	// everything counted so far.
	used := ceilDiv(max(ci+1, (newBlock>>img.cb)+1), r.rbEnts)
	if _, err := r.area(used*r.rbEnts*img.cs, 0, false, ti, newBlock); err != nil {
		return nil, err
	}
	return nil, errAgain
}

// area creates a new refcount table, and the refcount blocks it needs, in
// clusters starting at start, covering everything up to the new structures
// plus additional clusters; it switches the header to it and frees the old
// table (QEMU's qcow2_refcount_area). It returns the end of the new area.
func (r *refcounts) area(start, additional uint64, exact bool, newIdx, newOff uint64) (uint64, error) {
	a, err := r.planArea(start, additional, exact, newIdx, newOff)
	if err != nil {
		return 0, err
	}
	if err := r.fillArea(a); err != nil {
		return 0, err
	}
	if err := r.installTable(a.table, a.tableOff); err != nil {
		return 0, err
	}
	return a.end, nil
}

// refArea is the layout of a new refcount area: the new blocks from start,
// then the new table at tableOff, up to end.
type refArea struct {
	start, tableOff, end uint64
	table                []uint64 // the new table; entries of new blocks filled by fillArea
	areaIdx, blocks      uint64   // table indexes [areaIdx, blocks) describe the area
}

// planArea sizes the new table and the blocks it needs and reserves their
// space on disk.
func (r *refcounts) planArea(start, additional uint64, exact bool, newIdx, newOff uint64) (*refArea, error) {
	img := r.img
	cs := img.cs
	totalBlocks, _ := RefcountMetadataSize(start/cs+additional, cs, r.order, !exact)
	tableSize := totalBlocks
	if !exact {
		tableSize += ceilDiv(totalBlocks, 2)
	}
	tableSize = roundUp(tableSize, cs/8)
	if totalBlocks > MaxRefTableBytes/8 || tableSize > MaxRefTableBytes/8 {
		return nil, fmt.Errorf("refcount table would exceed %d bytes: %w", MaxRefTableBytes, syscall.EFBIG)
	}
	a := &refArea{start: start, table: make([]uint64, tableSize), areaIdx: (start / cs) / r.rbEnts, blocks: totalBlocks}
	for i, e := range r.table.nonZero() {
		if i >= min(tableSize, r.maxIdx+1) {
			break
		}
		a.table[i] = e
	}
	if newOff != 0 {
		a.table[newIdx] = newOff
	}
	var newBlocks uint64
	for i := a.areaIdx; i < totalBlocks; i++ {
		if a.table[i] == 0 {
			newBlocks++
		}
	}
	a.tableOff = start + newBlocks*cs
	a.end = a.tableOff + tableSize*8
	for c := start; c < a.end; c += cs {
		if rc, err := r.get(c >> img.cb); err != nil {
			return nil, err
		} else if rc != 0 {
			return nil, img.signalCorruption(int64(c), "cluster %d, meant for new refcount structures, is in use", c/cs)
		}
	}
	if err := img.f.ZeroRange(int64(start), int64(a.end-start)); err != nil {
		return nil, fmt.Errorf("reserving space for a new refcount table: %w", err)
	}
	return a, nil
}

// fillArea creates the new blocks in the cache and counts every cluster of
// the area (blocks and table) with refcount 1.
func (r *refcounts) fillArea(a *refArea) error {
	img := r.img
	cs := img.cs
	blockOff := a.start
	for i := a.areaIdx; i < a.blocks; i++ {
		var blk *cacheEntry
		if a.table[i] != 0 {
			b, err := r.rbc.get(a.table[i] & RefTableOffMask)
			if err != nil {
				return err
			}
			blk = b
		} else {
			blk = r.rbc.getEmpty(blockOff)
			r.rbc.markDirty(blk)
			a.table[i] = blockOff
			blockOff += cs
		}
		first := i * r.rbEnts * cs
		if first >= a.end {
			continue
		}
		j := uint64(0)
		if first < a.start {
			j = (a.start - first) / cs
		}
		for endIdx := min((a.end-first)/cs, r.rbEnts); j < endIdx; j++ {
			if GetRefcount(blk.data, j, r.order) != 0 {
				return img.signalCorruption(int64(first+j*cs), "cluster %d, meant for new refcount structures, is in use", first/cs+j)
			}
			SetRefcount(blk.data, j, r.order, 1)
		}
		r.rbc.markDirty(blk)
	}
	return nil
}

// installTable makes table, to be written at off, the refcount table: the
// blocks are made durable first, then the table, then the header points
// at it (one sector write, synced); the old table is freed last.
func (r *refcounts) installTable(table []uint64, off uint64) error {
	img := r.img
	if err := r.writeBlocksSync(); err != nil {
		return err
	}
	buf := make([]byte, len(table)*8)
	for i, v := range table {
		binary.BigEndian.PutUint64(buf[i*8:], v)
	}
	if _, err := img.f.WriteAt(buf, int64(off)); err != nil {
		return err
	}
	if err := img.f.Sync(); err != nil {
		return err
	}
	clusters := uint64(len(buf)) / img.cs
	var hb [12]byte
	binary.BigEndian.PutUint64(hb[0:], off)
	binary.BigEndian.PutUint32(hb[8:], uint32(clusters))
	if _, err := img.f.WriteAt(hb[:], HdrRefcountTableOffset); err != nil {
		return err
	}
	if err := img.f.Sync(); err != nil {
		return err
	}
	oldOff, oldSize := r.tableOff, r.table.len()
	clear(r.dirtyTable) // the new table holds every entry
	r.table = sparseFrom(table)
	r.tableOff = off
	img.hdr.RefcountTableOffset = off
	img.hdr.RefcountTableClusters = uint32(clusters)
	r.updateMaxIdx()
	img.metaChanged()
	// The header no longer points at the old table: free it now.
	return r.update(oldOff, oldSize*8, 1, true)
}

// writeBlocksSync writes dirty refcount blocks and syncs, then the table
// entries of new blocks, and syncs again.
func (r *refcounts) writeBlocksSync() error {
	if r.rbc.dirty > 0 {
		if err := r.rbc.writeDirty(); err != nil {
			return err
		}
		if err := r.img.f.Sync(); err != nil {
			return err
		}
	}
	if len(r.dirtyTable) == 0 {
		return nil
	}
	if err := r.writeTable(); err != nil {
		return err
	}
	return r.img.f.Sync()
}
