package zone

import (
	"errors"
	"fmt"
	"strings"

	"github.com/zqimg/zqimg/pkg/image"
)

// ErrAmend reports limits that the image or its current zone state does
// not allow.
var ErrAmend = errors.New("zone limits refused")

// Limits are new zone limits; nil fields keep their value.
type Limits struct {
	MaxOpenZones   *uint64
	MaxActiveZones *uint64
	MaxAppendBytes *uint64
}

// Amend changes the zone limits of the zoned extension (qemu-img amend -o
// zone.max_open_zones=...,zone.max_active_zones=...,zone.max_append_bytes=...)
// and, with lazy non-nil, the lazy refcounts bit, in one atomic write.
//
// The values are validated as create validates them (values create clamps
// are clamped, with a warning returned), and against the zones now: an
// active limit below the number of active (CLOSED or open) zones, or an
// open limit below the open zones, is refused naming those zones. An open
// limit with no active limit (0) gets the active limit "number of
// sequential zones", as at create.
func (d *Device) Amend(l Limits, lazy *bool) (warnings []string, err error) {
	d.lock()
	defer d.unlock()
	if d.img.ReadOnly() {
		return nil, fmt.Errorf("amend: %w", image.ErrReadOnly)
	}
	if err := d.flush(); err != nil {
		return nil, err
	}
	if err := d.loadAll(); err != nil {
		return nil, err
	}
	var u image.HeaderUpdate
	if lazy != nil {
		hdr := d.img.Header()
		if hdr.Version < 3 {
			return nil, fmt.Errorf("Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)")
		}
		c := hdr.CompatibleFeatures &^ image.CompatLazyRefcounts
		if *lazy {
			c |= image.CompatLazyRefcounts
		}
		u.CompatibleFeatures = &c
	}
	var nh Header
	if l != (Limits{}) {
		if d.h == nil {
			return nil, fmt.Errorf("%w: the image is not zoned", ErrNotZoned)
		}
		nh = *d.h
		var w []string
		if w, err = d.newLimits(&nh, l); err != nil {
			return nil, err
		}
		warnings = w
		u.Extensions = []image.Extension{{Magic: ExtMagic, Data: nh.Marshal()}}
	}
	if err := d.img.UpdateHeader(u); err != nil {
		return nil, err
	}
	if l != (Limits{}) {
		d.h = &nh
		d.m.maxOpen, d.m.maxActive = nh.MaxOpenZones, nh.MaxActiveZones
	}
	return warnings, nil
}

// newLimits applies l to nh with create's rules and checks them against
// the zones' state.
func (d *Device) newLimits(nh *Header, l Limits) ([]string, error) {
	var warnings []string
	nr, seq := nh.NrZones, nh.NrZones-nh.ConventionalZones
	for _, o := range []struct {
		name string
		v    *uint64
	}{{"zone.max_open_zones", l.MaxOpenZones}, {"zone.max_active_zones", l.MaxActiveZones}, {"zone.max_append_bytes", l.MaxAppendBytes}} {
		if o.v != nil && *o.v > 1<<32-1 {
			return nil, fmt.Errorf("%w: %s %d is out of range (at most %d)", ErrAmend, o.name, *o.v, uint32(1<<32-1))
		}
	}
	if l.MaxAppendBytes != nil {
		ma := *l.MaxAppendBytes
		if ma%512 != 0 {
			return nil, fmt.Errorf("%w: zone.max_append_bytes %d is not a multiple of 512", ErrAmend, ma)
		}
		if ma+512 >= nh.ZoneCapacity {
			return nil, fmt.Errorf("%w: zone.max_append_bytes %d plus 512 must be less than zone.capacity %d", ErrAmend, ma, nh.ZoneCapacity)
		}
		nh.MaxAppendBytes = uint32(ma)
	}
	if l.MaxActiveZones != nil {
		a := *l.MaxActiveZones
		if a > uint64(nr) {
			warnings = append(warnings, fmt.Sprintf("zone.max_active_zones %d exceeds the number of zones %d; using %d", a, nr, nr))
			a = uint64(nr)
		}
		nh.MaxActiveZones = uint32(a)
	}
	if l.MaxOpenZones != nil {
		o := *l.MaxOpenZones
		if o > uint64(seq) {
			warnings = append(warnings, fmt.Sprintf("zone.max_open_zones %d exceeds the number of sequential zones %d; using %d", o, seq, seq))
			o = uint64(seq)
		}
		nh.MaxOpenZones = uint32(o)
	}
	if nh.MaxOpenZones != 0 && nh.MaxActiveZones == 0 {
		// As create: "no active limit" with an open limit is written as
		// the number of sequential zones, which the reference opens.
		nh.MaxActiveZones = seq
	}
	if nh.MaxActiveZones != 0 && nh.MaxOpenZones > nh.MaxActiveZones {
		warnings = append(warnings, fmt.Sprintf("zone.max_open_zones %d exceeds zone.max_active_zones %d; using %d", nh.MaxOpenZones, nh.MaxActiveZones, nh.MaxActiveZones))
		nh.MaxOpenZones = nh.MaxActiveZones
	}
	if a := nh.MaxActiveZones; a != 0 && d.m.active() > a {
		return nil, fmt.Errorf("%w: zone.max_active_zones %d is less than the %d zones active now (%s); finish or reset some of them first", ErrAmend, a, d.m.active(), d.zonesIn(CondClosed, CondImpOpen, CondExpOpen))
	}
	if o := nh.MaxOpenZones; o != 0 && d.m.nrImp+d.m.nrExp > o {
		return nil, fmt.Errorf("%w: zone.max_open_zones %d is less than the %d zones open now (%s)", ErrAmend, o, d.m.nrImp+d.m.nrExp, d.zonesIn(CondImpOpen, CondExpOpen))
	}
	if err := nh.Validate(uint64(d.Size())); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAmend, err)
	}
	return warnings, nil
}

// zonesIn names the zones in the given conditions ("zones 1 (CLOSED), 4
// (CLOSED)"), at most ten of them.
func (d *Device) zonesIn(conds ...Cond) string {
	var names []string
	n := 0
	for i := d.m.conv; i < d.m.nr; i++ {
		c := d.m.cond(i)
		for _, want := range conds {
			if c == want {
				n++
				if len(names) < 10 {
					names = append(names, fmt.Sprintf("%d (%s)", i, c))
				}
			}
		}
	}
	s := "zones " + strings.Join(names, ", ")
	if n > len(names) {
		s += fmt.Sprintf(" and %d more", n-len(names))
	}
	return s
}
