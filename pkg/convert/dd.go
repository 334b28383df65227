package convert

import (
	"errors"
	"fmt"
	"math"

	"github.com/zqimg/zqimg/pkg/blockdev"
	pcreate "github.com/zqimg/zqimg/pkg/create"
)

// DDRequest is a copy in the manner of qemu-img dd: BlockSize-byte blocks
// of Source from block Skip, up to block Count (counted from the start of
// Source, as qemu-img counts it), into a new image at Dest. Every block is
// written, zeroes included.
type DDRequest struct {
	Source    *blockdev.Disk
	Dest      string
	Format    string // the output's format: "raw" (qemu-img dd's default) or "qcow2"
	BlockSize int64  // bytes, > 0
	Count     int64  // blocks; used when HasCount
	HasCount  bool
	Skip      int64 // blocks skipped at the start of Source
	// InstallOptions are passed to pcreate.Install (tests).
	InstallOptions []pcreate.Option
}

// ErrSkipBeyondEnd is the warning for a Skip past the end of the input:
// the output is then empty, as dd(1) leaves it.
var ErrSkipBeyondEnd = errors.New("cannot skip to specified offset")

// DDSizes returns the output's size and the input offset the copy starts
// at, both in bytes, and whether Skip lies beyond the input (qemu-img dd's
// arithmetic: Count caps the input at Count blocks from its start; the
// output holds what lies between the skipped blocks and that end).
func DDSizes(size int64, r DDRequest) (outSize, inPos int64, beyond bool) {
	bs := r.BlockSize
	if r.HasCount && r.Count <= math.MaxInt64/bs && r.Count*bs < size {
		size = r.Count * bs
	}
	if r.Skip > math.MaxInt64/bs || size < r.Skip*bs {
		return 0, size, true
	}
	return size - r.Skip*bs, r.Skip * bs, false
}

// DD copies as qemu-img dd does into a new image, built and put in place
// as create puts a new image (pcreate.Install: nothing half-written is
// left). It reports a skip past the end of the input with
// ErrSkipBeyondEnd after writing the empty output.
func DD(r DDRequest) error {
	if r.BlockSize <= 0 {
		return fmt.Errorf("block size %d: must be positive", r.BlockSize)
	}
	src := r.Source
	size := src.Size()
	outSize, inPos, beyond := DDSizes(size, r)
	end := outSize + inPos
	var spec *pcreate.Spec
	switch r.Format {
	case blockdev.Qcow2:
		o, err := pcreate.ParseOptions([]string{fmt.Sprintf("size=%d", outSize)}, "", false)
		if err == nil {
			spec, err = pcreate.Resolve(o)
		}
		if err != nil {
			return &CreateError{Format: r.Format, Err: err}
		}
	case blockdev.Raw:
	default:
		return &UnknownFormatError{Format: r.Format}
	}
	build := func(f *pcreate.BuildFile) error {
		var t target
		if spec != nil {
			qt, err := newQcowTarget(f, spec, r.Dest)
			if err != nil {
				return &CreateError{Format: r.Format, Err: err}
			}
			t = qt
		} else {
			rt, err := newRawTarget(f, outSize)
			if err != nil {
				return err
			}
			t = rt
		}
		err := ddCopy(src, t, r.BlockSize, inPos, end)
		if cerr := t.close(); err == nil {
			err = cerr
		}
		return err
	}
	if err := install(r.Dest, r.Format, spec == nil, build, r.InstallOptions); err != nil {
		return err
	}
	if beyond {
		return ErrSkipBeyondEnd
	}
	return nil
}

// ddCopy copies [inPos, end) of src to the output from offset 0, bs bytes
// at a time (the last block may be shorter).
func ddCopy(src *blockdev.Disk, t target, bs, inPos, end int64) error {
	buf := make([]byte, min(bs, max(end-inPos, 0)))
	for out := int64(0); inPos < end; {
		n := min(bs, end-inPos)
		if _, err := src.ReadAt(buf[:n], inPos); err != nil {
			return fmt.Errorf("error while reading from input image file: %w", err)
		}
		if err := t.write(buf[:n], out); err != nil {
			return fmt.Errorf("error while writing to output image file: %w", err)
		}
		inPos, out = inPos+n, out+n
	}
	return nil
}
