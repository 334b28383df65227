package check

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"syscall"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/internal/arith"
)

// Byte offsets in a snapshot table entry (qcow2.rst, "Snapshots"); the
// entry is 8-byte aligned and its fixed part snapEntrySize bytes long,
// followed by extra data, the id and the name.
const (
	snapL1TableOffset = 0  // u64
	snapL1Size        = 8  // u32, entries
	snapIDLen         = 12 // u16
	snapNameLen       = 14 // u16
	snapExtraSize     = 36 // u32
	snapEntrySize     = 40
)

// readSnapshots reads the snapshot table (qcow2_check_read_snapshot_table
// and qcow2_do_read_snapshots). A table that cannot be read stops the
// check; incomplete entries are corruptions. Repairing (-r all), as QEMU
// does: more than MaxSnapshots entries, or entries beyond the 64 MiB a
// table may take, are dropped off the end (the header's snapshot count
// is lowered at once, in one synced write: their clusters become leaks,
// which the refcount repair frees); an entry's extra data beyond 1024
// bytes is dropped when completeSnapshots rewrites the table.
func (c *checker) readSnapshots() error {
	h := c.hdr
	repair := c.mode&repairErrors != 0 && !c.headerShared
	reduced := uint32(0)
	if h.NbSnapshots > image.MaxSnapshots && repair {
		reduced = h.NbSnapshots - image.MaxSnapshots
		c.report(finding(KindInfo, ProblemSnapshot, "Discarding %d overhanging snapshots", reduced))
		h.NbSnapshots = image.MaxSnapshots
	}
	var se *image.SnapshotTableError
	if err := h.SnapshotTableError(); errors.As(err, &se) {
		// QEMU's words, as qemu-img check prints them: "ERROR snapshot
		// table offset invalid", "ERROR snapshot table too large".
		qmsg := se.Msg
		if se.QEMU != "" {
			qmsg = se.QEMU
		}
		var hint string
		if h.NbSnapshots > image.MaxSnapshots {
			hint = fmt.Sprintf("You can force-remove all %d overhanging snapshots with %%s check -r all", h.NbSnapshots-image.MaxSnapshots)
		}
		c.reportUnreadable("ERROR "+strings.ToLower(se.Msg[:1])+se.Msg[1:], "ERROR "+strings.ToLower(qmsg[:1])+qmsg[1:], hint, uint64(se.Off))
		return &SnapshotTableError{Msg: se.Msg}
	}
	n := uint64(h.NbSnapshots)
	if n == 0 {
		return c.dropOverhanging(reduced)
	}
	start := h.SnapshotsOffset
	pos := start
	tableLen := uint64(0) // the table's length once too much extra data is dropped
	var hb [snapEntrySize]byte
	be := binary.BigEndian
	for i := uint64(0); i < n; i++ {
		pre := pos
		pos = arith.RoundUp(pos, 8)
		tableLen = arith.RoundUp(tableLen, 8)
		if err := c.readAt(hb[:], pos); err != nil {
			return err
		}
		sn := snapshot{
			off:    pos,
			l1Off:  be.Uint64(hb[snapL1TableOffset:]),
			l1Size: be.Uint32(hb[snapL1Size:]),
			extra:  be.Uint32(hb[snapExtraSize:]),
		}
		idLen, nameLen := uint64(be.Uint16(hb[snapIDLen:])), uint64(be.Uint16(hb[snapNameLen:]))
		pos += snapEntrySize
		kept := uint64(sn.extra)
		if sn.extra > maxSnapshotExtra {
			if !repair {
				msg := fmt.Sprintf("Too much extra metadata in snapshot table entry %d", i)
				return c.unreadableSnapshots(msg, fmt.Sprintf(" (%d bytes, at most %d)", sn.extra, maxSnapshotExtra),
					"You can force-remove this extra metadata with %s check -r all", pos-4)
			}
			c.report(finding(KindInfo, ProblemSnapshot, "Discarding too much extra metadata in snapshot table entry %d (%d > %d)", i, sn.extra, maxSnapshotExtra))
			c.res.CorruptionsFixed++
			c.fixSnaps++
			kept = maxSnapshotExtra
		}
		pos += uint64(sn.extra)
		names := make([]byte, idLen+nameLen)
		if err := c.readAt(names, pos); err != nil {
			return err
		}
		sn.id, sn.name = string(names[:idLen]), string(names[idLen:])
		pos += idLen + nameLen
		tableLen += snapEntrySize + kept + idLen + nameLen
		if tableLen > maxSnapshotsSize || pos-start > math.MaxInt32 {
			if !repair {
				return c.unreadableSnapshots("Snapshot table is too big", fmt.Sprintf(" (more than %d bytes from entry %d on)", maxSnapshotsSize, i),
					fmt.Sprintf("You can force-remove all %d overhanging snapshots with %%s check -r all", n-i), start)
			}
			c.report(finding(KindInfo, ProblemSnapshot, "Discarding %d overhanging snapshots (snapshot table is too big)", n-i))
			reduced += uint32(n - i)
			h.NbSnapshots = uint32(i)
			pos = pre
			break
		}
		c.snapshots = append(c.snapshots, sn)
	}
	if err := c.dropOverhanging(reduced); err != nil {
		return err
	}
	c.snapshotsSize = pos - start
	if h.Version >= 3 {
		repair := c.mode&repairErrors != 0 && !c.headerShared
		for i, sn := range c.snapshots {
			if sn.extra < 16 {
				// Version 3 requires the VM state size and the disk size
				// in the extra data (QEMU's wording: "Repairing" when it
				// fixes it afterwards, in completeSnapshots).
				f := finding(KindCorruption, ProblemSnapshot, "%s snapshot table entry %d is incomplete", verb(repair), i).repaired(repair)
				c.res.Findings = append(c.res.Findings, f)
				if repair {
					c.res.CorruptionsFixed++
					c.fixSnaps++
				} else {
					c.snapCorruption++
				}
			}
		}
	}
	return nil
}

// completeSnapshots repairs incomplete snapshot table entries of a version
// 3 image and entries with too much extra data (QEMU's
// qcow2_check_fix_snapshot_table): the table is rewritten with every
// entry's extra data completed to the 24 bytes QEMU defines
// (image.SnapshotEntry.CompleteExtra: the disk size is the image's
// virtual size, the instruction count -1) and cut to 1024 bytes. It runs
// once the refcounts agree with the references. Crash-safe in the order of every repair: the
// refcounts of free clusters are raised (synced), the new table is
// written there (synced), the header's snapshot table offset is switched
// in one write (synced), and only then are the old table's refcounts
// lowered (synced). A crash leaves the old table (and at worst leaked
// clusters) or the new one.
func (c *checker) completeSnapshots() error {
	h := c.hdr
	if c.fixSnaps == 0 || c.headerShared || h.NbSnapshots == 0 {
		return nil
	}
	entries, err := c.snapshotEntries()
	if err != nil {
		return fmt.Errorf("the snapshot table cannot be rewritten: %w", err)
	}
	for i := range entries {
		entries[i].CompleteExtra(h.Size)
	}
	table := image.MarshalSnapshotTable(entries)
	n := arith.CeilDiv(uint64(len(table)), c.cs)
	first, ok := c.freeRun(n)
	if !ok {
		return errors.New("no free clusters covered by a refcount block for the new snapshot table")
	}
	// 1. Refcounts of the new clusters.
	for k := first; k < first+n; k++ {
		c.setStored(k, 1)
	}
	if err := c.writeRefcounts(); err != nil {
		return err
	}
	// 2. The new table.
	off := first << c.cb
	if err := c.write(table, off); err != nil {
		return err
	}
	if err := c.syncWrites(); err != nil {
		return err
	}
	// 3. The switch.
	if err := c.writeU64(image.HdrSnapshotsOffset, off); err != nil {
		return err
	}
	if err := c.syncWrites(); err != nil {
		return err
	}
	oldOff, oldSize := h.SnapshotsOffset, c.snapshotsSize
	h.SnapshotsOffset, c.snapshotsSize = off, uint64(len(table))
	c.inc(off, uint64(len(table)))
	// 4. The old table's clusters lose their reference.
	for k := oldOff >> c.cb; k <= (oldOff+oldSize-1)>>c.cb; k++ {
		if u := c.used.get(k); u > 0 {
			c.used.set(k, u-1)
			if r, ok := c.storedAt(k); ok && r > 0 {
				c.setStored(k, r-1)
			}
		}
	}
	c.fixSnaps = 0
	return c.writeRefcounts()
}

// snapshotEntries reads the entries of the snapshot table readSnapshots
// kept, each with at most maxSnapshotExtra bytes of its extra data (what
// is beyond is dropped, as QEMU drops it). Entry by entry: an entry's
// extra data on disk can be far larger than what is kept.
func (c *checker) snapshotEntries() ([]image.SnapshotEntry, error) {
	be := binary.BigEndian
	entries := make([]image.SnapshotEntry, 0, len(c.snapshots))
	for _, sn := range c.snapshots {
		b := make([]byte, snapEntrySize+min(sn.extra, maxSnapshotExtra))
		if err := c.readAt(b, sn.off); err != nil {
			return nil, err
		}
		entries = append(entries, image.SnapshotEntry{
			L1Offset:    sn.l1Off,
			L1Size:      sn.l1Size,
			DateSec:     be.Uint32(b[16:]),
			DateNsec:    be.Uint32(b[20:]),
			VMClockNsec: be.Uint64(b[24:]),
			VMState32:   be.Uint32(b[32:]),
			Extra:       b[snapEntrySize:],
			ID:          sn.id,
			Name:        sn.name,
		})
	}
	return entries, nil
}

// freeRun returns the first of n contiguous clusters that nothing uses,
// whose stored refcount is 0 and that existing refcount blocks cover.
func (c *checker) freeRun(n uint64) (uint64, bool) {
	limit := uint64(len(c.reftable)) << c.rbBits
	run := uint64(0)
	for k := uint64(1); k < limit; k++ {
		ti := k >> c.rbBits
		free := !c.badBlock[ti] && c.reftable[ti]&image.RefTableOffMask != 0 && c.used.get(k) == 0
		if free {
			r, ok := c.storedAt(k)
			free = ok && r == 0
		}
		if !free {
			run = 0
			continue
		}
		if run++; run == n {
			return k + 1 - n, true
		}
	}
	return 0, false
}

// unreadableSnapshots reports a snapshot table that cannot be read, which
// stops the check: msg is QEMU's reason, detail what zqimg adds to it,
// hint how a repair goes on (see reportUnreadable).
func (c *checker) unreadableSnapshots(msg, detail, hint string, off uint64) error {
	const pre = "ERROR failed to read the snapshot table: "
	c.reportUnreadable(pre+msg+detail, pre+msg, hint, off)
	return &SnapshotTableError{Msg: msg + detail}
}

// reportUnreadable reports the check error msg (QEMU's wording: qmsg)
// that qemu-img prints as an error message, followed by the line hint,
// whose %s is the program to run ("zqimg", or "qemu-img" in QEMU's
// wording); no hint when "".
func (c *checker) reportUnreadable(msg, qmsg, hint string, off uint64) {
	f := finding(KindCheckError, ProblemSnapshot, "%s", msg).at(off)
	f.Report, f.QEMUMsg = true, qmsg
	if hint != "" {
		f.Msg += "\n" + fmt.Sprintf(hint, "zqimg")
		f.QEMUMsg += "\n" + fmt.Sprintf(hint, "qemu-img")
	}
	c.report(f)
}

// dropOverhanging lowers the header's snapshot count by reduced (already
// lowered in c.hdr), in one synced write, as QEMU does before it checks
// the refcounts: the dropped entries and what only they used become
// leaks.
func (c *checker) dropOverhanging(reduced uint32) error {
	if reduced == 0 {
		return nil
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], c.hdr.NbSnapshots)
	if err := c.write(b[:], image.HdrNbSnapshots); err != nil {
		return err
	}
	if err := c.syncWrites(); err != nil {
		return err
	}
	c.res.CorruptionsFixed += int64(reduced)
	return nil
}

// SnapshotTableError is a snapshot table a check cannot read: the check
// stops (qemu-img: "Check failed: File too large").
type SnapshotTableError struct{ Msg string }

func (e *SnapshotTableError) Error() string { return e.Msg }

// Unwrap gives the error number QEMU fails the check with.
func (e *SnapshotTableError) Unwrap() error { return syscall.EFBIG }

// QEMUMessage is qemu-img's reason for the failed check.
func (e *SnapshotTableError) QEMUMessage() string { return image.Strerror(syscall.EFBIG) }

// checkSnapshotL1s counts the L1 tables of the snapshots and what they
// refer to; a snapshot table entry whose L1 table is unaligned or too large
// is a corruption, and its L1 table is not walked.
func (c *checker) checkSnapshotL1s(fix Mode) error {
	for _, sn := range c.snapshots {
		if sn.l1Off&(c.cs-1) != 0 {
			c.report(finding(KindCorruption, ProblemSnapshot, "ERROR snapshot %s (%s) l1_offset=%s: L1 table is not cluster aligned; snapshot table entry corrupted", sn.id, sn.name, hexAlt(sn.l1Off)).at(sn.l1Off))
			continue
		}
		if sn.l1Size > maxL1Entries {
			c.report(finding(KindCorruption, ProblemSnapshot, "ERROR snapshot %s (%s) l1_size=%s: L1 table is too large; snapshot table entry corrupted", sn.id, sn.name, hexAlt(uint64(sn.l1Size))))
			continue
		}
		if err := c.checkL1(sn.l1Off, uint64(sn.l1Size), false, fix); err != nil {
			return err
		}
	}
	return nil
}

// dropLostSnapshots repairs a snapshot table lying one cluster or more
// beyond the end of the file (a truncated file): the snapshots are gone, so
// the header stops listing them (their clusters are then leaks).
func (c *checker) dropLostSnapshots() error {
	h := c.hdr
	if h.NbSnapshots == 0 || !c.beyondEOF(h.SnapshotsOffset, c.snapshotsSize) || c.headerShared {
		return nil
	}
	c.report(finding(KindCorruption, ProblemSnapshot, "Repairing the snapshot table at 0x%x lies beyond the end of the file (%d bytes); its %d snapshots are dropped", h.SnapshotsOffset, c.fileSize, h.NbSnapshots).at(h.SnapshotsOffset).repaired(true))
	// nb_snapshots and snapshots_offset, which follows it, in one write.
	var b [image.HdrSnapshotsOffset + 8 - image.HdrNbSnapshots]byte
	if err := c.write(b[:], image.HdrNbSnapshots); err != nil {
		return err
	}
	if err := c.syncWrites(); err != nil {
		return err
	}
	h.NbSnapshots, h.SnapshotsOffset = 0, 0
	c.snapshots, c.snapshotsSize, c.snapCorruption = nil, 0, 0
	// Incomplete entries of the lost table are not completed: they are
	// gone with it.
	c.res.CorruptionsFixed -= int64(c.fixSnaps)
	c.fixSnaps = 0
	return nil
}
