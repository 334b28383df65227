package image

import (
	"fmt"

	"github.com/zqimg/zqimg/pkg/internal/arith"
)

// Refcount returns the refcount of the host cluster containing off.
func (img *Image) Refcount(off uint64) (uint64, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.rc.get(off >> img.cb)
}

// MetadataOverlap names the qcow2 metadata structure (header, L1 table,
// refcount table, a refcount block, an L2 table of the active L1 table, the
// snapshot table) that overlaps the host range [off, off+n), or returns ""
// when none does.
func (img *Image) MetadataOverlap(off, n uint64) string {
	img.mu.Lock()
	defer img.mu.Unlock()
	over := func(a, l uint64) bool { return arith.Overlaps(a, l, off, n) }
	if over(0, img.cs) {
		return "the header cluster"
	}
	if over(img.hdr.L1TableOffset, img.l1.len()*8) {
		return "the L1 table"
	}
	if over(img.rc.tableOff, img.rc.table.len()*8) {
		return "the refcount table"
	}
	for i, e := range img.rc.table.nonZero() {
		if b := e & RefTableOffMask; b != 0 && over(b, img.cs) {
			return fmt.Sprintf("refcount block %d", i)
		}
	}
	for i, e := range img.l1.nonZero() {
		if t := L1Entry(e).Offset(); t != 0 && over(t, img.cs) {
			return fmt.Sprintf("the L2 table of L1 entry %d", i)
		}
	}
	if img.hdr.NbSnapshots > 0 && over(img.hdr.SnapshotsOffset, img.cs) {
		return "the snapshot table"
	}
	return ""
}

// Kind says how a guest byte is stored.
type Kind int

// Storage kinds reported by Map.
const (
	Unallocated Kind = iota // reads from the backing file, or zeroes
	Zero                    // reads as zeroes (zero flag)
	Data                    // stored at a host offset
	Compressed              // inside a compressed cluster
)

func (k Kind) String() string {
	return [...]string{"unallocated", "zero", "data", "compressed"}[k]
}

// Map reports how the guest byte at off is stored: its kind and, for Data,
// its host offset (for Compressed, the offset of the compressed stream).
func (img *Image) Map(off int64) (Kind, uint64, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.checkRange(off, 1); err != nil {
		return 0, 0, err
	}
	g := uint64(off)
	t, err := img.l2Table(g >> (img.cb + img.l2Bits))
	if err != nil || t == nil {
		return Unallocated, 0, err
	}
	e := img.entry(t, (g>>img.cb)&(img.l2Ents-1))
	m, host, _ := img.classify(e, g&(img.cs-1))
	switch m {
	case mapData:
		return Data, host, nil
	case mapZero:
		return Zero, 0, nil
	case mapCompressed:
		o, _ := e.CompressedRange(img.cb)
		return Compressed, o, nil
	}
	return Unallocated, 0, nil
}

// checkMetadataRefcounts verifies that every metadata cluster of the active
// image (header, L1 table, refcount table, refcount blocks, L2 tables) has a
// non-zero refcount. Otherwise the allocator could hand one out and data
// would overwrite metadata; such an image must be repaired first.
//
// A refcount block whose offset is not cluster aligned is not refused
// here, as QEMU opens such an image (iotest 305), unless a metadata
// cluster's refcount is in it: nothing can read or write the refcounts it
// holds, so the first request that needs one of them marks the image
// corrupt and fails (refcounts.block) before anything is allocated in its
// range.
func (img *Image) checkMetadataRefcounts() error {
	check := func(off, length uint64, what string) error {
		for c := off &^ (img.cs - 1); c < off+length; c += img.cs {
			ti := c >> img.cb >> img.rc.rbBits
			if ti < img.rc.table.len() {
				if b := img.rc.table.get(ti) & RefTableOffMask; b&(img.cs-1) != 0 {
					return fmt.Errorf("%w: refcount block %d offset 0x%x is not cluster aligned; run 'zqimg check -r all'", ErrCorrupt, ti, b)
				}
			}
			rc, err := img.rc.get(c >> img.cb)
			if err != nil {
				return err
			}
			if rc == 0 {
				return fmt.Errorf("%w: %s at offset 0x%x has refcount 0; run 'zqimg check -r all' to repair the image before writing", ErrCorrupt, what, c)
			}
		}
		return nil
	}
	if err := check(0, img.cs, "the header cluster"); err != nil {
		return err
	}
	if err := check(img.hdr.L1TableOffset, img.l1.len()*8, "the L1 table"); err != nil {
		return err
	}
	if err := check(img.rc.tableOff, img.rc.table.len()*8, "the refcount table"); err != nil {
		return err
	}
	for i, e := range img.rc.table.nonZero() {
		if b := e & RefTableOffMask; b != 0 {
			if b&(img.cs-1) != 0 {
				continue // see above
			}
			if err := check(b, img.cs, fmt.Sprintf("refcount block %d", i)); err != nil {
				return err
			}
		}
	}
	for i, e := range img.l1.nonZero() {
		if t := L1Entry(e).Offset(); t != 0 {
			if t&(img.cs-1) != 0 {
				return fmt.Errorf("%w: L2 table offset 0x%x (L1 entry %d) is not cluster aligned; run 'zqimg check -r all'", ErrCorrupt, t, i)
			}
			if err := check(t, img.cs, fmt.Sprintf("the L2 table of L1 entry %d", i)); err != nil {
				return err
			}
		}
	}
	return nil
}
