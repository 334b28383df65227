// Package image is a qcow2 engine: it parses and writes the on-disk
// structures of qcow2 (versions 2 and 3) and reads and writes guest data
// through them with QEMU's allocation rules and a crash-safe write order.
//
// Units: every offset and length in this package is in bytes unless its name
// says otherwise (…Sectors are 512-byte sectors, …Clusters are clusters).
//
// The package never prints and never exits; every failure is returned as an
// error. Sentinel and typed errors let callers use errors.Is and errors.As.
package image

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// Magic is the first four bytes of every qcow2 file: 'Q', 'F', 'I', 0xfb.
const Magic uint32 = 0x514649fb

// Header sizes in bytes.
const (
	HeaderV2Size    = 72  // version 2 header, fixed
	HeaderV3MinSize = 104 // version 3 header without the compression type
	HeaderV3Size    = 112 // version 3 header as QEMU writes it (compression type + padding)
)

// Cluster size limits, as log2 of bytes.
const (
	MinClusterBits = 9  // 512 B
	MaxClusterBits = 21 // 2 MiB
)

// Incompatible feature bits (header bytes 72-79).
const (
	IncompatDirty       uint64 = 1 << 0
	IncompatCorrupt     uint64 = 1 << 1
	IncompatDataFile    uint64 = 1 << 2
	IncompatCompression uint64 = 1 << 3
	IncompatExtL2       uint64 = 1 << 4
	IncompatZoned       uint64 = 1 << 5
)

// Compatible and autoclear feature bits.
const (
	CompatLazyRefcounts  uint64 = 1 << 0
	AutoclearBitmaps     uint64 = 1 << 0
	AutoclearDataFileRaw uint64 = 1 << 1
)

// Compression types (header byte 104).
const (
	CompressionZlib uint8 = 0
	CompressionZstd uint8 = 1
)

// Header extension magics.
const (
	ExtEnd           uint32 = 0x00000000
	ExtBackingFormat uint32 = 0xe2792aca
	ExtFeatureTable  uint32 = 0x6803f857
	ExtBitmaps       uint32 = 0x23852875
	ExtCrypto        uint32 = 0x0537be77
	ExtDataFile      uint32 = 0x44415441
	ExtZoned         uint32 = 0x007a6264
)

// L1, L2 and refcount table entry bits.
const (
	OflagCopied     uint64 = 1 << 63
	OflagCompressed uint64 = 1 << 62
	OflagZero       uint64 = 1 << 0

	L1OffsetMask     uint64 = 0x00fffffffffffe00
	L2OffsetMask     uint64 = 0x00fffffffffffe00
	RefTableOffMask  uint64 = 0xfffffffffffffe00
	L1ReservedMask   uint64 = 0x7f000000000001ff
	L2ReservedMask   uint64 = 0x3f000000000001fe
	RefTableReserved uint64 = 0x00000000000001ff
)

// Limits QEMU enforces; images beyond them are refused.
const (
	MaxL1Bytes       = 32 << 20 // QCOW_MAX_L1_SIZE
	MaxRefTableBytes = 8 << 20  // QCOW_MAX_REFTABLE_SIZE
	MaxSnapshots     = 65536
	MaxHostOffset    = 1<<56 - 1
)

// Header mirrors the fixed part of a qcow2 header. All fields are host
// values; Parse and Marshal convert from and to big-endian.
type Header struct {
	Magic                 uint32
	Version               uint32
	BackingFileOffset     uint64
	BackingFileSize       uint32
	ClusterBits           uint32
	Size                  uint64 // virtual disk size in bytes
	CryptMethod           uint32
	L1Size                uint32 // entries
	L1TableOffset         uint64
	RefcountTableOffset   uint64
	RefcountTableClusters uint32
	NbSnapshots           uint32
	SnapshotsOffset       uint64

	// Version 3 fields; for version 2 they hold the implied values
	// (no features, refcount order 4, header length 72).
	IncompatibleFeatures uint64
	CompatibleFeatures   uint64
	AutoclearFeatures    uint64
	RefcountOrder        uint32 // refcount width is 1<<RefcountOrder bits
	HeaderLength         uint32
	CompressionType      uint8

	// Extra holds header bytes between the fields this package knows and
	// HeaderLength, kept so that a rewritten header preserves them.
	Extra []byte
}

// FormatError reports malformed on-disk data and where it was found.
type FormatError struct {
	Off int64 // file offset of the offending structure; -1 when unknown
	Msg string
}

func (e *FormatError) Error() string {
	if e.Off < 0 {
		return "qcow2: " + e.Msg
	}
	return fmt.Sprintf("qcow2: %s (at offset 0x%x)", e.Msg, e.Off)
}

func formatErr(off int64, format string, args ...any) error {
	return &FormatError{Off: off, Msg: fmt.Sprintf(format, args...)}
}

// ParseHeader decodes and validates the fixed header in b, which must hold
// at least the first HeaderV2Size bytes of the file (and HeaderLength bytes
// for version 3). It checks only what can be checked without the file size.
func ParseHeader(b []byte) (*Header, error) {
	if len(b) < HeaderV2Size {
		return nil, formatErr(0, "file too short for a qcow2 header: %d bytes", len(b))
	}
	be := binary.BigEndian
	h := &Header{
		Magic:                 be.Uint32(b[0:]),
		Version:               be.Uint32(b[4:]),
		BackingFileOffset:     be.Uint64(b[8:]),
		BackingFileSize:       be.Uint32(b[16:]),
		ClusterBits:           be.Uint32(b[20:]),
		Size:                  be.Uint64(b[24:]),
		CryptMethod:           be.Uint32(b[32:]),
		L1Size:                be.Uint32(b[36:]),
		L1TableOffset:         be.Uint64(b[40:]),
		RefcountTableOffset:   be.Uint64(b[48:]),
		RefcountTableClusters: be.Uint32(b[56:]),
		NbSnapshots:           be.Uint32(b[60:]),
		SnapshotsOffset:       be.Uint64(b[64:]),
		RefcountOrder:         4,
		HeaderLength:          HeaderV2Size,
	}
	if h.Magic != Magic {
		return nil, formatErr(0, "bad magic 0x%08x: image is not in qcow2 format", h.Magic)
	}
	if h.Version < 2 || h.Version > 3 {
		return nil, formatErr(4, "unsupported qcow2 version %d", h.Version)
	}
	if h.ClusterBits < MinClusterBits || h.ClusterBits > MaxClusterBits {
		return nil, formatErr(20, "unsupported cluster size: 2^%d (cluster_bits must be %d to %d)",
			h.ClusterBits, MinClusterBits, MaxClusterBits)
	}
	clusterSize := uint64(1) << h.ClusterBits
	if h.Version == 3 {
		if len(b) < HeaderV3MinSize {
			return nil, formatErr(0, "file too short for a version 3 header: %d bytes", len(b))
		}
		h.IncompatibleFeatures = be.Uint64(b[72:])
		h.CompatibleFeatures = be.Uint64(b[80:])
		h.AutoclearFeatures = be.Uint64(b[88:])
		h.RefcountOrder = be.Uint32(b[96:])
		h.HeaderLength = be.Uint32(b[100:])
		if h.HeaderLength < HeaderV3MinSize {
			return nil, formatErr(100, "header_length %d too short (minimum %d)", h.HeaderLength, HeaderV3MinSize)
		}
		if uint64(h.HeaderLength) > clusterSize {
			return nil, formatErr(100, "header_length %d exceeds the cluster size %d", h.HeaderLength, clusterSize)
		}
		if uint64(len(b)) < uint64(h.HeaderLength) {
			return nil, formatErr(0, "file too short for header_length %d", h.HeaderLength)
		}
		if h.HeaderLength > HeaderV3MinSize {
			h.CompressionType = b[104]
		}
		if h.HeaderLength > HeaderV3Size {
			h.Extra = append([]byte(nil), b[HeaderV3Size:h.HeaderLength]...)
		} else if h.HeaderLength > HeaderV3MinSize+1 {
			// Padding bytes 105..HeaderLength: kept only when non-zero.
			pad := b[HeaderV3MinSize+1 : h.HeaderLength]
			for _, c := range pad {
				if c != 0 {
					h.Extra = append([]byte(nil), pad...)
					break
				}
			}
		}
		if h.RefcountOrder > 6 {
			return nil, formatErr(96, "refcount_order %d: reference count entry width too large; may not exceed 64 bits", h.RefcountOrder)
		}
		if err := validateCompression(h); err != nil {
			return nil, err
		}
	}
	if h.BackingFileOffset != 0 {
		if h.BackingFileOffset > clusterSize || uint64(h.BackingFileSize) > clusterSize-h.BackingFileOffset || h.BackingFileSize > 1023 {
			return nil, formatErr(8, "invalid backing file name: offset %d, length %d", h.BackingFileOffset, h.BackingFileSize)
		}
	}
	if h.L1TableOffset%clusterSize != 0 && h.L1Size != 0 {
		return nil, formatErr(40, "L1 table offset 0x%x is not cluster aligned", h.L1TableOffset)
	}
	if uint64(h.L1Size)*8 > MaxL1Bytes {
		return nil, formatErr(36, "active L1 table too large: %d entries", h.L1Size)
	}
	if h.L1Size != 0 && h.L1TableOffset > MaxHostOffset-uint64(h.L1Size)*8 {
		return nil, formatErr(40, "L1 table offset 0x%x out of range", h.L1TableOffset)
	}
	if h.RefcountTableOffset%clusterSize != 0 {
		return nil, formatErr(48, "refcount table offset 0x%x is not cluster aligned", h.RefcountTableOffset)
	}
	if h.RefcountTableOffset == 0 {
		return nil, formatErr(48, "refcount table offset is 0")
	}
	if uint64(h.RefcountTableClusters)*clusterSize > MaxRefTableBytes && uint64(h.RefcountTableClusters) > 1 {
		return nil, formatErr(56, "reference count table too large: %d clusters", h.RefcountTableClusters)
	}
	if h.RefcountTableClusters == 0 {
		return nil, formatErr(56, "refcount table has no clusters")
	}
	if h.RefcountTableOffset > MaxHostOffset-uint64(h.RefcountTableClusters)*clusterSize {
		return nil, formatErr(48, "refcount table offset 0x%x out of range", h.RefcountTableOffset)
	}
	if h.NbSnapshots > MaxSnapshots {
		return nil, formatErr(60, "too many snapshots: %d", h.NbSnapshots)
	}
	if h.NbSnapshots != 0 && h.SnapshotsOffset%clusterSize != 0 {
		return nil, formatErr(64, "snapshot table offset 0x%x is not cluster aligned", h.SnapshotsOffset)
	}
	l2Entries := clusterSize / 8
	if h.IncompatibleFeatures&IncompatExtL2 != 0 {
		l2Entries = clusterSize / 16
	}
	if h.Size > 1<<62 {
		return nil, formatErr(24, "virtual size %d too large", h.Size)
	}
	need := ceilDiv(h.Size, clusterSize*l2Entries)
	if uint64(h.L1Size) < need {
		return nil, formatErr(36, "L1 table too small: %d entries for a virtual size of %d bytes needs %d", h.L1Size, h.Size, need)
	}
	return h, nil
}

func validateCompression(h *Header) error {
	bit := h.IncompatibleFeatures&IncompatCompression != 0
	switch h.CompressionType {
	case CompressionZlib:
		if bit {
			return formatErr(72, "compression type incompatible feature bit must not be set for zlib")
		}
	case CompressionZstd:
		if !bit {
			return formatErr(72, "compression type incompatible feature bit must be set for zstd")
		}
	default:
		return formatErr(104, "unknown compression type %d", h.CompressionType)
	}
	return nil
}

// Marshal encodes the header into HeaderLength bytes.
func (h *Header) Marshal() []byte {
	n := int(h.HeaderLength)
	if n < HeaderV2Size {
		n = HeaderV2Size
	}
	b := make([]byte, n)
	be := binary.BigEndian
	be.PutUint32(b[0:], h.Magic)
	be.PutUint32(b[4:], h.Version)
	be.PutUint64(b[8:], h.BackingFileOffset)
	be.PutUint32(b[16:], h.BackingFileSize)
	be.PutUint32(b[20:], h.ClusterBits)
	be.PutUint64(b[24:], h.Size)
	be.PutUint32(b[32:], h.CryptMethod)
	be.PutUint32(b[36:], h.L1Size)
	be.PutUint64(b[40:], h.L1TableOffset)
	be.PutUint64(b[48:], h.RefcountTableOffset)
	be.PutUint32(b[56:], h.RefcountTableClusters)
	be.PutUint32(b[60:], h.NbSnapshots)
	be.PutUint64(b[64:], h.SnapshotsOffset)
	if h.Version >= 3 && n >= HeaderV3MinSize {
		be.PutUint64(b[72:], h.IncompatibleFeatures)
		be.PutUint64(b[80:], h.CompatibleFeatures)
		be.PutUint64(b[88:], h.AutoclearFeatures)
		be.PutUint32(b[96:], h.RefcountOrder)
		be.PutUint32(b[100:], h.HeaderLength)
		if n > HeaderV3MinSize {
			b[104] = h.CompressionType
		}
		if len(h.Extra) > 0 {
			start := HeaderV3Size
			if n <= HeaderV3Size {
				start = HeaderV3MinSize + 1
			}
			copy(b[start:], h.Extra)
		}
	}
	return b
}

// ClusterSize returns the cluster size in bytes.
func (h *Header) ClusterSize() uint64 { return 1 << h.ClusterBits }

// ExtendedL2 reports whether L2 entries carry a subcluster bitmap.
func (h *Header) ExtendedL2() bool { return h.IncompatibleFeatures&IncompatExtL2 != 0 }

// L2Entries returns the number of entries in one L2 table.
func (h *Header) L2Entries() uint64 {
	if h.ExtendedL2() {
		return h.ClusterSize() / 16
	}
	return h.ClusterSize() / 8
}

// Extension is one header extension as stored after the fixed header.
type Extension struct {
	Magic uint32
	Data  []byte
}

// ParseExtensions decodes the header extensions in b[start:end]. It stops at
// the end marker; a missing end marker at the end of the area is accepted.
func ParseExtensions(b []byte, start, end int) ([]Extension, error) {
	if end > len(b) {
		end = len(b)
	}
	var exts []Extension
	off := start
	for off+8 <= end {
		magic := binary.BigEndian.Uint32(b[off:])
		length := binary.BigEndian.Uint32(b[off+4:])
		if magic == ExtEnd {
			return exts, nil
		}
		dataOff := off + 8
		if uint64(length) > uint64(end-dataOff) {
			return nil, formatErr(int64(off), "header extension 0x%08x too large: %d bytes, %d left in the header cluster", magic, length, end-dataOff)
		}
		exts = append(exts, Extension{Magic: magic, Data: append([]byte(nil), b[dataOff:dataOff+int(length)]...)})
		off = dataOff + int(roundUp(uint64(length), 8))
	}
	return exts, nil
}

// AppendExtension appends e (8-byte header, data, zero padding to 8 bytes).
func AppendExtension(b []byte, e Extension) []byte {
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[0:], e.Magic)
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(e.Data)))
	b = append(b, hdr[:]...)
	b = append(b, e.Data...)
	pad := roundUp(uint64(len(e.Data)), 8) - uint64(len(e.Data))
	return append(b, make([]byte, pad)...)
}

// Feature types in the feature name table.
const (
	FeatureIncompatible uint8 = 0
	FeatureCompatible   uint8 = 1
	FeatureAutoclear    uint8 = 2
)

// FeatureEntrySize is the size of one feature name table entry.
const FeatureEntrySize = 48

// Feature is one entry of the feature name table extension.
type Feature struct {
	Type uint8
	Bit  uint8
	Name string // at most 46 bytes
}

// ParseFeatureTable decodes the feature name table extension data.
func ParseFeatureTable(data []byte) ([]Feature, error) {
	if len(data)%FeatureEntrySize != 0 {
		return nil, formatErr(-1, "feature name table length %d is not a multiple of %d", len(data), FeatureEntrySize)
	}
	var fs []Feature
	for i := 0; i+FeatureEntrySize <= len(data); i += FeatureEntrySize {
		name := data[i+2 : i+FeatureEntrySize]
		n := 0
		for n < len(name) && name[n] != 0 {
			n++
		}
		fs = append(fs, Feature{Type: data[i], Bit: data[i+1], Name: string(name[:n])})
	}
	return fs, nil
}

// MarshalFeatureTable encodes a feature name table.
func MarshalFeatureTable(fs []Feature) []byte {
	b := make([]byte, len(fs)*FeatureEntrySize)
	for i, f := range fs {
		e := b[i*FeatureEntrySize:]
		e[0] = f.Type
		e[1] = f.Bit
		copy(e[2:FeatureEntrySize], f.Name)
	}
	return b
}

// DefaultFeatures returns the feature name table QEMU (with the zoned patch)
// writes into every version 3 image whose clusters are larger than 4 KiB.
func DefaultFeatures() []Feature { return slices.Clone(defaultFeatures) }

var defaultFeatures = []Feature{
	{FeatureIncompatible, 0, "dirty bit"},
	{FeatureIncompatible, 1, "corrupt bit"},
	{FeatureIncompatible, 2, "external data file"},
	{FeatureIncompatible, 3, "compression type"},
	{FeatureIncompatible, 4, "extended L2 entries"},
	{FeatureIncompatible, 5, "zoned format"},
	{FeatureCompatible, 0, "lazy refcounts"},
	{FeatureAutoclear, 0, "bitmaps"},
	{FeatureAutoclear, 1, "raw external data"},
}

func ceilDiv(a, b uint64) uint64 { return (a + b - 1) / b }

func roundUp(a, b uint64) uint64 { return ceilDiv(a, b) * b }
