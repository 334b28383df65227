// Package bench is qemu-img bench: a stream of read or write requests,
// DEPTH of them in flight at once, against an image, timed; and a zoned
// variant that spreads sequential writes or zone appends over the zones
// of a zoned image within its open and active limits.
//
// Sizes and offsets are bytes.
package bench

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// Zoned modes.
const (
	ZonedNone   = ""
	ZonedWrite  = "write"
	ZonedAppend = "append"
)

// Options are qemu-img bench's options, plus the zoned mode.
type Options struct {
	Count  int   // requests (qemu-img's default 75000)
	Depth  int   // requests in flight at once (default 64)
	Size   int64 // bytes per request (default 4096)
	Step   int64 // offset step between requests (default: Size)
	Offset int64 // offset of the first request
	Write  bool
	// Pattern is the byte written (-w).
	Pattern byte
	// FlushInterval issues a flush every that many requests (0: never);
	// with Drain, the requests in flight complete first.
	FlushInterval int
	Drain         bool
	// Zoned is ZonedWrite or ZonedAppend for the zoned variant.
	Zoned string
}

// Result is what a run did.
type Result struct {
	Elapsed  time.Duration
	Requests int
	Bytes    int64
	Flushes  int
	// Resets and Zones are set by zoned runs: zone resets done to reuse
	// full zones, and the zones written at once.
	Resets int
	Zones  int
}

// RequestError is the error of a failed request (qemu-img: "Failed
// request: ...").
type RequestError struct{ Err error }

func (e *RequestError) Error() string { return "failed request: " + e.Err.Error() }
func (e *RequestError) Unwrap() error { return e.Err }

// MiBps returns the throughput in MiB/s.
func (r *Result) MiBps() float64 {
	return float64(r.Bytes) / (1 << 20) / r.Elapsed.Seconds()
}

// OpsPerSec returns the requests completed per second.
func (r *Result) OpsPerSec() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

// Validate checks o against d without sending a request: the queue
// depth, and for a zoned run the image (zoned), the mode and the request
// size (a multiple of 512 bytes, within the zone capacity and, for
// appends, zone.max_append_bytes). Run checks the same; callers validate
// first to report a bad option before announcing the run.
func Validate(d *zone.Device, o Options) error {
	if o.Depth < 1 {
		return fmt.Errorf("queue depth %d: at least one request must be in flight", o.Depth)
	}
	if o.Zoned == ZonedNone {
		return nil
	}
	h := d.Header()
	if h == nil {
		return fmt.Errorf("--zoned: %w", zone.ErrNotZoned)
	}
	if o.Zoned != ZonedWrite && o.Zoned != ZonedAppend {
		return fmt.Errorf("--zoned must be 'write' or 'append', not '%s'", o.Zoned)
	}
	if o.Size <= 0 || o.Size%512 != 0 {
		return fmt.Errorf("--zoned: the request size %d must be a positive multiple of 512 bytes", o.Size)
	}
	capacity := min(h.ZoneCapacity, uint64(d.Size())-h.ZoneStart(h.NrZones-1))
	if uint64(o.Size) > capacity {
		return fmt.Errorf("--zoned: the request size %d exceeds the zone capacity %d", o.Size, capacity)
	}
	if o.Zoned == ZonedAppend && uint64(o.Size) > uint64(h.MaxAppendBytes) {
		return fmt.Errorf("--zoned append: the request size %d exceeds zone.max_append_bytes %d", o.Size, h.MaxAppendBytes)
	}
	return nil
}

// Run runs the benchmark on d. Requests go through d, which is safe for
// concurrent use: o.Depth goroutines each keep one request in flight.
func Run(d *zone.Device, o Options) (*Result, error) {
	if err := Validate(d, o); err != nil {
		return nil, err
	}
	if o.Zoned != ZonedNone {
		return runZoned(d, o)
	}
	size := d.Size()
	buf := make([]byte, o.Size)
	if o.Write {
		for i := range buf {
			buf[i] = o.Pattern
		}
	}
	type req struct {
		off   int64
		flush bool
	}
	reqs := make(chan req)
	var wg sync.WaitGroup
	var inflight sync.WaitGroup
	var firstErr atomic.Pointer[error]
	fail := func(err error) {
		err = &RequestError{err}
		firstErr.CompareAndSwap(nil, &err)
	}
	res := &Result{}
	for w := 0; w < o.Depth; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rb := make([]byte, o.Size)
			for r := range reqs {
				var err error
				switch {
				case r.flush:
					err = d.Flush()
				case o.Write:
					_, err = d.WriteAt(buf, r.off)
				default:
					_, err = d.ReadAt(rb, r.off)
				}
				if err != nil {
					fail(err)
				}
				inflight.Done()
			}
		}()
	}
	start := time.Now()
	off := o.Offset
	for i := 0; i < o.Count && firstErr.Load() == nil; i++ {
		if o.Write && o.FlushInterval > 0 && i > 0 && i%o.FlushInterval == 0 {
			if o.Drain {
				inflight.Wait()
			}
			inflight.Add(1)
			reqs <- req{flush: true}
			res.Flushes++
			if o.Drain {
				inflight.Wait()
			}
		}
		inflight.Add(1)
		reqs <- req{off: off}
		res.Requests++
		res.Bytes += o.Size
		off += o.Step
		if size > 0 {
			off %= size
		} else {
			off = 0
		}
	}
	close(reqs)
	wg.Wait()
	res.Elapsed = time.Since(start)
	if e := firstErr.Load(); e != nil {
		return res, *e
	}
	return res, nil
}

// zoneSlot is a zone being written by the zoned run; mu orders the
// writes to it (a sequential write must be at the write pointer). The slot
// keeps the zone's write pointer and capacity end: only it writes there.
type zoneSlot struct {
	assigned  bool   // the slot holds a zone (zi is meaningful)
	gen       uint64 // counts the zones the slot has held (see request)
	mu        sync.Mutex
	zi        uint32 // zone index
	wp, limit uint64 // write pointer and end of the capacity, bytes
	start     uint64
	zoneLen   uint64
}

// zoned holds the state of a zoned run.
type zoned struct {
	d      *zone.Device
	h      *zone.Header
	o      Options
	mu     sync.Mutex // cursor, inUse, resets
	cursor uint32
	inUse  map[uint32]bool
	resets int
}

// runZoned spreads o.Count sequential writes (ZonedWrite) or zone appends
// (ZonedAppend) of o.Size bytes over the sequential zones. At most
// min(depth, max open, max active, sequential zones) zones are written at
// once; zones already active are used first, so that the active limit
// holds. A zone that fills up is left FULL and the next zone is taken
// (reset first when it is FULL). Appends to one zone may be in flight
// together; writes to one zone are issued in order.
func runZoned(d *zone.Device, o Options) (*Result, error) {
	if err := Validate(d, o); err != nil {
		return nil, err
	}
	h := d.Header()
	seq := h.NrZones - h.ConventionalZones
	slots := min(uint32(o.Depth), seq)
	if h.MaxOpenZones != 0 {
		slots = min(slots, h.MaxOpenZones)
	}
	if h.MaxActiveZones != 0 {
		slots = min(slots, h.MaxActiveZones)
	}
	z := &zoned{d: d, h: h, o: o, cursor: h.ConventionalZones, inUse: map[uint32]bool{}}
	// Zones already active first: writing them adds no active zone.
	zones, err := d.Report(0, uint64(h.NrZones))
	if err != nil {
		return nil, err
	}
	ss := make([]*zoneSlot, 0, slots)
	for i, zn := range zones {
		if uint32(len(ss)) < slots && zn.Cond == zone.CondClosed {
			ss = append(ss, &zoneSlot{assigned: true, zi: uint32(i), start: zn.Start, zoneLen: zn.Len, wp: zn.WP, limit: zn.Start + zn.Cap})
			z.inUse[uint32(i)] = true
		}
	}
	for uint32(len(ss)) < slots {
		s := &zoneSlot{}
		if err := z.next(s); err != nil {
			return nil, err
		}
		ss = append(ss, s)
	}
	buf := make([]byte, o.Size)
	for i := range buf {
		buf[i] = o.Pattern
	}
	var issued atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < o.Depth; w++ {
		s := ss[w%len(ss)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for firstErr.Load() == nil && issued.Add(1) <= int64(o.Count) {
				if err := z.request(s, buf); err != nil {
					err = &RequestError{err}
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	wg.Wait()
	res := &Result{Elapsed: time.Since(start), Resets: z.resets, Zones: len(ss)}
	res.Requests = int(min(issued.Load(), int64(o.Count)))
	res.Bytes = int64(res.Requests) * o.Size
	if e := firstErr.Load(); e != nil {
		return res, *e
	}
	return res, nil
}

// next moves slot s to the next zone nobody writes, resetting it when
// FULL; when every other zone is taken, it resets and reuses its own.
func (z *zoned) next(s *zoneSlot) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	h := z.h
	// Another slot's zone is never taken; the slot's own zone (FULL: leave
	// finished it) is taken again, reset, only when no other zone is
	// free: with as many slots as sequential zones, every zone is some
	// slot's.
	for tries := uint32(0); tries < 2*h.NrZones; tries++ {
		zi := z.cursor
		z.cursor++
		if z.cursor >= h.NrZones {
			z.cursor = h.ConventionalZones
		}
		own := s.assigned && zi == s.zi
		if z.inUse[zi] && !(own && tries >= h.NrZones) {
			continue
		}
		zs, err := z.d.Report(int64(h.ZoneStart(zi)), 1)
		if err != nil {
			return err
		}
		switch zs[0].Cond {
		case zone.CondFull:
			if err := z.d.Manage(zone.OpReset, int64(zs[0].Start), int64(zs[0].Len)); err != nil {
				return err
			}
			// The reset's clusters become reusable once the metadata no
			// longer pointing at them is durable: flush, so that the
			// image does not grow with every lap over the zones.
			if err := z.d.Flush(); err != nil {
				return err
			}
			z.resets++
		case zone.CondEmpty:
		default:
			continue // active already, written by no slot: leave it
		}
		if s.assigned { // a fresh slot has no zone to give up (zi 0 is a zone)
			delete(z.inUse, s.zi)
		}
		s.assigned = true
		s.gen++
		z.inUse[zi] = true
		s.zi = zi
		s.start, s.zoneLen = zs[0].Start, zs[0].Len
		s.limit = zs[0].Start + zs[0].Cap
		s.wp = zs[0].WP
		if zs[0].Cond == zone.CondFull {
			s.wp = zs[0].Start // reset above
		}
		return nil
	}
	return fmt.Errorf("no zone free to write (every sequential zone is in use or active)")
}

// request writes or appends one buffer into the slot's zone, moving to
// the next zone when it has no room left.
func (z *zoned) request(s *zoneSlot, buf []byte) error {
	n := uint64(len(buf))
	if z.o.Zoned == ZonedWrite {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.wp+n > s.limit {
			if err := z.leave(s); err != nil {
				return err
			}
		}
		if _, err := z.d.WriteAt(buf, int64(s.wp)); err != nil {
			return err
		}
		s.wp += n
		return nil
	}
	for {
		s.mu.Lock()
		gen, start := s.gen, s.start
		s.mu.Unlock()
		// Appends need no ordering: several may be in flight for a zone.
		_, err := z.d.Append([][]byte{buf}, int64(start))
		if !errors.Is(err, zone.ErrBeyondCapacity) {
			return err
		}
		s.mu.Lock()
		err = nil
		// Nobody moved the slot on yet (the generation, not the zone:
		// the slot may have come back to the same zone since).
		if s.gen == gen {
			err = z.leave(s)
		}
		s.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// leave moves slot s (locked) on from a zone with no room for a request:
// a zone left partially written is finished, so that it does not stay
// active.
func (z *zoned) leave(s *zoneSlot) error {
	zs, err := z.d.Report(int64(s.start), 1)
	if err != nil {
		return err
	}
	if c := zs[0].Cond; c != zone.CondFull && zs[0].WP > zs[0].Start {
		if err := z.d.Manage(zone.OpFinish, int64(s.start), int64(s.zoneLen)); err != nil {
			return err
		}
	}
	return z.next(s)
}

// Open opens path for a run: read-only unless o writes.
func Open(path string, o Options, cache image.CacheMode, forceShare bool) (*zone.Device, error) {
	write := o.Write || o.Zoned != ZonedNone
	d, err := zone.Open(path, image.Options{ReadOnly: !write, NoLock: forceShare, Cache: cache})
	if err != nil {
		return nil, err
	}
	return d, nil
}
