package zone

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/zqimg/zqimg/pkg/image"
)

// maxInspectProblems bounds the write-pointer problems an Inspection
// lists one by one; the others are summed up in one line.
const maxInspectProblems = 8

// Inspection is what a lenient, read-only reading of an image's zoned
// metadata found: the configuration as stored, whether it is usable, and
// every problem, instead of the first error Open stops at. It is what
// `info` shows; `check` is where problems are repaired.
type Inspection struct {
	// Bit reports the incompatible feature bit 5 (zoned format);
	// Present, the zoned extension.
	Bit, Present bool
	// Header is the extension as stored (nil when it is missing or
	// cannot be decoded); its fields may be invalid.
	Header *Header
	// Conditions counts the zones in each condition, from the write
	// pointers that are possible (an image just opened has no open
	// zone). Invalid counts the zones whose entry is impossible.
	Conditions map[Cond]uint32
	Invalid    uint32
	// ByteSwapped reports a table stored big-endian (its entries are
	// only possible read so); the conditions are then counted from the
	// big-endian entries.
	ByteSwapped bool
	// Problems describes each problem found, in the order found.
	Problems []string
	// Faults is the injected zone fault plan (nil when none is stored or
	// it is damaged: a problem then says why); the faulty zones are
	// counted as CondReadOnly and CondOffline.
	Faults *FaultPlan
}

// Zoned reports whether the image claims the zoned format at all.
func (in *Inspection) Zoned() bool { return in.Bit || in.Present }

// Corrupt reports whether a problem was found.
func (in *Inspection) Corrupt() bool { return len(in.Problems) > 0 }

// Inspect reads the zoned extension and the write-pointer table of img
// without refusing anything: each problem New would stop at is recorded
// and the reading goes on where it can. It returns nil for an image that
// is not zoned (neither the feature bit nor the extension). It only
// reads; an I/O error is returned as such.
func Inspect(img *image.Image) (*Inspection, error) {
	hdr := img.Header()
	ext, has := img.Extension(ExtMagic)
	in := &Inspection{Bit: hdr.IncompatibleFeatures&image.IncompatZoned != 0, Present: has}
	if !in.Zoned() {
		return nil, nil
	}
	problem := func(format string, args ...any) {
		in.Problems = append(in.Problems, fmt.Sprintf(format, args...))
	}
	if !has {
		problem("incompatible feature bit 5 (zoned format) is set but the zoned extension 0x%08x is missing", ExtMagic)
		return in, nil
	}
	if !in.Bit {
		problem("the zoned extension 0x%08x is present but incompatible feature bit 5 (zoned format) is clear", ExtMagic)
	}
	if hdr.Version < 3 {
		problem("zoned format in a version %d image (version 3 is required)", hdr.Version)
	}
	h, err := ParseHeader(ext)
	if err != nil {
		problem("%s", fieldMsgOf(err))
		return in, nil
	}
	in.Header = h
	valid := h.Validate(hdr.Size)
	if valid != nil {
		problem("%s", fieldMsgOf(valid))
	}
	if err := checkTablePlacement(img, h); err != nil {
		problem("%s", fieldMsgOf(err))
		return in, nil
	}
	if valid != nil {
		// Without a valid geometry the entries cannot be judged.
		return in, nil
	}
	if data, ok := img.Extension(FaultExtMagic); ok {
		p, err := ParseFaultExtension(data)
		if err == nil {
			err = p.Validate(h.NrZones)
		}
		if err != nil {
			problem("zone fault plan: %v", err)
		} else {
			in.Faults = p
		}
	}
	raw := make([]byte, h.MetaSize)
	if err := img.HostReadAt(raw, int64(h.MetaOffset)); err != nil {
		return nil, fmt.Errorf("reading the write-pointer table: %w", err)
	}
	in.countTable(h, hdr.Size, raw)
	return in, nil
}

// countTable judges the entries of raw (a table of a valid h) and counts
// the conditions.
func (in *Inspection) countTable(h *Header, size uint64, raw []byte) {
	zoneLen := func(i uint32) uint64 { return h.ZoneLen(i, size) }
	judge := func(bo binary.ByteOrder) (bad uint32, first []string) {
		for i := uint32(0); i < h.NrZones; i++ {
			if p := h.EntryProblem(i, bo.Uint64(raw[8*i:]), zoneLen(i)); p != "" {
				if bad < maxInspectProblems {
					first = append(first, p)
				}
				bad++
			}
		}
		return bad, first
	}
	var bo binary.ByteOrder = binary.LittleEndian
	bad, first := judge(bo)
	if bad > 0 {
		if beBad, _ := judge(binary.BigEndian); beBad == 0 {
			in.ByteSwapped = true
			in.Problems = append(in.Problems, fmt.Sprintf("the write-pointer table is stored byte-swapped (big-endian entries): read little-endian, %d of its %d entries are impossible", bad, h.NrZones))
			bo, bad, first = binary.BigEndian, 0, nil
		}
	}
	in.Problems = append(in.Problems, first...)
	if bad > maxInspectProblems {
		in.Problems = append(in.Problems, fmt.Sprintf("... and %d more impossible write pointers", bad-maxInspectProblems))
	}
	in.Invalid = bad
	in.Conditions = map[Cond]uint32{}
	for i := uint32(0); i < h.NrZones; i++ {
		e := bo.Uint64(raw[8*i:])
		zl := zoneLen(i)
		if h.EntryProblem(i, e, zl) != "" {
			continue
		}
		start := h.ZoneStart(i)
		if f := in.Faults.Cond(i); f != 0 {
			in.Conditions[f]++
			continue
		}
		switch wp := e &^ ConvBit; {
		case i < h.ConventionalZones:
			in.Conditions[CondNotWP]++
		case wp == start:
			in.Conditions[CondEmpty]++
		case wp >= start+min(h.ZoneCapacity, zl):
			in.Conditions[CondFull]++
		default:
			in.Conditions[CondClosed]++
		}
	}
}

// fieldMsgOf returns the message of a zoned extension error without the
// "zoned extension: " prefix of a FieldError.
func fieldMsgOf(err error) string {
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe.Msg
	}
	return err.Error()
}
