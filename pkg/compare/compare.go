// Package compare compares the guest contents of two images as
// `qemu-img compare` does, and, for zoned images, their zone geometry and
// write pointers.
//
// Contents are compared range by range, guided by block status: ranges
// that read as zeroes in both images are skipped, ranges allocated in both
// are read and compared, and a range allocated in one image only must read
// as zeroes there. A difference is reported at the first differing
// 512-byte sector of the range being compared, which gives qemu-img's
// offsets. Without strict mode, images of different sizes compare equal
// when the common part is equal and the excess of the larger one reads as
// zeroes.
//
// Zoned images: a zoned image never equals a plain one; two zoned images
// differ when their geometry (zone size, zone capacity, number of zones,
// number of conventional zones) or any write pointer differs. The zone
// limits (open, active, append) are configuration, not contents, and are
// not compared. Data at or beyond a write pointer never counts: it reads
// as zeroes (package blockdev).
package compare

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/zqimg/zqimg/pkg/image"
	"syscall"

	"github.com/zqimg/zqimg/pkg/blockdev"
)

// bufSize is the largest range read at once (qemu-img's IO_BUF_SIZE).
const bufSize = 2 << 20

// Options control the comparison.
type Options struct {
	// Strict makes a size difference, or any difference in block status
	// (allocation), a mismatch (qemu-img compare -s).
	Strict bool
	// Progress, when set, is called with the bytes compared so far and
	// the total (the larger size).
	Progress func(done, total int64)
}

// Kind is the kind of difference found.
type Kind int

// Kinds of difference.
const (
	Identical        Kind = iota
	Content               // Offset: the first differing sector
	Size                  // strict mode: the sizes differ
	BlockStatus           // strict mode: Offset: where the block status differs
	ZonedVsPlain          // one image is zoned, the other is not
	ZoneGeometry          // Detail names the field
	ZoneWritePointer      // Zone, Offset: the zone's start
)

// Result is the outcome of a comparison.
type Result struct {
	Kind Kind
	// Offset is the guest offset of a Content or BlockStatus difference,
	// the start of the zone of a ZoneWritePointer difference.
	Offset int64
	// Zone is the index of the zone of a ZoneWritePointer difference.
	Zone uint32
	// WP are the two write pointers of a ZoneWritePointer difference.
	WP [2]uint64
	// Detail describes a ZonedVsPlain or ZoneGeometry difference.
	Detail string
	// SizeWarning: the sizes differ (not strict), the contents are equal.
	SizeWarning bool
}

// Lines returns what qemu-img compare prints for the result (without -q),
// one line each.
func (r *Result) Lines() []string {
	var out []string
	if r.SizeWarning {
		out = append(out, "Warning: Image size mismatch!")
	}
	switch r.Kind {
	case Identical:
		out = append(out, "Images are identical.")
	case Content:
		out = append(out, fmt.Sprintf("Content mismatch at offset %d!", r.Offset))
	case Size:
		out = append(out, "Strict mode: Image size mismatch!")
	case BlockStatus:
		out = append(out, fmt.Sprintf("Strict mode: Offset %d block status mismatch!", r.Offset))
	case ZonedVsPlain:
		out = append(out, fmt.Sprintf("Zone model mismatch: %s!", r.Detail))
	case ZoneGeometry:
		out = append(out, fmt.Sprintf("Zone geometry mismatch: %s!", r.Detail))
	case ZoneWritePointer:
		out = append(out, fmt.Sprintf("Write pointer mismatch in zone %d (start 0x%x): 0x%x vs 0x%x!", r.Zone, r.Offset, r.WP[0], r.WP[1]))
	}
	return out
}

// Error is a failure that stops the comparison; Code is qemu-img's exit
// status for it (3: block status could not be read, 4: data could not be
// read).
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Compare compares the disks a and b.
func Compare(a, b *blockdev.Disk, o Options) (*Result, error) {
	size1, size2 := a.Size(), b.Size()
	if o.Strict && size1 != size2 {
		return &Result{Kind: Size}, nil
	}
	if r := compareZones(a, b); r != nil {
		return r, nil
	}
	c := &comparer{o: o, total: max(size1, size2), buf1: make([]byte, bufSize), buf2: make([]byte, bufSize)}
	common := min(size1, size2)
	for off := int64(0); off < common; {
		s1, err := a.Status(off, size1-off)
		if err != nil {
			return nil, statusErr(a, err)
		}
		s2, err := b.Status(off, size2-off)
		if err != nil {
			return nil, statusErr(b, err)
		}
		chunk := min(s1.Len, s2.Len)
		if o.Strict && s1.Flags() != s2.Flags() {
			return &Result{Kind: BlockStatus, Offset: off}, nil
		}
		switch {
		case s1.Zero && s2.Zero:
		case s1.Allocated == s2.Allocated:
			if s1.Allocated {
				chunk = min(chunk, bufSize)
				at, err := c.differ(a, b, off, chunk)
				if err != nil || at >= 0 {
					return &Result{Kind: Content, Offset: at}, err
				}
			}
		default:
			chunk = min(chunk, bufSize)
			d := a
			if s2.Allocated {
				d = b
			}
			at, err := c.nonZero(d, off, chunk)
			if err != nil || at >= 0 {
				return &Result{Kind: Content, Offset: at}, err
			}
		}
		off += chunk
		c.progress(chunk)
	}
	if size1 == size2 {
		return &Result{Kind: Identical}, nil
	}
	// The excess of the larger image must read as zeroes.
	over := a
	if size2 > size1 {
		over = b
	}
	for off := common; off < c.total; {
		s, err := over.Status(off, c.total-off)
		if err != nil {
			return nil, statusErr(over, err)
		}
		chunk := s.Len
		if s.Allocated && !s.Zero {
			chunk = min(chunk, bufSize)
			at, err := c.nonZero(over, off, chunk)
			if err != nil || at >= 0 {
				return &Result{Kind: Content, Offset: at, SizeWarning: true}, err
			}
		}
		off += chunk
		c.progress(chunk)
	}
	return &Result{Kind: Identical, SizeWarning: true}, nil
}

type comparer struct {
	o          Options
	done       int64
	total      int64
	buf1, buf2 []byte
}

func (c *comparer) progress(n int64) {
	c.done += n
	if c.o.Progress != nil {
		c.o.Progress(c.done, c.total)
	}
}

func statusErr(d *blockdev.Disk, err error) error {
	return &Error{3, fmt.Sprintf("Sector allocation test failed for %s: %v", d.Path(), err)}
}

// readErr is qemu-img's "Error while reading offset OFF of NAME:
// REASON", REASON the C library's words for an errno (as qemu-img's
// strerror), else the error's own.
func readErr(d *blockdev.Disk, off int64, err error) error {
	reason := err.Error()
	var en syscall.Errno
	if errors.As(err, &en) {
		reason = image.Strerror(en)
	}
	return &Error{4, fmt.Sprintf("Error while reading offset %d of %s: %s", off, d.Name(), reason)}
}

// differ compares n bytes at off and returns the offset of the first
// differing 512-byte sector (counted from off), or -1.
func (c *comparer) differ(a, b *blockdev.Disk, off, n int64) (int64, error) {
	p1, p2 := c.buf1[:n], c.buf2[:n]
	if _, err := a.ReadAt(p1, off); err != nil {
		return 0, readErr(a, off, err)
	}
	if _, err := b.ReadAt(p2, off); err != nil {
		return 0, readErr(b, off, err)
	}
	if bytes.Equal(p1, p2) {
		return -1, nil
	}
	for i := int64(0); i < n; i += 512 {
		e := min(i+512, n)
		if !bytes.Equal(p1[i:e], p2[i:e]) {
			return off + i, nil
		}
	}
	return -1, nil
}

// nonZero returns the offset of the first 512-byte sector (counted from
// off) of the n bytes at off that holds a non-zero byte, or -1.
func (c *comparer) nonZero(d *blockdev.Disk, off, n int64) (int64, error) {
	p := c.buf1[:n]
	if _, err := d.ReadAt(p, off); err != nil {
		return 0, readErr(d, off, err)
	}
	if i := firstNonZero(p); i >= 0 {
		return off + i/512*512, nil
	}
	return -1, nil
}

// firstNonZero returns the index of the first non-zero byte of p, or -1.
func firstNonZero(p []byte) int64 {
	const w = 4096
	var zero [w]byte
	for i := 0; i < len(p); i += w {
		e := min(i+w, len(p))
		if !bytes.Equal(p[i:e], zero[:e-i]) {
			for j := i; j < e; j++ {
				if p[j] != 0 {
					return int64(j)
				}
			}
		}
	}
	return -1
}

// compareZones compares the zone models, geometry and write pointers; it
// returns nil when they agree (or both images are plain).
func compareZones(a, b *blockdev.Disk) *Result {
	if !a.Zoned() && !b.Zoned() {
		return nil
	}
	if a.Zoned() != b.Zoned() {
		z, p := a, b
		if b.Zoned() {
			z, p = b, a
		}
		return &Result{Kind: ZonedVsPlain, Detail: fmt.Sprintf("'%s' is zoned, '%s' is not", z.Path(), p.Path())}
	}
	h1, h2 := a.ZoneHeader(), b.ZoneHeader()
	switch {
	case h1.ZoneSize != h2.ZoneSize:
		return &Result{Kind: ZoneGeometry, Detail: fmt.Sprintf("zone size 0x%x vs 0x%x", h1.ZoneSize, h2.ZoneSize)}
	case h1.ZoneCapacity != h2.ZoneCapacity:
		return &Result{Kind: ZoneGeometry, Detail: fmt.Sprintf("zone capacity 0x%x vs 0x%x", h1.ZoneCapacity, h2.ZoneCapacity)}
	case h1.NrZones != h2.NrZones:
		return &Result{Kind: ZoneGeometry, Detail: fmt.Sprintf("%d vs %d zones", h1.NrZones, h2.NrZones)}
	case h1.ConventionalZones != h2.ConventionalZones:
		return &Result{Kind: ZoneGeometry, Detail: fmt.Sprintf("%d vs %d conventional zones", h1.ConventionalZones, h2.ConventionalZones)}
	}
	z1, z2 := a.Zones(), b.Zones()
	for i := range z1 {
		if z1[i].WP != z2[i].WP {
			return &Result{Kind: ZoneWritePointer, Zone: uint32(i), Offset: int64(z1[i].Start), WP: [2]uint64{z1[i].WP, z2[i].WP}}
		}
	}
	return nil
}
