package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"syscall"
	"time"
)

// Snapshot table limits, as QEMU enforces them.
const (
	// SnapshotEntryHeaderSize is the fixed part of a snapshot table entry.
	SnapshotEntryHeaderSize = 40
	// SnapshotKnownExtraSize is the extra data QEMU 7.2 writes and knows:
	// vm_state_size_large, disk_size and icount (8 bytes each).
	SnapshotKnownExtraSize = 24
	// MaxSnapshotExtraSize bounds the extra data of one entry
	// (QCOW_MAX_SNAPSHOT_EXTRA_DATA): QEMU refuses images with more.
	MaxSnapshotExtraSize = 1024
	// MaxSnapshotTableSize bounds the whole snapshot table in bytes.
	MaxSnapshotTableSize = 1024 * MaxSnapshots
	// MaxSnapshotNameSize bounds an ID or a name (the entry stores 16-bit lengths).
	MaxSnapshotNameSize = 65535
)

// ErrSnapshotNotFound reports a snapshot name or ID that is not in the table.
var ErrSnapshotNotFound = errors.New("snapshot not found")

// SnapshotEntry mirrors one entry of the snapshot table. Integers are host
// values; ParseSnapshotTable and MarshalSnapshotTable convert them from and
// to the big-endian on-disk form. Extra holds the entry's extra data as
// stored (its length is the entry's extra_data_size): the fields QEMU
// defines in its first 24 bytes are read through the accessor methods, and
// anything after them (another program's data, such as zqimg's saved write
// pointers) is preserved as it is.
type SnapshotEntry struct {
	L1Offset    uint64 // bytes 0-7: host offset of the snapshot's L1 table
	L1Size      uint32 // bytes 8-11: entries of that L1 table
	DateSec     uint32 // bytes 16-19
	DateNsec    uint32 // bytes 20-23
	VMClockNsec uint64 // bytes 24-31: guest run time, nanoseconds
	VMState32   uint32 // bytes 32-35: VM state size (ignored when Extra has the 64-bit one)
	Extra       []byte // extra data (its length is bytes 36-39)
	ID          string // unique ID string (length at bytes 12-13)
	Name        string // name (length at bytes 14-15)
}

func (e *SnapshotEntry) extraU64(off int) (uint64, bool) {
	if len(e.Extra) < off+8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(e.Extra[off:]), true
}

// VMStateSize returns the VM state size in bytes (the 64-bit extra field
// when present, else the 32-bit one).
func (e *SnapshotEntry) VMStateSize() uint64 {
	if v, ok := e.extraU64(0); ok {
		return v
	}
	return uint64(e.VMState32)
}

// DiskSize returns the virtual disk size recorded with the snapshot, if any.
func (e *SnapshotEntry) DiskSize() (uint64, bool) { return e.extraU64(8) }

// ICount returns the record/replay instruction count, or -1 when absent
// or disabled.
func (e *SnapshotEntry) ICount() int64 {
	if v, ok := e.extraU64(16); ok {
		return int64(v)
	}
	return -1
}

// Date returns the time the snapshot was taken.
func (e *SnapshotEntry) Date() time.Time {
	return time.Unix(int64(e.DateSec), int64(e.DateNsec))
}

// OwnExtra returns the extra data after the fields QEMU defines (nil if none).
func (e *SnapshotEntry) OwnExtra() []byte {
	if len(e.Extra) <= SnapshotKnownExtraSize {
		return nil
	}
	return e.Extra[SnapshotKnownExtraSize:]
}

// CompleteExtra extends extra data shorter than the 24 bytes QEMU defines
// with the values QEMU reads for the missing fields, as
// qcow2_write_snapshots writes every entry: the 64-bit VM state size is the
// 32-bit one, the disk size diskSize (the image's current virtual size),
// the instruction count -1 (none). Version 3 requires the first 16 bytes;
// a longer extra data is kept as it is.
func (e *SnapshotEntry) CompleteExtra(diskSize uint64) {
	n := len(e.Extra)
	if n >= SnapshotKnownExtraSize {
		return
	}
	x := make([]byte, SnapshotKnownExtraSize)
	copy(x, e.Extra)
	be := binary.BigEndian
	if n < 8 {
		be.PutUint64(x[0:], uint64(e.VMState32))
	}
	if n < 16 {
		be.PutUint64(x[8:], diskSize)
	}
	be.PutUint64(x[16:], ^uint64(0))
	e.Extra = x
}

// size returns the bytes the entry occupies in the table, padding included.
func (e *SnapshotEntry) size() uint64 {
	return roundUp(uint64(SnapshotEntryHeaderSize+len(e.Extra)+len(e.ID)+len(e.Name)), 8)
}

// ParseSnapshotTable decodes n entries from b, the table read at host
// offset tableOff (used in messages). Each error names the entry and the
// file offset of the bad field.
func ParseSnapshotTable(b []byte, n uint32, tableOff uint64, clusterSize uint64) ([]SnapshotEntry, error) {
	if n > MaxSnapshots {
		return nil, formatErr(60, "too many snapshots: %d (at most %d)", n, MaxSnapshots)
	}
	be := binary.BigEndian
	entries := make([]SnapshotEntry, 0, n)
	pos := uint64(0)
	for i := uint32(0); i < n; i++ {
		at := int64(tableOff + pos)
		if pos+SnapshotEntryHeaderSize > uint64(len(b)) {
			return nil, formatErr(at, "snapshot table entry %d is truncated: the table ends after %d bytes", i, len(b))
		}
		h := b[pos:]
		e := SnapshotEntry{
			L1Offset:    be.Uint64(h[0:]),
			L1Size:      be.Uint32(h[8:]),
			DateSec:     be.Uint32(h[16:]),
			DateNsec:    be.Uint32(h[20:]),
			VMClockNsec: be.Uint64(h[24:]),
			VMState32:   be.Uint32(h[32:]),
		}
		idLen, nameLen := uint64(be.Uint16(h[12:])), uint64(be.Uint16(h[14:]))
		extra := uint64(be.Uint32(h[36:]))
		if extra > MaxSnapshotExtraSize {
			return nil, formatErr(at+36, "snapshot table entry %d has %d bytes of extra data (at most %d)", i, extra, MaxSnapshotExtraSize)
		}
		end := pos + SnapshotEntryHeaderSize + extra + idLen + nameLen
		if end > uint64(len(b)) {
			return nil, formatErr(at, "snapshot table entry %d (%d bytes) extends past the end of the table (%d bytes)", i, end-pos, len(b))
		}
		p := pos + SnapshotEntryHeaderSize
		e.Extra = append([]byte{}, b[p:p+extra]...)
		p += extra
		e.ID = string(b[p : p+idLen])
		p += idLen
		e.Name = string(b[p : p+nameLen])
		if e.L1Offset%clusterSize != 0 {
			return nil, formatErr(at, "snapshot table entry %d (ID %q): L1 table offset 0x%x is not cluster aligned", i, e.ID, e.L1Offset)
		}
		if uint64(e.L1Size)*8 > MaxL1Bytes {
			return nil, formatErr(at+8, "snapshot table entry %d (ID %q): L1 table of %d entries is too large", i, e.ID, e.L1Size)
		}
		if e.L1Size != 0 && e.L1Offset > MaxHostOffset-uint64(e.L1Size)*8 {
			return nil, formatErr(at, "snapshot table entry %d (ID %q): L1 table offset 0x%x out of range", i, e.ID, e.L1Offset)
		}
		entries = append(entries, e)
		pos = roundUp(end, 8)
	}
	return entries, nil
}

// MarshalSnapshotTable encodes the entries, each padded to 8 bytes.
func MarshalSnapshotTable(entries []SnapshotEntry) []byte {
	var n uint64
	for i := range entries {
		n += entries[i].size()
	}
	b := make([]byte, n)
	be := binary.BigEndian
	pos := uint64(0)
	for i := range entries {
		e := &entries[i]
		h := b[pos:]
		be.PutUint64(h[0:], e.L1Offset)
		be.PutUint32(h[8:], e.L1Size)
		be.PutUint16(h[12:], uint16(len(e.ID)))
		be.PutUint16(h[14:], uint16(len(e.Name)))
		be.PutUint32(h[16:], e.DateSec)
		be.PutUint32(h[20:], e.DateNsec)
		be.PutUint64(h[24:], e.VMClockNsec)
		be.PutUint32(h[32:], e.VMState32)
		be.PutUint32(h[36:], uint32(len(e.Extra)))
		p := SnapshotEntryHeaderSize
		p += copy(h[p:], e.Extra)
		p += copy(h[p:], e.ID)
		copy(h[p:], e.Name)
		pos += e.size()
	}
	return b
}

// SnapshotTableSize returns the bytes MarshalSnapshotTable produces.
func SnapshotTableSize(entries []SnapshotEntry) uint64 {
	var n uint64
	for i := range entries {
		n += entries[i].size()
	}
	return n
}

// snapshotsToChange checks that the image may be written, flushes what
// is cached (a snapshot switch rewrites the tables from the disk) and
// returns the snapshot table and its size in bytes. The caller holds
// img.mu.
func (img *Image) snapshotsToChange() ([]SnapshotEntry, uint64, error) {
	if err := img.writable(); err != nil {
		return nil, 0, err
	}
	if err := img.flush(); err != nil {
		return nil, 0, err
	}
	return img.readSnapshots()
}

// readSnapshots reads and parses the snapshot table. Its size is not in
// the header: it is read entry by entry.
func (img *Image) readSnapshots() ([]SnapshotEntry, uint64, error) {
	n := img.hdr.NbSnapshots
	if n == 0 {
		return nil, 0, nil
	}
	off := img.hdr.SnapshotsOffset
	fileSize, err := img.f.Size()
	if err != nil {
		return nil, 0, err
	}
	// Read the fixed part of each entry to find the table's length, then
	// parse the whole table at once.
	var size, need uint64 // need: end of the last entry before its padding
	var hb [SnapshotEntryHeaderSize]byte
	for i := uint32(0); i < n; i++ {
		at := off + size
		if at+SnapshotEntryHeaderSize > uint64(fileSize) {
			return nil, 0, formatErr(int64(at), "snapshot table entry %d lies beyond the end of the file (%d bytes)", i, fileSize)
		}
		if err := readFull(img.f, hb[:], int64(at)); err != nil {
			return nil, 0, fmt.Errorf("reading snapshot table entry %d at offset 0x%x: %w", i, at, err)
		}
		extra := uint64(binary.BigEndian.Uint32(hb[36:]))
		if extra > MaxSnapshotExtraSize {
			return nil, 0, qemuErr(int64(at+36), fmt.Sprintf("Too much extra metadata in snapshot table entry %d\nYou can force-remove this extra metadata with qemu-img check -r all", i),
				"snapshot table entry %d has %d bytes of extra data (at most %d); 'zqimg check -r all' cuts it to %[3]d", i, extra, MaxSnapshotExtraSize)
		}
		n := SnapshotEntryHeaderSize + extra + uint64(binary.BigEndian.Uint16(hb[12:])) + uint64(binary.BigEndian.Uint16(hb[14:]))
		need = size + n
		size += roundUp(n, 8)
		// The limit is on the table without the last entry's padding
		// (QEMU's table_length).
		if need > MaxSnapshotTableSize {
			return nil, 0, qemuErr(int64(off), fmt.Sprintf("Snapshot table is too big\nYou can force-remove all %d overhanging snapshots with qemu-img check -r all", img.hdr.NbSnapshots-i),
				"snapshot table too large: more than %d bytes; 'zqimg check -r all' drops the %d snapshots from entry %d on", MaxSnapshotTableSize, img.hdr.NbSnapshots-i, i)
		}
	}
	// The padding of the last entry may lie beyond the end of the file.
	if off+need > uint64(fileSize) {
		return nil, 0, formatErr(int64(off), "snapshot table (%d bytes) extends past the end of the file (%d bytes)", need, fileSize)
	}
	b := make([]byte, size)
	if err := readData(img.f, b, off); err != nil {
		return nil, 0, fmt.Errorf("reading the snapshot table at offset 0x%x: %w", off, err)
	}
	entries, err := ParseSnapshotTable(b, n, off, img.cs)
	return entries, size, err
}

// Snapshots returns the snapshot table entries in table order.
func (img *Image) Snapshots() ([]SnapshotEntry, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.closed {
		return nil, ErrClosed
	}
	s, _, err := img.readSnapshots()
	return s, err
}

// FindSnapshot returns the entry whose ID is idOrName, or else the first
// whose name is idOrName (the lookup qemu-img snapshot -a uses).
func FindSnapshot(entries []SnapshotEntry, idOrName string) (int, bool) {
	for i := range entries {
		if entries[i].ID == idOrName {
			return i, true
		}
	}
	return FindSnapshotByName(entries, idOrName)
}

// FindSnapshotByName returns the first entry named name (the lookup
// qemu-img snapshot -d uses).
func FindSnapshotByName(entries []SnapshotEntry, name string) (int, bool) {
	for i := range entries {
		if entries[i].Name == name {
			return i, true
		}
	}
	return 0, false
}

// nextSnapshotID returns one more than the largest numeric ID (QEMU's
// find_new_snapshot_id: IDs that are not numbers count as 0).
func nextSnapshotID(entries []SnapshotEntry) string {
	var maxID uint64
	for i := range entries {
		if v, err := strconv.ParseUint(entries[i].ID, 10, 64); err == nil && v > maxID {
			maxID = v
		}
	}
	return strconv.FormatUint(maxID+1, 10)
}

// SnapshotCreateOptions describe a new snapshot.
type SnapshotCreateOptions struct {
	Name string
	// Date is the time recorded; zero means now (microsecond precision,
	// as QEMU records it).
	Date time.Time
	// OwnExtra is appended to the snapshot entry's extra data after the
	// 24 bytes QEMU defines (the zoned layer's saved write pointers).
	OwnExtra []byte
}

// CreateSnapshot records the current state of the disk as a new internal
// snapshot and returns its entry.
//
// The active L1 table becomes the snapshot's L1 table as it is, with the
// L2 tables it points to; the active image gets a new L1 table and copies
// of those L2 tables with OFLAG_COPIED cleared on every data cluster,
// whose refcounts are incremented. The new tables, the new snapshot table
// and a rebuilt refcount structure are written and synced before one
// write of the header's first sector switches to them (see txn), so a
// crash leaves the image as it was before or after, never in between.
func (img *Image) CreateSnapshot(o SnapshotCreateOptions) (*SnapshotEntry, error) {
	img.lock()
	defer img.unlock()
	if err := img.writable(); err != nil {
		return nil, err
	}
	if len(o.Name) > MaxSnapshotNameSize {
		return nil, fmt.Errorf("snapshot name of %d bytes is too long (at most %d)", len(o.Name), MaxSnapshotNameSize)
	}
	if SnapshotKnownExtraSize+len(o.OwnExtra) > MaxSnapshotExtraSize {
		return nil, fmt.Errorf("snapshot extra data of %d bytes exceeds the %d bytes a snapshot table entry holds", SnapshotKnownExtraSize+len(o.OwnExtra), MaxSnapshotExtraSize)
	}
	entries, tableSize, err := img.snapshotsToChange()
	if err != nil {
		return nil, err
	}
	if len(entries) >= MaxSnapshots {
		return nil, fmt.Errorf("too many snapshots: the image already has %d, the most qcow2 allows: %w", len(entries), syscall.EFBIG)
	}
	date := o.Date
	if date.IsZero() {
		date = time.Now().Truncate(time.Microsecond)
	}
	extra := make([]byte, SnapshotKnownExtraSize, SnapshotKnownExtraSize+len(o.OwnExtra))
	binary.BigEndian.PutUint64(extra[8:], img.hdr.Size)
	extra = append(extra, o.OwnExtra...)
	e := SnapshotEntry{
		L1Offset: img.hdr.L1TableOffset,
		L1Size:   img.hdr.L1Size,
		DateSec:  uint32(date.Unix()),
		DateNsec: uint32(date.Nanosecond()),
		Extra:    extra,
		ID:       nextSnapshotID(entries),
		Name:     o.Name,
	}
	t, err := img.beginTxn()
	if err != nil {
		return nil, err
	}
	// The snapshot keeps the active L1 table and L2 tables; the active
	// image gets copies.
	newL1 := make([]uint64, img.l1.len())
	for i, l1e := range img.l1.nonZero() {
		l2 := l1e & L1OffsetMask
		if l2 == 0 {
			continue
		}
		tb, err := t.readTable(l2, fmt.Sprintf("the L2 table of L1 entry %d", i))
		if err != nil {
			return nil, err
		}
		cp := make([]byte, len(tb))
		copy(cp, tb)
		if err := t.forEachRef(cp, 1); err != nil {
			return nil, err
		}
		img.clearCopied(cp)
		off, err := t.allocWrite(cp)
		if err != nil {
			return nil, err
		}
		newL1[i] = off | OflagCopied
	}
	if err := t.setL1(newL1, img.hdr.Size); err != nil {
		return nil, err
	}
	entries = append(entries, e)
	if err := t.setSnapshots(entries, tableSize); err != nil {
		return nil, err
	}
	if err := t.commit(); err != nil {
		return nil, err
	}
	return &entries[len(entries)-1], nil
}

// clearCopied clears OFLAG_COPIED in every entry of an L2 table.
func (img *Image) clearCopied(t []byte) {
	for i := uint64(0); i < img.l2Ents; i++ {
		o := i * img.entSize
		e := binary.BigEndian.Uint64(t[o:])
		binary.BigEndian.PutUint64(t[o:], e&^OflagCopied)
	}
}

// SnapshotApplyOptions adjust an apply.
type SnapshotApplyOptions struct {
	// Tables replace metadata tables owned by a layer above this package
	// (the zoned write-pointer table) in the same atomic switch.
	Tables []TableUpdate
}

// ApplySnapshot makes the snapshot with ID or name idOrName the active
// state of the disk (qemu-img snapshot -a), including its virtual disk
// size when the snapshot records one. The active image gets a new L1
// table pointing to the snapshot's L2 tables (now shared, so without
// OFLAG_COPIED); the previous active tables and data lose a reference.
// Like CreateSnapshot it switches in one header write.
func (img *Image) ApplySnapshot(idOrName string, o SnapshotApplyOptions) error {
	img.lock()
	defer img.unlock()
	entries, _, err := img.snapshotsToChange()
	if err != nil {
		return err
	}
	i, ok := FindSnapshot(entries, idOrName)
	if !ok {
		return fmt.Errorf("snapshot %q: %w", idOrName, ErrSnapshotNotFound)
	}
	sn := &entries[i]
	size := img.hdr.Size
	if ds, ok := sn.DiskSize(); ok {
		size = ds
	}
	if img.hdr.Version < 3 && size != img.hdr.Size {
		return fmt.Errorf("snapshot %q has a disk size of %d bytes, the image %d: a version 2 image with snapshots cannot be resized", sn.ID, size, img.hdr.Size)
	}
	t, err := img.beginTxn()
	if err != nil {
		return err
	}
	snL1, err := t.readL1(sn.L1Offset, sn.L1Size, fmt.Sprintf("the L1 table of snapshot %s", sn.ID))
	if err != nil {
		return err
	}
	// The old active tree loses its references.
	if err := t.dropTree(img.hdr.L1TableOffset, img.l1.slice()); err != nil {
		return err
	}
	active := t.activeL2s()
	newL1 := make([]uint64, len(snL1))
	for j, l1e := range snL1 {
		l2 := l1e & L1OffsetMask
		if l2 == 0 {
			continue
		}
		tb, err := t.readTable(l2, fmt.Sprintf("the L2 table of L1 entry %d of snapshot %s", j, sn.ID))
		if err != nil {
			return err
		}
		if err := t.forEachRef(tb, 1); err != nil {
			return err
		}
		if err := t.inc(l2, img.cs, 1); err != nil {
			return err
		}
		newL1[j] = l2
		// Every cluster of this table is now shared with the snapshot:
		// its entries must not carry OFLAG_COPIED. A table of the old
		// active image cannot be changed before the switch: it is copied.
		if !img.anyCopied(tb) {
			continue
		}
		cp := make([]byte, len(tb))
		copy(cp, tb)
		img.clearCopied(cp)
		if active[l2] {
			if err := t.inc(l2, img.cs, -1); err != nil {
				return err
			}
			off, err := t.allocWrite(cp)
			if err != nil {
				return err
			}
			newL1[j] = off
			if t.rc[off/img.cs] == 1 {
				newL1[j] |= OflagCopied
			}
			continue
		}
		// Only inactive snapshots use it: their flags are not read, so
		// it can be fixed in place before the switch.
		t.writeAt(cp, l2)
	}
	if err := t.setL1(newL1, size); err != nil {
		return err
	}
	t.tables = o.Tables
	return t.commit()
}

// anyCopied reports whether an L2 table has an entry with OFLAG_COPIED.
func (img *Image) anyCopied(t []byte) bool {
	for i := uint64(0); i < img.l2Ents; i++ {
		if binary.BigEndian.Uint64(t[i*img.entSize:])&OflagCopied != 0 {
			return true
		}
	}
	return false
}

// DeleteSnapshot removes the first snapshot named name (qemu-img snapshot
// -d looks snapshots up by name only). Its L1 table, and the L2 tables and
// data only it referenced, are freed; OFLAG_COPIED is set again on the
// active image's clusters it no longer shares, in copies of the active
// tables that need it. One header write switches to the result.
func (img *Image) DeleteSnapshot(name string) error {
	img.lock()
	defer img.unlock()
	entries, tableSize, err := img.snapshotsToChange()
	if err != nil {
		return err
	}
	i, ok := FindSnapshotByName(entries, name)
	if !ok {
		return fmt.Errorf("snapshot %q: %w", name, ErrSnapshotNotFound)
	}
	sn := entries[i]
	t, err := img.beginTxn()
	if err != nil {
		return err
	}
	snL1, err := t.readL1(sn.L1Offset, sn.L1Size, fmt.Sprintf("the L1 table of snapshot %s", sn.ID))
	if err != nil {
		return err
	}
	if err := t.dropTree(sn.L1Offset, snL1); err != nil {
		return err
	}
	if err := t.fixActiveCopied(); err != nil {
		return err
	}
	entries = append(entries[:i:i], entries[i+1:]...)
	if err := t.setSnapshots(entries, tableSize); err != nil {
		return err
	}
	return t.commit()
}
