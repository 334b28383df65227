// Package zone is the zoned layer on top of pkg/image: the zoned header
// extension (magic 0x007a6264), the write-pointer table, the zone state
// machine with its open and active limits, and the zone operations of a
// host-managed zoned block device emulated in a qcow2 image.
//
// Offsets and lengths are bytes unless a name says sectors (512 bytes).
package zone

import (
	"encoding/binary"
	"fmt"

	"github.com/zqimg/zqimg/pkg/image"
)

// ExtMagic is the header extension magic of the zoned format.
const ExtMagic = image.ExtZoned

// ExtSize is the length of the zoned extension data in bytes.
const ExtSize = 56

// ModelHostManaged is the only zone model (byte 0 of the extension).
const ModelHostManaged = 1

// ConvBit marks a conventional zone in a write-pointer table entry; the
// other bits then hold the zone start.
const ConvBit = uint64(1) << 59

// MaxZones is the largest nr_zones: the table must stay below 4 GiB.
const MaxZones = (1<<32 - 1) / 8

// Defaults applied by create.
const (
	DefaultZoneSize       = 256 << 20
	DefaultMaxAppendBytes = 64 << 10
)

// Header mirrors the 56-byte zoned extension. All fields are big-endian on
// disk. Sizes are bytes.
type Header struct {
	Model             uint8
	Reserved          [3]byte
	ZoneSize          uint64
	ZoneCapacity      uint64
	ConventionalZones uint32
	NrZones           uint32
	MaxActiveZones    uint32 // 0 = no limit
	MaxOpenZones      uint32 // 0 = no limit
	MaxAppendBytes    uint32
	MetaSize          uint64 // bytes of the write-pointer table: 8 × NrZones
	MetaOffset        uint64 // host offset of the write-pointer table
}

// ParseHeader decodes the zoned extension data.
func ParseHeader(b []byte) (*Header, error) {
	if len(b) != ExtSize {
		return nil, &FieldError{Field: "length", Msg: fmt.Sprintf("zoned extension is %d bytes, expected %d", len(b), ExtSize)}
	}
	be := binary.BigEndian
	h := &Header{
		Model:             b[0],
		ZoneSize:          be.Uint64(b[4:]),
		ZoneCapacity:      be.Uint64(b[12:]),
		ConventionalZones: be.Uint32(b[20:]),
		NrZones:           be.Uint32(b[24:]),
		MaxActiveZones:    be.Uint32(b[28:]),
		MaxOpenZones:      be.Uint32(b[32:]),
		MaxAppendBytes:    be.Uint32(b[36:]),
		MetaSize:          be.Uint64(b[40:]),
		MetaOffset:        be.Uint64(b[48:]),
	}
	copy(h.Reserved[:], b[1:4])
	return h, nil
}

// Marshal encodes the extension data (56 bytes).
func (h *Header) Marshal() []byte {
	b := make([]byte, ExtSize)
	be := binary.BigEndian
	b[0] = h.Model
	copy(b[1:4], h.Reserved[:])
	be.PutUint64(b[4:], h.ZoneSize)
	be.PutUint64(b[12:], h.ZoneCapacity)
	be.PutUint32(b[20:], h.ConventionalZones)
	be.PutUint32(b[24:], h.NrZones)
	be.PutUint32(b[28:], h.MaxActiveZones)
	be.PutUint32(b[32:], h.MaxOpenZones)
	be.PutUint32(b[36:], h.MaxAppendBytes)
	be.PutUint64(b[40:], h.MetaSize)
	be.PutUint64(b[48:], h.MetaOffset)
	return b
}

// FieldError reports an invalid zoned extension field, naming the field
// and the values involved.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return "zoned extension: " + e.Msg }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Validate checks the fields against each other and against the virtual
// disk size in bytes, with the rules create enforces.
func (h *Header) Validate(virtualSize uint64) error {
	switch h.Model {
	case ModelHostManaged:
	case 0:
		return fieldErr("zoned", "zone model is 0 (not zoned) but the zoned format bit is set")
	default:
		return fieldErr("zoned", "unknown zone model %d (only 1, host-managed, is supported)", h.Model)
	}
	if h.Reserved != [3]byte{} {
		return fieldErr("reserved", "reserved bytes 1-3 are %x, must be zero", h.Reserved[:])
	}
	if h.ZoneSize < 512 || h.ZoneSize&(h.ZoneSize-1) != 0 {
		return fieldErr("zone_size", "zone_size %d is not a power of two of at least 512", h.ZoneSize)
	}
	if h.ZoneCapacity == 0 || h.ZoneCapacity > h.ZoneSize || h.ZoneCapacity%512 != 0 {
		return fieldErr("zone_capacity", "zone_capacity %d must be a non-zero multiple of 512 no larger than zone_size %d", h.ZoneCapacity, h.ZoneSize)
	}
	want := (virtualSize + h.ZoneSize - 1) / h.ZoneSize
	if uint64(h.NrZones) != want {
		return fieldErr("nr_zones", "nr_zones %d does not match the virtual size: %d bytes in zones of %d bytes make %d zones", h.NrZones, virtualSize, h.ZoneSize, want)
	}
	if h.NrZones == 0 || h.NrZones > MaxZones {
		return fieldErr("nr_zones", "nr_zones %d out of range (1 to %d)", h.NrZones, MaxZones)
	}
	if h.ConventionalZones >= h.NrZones {
		return fieldErr("conventional_zones", "conventional_zones %d must be less than nr_zones %d", h.ConventionalZones, h.NrZones)
	}
	if h.MaxActiveZones > h.NrZones {
		return fieldErr("max_active_zones", "max_active_zones %d exceeds nr_zones %d", h.MaxActiveZones, h.NrZones)
	}
	if seq := h.NrZones - h.ConventionalZones; h.MaxOpenZones > seq {
		return fieldErr("max_open_zones", "max_open_zones %d exceeds the %d sequential zones", h.MaxOpenZones, seq)
	}
	if h.MaxActiveZones != 0 && h.MaxOpenZones > h.MaxActiveZones {
		return fieldErr("max_open_zones", "max_open_zones %d exceeds max_active_zones %d", h.MaxOpenZones, h.MaxActiveZones)
	}
	if h.MaxAppendBytes%512 != 0 {
		return fieldErr("max_append_bytes", "max_append_bytes %d is not a multiple of 512", h.MaxAppendBytes)
	}
	if uint64(h.MaxAppendBytes)+512 >= h.ZoneCapacity {
		return fieldErr("max_append_bytes", "max_append_bytes %d plus 512 must be less than zone_capacity %d", h.MaxAppendBytes, h.ZoneCapacity)
	}
	if h.MetaSize != 8*uint64(h.NrZones) {
		return fieldErr("zonedmeta_size", "zonedmeta_size %d must be 8 × nr_zones = %d", h.MetaSize, 8*uint64(h.NrZones))
	}
	return nil
}

// ZoneStart returns the first byte of zone i.
func (h *Header) ZoneStart(i uint32) uint64 { return uint64(i) * h.ZoneSize }

// ZoneLen returns the length in bytes of zone i of a device of size bytes:
// zone_size, except for a last zone cut short by the device end.
func (h *Header) ZoneLen(i uint32, size uint64) uint64 {
	return min(h.ZoneSize, size-h.ZoneStart(i))
}

// InitialTable returns the write-pointer table of a fresh image: entry i is
// the zone start, with ConvBit on the conventional zones.
func (h *Header) InitialTable() []uint64 {
	t := make([]uint64, h.NrZones)
	for i := range t {
		t[i] = h.ZoneStart(uint32(i))
		if uint32(i) < h.ConventionalZones {
			t[i] |= ConvBit
		}
	}
	return t
}

// EncodeTable encodes write-pointer entries. Entries are little-endian: the
// reference implementation stores host-endian words and runs on x86-64.
func EncodeTable(t []uint64) []byte {
	b := make([]byte, 8*len(t))
	for i, v := range t {
		binary.LittleEndian.PutUint64(b[8*i:], v)
	}
	return b
}

// DecodeTable decodes little-endian write-pointer entries.
func DecodeTable(b []byte) []uint64 {
	t := make([]uint64, len(b)/8)
	for i := range t {
		t[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return t
}

// EntryProblem describes why a write-pointer table entry is impossible for
// zone i, or returns "" when the entry is valid. zoneLen is the zone's
// length (the last zone may be shorter than zone_size).
func (h *Header) EntryProblem(i uint32, entry uint64, zoneLen uint64) string {
	start := h.ZoneStart(i)
	conv := i < h.ConventionalZones
	if entry&ConvBit != 0 {
		if !conv {
			return fmt.Sprintf("zone %d is sequential but its entry 0x%x has the conventional bit", i, entry)
		}
		if entry&^ConvBit != start {
			return fmt.Sprintf("conventional zone %d entry 0x%x does not hold the zone start 0x%x", i, entry, start)
		}
		return ""
	}
	if conv {
		return fmt.Sprintf("zone %d is conventional but its entry 0x%x lacks the conventional bit", i, entry)
	}
	capEnd := start + min(h.ZoneCapacity, zoneLen)
	// A finish puts the write pointer at start + zone_size, also in a last
	// zone shorter than zone_size (the reference does so): that value
	// lies past the device end but marks the zone FULL.
	finished := start + h.ZoneSize
	switch {
	case entry == finished:
		return ""
	case entry < start || entry > start+zoneLen:
		return fmt.Sprintf("write pointer 0x%x of zone %d lies outside the zone [0x%x, 0x%x]", entry, i, start, start+zoneLen)
	case entry%512 != 0:
		return fmt.Sprintf("write pointer 0x%x of zone %d is not 512-byte aligned", entry, i)
	case entry > capEnd && entry != start+zoneLen:
		return fmt.Sprintf("write pointer 0x%x of zone %d lies between the capacity end 0x%x and the zone end 0x%x", entry, i, capEnd, start+zoneLen)
	}
	return ""
}
