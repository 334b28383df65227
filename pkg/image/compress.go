package image

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	kflate "github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
)

// zlibWindow is the deflate window of qcow2's zlib compression: QEMU
// inflates compressed clusters with 12 window bits, so no back-reference
// may reach further than 4 KiB.
const zlibWindow = 4096

// Cluster is one cluster of guest data prepared by CompressCluster for
// WriteCompressed: its bytes and, when they compress, the compressed stream.
type Cluster struct {
	data   []byte // the guest bytes (the last cluster of an image may be short)
	stream []byte // compressed stream; nil when it would not be smaller than a cluster
	ctype  uint8
	cs     uint64
}

// Compressed reports whether the cluster compressed to less than a cluster.
func (c *Cluster) Compressed() bool { return c.stream != nil }

// Len returns the number of guest bytes of the cluster.
func (c *Cluster) Len() int { return len(c.data) }

// StreamLen returns the length of the compressed stream in bytes (0 when
// the cluster does not compress).
func (c *Cluster) StreamLen() int { return len(c.stream) }

// compressState remembers where the last compressed stream went, so that
// the next one is packed right behind it in the same host cluster, as QEMU
// does: a host cluster shared by several streams has one reference per
// stream that touches it.
type compressState struct {
	next      uint64 // host offset after the last stream; 0 starts a new cluster
	lastGuest uint64 // guest offset of the cluster whose stream ends at next
	lastEntry uint64 // and its L2 entry as written
}

var (
	zlibPool = sync.Pool{New: func() any {
		w, err := kflate.NewWriterWindow(nil, zlibWindow)
		if err != nil {
			panic(err) // zlibWindow is a valid window size
		}
		return w
	}}
	zstdPool = sync.Pool{New: func() any {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
		if err != nil {
			panic(err) // the options are valid
		}
		return e
	}}
)

// CompressCluster compresses the guest data of one cluster with the
// image's compression type (raw deflate with a 4 KiB window for zlib, a
// zstd frame for zstd), as QEMU stores compressed clusters. p is a whole
// cluster, or the image's short last cluster (compressed as if padded with
// zeroes). A stream that would not be at least one byte shorter than a
// cluster is dropped: WriteCompressed then writes the data uncompressed,
// as QEMU does. It does not touch the image and is safe for concurrent use.
func (img *Image) CompressCluster(p []byte) (*Cluster, error) {
	cs := img.cs
	if len(p) == 0 || uint64(len(p)) > cs {
		return nil, fmt.Errorf("%w: a compressed cluster holds 1 to %d bytes, not %d", ErrUnaligned, cs, len(p))
	}
	c := &Cluster{data: p, ctype: img.hdr.CompressionType, cs: cs}
	src := p
	if uint64(len(p)) < cs {
		src = make([]byte, cs)
		copy(src, p)
	}
	limit := int(cs) - 1
	switch c.ctype {
	case CompressionZlib:
		var b bytes.Buffer
		b.Grow(limit)
		w := zlibPool.Get().(*kflate.Writer)
		w.Reset(&b)
		_, err := w.Write(src)
		if err == nil {
			err = w.Close()
		}
		zlibPool.Put(w)
		if err != nil {
			return nil, fmt.Errorf("zlib compression: %w", err)
		}
		if b.Len() <= limit {
			c.stream = b.Bytes()
		}
	case CompressionZstd:
		e := zstdPool.Get().(*zstd.Encoder)
		out := e.EncodeAll(src, make([]byte, 0, limit))
		zstdPool.Put(e)
		if len(out) <= limit {
			c.stream = out
		}
	default:
		return nil, fmt.Errorf("unknown compression type %d", c.ctype)
	}
	return c, nil
}

// WriteCompressed writes a cluster prepared by CompressCluster at guest
// offset off, which must be the start of that cluster. A stream is stored
// in bytes allocated right after the previous compressed stream (sharing
// its host cluster when there is room) and the L2 entry becomes a
// compressed one; a cluster that did not compress is written as ordinary
// data. It reports whether the cluster was stored compressed. Whatever the
// cluster held before is replaced (its clusters are freed after the next
// durable metadata writeback, as for any overwrite).
//
// Ordering is that of every write: the stream is written before the
// refcounts that count it, which reach the disk before the L2 entry.
func (img *Image) WriteCompressed(c *Cluster, off int64) (bool, error) {
	img.lock()
	defer img.unlock()
	if c == nil || c.cs != img.cs || c.ctype != img.hdr.CompressionType {
		return false, errors.New("compressed cluster was prepared for another image")
	}
	if err := img.checkWritable(off, len(c.data)); err != nil {
		return false, err
	}
	g := uint64(off)
	n := uint64(len(c.data))
	if g%img.cs != 0 || (n != img.cs && g+n != img.hdr.Size) {
		return false, fmt.Errorf("%w: a compressed write covers one whole cluster of %d bytes (or the image's last cluster), not %d bytes at offset 0x%x", ErrUnaligned, img.cs, n, off)
	}
	if err := img.maybeEvict(); err != nil {
		return false, err
	}
	if c.stream == nil {
		return false, img.writeChunk(c.data, g)
	}
	l1i := g >> (img.cb + img.l2Bits)
	t, err := img.l2ForWrite(l1i, g)
	if err != nil {
		return false, err
	}
	i := (g >> img.cb) & (img.l2Ents - 1)
	if err := img.checkDrop(img.entry(t, i), g); err != nil {
		return false, err
	}
	size := uint64(len(c.stream))
	host, err := img.allocBytes(size)
	if err != nil {
		return false, err
	}
	if err := img.checkDataWrite(host, size, g); err != nil {
		return false, img.dropAllocation(host, size, err)
	}
	if _, err := img.f.WriteAt(c.stream, int64(host)); err != nil {
		return false, img.dropAllocation(host, size, err)
	}
	img.deferFreeEntry(img.entry(t, i))
	shift := 62 - (img.cb - 8)
	extra := (host+size-1)>>9 - host>>9 // 512-byte sectors after the first
	e := host | OflagCompressed | extra<<shift
	img.setEntry(t, i, e, 0)
	img.zbuf.data = nil // the decompressed-cluster cache is keyed by entry
	img.cz.lastGuest, img.cz.lastEntry = g, e
	return true, nil
}

// allocBytes allocates n bytes (less than a cluster) for a compressed
// stream, with refcount +1 on every host cluster they touch: right after
// the previous stream when its host cluster is still in use by it and can
// take another reference, continuing into the next cluster if that one is
// the next free cluster, else from a fresh cluster.
func (img *Image) allocBytes(n uint64) (uint64, error) {
	cs := img.cs
	off := img.cz.next
	if off != 0 && !img.lastStreamLive() {
		off = 0
	}
	if off != 0 {
		rc, err := img.rc.get(off >> img.cb)
		if err != nil {
			return 0, err
		}
		if rc >= img.rc.max {
			off = 0
		}
	}
	for {
		start := off
		if start == 0 || cs-start%cs < n {
			nc, err := img.rc.allocNoref(cs)
			if err != nil {
				return 0, err
			}
			if start == 0 || roundUp(start, cs) != nc {
				start = nc
			}
		}
		err := img.rc.update(start, n, 1, false)
		if errors.Is(err, errAgain) {
			continue // a new refcount block may now sit where we meant to write
		}
		if err != nil {
			img.cz.next = 0
			return 0, err
		}
		img.cz.next = start + n
		if img.cz.next%cs == 0 {
			img.cz.next = 0
		}
		return start, nil
	}
}

// lastStreamLive reports whether the L2 entry of the last compressed
// cluster written still points at its stream: then the host cluster where
// the stream ends is referenced and its free tail belongs to nobody else.
func (img *Image) lastStreamLive() bool {
	g := img.cz.lastGuest
	if g >= img.hdr.Size {
		return false
	}
	t, err := img.l2Table(g >> (img.cb + img.l2Bits))
	if err != nil || t == nil {
		return false
	}
	return img.entry(t, (g>>img.cb)&(img.l2Ents-1)).Desc == img.cz.lastEntry
}
