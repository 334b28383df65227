package check

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

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
// check; incomplete entries are corruptions.
func (c *checker) readSnapshots() error {
	h := c.hdr
	var se *image.SnapshotTableError
	if err := h.SnapshotTableError(); errors.As(err, &se) {
		// QEMU's words, as qemu-img check prints them: "ERROR snapshot
		// table offset invalid", "ERROR snapshot table too large".
		c.report(finding(KindCheckError, ProblemSnapshot, "ERROR %s%s", strings.ToLower(se.Msg[:1]), se.Msg[1:]).at(uint64(se.Off)))
		return err
	}
	n := uint64(h.NbSnapshots)
	if n == 0 {
		return nil
	}
	start := h.SnapshotsOffset
	pos := start
	var hb [snapEntrySize]byte
	be := binary.BigEndian
	for i := uint64(0); i < n; i++ {
		pos = arith.RoundUp(pos, 8)
		if err := c.readAt(hb[:], pos); err != nil {
			return err
		}
		sn := snapshot{
			l1Off:  be.Uint64(hb[snapL1TableOffset:]),
			l1Size: be.Uint32(hb[snapL1Size:]),
			extra:  be.Uint32(hb[snapExtraSize:]),
		}
		idLen, nameLen := uint64(be.Uint16(hb[snapIDLen:])), uint64(be.Uint16(hb[snapNameLen:]))
		pos += snapEntrySize
		if sn.extra > maxSnapshotExtra {
			return c.unreadableSnapshots(fmt.Sprintf("Too much extra metadata in snapshot table entry %d", i))
		}
		pos += uint64(sn.extra)
		names := make([]byte, idLen+nameLen)
		if err := c.readAt(names, pos); err != nil {
			return err
		}
		sn.id, sn.name = string(names[:idLen]), string(names[idLen:])
		pos += idLen + nameLen
		if pos-start > maxSnapshotsSize {
			return c.unreadableSnapshots("Snapshot table is too big")
		}
		c.snapshots = append(c.snapshots, sn)
	}
	c.snapshotsSize = pos - start
	if h.Version >= 3 {
		for i, sn := range c.snapshots {
			if sn.extra < 16 {
				c.res.Findings = append(c.res.Findings, finding(KindCorruption, ProblemSnapshot, "ERROR snapshot table entry %d is incomplete", i))
				c.snapCorruption++
			}
		}
	}
	return nil
}

// unreadableSnapshots reports a snapshot table that cannot be read, which
// stops the check.
func (c *checker) unreadableSnapshots(msg string) error {
	c.report(finding(KindCheckError, ProblemSnapshot, "ERROR failed to read the snapshot table: %s", msg))
	return errors.New(msg)
}

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
	return nil
}
