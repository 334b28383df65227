package image

import "fmt"

// Extent is a run of guest bytes that the image stores the same way: the
// answer of BlockStatus. Offsets and lengths are bytes.
type Extent struct {
	Kind Kind  // Unallocated, Zero, Data or Compressed
	Len  int64 // length of the run, > 0
	// Host is the host offset of the run's first byte when HostValid:
	// always for Data; for Zero and Unallocated when the (sub)clusters
	// belong to an allocated host cluster (a preallocated zero cluster,
	// or the zero and unallocated subclusters of an allocated cluster
	// with extended L2 entries). Host offsets of a run are contiguous.
	Host      uint64
	HostValid bool
}

// BlockStatus reports how the guest bytes from off are stored, for at
// most n bytes: the longest run starting at off, within one L2 table, of
// bytes of the same kind (and, where host offsets are valid, stored at
// contiguous host offsets). A compressed run is at most one cluster.
// Runs are what QEMU's qcow2 driver reports as block status; unallocated
// bytes are reported as such whether or not a backing file provides them.
//
// It reads L2 tables only: the cost is one L2 lookup per cluster of the
// run (per subcluster with extended L2 entries), never a data read.
func (img *Image) BlockStatus(off, n int64) (Extent, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.closed {
		return Extent{}, ErrClosed
	}
	size := int64(img.hdr.Size)
	if off < 0 || n <= 0 || off >= size {
		return Extent{}, fmt.Errorf("%w: block status of %d bytes at offset %d, image size %d", ErrOutOfRange, n, off, size)
	}
	if err := img.maybeEvict(); err != nil {
		return Extent{}, err
	}
	g := uint64(off)
	span := img.l2Span()
	end := g + min(uint64(n), uint64(size-off), span-g%span)
	t, err := img.l2Table(g >> (img.cb + img.l2Bits))
	if err != nil {
		return Extent{}, err
	}
	if t == nil {
		return Extent{Kind: Unallocated, Len: int64(end - g)}, nil
	}
	var x Extent
	for p := g; p < end; {
		i := (p >> img.cb) & (img.l2Ents - 1)
		k, host, hostValid, run := img.piece(img.entry(t, i), p&(img.cs-1))
		if k == Data && (host-p&(img.cs-1))&(img.cs-1) != 0 {
			return Extent{}, img.signalCorruption(int64(host), "data cluster offset 0x%x for guest offset 0x%x is not cluster aligned", host-p&(img.cs-1), p)
		}
		if p == g {
			x = Extent{Kind: k, Host: host, HostValid: hostValid}
		} else if k != x.Kind || k == Compressed || hostValid != x.HostValid ||
			(hostValid && host != x.Host+(p-g)) {
			break
		}
		p += run
		x.Len = int64(min(p, end) - g)
		if k == Compressed {
			break
		}
	}
	return x, nil
}

// piece classifies the bytes of the cluster of e from in-cluster offset
// inC: their kind, the host offset of the first one (when valid) and how
// many bytes from there are stored the same way within the cluster. It
// follows classify, the rule reads use.
func (img *Image) piece(e L2Entry, inC uint64) (k Kind, host uint64, hostValid bool, n uint64) {
	m, h, n := img.classify(e, inC)
	base := e.Offset()
	switch m {
	case mapCompressed:
		return Compressed, 0, false, n
	case mapData:
		return Data, h, true, n
	case mapZero:
		k = Zero
	default:
		k = Unallocated
	}
	if base != 0 && (img.extL2 || k == Zero) {
		return k, base + inC, true, n
	}
	return k, 0, false, n
}
