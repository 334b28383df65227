package zone

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
	"syscall"

	"github.com/zqimg/zqimg/pkg/image"
)

// FaultExtMagic is the header extension holding a zone fault plan: the
// zones injected READ ONLY or OFFLINE for testing (conditions a device can
// have but the zoned format does not persist). It is a compatible
// extension: QEMU ignores it and preserves it when it rewrites the header.
// The value spells "zqFT".
const FaultExtMagic uint32 = 0x7a714654

// MaxFaultRanges is the number of fault ranges a plan holds: the
// extension has a fixed size, so that it fits in the smallest header
// cluster (512 bytes) beside the zoned extension and is updated in place.
const MaxFaultRanges = 8

// Fault extension layout (big-endian):
//
//	0   u32  version (1)
//	4   u32  reserved (0)
//	8   slot 0
//	8+S slot 1
//
// Each slot (S = faultSlotSize bytes) holds one version of the plan:
//
//	0   u64  generation (the slot with the higher valid generation wins)
//	8   u32  number of ranges n (≤ MaxFaultRanges)
//	12  u32  CRC-32C of bytes 0-11 and of the range array
//	16  MaxFaultRanges × { u32 first zone, u32 zone count, u8 condition
//	    (13 read-only, 15 offline), 3 bytes reserved }
//
// An update writes the slot that does not hold the current plan, with the
// next generation, and syncs: a torn write fails the CRC and the previous
// plan stays in force.
const (
	faultVersion   = 1
	faultRangeSize = 12
	faultSlotSize  = 16 + MaxFaultRanges*faultRangeSize
	// FaultExtSize is the length of the extension data in bytes.
	FaultExtSize = 8 + 2*faultSlotSize
)

// FaultRange puts Count zones from zone First in condition Cond
// (CondReadOnly or CondOffline).
type FaultRange struct {
	First, Count uint32
	Cond         Cond
}

// FaultPlan is the set of injected zone faults, as ranges sorted by first
// zone and not overlapping.
type FaultPlan struct {
	Generation uint64
	Ranges     []FaultRange
}

// Cond returns the injected condition of zone i (CondReadOnly or
// CondOffline), or 0 when the zone is healthy.
func (p *FaultPlan) Cond(i uint32) Cond {
	if p == nil {
		return 0
	}
	for _, r := range p.Ranges {
		if i >= r.First && i-r.First < r.Count {
			return r.Cond
		}
	}
	return 0
}

// With returns the plan with zones [first, first+count) set to cond
// (CondReadOnly, CondOffline, or 0 to clear them), adjacent ranges of the
// same condition merged. It fails when the plan would need more than
// MaxFaultRanges ranges.
func (p *FaultPlan) With(first, count uint32, cond Cond) (*FaultPlan, error) {
	if cond != 0 && cond != CondReadOnly && cond != CondOffline {
		return nil, fmt.Errorf("zone fault condition %d: only read-only (13) and offline (15) can be injected", cond)
	}
	end := uint64(first) + uint64(count)
	var out []FaultRange
	if p != nil {
		for _, r := range p.Ranges {
			rEnd := uint64(r.First) + uint64(r.Count)
			// Keep the parts of r outside [first, end).
			if uint64(r.First) < uint64(first) {
				out = append(out, FaultRange{r.First, uint32(min(rEnd, uint64(first)) - uint64(r.First)), r.Cond})
			}
			if rEnd > end {
				lo := max(uint64(r.First), end)
				out = append(out, FaultRange{uint32(lo), uint32(rEnd - lo), r.Cond})
			}
		}
	}
	if cond != 0 && count > 0 {
		out = append(out, FaultRange{first, count, cond})
	}
	slices.SortFunc(out, func(a, b FaultRange) int { return int(int64(a.First) - int64(b.First)) })
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && merged[n-1].Cond == r.Cond && uint64(merged[n-1].First)+uint64(merged[n-1].Count) == uint64(r.First) {
			merged[n-1].Count += r.Count
			continue
		}
		merged = append(merged, r)
	}
	if len(merged) > MaxFaultRanges {
		return nil, fmt.Errorf("the zone fault plan would need %d ranges; it holds at most %d (clear some first)", len(merged), MaxFaultRanges)
	}
	np := &FaultPlan{Ranges: merged}
	if p != nil {
		np.Generation = p.Generation
	}
	return np, nil
}

// Validate checks the plan against a device of nrZones zones, of which
// the first conv are conventional.
func (p *FaultPlan) Validate(nrZones uint32) error {
	var prevEnd uint64
	for i, r := range p.Ranges {
		if r.Cond != CondReadOnly && r.Cond != CondOffline {
			return fmt.Errorf("zone fault range %d: condition %d (only 13, read-only, and 15, offline)", i, r.Cond)
		}
		end := uint64(r.First) + uint64(r.Count)
		if r.Count == 0 || end > uint64(nrZones) {
			return fmt.Errorf("zone fault range %d: zones %d+%d outside the %d zones", i, r.First, r.Count, nrZones)
		}
		if i > 0 && uint64(r.First) < prevEnd {
			return fmt.Errorf("zone fault range %d overlaps the one before or is out of order", i)
		}
		prevEnd = end
	}
	return nil
}

// ParseFaultExtension decodes the fault extension data and returns the
// plan of its valid slot with the higher generation. A slot whose CRC does
// not match (a torn update) is ignored; when neither is valid, the
// extension is damaged.
func ParseFaultExtension(b []byte) (*FaultPlan, error) {
	if len(b) != FaultExtSize {
		return nil, fmt.Errorf("zone fault extension is %d bytes, expected %d", len(b), FaultExtSize)
	}
	if v := binary.BigEndian.Uint32(b); v != faultVersion {
		return nil, fmt.Errorf("zone fault extension version %d (this zqimg reads version %d)", v, faultVersion)
	}
	var best *FaultPlan
	for s := 0; s < 2; s++ {
		p, ok := parseFaultSlot(b[8+s*faultSlotSize : 8+(s+1)*faultSlotSize])
		if ok && (best == nil || p.Generation > best.Generation) {
			best = p
		}
	}
	if best == nil {
		return nil, fmt.Errorf("zone fault extension: neither slot holds a valid plan (CRC mismatch)")
	}
	return best, nil
}

func parseFaultSlot(b []byte) (*FaultPlan, bool) {
	be := binary.BigEndian
	n := be.Uint32(b[8:])
	if n > MaxFaultRanges || be.Uint32(b[12:]) != slotCRC(b) {
		return nil, false
	}
	p := &FaultPlan{Generation: be.Uint64(b)}
	for i := uint32(0); i < n; i++ {
		e := b[16+i*faultRangeSize:]
		p.Ranges = append(p.Ranges, FaultRange{First: be.Uint32(e), Count: be.Uint32(e[4:]), Cond: Cond(e[8])})
	}
	return p, true
}

// slotCRC is the CRC-32C of a slot without its CRC field.
func slotCRC(b []byte) uint32 {
	c := crc32.Update(0, castagnoli, b[:12])
	return crc32.Update(c, castagnoli, b[16:faultSlotSize])
}

// marshalFaultSlot encodes p as a slot.
func marshalFaultSlot(p *FaultPlan) []byte {
	be := binary.BigEndian
	b := make([]byte, faultSlotSize)
	be.PutUint64(b, p.Generation)
	be.PutUint32(b[8:], uint32(len(p.Ranges)))
	for i, r := range p.Ranges {
		e := b[16+i*faultRangeSize:]
		be.PutUint32(e, r.First)
		be.PutUint32(e[4:], r.Count)
		e[8] = byte(r.Cond)
	}
	be.PutUint32(b[12:], slotCRC(b))
	return b
}

// NewFaultExtension returns the data of a fault extension holding p in
// slot 0 (slot 1 empty and invalid).
func NewFaultExtension(p *FaultPlan) []byte {
	b := make([]byte, FaultExtSize)
	binary.BigEndian.PutUint32(b, faultVersion)
	copy(b[8:], marshalFaultSlot(p))
	return b
}

// faultSlotUpdate returns where (offset in the extension data) and what to
// write to store p, with the next generation, in the slot of ext that does
// not hold the current plan.
func faultSlotUpdate(ext []byte, p *FaultPlan) (int, []byte) {
	gen := func(s int) (uint64, bool) {
		b := ext[8+s*faultSlotSize : 8+(s+1)*faultSlotSize]
		if q, ok := parseFaultSlot(b); ok {
			return q.Generation, true
		}
		return 0, false
	}
	g0, ok0 := gen(0)
	g1, ok1 := gen(1)
	slot, next := 1, g0+1 // slot 0 holds the current plan
	switch {
	case ok1 && (!ok0 || g1 > g0):
		slot, next = 0, g1+1
	case !ok0 && !ok1:
		slot, next = 0, 1
	}
	q := *p
	q.Generation = next
	return 8 + slot*faultSlotSize, marshalFaultSlot(&q)
}

// InjectFault opens the zoned image at path for writing (taking its lock),
// sets cond (CondReadOnly, CondOffline, or 0 to clear) on the zones of
// [off, off+length) and closes it. See Device.SetFault.
func InjectFault(path string, opts image.Options, cond Cond, off, length int64) error {
	opts.ReadOnly = false
	d, err := Open(path, opts)
	if err != nil {
		return err
	}
	if err := d.SetFault(cond, off, length); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

// ReadFaults opens the zoned image at path read-only and returns its
// zoned header and fault plan (nil when none was ever set).
func ReadFaults(path string, opts image.Options) (*Header, *FaultPlan, error) {
	opts.ReadOnly = true
	d, err := Open(path, opts)
	if err != nil {
		return nil, nil, err
	}
	defer d.Close()
	if !d.Zoned() {
		return nil, nil, zerr(ErrNotZoned, syscall.ENOTSUP, "zone faults: %s", ErrNotZoned)
	}
	return d.Header(), d.Faults(), nil
}
