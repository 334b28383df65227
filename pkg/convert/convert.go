// Package convert copies an image into a new one, as `qemu-img convert`
// does, keeping zones and write pointers.
//
// Sources are qcow2 (plain or zoned, read through their backing chain) and
// raw images; destinations are qcow2 (created with pkg/create from the -o
// options) and raw files. What is copied is what the guest reads: ranges
// that read as zeroes are not written (the new image reads zeroes there
// anyway), nor are 4 KiB blocks of zeroes inside data, so the destination
// is as sparse as qemu-img makes it. With compression every cluster of
// data is written compressed (zlib or zstd, the destination's
// compression_type); a cluster that does not shrink is written as it is.
//
// Zoned sources: a qcow2 destination gets the same zoned configuration
// (the -o options may change the cluster size, refcount width, extended
// L2, compression type and the zone limits, not the zone geometry) and
// every write pointer; only data below write pointers is copied. A zone
// that was finished (write pointer at the zone end with its data ending
// earlier) is written up to its last non-zero sector and finished. A
// compressed cluster in a sequential zone must lie wholly below the write
// pointer; the rest of the zone's data is written uncompressed. A raw
// destination receives the device's bytes: beyond write pointers, zeroes.
//
// Plain sources into a zoned destination (-o zone.mode=host-managed): the
// source is taken as the bytes of a zoned device. Conventional zones take
// the data as it is; each sequential zone's write pointer is placed after
// its last non-zero 512-byte sector, and the zone is FULL where that is its
// capacity. Zeroes at the end of a zone cannot be told from space never
// written (Result.Warnings says so); non-zero data beyond a zone's
// capacity cannot be represented and is refused.
//
// Crash safety: the destination is built in an anonymous temporary file
// beside it and put in place by pcreate.Install. An existing qcow2
// destination keeps its inode (content replaced in place, magic last); an
// existing raw destination, which has no magic to write last, is replaced
// by renaming the complete, synced new file over it and syncing the
// directory, so it is always the old file or the new one. On failure
// nothing is left behind (a crash can leave a hidden temporary file, never
// a half-made destination).
package convert

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/zqimg/zqimg/pkg/blockdev"
	pcreate "github.com/zqimg/zqimg/pkg/create"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// Request describes a conversion.
type Request struct {
	Source *blockdev.Disk
	// More are further sources, concatenated after Source in order
	// (qemu-img convert SRC1 SRC2 ... DST): the output is as large as
	// all of them (each but the last rounded up to 512 bytes). Plain
	// images only, and no Backing.
	More []*blockdev.Disk
	// Dest is the path of the new image; an existing file is replaced
	// (unless another process uses it).
	Dest string
	// Format is the destination format: "qcow2" or "raw".
	Format string
	// Options are the -o lists for a qcow2 destination. The size is the
	// source's (a size given here is ignored, as by qemu-img).
	Options []string
	// Compress writes compressed clusters (qcow2 destinations).
	Compress bool
	// SparseSize is the zero detection unit (-S), bytes, a multiple of 512
	// up to MaxSparseSize: blocks of zeroes that long, aligned on guest
	// offsets, are not written; 0 selects 4 KiB (qemu-img's default).
	SparseSize int64
	// Backing (-B) and BackingFormat (-F, required) give the output a
	// backing file (qcow2 outputs): only the source's top layer is copied
	// (data, and zeroes as zeroes), what its backing chain provides is
	// left to the output's backing file, as qemu-img convert -B does.
	Backing, BackingFormat string
	// backingSize is the size in bytes of the output's backing file (set
	// by Convert when Backing is): zeroes beyond it need no writing.
	backingSize int64
	// Existing (-n) writes into the existing image at Dest (qcow2 or raw,
	// not zoned, at least as large as the source) instead of creating
	// one: zeroes are written as zeroes (unmapping where possible).
	// Options must be empty (ErrExistingOptions); Backing, if set, is
	// not given to Dest but, as in qemu-img, limits the copy to the
	// source's top layer.
	Existing bool
	// FullyAllocated (-S 0) writes every byte, zeroes and the source's
	// unallocated space included (plain outputs only).
	FullyAllocated bool
	// Progress, when set, is called with the bytes processed so far and
	// the total (the source's size).
	Progress func(done, total int64)
	// Ctx, when set, cancels the conversion (checked between chunks);
	// the partial destination is removed.
	Ctx context.Context
	// InstallOptions are passed to pcreate.Install (tests inject
	// failures with them).
	InstallOptions []pcreate.Option
}

// Result describes a finished conversion.
type Result struct {
	// Warnings lists clamped option values and the limits of an import
	// into a zoned image, one sentence each.
	Warnings []string
	// Compressed and Uncompressed count the clusters written by a
	// compressed conversion, stored compressed or not.
	Compressed, Uncompressed int64
}

// MaxSparseSize is the largest -S value, as in qemu-img.
const MaxSparseSize = 16 << 20

// ErrSparseSize refuses a -S value that is not a multiple of 512 up to
// MaxSparseSize (qemu-img's message).
//
//lint:ignore ST1005 the message is qemu-img's
var ErrSparseSize = errors.New("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output).")

// ErrFullyAllocatedZoned refuses -S 0 for a zoned output.
var ErrFullyAllocatedZoned = errors.New("-S 0 cannot fully allocate a zoned image: sequential zones hold data only up to their write pointers")

// ErrTargetTooSmall refuses -n into an image smaller than the source.
//
//lint:ignore ST1005 the message is qemu-img's
var ErrTargetTooSmall = errors.New("output file is smaller than input file")

// ErrExistingZoned refuses -n with a zoned source or target.
var ErrExistingZoned = errors.New("convert -n does not write into zoned images nor copy zoned sources (use convert without -n)")

// ErrExistingOptions refuses -n with -o (qemu-img's message).
var ErrExistingOptions = errors.New("-o has no effect when skipping image creation")

// ErrConcatBacking refuses a backing file for the output of a
// concatenation (qemu-img's message).
//
//lint:ignore ST1005 the message is qemu-img's
var ErrConcatBacking = errors.New("Having a backing file for the target makes no sense when concatenating multiple input images")

// ErrConcatZoned refuses a zoned image among several sources.
var ErrConcatZoned = errors.New("convert concatenates plain images only: a zoned source must be converted on its own")

// ErrExistingCompress refuses -n with -c.
var ErrExistingCompress = errors.New("convert -n does not write compressed clusters")

// ErrCompressRaw is returned for a compressed conversion to raw.
//
//lint:ignore ST1005 the message is qemu-img's
var ErrCompressRaw = errors.New("Compression not supported for this file format")

// UnknownFormatError is a destination format zqimg cannot write.
type UnknownFormatError struct{ Format string }

func (e *UnknownFormatError) Error() string {
	return fmt.Sprintf("Unknown file format '%s'", e.Format)
}

// CreateError is a failure to create the destination with the requested
// options (qemu-img: "error while converting qcow2: ...").
type CreateError struct {
	Format string
	Err    error
}

func (e *CreateError) Error() string {
	return fmt.Sprintf("error while converting %s: %v", e.Format, e.Err)
}

func (e *CreateError) Unwrap() error { return e.Err }

// ImportWarning is the warning of a conversion from a plain image into a
// zoned one.
const ImportWarning = "each sequential zone's write pointer is placed after its last non-zero 512-byte sector: zeroes at the end of a zone cannot be told from unwritten space"

// ZoneOptions returns the -o option list that gives a new image the
// zoned configuration h (geometry and limits).
func ZoneOptions(h *zone.Header) string {
	return fmt.Sprintf("zone.mode=host-managed,zone.size=%d,zone.capacity=%d,zone.conventional_zones=%d,zone.max_open_zones=%d,zone.max_active_zones=%d,zone.max_append_bytes=%d",
		h.ZoneSize, h.ZoneCapacity, h.ConventionalZones, h.MaxOpenZones, h.MaxActiveZones, h.MaxAppendBytes)
}

// Spec resolves the -o options of a qcow2 destination for src: src's
// zoned configuration (when zoned) overridden by opts, with src's size.
// A zoned source's geometry may not change.
func Spec(src *blockdev.Disk, opts []string) (*pcreate.Spec, error) {
	return specFor(src.ZoneHeader(), src.Size(), opts)
}

// specFor resolves the -o options of a qcow2 destination of size bytes
// for a source with the zoned configuration sh (nil: plain).
func specFor(sh *zone.Header, size int64, opts []string) (*pcreate.Spec, error) {
	var lists []string
	if sh != nil {
		lists = append(lists, ZoneOptions(sh))
	}
	lists = append(lists, opts...)
	lists = append(lists, "size="+strconv.FormatInt(size, 10))
	o, err := pcreate.ParseOptions(lists, "", false)
	if err != nil {
		return nil, err
	}
	spec, err := pcreate.Resolve(o)
	if err != nil {
		return nil, err
	}
	if sh != nil {
		h := spec.Zone
		for _, c := range []struct {
			opt       string
			src, dest uint64
		}{
			{"zone.size", sh.ZoneSize, h.ZoneSize},
			{"zone.capacity", sh.ZoneCapacity, h.ZoneCapacity},
			{"zone.conventional_zones", uint64(sh.ConventionalZones), uint64(h.ConventionalZones)},
		} {
			if c.src != c.dest {
				return nil, &pcreate.ValidationError{Option: c.opt, Msg: fmt.Sprintf("%s %d differs from the source's %d: convert keeps the zone geometry and write pointers of a zoned image", c.opt, c.dest, c.src)}
			}
		}
	}
	return spec, nil
}

// Convert copies r.Source into a new image at r.Dest.
func Convert(r Request) (res *Result, err error) {
	if r.Existing && len(r.Options) > 0 {
		return nil, ErrExistingOptions
	}
	src := newSources(r.Source, r.More)
	if len(r.More) > 0 {
		for _, d := range src.disks {
			if d.Zoned() {
				return nil, fmt.Errorf("%s: %w", d.Path(), ErrConcatZoned)
			}
		}
	}
	res = &Result{}
	var spec *pcreate.Spec
	if r.Format == blockdev.Qcow2 {
		// -o backing_file and backing_fmt are -B and -F by other names
		// (the -o name wins, as in qemu-img convert).
		if o, perr := pcreate.ParseOptions(append(r.Options[:len(r.Options):len(r.Options)], "size=0"), "", false); perr == nil {
			if file, format, set := o.Backing(); set {
				r.Backing = file
				if format != "" {
					r.BackingFormat = format
				}
			} else if _, format, _ := o.Backing(); format != "" && r.Backing != "" {
				r.BackingFormat = format
			}
			r.Options = withoutBackingOptions(r.Options)
		}
	}
	if len(r.More) > 0 && r.Backing != "" {
		return nil, ErrConcatBacking
	}
	if r.Existing {
		return res, convertExisting(src, r, res)
	}
	if r.Backing != "" {
		n, err := checkBacking(r)
		if err != nil {
			return nil, err
		}
		r.backingSize = n
	}
	switch r.Format {
	case blockdev.Qcow2:
		if spec, err = specFor(src.zoneHeader(), src.Size(), r.Options); err != nil {
			return nil, &CreateError{Format: r.Format, Err: err}
		}
		if r.Backing != "" {
			if spec.Zone != nil {
				return nil, &CreateError{Format: r.Format, Err: pcreate.ErrZonedBacking}
			}
			spec.Image.BackingFile, spec.Image.BackingFormat = r.Backing, r.BackingFormat
		}
		res.Warnings = append(res.Warnings, spec.Warnings...)
	case blockdev.Raw:
		if r.Compress {
			return nil, ErrCompressRaw
		}
		for _, l := range r.Options {
			if l != "" {
				return nil, &CreateError{Format: r.Format, Err: fmt.Errorf("raw images take no options (-o %s)", l)}
			}
		}
	default:
		return nil, &UnknownFormatError{Format: r.Format}
	}
	if r.SparseSize < 0 || r.SparseSize%512 != 0 || r.SparseSize > MaxSparseSize {
		return nil, ErrSparseSize
	}
	var zplan *zonePlan
	if spec != nil && spec.Zone != nil && r.FullyAllocated {
		return nil, ErrFullyAllocatedZoned
	}
	if spec != nil && spec.Zone != nil {
		if zplan, err = planZones(src, spec.Zone); err != nil {
			return nil, err
		}
		if src.zoneHeader() == nil {
			res.Warnings = append(res.Warnings, ImportWarning)
		}
	}
	// The output is built and put in place as create does (pkg/create
	// Install): an existing destination is locked from the start and
	// replaced in place, a new one linked into place, nothing left behind.
	build := func(f *pcreate.BuildFile) error {
		var t target
		if spec != nil {
			qt, err := newQcowTarget(f, spec, r.Dest)
			if err != nil {
				return &CreateError{Format: r.Format, Err: err}
			}
			t = qt
		} else {
			rt, err := newRawTarget(f, src.Size())
			if err != nil {
				return err
			}
			t = rt
		}
		c := newCopier(src, t, r, res)
		var err error
		if zplan != nil {
			err = c.copyZoned(zplan)
		} else {
			err = c.copyAll()
		}
		if cerr := t.close(); err == nil {
			err = cerr
		}
		return err
	}
	if err := install(r.Dest, r.Format, spec == nil, build, r.InstallOptions); err != nil {
		return nil, err
	}
	return res, nil
}

// install puts the output built by build in place at dest as create puts
// a new image (pcreate.Install); a raw output, which has no magic to
// write last, replaces an existing file by renaming the complete new file
// over it. A failure to create the file is a CreateError (qemu-img:
// "error while converting raw: Could not create 'DST': Permission
// denied").
func install(dest, format string, raw bool, build func(*pcreate.BuildFile) error, extra []pcreate.Option) error {
	opts := append([]pcreate.Option{pcreate.WithTempFallback()}, extra...)
	if raw {
		opts = append(opts, pcreate.WithRenameReplace())
	}
	if err := pcreate.Install(dest, build, opts...); err != nil {
		var ce *pcreate.Error
		if errors.As(err, &ce) {
			return &CreateError{Format: format, Err: ce}
		}
		return err
	}
	return nil
}

// convertExisting copies src into the existing image r.Dest (-n). With
// r.Backing only the source's top layer is copied, its zeroes written as
// zeroes everywhere (the size of what backs Dest is not known to matter).
func convertExisting(src *sources, r Request, res *Result) error {
	if r.SparseSize < 0 || r.SparseSize%512 != 0 || r.SparseSize > MaxSparseSize {
		return ErrSparseSize
	}
	if r.Compress {
		return ErrExistingCompress
	}
	if src.zoneHeader() != nil {
		return ErrExistingZoned
	}
	if r.Backing != "" {
		r.backingSize = math.MaxInt64
	}
	var t interface {
		target
		size() int64
	}
	switch r.Format {
	case blockdev.Qcow2:
		dev, err := zone.Open(r.Dest, image.Options{Cache: image.CacheWriteBack})
		if err != nil {
			return openErr(r.Dest, err)
		}
		if dev.Zoned() {
			dev.Close()
			return ErrExistingZoned
		}
		t = &existingQcow{qcowTarget{dev: dev, cs: dev.Image().ClusterSize()}}
	case blockdev.Raw:
		f, err := os.OpenFile(r.Dest, os.O_RDWR, 0)
		if err != nil {
			return openErr(r.Dest, err)
		}
		if err := image.Lock(f, r.Dest, false); err != nil {
			f.Close()
			return err
		}
		t = &existingRaw{f: f}
	default:
		return &UnknownFormatError{Format: r.Format}
	}
	if t.size() < src.Size() {
		t.close()
		return ErrTargetTooSmall
	}
	c := newCopier(src, t, r, res)
	err := c.copyAll()
	if cerr := t.close(); err == nil {
		err = cerr
	}
	return err
}

// OpenTargetError is an existing target (-n) that cannot be opened,
// worded as qemu-img's "Could not open 'PATH': ...".
type OpenTargetError struct {
	Path string
	Err  error
}

func (e *OpenTargetError) Error() string {
	if errors.Is(e.Err, os.ErrNotExist) {
		return fmt.Sprintf("Could not open '%s': Could not open '%s': No such file or directory", e.Path, e.Path)
	}
	return fmt.Sprintf("Could not open '%s': %v", e.Path, e.Err)
}

func (e *OpenTargetError) Unwrap() error { return e.Err }

func openErr(path string, err error) error { return &OpenTargetError{Path: path, Err: err} }

// withoutBackingOptions returns the -o lists without their backing_file
// and backing_fmt items (taken into Request.Backing and BackingFormat).
func withoutBackingOptions(lists []string) []string {
	var out []string
	for _, l := range lists {
		var keep []string
		for _, it := range pcreate.SplitOptions(l) {
			k, _, _ := strings.Cut(it, "=")
			if k = strings.ReplaceAll(k, "-", "_"); k == "backing_file" || k == "backing_fmt" {
				continue
			}
			keep = append(keep, strings.ReplaceAll(it, ",", ",,"))
		}
		if len(keep) > 0 {
			out = append(out, strings.Join(keep, ","))
		}
	}
	return out
}

// checkBacking applies qemu-img convert's rules to -B: a format is
// required, the output must be qcow2, the source not zoned, and the
// backing file (relative to the output's directory) must open and not be
// zoned. It returns the backing file's size in bytes.
func checkBacking(r Request) (int64, error) {
	if r.BackingFormat == "" {
		//lint:ignore ST1005 the message is qemu-img's
		return 0, errors.New("Use of backing file requires explicit backing format")
	}
	if r.Format != blockdev.Qcow2 {
		//lint:ignore ST1005 the message is qemu-img's
		return 0, fmt.Errorf("Backing file not supported for file format '%s'", r.Format)
	}
	if r.Source.Zoned() {
		return 0, errors.New("convert -B does not copy zoned sources: a zoned image has no backing file (docs/zones.md)")
	}
	path := blockdev.BackingPath(r.Dest, r.Backing)
	d, err := blockdev.Open(path, blockdev.Options{Format: r.BackingFormat, ForceShare: true})
	if err != nil {
		return 0, fmt.Errorf("Could not open '%s': Could not open backing file: %w", r.Dest, &pcreate.BackingOpenError{Path: path, Err: err})
	}
	defer d.Close()
	size := d.Size()
	if d.Zoned() {
		return 0, fmt.Errorf("backing file '%s': %w", path, pcreate.ErrZonedBacking)
	}
	return size, nil
}
