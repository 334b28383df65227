package imagetest

import (
	"errors"
	"fmt"
	"io"
	"math/rand"
	"sync"
	"syscall"
)

// SectorSize is the unit in which FaultFile tears writes: like a disk, it
// persists whole 512-byte sectors or nothing of them.
const SectorSize = 512

// ErrPowerLost is returned by every operation after the simulated power loss.
var ErrPowerLost = errors.New("imagetest: power lost")

// FaultFile simulates a disk with a volatile write cache. Writes, zeroed
// ranges and truncations are visible at once but become durable only at
// Sync. After PowerFailAfter(n), the (n+1)-th operation (write, zero range,
// truncation or sync) and everything after it fails with ErrPowerLost, as
// if the machine had lost power; Crash then returns what the disk holds:
// everything synced, plus each unsynced write dropped, kept, or torn (any
// subset of its sectors kept), and each unsynced truncation dropped or
// kept. SetSpace makes the disk small: an operation that would make the
// file longer fails with ENOSPC, after storing what fits.
type FaultFile struct {
	mu      sync.Mutex
	durable []byte
	current []byte
	pending []pendingOp
	ops     int
	syncs   int
	failAt  int // operations allowed before the power fails; -1: never
	failed  bool
	space   int64 // largest file length the disk holds; 0: unlimited
}

// SetSpace limits the file to n bytes (0: no limit): writes, zeroed ranges
// and truncations beyond it fail with ENOSPC.
func (f *FaultFile) SetSpace(n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.space = n
}

// errNoSpace returns how many of n bytes at off fit, and ENOSPC if not all.
func (f *FaultFile) errNoSpace(off, n int64) (int64, error) {
	if f.space == 0 || off+n <= f.space || off+n <= int64(len(f.current)) {
		return n, nil
	}
	fit := max(0, f.space-off)
	return fit, fmt.Errorf("imagetest: %d bytes at offset 0x%x do not fit a disk of %d bytes: %w", n, off, f.space, syscall.ENOSPC)
}

type pendingOp struct {
	off   int64 // write offset, or the new length for a truncation
	data  []byte
	trunc bool
}

// NewFaultFile returns a FaultFile whose durable content is a copy of b.
func NewFaultFile(b []byte) *FaultFile {
	// Room to grow a little without reallocating; more grows by append.
	room := len(b) + 256<<10
	return &FaultFile{durable: append(make([]byte, 0, room), b...), current: append(make([]byte, 0, room), b...), failAt: -1}
}

// PowerFailAfter makes the power fail once n operations (writes,
// truncations and syncs, counted from the file's creation) have been done.
func (f *FaultFile) PowerFailAfter(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failAt = n
}

// Ops returns the number of operations (writes, truncations, syncs) done.
func (f *FaultFile) Ops() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ops
}

// Syncs returns the number of syncs so far.
func (f *FaultFile) Syncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

// PowerLost reports whether the power has failed.
func (f *FaultFile) PowerLost() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// Current returns what reads see now (synced or not).
func (f *FaultFile) Current() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.current...)
}

// op counts one operation; it fails when the power fails now or has failed.
func (f *FaultFile) op() error {
	if f.failed || f.failAt >= 0 && f.ops >= f.failAt {
		f.failed = true
		return ErrPowerLost
	}
	f.ops++
	return nil
}

// Crash returns the content of the disk after the power loss: the synced
// content with each unsynced operation, in order, dropped, kept whole, or
// (a write) torn, as rng decides. A torn write keeps any subset of its
// sectors (a disk may persist them in any order); the sectors are those of
// the disk, so a write's first and last sectors may be partial.
func (f *FaultFile) Crash(rng *rand.Rand) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	img := append([]byte(nil), f.durable...)
	for _, w := range f.pending {
		k := rng.Intn(3)
		switch {
		case k == 0:
		case w.trunc:
			img = resize(img, w.off)
		case k == 1:
			for lo := int64(0); lo < int64(len(w.data)); {
				hi := min(int64(len(w.data)), (w.off+lo)/SectorSize*SectorSize+SectorSize-w.off)
				if rng.Intn(2) == 0 {
					img = writeInto(img, w.off+lo, w.data[lo:hi])
				}
				lo = hi
			}
		default:
			img = writeInto(img, w.off, w.data)
		}
	}
	return img
}

// Durable returns what the disk holds if every unsynced operation is lost.
func (f *FaultFile) Durable() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.durable...)
}

func writeInto(b []byte, off int64, p []byte) []byte {
	if end := off + int64(len(p)); end > int64(len(b)) {
		if end <= int64(cap(b)) {
			old := len(b)
			b = b[:end]
			clear(b[old:])
		} else {
			b = append(b, make([]byte, end-int64(len(b)))...)
		}
	}
	copy(b[off:], p)
	return b
}

func resize(b []byte, size int64) []byte {
	if size <= int64(len(b)) {
		return b[:size]
	}
	return writeInto(b, size, nil)
}

// ReadAt reads the current content.
func (f *FaultFile) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failed {
		return 0, ErrPowerLost
	}
	if off >= int64(len(f.current)) {
		return 0, io.EOF
	}
	n := copy(p, f.current[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt records a write; it fails once the power has failed.
func (f *FaultFile) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op(); err != nil {
		return 0, err
	}
	n, err := f.errNoSpace(off, int64(len(p)))
	f.pending = append(f.pending, pendingOp{off: off, data: append([]byte(nil), p[:n]...)})
	f.current = writeInto(f.current, off, p[:n])
	return int(n), err
}

// ZeroRange makes n bytes at off read as zeroes (like a write of zeroes,
// durable at the next Sync), extending the file if needed.
func (f *FaultFile) ZeroRange(off, n int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op(); err != nil {
		return err
	}
	if _, err := f.errNoSpace(off, n); err != nil {
		return err // fallocate reserves all or nothing
	}
	z := make([]byte, n)
	f.pending = append(f.pending, pendingOp{off: off, data: z})
	f.current = writeInto(f.current, off, z)
	return nil
}

// Sync makes every operation so far durable. The power may fail during a
// sync too; the operations since the previous sync are then not durable.
func (f *FaultFile) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op(); err != nil {
		return err
	}
	f.syncs++
	for _, w := range f.pending {
		if w.trunc {
			f.durable = resize(f.durable, w.off)
		} else {
			f.durable = writeInto(f.durable, w.off, w.data)
		}
	}
	f.pending = f.pending[:0]
	return nil
}

// Size returns the current length.
func (f *FaultFile) Size() (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failed {
		return 0, ErrPowerLost
	}
	return int64(len(f.current)), nil
}

// Truncate changes the length; like a write it is durable at the next Sync.
func (f *FaultFile) Truncate(size int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op(); err != nil {
		return err
	}
	if _, err := f.errNoSpace(size, 0); err != nil {
		return err
	}
	f.pending = append(f.pending, pendingOp{off: size, trunc: true})
	f.current = resize(f.current, size)
	return nil
}

// Close does nothing.
func (f *FaultFile) Close() error { return nil }
