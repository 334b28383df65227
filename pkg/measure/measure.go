// Package measure computes what `qemu-img measure` reports: the file size
// a new image needs (required: metadata plus the clusters holding data)
// and its size when every cluster is allocated (fully allocated), for a
// new image of a given size or for converting an existing image, and the
// space of the source's persistent bitmaps. The figures are qemu-img's.
//
// For a zoned image (-o zone.mode=host-managed, or a zoned source, whose
// zoned configuration convert keeps), the write-pointer table's clusters
// are counted as metadata, and only data below write pointers counts.
// Sizes are bytes.
package measure

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/zqimg/zqimg/pkg/blockdev"
	"github.com/zqimg/zqimg/pkg/convert"
	pcreate "github.com/zqimg/zqimg/pkg/create"
	"github.com/zqimg/zqimg/pkg/image"
)

// Request says what to measure.
type Request struct {
	// Format is the output format: "qcow2" or "raw".
	Format string
	// Options are the -o lists for the new image (a size given there is
	// ignored: the size comes from Size or Source, as in qemu-img).
	Options []string
	// Size is the virtual size of a new image; used when Source is nil.
	Size uint64
	// Source is the image to convert (nil to measure a new empty image).
	Source *blockdev.Disk
}

// Result is what qemu-img measure prints.
type Result struct {
	Required       uint64
	FullyAllocated uint64
	// Bitmaps is the space of the source's persistent bitmaps; nil when
	// qemu-img prints no bitmaps line (no qcow2 source, or a version 2
	// target).
	Bitmaps *uint64
	// Warnings lists values clamped by the option rules of create.
	Warnings []string
}

// UnsupportedFormatError is an output format that cannot be measured.
type UnsupportedFormatError struct{ Format string }

func (e *UnsupportedFormatError) Error() string {
	return fmt.Sprintf("Unknown file format '%s'", e.Format)
}

// Measure computes the sizes.
func Measure(r Request) (*Result, error) {
	size := r.Size
	if r.Source != nil {
		size = uint64(r.Source.Size())
	}
	switch r.Format {
	case "raw":
		for _, l := range r.Options {
			for _, item := range strings.Split(l, ",") {
				name, val, _ := strings.Cut(item, "=")
				if name == "size" || (name == "preallocation" && val == "off") || item == "" {
					continue
				}
				return nil, &pcreate.OptionError{Msg: fmt.Sprintf("Invalid parameter '%s'", name)}
			}
		}
		n := (size + 511) &^ 511
		return &Result{Required: n, FullyAllocated: n}, nil
	case "qcow2":
	default:
		return nil, &UnsupportedFormatError{Format: r.Format}
	}
	var lists []string
	if r.Source != nil && r.Source.Zoned() {
		lists = append(lists, convert.ZoneOptions(r.Source.ZoneHeader()))
	}
	lists = append(lists, r.Options...)
	lists = append(lists, "size="+strconv.FormatUint(size, 10))
	opts, err := pcreate.ParseOptions(lists, "", false)
	if err != nil {
		return nil, err
	}
	spec, err := pcreate.Resolve(opts)
	if err != nil {
		var ve *pcreate.ValidationError
		if errors.As(err, &ve) && ve.Option == "size" && strings.HasPrefix(ve.Msg, "The image size is too large") {
			// qemu-img measure's wording of create's refusal.
			return nil, &pcreate.ValidationError{Option: "size", Msg: "The image size is too large (try using a larger cluster size)"}
		}
		return nil, err
	}
	io := spec.Image
	cs := uint64(1) << io.ClusterBits
	virtual := roundUp(size, cs)
	var table uint64
	if spec.Zone != nil {
		table = roundUp(spec.Zone.MetaSize, cs)
	}
	res := &Result{Warnings: spec.Warnings}
	res.FullyAllocated = preallocSize(virtual, cs, io.RefcountOrder, io.ExtendedL2, table)
	var data uint64
	if r.Source != nil {
		if data, err = dataSize(r.Source, cs); err != nil {
			return nil, err
		}
	}
	if p := io.Preallocation; p == image.PreallocFalloc || p == image.PreallocFull {
		// Every data cluster is allocated (metadata is always counted).
		data = virtual
	}
	res.Required = res.FullyAllocated - virtual + data
	// Bitmaps count when both the source and the new image could hold
	// persistent bitmaps: qcow2 version 3 both.
	if io.Version >= 3 && r.Source != nil && r.Source.Format() == blockdev.Qcow2 && r.Source.Image().Header().Version >= 3 {
		b, err := bitmapsSize(r.Source, cs)
		if err != nil {
			return nil, err
		}
		res.Bitmaps = &b
	}
	return res, nil
}

func roundUp(v, a uint64) uint64 { return (v + a - 1) / a * a }

// preallocSize is the file size of an image of virtual bytes (a multiple
// of the cluster size cs) with every cluster allocated: header cluster,
// L2 tables, L1 table, write-pointer table (table bytes, whole clusters),
// refcount table and blocks, data.
func preallocSize(virtual, cs uint64, order uint32, extL2 bool, table uint64) uint64 {
	entry := uint64(8)
	if extL2 {
		entry = 16
	}
	meta := cs
	l2 := roundUp(virtual/cs, cs/entry)
	meta += l2 * entry
	l1 := roundUp(l2*entry/cs, cs/8)
	meta += l1 * 8
	meta += table
	_, rc := image.RefcountMetadataSize((meta+virtual)/cs, cs, order, false)
	return meta + rc + virtual
}

// dataSize adds up, as qemu-img measure does, the bytes of the clusters
// (of the new image's size cs) that hold data of the source: for each run
// of allocated data, from the start of its first cluster to the end of
// its last. Zero ranges are skipped.
func dataSize(d *blockdev.Disk, cs uint64) (uint64, error) {
	size := d.Size()
	var total uint64
	for off := int64(0); off < size; {
		s, err := d.Status(off, size-off)
		if err != nil {
			//lint:ignore ST1005 the message is qemu-img's
			return 0, fmt.Errorf("Unable to get block status: %w", err)
		}
		n := s.Len
		if !s.Zero && s.Data && s.Allocated {
			n = int64(roundUp(uint64(off+n), cs)) - off
			total += uint64(off)%cs + uint64(n)
		}
		off += n
	}
	return total, nil
}

// bitmapsSize is the space the persistent dirty bitmaps of a qcow2 source
// would take in an image of cluster size cs: each bitmap's data and table
// clusters, and the bitmap directory. Bitmaps count only when the image's
// autoclear bit says they are consistent with it.
func bitmapsSize(d *blockdev.Disk, cs uint64) (uint64, error) {
	img := d.Image()
	if img.Header().AutoclearFeatures&image.AutoclearBitmaps == 0 {
		return 0, nil
	}
	ext, ok := img.Extension(image.ExtBitmaps)
	if !ok || len(ext) < 24 {
		return 0, nil
	}
	nb := binary.BigEndian.Uint32(ext[0:])
	dirSize := binary.BigEndian.Uint64(ext[8:])
	dirOff := binary.BigEndian.Uint64(ext[16:])
	if nb == 0 || dirSize == 0 {
		return 0, nil
	}
	if dirSize > 64<<20 {
		return 0, fmt.Errorf("bitmap directory of %d bytes is too large", dirSize)
	}
	dir := make([]byte, dirSize)
	if err := img.HostReadAt(dir, int64(dirOff)); err != nil {
		return 0, fmt.Errorf("reading the bitmap directory: %w", err)
	}
	var total, dirBytes uint64
	vsize := uint64(d.Size())
	for i, p := uint32(0), 0; i < nb; i++ {
		if p+24 > len(dir) {
			return 0, errors.New("bitmap directory is truncated")
		}
		gbits := uint(dir[p+17])
		nameLen := int(binary.BigEndian.Uint16(dir[p+18:]))
		extra := int(binary.BigEndian.Uint32(dir[p+20:]))
		if gbits > 63 || p+24+extra+nameLen > len(dir) {
			return 0, errors.New("bitmap directory entry is invalid")
		}
		bits := (vsize + 1<<gbits - 1) >> gbits
		clusters := (bits + 7) / 8
		clusters = (clusters + cs - 1) / cs
		total += clusters*cs + roundUp(clusters*8, cs)
		dirBytes += roundUp(24+uint64(nameLen), 8)
		p += int(roundUp(uint64(24+extra+nameLen), 8))
	}
	return total + roundUp(dirBytes, cs), nil
}
