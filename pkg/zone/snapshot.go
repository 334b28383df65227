package zone

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/zqimg/zqimg/pkg/image"
)

// Saved write pointers.
//
// A snapshot of a zoned image records the write pointers of its sequential
// zones in the snapshot table entry's extra data, after the 24 bytes QEMU
// defines (QEMU keeps extra data it does not know when it rewrites the
// table). The record, version 1, all integers big-endian:
//
//	bytes 0-3    magic "ZWPT" (0x5a575054)
//	bytes 4-5    version: 1
//	bytes 6-7    length of the whole record in bytes, CRC included
//	bytes 8-11   nr_zones of the image when the snapshot was taken
//	bytes 12-15  conventional_zones
//	bytes 16-23  zone_size in bytes
//	bytes 24-    runs, for the sequential zones in order: each run is two
//	             unsigned LEB128 varints, a zone count (>= 1) and the write
//	             pointer's distance from the zone start in 512-byte sectors,
//	             the same for every zone of the run
//	last 4 bytes CRC-32C (Castagnoli) of the record before it
//
// Runs keep the record small when zones are empty or full; a snapshot
// table entry holds at most 1024 bytes of extra data, so an image with
// very many partially written zones (roughly more than 150) cannot save
// them and the snapshot is refused. A reader ignores a record of a higher
// version, and refuses an apply without a valid record: the data would
// then disagree with the zones.
const (
	wpRecordMagic   = 0x5a575054
	wpRecordVersion = 1
	wpRecordHeader  = 24
)

// MaxSavedWPBytes is the room for the record in a snapshot table entry.
const MaxSavedWPBytes = image.MaxSnapshotExtraSize - image.SnapshotKnownExtraSize

// ErrNoSavedWP reports a snapshot of a zoned image without saved write
// pointers (taken by another program).
var ErrNoSavedWP = errors.New("the snapshot has no saved zone write pointers")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SavedWP is the decoded record: the write pointers (absolute byte
// offsets) of every zone, conventional zones holding their start.
type SavedWP struct {
	NrZones           uint32
	ConventionalZones uint32
	ZoneSize          uint64
	WP                []uint64
}

// EncodeSavedWP encodes the write pointers of a zoned image.
func EncodeSavedWP(h *Header, wp []uint64) []byte {
	b := make([]byte, wpRecordHeader, 64)
	be := binary.BigEndian
	be.PutUint32(b[0:], wpRecordMagic)
	be.PutUint16(b[4:], wpRecordVersion)
	be.PutUint32(b[8:], h.NrZones)
	be.PutUint32(b[12:], h.ConventionalZones)
	be.PutUint64(b[16:], h.ZoneSize)
	for i := h.ConventionalZones; i < h.NrZones; {
		rel := (wp[i] - h.ZoneStart(i)) / 512
		j := i + 1
		for j < h.NrZones && (wp[j]-h.ZoneStart(j))/512 == rel {
			j++
		}
		b = binary.AppendUvarint(b, uint64(j-i))
		b = binary.AppendUvarint(b, rel)
		i = j
	}
	be.PutUint16(b[6:], uint16(min(len(b)+4, 0xffff)))
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// DecodeSavedWP decodes a record; ok is false when b does not start with
// one (no record, or a later version). A record for more than maxZones
// zones is refused before anything is allocated for it.
func DecodeSavedWP(b []byte, maxZones uint32) (s *SavedWP, ok bool, err error) {
	be := binary.BigEndian
	if len(b) < wpRecordHeader+4 || be.Uint32(b) != wpRecordMagic || be.Uint16(b[4:]) != wpRecordVersion {
		return nil, false, nil
	}
	n := int(be.Uint16(b[6:]))
	if n < wpRecordHeader+4 || n > len(b) {
		return nil, true, fmt.Errorf("saved write pointers: record length %d out of range (%d bytes of extra data)", n, len(b))
	}
	b = b[:n]
	if got, want := crc32.Checksum(b[:n-4], castagnoli), be.Uint32(b[n-4:]); got != want {
		return nil, true, fmt.Errorf("saved write pointers: CRC-32C 0x%08x does not match the stored 0x%08x", got, want)
	}
	s = &SavedWP{NrZones: be.Uint32(b[8:]), ConventionalZones: be.Uint32(b[12:]), ZoneSize: be.Uint64(b[16:])}
	if s.ZoneSize < 512 || s.ZoneSize&(s.ZoneSize-1) != 0 || s.NrZones == 0 || s.NrZones > min(maxZones, MaxZones) || s.ConventionalZones >= s.NrZones {
		return nil, true, fmt.Errorf("saved write pointers: impossible geometry: %d zones of %d bytes, %d conventional", s.NrZones, s.ZoneSize, s.ConventionalZones)
	}
	s.WP = make([]uint64, s.NrZones)
	for i := uint32(0); i < s.ConventionalZones; i++ {
		s.WP[i] = uint64(i) * s.ZoneSize
	}
	runs := b[wpRecordHeader : n-4]
	i := s.ConventionalZones
	for len(runs) > 0 {
		cnt, k := binary.Uvarint(runs)
		if k <= 0 {
			return nil, true, fmt.Errorf("saved write pointers: bad run count at byte %d", n-4-len(runs))
		}
		runs = runs[k:]
		rel, k := binary.Uvarint(runs)
		if k <= 0 {
			return nil, true, fmt.Errorf("saved write pointers: bad run offset at byte %d", n-4-len(runs))
		}
		runs = runs[k:]
		if cnt == 0 || cnt > uint64(s.NrZones-i) || rel > s.ZoneSize/512 {
			return nil, true, fmt.Errorf("saved write pointers: run of %d zones at sector offset %d does not fit zones %d-%d", cnt, rel, i, s.NrZones-1)
		}
		for ; cnt > 0; cnt-- {
			s.WP[i] = uint64(i)*s.ZoneSize + rel*512
			i++
		}
	}
	if i != s.NrZones {
		return nil, true, fmt.Errorf("saved write pointers: the runs cover %d of %d zones", i, s.NrZones)
	}
	return s, true, nil
}

// CreateSnapshot takes an internal snapshot (qemu-img snapshot -c). On a
// zoned device the write pointers are flushed and saved with it.
func (d *Device) CreateSnapshot(name string) (*image.SnapshotEntry, error) {
	d.lock()
	defer d.unlock()
	if err := d.flush(); err != nil {
		return nil, err
	}
	o := image.SnapshotCreateOptions{Name: name}
	if err := d.loadAll(); err != nil {
		return nil, err
	}
	if d.h != nil {
		o.OwnExtra = EncodeSavedWP(d.h, d.m.wp)
		if len(o.OwnExtra) > MaxSavedWPBytes {
			partial := uint32(0)
			for i := d.m.conv; i < d.m.nr; i++ {
				if c := d.m.cond(i); c != CondEmpty && c != CondFull {
					partial++
				}
			}
			return nil, fmt.Errorf("the write pointers of %d zones (%d partially written) encode to %d bytes, more than the %d bytes a snapshot table entry holds; finish or reset zones first", d.m.nr, partial, len(o.OwnExtra), MaxSavedWPBytes)
		}
	}
	return d.img.CreateSnapshot(o)
}

// DeleteSnapshot deletes the first snapshot named name (qemu-img snapshot -d).
func (d *Device) DeleteSnapshot(name string) error {
	d.lock()
	defer d.unlock()
	if err := d.flush(); err != nil {
		return err
	}
	return d.img.DeleteSnapshot(name)
}

// ApplySnapshot reverts the device to a snapshot (qemu-img snapshot -a):
// its data, its size, and on a zoned device the write pointers saved with
// it, all in one atomic switch. The zones then agree with the data: every
// zone is as it was when the snapshot was taken (open zones come back
// CLOSED, as after any reopen). A zoned snapshot without saved write
// pointers (QEMU's) is refused with ErrNoSavedWP.
func (d *Device) ApplySnapshot(idOrName string) error {
	d.lock()
	defer d.unlock()
	if err := d.flush(); err != nil {
		return err
	}
	if d.h == nil {
		return d.img.ApplySnapshot(idOrName, image.SnapshotApplyOptions{})
	}
	entries, err := d.img.Snapshots()
	if err != nil {
		return err
	}
	k, ok := image.FindSnapshot(entries, idOrName)
	if !ok {
		return fmt.Errorf("snapshot %q: %w", idOrName, image.ErrSnapshotNotFound)
	}
	sn := &entries[k]
	size := uint64(d.Size())
	if ds, ok := sn.DiskSize(); ok {
		size = ds
	}
	saved, ok, err := DecodeSavedWP(sn.OwnExtra(), uint32(min((size+d.h.ZoneSize-1)/d.h.ZoneSize, MaxZones)))
	if err != nil {
		return fmt.Errorf("snapshot %s (%s): %w", sn.ID, sn.Name, err)
	}
	if !ok {
		return fmt.Errorf("snapshot %s (%s): %w (it was not taken by zqimg); applying it would leave the zones disagreeing with the data", sn.ID, sn.Name, ErrNoSavedWP)
	}
	nh := *d.h
	nh.NrZones = saved.NrZones
	nh.MetaSize = 8 * uint64(saved.NrZones)
	if saved.ZoneSize != d.h.ZoneSize || saved.ConventionalZones != d.h.ConventionalZones {
		return fmt.Errorf("snapshot %s (%s): its saved write pointers are for zones of %d bytes with %d conventional, the image has zones of %d bytes with %d conventional", sn.ID, sn.Name, saved.ZoneSize, saved.ConventionalZones, d.h.ZoneSize, d.h.ConventionalZones)
	}
	if err := nh.Validate(size); err != nil {
		return fmt.Errorf("snapshot %s (%s) cannot be applied to this zoned configuration: %w", sn.ID, sn.Name, err)
	}
	for i, wp := range saved.WP {
		zl := nh.ZoneLen(uint32(i), size)
		e := wp
		if uint32(i) < nh.ConventionalZones {
			e |= ConvBit
		}
		if p := nh.EntryProblem(uint32(i), e, zl); p != "" {
			return fmt.Errorf("snapshot %s (%s): saved write pointers: %s", sn.ID, sn.Name, p)
		}
	}
	if err := d.swapTable(&nh, saved.WP, func(u image.TableUpdate) error {
		return d.img.ApplySnapshot(sn.ID, image.SnapshotApplyOptions{Tables: []image.TableUpdate{u}})
	}); err != nil {
		return err
	}
	return nil
}

// swapTable runs op, which switches the image to a new size and state
// together with a new write-pointer table holding wp for the zoned header
// nh (the extension is moved to the header's first sector first, so that
// the switch is one atomic write), then rebuilds the zone state.
func (d *Device) swapTable(nh *Header, wp []uint64, op func(image.TableUpdate) error) error {
	if err := d.img.MoveExtensionFirst(ExtMagic); err != nil {
		return fmt.Errorf("preparing the header for an atomic switch of the write-pointer table: %w", err)
	}
	entries := make([]uint64, len(wp))
	for i, v := range wp {
		entries[i] = v
		if uint32(i) < nh.ConventionalZones {
			entries[i] |= ConvBit
		}
	}
	u := image.TableUpdate{
		Magic:  ExtMagic,
		OldOff: d.h.MetaOffset,
		OldLen: d.h.MetaSize,
		Data:   EncodeTable(entries),
		Patch: func(off uint64) []byte {
			h := *nh
			h.MetaOffset = off
			return h.Marshal()
		},
	}
	if err := op(u); err != nil {
		return err
	}
	// Reload the zone state from what the image now holds.
	ext, ok := d.img.Extension(ExtMagic)
	if !ok {
		return fmt.Errorf("%w: the zoned extension is missing after the switch", image.ErrCorrupt)
	}
	h, err := ParseHeader(ext)
	if err != nil {
		return err
	}
	d.img.SetLayerTable(TableName, h.MetaOffset, h.MetaSize)
	cur := make([]uint64, len(wp))
	copy(cur, wp)
	faults := d.m.faults
	d.h = h
	d.t = loadedTable(d.img, h, uint64(d.img.Size()), cur)
	d.m = newMachine(h, uint64(d.img.Size()), cur)
	if faults != nil && faults.Validate(h.NrZones) == nil {
		d.m.faults = faults
	}
	d.m.countClosed()
	clear(d.dirty)
	return nil
}
