// Package blockdev opens disk images for the commands that read whole
// images (map, compare, convert, measure) and answers QEMU's two
// questions about them: what the guest reads (ReadAt) and how each range
// is stored (block status), with the semantics of QEMU's block layer so
// that the commands can give qemu-img's answers.
//
// Two formats are read: qcow2 (plain or zoned, through its backing chain)
// and raw. Without an explicit format, a file is probed as qemu-img does:
// qcow2 when it starts with the qcow2 magic, raw otherwise.
//
// In a zoned image nothing at or beyond the write pointer of a sequential
// zone is data: it reads as zeroes and its block status is that of
// unallocated space (zero, not allocated), whatever clusters a crash may
// have left there. Offsets and lengths are bytes.
package blockdev

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// Format names, as qemu-img spells them.
const (
	Qcow2 = "qcow2"
	Raw   = "raw"
)

// Options control how a disk is opened.
type Options struct {
	// Format is "qcow2", "raw", or "" to probe.
	Format string
	// ForceShare opens without taking image locks (qemu-img -U).
	ForceShare bool
	// Snapshot, when set, reads that internal snapshot of a qcow2 image
	// instead of its active disk (qemu-img convert -l).
	Snapshot image.SnapshotRef
	// Event is the qcow2 image's event hook (image.Options.Event:
	// blkdebug's error injection).
	Event func(string) error
	// Name, when not empty, is the name messages give the image (the
	// operand as given: a blkdebug: or json: name) in place of its path.
	Name string
}

// UnknownFormatError is a format name this package cannot read.
type UnknownFormatError struct{ Format string }

func (e *UnknownFormatError) Error() string {
	return fmt.Sprintf("Unknown driver '%s' (zqimg reads qcow2 and raw images)", e.Format)
}

// QEMUMessage is QEMU's "Unknown driver 'FORMAT'".
func (e *UnknownFormatError) QEMUMessage() string {
	return fmt.Sprintf("Unknown driver '%s'", e.Format)
}

// Disk is an image opened read-only.
type Disk struct {
	path   string
	name   string // for messages; "" means path
	format string
	size   int64

	dev     *zone.Device // qcow2
	img     *image.Image // qcow2: dev's image
	zones   []zone.Zone  // zoned qcow2: every zone, as opened
	zh      *zone.Header
	backing *Disk // qcow2 with a backing file: the backing image, for block status
	// preallocOnce decides prealloc, metadataPreallocated's answer.
	preallocOnce sync.Once
	prealloc     bool

	raw     *image.OSFile // raw
	rawSize int64         // length of the raw file
	// null: QEMU's null-co driver (no file): every byte reads as zero;
	// nullZeroes says whether block status says so (read-zeroes=on),
	// else it reports data.
	null, nullZeroes bool
	// borrowed: a backing disk, whose files belong to the image above it
	// (Close leaves them to that image).
	borrowed bool
}

// Open opens the image at path read-only, taking reader locks unless
// o.ForceShare. A qcow2 image's backing chain is opened too.
func Open(path string, o Options) (*Disk, error) {
	format := o.Format
	switch format {
	case "", Qcow2, Raw:
	default:
		return nil, &UnknownFormatError{Format: format}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	f.Close()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("'%s' is not a regular file", path)
	}
	if format == "" {
		if format, err = Probe(path); err != nil {
			return nil, err
		}
	}
	if format == Raw {
		if !o.Snapshot.IsZero() {
			return nil, fmt.Errorf("a raw image has no internal snapshots: %w", image.ErrSnapshotNotFound)
		}
		return openRaw(path, o)
	}
	return openQcow2(path, o)
}

// OpenNull returns a disk of size bytes on QEMU's null-co driver, named
// name in messages: it reads zeroes, and its block status reports them as
// zeroes when readZeroes (read-zeroes=on), else as data, as null-co does.
func OpenNull(name string, size int64, readZeroes bool) *Disk {
	return &Disk{name: name, format: "null-co", size: size, null: true, nullZeroes: readZeroes}
}

// Probe guesses the format of the file at path as qemu-img does: qcow2
// when it starts with the qcow2 magic and a version of at least 2, raw
// otherwise.
func Probe(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var b [8]byte
	n, err := f.ReadAt(b[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if n == 8 && binary.BigEndian.Uint32(b[:]) == image.Magic && binary.BigEndian.Uint32(b[4:]) >= 2 {
		return Qcow2, nil
	}
	return Raw, nil
}

func openQcow2(path string, o Options) (*Disk, error) {
	dev, err := zone.Open(path, image.Options{ReadOnly: true, NoLock: o.ForceShare, Snapshot: o.Snapshot, Event: o.Event})
	if err != nil {
		return nil, err
	}
	d := &Disk{path: path, name: o.Name, format: Qcow2, dev: dev, img: dev.Image(), size: dev.Size()}
	if dev.Zoned() {
		d.zh = dev.Header()
		if d.zones, err = dev.Report(0, uint64(d.zh.NrZones)); err != nil {
			dev.Close()
			return nil, err
		}
	}
	if d.backing, err = backingDisks(path, d.img); err != nil {
		dev.Close()
		return nil, err
	}
	return d, nil
}

// backingDisks describes the backing chain that img (opened from path)
// has already opened, without opening any file again: each image of a
// chain is opened once, by the top image, which owns and closes them all.
// Opening each level's chain anew made a chain of n images cost n²/2
// opens, with their tables in memory.
func backingDisks(path string, img *image.Image) (*Disk, error) {
	name, _ := img.BackingFile()
	bimg, braw := img.Backing()
	bpath := BackingPath(path, name)
	switch {
	case bimg != nil:
		d := &Disk{path: bpath, format: Qcow2, img: bimg, size: bimg.Size(), borrowed: true}
		var err error
		d.backing, err = backingDisks(bpath, bimg)
		return d, err
	case braw != nil:
		n, err := braw.Size()
		if err != nil {
			return nil, fmt.Errorf("backing file %s: %w", bpath, err)
		}
		// QEMU sees a file as whole 512-byte sectors; the tail reads as zeroes.
		return &Disk{path: bpath, format: Raw, raw: braw, rawSize: n, size: (n + 511) &^ 511, borrowed: true}, nil
	}
	return nil, nil
}

// BackingPath returns the path of a backing file named name in the image
// at path: name itself when absolute, else name in path's directory
// (QEMU's path_combine, which keeps the directory as written).
func BackingPath(path, name string) string { return image.CombinePath(path, name) }

func openRaw(path string, o Options) (*Disk, error) {
	f, err := image.OpenOSFile(path, true, o.ForceShare)
	if err != nil {
		return nil, err
	}
	n, err := f.Size()
	if err != nil {
		f.Close()
		return nil, err
	}
	// QEMU sees a file as whole 512-byte sectors; the tail reads as zeroes.
	return &Disk{path: path, name: o.Name, format: Raw, raw: f, rawSize: n, size: (n + 511) &^ 511}, nil
}

// Close closes the disk and its backing chain (a backing disk, as
// returned by Backing, is closed with the disk on top of the chain: its
// own Close does nothing).
func (d *Disk) Close() error {
	if d.borrowed || d.null {
		return nil
	}
	if d.dev != nil {
		return d.dev.Close()
	}
	return d.raw.Close()
}

// Path returns the name the disk was opened with.
func (d *Disk) Path() string { return d.path }

// Name returns the name messages give the image: Options.Name, or its path.
func (d *Disk) Name() string {
	if d.name != "" {
		return d.name
	}
	return d.path
}

// Format returns "qcow2" or "raw".
func (d *Disk) Format() string { return d.format }

// Size returns the virtual size in bytes.
func (d *Disk) Size() int64 { return d.size }

// Image returns the qcow2 image (nil for a raw disk).
func (d *Disk) Image() *image.Image { return d.img }

// Zoned reports whether the disk is a zoned qcow2 image.
func (d *Disk) Zoned() bool { return d.zh != nil }

// ZoneHeader returns the zoned extension (nil when not zoned).
func (d *Disk) ZoneHeader() *zone.Header {
	if d.zh == nil {
		return nil
	}
	h := *d.zh
	return &h
}

// Zones returns every zone as it was when the disk was opened (nil when
// not zoned). The slice must not be modified.
func (d *Disk) Zones() []zone.Zone { return d.zones }

// Backing returns the backing disk (nil when there is none).
func (d *Disk) Backing() *Disk { return d.backing }

// ValidEnd returns the end of the data of zone z: its write pointer,
// bounded by its capacity, for a sequential zone; its end for a
// conventional one. Bytes from there to the zone end read as zeroes.
func ValidEnd(z zone.Zone) uint64 {
	if z.Type == zone.TypeConventional {
		return z.Start + z.Len
	}
	return min(z.WP, z.Start+z.Cap)
}

// zoneAt returns the zone holding byte off of a zoned disk.
func (d *Disk) zoneAt(off int64) zone.Zone {
	return d.zones[uint64(off)/d.zh.ZoneSize]
}

// ReadAt reads guest data; unwritten bytes, and bytes at or beyond the
// write pointer of a sequential zone, read as zeroes.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > d.size || int64(len(p)) > d.size-off {
		return 0, fmt.Errorf("%w: %d bytes at offset 0x%x, image size 0x%x", image.ErrOutOfRange, len(p), off, d.size)
	}
	if d.null {
		clear(p)
		return len(p), nil
	}
	if d.raw != nil {
		n, err := d.raw.ReadAt(p, off)
		if n < len(p) {
			if err != nil && !errors.Is(err, io.EOF) {
				return n, err
			}
			clear(p[n:])
		}
		return len(p), nil
	}
	// The device reads zeroes at and beyond write pointers; a backing
	// disk (never zoned) is read from its image.
	var err error
	if d.dev != nil {
		_, err = d.dev.ReadAt(p, off)
	} else {
		_, err = d.img.ReadAt(p, off)
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}
