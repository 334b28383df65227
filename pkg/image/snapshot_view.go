package image

import (
	"errors"
	"fmt"
)

// SnapshotRef names an internal snapshot to read instead of the active
// disk (Options.Snapshot; qemu-img convert -l): IDOrName matches an ID,
// else a name (bdrv_snapshot_load_tmp_by_id_or_name); otherwise ID and
// Name, each when not empty, must both match.
type SnapshotRef struct {
	IDOrName string
	ID, Name string
}

// IsZero reports whether r names no snapshot.
func (r SnapshotRef) IsZero() bool { return r == SnapshotRef{} }

// ErrSnapshotView refuses Options.Snapshot on a writable or zoned image:
// the view replaces the active L1 table in memory only, and a zoned
// image's write pointers are those of the active disk.
var ErrSnapshotView = errors.New("an internal snapshot is read from a read-only, non-zoned image only")

// find returns the index of the snapshot r names.
func (r SnapshotRef) find(entries []SnapshotEntry) (int, bool) {
	if r.IDOrName != "" {
		return FindSnapshot(entries, r.IDOrName)
	}
	for i, e := range entries {
		if (r.ID == "" || e.ID == r.ID) && (r.Name == "" || e.Name == r.Name) {
			return i, true
		}
	}
	return 0, false
}

// loadSnapshotView makes the snapshot r names the disk this image reads:
// its L1 table replaces the active one (in memory; the image is
// read-only), as QEMU's qcow2_snapshot_load_tmp does. The virtual size
// stays the header's, as in QEMU.
func (img *Image) loadSnapshotView(r SnapshotRef, fileSize int64) error {
	if !img.ro || img.hdr.IncompatibleFeatures&IncompatZoned != 0 {
		return ErrSnapshotView
	}
	entries, _, err := img.readSnapshots()
	if err != nil {
		return err
	}
	i, ok := r.find(entries)
	if !ok {
		//lint:ignore ST1005 qemu's message
		return fmt.Errorf("Can't find snapshot: %w", ErrSnapshotNotFound)
	}
	sn := &entries[i]
	n := uint64(sn.L1Size)
	if n*8 > MaxL1Bytes || sn.L1Offset%img.cs != 0 || sn.L1Offset+n*8 > uint64(fileSize) {
		return formatErr(int64(sn.L1Offset), "the L1 table of snapshot %s (%d entries) is invalid or extends past the end of the file (%d bytes)", sn.ID, n, fileSize)
	}
	l1, err := readSparseTable(img.f, int64(sn.L1Offset), n)
	if err != nil {
		return err
	}
	img.l1 = l1
	img.hdr.L1Size, img.hdr.L1TableOffset = sn.L1Size, sn.L1Offset
	img.meta = nil
	return nil
}
