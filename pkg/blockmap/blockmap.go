// Package blockmap computes what `qemu-img map` reports: the runs of an
// image's guest bytes, each with where it is stored (data at a host
// offset, compressed, zero, unallocated; at which depth of the backing
// chain), adjacent runs merged exactly as qemu-img 7.2 merges them. For
// zoned images it also describes every zone: write pointer, condition and
// the bytes stored below the write pointer.
//
// Nothing at or beyond the write pointer of a sequential zone is data:
// such ranges are reported as unallocated zeroes (see package blockdev).
// Offsets and lengths are bytes.
package blockmap

import (
	"fmt"

	"github.com/zqimg/zqimg/pkg/blockdev"
	"github.com/zqimg/zqimg/pkg/zone"
)

// Entry is one line of qemu-img map's output.
type Entry struct {
	Start  int64
	Length int64
	Depth  int
	// Present: allocated in the image at Depth (JSON "present").
	Present bool
	Zero    bool
	Data    bool
	// Compressed: the data lies in compressed clusters (qemu-img 7.2 does
	// not print this; zqimg keeps it for its own use).
	Compressed bool
	HasOffset  bool
	Offset     int64
	File       string // the file holding Offset (set with HasOffset)
}

// mergeable reports whether next continues cur as qemu-img map merges
// entries: same kind, depth and file, and host offsets that follow on.
func mergeable(cur, next *Entry) bool {
	if cur.Length == 0 {
		return false
	}
	if cur.Zero != next.Zero || cur.Data != next.Data || cur.Depth != next.Depth ||
		cur.Present != next.Present || cur.Compressed != next.Compressed ||
		(cur.File == "") != (next.File == "") || cur.HasOffset != next.HasOffset {
		return false
	}
	if cur.File != next.File {
		return false
	}
	return !cur.HasOffset || cur.Offset+cur.Length == next.Offset
}

// Walk reports the map of [start, start+length) (clamped to the disk's
// size; length < 0 means to the end) by calling fn with each merged entry
// in order, the last one with last set. Like qemu-img, it reports one
// entry of length 0 when the range is empty. An error from fn stops the
// walk and is returned.
func Walk(d *blockdev.Disk, start, length int64, fn func(e Entry, last bool) error) error {
	size := d.Size()
	if start < 0 {
		return fmt.Errorf("start offset %d is negative", start)
	}
	end := size
	if length >= 0 && start <= size-length {
		end = start + length
	}
	cur := Entry{Start: start}
	for cur.Start+cur.Length < end {
		off := cur.Start + cur.Length
		s, err := d.MapStatus(off, end-off)
		if err != nil {
			//lint:ignore ST1005 the message is qemu-img's
			return fmt.Errorf("Could not read file metadata: %w", err)
		}
		next := Entry{Start: off, Length: s.Len, Depth: s.Depth, Present: s.Allocated,
			Zero: s.Zero, Data: s.Data, Compressed: s.Compressed}
		if s.OffsetValid {
			next.HasOffset, next.Offset, next.File = true, s.Offset, s.File
		}
		if mergeable(&cur, &next) {
			cur.Length += next.Length
			continue
		}
		if cur.Length > 0 {
			if err := fn(cur, false); err != nil {
				return err
			}
		}
		cur = next
	}
	return fn(cur, true)
}

// ZoneEntry describes one zone of a zoned image. Bytes.
type ZoneEntry struct {
	Index     uint32
	Start     uint64
	Length    uint64
	Capacity  uint64
	WP        uint64 // write pointer (the zone start for a conventional zone)
	Cond      zone.Cond
	Type      zone.Type
	Allocated uint64 // bytes below the write pointer stored as data in the image
}

// Zones describes every zone of a zoned disk (nil for a plain one).
func Zones(d *blockdev.Disk) ([]ZoneEntry, error) {
	zs := d.Zones()
	if zs == nil {
		return nil, nil
	}
	out := make([]ZoneEntry, len(zs))
	for i, z := range zs {
		e := ZoneEntry{Index: uint32(i), Start: z.Start, Length: z.Len, Capacity: z.Cap,
			WP: z.WP, Cond: z.Cond, Type: z.Type}
		end := int64(blockdev.ValidEnd(z))
		for off := int64(z.Start); off < end; {
			s, err := d.LayerStatus(off, end-off)
			if err != nil {
				return nil, fmt.Errorf("zone %d: %w", i, err)
			}
			if s.Data && s.Allocated {
				e.Allocated += uint64(s.Len)
			}
			off += s.Len
		}
		out[i] = e
	}
	return out, nil
}
