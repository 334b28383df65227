package create

import (
	"fmt"

	"github.com/zqimg/zqimg/pkg/image"
)

// RawSpec is a validated description of a new raw image.
type RawSpec struct {
	Size          uint64 // bytes, a multiple of 512
	Preallocation image.PreallocMode
}

// ResolveRaw checks raw options (from ParseRawOptions) as qemu-img's file
// driver does: the size is rounded up to a whole 512-byte sector, and the
// preallocation is off, falloc or full.
func ResolveRaw(o *Options) (*RawSpec, error) {
	p := o.str("preallocation", "off")
	mode, ok := image.ParsePrealloc(p)
	if !ok {
		return nil, verr("preallocation", "invalid parameter value: %s", p)
	}
	if mode == image.PreallocMetadata {
		return nil, verr("preallocation", "Unsupported preallocation mode: %s", p)
	}
	size := o.num("size", 0)
	if size > 1<<63-512 {
		return nil, verr("size", "Image size %d is too large", size)
	}
	return &RawSpec{Size: (size + 511) &^ 511, Preallocation: mode}, nil
}

// CreateRaw writes a raw image of s.Size bytes at path (zeroes: a hole,
// reserved with falloc, written with full) with Install's guarantees; an
// existing file is replaced by rename once the new one is complete.
func CreateRaw(path string, s *RawSpec, opts ...Option) error {
	build := func(f *BuildFile) error {
		n := int64(s.Size)
		switch s.Preallocation {
		case image.PreallocFalloc:
			if err := f.Allocate(0, n); err != nil {
				return fmt.Errorf("Could not preallocate data for the new file: %w", err)
			}
		case image.PreallocFull:
			if err := f.Truncate(n); err != nil {
				return err
			}
			z := make([]byte, min(n, 1<<20))
			for off := int64(0); off < n; {
				k := min(n-off, int64(len(z)))
				if _, err := f.WriteAt(z[:k], off); err != nil {
					return fmt.Errorf("Could not write zeros for preallocation: %w", err)
				}
				off += k
			}
		}
		if err := f.Truncate(n); err != nil {
			return err
		}
		if s.Preallocation == image.PreallocOff && n > 0 {
			// As qemu-img's file driver (allocate_first_block): the first
			// block is written, so that probing the alignment of the file
			// later needs no allocation.
			if _, err := f.WriteAt(make([]byte, min(n, 4096)), 0); err != nil {
				return err
			}
		}
		return f.Sync()
	}
	return Install(path, build, append([]Option{WithRenameReplace()}, opts...)...)
}
