package zone

import (
	"errors"
	"fmt"

	"github.com/zqimg/zqimg/pkg/image"
)

// ErrResize reports a resize the zone rules do not allow.
var ErrResize = errors.New("zoned resize refused")

// Resize changes the device size to size bytes (qemu-img resize). A plain
// image is resized as qcow2 allows; shrink must be set to make it smaller.
//
// A zoned image grows and shrinks by whole zones: size must be a multiple
// of zone.size. New zones are sequential and EMPTY; shrinking may only
// remove trailing sequential zones that are EMPTY, and must leave the open
// and active limits within the number of zones. An active limit of at
// least the number of sequential zones (no limit in effect) becomes the
// new number of sequential zones. No existing zone changes condition: a
// FULL short last zone that grows stays FULL. The write-pointer table
// is rewritten at a new place (the extension's nr_zones, zonedmeta_size
// and zonedmeta_offset updated) in the same atomic header write that
// switches the size and the L1 table.
func (d *Device) Resize(size uint64, shrink bool) error {
	return d.ResizePrealloc(size, shrink, image.PreallocOff)
}

// ErrZonedPrealloc refuses preallocation on a zoned image.
var ErrZonedPrealloc = fmt.Errorf("%w: a zoned image cannot be preallocated (its zones are allocated as they are written); use --preallocation=off", ErrResize)

// ResizePrealloc is Resize with the new area of a plain image allocated
// with mode (qemu-img resize --preallocation); a zoned image refuses any
// mode but off.
func (d *Device) ResizePrealloc(size uint64, shrink bool, mode image.PreallocMode) error {
	d.lock()
	defer d.unlock()
	if err := d.flush(); err != nil {
		return err
	}
	old := uint64(d.Size())
	if d.h == nil {
		return d.img.Resize(size, image.ResizeOptions{Shrink: shrink, Preallocation: mode})
	}
	if mode != image.PreallocOff {
		return ErrZonedPrealloc
	}
	if size%512 != 0 {
		return image.ErrSizeUnaligned
	}
	if size < old && !shrink {
		return image.ErrShrinkNotAllowed
	}
	if err := d.loadAll(); err != nil {
		return err
	}
	h := d.h
	if size%h.ZoneSize != 0 {
		return fmt.Errorf("%w: the new size %d is not a whole number of zones (zone.size %d): a zoned image grows and shrinks by whole zones", ErrResize, size, h.ZoneSize)
	}
	nr64 := size / h.ZoneSize
	if nr64 > MaxZones {
		return fmt.Errorf("%w: the new size makes %d zones, more than %d", ErrResize, nr64, MaxZones)
	}
	if size > 1<<59 {
		return fmt.Errorf("%w: zone starts must stay below 2^59 bytes (write pointers are 59-bit)", ErrResize)
	}
	nr := uint32(nr64)
	if nr == d.m.nr && size == old {
		return nil
	}
	for i := nr; i < d.m.nr; i++ {
		switch {
		case i < d.m.conv:
			return fmt.Errorf("%w: shrinking to %d zones would remove conventional zone %d", ErrResize, nr, i)
		case d.m.cond(i) != CondEmpty:
			return fmt.Errorf("%w: shrinking to %d zones would remove zone %d, which is %s (write pointer 0x%x); only EMPTY zones can be removed", ErrResize, nr, i, d.m.cond(i), d.m.wp[i])
		}
	}
	nh := *h
	nh.NrZones = nr
	nh.MetaSize = 8 * uint64(nr)
	if oldSeq := h.NrZones - h.ConventionalZones; nh.MaxActiveZones != 0 && nh.MaxActiveZones >= oldSeq {
		// An active limit of at least every sequential zone is no limit
		// (it is how an open limit without an active limit is written,
		// see create): it stays so, as the new number of sequential zones.
		nh.MaxActiveZones = nr - nh.ConventionalZones
	}
	if nh.MaxActiveZones > nr {
		return fmt.Errorf("%w: %d zones would be fewer than zone.max_active_zones %d (lower it with amend first)", ErrResize, nr, nh.MaxActiveZones)
	}
	if seq := nr - nh.ConventionalZones; nh.MaxOpenZones > seq {
		return fmt.Errorf("%w: %d sequential zones would be fewer than zone.max_open_zones %d (lower it with amend first)", ErrResize, seq, nh.MaxOpenZones)
	}
	if err := nh.Validate(size); err != nil {
		return fmt.Errorf("%w: %v", ErrResize, err)
	}
	wp := make([]uint64, nr)
	for i := range wp {
		if uint32(i) < d.m.nr {
			wp[i] = d.m.wp[i]
		} else {
			wp[i] = nh.ZoneStart(uint32(i))
		}
	}
	if last := d.m.nr - 1; size > old && last >= nh.ConventionalZones && d.m.cond(last) == CondFull {
		// A FULL short last zone that grows stays FULL: its write pointer
		// becomes start + zone_size, as a finish writes it (otherwise the
		// longer zone would turn CLOSED, an active zone beyond the limit).
		// The grown part is new space and reads as zeroes.
		wp[last] = nh.ZoneStart(last) + nh.ZoneSize
	}
	return d.swapTable(&nh, wp, func(u image.TableUpdate) error {
		return d.img.Resize(size, image.ResizeOptions{Shrink: shrink, Tables: []image.TableUpdate{u}})
	})
}
