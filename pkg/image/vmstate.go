package image

import (
	"errors"
	"fmt"
)

// ErrVMStateZoned refuses VM state access on a zoned image: its guest
// address space is the zones, and the zone layer owns every write.
var ErrVMStateZoned = errors.New("a zoned image has no VM state area")

// vmStateBase returns the guest offset, in bytes, where the VM state area
// starts: the first L1 entry wholly past the virtual disk (QEMU's
// l1_vm_state_index). The area is addressed like the disk, through the
// same L1 and L2 tables, and is saved with internal snapshots.
func (img *Image) vmStateBase() uint64 {
	span := img.l2Span()
	return ceilDiv(img.hdr.Size, span) * span
}

// vmStateRange checks n bytes at byte pos of the VM state area and
// returns their guest offset; the L1 table must be able to address them.
func (img *Image) vmStateRange(pos int64, n int) (uint64, error) {
	if img.closed {
		return 0, ErrClosed
	}
	if img.hdr.IncompatibleFeatures&IncompatZoned != 0 {
		return 0, ErrVMStateZoned
	}
	maxEnd := MaxL1Bytes / 8 * img.l2Span()
	g := img.vmStateBase() + uint64(pos)
	if pos < 0 || n < 0 || uint64(pos) > maxEnd || g+uint64(n) > maxEnd {
		return 0, fmt.Errorf("%w: %d bytes at VM state offset 0x%x (the L1 table addresses at most 0x%x bytes)", ErrOutOfRange, n, pos, maxEnd)
	}
	return g, nil
}

// ReadVMState reads len(p) bytes at byte pos of the VM state area (qemu-io
// read -b); what was never written reads as zeroes.
func (img *Image) ReadVMState(p []byte, pos int64) (int, error) {
	return img.readMapped(p, func() (uint64, error) { return img.vmStateRange(pos, len(p)) })
}

// WriteVMState writes p at byte pos of the VM state area (qemu-io write
// -b). The L1 table grows first when it does not reach that far, as a
// resize grows it (growL1: a new table, switched by one header write);
// then the clusters are written as a guest write writes them.
func (img *Image) WriteVMState(p []byte, pos int64) (int, error) {
	img.lock()
	defer img.unlock()
	g, err := img.vmStateRange(pos, len(p))
	if err != nil {
		return 0, err
	}
	if err := img.writable(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if need := ceilDiv(g+uint64(len(p)), img.l2Span()); need > img.l1.len() {
		// The L2 tables the entries point to are durable before a new
		// table names them (growL1 writes the entries it has in memory).
		if err := img.flush(); err != nil {
			return 0, err
		}
		if err := img.growL1(need, img.hdr.Size); err != nil {
			return 0, err
		}
	}
	done := 0
	for done < len(p) {
		if err := img.maybeEvict(); err != nil {
			return done, err
		}
		g := g + uint64(done)
		n := min(uint64(len(p)-done), img.l2Span()-g%img.l2Span())
		if err := img.writeChunk(p[done:done+int(n)], g); err != nil {
			return done, err
		}
		done += int(n)
	}
	return len(p), nil
}
