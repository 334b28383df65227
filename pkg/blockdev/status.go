package blockdev

import (
	"fmt"

	"github.com/zqimg/zqimg/pkg/image"
)

// Status is the block status of a run of guest bytes, with the meaning of
// QEMU's BDRV_BLOCK_* flags.
type Status struct {
	Len int64 // bytes in the run, > 0
	// Data: the bytes are stored as data (in a host cluster, a compressed
	// cluster, or a raw file's data extent).
	Data bool
	// Zero: the bytes read as zeroes without reading data (zero clusters,
	// unallocated space without a backing file, holes, space beyond a
	// write pointer).
	Zero bool
	// Allocated: this layer (not a backing file) decides what the bytes
	// read as (qemu-img map's "present").
	Allocated bool
	// Compressed: the bytes lie in a compressed cluster.
	Compressed bool
	// OffsetValid: the bytes are stored at Offset in File.
	OffsetValid bool
	Offset      int64
	File        string
	// Depth counts the backing files above the layer that answered.
	Depth int
	// EOF: the run reaches the end of the answering layer.
	EOF bool
}

// Flags returns the status as QEMU's flag word (DATA 1, ZERO 2,
// OFFSET_VALID 4, ALLOCATED 0x10, EOF 0x20), for comparing two statuses
// the way qemu-img compare -s does.
func (s Status) Flags() int {
	f := 0
	if s.Data {
		f |= 0x1
	}
	if s.Zero {
		f |= 0x2
	}
	if s.OffsetValid {
		f |= 0x4
	}
	if s.Allocated {
		f |= 0x10
	}
	if s.EOF {
		f |= 0x20
	}
	return f
}

// LayerStatus returns the status of at most n bytes from off in this
// layer of the backing chain only (QEMU's bdrv_block_status): bytes that
// this layer leaves to its backing file are neither data nor zero nor
// allocated.
func (d *Disk) LayerStatus(off, n int64) (Status, error) {
	if off < 0 || n <= 0 || off >= d.size {
		return Status{}, fmt.Errorf("%w: block status of %d bytes at offset %d, image size %d", image.ErrOutOfRange, n, off, d.size)
	}
	n = min(n, d.size-off)
	var s Status
	var err error
	if d.null {
		s = Status{Len: n, Zero: d.nullZeroes, Data: !d.nullZeroes, Allocated: true}
	} else if d.raw != nil {
		s, err = d.rawStatus(off, n)
	} else {
		s, err = d.qcow2Status(off, n)
	}
	if err != nil {
		return Status{}, err
	}
	s.EOF = off+s.Len == d.size
	return s, nil
}

func (d *Disk) qcow2Status(off, n int64) (Status, error) {
	if d.zh != nil {
		z := d.zoneAt(off)
		v := int64(ValidEnd(z))
		if off >= v {
			// Beyond the write pointer: nothing there was acknowledged.
			return Status{Len: min(n, int64(z.Start+z.Len)-off), Zero: true}, nil
		}
		n = min(n, v-off)
	}
	x, err := d.img.BlockStatus(off, n)
	if err != nil {
		return Status{}, err
	}
	s := Status{Len: x.Len}
	var hostZero bool
	if x.HostValid {
		s.OffsetValid, s.Offset, s.File = true, int64(x.Host), d.path
	}
	if x.Kind == image.Data && x.HostValid && d.metadataPreallocated() {
		// As QEMU asks the file driver below for a preallocated image
		// (BDRV_BLOCK_RECURSE): a run stored in a hole of the image
		// file reads as zeroes, and the run ends where the file's data
		// or hole does.
		hostZero, s.Len = d.img.HostRun(int64(x.Host), x.Len)
	}
	switch x.Kind {
	case image.Data:
		s.Data, s.Allocated, s.Zero = true, true, hostZero
	case image.Compressed:
		s.Data, s.Allocated, s.Compressed = true, true, true
	case image.Zero:
		s.Zero, s.Allocated = true, true
	case image.Unallocated:
		// Without a backing file, or beyond its end, unallocated space
		// reads as zeroes.
		if d.backing == nil || off >= d.backing.size {
			s.Zero = true
		}
	}
	return s, nil
}

// metadataPreallocated is Image.MetadataPreallocated, decided once per
// disk (as QEMU decides it once per open).
func (d *Disk) metadataPreallocated() bool {
	d.preallocOnce.Do(func() {
		ok, err := d.img.MetadataPreallocated()
		d.prealloc = err == nil && ok
	})
	return d.prealloc
}

// rawStatus reports data and holes of a raw file (SEEK_DATA/SEEK_HOLE),
// as QEMU's file driver does: every byte is allocated and stored at its
// own offset; holes, and the tail beyond the end of the file, read as
// zeroes.
func (d *Disk) rawStatus(off, n int64) (Status, error) {
	s := Status{Len: n, Allocated: true, OffsetValid: true, Offset: off, File: d.path}
	s.Zero, s.Len = d.raw.DataRun(off, n, d.rawSize)
	s.Data = !s.Zero
	return s, nil
}

// Status returns the status of at most n bytes from off through the whole
// backing chain (QEMU's bdrv_block_status_above with no base): the answer
// of the first layer that allocates the bytes, else of the bottom layer.
// Allocated then means "allocated in some layer of the chain".
func (d *Disk) Status(off, n int64) (Status, error) {
	s, err := d.LayerStatus(off, n)
	if err != nil || s.Allocated || d.backing == nil {
		return s, err
	}
	eof := s.EOF
	top := s
	for b, depth := d.backing, 1; b != nil; b, depth = b.backing, depth+1 {
		if off >= b.size {
			// A short backing file: its zeroes beyond its end count as
			// allocated at this layer.
			s = Status{Len: s.Len, Zero: true, Allocated: true, Depth: depth}
			break
		}
		bs, err := b.LayerStatus(off, s.Len)
		if err != nil {
			return Status{}, err
		}
		bs.Depth = depth
		s = bs
		if s.Allocated {
			s.EOF = false
			break
		}
	}
	s.EOF = eof && off+s.Len == off+top.Len
	return s, nil
}

// MapStatus returns the status qemu-img map reports for at most n bytes
// from off: it descends the backing chain while a layer says neither data
// nor zero, and Depth says how far it went.
func (d *Disk) MapStatus(off, n int64) (Status, error) {
	depth := 0
	for b := d; ; b = b.backing {
		s, err := b.LayerStatus(off, n)
		if err != nil {
			return Status{}, err
		}
		s.Depth = depth
		if s.Data || s.Zero || b.backing == nil {
			return s, nil
		}
		n = s.Len
		depth++
	}
}
