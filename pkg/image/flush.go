package image

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/klauspost/compress/zstd"
)

// writeback writes all dirty metadata in dependency order: refcount blocks;
// then (after a sync) the refcount table entries of new blocks; then (after
// a sync that also covers data written so far) L2 tables; then (after
// another sync) the L1 table. It does not sync at the end.
func (img *Image) writeback() error {
	if err := img.rc.rbc.writeDirty(); err != nil {
		return err
	}
	if len(img.rc.dirtyTable) > 0 {
		// New refcount blocks are durable before the table points at them.
		if err := img.f.Sync(); err != nil {
			return err
		}
		if err := img.rc.writeTable(); err != nil {
			return err
		}
	}
	if img.l2c.dirty == 0 && len(img.l1Dirty) == 0 {
		return nil
	}
	if err := img.f.Sync(); err != nil {
		return err
	}
	if err := img.l2c.writeDirty(); err != nil {
		return err
	}
	if len(img.l1Dirty) == 0 {
		return nil
	}
	if err := img.f.Sync(); err != nil {
		return err
	}
	return img.writeL1()
}

// writeL1 writes the dirty 512-byte sectors of the L1 table.
func (img *Image) writeL1() error {
	secs := make([]uint64, 0, len(img.l1Dirty))
	for s := range img.l1Dirty {
		secs = append(secs, s)
	}
	slices.Sort(secs)
	for _, s := range secs {
		first := s * 64
		last := min(first+64, img.l1.len())
		b := make([]byte, (last-first)*8)
		for i := first; i < last; i++ {
			binary.BigEndian.PutUint64(b[(i-first)*8:], img.l1.get(i))
		}
		if _, err := img.f.WriteAt(b, int64(img.hdr.L1TableOffset+first*8)); err != nil {
			return fmt.Errorf("writing L1 table: %w", err)
		}
		delete(img.l1Dirty, s)
	}
	return nil
}

// Flush makes every write acknowledged so far durable: it writes back the
// metadata in dependency order and syncs, then frees the clusters whose
// last reference was dropped (their refcounts reach the disk with a sync).
func (img *Image) Flush() error {
	img.lock()
	defer img.unlock()
	if img.ro && !img.closed {
		return nil
	}
	return img.flush()
}

func (img *Image) flush() error {
	if err := img.writable(); err != nil {
		return err
	}
	if err := img.writeback(); err != nil {
		return err
	}
	if err := img.f.Sync(); err != nil {
		return err
	}
	if len(img.pendingFree) == 0 {
		return nil
	}
	free := img.pendingFree
	img.pendingFree = nil
	for _, x := range free {
		if err := img.rc.update(x.off, x.len, 1, true); err != nil {
			return err
		}
	}
	return img.rc.writeBlocksSync()
}

// maybeEvict keeps the metadata caches within their budgets, writing dirty
// tables back (in order) when only dirty ones are left to evict.
func (img *Image) maybeEvict() error {
	if !img.l2c.overfull() && !img.rc.rbc.overfull() {
		return nil
	}
	img.l2c.evictClean()
	img.rc.rbc.evictClean()
	if !img.l2c.overfull() && !img.rc.rbc.overfull() {
		return nil
	}
	if !img.ro {
		if err := img.writeback(); err != nil {
			return err
		}
	}
	img.l2c.evictClean()
	img.rc.rbc.evictClean()
	return nil
}

// zcache keeps the last decompressed cluster.
type zcache struct {
	entry uint64
	data  []byte
	zd    *zstd.Decoder
}

func (img *Image) decompress(e, g uint64) ([]byte, error) {
	if img.zbuf.data != nil && img.zbuf.entry == e {
		return img.zbuf.data, nil
	}
	off, length := L2Entry{Desc: e}.CompressedRange(img.cb)
	in := make([]byte, length)
	if err := readData(img.f, in, off); err != nil {
		return nil, err
	}
	out := make([]byte, img.cs)
	var err error
	switch img.hdr.CompressionType {
	case CompressionZlib:
		r := flate.NewReader(bytes.NewReader(in))
		_, err = io.ReadFull(r, out)
	case CompressionZstd:
		if img.zbuf.zd == nil {
			img.zbuf.zd, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
			if err != nil {
				return nil, err
			}
		}
		if err = img.zbuf.zd.Reset(bytes.NewReader(in)); err == nil {
			_, err = io.ReadFull(img.zbuf.zd, out)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: decompressing the cluster for guest offset 0x%x (host offset 0x%x, %d bytes): %v", ErrCorrupt, g, off, length, err)
	}
	img.zbuf.entry, img.zbuf.data = e, out
	return out, nil
}
