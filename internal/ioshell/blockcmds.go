package ioshell

import (
	"fmt"
	"math"

	"github.com/zqimg/zqimg/pkg/blockdev"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// truncate resizes the image as qemu-io's truncate: to the given size,
// larger or smaller (no --shrink guard: qemu-io is a debugging tool), with
// the zone rules of zone.Device.Resize for a zoned image. When the image
// has a backing file that reaches beyond the old size, the new area is
// written with zeroes, as QEMU does, so that the backing file does not
// show through it.
func (s *Shell) truncate(p *parsedArgs) error {
	if m, ok := p.flags['m']; ok {
		switch m {
		case "off":
		case "metadata", "falloc", "full":
			s.Out.Flush()
			fmt.Fprintf(s.Err, "%s: Unsupported preallocation mode '%s' (zqimg only truncates with preallocation=off)\n", s.Prog, m)
			return errCommandFailed
		default:
			s.Out.Flush()
			fmt.Fprintf(s.Err, "%s: Invalid preallocation mode '%s'\n", s.Prog, m)
			return errCommandFailed
		}
	}
	size, err := s.parseNum(p.operands[0])
	if err != nil {
		return err
	}
	old := s.Dev.Size()
	if err := s.Dev.Resize(uint64(size), true); err != nil {
		return s.report2(err)
	}
	if size > old {
		if bs, ok := s.Dev.Image().BackingSize(); ok && bs > old {
			if err := s.Dev.WriteZeroes(old, min(size, bs)-old); err != nil {
				return s.report2(fmt.Errorf("zeroing the new area: %w", err))
			}
		}
	}
	return nil
}

// report2 prints a failed command's error as qemu-io's error_report does
// ("qemu-io: MESSAGE") and marks the command failed.
func (s *Shell) report2(err error) error {
	s.Out.Flush()
	fmt.Fprintf(s.Err, "%s: %v\n", s.Prog, err)
	return errCommandFailed
}

// mapCmd prints the allocated areas of the image as qemu-io's map: runs of
// bytes that this image (not its backing file) stores, as data or as
// zeroes, and runs it does not. In a sequential zone, bytes at or beyond
// the write pointer hold no data and are not allocated.
func (s *Shell) mapCmd(_ *parsedArgs) error {
	size := s.Dev.Size()
	var zones []zone.Zone
	if s.Dev.Zoned() {
		zs, err := s.Dev.Report(0, math.MaxUint64)
		if err != nil {
			return s.report2(fmt.Errorf("Failed to get allocation status: %s", strerror(image.Errno(err))))
		}
		zones = zs
	}
	img := s.Dev.Image()
	allocated := func(off int64) (bool, int64, error) {
		n := size - off
		if zones != nil {
			z := zones[off/int64(zones[0].Len)]
			ve := int64(blockdev.ValidEnd(z))
			if off >= ve {
				return false, int64(z.Start+z.Len) - off, nil
			}
			n = min(n, ve-off)
		}
		x, err := img.BlockStatus(off, n)
		if err != nil {
			return false, 0, err
		}
		return x.Kind != image.Unallocated, x.Len, nil
	}
	for off := int64(0); off < size; {
		alloc, n, err := allocated(off)
		if err != nil {
			return s.report2(fmt.Errorf("Failed to get allocation status: %s", strerror(image.Errno(err))))
		}
		for off+n < size {
			a, m, err := allocated(off + n)
			if err != nil {
				return s.report2(fmt.Errorf("Failed to get allocation status: %s", strerror(image.Errno(err))))
			}
			if a != alloc {
				break
			}
			n += m
		}
		what := "not allocated"
		if alloc {
			what = "    allocated"
		}
		fmt.Fprintf(s.Out, "%s (0x%x) bytes %s at offset %s (0x%x)\n", humanSize(uint64(n)), n, what, humanSize(uint64(off)), off)
		off += n
	}
	return nil
}
