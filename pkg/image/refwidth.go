package image

import (
	"errors"
	"fmt"
)

// ErrRefcountWidth refuses a refcount width that is not a power of two up
// to 64 bits (qemu-img's message).
//
//lint:ignore ST1005 the message is qemu-img's
var ErrRefcountWidth = errors.New("Refcount width must be a power of two and may not exceed 64 bits")

// RefcountWidthError refuses a narrower refcount width that cannot hold a
// cluster's refcount (qemu-img amend's message).
type RefcountWidthError struct {
	Bits     int
	Off      uint64 // the cluster's host offset
	Refcount uint64
}

func (e *RefcountWidthError) Error() string {
	return fmt.Sprintf("Cannot decrease refcount entry width to %d bits: Cluster at offset %#x has a refcount of %d", e.Bits, e.Off, e.Refcount)
}

// ValidRefcountWidth returns ErrRefcountWidth unless bits is a power of
// two up to 64.
func ValidRefcountWidth(bits int) error {
	_, err := refcountOrder(bits)
	return err
}

// refcountOrder returns log2(bits), or ErrRefcountWidth.
func refcountOrder(bits int) (uint32, error) {
	for o := uint32(0); o <= 6; o++ {
		if bits == 1<<o {
			return o, nil
		}
	}
	return 0, ErrRefcountWidth
}

// CheckRefcountWidth reports whether the image's refcounts could be
// stored bits wide (nil: they fit, whatever the image's version). Nothing
// is written (cached metadata is written back).
func (img *Image) CheckRefcountWidth(bits int) error {
	img.lock()
	defer img.unlock()
	_, err := img.refcountWidthTxn(bits, false)
	return err
}

// ChangeRefcountWidth rewrites the refcount structure with refcounts bits
// wide (qemu-img amend -o refcount_bits=N; version 3 images only): the
// refcounts are read, a complete new refcount table and blocks of the new
// width are written to clusters free before and after, and one write of
// the header's first sector switches the refcount order, table offset and
// size together (txn). A crash leaves the old structure or the new one.
// A width that cannot hold some cluster's refcount is refused
// (RefcountWidthError), the image unchanged.
func (img *Image) ChangeRefcountWidth(bits int) error {
	img.lock()
	defer img.unlock()
	t, err := img.refcountWidthTxn(bits, true)
	if err != nil || t == nil {
		return err
	}
	return t.commit()
}

// refcountWidthTxn begins the transaction of ChangeRefcountWidth (nil when
// the width is the image's); v3 requires a version 3 image.
func (img *Image) refcountWidthTxn(bits int, v3 bool) (*txn, error) {
	order, err := refcountOrder(bits)
	if err != nil {
		return nil, err
	}
	if err := img.writable(); err != nil {
		return nil, err
	}
	if order == img.rc.order {
		return nil, nil
	}
	if v3 && img.hdr.Version < 3 {
		//lint:ignore ST1005 the message is qemu-img's
		return nil, errors.New("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
	}
	if err := img.flush(); err != nil {
		return nil, err
	}
	t, err := img.beginTxn()
	if err != nil {
		return nil, err
	}
	max := MaxRefcount(order)
	for c, v := range t.rc {
		if v > max {
			return nil, &RefcountWidthError{Bits: bits, Off: uint64(c) * img.cs, Refcount: v}
		}
	}
	t.order = order
	return t, nil
}
