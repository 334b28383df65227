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
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/zqimg/zqimg/pkg/internal/arith"
)

// Magic is the first four bytes of every qcow2 file: 'Q', 'F', 'I', 0xfb.
const Magic uint32 = 0x514649fb

// Byte offsets of the header fields in the first cluster (qcow2.rst,
// "Header"). Every field is big-endian.
const (
	HdrMagic                 = 0  // u32
	HdrVersion               = 4  // u32
	HdrBackingFileOffset     = 8  // u64
	HdrBackingFileSize       = 16 // u32
	HdrClusterBits           = 20 // u32
	HdrSize                  = 24 // u64, virtual size in bytes
	HdrCryptMethod           = 32 // u32
	HdrL1Size                = 36 // u32, entries
	HdrL1TableOffset         = 40 // u64
	HdrRefcountTableOffset   = 48 // u64
	HdrRefcountTableClusters = 56 // u32
	HdrNbSnapshots           = 60 // u32
	HdrSnapshotsOffset       = 64 // u64
	HdrIncompatibleFeatures  = 72 // u64, version 3
	HdrCompatibleFeatures    = 80 // u64, version 3
	HdrAutoclearFeatures     = 88 // u64, version 3
	HdrRefcountOrder         = 96 // u32, version 3
	HdrHeaderLength          = 100
	HdrCompressionType       = 104 // u8, header_length > 104
)

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

// CryptAES is the crypt_method of legacy AES encryption (QCOW_CRYPT_AES).
const CryptAES uint32 = 1

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
	// QEMU is QEMU 7.2's message for the same refusal ("qcow2 header
	// exceeds cluster size"), "" when QEMU has none (it accepts the
	// image, or fails later and otherwise).
	QEMU string
}

func (e *FormatError) Error() string {
	if e.Off < 0 {
		return "qcow2: " + e.Msg
	}
	return fmt.Sprintf("qcow2: %s (at offset 0x%x)", e.Msg, e.Off)
}

// QEMUMessage returns QEMU's message for the refusal, or Error when QEMU
// has none.
func (e *FormatError) QEMUMessage() string {
	if e.QEMU != "" {
		return e.QEMU
	}
	return e.Error()
}

func formatErr(off int64, format string, args ...any) error {
	return &FormatError{Off: off, Msg: fmt.Sprintf(format, args...)}
}

// qemuErr is formatErr with QEMU's message for the same refusal.
func qemuErr(off int64, qemu, format string, args ...any) error {
	return &FormatError{Off: off, Msg: fmt.Sprintf(format, args...), QEMU: qemu}
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
		Magic:                 be.Uint32(b[HdrMagic:]),
		Version:               be.Uint32(b[HdrVersion:]),
		BackingFileOffset:     be.Uint64(b[HdrBackingFileOffset:]),
		BackingFileSize:       be.Uint32(b[HdrBackingFileSize:]),
		ClusterBits:           be.Uint32(b[HdrClusterBits:]),
		Size:                  be.Uint64(b[HdrSize:]),
		CryptMethod:           be.Uint32(b[HdrCryptMethod:]),
		L1Size:                be.Uint32(b[HdrL1Size:]),
		L1TableOffset:         be.Uint64(b[HdrL1TableOffset:]),
		RefcountTableOffset:   be.Uint64(b[HdrRefcountTableOffset:]),
		RefcountTableClusters: be.Uint32(b[HdrRefcountTableClusters:]),
		NbSnapshots:           be.Uint32(b[HdrNbSnapshots:]),
		SnapshotsOffset:       be.Uint64(b[HdrSnapshotsOffset:]),
		RefcountOrder:         4,
		HeaderLength:          HeaderV2Size,
	}
	if h.Magic != Magic {
		return nil, qemuErr(HdrMagic, "Image is not in qcow2 format", "bad magic 0x%08x: image is not in qcow2 format", h.Magic)
	}
	if h.Version < 2 || h.Version > 3 {
		return nil, qemuErr(HdrVersion, fmt.Sprintf("Unsupported qcow2 version %d", h.Version), "unsupported qcow2 version %d", h.Version)
	}
	if h.ClusterBits < MinClusterBits || h.ClusterBits > MaxClusterBits {
		return nil, qemuErr(HdrClusterBits, fmt.Sprintf("Unsupported cluster size: 2^%d", h.ClusterBits), "unsupported cluster size: 2^%d (cluster_bits must be %d to %d)",
			h.ClusterBits, MinClusterBits, MaxClusterBits)
	}
	if h.Version == 3 {
		if err := h.parseV3(b); err != nil {
			return nil, err
		}
	}
	if err := h.validateTables(); err != nil {
		return nil, err
	}
	if err := h.SnapshotTableError(); err != nil {
		return nil, err
	}
	return h, nil
}

// ParseHeaderForCheck is ParseHeader without the checks of the snapshot
// table fields (SnapshotTableError): check opens an image as QEMU opens
// one for qemu-img check, and reports a bad snapshot table itself.
func ParseHeaderForCheck(b []byte) (*Header, error) {
	h, err := ParseHeader(b)
	var se *SnapshotTableError
	if errors.As(err, &se) {
		return se.Header, nil
	}
	return h, err
}

// SnapshotTableError reports snapshot table fields QEMU refuses when it
// opens an image (qcow2_validate_table). Msg starts with QEMU's words:
// "Snapshot table too large" or "Snapshot table offset invalid".
type SnapshotTableError struct {
	FormatError
	Header *Header // the header, otherwise valid
}

func (e *SnapshotTableError) Unwrap() error { return &e.FormatError }

// snapshotHeaderSize is the fixed part of a snapshot table entry in bytes
// (sizeof(QCowSnapshotHeader)), the entry size QEMU's limits count in.
const snapshotHeaderSize = 40

// SnapshotTableError checks nb_snapshots and snapshots_offset as QEMU does
// on open, whatever the number of snapshots: at most MaxSnapshots entries,
// a cluster-aligned offset, and offset + nb_snapshots × 40 bytes not past
// 2^63-1 (QEMU's file offsets are signed 64-bit). It returns nil or a
// *SnapshotTableError.
func (h *Header) SnapshotTableError() error {
	fail := func(off int64, format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		qemu, _, _ := strings.Cut(msg, ":")
		return &SnapshotTableError{FormatError: FormatError{Off: off, Msg: msg, QEMU: qemu}, Header: h}
	}
	n := uint64(h.NbSnapshots)
	if n > MaxSnapshots {
		return fail(HdrNbSnapshots, "Snapshot table too large: %d snapshots, at most %d", n, MaxSnapshots)
	}
	if h.SnapshotsOffset%h.ClusterSize() != 0 {
		return fail(HdrSnapshotsOffset, "Snapshot table offset invalid: 0x%x is not cluster aligned", h.SnapshotsOffset)
	}
	if h.SnapshotsOffset > math.MaxInt64-n*snapshotHeaderSize {
		return fail(HdrSnapshotsOffset, "Snapshot table offset invalid: %d snapshots at 0x%x end past 2^63-1", n, h.SnapshotsOffset)
	}
	return nil
}

// parseV3 decodes and checks the version 3 fields of the header in b.
func (h *Header) parseV3(b []byte) error {
	be := binary.BigEndian
	if len(b) < HeaderV3MinSize {
		return formatErr(0, "file too short for a version 3 header: %d bytes", len(b))
	}
	h.IncompatibleFeatures = be.Uint64(b[HdrIncompatibleFeatures:])
	h.CompatibleFeatures = be.Uint64(b[HdrCompatibleFeatures:])
	h.AutoclearFeatures = be.Uint64(b[HdrAutoclearFeatures:])
	h.RefcountOrder = be.Uint32(b[HdrRefcountOrder:])
	h.HeaderLength = be.Uint32(b[HdrHeaderLength:])
	if h.HeaderLength < HeaderV3MinSize {
		return qemuErr(HdrHeaderLength, "qcow2 header too short", "header_length %d too short (minimum %d)", h.HeaderLength, HeaderV3MinSize)
	}
	if uint64(h.HeaderLength) > h.ClusterSize() {
		return qemuErr(HdrHeaderLength, "qcow2 header exceeds cluster size", "header_length %d exceeds the cluster size %d", h.HeaderLength, h.ClusterSize())
	}
	if uint64(len(b)) < uint64(h.HeaderLength) {
		return formatErr(0, "file too short for header_length %d", h.HeaderLength)
	}
	if h.HeaderLength > HeaderV3MinSize {
		h.CompressionType = b[HdrCompressionType]
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
		return qemuErr(HdrRefcountOrder, "Reference count entry width too large; may not exceed 64 bits", "refcount_order %d: reference count entry width too large; may not exceed 64 bits", h.RefcountOrder)
	}
	return validateCompression(h)
}

// validateTables checks the backing file name, the L1 table, the refcount
// table and the snapshot table fields against the cluster size and QEMU's
// limits (what can be checked without the file).
func (h *Header) validateTables() error {
	clusterSize := h.ClusterSize()
	const (
		qBackingOffset = "Invalid backing file offset"
		qBackingName   = "Backing file name too long"
		qL1Large       = "Active L1 table too large"
		qL1Offset      = "Active L1 table offset invalid"
		qRTLarge       = "Reference count table too large"
		qRTOffset      = "Reference count table offset invalid"
		qRTNone        = "Image does not contain a reference count table"
	)
	if h.BackingFileOffset != 0 {
		q := qBackingName
		if h.BackingFileOffset > clusterSize {
			q = qBackingOffset
		}
		if h.BackingFileOffset > clusterSize || uint64(h.BackingFileSize) > clusterSize-h.BackingFileOffset || h.BackingFileSize > 1023 {
			return qemuErr(HdrBackingFileOffset, q, "invalid backing file name: offset %d, length %d", h.BackingFileOffset, h.BackingFileSize)
		}
	}
	if h.L1TableOffset%clusterSize != 0 && h.L1Size != 0 {
		return qemuErr(HdrL1TableOffset, qL1Offset, "L1 table offset 0x%x is not cluster aligned", h.L1TableOffset)
	}
	if uint64(h.L1Size)*8 > MaxL1Bytes {
		return qemuErr(HdrL1Size, qL1Large, "active L1 table too large: %d entries", h.L1Size)
	}
	if h.L1Size != 0 && h.L1TableOffset > MaxHostOffset-uint64(h.L1Size)*8 {
		return qemuErr(HdrL1TableOffset, qL1Offset, "L1 table offset 0x%x out of range", h.L1TableOffset)
	}
	if h.RefcountTableOffset%clusterSize != 0 {
		return qemuErr(HdrRefcountTableOffset, qRTOffset, "refcount table offset 0x%x is not cluster aligned", h.RefcountTableOffset)
	}
	if h.RefcountTableOffset == 0 {
		return formatErr(HdrRefcountTableOffset, "refcount table offset is 0")
	}
	if uint64(h.RefcountTableClusters)*clusterSize > MaxRefTableBytes && uint64(h.RefcountTableClusters) > 1 {
		return qemuErr(HdrRefcountTableClusters, qRTLarge, "reference count table too large: %d clusters", h.RefcountTableClusters)
	}
	if h.RefcountTableClusters == 0 {
		return qemuErr(HdrRefcountTableClusters, qRTNone, "refcount table has no clusters")
	}
	if h.RefcountTableOffset > MaxHostOffset-uint64(h.RefcountTableClusters)*clusterSize {
		return qemuErr(HdrRefcountTableOffset, qRTOffset, "refcount table offset 0x%x out of range", h.RefcountTableOffset)
	}
	// QEMU's limit: the L1 index of the end of the disk must fit an int.
	need := ceilDiv(h.Size, clusterSize*h.L2Entries())
	if need > math.MaxInt32 {
		return qemuErr(HdrSize, "Image is too big", "virtual size %d too large: it needs %d L1 entries, more than %d", h.Size, need, math.MaxInt32)
	}
	if h.Size > 1<<62 {
		return formatErr(HdrSize, "virtual size %d too large", h.Size)
	}
	if uint64(h.L1Size) < need {
		return qemuErr(HdrL1Size, "L1 table is too small", "L1 table too small: %d entries for a virtual size of %d bytes needs %d", h.L1Size, h.Size, need)
	}
	return nil
}

func validateCompression(h *Header) error {
	bit := h.IncompatibleFeatures&IncompatCompression != 0
	switch h.CompressionType {
	case CompressionZlib:
		if bit {
			return qemuErr(HdrIncompatibleFeatures, "qcow2: Compression type incompatible feature bit must not be set", "compression type incompatible feature bit must not be set for zlib")
		}
	case CompressionZstd:
		if !bit {
			return qemuErr(HdrIncompatibleFeatures, "qcow2: Compression type incompatible feature bit must be set", "compression type incompatible feature bit must be set for zstd")
		}
	default:
		return qemuErr(HdrCompressionType, fmt.Sprintf("qcow2: unknown compression type: %d", h.CompressionType), "unknown compression type %d", h.CompressionType)
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
	be.PutUint32(b[HdrMagic:], h.Magic)
	be.PutUint32(b[HdrVersion:], h.Version)
	be.PutUint64(b[HdrBackingFileOffset:], h.BackingFileOffset)
	be.PutUint32(b[HdrBackingFileSize:], h.BackingFileSize)
	be.PutUint32(b[HdrClusterBits:], h.ClusterBits)
	be.PutUint64(b[HdrSize:], h.Size)
	be.PutUint32(b[HdrCryptMethod:], h.CryptMethod)
	be.PutUint32(b[HdrL1Size:], h.L1Size)
	be.PutUint64(b[HdrL1TableOffset:], h.L1TableOffset)
	be.PutUint64(b[HdrRefcountTableOffset:], h.RefcountTableOffset)
	be.PutUint32(b[HdrRefcountTableClusters:], h.RefcountTableClusters)
	be.PutUint32(b[HdrNbSnapshots:], h.NbSnapshots)
	be.PutUint64(b[HdrSnapshotsOffset:], h.SnapshotsOffset)
	if h.Version >= 3 && n >= HeaderV3MinSize {
		be.PutUint64(b[HdrIncompatibleFeatures:], h.IncompatibleFeatures)
		be.PutUint64(b[HdrCompatibleFeatures:], h.CompatibleFeatures)
		be.PutUint64(b[HdrAutoclearFeatures:], h.AutoclearFeatures)
		be.PutUint32(b[HdrRefcountOrder:], h.RefcountOrder)
		be.PutUint32(b[HdrHeaderLength:], h.HeaderLength)
		if n > HeaderV3MinSize {
			b[HdrCompressionType] = h.CompressionType
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
	// Off is the offset of the extension's 8-byte header (magic, length)
	// in the header cluster; its data starts at Off+8. Set by
	// ParseExtensions; ignored by AppendExtension.
	Off int
}

// ParseExtensions decodes the header extensions in b[start:end] as QEMU
// does (qcow2_read_extensions). It stops at the end marker; a missing end
// marker is accepted when the last extension ends at or past end. An
// extension whose 8-byte header or data crosses end is refused with
// "Header extension too large".
func ParseExtensions(b []byte, start, end int) ([]Extension, error) {
	return parseExtensions(b, start, end, "the end of the extension area")
}

// HeaderExtensions decodes the header extensions of the header cluster hc
// (a whole cluster; a short file's is padded with zeroes): from the end of
// the header to the backing file name, or to the end of the cluster when
// there is none, as QEMU reads them.
func HeaderExtensions(h *Header, hc []byte) ([]Extension, error) {
	end, limit := h.ClusterSize(), "the end of the header cluster"
	if h.BackingFileOffset != 0 {
		end, limit = h.BackingFileOffset, "the backing file name"
	}
	return parseExtensions(hc, int(h.HeaderLength), int(end), fmt.Sprintf("%s at 0x%x", limit, end))
}

// parseExtensions is ParseExtensions; limit names what lies at end.
func parseExtensions(b []byte, start, end int, limit string) ([]Extension, error) {
	end = min(end, len(b))
	var exts []Extension
	off := start
	for off < end {
		if off+8 > end {
			return nil, qemuErr(int64(off), "Header extension too large", "Header extension too large: its 8-byte header crosses %s", limit)
		}
		magic := binary.BigEndian.Uint32(b[off:])
		length := binary.BigEndian.Uint32(b[off+4:])
		dataOff := off + 8
		if uint64(length) > uint64(end-dataOff) {
			return nil, qemuErr(int64(off), "Header extension too large", "Header extension too large: extension 0x%08x of %d bytes crosses %s", magic, length, limit)
		}
		if magic == ExtEnd {
			return exts, nil
		}
		exts = append(exts, Extension{Magic: magic, Data: append([]byte(nil), b[dataOff:dataOff+int(length)]...), Off: off})
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

// FeatureTable returns the feature name table among the header extensions
// exts as QEMU reads it to name the features it refuses: the last one,
// its data padded with zeroes to whole 48-byte entries (a table of one
// short entry names one feature), up to the first entry whose name is
// empty. It returns nil when there is none.
func FeatureTable(exts []Extension) []Feature {
	var data []byte
	found := false
	for _, e := range exts {
		if e.Magic == ExtFeatureTable {
			data, found = e.Data, true
		}
	}
	if !found {
		return nil
	}
	padded := make([]byte, roundUp(uint64(len(data)), FeatureEntrySize))
	copy(padded, data)
	fs, _ := ParseFeatureTable(padded) // whole entries: cannot fail
	for i, f := range fs {
		if f.Name == "" {
			return fs[:i]
		}
	}
	return fs
}

// FeatureNames names the incompatible feature bits in mask as they are
// reported when an image is refused (UnsupportedFeatureError): by their
// names in table (the image's feature name table, see FeatureTable), then
// by the names QEMU gives them (DefaultFeatures), and the bits still left
// as one "Unknown incompatible feature: <hex mask>".
func FeatureNames(table []Feature, mask uint64) []string {
	var names []string
	for _, fs := range [][]Feature{table, defaultFeatures} {
		for _, f := range fs {
			if f.Type == FeatureIncompatible && f.Bit < 64 && mask&(1<<f.Bit) != 0 {
				names = append(names, f.Name)
				mask &^= 1 << f.Bit
			}
		}
	}
	if mask != 0 {
		names = append(names, fmt.Sprintf("Unknown incompatible feature: %x", mask))
	}
	return names
}

// Shorthands for the arithmetic shared with pkg/check.
func ceilDiv(a, b uint64) uint64 { return arith.CeilDiv(a, b) }

func roundUp(a, b uint64) uint64 { return arith.RoundUp(a, b) }
