package image

import "encoding/binary"

// Typed L1 and L2 table entries (qcow2.rst, "Cluster mapping"). The engine
// and the checker (pkg/check) decode entries only through these types, so
// that the classification, the offset masks and the reserved bits are
// defined once.

// Subcluster bitmap halves of an extended L2 entry: bit i (0-31) says that
// subcluster i is allocated, bit 32+i that it reads as zeroes.
const (
	BitmapAllAlloc uint64 = 0x00000000ffffffff // QCOW_L2_BITMAP_ALL_ALLOC
	BitmapAllZero  uint64 = 0xffffffff00000000 // QCOW_L2_BITMAP_ALL_ZEROES
)

// L1Entry is an entry of an L1 table: the host offset of an L2 table (0:
// none) and OFLAG_COPIED.
type L1Entry uint64

// Offset returns the host offset of the L2 table (0: unallocated). It is
// cluster aligned in a valid image.
func (e L1Entry) Offset() uint64 { return uint64(e) & L1OffsetMask }

// Copied reports OFLAG_COPIED: the L2 table's refcount is exactly 1, so it
// may be written in place.
func (e L1Entry) Copied() bool { return uint64(e)&OflagCopied != 0 }

// Reserved returns the reserved bits set in e (0 in a valid image).
func (e L1Entry) Reserved() uint64 { return uint64(e) & L1ReservedMask }

// ClusterType is what an L2 entry makes of its guest cluster (QEMU's
// QCow2ClusterType, from qcow2_get_cluster_type).
type ClusterType int

// Cluster types.
const (
	ClusterUnallocated ClusterType = iota // reads from the backing file, or as zeroes
	ClusterZeroPlain                      // zero flag, no host cluster
	ClusterZeroAlloc                      // zero flag, with a preallocated host cluster
	ClusterNormal                         // data in a host cluster (with extended L2: in its allocated subclusters)
	ClusterCompressed                     // a compressed byte range (see CompressedRange)
)

func (t ClusterType) String() string {
	switch t {
	case ClusterUnallocated:
		return "unallocated"
	case ClusterZeroPlain:
		return "zero-plain"
	case ClusterZeroAlloc:
		return "zero-alloc"
	case ClusterNormal:
		return "normal"
	case ClusterCompressed:
		return "compressed"
	}
	return "invalid"
}

// Allocated reports whether the type refers to a whole host cluster
// (ClusterNormal or ClusterZeroAlloc).
func (t ClusterType) Allocated() bool { return t == ClusterNormal || t == ClusterZeroAlloc }

// L2Entry is an entry of an L2 table: the cluster descriptor and, for an
// extended L2 entry, the subcluster bitmap (0 for a standard entry).
type L2Entry struct {
	Desc   uint64
	Bitmap uint64
}

// L2EntrySize returns the size in bytes of an L2 entry: 8, or 16 for an
// extended entry.
func L2EntrySize(extended bool) uint64 {
	if extended {
		return 16
	}
	return 8
}

// DecodeL2Entry returns entry i of the L2 table t (big-endian on disk).
func DecodeL2Entry(t []byte, i uint64, extended bool) L2Entry {
	o := i * L2EntrySize(extended)
	e := L2Entry{Desc: binary.BigEndian.Uint64(t[o:])}
	if extended {
		e.Bitmap = binary.BigEndian.Uint64(t[o+8:])
	}
	return e
}

// Put encodes e as entry i of the L2 table t and returns the bytes of the
// entry in t (what must be written at the entry's offset).
func (e L2Entry) Put(t []byte, i uint64, extended bool) []byte {
	n := L2EntrySize(extended)
	o := i * n
	binary.BigEndian.PutUint64(t[o:], e.Desc)
	if extended {
		binary.BigEndian.PutUint64(t[o+8:], e.Bitmap)
	}
	return t[o : o+n]
}

// Type classifies the entry as qcow2_get_cluster_type does: compressed;
// with standard entries, the zero flag (plain, or with a preallocated
// host cluster); then unallocated without a host offset, normal with one.
// Extended entries have no zero flag: their subclusters say what reads as
// zeroes (see Subcluster). Note that the engine ignores the zero flag of
// version 2 images, which have none.
func (e L2Entry) Type(extended bool) ClusterType {
	switch {
	case e.Compressed():
		return ClusterCompressed
	case e.Desc&OflagZero != 0 && !extended:
		if e.Offset() != 0 {
			return ClusterZeroAlloc
		}
		return ClusterZeroPlain
	case e.Offset() == 0:
		return ClusterUnallocated
	}
	return ClusterNormal
}

// Offset returns the host cluster offset of a standard or zero entry (0:
// none). It is cluster aligned in a valid image. For a compressed entry
// use CompressedRange.
func (e L2Entry) Offset() uint64 { return e.Desc & L2OffsetMask }

// Copied reports OFLAG_COPIED: the host cluster's refcount is exactly 1,
// so it may be written in place. It must never be set on a compressed
// entry.
func (e L2Entry) Copied() bool { return e.Desc&OflagCopied != 0 }

// Compressed reports whether the entry describes a compressed cluster.
func (e L2Entry) Compressed() bool { return e.Desc&OflagCompressed != 0 }

// Reserved returns the reserved bits set in the descriptor of a
// non-compressed entry (QEMU's L2E_STD_RESERVED_MASK; 0 in a valid image).
// A compressed descriptor has no reserved bits: it returns 0.
func (e L2Entry) Reserved() uint64 {
	if e.Compressed() {
		return 0
	}
	return e.Desc & L2ReservedMask
}

// CompressedRange returns the host bytes a compressed entry occupies, for
// an image with 2^clusterBits-byte clusters (qcow2_parse_compressed_l2_entry):
// the offset of the compressed stream and its length in bytes, up to the
// end of the last 512-byte sector the descriptor counts. The range may
// cross cluster boundaries.
func (e L2Entry) CompressedRange(clusterBits uint32) (off, length uint64) {
	shift := 62 - (clusterBits - 8)
	mask := uint64(1)<<(clusterBits-8) - 1
	off = e.Desc & (uint64(1)<<shift - 1)
	sectors := (e.Desc>>shift)&mask + 1
	return off, sectors*512 - off&511
}

// Subcluster states of an extended L2 entry.
type Subcluster int

// How a subcluster reads.
const (
	SubUnallocated Subcluster = iota // from the backing file, or as zeroes
	SubZero                          // as zeroes
	SubData                          // from the host cluster
)

// Subcluster returns how subcluster s (0-31) of an extended entry reads.
// The allocation bit wins over the zero bit (both set is invalid; see
// BitmapConflicts).
func (e L2Entry) Subcluster(s uint64) Subcluster {
	switch {
	case e.Bitmap&(1<<s) != 0:
		return SubData
	case e.Bitmap&(1<<(32+s)) != 0:
		return SubZero
	}
	return SubUnallocated
}

// InvalidSubclusters reports whether an extended entry is one QEMU refuses
// to read or write through (QCOW2_SUBCLUSTER_INVALID): a cluster with a
// host offset whose bitmap marks a subcluster both allocated and zero, or
// an unallocated cluster with allocated subclusters.
func (e L2Entry) InvalidSubclusters() bool {
	switch e.Type(true) {
	case ClusterNormal:
		return e.BitmapConflicts() != 0
	case ClusterUnallocated:
		return e.Bitmap&BitmapAllAlloc != 0
	}
	return false
}

// HasData reports whether an extended entry has an allocated subcluster.
func (e L2Entry) HasData() bool { return e.Bitmap&BitmapAllAlloc != 0 }

// BitmapConflicts returns the subclusters (as allocation bits) that an
// extended entry marks both allocated and zero, which is invalid.
func (e L2Entry) BitmapConflicts() uint64 { return e.Bitmap & (e.Bitmap >> 32) & BitmapAllAlloc }
