package image

import "fmt"

// Refcount returns the refcount of the host cluster containing off.
func (img *Image) Refcount(off uint64) (uint64, error) { return img.rc.get(off >> img.cb) }

// MetadataOverlap names the qcow2 metadata structure (header, L1 table,
// refcount table, a refcount block, an L2 table of the active L1 table, the
// snapshot table) that overlaps the host range [off, off+n), or returns ""
// when none does.
func (img *Image) MetadataOverlap(off, n uint64) string {
	over := func(a, l uint64) bool { return l > 0 && off < a+l && a < off+n }
	if over(0, img.cs) {
		return "the header cluster"
	}
	if over(img.hdr.L1TableOffset, uint64(len(img.l1))*8) {
		return "the L1 table"
	}
	if over(img.rc.tableOff, uint64(len(img.rc.table))*8) {
		return "the refcount table"
	}
	for i, e := range img.rc.table {
		if b := e & RefTableOffMask; b != 0 && over(b, img.cs) {
			return fmt.Sprintf("refcount block %d", i)
		}
	}
	for i, e := range img.l1 {
		if t := e & L1OffsetMask; t != 0 && over(t, img.cs) {
			return fmt.Sprintf("the L2 table of L1 entry %d", i)
		}
	}
	if img.hdr.NbSnapshots > 0 && over(img.hdr.SnapshotsOffset, img.cs) {
		return "the snapshot table"
	}
	return ""
}
