package image

import (
	"errors"
	"fmt"
	"io"
)

// mapping classifies guest data at one offset.
type mapping int

const (
	mapUnallocated mapping = iota // backing file or zeroes
	mapZero                       // reads as zeroes
	mapData                       // host cluster data
	mapCompressed                 // compressed cluster
)

func (img *Image) checkRange(off int64, n int) error {
	if img.closed {
		return ErrClosed
	}
	if off < 0 || n < 0 || uint64(off)+uint64(n) > img.hdr.Size {
		return fmt.Errorf("%w: %d bytes at offset 0x%x, image size 0x%x", ErrOutOfRange, n, off, img.hdr.Size)
	}
	return nil
}

func (img *Image) checkWritable(off int64, n int) error {
	if err := img.checkRange(off, n); err != nil {
		return err
	}
	return img.writable()
}

// l2Span returns the guest bytes covered by one L2 table.
func (img *Image) l2Span() uint64 { return img.cs << img.l2Bits }

func (img *Image) entry(t *cacheEntry, i uint64) L2Entry {
	return DecodeL2Entry(t.data, i, img.extL2)
}

func (img *Image) setEntry(t *cacheEntry, i, e, bm uint64) {
	L2Entry{Desc: e, Bitmap: bm}.Put(t.data, i, img.extL2)
	img.l2c.markDirty(t)
}

// l2Table returns the L2 table for L1 index l1i, or nil if unallocated.
func (img *Image) l2Table(l1i uint64) (*cacheEntry, error) {
	if l1i >= img.l1.len() {
		return nil, nil
	}
	off := L1Entry(img.l1.get(l1i)).Offset()
	if off == 0 {
		return nil, nil
	}
	if off&(img.cs-1) != 0 {
		return nil, img.signalCorruption(int64(img.hdr.L1TableOffset+l1i*8), "L2 table offset 0x%x is not cluster aligned (L1 entry %d)", off, l1i)
	}
	t, err := img.l2c.get(off)
	if errors.Is(err, ErrTruncated) {
		return nil, img.beyondEOFError(off, fmt.Sprintf("the L2 table of L1 entry %d", l1i))
	}
	return t, err
}

// l2ForWrite returns a writable L2 table for l1i, allocating it, or copying
// it if it is shared with a snapshot; g is the guest offset of the request
// (for messages). A table lying in other metadata is refused (overlap.go).
func (img *Image) l2ForWrite(l1i, g uint64) (*cacheEntry, error) {
	if l1i >= img.l1.len() {
		return nil, img.signalCorruption(int64(img.hdr.L1TableOffset), "L1 table of %d entries is too small for the virtual size", img.l1.len())
	}
	l1e := L1Entry(img.l1.get(l1i))
	old := l1e.Offset()
	if err := img.checkL2Update(l1i, g); err != nil {
		return nil, err
	}
	if old != 0 && l1e.Copied() {
		return img.l2Table(l1i)
	}
	var oldT *cacheEntry
	if old != 0 {
		t, err := img.l2Table(l1i)
		if err != nil {
			return nil, err
		}
		oldT = t
	}
	off, err := img.rc.alloc(img.cs)
	if err != nil {
		return nil, err
	}
	if err := img.f.ZeroRange(int64(off), int64(img.cs)); err != nil {
		return nil, img.dropAllocation(off, img.cs, fmt.Errorf("reserving space for a new L2 table: %w", err))
	}
	t := img.l2c.getEmpty(off)
	if oldT != nil {
		copy(t.data, oldT.data)
		img.deferFree(old, img.cs)
	}
	img.l2c.markDirty(t)
	img.metaRemoveL2(old)
	img.l1.set(l1i, off|OflagCopied)
	img.metaAdd(metaActiveL2, off, l1i)
	img.l1Dirty[l1i/64] = struct{}{}
	return t, nil
}

// classify returns how the cluster described by e maps guest bytes at
// in-cluster offset inC, and how many bytes from there map the same way.
func (img *Image) classify(e L2Entry, inC uint64) (mapping, uint64, uint64) {
	host := e.Offset()
	t := e.Type(img.extL2)
	if img.hdr.Version < 3 && (t == ClusterZeroPlain || t == ClusterZeroAlloc) {
		// Version 2 has no zero flag: the bit is not looked at.
		t = L2Entry{Desc: e.Desc &^ OflagZero}.Type(false)
	}
	switch {
	case t == ClusterCompressed:
		return mapCompressed, 0, img.cs - inC
	case t == ClusterZeroPlain || t == ClusterZeroAlloc:
		return mapZero, 0, img.cs - inC
	case !img.extL2 && t == ClusterUnallocated:
		return mapUnallocated, 0, img.cs - inC
	case !img.extL2:
		return mapData, host + inC, img.cs - inC
	}
	// Extended L2 entries: the subclusters say.
	state := func(s uint64) mapping {
		switch e.Subcluster(s) {
		case SubData:
			return mapData
		case SubZero:
			return mapZero
		}
		return mapUnallocated
	}
	sc := inC / img.subSize
	m := state(sc)
	end := sc + 1
	for end < 32 && state(end) == m {
		end++
	}
	return m, host + inC, end*img.subSize - inC
}

// ReadAt reads len(p) guest bytes at off. Unwritten bytes read as zeroes (or
// from the backing file). The request is mapped under mu; the data clusters
// are read after mu is released, so that reads run in parallel.
func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	return img.readMapped(p, func() (uint64, error) { return uint64(off), img.checkRange(off, len(p)) })
}

// readMapped reads len(p) bytes at the guest offset where returns (it
// runs with mu held and checks the request): the clusters are mapped
// under mu, the data read with mu released and io held shared.
func (img *Image) readMapped(p []byte, where func() (uint64, error)) (int, error) {
	img.io.RLock()
	defer img.io.RUnlock()
	img.mu.Lock()
	g, err := where()
	if err == nil {
		err = img.maybeEvict()
	}
	var reads []transfer
	if err == nil {
		err = img.readGuest(p, g, &reads)
	}
	if err == nil && len(reads) > 0 && img.event != nil {
		err = img.event(EventReadAIO)
	}
	img.mu.Unlock()
	if err != nil {
		return 0, err
	}
	for _, r := range reads {
		if err := readData(img.raw, r.p, r.host); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// transfer is guest data to move to or from host offset host once mu is
// released (io is held shared meanwhile, so the cluster stays mapped).
type transfer struct {
	p    []byte
	host uint64
}

// readGuest reads [g, g+len(p)). With deferred non-nil, the reads of data
// clusters are appended there instead of performed (the caller performs
// them after releasing mu); zero, unallocated, backing-file and compressed
// parts are filled at once.
func (img *Image) readGuest(p []byte, g uint64, deferred *[]transfer) error {
	for len(p) > 0 {
		l1i := g >> (img.cb + img.l2Bits)
		t, err := img.l2Table(l1i)
		if err != nil {
			return err
		}
		if t == nil {
			n := min(uint64(len(p)), img.l2Span()-g%img.l2Span())
			if err := img.readUnallocated(p[:n], g); err != nil {
				return err
			}
			p, g = p[n:], g+n
			continue
		}
		i := (g >> img.cb) & (img.l2Ents - 1)
		e := img.entry(t, i)
		if img.extL2 && e.InvalidSubclusters() {
			return img.invalidEntry(l1i, i, g, false)
		}
		inC := g & (img.cs - 1)
		m, host, n := img.classify(e, inC)
		n = min(n, uint64(len(p)))
		switch m {
		case mapZero:
			clear(p[:n])
		case mapUnallocated:
			if err := img.readUnallocated(p[:n], g); err != nil {
				return err
			}
		case mapCompressed:
			if err := img.checkEntryHost(e, g); err != nil {
				return err
			}
			data, err := img.decompress(e.Desc, g)
			if err != nil {
				return err
			}
			copy(p[:n], data[inC:])
		case mapData:
			if (host-inC)&(img.cs-1) != 0 {
				return img.signalCorruption(int64(host-inC), "data cluster offset 0x%x for guest offset 0x%x is not cluster aligned", host-inC, g)
			}
			if err := img.checkEntryHost(e, g); err != nil {
				return err
			}
			// Extend the read over following clusters stored contiguously.
			if !img.extL2 && n == img.cs-inC {
				for j := i + 1; j < img.l2Ents && n < uint64(len(p)); j++ {
					nm, nh, _ := img.classify(img.entry(t, j), 0)
					if nm != mapData || nh != host+n || img.beyondEOF(nh) {
						break
					}
					n = min(n+img.cs, uint64(len(p)))
				}
			}
			if deferred != nil {
				*deferred = append(*deferred, transfer{p[:n], host})
			} else if err := readData(img.f, p[:n], host); err != nil {
				return err
			}
		}
		p, g = p[n:], g+n
	}
	return nil
}

// invalidEntry marks the image corrupt for the extended L2 entry i of the
// L2 table of L1 index l1i (guest offset g), which InvalidSubclusters
// refuses, and returns the error, with QEMU's words (whose read and write
// paths differ by one space).
func (img *Image) invalidEntry(l1i, i, g uint64, write bool) error {
	l2 := L1Entry(img.l1.get(l1i)).Offset()
	sep := "  "
	if write {
		sep = " "
	}
	return img.signalCorruptionQ(int64(l2+i*img.entSize), fmt.Sprintf("Invalid cluster entry found%s(L2 offset: %#x, L2 index: %s)", sep, l2, cHex(i)),
		"L2 entry %d of the table at 0x%x (guest offset 0x%x) marks a subcluster allocated that is zero or has no cluster", i, l2, g)
}

// cHex formats v as C's %#x does: "0" for zero, else 0x and the digits.
func cHex(v uint64) string {
	if v == 0 {
		return "0"
	}
	return fmt.Sprintf("%#x", v)
}

func (img *Image) readUnallocated(p []byte, g uint64) error {
	if img.backing == nil {
		clear(p)
		return nil
	}
	_, err := img.backing.ReadAt(p, int64(g))
	return err
}

// readData reads host data; bytes past the end of the file read as zeroes,
// as in QEMU's file driver.
func readData(f io.ReaderAt, p []byte, off uint64) error {
	n, err := f.ReadAt(p, int64(off))
	if n < len(p) {
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		clear(p[n:])
	}
	return nil
}

// WriteAt writes p at guest offset off, allocating clusters as needed.
//
// A write that lands entirely on allocated, unshared clusters (the common
// overwrite) is mapped under mu and transferred after mu is released, in
// parallel with other such writes and with reads; any other write (one
// that allocates, copies on write, or changes subcluster or zero flags)
// holds the image exclusively.
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	if n, done, err := img.writeInPlace(p, off); done {
		return n, err
	}
	if done, err := img.writeAllocating(p, off); done {
		if err != nil {
			return 0, err
		}
		return len(p), nil
	}
	img.lock()
	defer img.unlock()
	if err := img.checkWritable(off, len(p)); err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		if err := img.maybeEvict(); err != nil {
			return done, err
		}
		g := uint64(off) + uint64(done)
		n := min(uint64(len(p)-done), img.l2Span()-g%img.l2Span())
		if err := img.writeChunk(p[done:done+int(n)], g); err != nil {
			return done, err
		}
		done += int(n)
	}
	return len(p), nil
}

// writeInPlace performs a write whose every byte lies in an allocated,
// unshared, normal cluster (no extended L2, no zero flag), holding io
// shared and mu only to map it. done=false (nothing written) sends the
// write to the exclusive path. The file counts as changed once the data
// is written, so that a sync racing with the transfer cannot leave it
// counted as synced.
func (img *Image) writeInPlace(p []byte, off int64) (n int, done bool, err error) {
	img.io.RLock()
	defer img.io.RUnlock()
	img.mu.Lock()
	writes, ok, err := img.mapInPlace(p, off)
	img.mu.Unlock()
	if err != nil || !ok {
		return 0, err != nil, err
	}
	for _, w := range writes {
		if _, err = img.raw.WriteAt(w.p, int64(w.host)); err != nil {
			break
		}
	}
	img.mu.Lock()
	img.unsynced = true
	img.mu.Unlock()
	if err != nil {
		return 0, true, err
	}
	return len(p), true, nil
}

// mapInPlace maps a write for writeInPlace; ok=false when some part of it
// needs the exclusive path (then nothing was changed). mu is held.
func (img *Image) mapInPlace(p []byte, off int64) (writes []transfer, ok bool, err error) {
	if err := img.checkWritable(off, len(p)); err != nil {
		return nil, false, err
	}
	if img.extL2 || len(p) == 0 {
		return nil, false, nil
	}
	if err := img.maybeEvict(); err != nil {
		return nil, false, err
	}
	g, end := uint64(off), uint64(off)+uint64(len(p))
	for g < end {
		l1i := g >> (img.cb + img.l2Bits)
		if l1i >= img.l1.len() || !L1Entry(img.l1.get(l1i)).Copied() {
			return nil, false, nil
		}
		t, err := img.l2Table(l1i)
		if err != nil || t == nil {
			return nil, false, err
		}
		i := (g >> img.cb) & (img.l2Ents - 1)
		e := img.entry(t, i)
		host := e.Offset()
		if !img.inPlace(e) || e.Type(false) != ClusterNormal || host&(img.cs-1) != 0 {
			return nil, false, nil
		}
		if err := img.checkEntryHost(e, g); err != nil {
			return nil, false, err
		}
		inC := g & (img.cs - 1)
		n := min(img.cs-inC, end-g)
		if err := img.checkDataWrite(host+inC, n, g); err != nil {
			return nil, false, err
		}
		src := p[g-uint64(off) : g-uint64(off)+n]
		if k := len(writes) - 1; k >= 0 && writes[k].host+uint64(len(writes[k].p)) == host+inC {
			writes[k].p = p[g-uint64(off)-uint64(len(writes[k].p)) : g-uint64(off)+n]
		} else {
			writes = append(writes, transfer{src, host + inC})
		}
		g += n
	}
	return writes, true, nil
}

// allocation is a write in flight into new clusters (writeAllocating).
type allocation struct {
	l1i, i, k uint64 // L1 index, first L2 index, number of clusters
	host      uint64 // the new clusters, contiguous
	inC       uint64 // where the request starts in the first cluster
	gc        uint64 // the first guest cluster
	zero      bool   // the request covers the clusters in part: zero them first
}

// writeAllocating performs a write that needs new clusters for its whole
// range, as QEMU does, without holding mu during the transfer: the range
// lies in one L2 table whose L1 entry is in place, every old entry is
// unallocated or plain zero, and what the request leaves of its first
// and last cluster reads as zeroes. The clusters are allocated under mu,
// zeroed (when covered in part) and written with mu released while their
// guest clusters are marked in flight (no other write allocates them
// meanwhile), and linked under mu once the data is written — the order
// of the exclusive path. done=false (nothing changed) sends the write to
// the exclusive path.
func (img *Image) writeAllocating(p []byte, off int64) (done bool, err error) {
	img.io.RLock()
	defer img.io.RUnlock()
	img.mu.Lock()
	a, ok, err := img.planAllocation(p, off)
	img.mu.Unlock()
	if err != nil || !ok {
		return err != nil, err
	}
	if a.zero {
		err = img.raw.ZeroRange(int64(a.host), int64(a.k*img.cs))
	}
	if err == nil {
		_, err = img.raw.WriteAt(p, int64(a.host+a.inC))
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	return true, img.finishAllocation(a, err)
}

// planAllocation checks a write for writeAllocating and allocates its
// clusters; ok=false when it does not qualify. mu is held (and released
// while it waits for an overlapping allocation in flight).
func (img *Image) planAllocation(p []byte, off int64) (a allocation, ok bool, err error) {
	for {
		if err := img.checkWritable(off, len(p)); err != nil {
			return a, false, err
		}
		if img.extL2 || len(p) == 0 {
			return a, false, nil
		}
		if err := img.maybeEvict(); err != nil {
			return a, false, err
		}
		g, n := uint64(off), uint64(len(p))
		shift := img.cb + img.l2Bits
		l1i := g >> shift
		if (g+n-1)>>shift != l1i || l1i >= img.l1.len() || !L1Entry(img.l1.get(l1i)).Copied() {
			return a, false, nil
		}
		t, err := img.l2Table(l1i)
		if err != nil || t == nil {
			return a, false, err
		}
		if err := img.checkL2Update(l1i, g); err != nil {
			return a, false, err
		}
		i, inC := (g>>img.cb)&(img.l2Ents-1), g&(img.cs-1)
		k := (inC + n + img.cs - 1) / img.cs
		for j := uint64(0); j < k; j++ {
			if typ := img.entry(t, i+j).Type(false); typ != ClusterUnallocated && typ != ClusterZeroPlain {
				return a, false, nil
			}
		}
		zero := inC != 0 || (inC+n)%img.cs != 0
		if zero && !img.cowReadsZero(t, i, k, inC, n) {
			return a, false, nil
		}
		gc := g >> img.cb
		if img.allocInFlight(gc, k) {
			img.allocDone.Wait()
			continue
		}
		host, err := img.rc.alloc(k * img.cs)
		if err != nil {
			return a, false, err
		}
		if err := img.checkDataWrite(host, k*img.cs, g); err != nil {
			return a, false, err
		}
		for j := uint64(0); j < k; j++ {
			img.allocating[gc+j] = struct{}{}
		}
		return allocation{l1i: l1i, i: i, k: k, host: host, inC: inC, gc: gc, zero: zero}, true, nil
	}
}

// allocInFlight reports whether a write is allocating any of the k guest
// clusters from gc.
func (img *Image) allocInFlight(gc, k uint64) bool {
	if len(img.allocating) == 0 {
		return false
	}
	for j := uint64(0); j < k; j++ {
		if _, busy := img.allocating[gc+j]; busy {
			return true
		}
	}
	return false
}

// finishAllocation links the clusters of a once its data is written
// (cause nil), or frees them, never referenced, when the transfer failed.
// mu is held.
func (img *Image) finishAllocation(a allocation, cause error) error {
	for j := uint64(0); j < a.k; j++ {
		delete(img.allocating, a.gc+j)
	}
	img.allocDone.Broadcast()
	img.unsynced = true
	if cause != nil {
		return img.dropAllocation(a.host, a.k*img.cs, cause)
	}
	// The table may have been written back and evicted meanwhile; its
	// L1 entry cannot have changed (that takes the image exclusively).
	t, err := img.l2Table(a.l1i)
	if err == nil && t == nil {
		err = img.signalCorruption(int64(img.hdr.L1TableOffset+a.l1i*8), "L2 table of L1 entry %d vanished during a write", a.l1i)
	}
	if err != nil {
		return img.dropAllocation(a.host, a.k*img.cs, err)
	}
	img.linkAllocated(t, a.i, a.k, a.host)
	return nil
}

// inPlace reports whether the cluster of e can be overwritten where it is.
func (img *Image) inPlace(e L2Entry) bool {
	return e.Copied() && e.Type(img.extL2).Allocated()
}

// writeChunk writes p at g; the range lies within one L2 table.
func (img *Image) writeChunk(p []byte, g uint64) error {
	if err := img.checkChunkHosts(g, g+uint64(len(p))); err != nil {
		return err
	}
	t, err := img.l2ForWrite(g>>(img.cb+img.l2Bits), g)
	if err != nil {
		return err
	}
	end := g + uint64(len(p))
	if img.extL2 {
		// An invalid entry anywhere in the request fails it before
		// anything is written, as in QEMU.
		for c := g &^ (img.cs - 1); c < end; c += img.cs {
			i := (c >> img.cb) & (img.l2Ents - 1)
			if img.entry(t, i).InvalidSubclusters() {
				return img.invalidEntry(c>>(img.cb+img.l2Bits), i, c, true)
			}
		}
	}
	for g < end {
		i := (g >> img.cb) & (img.l2Ents - 1)
		e := img.entry(t, i)
		inC := g & (img.cs - 1)
		src := p[uint64(len(p))-(end-g):]
		if img.inPlace(e) {
			host := e.Offset()
			if host&(img.cs-1) != 0 {
				return img.signalCorruption(int64(host), "data cluster offset 0x%x for guest offset 0x%x is not cluster aligned", host, g)
			}
			// The checks of the three ways below: their writes stay in
			// this cluster (and in the contiguous ones checked there).
			if err := img.checkDataWrite(host, img.cs, g); err != nil {
				return err
			}
			var n uint64
			var err error
			switch {
			case img.extL2:
				n, err = img.writeSubclusters(t, i, e.Desc, e.Bitmap, src, g)
			case img.hdr.Version >= 3 && e.Type(false) == ClusterZeroAlloc:
				n, err = img.writePreallocZero(t, i, host, src, g)
			default:
				n = min(img.cs-inC, uint64(len(src)))
				// Extend over following in-place clusters stored contiguously.
				for j := i + 1; j < img.l2Ents && n < uint64(len(src)); j++ {
					ne := img.entry(t, j)
					if !img.inPlace(ne) || ne.Type(false) != ClusterNormal || ne.Offset() != host+(j-i)*img.cs {
						break
					}
					if err := img.checkDataWrite(ne.Offset(), img.cs, g+n); err != nil {
						return err
					}
					n = min(n+img.cs, uint64(len(src)))
				}
				_, err = img.f.WriteAt(src[:n], int64(host+inC))
			}
			if err != nil {
				return err
			}
			g += n
			continue
		}
		// A run of clusters that all need new host clusters.
		k := uint64(1)
		for i+k < img.l2Ents && g-inC+k*img.cs < end {
			if img.inPlace(img.entry(t, i+k)) {
				break
			}
			k++
		}
		n, err := img.writeAllocated(t, i, k, src, g)
		if err != nil {
			return err
		}
		g += n
	}
	return nil
}

// writeAllocated writes src (from guest offset g) into k new contiguous host
// clusters replacing L2 entries i..i+k-1, copying the current content of
// partially written clusters. It returns the bytes of src consumed.
//
// When the parts of the clusters outside the request read as zeroes, it
// zeroes the new clusters with ZeroRange (fallocate: no data moves, and
// the space is reserved) and writes only the request, as QEMU does;
// otherwise it writes whole clusters with the old content around the
// request (copy-on-write).
func (img *Image) writeAllocated(t *cacheEntry, i, k uint64, src []byte, g uint64) (uint64, error) {
	cs := img.cs
	inC := g & (cs - 1)
	base := g - inC
	n := min(k*cs-inC, uint64(len(src)))
	for j := uint64(0); j < k; j++ {
		if err := img.checkDrop(img.entry(t, i+j), base+j*cs); err != nil {
			return 0, err
		}
	}
	host, err := img.rc.alloc(k * cs)
	if err != nil {
		return 0, err
	}
	if err := img.checkDataWrite(host, k*cs, g); err != nil {
		return 0, err
	}
	if (inC != 0 || n != k*cs) && img.cowReadsZero(t, i, k, inC, n) {
		if err := img.f.ZeroRange(int64(host), int64(k*cs)); err != nil {
			return 0, img.dropAllocation(host, k*cs, err)
		}
		if _, err := img.f.WriteAt(src[:n], int64(host+inC)); err != nil {
			return 0, img.dropAllocation(host, k*cs, err)
		}
		img.linkWritten(t, i, k, host, inC, n)
		return n, nil
	}
	if img.extL2 && (inC != 0 || n != k*cs) && img.noHostClusters(t, i, k) {
		// Extended L2 over clusters without a host cluster: as QEMU,
		// only the subclusters the request touches become allocated,
		// their parts outside the request copied from what they read
		// now (the backing file, or zeroes); the other subclusters keep
		// their state and read the same.
		sub := img.subSize
		lo, hi := inC/sub*sub, min(k*cs, (inC+n+sub-1)/sub*sub)
		if err := img.f.ZeroRange(int64(host), int64(k*cs)); err != nil {
			return 0, img.dropAllocation(host, k*cs, err)
		}
		buf := make([]byte, hi-lo)
		if err := img.readGuest(buf, base+lo, nil); err != nil {
			return 0, img.dropAllocation(host, k*cs, err)
		}
		copy(buf[inC-lo:], src[:n])
		if _, err := img.f.WriteAt(buf, int64(host+lo)); err != nil {
			return 0, img.dropAllocation(host, k*cs, err)
		}
		img.linkWritten(t, i, k, host, lo, hi-lo)
		return n, nil
	}
	buf := src[:n]
	if inC != 0 || n != k*cs {
		// Copy-on-write: the partially written head and tail clusters
		// keep their current content outside the written range.
		buf = make([]byte, k*cs)
		if inC != 0 {
			if err := img.readGuest(buf[:cs], base, nil); err != nil {
				return 0, img.dropAllocation(host, k*cs, err)
			}
		}
		if (inC+n)%cs != 0 && !(k == 1 && inC != 0) {
			last := (k - 1) * cs
			if err := img.readGuest(buf[last:], base+last, nil); err != nil {
				return 0, img.dropAllocation(host, k*cs, err)
			}
		}
		copy(buf[inC:], src[:n])
	}
	if _, err := img.f.WriteAt(buf, int64(host)); err != nil {
		return 0, img.dropAllocation(host, k*cs, err)
	}
	img.linkAllocated(t, i, k, host)
	return n, nil
}

// cowReadsZero reports whether the parts of the k clusters from L2 entry i
// that a write of n bytes at in-cluster offset inC leaves untouched read
// as zeroes now (so that the new clusters need no copy of them).
func (img *Image) cowReadsZero(t *cacheEntry, i, k, inC, n uint64) bool {
	cs := img.cs
	if inC != 0 {
		if !img.readsZero(img.entry(t, i), 0, inC) {
			return false
		}
	}
	if tail := (inC + n) % cs; tail != 0 {
		if !img.readsZero(img.entry(t, i+k-1), tail, cs-tail) {
			return false
		}
	}
	return true
}

// noHostClusters reports whether none of L2 entries i..i+k-1 has a host
// cluster (unallocated or zero, not compressed): nothing to copy but what
// reads through (extended L2).
func (img *Image) noHostClusters(t *cacheEntry, i, k uint64) bool {
	for j := uint64(0); j < k; j++ {
		if e := img.entry(t, i+j); e.Offset() != 0 || e.Compressed() {
			return false
		}
	}
	return true
}

// linkAllocated points L2 entries i..i+k-1 at the k contiguous clusters
// from host, dropping the references the entries held.
// linkWritten links k new clusters of which only the n bytes from
// in-cluster offset inC of the first were written (the rest zeroed, and
// reading as zeroes before). With extended L2 entries only the written
// subclusters become allocated, as QEMU marks them; the others keep
// their state (unallocated or zero), which reads the same.
func (img *Image) linkWritten(t *cacheEntry, i, k, host, inC, n uint64) {
	if !img.extL2 {
		img.linkAllocated(t, i, k, host)
		return
	}
	cs, sub := img.cs, img.subSize
	for j := uint64(0); j < k; j++ {
		oe := img.entry(t, i+j)
		lo := max(inC, j*cs) - j*cs
		hi := min(inC+n, (j+1)*cs) - j*cs
		var alloc uint64
		for s := lo / sub; s <= (hi-1)/sub; s++ {
			alloc |= 1 << s
		}
		zero := (oe.Bitmap >> 32) &^ alloc
		if oe.Compressed() {
			zero = 0
		}
		img.deferFreeEntry(oe)
		img.setEntry(t, i+j, (host+j*cs)|OflagCopied, alloc|zero<<32)
	}
}

func (img *Image) linkAllocated(t *cacheEntry, i, k, host uint64) {
	for j := uint64(0); j < k; j++ {
		img.deferFreeEntry(img.entry(t, i+j))
		var bm uint64
		if img.extL2 {
			bm = BitmapAllAlloc
		}
		img.setEntry(t, i+j, (host+j*img.cs)|OflagCopied, bm)
	}
}

// dropAllocation frees clusters that were allocated but never referenced.
func (img *Image) dropAllocation(host, length uint64, cause error) error {
	if err := img.rc.update(host, length, 1, true); err != nil {
		return fmt.Errorf("%w (and freeing the new clusters failed: %v)", cause, err)
	}
	return cause
}

// writeSubclusters writes into an allocated, unshared cluster of an
// extended-L2 image, copying the current content into partially written
// subclusters that were not allocated, and marks them allocated.
func (img *Image) writeSubclusters(t *cacheEntry, i, e, bm uint64, src []byte, g uint64) (uint64, error) {
	sub := img.subSize
	inC := g & (img.cs - 1)
	n := min(img.cs-inC, uint64(len(src)))
	host := e & L2OffsetMask
	s0, s1 := inC/sub, (inC+n-1)/sub
	a, b := s0*sub, (s1+1)*sub
	headCOW := inC != a && bm&(1<<s0) == 0
	tailCOW := inC+n != b && bm&(1<<s1) == 0
	data, at := src[:n], inC
	if headCOW || tailCOW {
		// The write is widened to whole subclusters [a, b): both partially
		// written end subclusters keep their current content (from the
		// host cluster if allocated, else zeroes or the backing file).
		buf := make([]byte, b-a)
		base := g - inC
		if inC != a {
			if err := img.readGuest(buf[:sub], base+a, nil); err != nil {
				return 0, err
			}
		}
		if inC+n != b {
			if err := img.readGuest(buf[b-a-sub:], base+b-sub, nil); err != nil {
				return 0, err
			}
		}
		copy(buf[inC-a:], src[:n])
		data, at = buf, a
	}
	if _, err := img.f.WriteAt(data, int64(host+at)); err != nil {
		return 0, err
	}
	nbm := bm
	for s := s0; s <= s1; s++ {
		nbm |= 1 << s
		nbm &^= 1 << (32 + s)
	}
	if nbm != bm {
		// Relinked as QEMU links a cluster: offset and OFLAG_COPIED (the
		// descriptor's zero bit, unused with extended entries, dropped).
		img.setEntry(t, i, host|OflagCopied, nbm)
	}
	return n, nil
}

// writePreallocZero writes into a preallocated cluster that reads as zeroes:
// the rest of the cluster is zero-filled and the zero flag cleared.
func (img *Image) writePreallocZero(t *cacheEntry, i, host uint64, src []byte, g uint64) (uint64, error) {
	inC := g & (img.cs - 1)
	n := min(img.cs-inC, uint64(len(src)))
	buf := make([]byte, img.cs)
	copy(buf[inC:], src[:n])
	if _, err := img.f.WriteAt(buf, int64(host)); err != nil {
		return 0, err
	}
	img.setEntry(t, i, host|OflagCopied, 0)
	return n, nil
}

// deferFreeEntry drops the reference an L2 entry holds on host clusters.
func (img *Image) deferFreeEntry(e L2Entry) {
	if e.Compressed() {
		off, length := e.CompressedRange(img.cb)
		img.deferFree(off&^511, length)
		return
	}
	if host := e.Offset(); host != 0 {
		img.deferFree(host, img.cs)
	}
}

// deferFree schedules a refcount decrement for after the next durable
// metadata writeback: until then the old reference may still be on disk.
func (img *Image) deferFree(off, length uint64) {
	img.pendingFree = append(img.pendingFree, extent{off, length})
}

// WriteZeroes makes n bytes at off read as zeroes. Whole clusters are
// switched to the zero flag (version 3) or deallocated (version 2 without
// a backing file); partial clusters are written with zeroes.
func (img *Image) WriteZeroes(off, n int64) error {
	return img.zeroRange(off, n, zeroKeep)
}

// WriteZeroesUnmap makes n bytes at off read as zeroes as a write of
// zeroes that may unmap (qemu-io's write -z -u): whole clusters get the
// zero flag (version 3), allocated or not, and the host clusters they held
// are freed; partial clusters are written with zeroes. Version 2 images
// have no zero flag: whole clusters are deallocated when no backing file
// shows through, else written with zeroes.
func (img *Image) WriteZeroesUnmap(off, n int64) error {
	return img.zeroRange(off, n, zeroUnmap)
}

// Discard deallocates the whole clusters in [off, off+n) and zeroes the
// partial ones, so that the range reads as zeroes afterwards.
func (img *Image) Discard(off, n int64) error {
	return img.zeroRange(off, n, zeroDiscard)
}

// zeroMode is how zeroRange treats whole clusters.
type zeroMode int

const (
	zeroKeep    zeroMode = iota // write zeroes: keep an unshared allocation
	zeroUnmap                   // write zeroes, may unmap: free it
	zeroDiscard                 // discard: free it, leave unallocated ones alone
)

// MakeEmpty deallocates every cluster of an image opened with NoBacking,
// so that the image reads through to its backing file (qcow2's
// make_empty, as qemu-img commit leaves an overlay): every L2 entry
// becomes unallocated (no zero flag), and the clusters are freed once the
// entries are durable, as a discard frees them.
func (img *Image) MakeEmpty() error {
	img.lock()
	defer img.unlock()
	if img.backing != nil {
		return fmt.Errorf("MakeEmpty needs the image opened without its backing file")
	}
	if err := img.checkWritable(0, 0); err != nil {
		return err
	}
	img.deallocating = true
	defer func() { img.deallocating = false }()
	for g, end := uint64(0), img.hdr.Size; g < end; {
		if err := img.maybeEvict(); err != nil {
			return err
		}
		chunkEnd := min(end, g-g%img.l2Span()+img.l2Span())
		if err := img.zeroChunk(g, chunkEnd, zeroDiscard); err != nil {
			return err
		}
		g = chunkEnd
	}
	return nil
}

func (img *Image) zeroRange(off, n int64, mode zeroMode) error {
	img.lock()
	defer img.unlock()
	if n < 0 || n > 1<<62 {
		return fmt.Errorf("%w: length %d", ErrOutOfRange, n)
	}
	if err := img.checkWritable(off, int(n)); err != nil {
		return err
	}
	g, end := uint64(off), uint64(off)+uint64(n)
	if img.extL2 && mode != zeroDiscard {
		return img.zeroSubclusterRange(g, end, mode)
	}
	return img.zeroChunks(g, end, mode)
}

// zeroChunks zeroes [g, end) L2 table by L2 table (zeroChunk).
func (img *Image) zeroChunks(g, end uint64, mode zeroMode) error {
	for g < end {
		if err := img.maybeEvict(); err != nil {
			return err
		}
		chunkEnd := min(end, g-g%img.l2Span()+img.l2Span())
		if err := img.zeroChunk(g, chunkEnd, mode); err != nil {
			return err
		}
		g = chunkEnd
	}
	return nil
}

// zeroSubclusterRange is a write of zeroes to [g, end) of an image with
// extended L2 entries, as QEMU makes it: the block layer splits the
// request on subcluster boundaries into a head (the part of a first
// subcluster it covers in part), a middle of whole subclusters and a tail,
// and the qcow2 driver zeroizes each (zeroizeSubclusters), or, where it
// cannot, the piece is written with zeroes. The head and tail zeroize
// their whole subcluster when the rest of it reads as zeroes and it holds
// no data; else they are written with zeroes.
func (img *Image) zeroSubclusterRange(g, end uint64, mode zeroMode) error {
	sc := img.subSize
	for g < end {
		var piece uint64
		switch {
		case g%sc != 0:
			piece = min(end, g-g%sc+sc) - g
		case end-g >= sc:
			piece = (end - g) / sc * sc
		default:
			piece = end - g
		}
		pEnd := g + piece
		if g%sc == 0 && pEnd%sc == 0 {
			ok, err := img.zeroizeSubclusters(g, pEnd, mode)
			if err != nil {
				return err
			}
			if !ok {
				if err := img.writeZeroBytes(g, pEnd); err != nil {
					return err
				}
			}
			g = pEnd
			continue
		}
		// A head or tail: the whole subcluster when the rest of it reads
		// as zeroes and it holds no data (the image's end counts as the
		// end of the subcluster).
		sStart := g - g%sc
		done := false
		if img.subclusterZeroable(sStart, g, pEnd) {
			ok, err := img.zeroizeSubclusters(sStart, sStart+sc, mode)
			if err != nil {
				return err
			}
			done = ok
		}
		if !done {
			if err := img.writeZeroBytes(g, pEnd); err != nil {
				return err
			}
		}
		g = pEnd
	}
	return nil
}

// subclusterZeroable reports whether the subcluster starting at sStart
// holds no data (unallocated or zero, not compressed) and reads as
// zeroes outside [from, to) up to its end or the image's end (QEMU's
// is_zero of a request's head and tail).
func (img *Image) subclusterZeroable(sStart, from, to uint64) bool {
	t, err := img.l2Table(sStart >> (img.cb + img.l2Bits))
	if err != nil {
		return false
	}
	var e L2Entry
	if t != nil {
		e = img.entry(t, (sStart>>img.cb)&(img.l2Ents-1))
	}
	if e.Compressed() || e.Subcluster((sStart&(img.cs-1))/img.subSize) == SubData {
		return false
	}
	base := sStart &^ (img.cs - 1)
	sEnd := min(sStart+img.subSize, img.hdr.Size)
	return img.othersReadZeroIn(e, base, sStart-base, sEnd-base, from-base, min(to, sEnd)-base)
}

// zeroizeSubclusters is QEMU's qcow2_subcluster_zeroize of [g, end),
// whose ends are subcluster boundaries (end may pass the image's end):
// the clusters it covers whole are zeroed (zeroChunk: zero bits, the
// allocation kept or, with unmap, freed), the subclusters of the clusters
// it covers in part get their zero bit and lose their allocation bit. It
// changes nothing and reports false when a cluster covered in part is
// compressed (QEMU: -ENOTSUP, the request is then written with zeroes).
func (img *Image) zeroizeSubclusters(g, end uint64, mode zeroMode) (bool, error) {
	cs := img.cs
	head := min(end, (g+cs-1)&^(cs-1)) - g
	mid := g + head
	var tail uint64
	if end < img.hdr.Size {
		tail = end - max(mid, end&^(cs-1))
	}
	midEnd := end - tail
	for _, part := range [][2]uint64{{g, head}, {midEnd, tail}} {
		if part[1] == 0 {
			continue
		}
		t, err := img.l2Table(part[0] >> (img.cb + img.l2Bits))
		if err != nil {
			return false, err
		}
		if t != nil && img.entry(t, (part[0]>>img.cb)&(img.l2Ents-1)).Compressed() {
			return false, nil
		}
	}
	if head > 0 {
		if err := img.setZeroBits(g, head); err != nil {
			return false, err
		}
	}
	if midEnd > mid {
		if err := img.zeroChunks(mid, min(midEnd, img.hdr.Size), mode); err != nil {
			return false, err
		}
	}
	if tail > 0 {
		if err := img.setZeroBits(midEnd, tail); err != nil {
			return false, err
		}
	}
	return true, nil
}

// writeZeroBytes writes zeroes to [g, end) as data (the fallback of a
// write of zeroes that cannot be made with zero bits), a cluster at a
// time.
func (img *Image) writeZeroBytes(g, end uint64) error {
	zero := make([]byte, img.cs)
	for g < end {
		if err := img.maybeEvict(); err != nil {
			return err
		}
		n := min(end, g-g%img.cs+img.cs) - g
		if err := img.writeChunk(zero[:n], g); err != nil {
			return err
		}
		g += n
	}
	return nil
}

// zeroChunk zeroes [g, end), which lies within one L2 table, as QEMU's
// qcow2 driver does: a write of zeroes (discard false) marks whole
// clusters with the zero flag (keeping an unshared allocation: "zero,
// allocated"), also clusters it covers in part when the rest of the
// cluster reads as zeroes and holds no data; a discard marks whole
// allocated clusters zero and frees them, and leaves unallocated ones
// alone. What is left (parts of clusters holding data, version 2 images
// with a backing file) is written with zeroes. A write of zeroes that may
// unmap (zeroUnmap) marks whole clusters as a write of zeroes does, but
// frees the host clusters, as a discard does.
func (img *Image) zeroChunk(g, end uint64, mode zeroMode) error {
	discard, unmap := mode == zeroDiscard, mode != zeroKeep
	if err := img.checkChunkHosts(g, end); err != nil {
		return err
	}
	l1i := g >> (img.cb + img.l2Bits)
	t, err := img.l2Table(l1i)
	if err != nil {
		return err
	}
	v3 := img.hdr.Version >= 3
	if t == nil && img.backing == nil && (discard || !v3) {
		return nil // already reads as zeroes
	}
	for g < end {
		inC := g & (img.cs - 1)
		cEnd := g - inC + img.cs
		full := inC == 0 && (cEnd <= end || end == img.hdr.Size)
		stop := min(cEnd, end)
		var e L2Entry
		if t != nil {
			e = img.entry(t, (g>>img.cb)&(img.l2Ents-1))
		}
		// A write of zeroes over part of a cluster that holds no data and
		// otherwise reads as zeroes zeroes the whole cluster (QEMU).
		clusterLen := min(img.cs, img.hdr.Size-(g-inC))
		if !full && !discard && v3 && !img.extL2 && !e.Compressed() &&
			(e.Offset() == 0 || e.Desc&OflagZero != 0) && img.othersReadZero(e, g-inC, clusterLen, inC, stop-(g-inC)) {
			full = true
		}
		if full && img.entryUnchanged(e, discard, unmap) && img.readsZero(e, 0, clusterLen) {
			g = stop
			continue
		}
		if !full && img.readsZero(e, inC, stop-g) {
			g = stop
			continue
		}
		if !full || (!v3 && img.backing != nil) {
			if err := img.writeChunk(make([]byte, stop-g), g); err != nil {
				return err
			}
			// writeChunk may have allocated the L2 table.
			if t, err = img.l2Table(l1i); err != nil {
				return err
			}
			g = stop
			continue
		}
		if t, err = img.l2ForUpdate(t, l1i, g); err != nil {
			return err
		}
		i := (g >> img.cb) & (img.l2Ents - 1)
		e = img.entry(t, i)
		ne, nbm, keep := img.zeroEntry(e, unmap)
		if !keep {
			if err := img.checkDrop(e, g); err != nil {
				return err
			}
			img.deferFreeEntry(e)
		}
		img.setEntry(t, i, ne, nbm)
		g = stop
	}
	return nil
}

// l2ForUpdate returns the L2 table t of L1 index l1i ready for an entry
// to change in place: allocated or copied when it is missing or shared
// (l2ForWrite), else checked not to lie in other metadata.
func (img *Image) l2ForUpdate(t *cacheEntry, l1i, g uint64) (*cacheEntry, error) {
	if t == nil || !L1Entry(img.l1.get(l1i)).Copied() {
		return img.l2ForWrite(l1i, g)
	}
	return t, img.checkL2Update(l1i, g)
}

// setZeroBits sets the zero bits of the n bytes of subclusters from
// guest offset g, inside one cluster, and clears their allocation bits
// (QEMU's zero_l2_subclusters): only the L2 entry's bitmap changes, no
// data is written, nothing allocated or freed.
func (img *Image) setZeroBits(g, n uint64) error {
	if err := img.checkChunkHosts(g, g+1); err != nil {
		return err
	}
	l1i := g >> (img.cb + img.l2Bits)
	t, err := img.l2Table(l1i)
	if err != nil {
		return err
	}
	if t, err = img.l2ForUpdate(t, l1i, g); err != nil {
		return err
	}
	i := (g >> img.cb) & (img.l2Ents - 1)
	e := img.entry(t, i)
	from := (g & (img.cs - 1)) / img.subSize
	to := min(32, from+(n+img.subSize-1)/img.subSize)
	mask := (uint64(1)<<(to-from) - 1) << from
	if nbm := (e.Bitmap | mask<<32) &^ mask; nbm != e.Bitmap {
		img.setEntry(t, i, e.Desc, nbm)
	}
	return nil
}

// entryUnchanged reports whether zeroing a whole cluster described by
// (e, bm) would leave its entry as it is: a discard of an unallocated
// cluster (without a backing file), or an entry that already is what
// zeroEntry makes.
func (img *Image) entryUnchanged(e L2Entry, discard, unmap bool) bool {
	if img.deallocating && e.Desc == 0 && e.Bitmap == 0 {
		return true
	}
	if discard && img.backing == nil && e.Type(img.extL2) == ClusterUnallocated && (!img.extL2 || e.Bitmap == 0) {
		return true
	}
	ne, nbm, _ := img.zeroEntry(e, unmap)
	return ne == e.Desc && nbm == e.Bitmap
}

// zeroEntry returns the L2 entry (and subcluster bitmap) that makes a
// whole cluster, now described by e, read as zeroes, as QEMU writes it:
// a write of zeroes without unmap keeps an unshared allocated cluster
// (version 3: the zero flag with the host offset, "zero, allocated"); a
// discard or unmapping write of zeroes drops it (version 3: the zero
// flag alone; extended L2: all subclusters zero; version 2 without a
// backing file: unallocated). keep reports that the host cluster stays.
func (img *Image) zeroEntry(e L2Entry, unmap bool) (ne, nbm uint64, keep bool) {
	if img.deallocating {
		return 0, 0, false // MakeEmpty: unallocated, reads the backing file
	}
	host := e.Offset()
	if !unmap && img.hdr.Version >= 3 && !e.Compressed() && e.Copied() && host != 0 {
		if img.extL2 {
			return host | OflagCopied, BitmapAllZero, true
		}
		return host | OflagCopied | OflagZero, 0, true
	}
	switch {
	case img.extL2:
		return 0, BitmapAllZero, false
	case img.hdr.Version >= 3:
		return OflagZero, 0, false
	}
	return 0, 0, false // version 2: only without a backing file (see zeroChunk)
}

// othersReadZero reports whether the cluster of e at guest cluster offset
// gc (clusterLen bytes) reads as zeroes outside the in-cluster range
// [from, to) a write of zeroes covers, without looking at data; unallocated
// parts are asked of the backing chain's block status (QEMU's is_zero of
// the head and tail of a request): unallocated down the chain, zero
// clusters and bytes past a backing file's end read as zeroes.
func (img *Image) othersReadZero(e L2Entry, gc, clusterLen, from, to uint64) bool {
	return img.othersReadZeroIn(e, gc, 0, clusterLen, from, to)
}

// othersReadZeroIn is othersReadZero for the in-cluster range [lo, hi)
// only (a subcluster), outside [from, to) (lo <= from <= to <= hi).
func (img *Image) othersReadZeroIn(e L2Entry, gc, lo, hi, from, to uint64) bool {
	for inC := lo; inC < hi; {
		if inC == from && to > from {
			inC = to
			continue
		}
		m, _, run := img.classify(e, inC)
		run = min(run, hi-inC)
		if inC < from {
			run = min(run, from-inC)
		}
		switch m {
		case mapZero:
		case mapUnallocated:
			if img.backing != nil && !backingReadsZero(img.backing, int64(gc+inC), int64(run)) {
				return false
			}
		default:
			return false
		}
		inC += run
	}
	return true
}

// backingReadsZero reports whether n bytes at off of a backing file read
// as zeroes by block status alone; a raw backing file is asked nothing
// (false) but past its end.
func backingReadsZero(b backingFile, off, n int64) bool {
	z, ok := b.(*zeroPastEnd)
	if !ok {
		return false
	}
	if off >= z.size {
		return true
	}
	n = min(n, z.size-off)
	img, ok := z.r.(*Image)
	if !ok {
		return false
	}
	for n > 0 {
		x, err := img.BlockStatus(off, n)
		if err != nil {
			return false
		}
		switch x.Kind {
		case Zero:
		case Unallocated:
			if img.backing != nil && !backingReadsZero(img.backing, off, x.Len) {
				return false
			}
		default:
			return false
		}
		off, n = off+x.Len, n-x.Len
	}
	return true
}

// readsZero reports whether n bytes at in-cluster offset inC of the cluster
// of e already read as zeroes without looking at data.
func (img *Image) readsZero(e L2Entry, inC, n uint64) bool {
	for n > 0 {
		m, _, run := img.classify(e, inC)
		switch m {
		case mapZero:
		case mapUnallocated:
			if img.backing != nil {
				return false
			}
		default:
			return false
		}
		run = min(run, n)
		inC, n = inC+run, n-run
	}
	return true
}

// checkEntryHost refuses an L2 entry (of guest offset g) whose data
// cluster or compressed stream starts at or beyond the end of the file.
func (img *Image) checkEntryHost(e L2Entry, g uint64) error {
	var host uint64
	switch t := e.Type(img.extL2); {
	case t == ClusterCompressed:
		host, _ = e.CompressedRange(img.cb)
	case t.Allocated():
		host = e.Offset()
	default:
		return nil
	}
	if host != 0 && img.beyondEOF(host) {
		return img.beyondEOFError(host, fmt.Sprintf("the cluster of guest offset 0x%x (L2 entry 0x%x)", g&^(img.cs-1), e.Desc))
	}
	return nil
}

// checkChunkHosts checks every L2 entry of [g, end), which lies within one
// L2 table, with checkEntryHost, before a write or a zeroing changes
// anything: a write must neither grow the file up to such an entry nor
// free a cluster beyond the end of the file.
func (img *Image) checkChunkHosts(g, end uint64) error {
	t, err := img.l2Table(g >> (img.cb + img.l2Bits))
	if err != nil || t == nil {
		return err
	}
	for c := g &^ (img.cs - 1); c < end; c += img.cs {
		if err := img.checkEntryHost(img.entry(t, (c>>img.cb)&(img.l2Ents-1)), c); err != nil {
			return err
		}
	}
	return nil
}
