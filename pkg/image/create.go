package image

import (
	"encoding/binary"
	"fmt"
)

// CreateOptions describe a new image. Sizes are in bytes.
type CreateOptions struct {
	Size            uint64 // virtual size; rounded up to a multiple of 512
	ClusterBits     uint32 // 9 (512 B) to 21 (2 MiB)
	Version         uint32 // 2 or 3
	RefcountOrder   uint32 // refcount width is 1<<RefcountOrder bits (0..6)
	ExtendedL2      bool
	CompressionType uint8
	LazyRefcounts   bool
	// Incompatible holds extra incompatible feature bits to set, for
	// features implemented above this package (IncompatZoned).
	Incompatible uint64
	// Tables are refcounted metadata areas owned by such a feature.
	Tables []Table
	// BackingFile, when not empty, is stored as the backing file name, as
	// given (a relative name is resolved against the image's directory
	// when the image is opened); BackingFormat, when not empty, goes in
	// the backing format extension.
	BackingFile   string
	BackingFormat string
	// CryptMethod is the header's crypt_method: 0, or CryptAES for
	// qemu-img's encryption=on (only the field is written).
	CryptMethod uint32
	// Preallocation allocates the whole virtual disk up front, as
	// qemu-img create -o preallocation=MODE does (metadata, falloc, full).
	Preallocation PreallocMode
}

// Table is a metadata area allocated at creation time, right after the
// first refcount block and before the L1 table, and described by a header
// extension (the zoned write-pointer table is one).
type Table struct {
	Data []byte
	// Extension returns the header extension describing the table once
	// its host offset is known.
	Extension func(offset uint64) Extension
}

// Format lays a new, empty image out in f the way qemu-img create does:
// header cluster, refcount table, one refcount block, the extra tables,
// then the L1 table, with QEMU's allocator placing everything, so that the
// file is byte-identical to qemu-img's. f should be empty.
func Format(f File, o CreateOptions) error {
	if o.ClusterBits < MinClusterBits || o.ClusterBits > MaxClusterBits {
		return fmt.Errorf("cluster size 2^%d out of range", o.ClusterBits)
	}
	if o.Version != 2 && o.Version != 3 {
		return fmt.Errorf("unsupported qcow2 version %d", o.Version)
	}
	if o.RefcountOrder > 6 || (o.Version == 2 && o.RefcountOrder != 4) {
		return fmt.Errorf("refcount order %d not allowed for version %d", o.RefcountOrder, o.Version)
	}
	cs := uint64(1) << o.ClusterBits
	// A bare header, the refcount table with one entry, and an empty
	// refcount block: enough for the engine to allocate the rest.
	first := make([]byte, cs)
	h := o.header()
	copy(first, h.Marshal())
	if _, err := f.WriteAt(first, 0); err != nil {
		return err
	}
	rt := make([]byte, 2*cs)
	binary.BigEndian.PutUint64(rt, 2*cs)
	if _, err := f.WriteAt(rt, int64(cs)); err != nil {
		return err
	}
	img, err := openFile(f, "", Options{Features: o.Incompatible, NoBacking: true}, false)
	if err != nil {
		return err
	}
	if off, err := img.rc.alloc(3 * cs); err != nil {
		return err
	} else if off != 0 {
		return fmt.Errorf("first cluster of an empty image is already in use")
	}
	exts, err := img.formatTables(o)
	if err != nil {
		return err
	}
	if err := img.rc.writeBlocksSync(); err != nil {
		return err
	}
	if o.BackingFormat != "" {
		// qcow2_update_header writes the backing format extension first.
		exts = append([]Extension{{Magic: ExtBackingFormat, Data: []byte(o.BackingFormat)}}, exts...)
	}
	// Set last, as qemu-img does (qcow2_set_up_encryption): the image is
	// not opened again.
	img.hdr.CryptMethod = o.CryptMethod
	hc, err := marshalHeaderCluster(&img.hdr, exts, o.BackingFile, cs)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(hc, 0); err != nil {
		return err
	}
	if o.Preallocation != PreallocOff && o.CryptMethod == 0 {
		// As qemu-img: the image made so far is opened and grown over
		// its whole size with the mode (qcow2_co_truncate).
		pimg, err := openFile(keepOpen{f}, "", Options{Features: o.Incompatible, NoBacking: true}, false)
		if err != nil {
			return err
		}
		err = pimg.preallocate(0, pimg.hdr.Size, o.Preallocation)
		if cerr := pimg.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("Could not resize image: %w", err)
		}
	}
	return f.Sync()
}

// keepOpen is a File whose Close does nothing (an Image that must not
// close the file it was given). It forwards Allocate.
type keepOpen struct{ File }

func (k keepOpen) Close() error { return nil }

func (k keepOpen) Allocate(off, n int64) error {
	if a, ok := k.File.(Allocator); ok {
		return a.Allocate(off, n)
	}
	return k.File.Truncate(off + n)
}

// header returns the fixed header of a new image, without tables.
func (o CreateOptions) header() Header {
	cs := uint64(1) << o.ClusterBits
	h := Header{
		Magic:                 Magic,
		Version:               o.Version,
		ClusterBits:           o.ClusterBits,
		RefcountTableOffset:   cs,
		RefcountTableClusters: 1,
		RefcountOrder:         o.RefcountOrder,
		HeaderLength:          HeaderV2Size,
	}
	if o.Version == 3 {
		h.HeaderLength = HeaderV3Size
		h.IncompatibleFeatures = o.Incompatible
		if o.ExtendedL2 {
			h.IncompatibleFeatures |= IncompatExtL2
		}
		if o.CompressionType != CompressionZlib {
			h.IncompatibleFeatures |= IncompatCompression
			h.CompressionType = o.CompressionType
		}
		if o.LazyRefcounts {
			h.CompatibleFeatures |= CompatLazyRefcounts
		}
	}
	return h
}

// formatTables allocates and writes, in qemu-img's order, the tables of
// the options (the zoned write-pointer table) and then the L1 table; it
// returns the header extensions to write.
func (img *Image) formatTables(o CreateOptions) ([]Extension, error) {
	cs := img.cs
	var exts []Extension
	if o.Version == 3 && cs > 4096 {
		// QEMU omits the feature name table for clusters of 4 KiB and less.
		exts = append(exts, Extension{Magic: ExtFeatureTable, Data: MarshalFeatureTable(defaultFeatures)})
	}
	for _, t := range o.Tables {
		off, err := img.rc.alloc(uint64(len(t.Data)))
		if err != nil {
			return nil, err
		}
		if _, err := img.f.WriteAt(t.Data, int64(off)); err != nil {
			return nil, err
		}
		exts = append(exts, t.Extension(off))
	}
	size := roundUp(o.Size, 512)
	img.hdr.Size = size
	l1 := ceilDiv(size, cs*img.l2Ents)
	if l1*8 > MaxL1Bytes {
		return nil, fmt.Errorf("image size %d needs an L1 table larger than %d bytes", size, MaxL1Bytes)
	}
	if l1 > 0 {
		off, err := img.rc.alloc(l1 * 8)
		if err != nil {
			return nil, err
		}
		if _, err := img.f.WriteAt(make([]byte, l1*8), int64(off)); err != nil {
			return nil, err
		}
		img.hdr.L1Size = uint32(l1)
		img.hdr.L1TableOffset = off
	}
	return exts, nil
}

// marshalHeaderCluster encodes the header, its extensions, the end marker
// and the backing file name (right after the end marker, unpadded) into
// one cluster, as qcow2_update_header does; it sets h's backing file
// offset and size.
func marshalHeaderCluster(h *Header, exts []Extension, backing string, cs uint64) ([]byte, error) {
	h.BackingFileOffset, h.BackingFileSize = 0, 0
	b := h.Marshal()
	for _, e := range exts {
		b = AppendExtension(b, e)
	}
	b = AppendExtension(b, Extension{Magic: ExtEnd})
	if backing != "" {
		h.BackingFileOffset, h.BackingFileSize = uint64(len(b)), uint32(len(backing))
		copy(b, h.Marshal())
		b = append(b, backing...)
	}
	if uint64(len(b)) > cs {
		return nil, fmt.Errorf("header and extensions (%d bytes) do not fit in a cluster of %d bytes", len(b), cs)
	}
	out := make([]byte, cs)
	copy(out, b)
	return out, nil
}
