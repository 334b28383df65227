package check

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/zqimg/zqimg/pkg/image"
)

// Bitmap table entries.
const (
	bmeOffsetMask   = 0x00fffffffffffe00
	bmeReservedMask = 0xff000000000001fe
)

// Limits of the bitmaps extension (QEMU's).
const (
	maxBitmaps       = 65535
	maxBitmapDirSize = 1024 * maxBitmaps
	bitmapDirEntry   = 24 // fixed part of a bitmap directory entry
)

type bitmap struct {
	name      string
	tableOff  uint64
	tableSize uint64 // entries
}

// checkBitmaps counts the bitmap directory, the bitmap tables and the
// bitmap data clusters (qcow2_check_bitmaps_refcounts). The directory was
// validated when the image was opened (loadBitmaps).
func (c *checker) checkBitmaps() error {
	if c.bitmaps == nil {
		return nil
	}
	c.inc(c.bitmapDirOff, c.bitmapDirSize)
	for _, bm := range c.bitmaps {
		c.inc(bm.tableOff, bm.tableSize*8)
		tab, err := c.readEntries(bm.tableOff, bm.tableSize)
		if err != nil {
			return err
		}
		for i, te := range tab {
			off := te & bmeOffsetMask
			if te&bmeReservedMask != 0 || (off != 0 && (te&1 != 0 || off&(c.cs-1) != 0)) {
				c.report(finding(KindCorruption, ProblemBitmaps, "ERROR bitmap '%s': invalid bitmap table entry %d: 0x%x", bm.name, i, te).at(bm.tableOff + uint64(i)*8))
				continue
			}
			if off != 0 {
				c.inc(off, c.cs)
			}
		}
	}
	return nil
}

// loadBitmaps validates the bitmaps extension and the bitmap directory as
// QEMU does when it opens an image (qcow2_read_extensions and
// bitmap_list_load): a broken directory makes the image unusable. Without
// the autoclear bit the bitmaps are inconsistent and ignored (their
// clusters are then leaked, as qemu-img check reports them).
func (c *checker) loadBitmaps() error {
	e := c.ext(image.ExtBitmaps)
	if e == nil || c.hdr.AutoclearFeatures&image.AutoclearBitmaps == 0 {
		return nil
	}
	nb, dirOff, dirSize, err := c.bitmapsExtension(e.Data)
	if err != nil {
		return err
	}
	// Bytes beyond the end of the file read as zeroes.
	dir := make([]byte, dirSize)
	if err := c.readAt(dir, dirOff); err != nil {
		return err
	}
	bms, err := c.parseBitmapDir(dir, nb)
	if err != nil {
		return err
	}
	c.bitmaps, c.bitmapDirOff, c.bitmapDirSize = bms, dirOff, dirSize
	return nil
}

// bitmapsExtension decodes and checks the bitmaps extension data: the
// number of bitmaps and where the bitmap directory lies.
func (c *checker) bitmapsExtension(d []byte) (nb uint32, dirOff, dirSize uint64, err error) {
	if len(d) != 24 {
		return 0, 0, 0, errors.New("bitmaps_ext: Invalid extension length")
	}
	be := binary.BigEndian
	nb = be.Uint32(d[0:])
	dirSize = be.Uint64(d[8:])
	dirOff = be.Uint64(d[16:])
	switch {
	case be.Uint32(d[4:]) != 0:
		err = errors.New("bitmaps_ext: Reserved field is not zero")
	case nb > maxBitmaps:
		err = fmt.Errorf("bitmaps_ext: Image has %d bitmaps, exceeding the QEMU supported maximum of %d", nb, maxBitmaps)
	case nb == 0:
		err = errors.New("found bitmaps extension with zero bitmaps")
	case dirOff&(c.cs-1) != 0:
		err = errors.New("bitmaps_ext: invalid bitmap directory offset")
	case dirSize > maxBitmapDirSize:
		err = fmt.Errorf("bitmaps_ext: bitmap directory size (%d) exceeds the maximum supported size (%d)", dirSize, maxBitmapDirSize)
	case dirSize == 0:
		err = errors.New("Requested bitmap directory size is zero")
	}
	return nb, dirOff, dirSize, err
}

// parseBitmapDir decodes the bitmap directory dir, which must hold nb
// bitmaps, each satisfying QEMU's constraints.
func (c *checker) parseBitmapDir(dir []byte, nb uint32) ([]bitmap, error) {
	be := binary.BigEndian
	dirSize := uint64(len(dir))
	var bms []bitmap
	for pos := uint64(0); pos < dirSize; {
		if pos+bitmapDirEntry > dirSize {
			return nil, errors.New("Broken bitmap directory")
		}
		d := dir[pos:]
		if uint32(len(bms)) >= nb {
			return nil, errors.New("More bitmaps found than specified in header extension")
		}
		tOff := be.Uint64(d[0:])
		tSize := uint64(be.Uint32(d[8:]))
		flags := be.Uint32(d[12:])
		typ, gran := d[16], d[17]
		nameLen := uint64(be.Uint16(d[18:]))
		extra := uint64(be.Uint32(d[20:]))
		esize := (bitmapDirEntry + extra + nameLen + 7) &^ 7
		if pos+esize > dirSize {
			return nil, errors.New("Broken bitmap directory")
		}
		if extra != 0 {
			return nil, errors.New("Bitmap extra data is not supported")
		}
		name := string(dir[pos+bitmapDirEntry : pos+bitmapDirEntry+nameLen])
		phys := tSize * c.cs
		if tSize == 0 || tOff == 0 || tOff&(c.cs-1) != 0 || tSize > 0x8000000 || gran > 31 || gran < 9 ||
			flags&^7 != 0 || nameLen > 1023 || typ != 1 ||
			phys > 0x20000000 ||
			(flags&1 == 0 && c.hdr.Size > phys*8<<gran) {
			return nil, fmt.Errorf("Bitmap '%s' doesn't satisfy the constraints", name)
		}
		bms = append(bms, bitmap{name: name, tableOff: tOff, tableSize: tSize})
		pos += esize
	}
	if uint32(len(bms)) != nb {
		return nil, errors.New("Less bitmaps found than specified in header extension")
	}
	return bms, nil
}
