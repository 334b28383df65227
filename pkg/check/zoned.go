package check

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/internal/arith"
	"github.com/zqimg/zqimg/pkg/zone"
)

// zstate is what the zoned checks learnt: the zoned extension (repaired
// where it could be) and the write pointers, or nil wp when the table
// cannot be interpreted.
type zstate struct {
	h         zone.Header
	size      uint64 // virtual size
	wp        []uint64
	tableOff  uint64 // the counted write-pointer table (size 0: not counted)
	tableSize uint64
	// repair: the table was repaired where needed (written before any
	// data beyond a write pointer is discarded), so discarding is allowed.
	repair bool
	// plausible: the table's entries are all possible (read
	// little-endian, or big-endian when stored byte-swapped); bad counts
	// the impossible ones otherwise.
	plausible bool
	bad       int
}

// zoneLen returns the length of zone i (the last one may be short).
func (z *zstate) zoneLen(i uint32) uint64 { return z.h.ZoneLen(i, z.size) }

// beyond returns the sequential zone whose write pointer the guest range
// [g, g+n) lies wholly at or beyond (for every zone it touches), or -1.
func (z *zstate) beyond(g, n uint64) int64 {
	if z == nil || z.wp == nil || g >= z.size || n == 0 {
		return -1
	}
	zs := z.h.ZoneSize
	first := g / zs
	if first >= uint64(len(z.wp)) {
		return -1
	}
	last := min((g+n-1)/zs, uint64(len(z.wp))-1)
	for zi := first; zi <= last; zi++ {
		if zi < uint64(z.h.ConventionalZones) {
			return -1
		}
		if max(g, zi*zs) < z.wp[zi] {
			return -1
		}
	}
	return int64(first)
}

// clampEntry returns the nearest valid entry for zone i (see doc.go): the
// start with the conventional bit for a conventional zone; for a
// sequential zone the write pointer without the conventional bit: below
// the zone, the start; above the zone end, the position a finish gives
// (start + zone_size, past the device end for a short last zone: FULL);
// otherwise rounded down to 512 bytes, and brought back to the capacity
// end when it lies between the capacity end and the zone end.
func clampEntry(h *zone.Header, i uint32, e, zoneLen uint64) uint64 {
	s := h.ZoneStart(i)
	if i < h.ConventionalZones {
		return s | zone.ConvBit
	}
	end := s + zoneLen
	capEnd := s + min(h.ZoneCapacity, zoneLen)
	v := e &^ zone.ConvBit
	switch {
	case v < s:
		return s
	case v > end:
		return s + h.ZoneSize
	}
	v &^= 511
	if v < s {
		v = s
	}
	if v > capEnd && v != end {
		v = capEnd
	}
	return v
}

// checkZoned checks the zoned extension and the write-pointer table, counts
// the table's clusters, and learns the write pointers for the check of the
// data beyond them. With repairErrors it repairs what it can, writing the
// table first and then the extension (see doc.go).
//
// When the extension does not lead to the table (missing, unusable,
// zonedmeta_offset wrong), a read-only pass looks for the real table after
// the walk (locate); the repairing pass after it gets its place
// (c.located) and counts it, so that a repair never frees the table's
// clusters as leaked, and points zonedmeta_offset to it when the rest of
// the extension is valid.
func (c *checker) checkZoned(fix Mode) error {
	c.z = nil
	c.zext = nil
	c.needLocate = false
	c.keptTable = extent{}
	bit := c.hdr.IncompatibleFeatures&image.IncompatZoned != 0
	e := c.ext(image.ExtZoned)
	if !bit && e == nil {
		return nil
	}
	if c.res.Zoned == nil {
		c.res.Zoned = &ZonedResult{}
	}
	repair := fix&repairErrors != 0 && !c.headerShared
	zx := c.zonedExtension(e, bit, repair)
	if zx == nil {
		c.needLocate = true
		c.keepLocated()
		return nil
	}
	z := &zstate{h: zx.v, size: c.hdr.Size}
	c.z = z
	if zx.usable {
		if err := c.checkFaultPlan(zx.v.NrZones, repair); err != nil {
			return err
		}
	}
	placed, err := c.placeTable(z, zx, repair)
	if err != nil {
		return err
	}
	if !zx.usable || c.unsafeTable {
		// A table sharing clusters with other structures holds their
		// bytes: it is reported (checkZonedOverlap), not interpreted. The
		// extension itself may still be repaired.
		c.needLocate = true
		if repair && zx.usable {
			return c.writeZonedExt(zx)
		}
		return nil
	}
	var entries []uint64
	tableChanged := false
	if placed {
		raw := make([]byte, z.tableSize)
		if err := c.readAt(raw, z.tableOff); err != nil {
			return err
		}
		entries = c.checkEntries(z, zx.old, raw, repair, &tableChanged)
		if z.bad*2 > int(z.h.NrZones) {
			// Mostly impossible entries: perhaps not the table at all.
			c.needLocate = true
		} else {
			c.checkActive(z, zx, repair)
		}
	}
	if !repair {
		return nil
	}
	z.repair = true
	// Repairs: the table first (a write pointer only moves back, before
	// the data beyond it is discarded; new entries exist before the
	// extension counts them), then the extension.
	if tableChanged {
		if err := c.write(zone.EncodeTable(entries), z.tableOff); err != nil {
			return err
		}
		if err := c.syncWrites(); err != nil {
			return err
		}
	}
	return c.writeZonedExt(zx)
}

// checkActive reports more active zones than max_active_zones allows.
// On disk every zone that is neither EMPTY nor FULL (nor injected READ
// ONLY or OFFLINE) is CLOSED, and CLOSED zones are active: a device
// opening the image would hold more active zones than its limit. The
// repair raises max_active_zones to the number of active zones (no zone
// changes condition, no data moves).
func (c *checker) checkActive(z *zstate, zx *zonedExt, repair bool) {
	h := &z.h
	if h.MaxActiveZones == 0 {
		return
	}
	var faults *zone.FaultPlan
	if e := c.ext(zone.FaultExtMagic); e != nil {
		if p, err := zone.ParseFaultExtension(e.Data); err == nil && p.Validate(h.NrZones) == nil {
			faults = p
		}
	}
	var active uint32
	var names []string
	for i := h.ConventionalZones; i < h.NrZones; i++ {
		start := h.ZoneStart(i)
		capEnd := start + min(h.ZoneCapacity, z.zoneLen(i))
		if wp := z.wp[i]; wp == start || wp >= capEnd || faults.Cond(i) != 0 {
			continue
		}
		active++
		if len(names) < 10 {
			names = append(names, fmt.Sprint(i))
		}
	}
	if active <= h.MaxActiveZones {
		return
	}
	list := strings.Join(names, ", ")
	if active > uint32(len(names)) {
		list += fmt.Sprintf(" and %d more", active-uint32(len(names)))
	}
	f := finding(KindCorruption, ProblemActiveZones, "%s zoned: %d zones are active (CLOSED: zones %s), more than max_active_zones %d", verb(repair), active, list, h.MaxActiveZones)
	if repair {
		f.Msg += fmt.Sprintf("; max_active_zones set to %d", active)
		zx.v.MaxActiveZones = active
		zx.changed = true
	}
	c.zonedExtErr(f.repaired(repair))
}

// zonedExt is the zoned extension as checkZoned repairs it.
type zonedExt struct {
	e       *image.Extension
	old     *zone.Header // as stored
	v       zone.Header  // with the derivable fields repaired
	bit     bool         // the zoned format bit is set
	usable  bool         // v is valid: the write pointers can be checked
	changed bool         // v differs from old: the extension must be written
}

// zonedExtErr reports a problem of the zoned extension (or of where its
// table lies or how it is stored), found or repaired, and counts it.
func (c *checker) zonedExtErr(f Finding) {
	c.report(f)
	if f.Repaired {
		c.res.Zoned.ExtensionErrorsFixed++
	} else {
		c.res.Zoned.ExtensionErrors++
	}
}

// zonedExtension parses and validates the zoned extension e, repairing in
// v the fields that can be derived (repaired only if the whole extension
// ends up valid, since only then is it written). It returns nil when the
// extension is missing or cannot be parsed.
func (c *checker) zonedExtension(e *image.Extension, bit, repair bool) *zonedExt {
	h := c.hdr
	if e == nil {
		c.zonedExtErr(finding(KindCorruption, ProblemZonedExtensionMissing, "ERROR zoned extension: incompatible feature bit 5 (zoned format) is set but the zoned extension (magic 0x%08x) is missing", image.ExtZoned))
		return nil
	}
	zh, err := zone.ParseHeader(e.Data)
	if err != nil {
		c.zonedExtErr(finding(KindCorruption, ProblemZonedExtension, "ERROR zoned extension: %s", fieldMsg(err)))
		return nil
	}
	c.zext = zh
	zx := &zonedExt{e: e, old: zh, v: *zh, bit: bit, usable: true}
	if h.Version < 3 {
		c.zonedExtErr(finding(KindCorruption, ProblemZonedExtension, "ERROR zoned extension: the zoned format in a version %d image (version 3 is required)", h.Version))
		zx.usable = false
	}
	// Fix the fields that can be derived, one problem at a time (Validate
	// reports the first).
	var fixable []string
	for iter := 0; zx.usable; iter++ {
		err := zx.v.Validate(h.Size)
		if err == nil {
			break
		}
		var fe *zone.FieldError
		if iter >= 16 || !errors.As(err, &fe) || !fixZoneField(&zx.v, fe.Field, h.Size, c.cs) {
			for _, m := range fixable {
				c.zonedExtErr(finding(KindCorruption, ProblemZonedExtension, "ERROR zoned extension: %s", m))
			}
			fixable = nil
			c.zonedExtErr(finding(KindCorruption, ProblemZonedExtension, "ERROR zoned extension: %s", fieldMsg(err)))
			zx.usable = false
			break
		}
		fixable = append(fixable, fieldMsg(err))
		zx.changed = true
	}
	for _, m := range fixable {
		c.zonedExtErr(finding(KindCorruption, ProblemZonedExtension, "%s zoned extension: %s", verb(repair), m).repaired(repair))
	}
	c.res.Zoned.Zones, c.res.Zoned.ConventionalZones = zx.v.NrZones, zx.v.ConventionalZones
	if !bit {
		c.zonedExtErr(finding(KindCorruption, ProblemZonedFeatureBit, "%s zoned extension: the zoned extension is present but incompatible feature bit 5 (zoned format) is clear", verb(repair && zx.usable)).repaired(repair && zx.usable))
	}
	return zx
}

// placeTable checks where the extension puts the write-pointer table and
// counts the table when it lies in the file; placed reports it. When the
// read-only pass before found the table elsewhere, zonedmeta_offset is
// pointed to it. A table overlapping other metadata is not to be trusted
// (c.unsafeTable).
func (c *checker) placeTable(z *zstate, zx *zonedExt, repair bool) (placed bool, err error) {
	off, size := zx.v.MetaOffset, zx.v.MetaSize
	var placeErr string
	switch {
	case off == 0 || off&(c.cs-1) != 0:
		placeErr = fmt.Sprintf("write-pointer table offset 0x%x is not a non-zero multiple of the cluster size %d", off, c.cs)
	case size == 0 || size > 8*zone.MaxZones:
		placeErr = fmt.Sprintf("write-pointer table size %d is invalid", size)
	case off+size < off || off+size > c.fileSize:
		placeErr = fmt.Sprintf("write-pointer table [0x%x, 0x%x) extends past the end of the file (%d bytes)", off, off+size, c.fileSize)
	}
	if loc := c.hintTable; loc.size > 0 && zx.usable && loc.size == size && loc.off != off {
		// The read-only pass found the table elsewhere: zonedmeta_offset
		// is wrong. Point it to the table (written with the extension).
		why := placeErr
		if why == "" {
			why = fmt.Sprintf("zonedmeta_offset 0x%x does not point to the write-pointer table", off)
		}
		f := finding(KindCorruption, ProblemZonedTable, "%s zoned: %s; the write-pointer table lies at 0x%x", verb(repair), why, loc.off)
		if repair {
			f.Msg += "; zonedmeta_offset set to it"
		}
		c.zonedExtErr(f.at(loc.off).repaired(repair))
		zx.v.MetaOffset, z.h.MetaOffset = loc.off, loc.off
		off, placeErr, zx.changed = loc.off, "", true
		c.unsafeTable = false
	} else if loc.size > 0 && loc.off != off {
		c.keepLocated()
	}
	if placeErr != "" {
		c.zonedExtErr(finding(KindCorruption, ProblemZonedTable, "ERROR zoned: %s", placeErr).at(off))
		c.needLocate = true
		// The table found where the extension points, but of another
		// size, is kept all the same: never freed as leaked.
		c.keepLocated()
		return false, nil
	}
	c.inc(off, size)
	z.tableOff, z.tableSize = off, size
	if c.unsafeTable {
		return true, nil
	}
	return true, c.checkTableOverlap(zx)
}

// checkTableOverlap finds, before the walk, an overlap of the table with
// the metadata known then (one with guest data is found after the walk:
// checkZonedOverlap), and sets c.unsafeTable unless the table is the
// right one.
func (c *checker) checkTableOverlap(zx *zonedExt) error {
	h := c.hdr
	off, size := zx.v.MetaOffset, zx.v.MetaSize
	if c.l1 == nil {
		l1, err := c.readEntries(h.L1TableOffset, uint64(h.L1Size))
		if err != nil {
			return err
		}
		c.l1 = l1
	}
	l2Overlap := false
	for k := off >> c.cb; k <= (off+size-1)>>c.cb; k++ {
		switch what := c.metadataAt(k); {
		case strings.HasPrefix(what, l2TableOf):
			l2Overlap = true
		case what != "":
			c.unsafeTable = true
		}
	}
	if !l2Overlap || c.unsafeTable {
		return nil
	}
	if !zx.usable {
		c.unsafeTable = true
		return nil
	}
	// An L1 entry points into the table, or the extension points into an
	// L2 table: the table is the right one when its content is a possible
	// table (the L1 entry is then cleared by a repair, see meta.go).
	raw := make([]byte, arith.RoundUp(size, c.cs))
	if err := c.readAt(raw[:size], off); err != nil {
		return err
	}
	if !plausibleTable(raw, size, geometry{zoneSize: zx.v.ZoneSize, nr: uint64(zx.v.NrZones), conv: int64(zx.v.ConventionalZones)}) {
		c.unsafeTable = true
	}
	return nil
}

// keepLocated counts the write-pointer table the read-only pass found
// where the zoned extension does not lead (c.hintTable), when the
// extension cannot be pointed to it: its clusters are in use, not leaked.
func (c *checker) keepLocated() {
	loc := c.hintTable
	if loc.size == 0 || c.keptTable.size > 0 {
		return
	}
	c.inc(loc.off, loc.size)
	c.report(finding(KindInfo, ProblemZonedTable, "The write-pointer table lies at 0x%x (%d bytes), where the zoned extension does not point; its clusters are kept", loc.off, loc.size).at(loc.off))
	c.keptTable = loc
}

// writeZonedExt writes the repaired zoned extension and sets the zoned
// format bit if it was missing, then syncs.
func (c *checker) writeZonedExt(zx *zonedExt) error {
	if !zx.changed && zx.bit {
		return nil
	}
	h := c.hdr
	data := zx.v.Marshal()
	if err := c.write(data, uint64(zx.e.Off)+8); err != nil { // past the extension's magic and length
		return err
	}
	if !zx.bit {
		nf := h.IncompatibleFeatures | image.IncompatZoned
		if err := c.writeU64(image.HdrIncompatibleFeatures, nf); err != nil {
			return err
		}
		h.IncompatibleFeatures = nf
	}
	if err := c.syncWrites(); err != nil {
		return err
	}
	zx.e.Data = data
	return nil
}

// checkEntries checks the write-pointer table entries (raw, little-endian
// on disk) of a valid extension v (read from old) and sets z.wp. It
// returns the entries as they must be written back when repairing.
func (c *checker) checkEntries(z *zstate, old *zone.Header, raw []byte, repair bool, changed *bool) []uint64 {
	v := &z.h
	zr := c.res.Zoned
	n := v.NrZones
	le := zone.DecodeTable(raw)
	// Entries beyond those the table held before an nr_zones repair are
	// new zones: they start empty.
	held := uint64(max(min(old.NrZones, zone.MaxZones), uint32(min(old.MetaSize/8, uint64(zone.MaxZones)))))
	bad := func(t []uint64) int {
		k := 0
		for i := uint32(0); i < n; i++ {
			if uint64(i) < held && v.EntryProblem(i, t[i], z.zoneLen(i)) != "" {
				k++
			}
		}
		return k
	}
	entries := le
	leBad := bad(le)
	z.plausible = leBad == 0
	z.bad = leBad
	if leBad > 0 {
		be := make([]uint64, len(le))
		for i := range be {
			be[i] = binary.BigEndian.Uint64(raw[8*i:])
		}
		if bad(be) == 0 {
			z.plausible, z.bad = true, 0
			c.zonedExtErr(finding(KindCorruption, ProblemZonedByteSwap, "%s zoned: the write-pointer table is stored byte-swapped (big-endian entries): read little-endian, %d of its %d entries are impossible; read big-endian, none is", verb(repair), leBad, n).at(z.tableOff).repaired(repair))
			entries = be
			*changed = true
		}
	}
	z.wp = make([]uint64, n)
	for i := uint32(0); i < n; i++ {
		zl := z.zoneLen(i)
		if uint64(i) >= held {
			if i < v.ConventionalZones {
				entries[i] = v.ZoneStart(i) | zone.ConvBit
			} else {
				entries[i] = v.ZoneStart(i)
			}
			*changed = true
		} else if p := v.EntryProblem(i, entries[i], zl); p != "" {
			nv := clampEntry(v, i, entries[i], zl)
			f := finding(KindCorruption, ProblemWritePointer, "ERROR zone %d: %s", i, p)
			if repair {
				f.Msg = fmt.Sprintf("Repairing zone %d: %s; set to 0x%x", i, p, nv)
			}
			c.report(f.zone(int64(i), int64(entries[i]&^zone.ConvBit)).at(z.tableOff + 8*uint64(i)).repaired(repair))
			if repair {
				zr.WritePointerErrorsFixed++
			} else {
				zr.WritePointerErrors++
			}
			entries[i] = nv
			*changed = true
		}
		z.wp[i] = entries[i] &^ zone.ConvBit
	}
	if !repair {
		*changed = false
	}
	return entries[:n]
}

// fieldMsg returns the message of a zoned extension error without the
// "zoned extension: " prefix of its Error.
func fieldMsg(err error) string {
	var fe *zone.FieldError
	if errors.As(err, &fe) {
		return fe.Msg
	}
	return err.Error()
}

// fixZoneField repairs field of v where a valid value follows from the
// other fields and the image (see doc.go); it reports whether it did.
func fixZoneField(v *zone.Header, field string, size, cs uint64) bool {
	fits := func(need uint64) bool {
		return v.MetaSize != 0 && v.MetaSize <= 8*zone.MaxZones && arith.CeilDiv(need, cs) <= arith.CeilDiv(v.MetaSize, cs)
	}
	switch field {
	case "reserved":
		v.Reserved = [3]byte{}
	case "nr_zones":
		want := arith.CeilDiv(size, v.ZoneSize)
		if want == 0 || want > zone.MaxZones || uint64(v.NrZones) == want || !fits(8*want) {
			return false
		}
		v.NrZones = uint32(want)
		v.MetaSize = 8 * want
	case "zonedmeta_size":
		// nr_zones is valid here (Validate checks it first). A size of 0
		// or of 2^32 - 7 or more says nothing of the table: the table is
		// 8 × nr_zones. Another size must already span as many clusters.
		need := 8 * uint64(v.NrZones)
		if v.MetaSize != 0 && v.MetaSize <= 8*zone.MaxZones && !fits(need) {
			return false
		}
		v.MetaSize = need
	case "max_active_zones":
		v.MaxActiveZones = v.NrZones
	case "max_open_zones":
		if seq := v.NrZones - v.ConventionalZones; v.MaxOpenZones > seq {
			v.MaxOpenZones = seq
		}
		if v.MaxActiveZones != 0 && v.MaxOpenZones > v.MaxActiveZones {
			v.MaxOpenZones = v.MaxActiveZones
		}
	case "max_append_bytes":
		v.MaxAppendBytes &^= 511
		if uint64(v.MaxAppendBytes)+512 >= v.ZoneCapacity {
			if v.ZoneCapacity < 1024 {
				return false
			}
			v.MaxAppendBytes = uint32(min(v.ZoneCapacity-1024, 1<<32-512))
		}
	default:
		return false
	}
	return true
}

// checkBeyondWP checks the entry s of an allocated data cluster of the
// active L1 table (host range [hoff, hoff+hsize)) against the write
// pointers. Data beyond a write pointer is a leak; a repair whose write
// pointers were repaired first (zstate.repair) discards it: the L2 entry
// is cleared here (the walk's writes are synced before any refcount is
// lowered) and the refcount lowered by the compare. done reports that the
// entry was cleared.
func (c *checker) checkBeyondWP(w *l2Walk, s *l2Slot, hoff, hsize uint64) (done bool, err error) {
	zi := c.z.beyond(s.guest, c.cs)
	if zi < 0 {
		return false, nil
	}
	repair := w.repair && c.z.repair
	wp := c.z.wp[zi]
	zr := c.res.Zoned
	c.report(finding(KindLeak, ProblemDataBeyondWP, "%s data beyond write pointer: zone %d wp=0x%x cluster 0x%x (host 0x%x)", pick(repair, "Leaked", "Discarding"), zi, wp, s.guest, hoff).
		zone(zi, int64(wp)).guest(s.guest).at(hoff).cluster(hoff >> c.cb).repaired(repair))
	if !repair {
		zr.DataBeyondWP++
		return false, nil
	}
	zr.DataBeyondWPFixed++
	if err := c.setL2(w, s, image.L2Entry{}); err != nil {
		return false, err
	}
	c.dropRef(hoff, hsize)
	return true, nil
}

// checkZonedOverlap reports write-pointer table clusters that something
// else refers to as well (the refcount compare reports them too).
func (c *checker) checkZonedOverlap() {
	z := c.z
	if z == nil || z.tableSize == 0 {
		return
	}
	for k := z.tableOff >> c.cb; k <= (z.tableOff+z.tableSize-1)>>c.cb; k++ {
		if u := c.used.get(k); u > 1 {
			c.zonedExtErr(finding(KindCorruption, ProblemZonedTableOverlap, "ERROR zoned: write-pointer table cluster %d (offset 0x%x) is also used by %s", k, k<<c.cb, c.describeCluster(k)).clusterAt(k, c.cb))
			// Unless only entries a repair clears (entries into the
			// table, see meta.go) refer to it, the table is not trusted.
			if u-min(u, c.intoMeta[k]+c.garbage[k]) > 1 || !z.plausible {
				c.res.hints.zonedOverlap = true
				c.needLocate = true
			}
		}
	}
}

// describeCluster names the structure that uses cluster k besides the
// write-pointer table.
func (c *checker) describeCluster(k uint64) string {
	if what := c.metadataAt(k); what != "" {
		return what
	}
	return "other metadata or guest data"
}

// l2TableOf starts metadataAt's name of an L2 table.
const l2TableOf = "the L2 table of L1 entry "

// metadataAt names the metadata structure (other than the write-pointer
// table and L2 tables of snapshots) that uses cluster k, or returns "".
func (c *checker) metadataAt(k uint64) string {
	h := c.hdr
	off := k << c.cb
	in := func(a, n uint64) bool { return arith.Overlaps(a, n, off, c.cs) }
	switch {
	case k == 0:
		return "the header"
	case in(h.L1TableOffset, uint64(h.L1Size)*8):
		return "the active L1 table"
	case in(h.RefcountTableOffset, c.reftableN*8):
		return "the refcount table"
	case in(h.SnapshotsOffset, c.snapshotsSize):
		return "the snapshot table"
	}
	for i, e := range c.reftable {
		if e&image.RefTableOffMask>>c.cb == k {
			return fmt.Sprintf("refcount block %d", i)
		}
	}
	for i, e := range c.l1 {
		if t := image.L1Entry(e).Offset(); t != 0 && t>>c.cb == k {
			return fmt.Sprintf("%s%d", l2TableOf, i)
		}
	}
	for _, sn := range c.snapshots {
		if in(sn.l1Off, uint64(sn.l1Size)*8) {
			return fmt.Sprintf("the L1 table of snapshot %s", sn.id)
		}
	}
	return ""
}

// maxLocateProbes bounds the candidate places locate reads.
const maxLocateProbes = 4096

// geometry is a zone layout a write-pointer table is tried against.
type geometry struct {
	zoneSize uint64
	nr       uint64
	conv     int64 // conventional zones; -1: unknown (any prefix)
}

// locate looks, in a read-only pass, for the write-pointer table when the
// zoned extension does not lead to it (missing, unusable, zonedmeta_offset
// wrong or pointing at something else): a run of clusters that hold a
// refcount, that nothing refers to, and whose content is a plausible table
// for the image (every entry possible for its zone, the rest of the last
// cluster zero). The place qemu-img create uses, right after the first
// refcount block, is tried first. The table found is counted (its
// clusters are not leaks) and passed to the repairing pass (hints.table).
func (c *checker) locate() {
	if c.mode != RepairNone || !c.needLocate || c.located.size > 0 || c.hintTable.size > 0 {
		return
	}
	geoms := c.geometries()
	if len(geoms) == 0 {
		return
	}
	free := func(k uint64) bool {
		if k == 0 || k >= c.nb || c.used.get(k) != 0 {
			return false
		}
		s, ok := c.storedAt(k)
		return ok && s > 0
	}
	tried := map[uint64]bool{}
	probes := 0
	try := func(k uint64, layout bool) bool {
		if tried[k] || !free(k) || probes >= maxLocateProbes {
			return false
		}
		tried[k] = true
		probes++
		for _, g := range geoms {
			if g.nr < 2 && !layout && c.zext == nil {
				continue // an empty one-zone table is any zero cluster
			}
			size := 8 * g.nr
			n := arith.CeilDiv(size, c.cs)
			ok := true
			for i := uint64(1); i < n && ok; i++ {
				ok = free(k + i)
			}
			if !ok {
				continue
			}
			raw := make([]byte, n*c.cs)
			if err := c.readAt(raw, k<<c.cb); err != nil {
				return false
			}
			if plausibleTable(raw, size, g) {
				c.located = extent{off: k << c.cb, size: size}
				return true
			}
		}
		return false
	}
	found := false
	if len(c.reftable) > 0 {
		if b := c.reftable[0] & image.RefTableOffMask; b != 0 && b&(c.cs-1) == 0 {
			found = try(b>>c.cb+1, true)
		}
	}
	for k := uint64(1); !found && k < c.nb && probes < maxLocateProbes; k++ {
		found = try(k, false)
	}
	if !found {
		return
	}
	loc := c.located
	c.inc(loc.off, loc.size)
	c.report(finding(KindInfo, ProblemZonedTable, "The write-pointer table was found at 0x%x (%d bytes); the zoned extension does not point to it", loc.off, loc.size).at(loc.off))
	c.res.hints.table = loc
}

// geometries returns the zone layouts a lost write-pointer table may have:
// the one of the zoned extension when its zone size is usable, otherwise
// every power-of-two zone size.
func (c *checker) geometries() []geometry {
	size := c.hdr.Size
	if size == 0 {
		return nil
	}
	if zh := c.zext; zh != nil && zh.ZoneSize >= 512 && zh.ZoneSize&(zh.ZoneSize-1) == 0 {
		nr := arith.CeilDiv(size, zh.ZoneSize)
		if nr == 0 || nr > zone.MaxZones {
			return nil
		}
		conv := int64(-1)
		if uint64(zh.ConventionalZones) < nr {
			conv = int64(zh.ConventionalZones)
		}
		return []geometry{{zoneSize: zh.ZoneSize, nr: nr, conv: conv}}
	}
	var gs []geometry
	for zs := uint64(512); zs != 0; zs <<= 1 {
		nr := arith.CeilDiv(size, zs)
		if nr <= zone.MaxZones {
			gs = append(gs, geometry{zoneSize: zs, nr: nr, conv: -1})
		}
		if nr == 1 {
			break
		}
	}
	return gs
}

// plausibleTable reports whether raw (whole clusters) starts with a
// write-pointer table of size bytes for geometry g, little-endian or
// byte-swapped, and is zero after it.
func plausibleTable(raw []byte, size uint64, g geometry) bool {
	for _, b := range raw[size:] {
		if b != 0 {
			return false
		}
	}
	for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		ok := true
		conv := true // still in the conventional prefix
		for i := uint64(0); i < g.nr && ok; i++ {
			e := bo.Uint64(raw[8*i:])
			start := i * g.zoneSize
			switch {
			case e&zone.ConvBit != 0:
				ok = conv && e&^zone.ConvBit == start && (g.conv < 0 || int64(i) < g.conv)
			default:
				conv = false
				ok = (g.conv < 0 || int64(i) >= g.conv) && e >= start && e <= start+g.zoneSize && e%512 == 0
			}
		}
		if ok {
			return true
		}
	}
	return false
}
