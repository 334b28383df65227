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
		return s.reportError(err)
	}
	if size > old {
		if bs, ok := s.backingSize(); ok && bs > old {
			if err := s.Dev.WriteZeroes(old, min(size, bs)-old); err != nil {
				return s.reportError(fmt.Errorf("zeroing the new area: %w", err))
			}
		}
	}
	return nil
}

// backingSize returns the size of the open image's backing file (ok
// false when it has none).
func (s *Shell) backingSize() (int64, bool) {
	if d, ok := asQcow2(s.Dev); ok {
		return d.Image().BackingSize()
	}
	return 0, false
}

// reportError prints a failed command's error as qemu-io's error_report does
// ("qemu-io: MESSAGE") and marks the command failed.
func (s *Shell) reportError(err error) error {
	s.Out.Flush()
	fmt.Fprintf(s.Err, "%s: %v\n", s.Prog, err)
	return errCommandFailed
}

// allocator answers whether this image stores the bytes from an offset:
// allocated reports it for the longest run from off it can tell at once
// (its length, > 0). In a sequential zone, bytes at or beyond the write
// pointer hold no data and are not allocated.
type allocator struct {
	img   *image.Image
	size  int64
	zones []zone.Zone
}

func (s *Shell) allocator() (*allocator, error) {
	a := &allocator{size: s.Dev.Size()}
	dev, ok := asQcow2(s.Dev)
	if !ok {
		return a, nil // a raw file: everything is allocated
	}
	a.img = dev.Image()
	if dev.Zoned() {
		zs, err := dev.Report(0, math.MaxUint64)
		if err != nil {
			return nil, err
		}
		a.zones = zs
	}
	return a, nil
}

// allocated reports whether the bytes from off (below the size) are
// allocated in this image, for at most n bytes, and for how many.
func (a *allocator) allocated(off, n int64) (bool, int64, error) {
	n = min(n, a.size-off)
	if a.img == nil {
		return true, n, nil
	}
	if a.zones != nil {
		z := a.zones[off/int64(a.zones[0].Len)]
		ve := int64(blockdev.ValidEnd(z))
		if off >= ve {
			return false, min(n, int64(z.Start+z.Len)-off), nil
		}
		n = min(n, ve-off)
	}
	x, err := a.img.BlockStatus(off, n)
	if err != nil {
		return false, 0, err
	}
	return x.Kind != image.Unallocated, x.Len, nil
}

// alloc prints how many of count bytes (default 512) from offset are
// allocated in this image, as qemu-io's alloc; bytes beyond the end of
// the image are not counted.
func (s *Shell) alloc(p *parsedArgs) error {
	start, err := s.parseNum(p.operands[0])
	if err != nil {
		return err
	}
	count := int64(512)
	if len(p.operands) == 2 {
		if count, err = s.parseNum(p.operands[1]); err != nil {
			return err
		}
	}
	a, err := s.allocator()
	if err != nil {
		fmt.Fprintf(s.Out, "is_allocated failed: %s\n", image.Strerror(image.Errno(err)))
		return errCommandFailed
	}
	var sum int64
	for off, rem := start, count; rem > 0; {
		if off >= a.size {
			count -= rem
			break
		}
		alloc, n, err := a.allocated(off, rem)
		if err != nil {
			fmt.Fprintf(s.Out, "is_allocated failed: %s\n", image.Strerror(image.Errno(err)))
			return errCommandFailed
		}
		if alloc {
			sum += n
		}
		off += n
		rem -= n
	}
	fmt.Fprintf(s.Out, "%d/%d bytes allocated at offset %s\n", sum, count, humanSize(uint64(start)))
	return nil
}

// allocStatusError is qemu-io's message for a failed allocation query.
func allocStatusError(err error) error {
	//lint:ignore ST1005 qemu-io's message
	return fmt.Errorf("Failed to get allocation status: %s", image.Strerror(image.Errno(err)))
}

// mapCmd prints the allocated areas of the image as qemu-io's map: runs of
// bytes that this image (not its backing file) stores, as data or as
// zeroes, and runs it does not. In a sequential zone, bytes at or beyond
// the write pointer hold no data and are not allocated.
func (s *Shell) mapCmd(_ *parsedArgs) error {
	a, err := s.allocator()
	if err != nil {
		return s.reportError(allocStatusError(err))
	}
	size := a.size
	allocated := func(off int64) (bool, int64, error) { return a.allocated(off, size-off) }
	for off := int64(0); off < size; {
		alloc, n, err := allocated(off)
		if err != nil {
			return s.reportError(allocStatusError(err))
		}
		for off+n < size {
			next, m, err := allocated(off + n)
			if err != nil {
				return s.reportError(allocStatusError(err))
			}
			if next != alloc {
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

// info prints what qemu-io's info prints: the format name, and for a qcow2
// image its cluster size, the offset of the VM state and the qcow2
// details ("Format specific information:"); for a raw file, zeroes. A
// null-co device has nothing more to tell: the command then fails, as
// qemu-io's does, after the format name.
func (s *Shell) info(_ *parsedArgs) error {
	if d, ok := asQcow2(s.Dev); ok {
		img := d.Image()
		h := img.Header()
		fmt.Fprintf(s.Out, "format name: qcow2\n")
		cs := uint64(img.ClusterSize())
		entry := uint64(8)
		if h.IncompatibleFeatures&image.IncompatExtL2 != 0 {
			entry = 16
		}
		span := cs * (cs / entry)
		vm := (uint64(img.Size()) + span - 1) / span * span
		fmt.Fprintf(s.Out, "cluster size: %s\n", humanSize(cs))
		fmt.Fprintf(s.Out, "vm state offset: %s\n", humanSize(vm))
		fmt.Fprintf(s.Out, "Format specific information:\n")
		if h.Version < 3 {
			fmt.Fprintf(s.Out, "    compat: 0.10\n")
			fmt.Fprintf(s.Out, "    compression type: zlib\n")
			fmt.Fprintf(s.Out, "    refcount bits: %d\n", 1<<h.RefcountOrder)
			return nil
		}
		ct := "zlib"
		if h.CompressionType == 1 {
			ct = "zstd"
		}
		fmt.Fprintf(s.Out, "    compat: 1.1\n")
		fmt.Fprintf(s.Out, "    compression type: %s\n", ct)
		fmt.Fprintf(s.Out, "    lazy refcounts: %t\n", h.CompatibleFeatures&image.CompatLazyRefcounts != 0)
		fmt.Fprintf(s.Out, "    refcount bits: %d\n", 1<<h.RefcountOrder)
		fmt.Fprintf(s.Out, "    corrupt: %t\n", h.IncompatibleFeatures&image.IncompatCorrupt != 0)
		fmt.Fprintf(s.Out, "    extended l2: %t\n", h.IncompatibleFeatures&image.IncompatExtL2 != 0)
		return nil
	}
	switch s.Dev.(type) {
	case *NullDevice:
		// qemu prints the format and the protocol name, both null-co.
		fmt.Fprintf(s.Out, "format name: null-co\nformat name: null-co\n")
	default:
		fmt.Fprintf(s.Out, "format name: raw\ncluster size: 0 bytes\nvm state offset: 0 bytes\n")
		return nil
	}
	return errCommandFailed
}
