package image

import (
	"encoding/binary"
	"fmt"
	"syscall"
)

// The metadata overlap check (QEMU's qcow2_check_metadata_overlap, in its
// default "cached" mode, plus the tables of layers above this package).
//
// Before guest data is written to a host cluster, before an L2 table or a
// refcount block is modified or written back, and before a write drops a
// table entry's reference to host clusters, the host range is looked up
// in metaIndex, the set of clusters holding metadata. A hit means a table
// entry points into metadata (the image is corrupt): the operation is
// refused with an *OverlapError, nothing is written, and the image is
// marked corrupt (the corrupt bit is set and synced), so that no later
// open may write to it until 'check -r all' repairs it. Reads are not
// checked. The lookup costs one map probe per host cluster of the range.

// metaKind is a kind of metadata structure.
type metaKind uint8

const (
	metaHeader     metaKind = iota // the header cluster
	metaActiveL1                   // the active L1 table
	metaActiveL2                   // an L2 table of the active L1 table
	metaRefTable                   // the refcount table
	metaRefBlock                   // a refcount block
	metaSnapTable                  // the snapshot table
	metaInactiveL1                 // a snapshot's L1 table
	metaLayer                      // a table of a layer above (the zoned write-pointer table)
)

// qemuName returns QEMU's name of the kind (its metadata_ol_names), so
// that the refusal reads as qemu-io's; layer tables have no QEMU name and
// are named by their layer.
func (k metaKind) qemuName() string {
	return [...]string{"qcow2_header", "active L1 table", "active L2 table", "refcount table",
		"refcount block", "snapshot table", "inactive L1 table", ""}[k]
}

// metaOwner is what a metadata cluster holds.
type metaOwner struct {
	kind metaKind
	idx  uint64 // L1 index (L2 table), refcount table index (block), snapshot or layer table index
	refs uint32 // L1 entries naming the cluster (active L2 tables); 1 otherwise
}

// metaIndex maps the index of every host cluster holding metadata to its
// owner. It is built on first use (buildMeta) and kept up to date as L2
// tables and refcount blocks are allocated; changes that move whole
// structures (a new refcount table, a transaction) drop it (metaChanged)
// so that the next check rebuilds it.
type metaIndex struct {
	c       map[uint64]metaOwner
	snapIDs []string // IDs of the snapshots, by table position
}

// layerTable is a metadata area owned by a layer above this package.
type layerTable struct {
	name   string
	off, n uint64 // bytes
}

// OverlapError reports an operation refused because its host range lies
// in metadata: a table entry points into the header, an L1, L2 or
// refcount table or block, the snapshot table or a layer's table. The
// image has been marked corrupt. It wraps ErrCorrupt.
type OverlapError struct {
	Metadata string // the kind of structure, in QEMU's words ("active L1 table")
	Detail   string // which structure ("the L2 table of L1 entry 3")
	Table    string // the table that would have been written ("refcount block 2"); "" for guest data
	Host     uint64 // host offset of the refused write or dropped reference, bytes
	Guest    int64  // guest offset of the request, bytes; -1 for a table write-back
	Free     bool   // the operation would have dropped a reference (freed clusters)
	Marked   bool   // the corrupt bit was set (false only if setting it failed)
}

func (e *OverlapError) Error() string {
	op := "write on"
	if e.Free {
		op = "free of"
	}
	s := fmt.Sprintf("Preventing invalid %s metadata (overlaps with %s): ", op, e.Metadata)
	switch {
	case e.Table != "":
		s += fmt.Sprintf("%s at host offset 0x%x lies in %s", e.Table, e.Host, e.Detail)
		if e.Guest >= 0 {
			s += fmt.Sprintf(" (request at guest offset 0x%x)", e.Guest)
		}
	default:
		s += fmt.Sprintf("guest offset 0x%x maps to host offset 0x%x, which lies in %s", e.Guest, e.Host, e.Detail)
	}
	if e.Marked {
		return s + "; the image is marked corrupt (run 'zqimg check -r all' to repair it)"
	}
	return s + "; marking the image corrupt failed"
}

func (e *OverlapError) Unwrap() error { return ErrCorrupt }

// Errno returns EIO, as QEMU fails such a write.
func (e *OverlapError) Errno() syscall.Errno { return syscall.EIO }

// SetLayerTable records the host range [off, off+n) (bytes) as metadata
// named name, owned by a layer above this package (the zoned
// write-pointer table): guest data written there is refused like a write
// over qcow2 metadata, and HostWriteAt may write only there. A second
// call with the same name replaces the range.
func (img *Image) SetLayerTable(name string, off, n uint64) {
	img.mu.Lock()
	defer img.mu.Unlock()
	for i := range img.layers {
		if img.layers[i].name == name {
			img.layers[i].off, img.layers[i].n = off, n
			img.metaChanged()
			return
		}
	}
	img.layers = append(img.layers, layerTable{name, off, n})
	img.metaChanged()
}

// moveLayerTable follows a layer table that a transaction moved from
// oldOff to off (n bytes).
func (img *Image) moveLayerTable(oldOff, off, n uint64) {
	for i := range img.layers {
		if img.layers[i].off == oldOff {
			img.layers[i].off, img.layers[i].n = off, n
		}
	}
	img.metaChanged()
}

// metaChanged drops the metadata index: structures moved.
func (img *Image) metaChanged() { img.meta = nil }

// metaAdd records a new L2 table (l1i) or refcount block (ti) at host
// cluster offset off, if the index is built.
func (img *Image) metaAdd(kind metaKind, off, idx uint64) {
	if img.meta != nil {
		img.meta.add(off>>img.cb, metaOwner{kind: kind, idx: idx, refs: 1})
	}
}

// metaRemoveL2 forgets that L1 entry l1i names the L2 table at off.
func (img *Image) metaRemoveL2(off uint64) {
	if img.meta == nil || off == 0 {
		return
	}
	c := off >> img.cb
	if o, ok := img.meta.c[c]; ok && o.kind == metaActiveL2 {
		if o.refs > 1 {
			o.refs--
			img.meta.c[c] = o
		} else {
			delete(img.meta.c, c)
		}
	}
}

func (m *metaIndex) add(c uint64, o metaOwner) {
	if cur, ok := m.c[c]; ok {
		if cur.kind == o.kind && o.kind == metaActiveL2 {
			cur.refs++
			m.c[c] = cur
		}
		return // the first owner stays
	}
	m.c[c] = o
}

func (m *metaIndex) addRange(cb uint32, off, n uint64, o metaOwner) {
	if n == 0 {
		return
	}
	for c := off >> cb; c <= (off+n-1)>>cb; c++ {
		m.add(c, o)
	}
}

// buildMeta builds the metadata index from the header, the active L1
// table, the refcount table, the snapshot table and the layer tables.
// mu is held.
func (img *Image) buildMeta() *metaIndex {
	if img.meta != nil {
		return img.meta
	}
	m := &metaIndex{c: map[uint64]metaOwner{}}
	one := func(k metaKind, idx uint64) metaOwner { return metaOwner{kind: k, idx: idx, refs: 1} }
	m.add(0, one(metaHeader, 0))
	m.addRange(img.cb, img.hdr.L1TableOffset, img.l1.len()*8, one(metaActiveL1, 0))
	m.addRange(img.cb, img.rc.tableOff, img.rc.table.len()*8, one(metaRefTable, 0))
	for i, e := range img.rc.table.nonZero() {
		if b := e & RefTableOffMask; b != 0 {
			m.add(b>>img.cb, one(metaRefBlock, i))
		}
	}
	for i, e := range img.l1.nonZero() {
		if t := L1Entry(e).Offset(); t != 0 {
			m.add(t>>img.cb, one(metaActiveL2, i))
		}
	}
	if img.hdr.NbSnapshots > 0 {
		entries, size, err := img.readSnapshots()
		if err != nil {
			// A table that cannot be read: protect its first cluster.
			size, entries = 1, nil
		}
		m.addRange(img.cb, img.hdr.SnapshotsOffset, size, one(metaSnapTable, 0))
		for i, s := range entries {
			m.snapIDs = append(m.snapIDs, s.ID)
			m.addRange(img.cb, s.L1Offset, uint64(s.L1Size)*8, one(metaInactiveL1, uint64(i)))
		}
	}
	for i, l := range img.layers {
		m.addRange(img.cb, l.off, l.n, one(metaLayer, uint64(i)))
	}
	img.meta = m
	return m
}

// findMeta returns the owner of the first metadata cluster in the host
// range [off, off+n) (bytes) for which allowed is false, with the offset
// of that cluster. mu is held.
func (img *Image) findMeta(off, n uint64, allowed func(metaOwner) bool) (metaOwner, uint64, bool) {
	if n == 0 {
		return metaOwner{}, 0, false
	}
	m := img.buildMeta()
	for c := off >> img.cb; c <= (off+n-1)>>img.cb; c++ {
		if o, ok := m.c[c]; ok && (allowed == nil || !allowed(o)) {
			return o, c << img.cb, true
		}
	}
	return metaOwner{}, 0, false
}

// describe names the structure o owns.
func (img *Image) describe(o metaOwner) (kind, detail string) {
	kind = o.kind.qemuName()
	switch o.kind {
	case metaHeader:
		detail = "the header cluster"
	case metaActiveL1:
		detail = "the L1 table"
	case metaActiveL2:
		detail = fmt.Sprintf("the L2 table of L1 entry %d", o.idx)
	case metaRefTable:
		detail = "the refcount table"
	case metaRefBlock:
		detail = fmt.Sprintf("refcount block %d", o.idx)
	case metaSnapTable:
		detail = "the snapshot table"
	case metaInactiveL1:
		detail = "the L1 table of a snapshot"
		if img.meta != nil && o.idx < uint64(len(img.meta.snapIDs)) {
			detail = fmt.Sprintf("the L1 table of snapshot ID %s", img.meta.snapIDs[o.idx])
		}
	case metaLayer:
		detail = "a layer's table"
		if o.idx < uint64(len(img.layers)) {
			detail = "the " + img.layers[o.idx].name
		}
		kind = detail[len("the "):]
	}
	return kind, detail
}

// refuseOverlap marks the image corrupt and returns the OverlapError for
// an operation on host offset host (writing table, if not "") that
// found o.
func (img *Image) refuseOverlap(o metaOwner, table string, host uint64, guest int64, free bool) error {
	kind, detail := img.describe(o)
	e := &OverlapError{Metadata: kind, Detail: detail, Table: table, Host: host, Guest: guest, Free: free}
	e.Marked = img.markCorrupt()
	return e
}

// checkDataWrite refuses a write of guest data (at guest offset g) to the
// host range [host, host+n) if it overlaps metadata. mu is held.
func (img *Image) checkDataWrite(host, n, g uint64) error {
	if o, _, hit := img.findMeta(host, n, nil); hit {
		return img.refuseOverlap(o, "", host, int64(g), false)
	}
	return nil
}

// checkDrop refuses to drop the reference L2 entry e (of guest offset g)
// holds if its host clusters hold metadata: freeing them would let the
// allocator hand metadata out. mu is held.
func (img *Image) checkDrop(e L2Entry, g uint64) error {
	off, n := img.entryRange(e)
	if n == 0 {
		return nil
	}
	if o, _, hit := img.findMeta(off, n, nil); hit {
		return img.refuseOverlap(o, "", off, int64(g), true)
	}
	return nil
}

// entryRange returns the host bytes an L2 entry references (n=0: none).
func (img *Image) entryRange(e L2Entry) (off, n uint64) {
	if e.Compressed() {
		return e.CompressedRange(img.cb)
	}
	if h := e.Offset(); h != 0 {
		return h, img.cs
	}
	return 0, 0
}

// checkL2Update refuses to change the L2 table of L1 entry l1i (for a
// write at guest offset g) if the table lies in other metadata: with
// OFLAG_COPIED it would be modified in place (written back over that
// metadata), without it copied and its cluster freed. An L2 table named
// by another L1 entry too counts as other metadata when it would be
// modified in place. mu is held.
func (img *Image) checkL2Update(l1i, g uint64) error {
	if l1i >= img.l1.len() {
		return nil
	}
	l1e := L1Entry(img.l1.get(l1i))
	off := l1e.Offset()
	if off == 0 {
		return nil
	}
	inPlace := l1e.Copied()
	o, _, hit := img.findMeta(off, img.cs, func(o metaOwner) bool {
		return o.kind == metaActiveL2 && o.refs == 1
	})
	if !hit {
		return nil
	}
	if o.kind == metaActiveL2 && o.idx == l1i {
		// Shared with another L1 entry: name that one.
		for j, e := range img.l1.nonZero() {
			if j != l1i && L1Entry(e).Offset() == off {
				o.idx = j
				break
			}
		}
	}
	return img.refuseOverlap(o, fmt.Sprintf("the L2 table of L1 entry %d", l1i), off, int64(g), !inPlace)
}

// tableGuard returns the write-back check of a metadata cache holding
// tables of the given kind: a table may overlap only tables of its kind.
func (img *Image) tableGuard(kind metaKind) func(off uint64) error {
	what := map[metaKind]string{metaActiveL2: "an L2 table", metaRefBlock: "a refcount block"}[kind]
	return func(off uint64) error {
		if kind == metaActiveL2 && img.event != nil {
			if err := img.event(EventL2Update); err != nil {
				return fmt.Errorf("writing an L2 table at offset 0x%x: %w", off, err)
			}
		}
		o, _, hit := img.findMeta(off, img.cs, func(o metaOwner) bool { return o.kind == kind })
		if hit {
			return img.refuseOverlap(o, what, off, -1, false)
		}
		return nil
	}
}

// checkHostWrite refuses a raw write by a layer above (HostWriteAt) that
// reaches qcow2 metadata or another layer's table. mu is held.
func (img *Image) checkHostWrite(off, n uint64) error {
	own := -1
	for i, l := range img.layers {
		if off >= l.off && off+n <= l.off+l.n {
			own = i
		}
	}
	if o, _, hit := img.findMeta(off, n, func(o metaOwner) bool { return o.kind == metaLayer && int(o.idx) == own }); hit {
		return img.refuseOverlap(o, fmt.Sprintf("a layer's write of %d bytes", n), off, -1, false)
	}
	return nil
}

// markCorrupt sets the corrupt bit in memory and on disk (synced), after
// which the guard refuses every write. It reports whether the bit reached
// the file. The image must be writable.
func (img *Image) markCorrupt() bool {
	if img.writable() != nil {
		return img.corrupt
	}
	img.corrupt = true
	img.hdr.IncompatibleFeatures |= IncompatCorrupt
	// The guard now refuses writes: set the bit through the raw file.
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], img.hdr.IncompatibleFeatures)
	if _, err := img.raw.WriteAt(b[:], HdrIncompatibleFeatures); err != nil {
		return false
	}
	return img.raw.Sync() == nil
}
