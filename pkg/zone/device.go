package zone

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/zqimg/zqimg/pkg/image"
)

// Device is an open image seen as a block device: zoned when the image
// carries the zoned format, plain otherwise (zone operations then fail with
// ErrNotZoned). It is safe for concurrent use: the data requests (ReadAt,
// WriteAt, WriteZeroes, Append) run in parallel, one at a time per
// sequential zone; every other request runs alone (see io, and
// docs/architecture.md "Concurrency").
//
// With a writethrough cache mode (image.Options.Cache) every request that
// changes the device is flushed before it returns: a completed write is
// durable, as in qemu-io's default mode.
//
// Write pointers are persisted after the data they cover: a write advances
// the write pointer in memory once its data is written, and Flush writes
// it only after the image's data and metadata are durable. A reset moves
// write pointers back, so it writes them (and syncs) before discarding the
// zone's clusters.
type Device struct {
	// io fences the data requests, which hold it shared, against every
	// other request, which holds it exclusively (lock). A data request
	// holds mu only to check and update the zone state: its data moves
	// with mu released. Lock order: io, a zone lock, mu.
	io sync.RWMutex
	// zl serialises the writes into one sequential zone (zone i takes
	// zl[i%len(zl)]), so that each finds the write pointer the previous
	// one left.
	zl [64]sync.Mutex
	mu sync.Mutex
	// idle is signalled (with mu) when a zone write completes: a write
	// that needs an open slot while every implicitly open zone has a
	// write in flight waits for one.
	idle  *sync.Cond
	wt    atomic.Bool // writethrough: flush after every changing request
	img   *image.Image
	h     *Header // nil when the image is not zoned
	t     *table
	m     *machine
	dirty map[uint32]struct{} // zones whose write pointer advanced since the last Flush
}

// Open opens the image at path as a device. opts.Features gains the zoned
// format bit.
func Open(path string, opts image.Options) (*Device, error) {
	opts.Features |= image.IncompatZoned
	img, err := image.Open(path, opts)
	if err != nil {
		return nil, err
	}
	d, err := New(img)
	if err != nil {
		img.Close()
		return nil, err
	}
	d.wt.Store(opts.Cache.WriteThrough())
	return d, nil
}

// SetWriteThrough makes every changing request durable before it returns
// (on), or durable at Flush (off).
func (d *Device) SetWriteThrough(on bool) { d.wt.Store(on) }

// lock takes the device exclusively: no data request is in flight.
func (d *Device) lock() {
	d.io.Lock()
	d.mu.Lock()
}

func (d *Device) unlock() {
	d.mu.Unlock()
	d.io.Unlock()
}

// done completes a changing request that holds the device exclusively:
// with writethrough, a request that succeeded is flushed before it is
// acknowledged.
func (d *Device) done(err error) error {
	if err != nil || !d.wt.Load() {
		return err
	}
	return d.flush()
}

// ack completes a data request (which no longer holds io) as done does.
// Requests that complete together share the flush: the later ones find
// nothing left to sync.
func (d *Device) ack(err error) error {
	if err != nil || !d.wt.Load() {
		return err
	}
	return d.Flush()
}

// New wraps an image opened with image.IncompatZoned among its features.
// It validates the zoned extension and the placement of the write-pointer
// table; the table's entries are read and validated a chunk at a time as
// the zones are first used (see table), so that opening costs the same
// for 4 zones and for 4 million. On error the caller still owns img.
func New(img *image.Image) (*Device, error) {
	d := &Device{img: img, dirty: map[uint32]struct{}{}}
	d.idle = sync.NewCond(&d.mu)
	hdr := img.Header()
	bit := hdr.IncompatibleFeatures&image.IncompatZoned != 0
	ext, has := img.Extension(ExtMagic)
	switch {
	case !bit && !has:
		return d, nil
	case bit && !has:
		return nil, fmt.Errorf("%w: incompatible feature bit 5 (zoned format) is set but the zoned extension 0x%08x is missing", image.ErrCorrupt, ExtMagic)
	case !bit && has:
		return nil, fmt.Errorf("%w: the zoned extension 0x%08x is present but incompatible feature bit 5 (zoned format) is clear", image.ErrCorrupt, ExtMagic)
	}
	if hdr.Version < 3 {
		return nil, fmt.Errorf("%w: zoned format in a version %d image (version 3 is required)", image.ErrCorrupt, hdr.Version)
	}
	h, err := ParseHeader(ext)
	if err != nil {
		return nil, err
	}
	if err := h.Validate(hdr.Size); err != nil {
		return nil, err
	}
	if err := checkTablePlacement(img, h); err != nil {
		return nil, err
	}
	// Guest data written into the table is refused as a write on
	// metadata, and the image marked corrupt.
	img.SetLayerTable(TableName, h.MetaOffset, h.MetaSize)
	d.h = h
	d.t = newTable(img, h, hdr.Size)
	d.m = newMachine(h, hdr.Size, d.t.wp)
	if data, ok := img.Extension(FaultExtMagic); ok {
		p, err := ParseFaultExtension(data)
		if err == nil {
			err = p.Validate(h.NrZones)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v (zqimg check -r all rewrites it)", ErrBadFaultPlan, err)
		}
		d.m.faults = p
	}
	return d, nil
}

// ensure loads and validates the write pointers of zones [first, end).
func (d *Device) ensure(first, end uint32) error {
	return d.t.load(first, min(end, d.m.nr))
}

// loadAll reads and validates the whole write-pointer table and counts
// the CLOSED zones, for operations on every zone (snapshots, resize,
// amend).
func (d *Device) loadAll() error {
	if d.h == nil {
		return nil
	}
	if err := d.t.load(0, d.m.nr); err != nil {
		return err
	}
	d.m.countClosed()
	return nil
}

// ensureCounts loads every write pointer and counts the CLOSED zones, which
// the active limit needs; without an active limit it does nothing.
func (d *Device) ensureCounts() error {
	if d.m.maxActive == 0 || d.m.counted {
		return nil
	}
	if err := d.t.load(0, d.m.nr); err != nil {
		return err
	}
	d.m.countClosed()
	return nil
}

// checkTablePlacement verifies that the write-pointer table lies inside
// the file, cluster aligned, counted by refcounts, and over no other
// metadata.
func checkTablePlacement(img *image.Image, h *Header) error {
	cs := uint64(img.ClusterSize())
	off, n := h.MetaOffset, h.MetaSize
	if off == 0 || off%cs != 0 {
		return fieldErr("zonedmeta_offset", "zonedmeta_offset 0x%x is not a non-zero multiple of the cluster size %d", off, cs)
	}
	fileSize, err := img.FileSize()
	if err != nil {
		return err
	}
	if off+n < off || off+n > uint64(fileSize) { // off+n < off: wrapped around 2^64
		return fieldErr("zonedmeta_offset", "write-pointer table [0x%x, 0x%x) extends past the end of the file (%d bytes)", off, off+n, fileSize)
	}
	if what := img.MetadataOverlap(off, n); what != "" {
		return fieldErr("zonedmeta_offset", "write-pointer table at 0x%x (%d bytes) overlaps %s", off, n, what)
	}
	for c := off; c < off+n; c += cs {
		rc, err := img.Refcount(c)
		if err != nil {
			return err
		}
		if rc == 0 {
			return fieldErr("zonedmeta_offset", "write-pointer table cluster at 0x%x has refcount 0", c)
		}
	}
	return nil
}

// TableName names the write-pointer table in the image's metadata
// overlap check (image.SetLayerTable).
const TableName = "zoned write-pointer table"

// ReadOnly reports whether the image was opened read-only.
func (d *Device) ReadOnly() bool { return d.img.ReadOnly() }

// Image returns the underlying image.
func (d *Device) Image() *image.Image { return d.img }

// Zoned reports whether the image is a zoned device.
func (d *Device) Zoned() bool { return d.h != nil }

// Header returns the zoned extension (nil when not zoned).
func (d *Device) Header() *Header {
	if d.h == nil {
		return nil
	}
	h := *d.h
	return &h
}

// Size returns the device size in bytes.
func (d *Device) Size() int64 { return d.img.Size() }

// ReadAt reads guest data; never-written bytes read as zeroes.
// In a sequential zone, everything from the write pointer to the zone end
// reads as zeroes, whatever clusters are still allocated there (data a
// crash left beyond the write pointer was never acknowledged).
//
// The write pointers are taken before the data is read: a write in flight
// moves its zone's pointer only after its data is written, so everything
// below the pointers taken was written before the read began.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	d.io.RLock()
	defer d.io.RUnlock()
	if d.h == nil || len(p) == 0 || off < 0 || uint64(off)+uint64(len(p)) > uint64(d.Size()) {
		return d.img.ReadAt(p, off)
	}
	first, last := d.zoneIndex(uint64(off)), d.zoneIndex(uint64(off)+uint64(len(p))-1)
	d.mu.Lock()
	wps, err := d.readLimits(first, last)
	d.mu.Unlock()
	if err != nil {
		return 0, err
	}
	n, err := d.img.ReadAt(p, off)
	if err != nil {
		return n, err
	}
	d.maskBeyondWP(p, uint64(off), first, wps)
	return n, nil
}

// readLimits loads zones [first, last], refuses a read of an offline one,
// and returns their write pointers. mu is held.
func (d *Device) readLimits(first, last uint32) ([]uint64, error) {
	if err := d.ensure(first, last+1); err != nil {
		return nil, err
	}
	for i := first; i <= last && d.m.faults != nil; i++ {
		if d.m.faults.Cond(i) == CondOffline {
			return nil, d.m.checkFault(i, "read")
		}
	}
	return slices.Clone(d.m.wp[first : last+1]), nil
}

// maskBeyondWP zeroes the bytes of p (read at off) that lie at or beyond
// the write pointer, or beyond the capacity, of a sequential zone; wps
// holds the write pointers of the zones from first on.
func (d *Device) maskBeyondWP(p []byte, off uint64, first uint32, wps []uint64) {
	end := off + uint64(len(p))
	for i := max(first, d.m.conv); i < d.m.nr && int(i-first) < len(wps); i++ {
		zs := d.m.start(i)
		if zs >= end {
			break
		}
		// Beyond the capacity nothing was ever written either (a FULL
		// zone's write pointer may lie at the zone end).
		lo, hi := max(min(wps[i-first], d.m.capEnd(i)), off), min(zs+d.m.zoneLen(i), end)
		if lo < hi {
			clear(p[lo-off : hi-off])
		}
	}
}

// zoneIndex returns the zone holding byte off.
func (d *Device) zoneIndex(off uint64) uint32 { return uint32(off / d.h.ZoneSize) }

// checkIO validates a write or zero write of n bytes at off against the
// zone rules and returns the sequential zone it targets (ok=false for a
// write into conventional zones only).
func (d *Device) checkIO(off int64, n int64) (zi uint32, seq bool, err error) {
	if off < 0 || n < 0 || uint64(off)+uint64(n) > uint64(d.Size()) {
		return 0, false, fmt.Errorf("%w: %d bytes at offset 0x%x, device size 0x%x", image.ErrOutOfRange, n, off, d.Size())
	}
	if off == d.Size() {
		// An empty request at the end of the device lies in no zone
		// (zoneIndex would be nr_zones when the size is a multiple of
		// the zone size).
		return 0, false, nil
	}
	zi = d.zoneIndex(uint64(off))
	if n > 0 {
		for i := zi; i <= d.zoneIndex(uint64(off+n-1)); i++ {
			if err := d.m.checkFault(i, "write"); err != nil {
				return 0, false, err
			}
		}
	}
	if zi < d.m.conv {
		if n > 0 {
			if last := d.zoneIndex(uint64(off + n - 1)); last >= d.m.conv {
				return 0, false, zerr(ErrCrossesZone, syscall.EINVAL, "write of %d bytes at offset 0x%x runs from conventional zone %d into sequential zone %d", n, off, zi, d.m.conv)
			}
		}
		return zi, false, nil
	}
	if err := checkUnits("write", off, n); err != nil {
		return 0, false, err
	}
	if err := d.ensure(zi, zi+1); err != nil {
		return 0, false, err
	}
	if err := d.ensureCounts(); err != nil {
		return 0, false, err
	}
	if err := d.m.checkWrite(zi, uint64(off), uint64(n)); err != nil {
		return 0, false, err
	}
	return zi, true, nil
}

// checkUnits enforces the 512-byte unit of sequential zones: offset and
// length of a write or append there must be multiples of 512 bytes.
func checkUnits(what string, off, n int64) error {
	if off%512 != 0 || n%512 != 0 {
		return zerr(ErrUnaligned, syscall.EINVAL, "%s of %d bytes at offset 0x%x in a sequential zone: offset and length must be multiples of 512 bytes", what, n, off)
	}
	return nil
}

// WriteAt writes p at off. In a sequential zone off must be the write
// pointer and the write must stay within the zone's capacity; the zone is
// implicitly opened (closing the least recently written implicitly open
// zone if the open limit is reached) or becomes FULL.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	var written int
	err := d.dataWrite(off, int64(len(p)), func() error {
		var err error
		written, err = d.img.WriteAt(p, off)
		return err
	})
	return written, d.ack(err)
}

// WriteZeroes writes n zero bytes at off under the same rules as WriteAt.
func (d *Device) WriteZeroes(off, n int64) error {
	return d.ack(d.dataWrite(off, n, func() error { return d.img.WriteZeroes(off, n) }))
}

// WriteZeroesUnmap is WriteZeroes that may unmap (qemu-io's write -z -u):
// the host clusters of the range are freed (image.WriteZeroesUnmap).
func (d *Device) WriteZeroesUnmap(off, n int64) error {
	return d.ack(d.dataWrite(off, n, func() error { return d.img.WriteZeroesUnmap(off, n) }))
}

// ReadVMState reads the image's VM state area (qemu-io read -b); a zoned
// image has none (image.ErrVMStateZoned).
func (d *Device) ReadVMState(p []byte, pos int64) (int, error) {
	return d.img.ReadVMState(p, pos)
}

// WriteVMState writes the image's VM state area (qemu-io write -b),
// durable on return in writethrough mode as a data write is.
func (d *Device) WriteVMState(p []byte, pos int64) (int, error) {
	n, err := d.img.WriteVMState(p, pos)
	return n, d.ack(err)
}

// dataWrite runs a write or zero write of n bytes at off as a data
// request (io held shared): checked against the zone rules under mu,
// performed with mu released.
func (d *Device) dataWrite(off, n int64, write func() error) error {
	d.io.RLock()
	defer d.io.RUnlock()
	if d.h == nil {
		return write()
	}
	if off >= 0 && off < d.Size() {
		if zi := d.zoneIndex(uint64(off)); zi >= d.m.conv {
			_, err := d.zoneWrite(zi, func() (uint64, uint64, error) {
				if _, _, err := d.checkIO(off, n); err != nil {
					return 0, 0, err
				}
				return uint64(off), uint64(n), nil
			}, func(uint64) error { return write() })
			return err
		}
	}
	// Conventional zones (or a request the checks refuse).
	d.mu.Lock()
	_, _, err := d.checkIO(off, n)
	d.mu.Unlock()
	if err != nil || n == 0 {
		return err
	}
	return write()
}

// zoneWrite runs a write into sequential zone zi with the zone's lock
// held. check, called under mu (again after waiting for an open slot),
// validates the request against the zone's state and returns where it
// lands and its length; the zone's resources are then acquired and the
// zone marked busy (it cannot be closed implicitly), write runs with mu
// released, and the write pointer advances in memory once the data is
// written (Flush persists it). A failed write leaves the write pointer
// where it was and the zone in its former condition.
func (d *Device) zoneWrite(zi uint32, check func() (off, n uint64, err error), write func(off uint64) error) (uint64, error) {
	zl := &d.zl[zi%uint32(len(d.zl))]
	zl.Lock()
	defer zl.Unlock()
	d.mu.Lock()
	var off, n uint64
	var prev Cond
	for {
		var err error
		if off, n, err = check(); err != nil || n == 0 {
			d.mu.Unlock()
			return off, err
		}
		prev = d.m.cond(zi)
		err = d.m.acquire(zi, syscall.EINVAL)
		if errors.Is(err, errSlotsBusy) {
			d.idle.Wait()
			continue
		}
		if err != nil {
			d.mu.Unlock()
			return 0, err
		}
		break
	}
	d.m.begin(zi)
	d.mu.Unlock()
	err := write(off)
	d.mu.Lock()
	d.m.end(zi, prev, off+n, err == nil)
	if err == nil {
		d.dirty[zi] = struct{}{}
	}
	d.idle.Broadcast()
	d.mu.Unlock()
	return off, err
}

// zonedIO runs a write of n bytes at off on a device held exclusively.
func (d *Device) zonedIO(off, n int64, write func() error) (int, error) {
	zi, seq, err := d.checkIO(off, n)
	if err != nil {
		return 0, err
	}
	if !seq {
		if n == 0 {
			return 0, nil
		}
		return int(n), write()
	}
	return int(n), d.writeZone(zi, uint64(off), uint64(n), write)
}

// writeZone performs a validated write of n bytes at off in sequential
// zone zi on a device held exclusively: it acquires the resources the
// zone needs, writes, and advances the write pointer in memory (Flush
// persists it).
func (d *Device) writeZone(zi uint32, off, n uint64, write func() error) error {
	if n == 0 {
		return nil
	}
	if err := d.m.acquire(zi, syscall.EINVAL); err != nil {
		return err
	}
	if err := write(); err != nil {
		return err
	}
	d.m.wrote(zi, off+n)
	d.dirty[zi] = struct{}{}
	return nil
}

// Discard deallocates a range; in a zoned image only conventional zones
// allow it (sequential zones are emptied by a reset).
func (d *Device) Discard(off, n int64) error {
	d.lock()
	defer d.unlock()
	if d.h != nil && n > 0 {
		if off < 0 || uint64(off)+uint64(n) > uint64(d.Size()) {
			return fmt.Errorf("%w: discard of %d bytes at offset 0x%x, device size 0x%x", image.ErrOutOfRange, n, off, d.Size())
		}
		if d.zoneIndex(uint64(off+n-1)) >= d.m.conv {
			return zerr(ErrSequentialDiscard, syscall.ENOTSUP, "discard of %d bytes at offset 0x%x reaches a sequential zone; use a zone reset", n, off)
		}
	}
	return d.done(d.img.Discard(off, n))
}

// Append writes the buffers, one after the other, at the write pointer of
// the zone starting at off and returns the offset where the data landed.
// Each buffer must be a multiple of 512 bytes and together at most
// max_append_bytes.
func (d *Device) Append(bufs [][]byte, off int64) (int64, error) {
	pos, err := d.appendShared(bufs, off)
	if err := d.ack(err); err != nil {
		return 0, err
	}
	return pos, nil
}

// appendShared performs Append as a data request (io held shared).
func (d *Device) appendShared(bufs [][]byte, off int64) (int64, error) {
	d.io.RLock()
	defer d.io.RUnlock()
	if d.h == nil {
		return 0, zerr(ErrNotZoned, syscall.ENOTSUP, "zone append: %s", ErrNotZoned)
	}
	if off < 0 || off >= d.Size() {
		return 0, zerr(ErrBeyondDevice, syscall.EINVAL, "zone append offset 0x%x is at or beyond the device capacity 0x%x", off, d.Size())
	}
	if uint64(off)%d.h.ZoneSize != 0 {
		return 0, zerr(ErrNotZoneStart, syscall.EINVAL, "zone append offset 0x%x (sector 0x%x) is not the start of a zone (zone size 0x%x sectors)", off, off/512, d.h.ZoneSize/512)
	}
	var total int64
	for i, b := range bufs {
		if len(b)%512 != 0 {
			return 0, zerr(ErrAppendGranularity, syscall.EINVAL, "zone append buffer %d is %d bytes, not a multiple of 512", i, len(b))
		}
		total += int64(len(b))
	}
	if total == 0 {
		return 0, zerr(ErrAppendGranularity, syscall.EINVAL, "zone append of 0 bytes at offset 0x%x: an append must carry at least 512 bytes", off)
	}
	if total > int64(d.h.MaxAppendBytes) {
		return 0, zerr(ErrAppendTooLarge, syscall.EINVAL, "zone append of %d bytes (0x%x sectors) exceeds max_append_bytes %d (0x%x sectors)", total, total/512, d.h.MaxAppendBytes, d.h.MaxAppendBytes/512)
	}
	zi := d.zoneIndex(uint64(off))
	if zi < d.m.conv {
		return 0, zerr(ErrConventional, syscall.EINVAL, "zone append to conventional zone %d is not allowed", zi)
	}
	if d.img.ReadOnly() {
		return 0, fmt.Errorf("zone append: %w", image.ErrReadOnly)
	}
	var data []byte // no buffers: an empty append
	if len(bufs) == 1 {
		data = bufs[0]
	} else {
		data = slices.Concat(bufs...)
	}
	pos, err := d.zoneWrite(zi, func() (uint64, uint64, error) {
		if err := d.ensure(zi, zi+1); err != nil {
			return 0, 0, err
		}
		if err := d.ensureCounts(); err != nil {
			return 0, 0, err
		}
		// The data goes to this zone's write pointer; validate against
		// this zone (the pointer of a FULL zone is the next zone's start).
		pos := d.m.wp[zi]
		if err := d.m.checkWrite(zi, pos, uint64(total)); err != nil {
			return 0, 0, err
		}
		return pos, uint64(total), nil
	}, func(pos uint64) error {
		_, err := d.img.WriteAt(data, int64(pos))
		return err
	})
	if err != nil {
		return 0, err
	}
	return int64(pos), nil
}

// Zones yields the zones from the one containing off, at most nr of them.
// Each zone is read under the device lock when it is yielded; a write
// pointer found damaged when its zone is first read is yielded as an error
// (wrapping ErrBadTable) and ends the sequence.
func (d *Device) Zones(off int64, nr uint64) (iter.Seq2[Zone, error], error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.h == nil {
		return nil, zerr(ErrNotZoned, syscall.ENOTSUP, "zone report: %s", ErrNotZoned)
	}
	if off < 0 || off >= d.Size() {
		return nil, zerr(ErrBeyondDevice, syscall.EINVAL, "zone report offset 0x%x is at or beyond the device capacity 0x%x", off, d.Size())
	}
	first := d.zoneIndex(uint64(off))
	n := min(nr, uint64(d.m.nr-first))
	return func(yield func(Zone, error) bool) {
		for i := first; uint64(i-first) < n; i++ {
			d.mu.Lock()
			err := d.ensure(i, i+1)
			var z Zone
			if err == nil {
				z = d.m.zone(i)
			}
			d.mu.Unlock()
			if !yield(z, err) || err != nil {
				return
			}
		}
	}, nil
}

// Report returns up to nr zones from the one containing off.
func (d *Device) Report(off int64, nr uint64) ([]Zone, error) {
	seq, err := d.Zones(off, nr)
	if err != nil {
		return nil, err
	}
	var zs []Zone
	for z, err := range seq {
		if err != nil {
			return nil, err
		}
		zs = append(zs, z)
	}
	return zs, nil
}

// Counts returns how many zones are in each condition. It reads the whole
// write-pointer table.
func (d *Device) Counts() (map[Cond]uint32, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.h == nil {
		return nil, nil
	}
	if err := d.t.load(0, d.m.nr); err != nil {
		return nil, err
	}
	d.m.countClosed()
	return d.m.counts(), nil
}

// Op is a zone management operation.
type Op int

// Zone management operations.
const (
	OpOpen Op = iota
	OpClose
	OpFinish
	OpReset
)

func (op Op) String() string {
	return [...]string{"open", "close", "finish", "reset"}[op]
}

// Manage applies op to every zone of [off, off+length): off must be a zone
// start, and length a multiple of the zone size or reach the end of the
// device. Conventional zones refuse management, except that a reset of the
// whole device skips them.
func (d *Device) Manage(op Op, off, length int64) error {
	d.lock()
	defer d.unlock()
	return d.done(d.manage(op, off, length))
}

func (d *Device) manage(op Op, off, length int64) error {
	if d.h == nil {
		return zerr(ErrNotZoned, syscall.ENOTSUP, "zone %s: %s", op, ErrNotZoned)
	}
	if d.img.ReadOnly() {
		return fmt.Errorf("zone %s: %w", op, image.ErrReadOnly)
	}
	size := d.Size()
	if off < 0 || length < 0 || off > size || size-off < length {
		return fmt.Errorf("%w: zone %s of %d bytes at offset 0x%x, device size 0x%x", image.ErrOutOfRange, op, length, off, size)
	}
	zs := d.h.ZoneSize
	uoff, ulen, usize := uint64(off), uint64(length), uint64(size)
	if off >= size {
		return zerr(ErrBeyondDevice, syscall.EINVAL, "zone %s offset 0x%x is at or beyond the device capacity 0x%x", op, off, size)
	}
	if uoff%zs != 0 {
		return zerr(ErrNotZoneStart, syscall.EINVAL, "zone %s offset 0x%x (sector 0x%x) is not the start of a zone (zone size 0x%x sectors)", op, off, off/512, zs/512)
	}
	if length == 0 || (uoff+ulen < usize && ulen%zs != 0) {
		return zerr(ErrBadLength, syscall.EINVAL, "zone %s length %d (0x%x sectors) is not a non-zero multiple of the zone size 0x%x sectors", op, length, length/512, zs/512)
	}
	first := uint32(uoff / zs)
	end := uint32(min((uoff+ulen-1)/zs+1, uint64(d.m.nr)))
	if err := d.ensure(first, end); err != nil {
		return err
	}
	if op == OpOpen || op == OpFinish {
		if err := d.ensureCounts(); err != nil {
			return err
		}
	}
	whole := op == OpReset && off == 0 && length == size
	if !whole {
		for i := first; i < end; i++ {
			if err := d.m.checkFault(i, "zone "+op.String()); err != nil {
				return err
			}
			if i < d.m.conv {
				return zerr(ErrConventional, syscall.EIO, "zone %s: zone %d is conventional; management operations are not allowed on conventional zones", op, i)
			}
		}
	}
	first = max(first, d.m.conv)
	if op == OpReset {
		// A reset of the whole device skips read-only and offline zones,
		// as a device's RESET WRITE POINTER ALL does: reset each run of
		// healthy zones.
		for i := first; i < end; {
			j := i
			for j < end && d.m.faults.Cond(j) == 0 {
				j++
			}
			if err := d.reset(i, j); err != nil {
				return err
			}
			i = j + 1
		}
		return nil
	}
	switch op {
	case OpOpen:
		return d.m.openRange(first, end)
	case OpClose:
		for i := first; i < end; i++ {
			d.m.closeZone(i)
		}
	case OpFinish:
		for i := first; i < end; i++ {
			if err := d.finish(i); err != nil {
				return err
			}
		}
	}
	return nil
}

// finish makes zone i FULL. Everything from its write pointer to the zone
// end is discarded first (a crash may have left unacknowledged data
// there), in the image's cache; Flush writes those discards back and
// syncs before it writes the new write pointer, so the finished zone never
// exposes stale data, even after a crash.
func (d *Device) finish(i uint32) error {
	if d.m.cond(i) == CondFull {
		return nil
	}
	if err := d.m.prepareFinish(i); err != nil {
		return err
	}
	if wp, end := d.m.wp[i], d.m.start(i)+d.m.zoneLen(i); wp < end {
		if err := d.img.Discard(int64(wp), int64(end-wp)); err != nil {
			return fmt.Errorf("discarding zone %d beyond its write pointer 0x%x: %w", i, wp, err)
		}
	}
	d.m.setFull(i)
	d.dirty[i] = struct{}{}
	return nil
}

// reset empties zones [first, end): their write pointers are written back
// and synced first, then their clusters are discarded (in the cache; the
// next flush makes it durable, at once in writethrough) so that the space
// is given back.
//
// Why the write pointers first: a reset must look atomic. Once the zone's
// write pointer is at its start, everything in the zone reads as zeroes
// (ReadAt masks data beyond a write pointer), whether or not the discard
// reached the disk before a crash; and a later finish discards whatever
// is left beyond the write pointer before it moves it. Discarding first
// would let a crash leave the old write pointer over data that is partly
// zeroed: a write pointer over data that was not written.
func (d *Device) reset(first, end uint32) error {
	if first >= end {
		return nil
	}
	entries := make([]uint64, end-first)
	for i := range entries {
		entries[i] = d.m.start(first + uint32(i))
	}
	off := int64(d.h.MetaOffset) + 8*int64(first)
	if err := d.img.HostWriteAt(EncodeTable(entries), off); err != nil {
		return fmt.Errorf("writing the write-pointer table: %w", err)
	}
	if err := d.img.Sync(); err != nil {
		return err
	}
	// The smaller write pointers are durable: only now does the state
	// change, so that a failed write leaves the zones as they were.
	for i := first; i < end; i++ {
		d.m.resetZone(i)
	}
	start := d.m.start(first)
	stop := d.m.start(end-1) + d.m.zoneLen(end-1)
	// Zones smaller than a cluster share it: when every zone sharing the
	// first or last cluster is now empty, discard the whole cluster so
	// that its space is given back (a partial discard only zeroes it).
	cs := uint64(d.img.ClusterSize())
	lo, hi := start&^(cs-1), min((stop+cs-1)&^(cs-1), uint64(d.Size()))
	if err := d.ensure(d.zoneIndex(lo), d.zoneIndex(hi-1)+1); err != nil {
		return err
	}
	if lo < start && d.emptySeq(lo, start) {
		start = lo
	}
	if hi > stop && d.emptySeq(stop, hi) {
		stop = hi
	}
	return d.img.Discard(int64(start), int64(stop-start))
}

// emptySeq reports whether every zone overlapping [lo, hi) is an empty
// sequential zone.
func (d *Device) emptySeq(lo, hi uint64) bool {
	for i := d.zoneIndex(lo); i < d.m.nr && d.m.start(i) < hi; i++ {
		if i < d.m.conv || d.m.cond(i) != CondEmpty {
			return false
		}
	}
	return true
}

// Flush makes all acknowledged writes durable: data and qcow2 metadata
// first, then the advanced write pointers, then a final sync.
func (d *Device) Flush() error {
	d.lock()
	defer d.unlock()
	return d.flush()
}

func (d *Device) flush() error {
	if err := d.img.Flush(); err != nil {
		return err
	}
	if d.h == nil || len(d.dirty) == 0 || d.img.ReadOnly() {
		return nil
	}
	zones := make([]uint32, 0, len(d.dirty))
	for i := range d.dirty {
		zones = append(zones, i)
	}
	slices.Sort(zones)
	for len(zones) > 0 {
		n := 1
		for n < len(zones) && zones[n] == zones[0]+uint32(n) {
			n++
		}
		entries := make([]uint64, n)
		for j := range entries {
			entries[j] = d.m.wp[zones[0]+uint32(j)]
		}
		if err := d.img.HostWriteAt(EncodeTable(entries), int64(d.h.MetaOffset)+8*int64(zones[0])); err != nil {
			return fmt.Errorf("writing the write-pointer table: %w", err)
		}
		zones = zones[n:]
	}
	if err := d.img.Sync(); err != nil {
		return err
	}
	clear(d.dirty)
	return nil
}

// Close flushes a writable device and closes the image.
func (d *Device) Close() error {
	d.lock()
	defer d.unlock()
	var err error
	if !d.img.ReadOnly() && !d.img.Corrupt() {
		// A corrupt image was refused a write and said so: it is
		// closed without writing.
		err = d.flush()
	}
	if e := d.img.Close(); err == nil {
		err = e
	}
	return err
}

// IsZoneError reports whether err is a zone rule violation.
func IsZoneError(err error) bool {
	var ze *Error
	return errors.As(err, &ze)
}

// Fault returns the injected condition of zone i (CondReadOnly or
// CondOffline), or 0 for a healthy zone or a plain image.
func (d *Device) Fault(i uint32) Cond {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		return 0
	}
	return d.m.faults.Cond(i)
}

// Faults returns the fault plan in force (nil when none was ever set).
func (d *Device) Faults() *FaultPlan {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil || d.m.faults == nil {
		return nil
	}
	p := *d.m.faults
	p.Ranges = slices.Clone(p.Ranges)
	return &p
}

// SetFault injects cond (CondReadOnly, CondOffline, or 0 to clear) into
// every zone of [off, off+length), with the range rules of Manage. The
// plan is stored in the image (FaultExtMagic) and is durable when
// SetFault returns; open zones that become faulty stop being open.
func (d *Device) SetFault(cond Cond, off, length int64) error {
	d.lock()
	defer d.unlock()
	if d.h == nil {
		return zerr(ErrNotZoned, syscall.ENOTSUP, "zone fault: %s", ErrNotZoned)
	}
	size := d.Size()
	zs := d.h.ZoneSize
	switch {
	case off < 0 || length <= 0 || off >= size || size-off < length:
		return zerr(ErrBeyondDevice, syscall.EINVAL, "zone fault range of %d bytes at offset 0x%x is empty or not inside the device (size 0x%x)", length, off, size)
	case uint64(off)%zs != 0:
		return zerr(ErrNotZoneStart, syscall.EINVAL, "zone fault offset 0x%x is not the start of a zone (zone size 0x%x)", off, zs)
	case off+length < size && uint64(length)%zs != 0:
		return zerr(ErrBadLength, syscall.EINVAL, "zone fault length %d is not a multiple of the zone size 0x%x", length, zs)
	}
	first := uint32(uint64(off) / zs)
	end := uint32(min((uint64(off)+uint64(length)-1)/zs+1, uint64(d.m.nr)))
	if err := d.ensure(first, end); err != nil {
		return err
	}
	plan, err := d.m.faults.With(first, end-first, cond)
	if err != nil {
		return err
	}
	ext, has := d.img.Extension(FaultExtMagic)
	if !has {
		plan.Generation = 1
		err = d.img.AppendExtension(FaultExtMagic, NewFaultExtension(plan))
	} else {
		at, slot := faultSlotUpdate(ext, plan)
		plan.Generation = binary.BigEndian.Uint64(slot)
		err = d.img.WriteExtensionData(FaultExtMagic, at, slot)
	}
	if err != nil {
		return fmt.Errorf("writing the zone fault plan: %w", err)
	}
	// Zones that become faulty leave the open and active accounting.
	for i := first; i < end; i++ {
		if cond != 0 && d.m.faults.Cond(i) == 0 {
			d.m.leave(i)
		}
	}
	d.m.faults = plan
	d.m.counted = false // cleared zones may be CLOSED again: recount when needed
	return nil
}
