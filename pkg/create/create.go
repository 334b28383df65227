package create

import (
	"fmt"
	"math/big"
	"math/bits"
	"slices"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// Spec is a validated description of a new image.
type Spec struct {
	Image image.CreateOptions
	Zone  *zone.Header // nil for a plain image; MetaOffset is set at layout
	// Warnings lists the values that were clamped, one sentence each.
	Warnings []string
}

// ValidationError is an option value or combination that cannot be
// created. Option names the -o option at fault.
type ValidationError struct {
	Option string
	Msg    string
}

func (e *ValidationError) Error() string { return e.Msg }

func verr(option, format string, args ...any) error {
	return &ValidationError{Option: option, Msg: fmt.Sprintf(format, args...)}
}

// Resolve applies defaults and checks the options against each other with
// qemu-img's rules and the zoned rules of docs/zones.md. Zone limits the
// reference would clamp are clamped, with a warning in Spec.Warnings.
func Resolve(o *Options) (*Spec, error) {
	s := &Spec{}
	io := &s.Image
	// Values qemu-img's option parser refuses (QAPI enums), in the order
	// it visits them: version (compat), preallocation, compression-type.
	switch c := o.str("compat", "1.1"); c {
	case "1.1", "v3":
		io.Version = 3
	case "0.10", "v2":
		io.Version = 2
	default:
		return nil, verr("compat", "Parameter 'version' does not accept value '%s'", c)
	}
	p := o.str("preallocation", "off")
	prealloc, ok := image.ParsePrealloc(p)
	if !ok {
		return nil, verr("preallocation", "Parameter 'preallocation' does not accept value '%s'", p)
	}
	io.Preallocation = prealloc
	ct := o.str("compression_type", "zlib")
	if ct != "zlib" && ct != "zstd" {
		return nil, verr("compression_type", "Parameter 'compression-type' does not accept value '%s'", ct)
	}
	v3 := io.Version == 3
	// Then qcow2_co_create's checks, in its order.
	if o.on("extended_l2") && !v3 {
		return nil, verr("extended_l2", "Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)")
	}
	cs := o.num("cluster_size", 65536)
	if cs < 512 || cs > 2<<20 || cs&(cs-1) != 0 {
		return nil, verr("cluster_size", "Cluster size must be a power of two between 512 and 2048k")
	}
	io.ClusterBits = uint32(log2(cs))
	if o.on("extended_l2") {
		if cs < 16384 {
			return nil, verr("extended_l2", "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
		}
		io.ExtendedL2 = true
	}
	if _, _, set := o.Backing(); set && prealloc != image.PreallocOff && !io.ExtendedL2 {
		return nil, verr("preallocation", "Backing file and preallocation can only be used at the same time if extended_l2 is on")
	}
	if o.on("lazy_refcounts") {
		if !v3 {
			return nil, verr("lazy_refcounts", "Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)")
		}
		io.LazyRefcounts = true
	}
	rb := o.num("refcount_bits", 16)
	if rb == 0 || rb > 64 || rb&(rb-1) != 0 {
		return nil, verr("refcount_bits", "Refcount width must be a power of two and may not exceed 64 bits")
	}
	if !v3 && rb != 16 {
		return nil, verr("refcount_bits", "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)")
	}
	io.RefcountOrder = uint32(log2(rb))
	if ct == "zstd" {
		if !v3 {
			return nil, verr("compression_type", "Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)")
		}
		io.CompressionType = image.CompressionZstd
	}
	io.Size = o.num("size", 0)
	l2Entries := cs / 8
	if io.ExtendedL2 {
		l2Entries = cs / 16
	}
	if io.Size > 1<<62 || (io.Size+cs*l2Entries-1)/(cs*l2Entries)*8 > image.MaxL1Bytes {
		return nil, verr("size", "The image size is too large for file format 'qcow2' (try using a larger cluster size)")
	}
	if err := resolveZone(o, s); err != nil {
		return nil, err
	}
	if err := resolveBacking(o, s); err != nil {
		return nil, err
	}
	if o.on("encryption") {
		// Legacy AES encryption (crypt_method 1): nothing but the header
		// field is written; the key is derived from the secret when the
		// image is opened, which zqimg does not do (it refuses encrypted
		// images), so create is all it supports.
		if s.Zone != nil {
			return nil, verr("encryption", "a zoned image cannot be encrypted")
		}
		if io.Preallocation != image.PreallocOff {
			return nil, verr("encryption", "zqimg cannot preallocate an encrypted image (preallocation=%s)", io.Preallocation)
		}
		id := o.str("encrypt.key-secret", "")
		if !o.has("encrypt.key-secret") {
			return nil, verr("encryption", "Parameter 'encrypt.key-secret' is required for cipher")
		}
		if !slices.Contains(o.secrets, id) {
			return nil, verr("encryption", "No secret with id '%s'", id)
		}
		io.CryptMethod = image.CryptAES
	}
	return s, nil
}

var zoneOptions = []string{"zone.size", "zone.capacity", "zone.conventional_zones",
	"zone.max_append_bytes", "zone.max_active_zones", "zone.max_open_zones"}

func resolveZone(o *Options, s *Spec) error {
	if !o.has("zone.mode") {
		for _, n := range zoneOptions {
			if o.has(n) {
				return verr(n, "%s requires zone.mode=host-managed", n)
			}
		}
		return nil
	}
	if m := o.str("zone.mode", ""); m != "host-managed" {
		return verr("zone.mode", "Parameter 'zone.mode' does not accept value '%s' (the only zone model is host-managed)", m)
	}
	if s.Image.Version != 3 {
		return verr("zone.mode", "zone.mode=host-managed requires compat=1.1 (zoned images are qcow2 version 3)")
	}
	if p := s.Image.Preallocation; p != image.PreallocOff {
		return verr("preallocation", "zone.mode=host-managed does not support preallocation=%s: zoned images are created sparse (their zones are allocated as they are written)", p)
	}
	h, err := zoneGeometry(o, s.Image.Size)
	if err != nil {
		return err
	}
	ma, err := maxAppend(o, h.ZoneCapacity, s)
	if err != nil {
		return err
	}
	h.MaxAppendBytes = uint32(ma)
	if err := zoneLimits(o, h, s); err != nil {
		return err
	}
	s.Zone = h
	s.Image.Incompatible |= image.IncompatZoned
	s.Image.Tables = []image.Table{{
		Data: zone.EncodeTable(h.InitialTable()),
		Extension: func(off uint64) image.Extension {
			h.MetaOffset = off
			return image.Extension{Magic: zone.ExtMagic, Data: h.Marshal()}
		},
	}}
	return nil
}

// zoneGeometry checks zone.size, zone.capacity and zone.conventional_zones
// against the virtual size (bytes) and returns the zoned header they make
// (limits and append size not set).
func zoneGeometry(o *Options, size uint64) (*zone.Header, error) {
	zs := o.num("zone.size", zone.DefaultZoneSize)
	if zs == 0 {
		return nil, verr("zone.size", "zone.size must not be 0")
	}
	if zs < 512 || zs&(zs-1) != 0 {
		return nil, verr("zone.size", "zone.size %d must be a power of two of at least 512 bytes", zs)
	}
	if size == 0 {
		return nil, verr("size", "a zoned image needs a size of at least one byte (size=0)")
	}
	nr := (size + zs - 1) / zs
	if nr > zone.MaxZones {
		return nil, verr("zone.size", "size %d in zones of zone.size %d makes %d zones; at most %d are allowed", size, zs, nr, zone.MaxZones)
	}
	// A write-pointer entry holds a byte offset below 2^59 (bit 59 marks a
	// conventional zone); the largest is that of a finished last zone, its
	// start plus zone.size.
	if end := nr * zs; end/zs != nr || end > MaxZonedEnd {
		return nil, verr("size", "size %d in %d zones of zone.size %d ends at byte %s; a zoned image must end below 2^59 = %d bytes (write pointers hold 59 bits; bit 59 marks a conventional zone)", size, nr, zs, zonedEnd(nr, zs), uint64(MaxZonedEnd)+1)
	}
	capacity := o.num("zone.capacity", zs)
	if capacity > zs {
		return nil, verr("zone.capacity", "zone.capacity %d exceeds zone.size %d", capacity, zs)
	}
	if capacity == 0 || capacity%512 != 0 {
		return nil, verr("zone.capacity", "zone.capacity %d must be a non-zero multiple of 512", capacity)
	}
	conv := o.num("zone.conventional_zones", 0)
	if conv >= nr {
		return nil, verr("zone.conventional_zones", "zone.conventional_zones %d must be less than the number of zones %d (size %d / zone.size %d)", conv, nr, size, zs)
	}
	return &zone.Header{
		Model:             zone.ModelHostManaged,
		ZoneSize:          zs,
		ZoneCapacity:      capacity,
		ConventionalZones: uint32(conv),
		NrZones:           uint32(nr),
		MetaSize:          8 * nr,
	}, nil
}

// zoneLimits sets h's open and active limits from zone.max_active_zones
// and zone.max_open_zones, clamping (with a warning in s) the values the
// reference clamps. An open limit without an active limit (0) gets the
// active limit "number of sequential zones" (no limit in effect), which
// the reference can open (internal/refrules).
func zoneLimits(o *Options, h *zone.Header, s *Spec) error {
	for _, n := range []string{"zone.max_active_zones", "zone.max_open_zones"} {
		if v := o.num(n, 0); v > 1<<32-1 {
			return verr(n, "%s %d is out of range (at most %d)", n, v, uint32(1<<32-1))
		}
	}
	nr := uint64(h.NrZones)
	seq := nr - uint64(h.ConventionalZones)
	active := o.num("zone.max_active_zones", 0)
	if active > nr {
		s.Warnings = append(s.Warnings, fmt.Sprintf("zone.max_active_zones %d exceeds the number of zones %d; using %d", active, nr, nr))
		active = nr
	}
	open := o.num("zone.max_open_zones", active)
	if o.has("zone.max_open_zones") {
		if open > seq {
			s.Warnings = append(s.Warnings, fmt.Sprintf("zone.max_open_zones %d exceeds the number of sequential zones %d; using %d", open, seq, seq))
			open = seq
		}
		if active != 0 && open > active {
			s.Warnings = append(s.Warnings, fmt.Sprintf("zone.max_open_zones %d exceeds zone.max_active_zones %d; using %d", open, active, active))
			open = active
		}
	} else {
		open = min(open, seq)
	}
	if open != 0 && active == 0 {
		// The reference refuses to open an image whose open limit exceeds
		// its active limit, 0 included: "no active limit" is written as
		// the number of sequential zones, which can never all be
		// exceeded, so the meaning is the same.
		active = seq
	}
	h.MaxActiveZones, h.MaxOpenZones = uint32(active), uint32(open)
	return nil
}

// MaxZonedEnd is the largest value of nr_zones × zone_size: every write
// pointer, up to the end of a finished last zone, stays below 2^59.
const MaxZonedEnd = 1<<59 - 1

// MinAppendCapacity is the smallest zone capacity that admits a zone
// append: max_append_bytes must be a non-zero multiple of 512 with
// max_append_bytes + 512 < zone.capacity, so the capacity needs 512 + 512
// + 512 bytes. With zone.capacity = zone.size (a power of two) the
// smallest zone size is 2 KiB.
const MinAppendCapacity = 1536

// maxAppend returns zone.max_append_bytes: the given value, checked, or
// the 64 KiB default, or, when the capacity is too small for the default,
// the largest valid value (with a note in s.Warnings).
func maxAppend(o *Options, capacity uint64, s *Spec) (uint64, error) {
	if !o.has("zone.max_append_bytes") {
		ma := uint64(zone.DefaultMaxAppendBytes)
		if ma+512 < capacity {
			return ma, nil
		}
		if capacity < MinAppendCapacity {
			return 0, verr("zone.capacity", "zone.capacity %d is too small for zone append: zone.max_append_bytes must be a non-zero multiple of 512 with zone.max_append_bytes + 512 < zone.capacity, so zone.capacity must be at least %d (zone.size at least 2048)", capacity, MinAppendCapacity)
		}
		ma = capacity - 1024 // capacity is a multiple of 512
		s.Warnings = append(s.Warnings, fmt.Sprintf("zone.max_append_bytes defaults to %d, which zone.capacity %d does not allow (it must be less than the capacity minus 512); using %d", zone.DefaultMaxAppendBytes, capacity, ma))
		return ma, nil
	}
	ma := o.num("zone.max_append_bytes", 0)
	if ma == 0 {
		return 0, verr("zone.max_append_bytes", "zone.max_append_bytes must not be 0 (zone append would always fail); the smallest value is 512")
	}
	if ma > 1<<32-1 {
		return 0, verr("zone.max_append_bytes", "zone.max_append_bytes %d is out of range (the field holds at most %d)", ma, uint32(1<<32-1))
	}
	if ma%512 != 0 {
		return 0, verr("zone.max_append_bytes", "zone.max_append_bytes %d is not a multiple of 512", ma)
	}
	if ma+512 >= capacity {
		return 0, verr("zone.max_append_bytes", "zone.max_append_bytes %d plus 512 must be less than zone.capacity %d", ma, capacity)
	}
	return ma, nil
}

// zonedEnd returns nr × zs in decimal, also when it overflows 64 bits.
func zonedEnd(nr, zs uint64) string {
	hi, lo := bits.Mul64(nr, zs)
	if hi == 0 {
		return fmt.Sprint(lo)
	}
	return new(big.Int).Add(new(big.Int).Lsh(new(big.Int).SetUint64(hi), 64), new(big.Int).SetUint64(lo)).String()
}

// log2 returns the base-2 logarithm of a power of two.
func log2(v uint64) int { return bits.Len64(v) - 1 }
