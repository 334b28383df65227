package image

import (
	"errors"
	"fmt"
	"math"
)

// PreallocMode is how much of a new (or newly grown) area of the virtual
// disk is allocated up front, as QEMU's PreallocMode.
type PreallocMode int

const (
	// PreallocOff allocates nothing: the area is sparse.
	PreallocOff PreallocMode = iota
	// PreallocMetadata allocates the L2 tables and the data clusters and
	// extends the file over them, without writing the data clusters (the
	// file stays sparse there).
	PreallocMetadata
	// PreallocFalloc also reserves the data clusters' space in the file
	// system (fallocate).
	PreallocFalloc
	// PreallocFull also writes zeroes over the data clusters.
	PreallocFull
)

var preallocNames = [...]string{"off", "metadata", "falloc", "full"}

func (m PreallocMode) String() string {
	if m < 0 || int(m) >= len(preallocNames) {
		return fmt.Sprintf("PreallocMode(%d)", int(m))
	}
	return preallocNames[m]
}

// ParsePrealloc returns the mode named s (off, metadata, falloc, full).
func ParsePrealloc(s string) (PreallocMode, bool) {
	for i, n := range preallocNames {
		if n == s {
			return PreallocMode(i), true
		}
	}
	return PreallocOff, false
}

// Allocator is implemented by files that can reserve space without
// writing it (fallocate mode 0, extending the file as needed).
type Allocator interface {
	Allocate(off, n int64) error
}

// ErrPreallocShrink refuses preallocation with a smaller size.
var ErrPreallocShrink = errors.New("Preallocation can't be used for shrinking an image")

// reserveFile extends the file to end the way a preallocation mode does:
// falloc reserves [cur, end) (fallocate), full writes zeroes there, off
// and metadata only set the length.
func (img *Image) reserveFile(end uint64, mode PreallocMode) error {
	cur, err := img.f.Size()
	if err != nil {
		return err
	}
	if uint64(cur) >= end {
		return nil
	}
	switch mode {
	case PreallocFalloc:
		if a, ok := img.raw.(Allocator); ok {
			if err := a.Allocate(cur, int64(end)-cur); err != nil {
				return fmt.Errorf("Could not preallocate data for the new area: %w", err)
			}
			return nil
		}
		return img.f.Truncate(int64(end))
	case PreallocFull:
		if err := img.f.Truncate(int64(end)); err != nil {
			return err
		}
		z := make([]byte, min(end-uint64(cur), 1<<20))
		for off := uint64(cur); off < end; {
			k := min(end-off, uint64(len(z)))
			if _, err := img.f.WriteAt(z[:k], int64(off)); err != nil {
				return fmt.Errorf("Could not write zeros for preallocation: %w", err)
			}
			off += k
		}
		return nil
	}
	return img.f.Truncate(int64(end))
}

// needsNewAlloc reports whether a write to the cluster of e needs a new
// host cluster (QEMU's cluster_needs_new_alloc).
func (img *Image) needsNewAlloc(e L2Entry) bool {
	switch e.Type(img.extL2) {
	case ClusterNormal, ClusterZeroAlloc:
		return !e.Copied()
	}
	return true
}

// invOffset marks an unset host offset.
const invOffset = math.MaxUint64

// reqMaxBytes is QEMU's BDRV_REQUEST_MAX_BYTES.
const reqMaxBytes = (math.MaxInt32 >> 9) << 9

// preallocMeta maps every cluster of the guest range [from, to) to a host
// cluster, allocating L2 tables and data clusters as QEMU's preallocate_co
// does (same order, same places), without writing the data clusters but
// for the parts of partly covered clusters that keep their old content
// (copy-on-write). It returns the end of the host range of the last
// allocation, which the file must reach.
func (img *Image) preallocMeta(from, to uint64) (uint64, error) {
	cs := img.cs
	hostEnd := uint64(0)
	for off := from; off < to; {
		bytes := min(to-off, uint64(math.MaxInt32)&^(cs-1))
		host, done, err := img.allocHostOffset(off, bytes)
		if err != nil {
			return 0, err
		}
		if done == 0 {
			return 0, fmt.Errorf("preallocating guest offset 0x%x made no progress", off)
		}
		off += done
		hostEnd = host + done
		if err := img.maybeEvict(); err != nil {
			return 0, err
		}
	}
	return hostEnd, nil
}

// allocHostOffset maps as much as possible of the guest range [start,
// start+bytes) to one contiguous host range, allocating (QEMU's
// qcow2_alloc_host_offset followed by the linking of the new clusters). It
// returns the host offset of start and the bytes mapped.
func (img *Image) allocHostOffset(start, bytes uint64) (uint64, uint64, error) {
	cs := img.cs
	hostOff, clusterOff := uint64(invOffset), uint64(invOffset)
	remaining := bytes
	for remaining > 0 {
		inC := start & (cs - 1)
		i := (start >> img.cb) & (img.l2Ents - 1)
		nb := min(ceilDiv(inC+remaining, cs), img.l2Ents-i, reqMaxBytes>>img.cb)
		t, err := img.l2ForWrite(start>>(img.cb+img.l2Bits), start)
		if err != nil {
			return 0, 0, err
		}
		e := img.entry(t, i)
		var h, cur uint64
		if !img.needsNewAlloc(e) {
			co := e.Offset()
			if clusterOff != invOffset && co != clusterOff {
				break
			}
			k := uint64(1)
			for k < nb {
				ne := img.entry(t, i+k)
				if img.needsNewAlloc(ne) || ne.Offset() != co+k*cs {
					break
				}
				k++
			}
			h, cur = co+inC, min(remaining, k*cs-inC)
		} else {
			k := uint64(1)
			for k < nb && img.needsNewAlloc(img.entry(t, i+k)) {
				k++
			}
			var base uint64
			if clusterOff == invOffset {
				if base, err = img.rc.alloc(k * cs); err != nil {
					return 0, 0, err
				}
			} else {
				base = clusterOff &^ (cs - 1)
				if k, err = img.rc.allocAt(base, k); err != nil {
					return 0, 0, err
				}
				if k == 0 {
					break
				}
			}
			cur = min(remaining, k*cs-inC)
			if err := img.linkPrealloc(t, i, k, base, start, cur); err != nil {
				return 0, 0, err
			}
			h = base + inC
		}
		if hostOff == invOffset {
			hostOff = h
		}
		clusterOff = h + cur
		start += cur
		remaining -= cur
	}
	return hostOff, bytes - remaining, nil
}

// linkPrealloc points L2 entries i..i+k-1 of t at the k new clusters from
// base, for the guest range [g, g+n) (g within the cluster of entry i): the
// parts of the first and last subclusters outside the range get their
// current content (copy-on-write, as QEMU's perform_cow), the rest is not
// written. Extended L2 bitmaps are left as they are (QEMU's prealloc).
func (img *Image) linkPrealloc(t *cacheEntry, i, k, base, g, n uint64) error {
	cs, sub := img.cs, img.subSize
	inC := g & (cs - 1)
	gBase := g - inC
	headFrom := inC &^ (sub - 1)
	end := inC + n
	tailTo := roundUp(end, sub)
	if inC > headFrom {
		buf := make([]byte, inC-headFrom)
		if err := img.readGuest(buf, gBase+headFrom, nil); err != nil {
			return img.dropAllocation(base, k*cs, err)
		}
		if _, err := img.f.WriteAt(buf, int64(base+headFrom)); err != nil {
			return img.dropAllocation(base, k*cs, err)
		}
	}
	if tailTo > end {
		buf := make([]byte, tailTo-end)
		if err := img.readGuest(buf, gBase+end, nil); err != nil {
			return img.dropAllocation(base, k*cs, err)
		}
		if _, err := img.f.WriteAt(buf, int64(base+end)); err != nil {
			return img.dropAllocation(base, k*cs, err)
		}
	}
	for j := uint64(0); j < k; j++ {
		oe := img.entry(t, i+j)
		img.deferFreeEntry(oe)
		img.setEntry(t, i+j, (base+j*cs)|OflagCopied, oe.Bitmap)
	}
	return nil
}

// preallocData allocates the guest range [oldLen, newLen) as QEMU's qcow2
// truncate does for falloc and full: new refcount structures after the
// last used cluster sized for the new clusters, the data clusters in one
// run after them (reserved or written with zeroes by reserveFile), then
// the L2 entries (new L2 tables where clusters are free). The partly
// covered first cluster keeps its content (copied into its new cluster).
// With extended L2 entries the subcluster bitmaps are kept, unless
// allocSub: then every subcluster of the new clusters is allocated (QEMU
// does so when the added area must read as zeroes over a longer backing
// file: the file reads zeroes there).
func (img *Image) preallocData(oldLen, newLen uint64, mode PreallocMode, allocSub bool) error {
	cs := img.cs
	fileSize, err := img.f.Size()
	if err != nil {
		return err
	}
	last, err := img.rc.lastUsed()
	if err != nil {
		return err
	}
	oldFile := roundUp(uint64(fileSize), cs)
	if last >= 0 {
		oldFile = uint64(last+1) * cs
	}
	nbData := (roundUp(newLen, cs) - oldLen&^(cs-1)) / cs
	if nbData == 0 {
		return nil
	}
	nbL2 := ceilDiv(nbData, img.l2Ents) + 1
	start, err := img.rc.area(oldFile, nbData+nbL2, true, 0, 0)
	if err != nil {
		return fmt.Errorf("Failed to resize refcount structures: %w", err)
	}
	n, err := img.rc.allocAt(start, nbData)
	if err != nil {
		return fmt.Errorf("Failed to allocate data clusters: %w", err)
	}
	if n != nbData {
		return img.signalCorruption(int64(start), "clusters after new refcount structures are in use")
	}
	if err := img.reserveFile(start+nbData*cs, mode); err != nil {
		return img.dropAllocation(start, nbData*cs, fmt.Errorf("Failed to resize underlying file: %w", err))
	}
	host, g := start, oldLen
	for nbData > 0 {
		i := (g >> img.cb) & (img.l2Ents - 1)
		k := min(nbData, img.l2Ents-i)
		inC := g & (cs - 1)
		t, err := img.l2ForWrite(g>>(img.cb+img.l2Bits), g)
		if err != nil {
			return err
		}
		if inC != 0 {
			buf := make([]byte, inC)
			if err := img.readGuest(buf, g-inC, nil); err != nil {
				return err
			}
			if _, err := img.f.WriteAt(buf, int64(host)); err != nil {
				return err
			}
		}
		for j := uint64(0); j < k; j++ {
			oe := img.entry(t, i+j)
			img.deferFreeEntry(oe)
			bm := oe.Bitmap
			if allocSub && img.extL2 {
				bm = BitmapAllAlloc
			}
			img.setEntry(t, i+j, (host+j*cs)|OflagCopied, bm)
		}
		g = g - inC + k*cs
		host += k * cs
		nbData -= k
		if err := img.maybeEvict(); err != nil {
			return err
		}
	}
	return nil
}

// preallocate allocates the guest range [oldLen, newLen) with mode.
func (img *Image) preallocate(oldLen, newLen uint64, mode PreallocMode) error {
	switch mode {
	case PreallocOff:
		return nil
	case PreallocMetadata:
		end, err := img.preallocMeta(oldLen, newLen)
		if err != nil {
			return err
		}
		return img.reserveFile(end, PreallocOff)
	case PreallocFalloc, PreallocFull:
		return img.preallocData(oldLen, newLen, mode, false)
	}
	return fmt.Errorf("unsupported preallocation mode %v", mode)
}

// allocAt allocates up to n clusters from off, as many as are free there
// in a row, and returns how many (QEMU's qcow2_alloc_clusters_at).
func (r *refcounts) allocAt(off, n uint64) (uint64, error) {
	for {
		ci := off >> r.img.cb
		i := uint64(0)
		for ; i < n; i++ {
			rc, err := r.get(ci + i)
			if err != nil {
				return 0, err
			}
			if rc != 0 {
				break
			}
		}
		err := r.update(off, i*r.img.cs, 1, false)
		if errors.Is(err, errAgain) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return i, nil
	}
}
