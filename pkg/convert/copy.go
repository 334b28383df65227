package convert

import (
	"bytes"
	"context"
	"fmt"

	"github.com/zqimg/zqimg/pkg/zone"
)

const (
	// bufSize is the largest range read and written at once (qemu-img
	// convert's buffer).
	bufSize = 2 << 20
	// sparseBlock is the granularity of zero detection inside data: 4 KiB
	// blocks of zeroes are not written (qemu-img convert's default -S 4k).
	sparseBlock = 4096
)

// mode says how a range is written.
type mode int

const (
	// modePlain: ranges that read as zeroes are skipped.
	modePlain mode = iota
	// modeSeq: a sequential zone; every byte up to the range's end is
	// written in order (zeroes as zero writes, which allocate nothing).
	modeSeq
)

var zeroBlock [sparseBlock]byte

func isZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), sparseBlock)
		if !bytes.Equal(p[:n], zeroBlock[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}

// copier copies the source into the target range by range.
type copier struct {
	src      *sources
	t        target
	res      *Result
	progress func(done, total int64)
	work     int64 // progress: the bytes of data to copy (qemu-img's allocated sectors)
	size     int64
	cs       int64 // destination cluster size when compressing, else 0
	buf      []byte
	sparse   int64 // zero detection block (bytes); 0: fully allocated, every byte written
	existing bool  // the target existed (-n): zeroes must be written as zeroes
	topOnly  bool  // the target has a backing file (-B): copy the source's top layer only
	tbSize   int64 // topOnly: the size of the target's backing file in bytes
	stZero   bool  // topOnly: the current run reads as zeroes in the top layer (written as zeroes)
	done     int64
	ctx      context.Context

	// The status of the source from stStart to stEnd, as qemu-img
	// convert remembers it between chunks.
	stEnd  int64
	stData bool
}

func newCopier(src *sources, t target, r Request, res *Result) *copier {
	c := &copier{src: src, t: t, res: res, progress: r.Progress, size: src.Size(), buf: make([]byte, bufSize), ctx: r.Ctx, sparse: sparseBlock}
	c.existing = r.Existing
	c.topOnly = r.Backing != ""
	c.tbSize = r.backingSize
	if r.FullyAllocated {
		c.sparse = 0
	} else if r.SparseSize > 0 {
		c.sparse = r.SparseSize
	}
	if c.ctx == nil {
		c.ctx = context.Background()
	}
	if r.Compress {
		c.cs = t.clusterSize()
	}
	return c
}

// countWork adds to c.work the bytes of [lo, hi) that copyRange will copy
// as data, so that progress counts those only, as qemu-img convert's
// does (a first pass over the block status); nothing when no progress
// is asked for.
func (c *copier) countWork(lo, hi int64) error {
	if c.progress == nil {
		return nil
	}
	c.stEnd = lo
	for off := lo; off < hi; {
		n, data, err := c.chunk(off, hi)
		if err != nil {
			return err
		}
		if data {
			c.work += n
		}
		off += n
	}
	c.stEnd = 0
	return nil
}

// advance records n bytes handled; data ones count for progress.
func (c *copier) advance(n int64, data bool) {
	if c.progress != nil && data {
		c.done += n
		c.progress(c.done, c.work)
	}
}

// copyAll copies the whole source (progress counted first).
func (c *copier) copyAll() error {
	if err := c.countWork(0, c.size); err != nil {
		return err
	}
	return c.copyRange(0, c.size, modePlain)
}

// chunk returns the next piece of [off, hi) to copy and whether it holds
// data: a run of one block status of the source, cut to end on a cluster
// boundary of the source disk it comes from, to at most bufSize bytes of data, and to one whole
// destination cluster of data when compressing (a piece shorter than a
// cluster is then read as data, whatever its status).
func (c *copier) chunk(off, hi int64) (int64, bool, error) {
	if off >= c.stEnd {
		status := c.src.Status
		if c.topOnly {
			// What the source's backing chain provides, the target's
			// backing file is taken to provide (qemu-img convert -B).
			status = c.src.LayerStatus
		}
		s, err := status(off, c.size-off)
		if err != nil {
			return 0, false, fmt.Errorf("error while reading block status at offset %d: %w", off, err)
		}
		n := s.Len
		if c.topOnly && off < c.tbSize {
			n = min(n, c.tbSize-off)
		}
		start, align := c.src.alignAt(off)
		if tail := (off - start + n) % align; n > tail {
			n -= tail
		}
		c.stData = (!s.Zero || c.sparse == 0) && (!c.topOnly || s.Data)
		// Zeroes past the end of the target's backing file read as
		// zeroes there anyway: nothing to write (qemu-img's
		// post_backing_zero).
		c.stZero = s.Zero && !(c.topOnly && off >= c.tbSize)
		c.stEnd = off + n
	}
	n := min(c.stEnd, hi) - off
	data := c.stData
	if data {
		// Compressed data goes one cluster at a time (as in qemu-img):
		// a cluster of zeroes is then skipped like any zero block.
		n = min(n, bufSize)
		if c.cs > 0 {
			n = min(n, c.cs)
		}
	}
	if c.cs > 0 {
		if end := (off + n) / c.cs * c.cs; end > off {
			n = end - off
		} else {
			n = min((off/c.cs+1)*c.cs, hi) - off
			data = true
			c.stData = true
		}
	}
	return n, data, nil
}

// copyRange copies [lo, hi) of the source.
func (c *copier) copyRange(lo, hi int64, m mode) error {
	c.stEnd = lo
	for off := lo; off < hi; {
		if err := c.ctx.Err(); err != nil {
			return fmt.Errorf("conversion interrupted at byte %d: %w", off, err)
		}
		n, data, err := c.chunk(off, hi)
		if err != nil {
			return err
		}
		switch {
		case !data:
			// Zeroes are written where unwritten would not read them: in
			// a sequential zone, over an existing target's old content,
			// over a backing file. What the source's backing chain gives
			// is left to the target's backing file (-B).
			if m == modeSeq || (c.topOnly && c.stZero) || (c.existing && !c.topOnly) {
				if err := c.t.zero(off, n); err != nil {
					return writeErr(off, err)
				}
			}
		default:
			p := c.buf[:n]
			if _, err := c.src.ReadAt(p, off); err != nil {
				return fmt.Errorf("error while reading at byte %d: %w", off, err)
			}
			if c.cs > 0 {
				err = c.writeCompressed(p, off, m)
			} else {
				err = c.writeSparse(p, off, m)
			}
			if err != nil {
				return err
			}
		}
		off += n
		c.advance(n, data)
	}
	return nil
}

func writeErr(off int64, err error) error {
	return fmt.Errorf("error while writing at byte %d: %w", off, err)
}

// writeSparse writes p (guest offset off) without its blocks of zeroes
// (c.sparse bytes, 4 KiB by default, aligned on guest offsets): those are
// skipped, or, in a sequential zone, written as zeroes. With c.sparse 0
// everything is written.
func (c *copier) writeSparse(p []byte, off int64, m mode) error {
	end := off + int64(len(p))
	for pos := off; pos < end; {
		// A run of blocks that are all zero, or all not.
		zero := false
		next := pos
		for first := true; next < end; first = false {
			if c.sparse == 0 {
				next = end // fully allocated: zeroes are written as data
				break
			}
			b := min((next/c.sparse+1)*c.sparse, end)
			z := isZero(p[next-off : b-off])
			if first {
				zero = z
			} else if z != zero {
				break
			}
			next = b
		}
		var err error
		switch {
		case !zero:
			err = c.t.write(p[pos-off:next-off], pos)
		case m == modeSeq || c.existing || c.topOnly:
			err = c.t.zero(pos, next-pos)
		}
		if err != nil {
			return writeErr(pos, err)
		}
		pos = next
	}
	return nil
}

// writeCompressed writes p (guest offset off) cluster by cluster,
// compressed; a piece that is not a whole cluster (at a range boundary
// inside a cluster) is written uncompressed. A chunk of zeroes is not
// written at all, but with -S 0 (or written as zeroes in a sequential zone, an existing
// target, or over a backing file, where unwritten would read the backing
// file's data).
func (c *copier) writeCompressed(p []byte, off int64, m mode) error {
	if isZero(p) && c.sparse != 0 {
		// -S 0 (fully allocated): zeroes are compressed and written
		// like any data, as qemu-img writes them.
		if m == modeSeq || c.existing || c.topOnly {
			if err := c.t.zero(off, int64(len(p))); err != nil {
				return writeErr(off, err)
			}
		}
		return nil
	}
	end := off + int64(len(p))
	for pos := off; pos < end; {
		next := min((pos/c.cs+1)*c.cs, end)
		piece := p[pos-off : next-off]
		if pos%c.cs != 0 || (next-pos != c.cs && next != c.size) {
			if err := c.writeSparse(piece, pos, m); err != nil {
				return err
			}
			c.res.Uncompressed++
			pos = next
			continue
		}
		cl, err := c.t.compress(piece)
		if err != nil {
			return writeErr(pos, err)
		}
		ok, err := c.t.writeCompressed(cl, pos)
		if err != nil {
			return writeErr(pos, err)
		}
		if ok {
			c.res.Compressed++
		} else {
			c.res.Uncompressed++
		}
		pos = next
	}
	return nil
}

// zoneJob is the copy of one sequential zone: [start, dataEnd) is written
// in order, then the zone is finished if finish is set.
type zoneJob struct {
	idx                        uint32
	start, length, capEnd, end int64 // end: start + length
	dataEnd                    int64
	finish                     bool
}

// partial reports whether the zone ends neither empty nor full (it then
// stays active).
func (j zoneJob) partial() bool { return !j.finish && j.dataEnd > j.start && j.dataEnd < j.capEnd }

// zonePlan is the copy of a zoned destination.
type zonePlan struct {
	convEnd int64
	jobs    []zoneJob
}

// planZones decides, for every sequential zone of the destination, up to
// where its data goes and whether it is finished, from the source's write
// pointers or, for a plain source, from its last non-zero sector.
func planZones(src *sources, h *zone.Header) (*zonePlan, error) {
	size := src.Size()
	zs := int64(h.ZoneSize)
	p := &zonePlan{convEnd: min(int64(h.ConventionalZones)*zs, size)}
	partial := 0
	for i := h.ConventionalZones; i < h.NrZones; i++ {
		j := zoneJob{idx: i, start: int64(i) * zs}
		j.length = min(zs, size-j.start)
		j.end = j.start + j.length
		j.capEnd = j.start + min(int64(h.ZoneCapacity), j.length)
		if szones := src.zones(); szones != nil {
			wp := int64(szones[i].WP)
			if wp <= j.capEnd {
				j.dataEnd = wp
			} else {
				// Finished before it was full: its data ends at its last
				// non-zero sector (the rest was never written).
				end, err := lastNonZero(src, j.start, j.capEnd)
				if err != nil {
					return nil, err
				}
				j.dataEnd, j.finish = end, end < j.capEnd
			}
		} else {
			end, err := lastNonZero(src, j.start, j.capEnd)
			if err != nil {
				return nil, err
			}
			if j.capEnd < j.end {
				beyond, err := lastNonZero(src, j.capEnd, j.end)
				if err != nil {
					return nil, err
				}
				if beyond > j.capEnd {
					return nil, fmt.Errorf("zone %d holds non-zero data beyond its capacity (its writable part ends at 0x%x, the data at 0x%x): it cannot be imported into a zoned image", i, j.capEnd, beyond)
				}
			}
			j.dataEnd = end
		}
		if j.partial() {
			partial++
		}
		p.jobs = append(p.jobs, j)
	}
	if h.MaxActiveZones != 0 && partial > int(h.MaxActiveZones) {
		return nil, fmt.Errorf("%d zones would be partially written (active), more than zone.max_active_zones %d", partial, h.MaxActiveZones)
	}
	return p, nil
}

// lastNonZero returns the end of the last 512-byte sector of [lo, hi)
// that holds a non-zero byte (lo when there is none). lo is a multiple
// of 512.
func lastNonZero(src *sources, lo, hi int64) (int64, error) {
	type run struct{ off, n int64 }
	var runs []run
	for off := lo; off < hi; {
		s, err := src.Status(off, hi-off)
		if err != nil {
			return 0, fmt.Errorf("error while reading block status at offset %d: %w", off, err)
		}
		if !s.Zero {
			runs = append(runs, run{off, s.Len})
		}
		off += s.Len
	}
	buf := make([]byte, min(bufSize, hi-lo))
	for k := len(runs) - 1; k >= 0; k-- {
		r := runs[k]
		for end := r.off + r.n; end > r.off; {
			start := max(r.off, end-int64(len(buf)))
			p := buf[:end-start]
			if _, err := src.ReadAt(p, start); err != nil {
				return 0, fmt.Errorf("error while reading at byte %d: %w", start, err)
			}
			for i := len(p) - 1; i >= 0; i-- {
				if p[i] != 0 {
					b := start + int64(i)
					return min((b/512+1)*512, hi), nil
				}
			}
			end = start
		}
	}
	return lo, nil
}

// copyZoned copies into a zoned destination: the conventional zones as
// plain data, then the sequential zones that end empty or full, then
// those that stay partially written, so that zones finished while empty
// find an active slot free.
func (c *copier) copyZoned(p *zonePlan) error {
	if err := c.countWork(0, p.convEnd); err != nil {
		return err
	}
	for _, j := range p.jobs {
		if err := c.countWork(j.start, j.dataEnd); err != nil {
			return err
		}
	}
	if p.convEnd > 0 {
		if err := c.copyRange(0, p.convEnd, modePlain); err != nil {
			return err
		}
	}
	for pass := 0; pass < 2; pass++ {
		for _, j := range p.jobs {
			if j.partial() != (pass == 1) {
				continue
			}
			if j.dataEnd > j.start {
				if err := c.copyRange(j.start, j.dataEnd, modeSeq); err != nil {
					return fmt.Errorf("zone %d: %w", j.idx, err)
				}
			}
			if j.finish {
				if err := c.t.finish(j.start, j.length); err != nil {
					return fmt.Errorf("zone %d: finishing: %w", j.idx, err)
				}
			}
		}
	}
	return nil
}
