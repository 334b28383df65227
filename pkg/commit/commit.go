// Package commit writes an overlay's data into its backing file, as
// qemu-img commit does.
//
// Every range the overlay itself stores (data, compressed or zero
// clusters; not the ranges it leaves to its backing file) is written into
// the backing file (zeroes as zero writes), which grows first when it is
// shorter than the overlay. The backing file is flushed and closed before
// the overlay is emptied (all its clusters deallocated, so that it reads
// through to the backing file), unless Keep (-d). A crash before the
// backing file is durable leaves the overlay as it was; after it, the
// guest view through the overlay is the same whether or not the emptying
// completed. With a base deeper in the chain (-b), the base gets what
// every image above it stores, and nothing else changes. Zoned images
// have no backing file and are refused. Offsets
// and lengths are bytes.
package commit

import (
	"errors"
	"fmt"
	"os"

	"github.com/zqimg/zqimg/pkg/blockdev"
	"github.com/zqimg/zqimg/pkg/image"
	"golang.org/x/sys/unix"
)

// Request describes one commit.
type Request struct {
	File   string // the overlay
	Format string // its format: "" (probe) or "qcow2"
	Base   string // -b: the backing file to commit into; "" for the overlay's own
	Keep   bool   // -d: do not empty the overlay (implied by Base, as in qemu-img)
	// Progress, when set, is called with the bytes handled and the total.
	Progress func(done, total int64)
}

// ErrNoBacking refuses an image without a backing file.
var ErrNoBacking = errors.New("Image does not have a backing file")

// ErrZoned refuses zoned images (docs/zones.md, "Backing files").
var ErrZoned = errors.New("a zoned image has no backing file (docs/zones.md)")

// BaseNotFoundError is a -b base that is not in the backing chain.
type BaseNotFoundError struct{ Base, File string }

func (e *BaseNotFoundError) Error() string {
	return fmt.Sprintf("Did not find '%s' in the backing chain of '%s'", e.Base, e.File)
}

// OpenError is a failure to open the overlay.
type OpenError struct {
	Path string
	Err  error
}

func (e *OpenError) Error() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }
func (e *OpenError) Unwrap() error { return e.Err }

const ioBuf = 2 << 20

// base is the backing file, opened for writing.
type base interface {
	WriteAt(p []byte, off int64) (int, error)
	zero(off, n int64) error
	size() int64
	grow(n int64) error
	Close() error
}

type qcowBase struct{ *image.Image }

// zero writes zeroes that may unmap (qemu's BDRV_REQ_MAY_UNMAP): whole
// clusters get the zero flag and are freed.
func (b qcowBase) zero(off, n int64) error { return b.Discard(off, n) }
func (b qcowBase) size() int64             { return b.Size() }
func (b qcowBase) grow(n int64) error      { return b.Resize(uint64(n), image.ResizeOptions{}) }

type rawBase struct{ f *os.File }

func (b rawBase) WriteAt(p []byte, off int64) (int, error) { return b.f.WriteAt(p, off) }

// zero punches a hole where the file system can (as qemu's raw driver),
// else writes zeroes.
func (b rawBase) zero(off, n int64) error {
	if unix.Fallocate(int(b.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n) == nil {
		return nil
	}
	z := make([]byte, min(n, ioBuf))
	for n > 0 {
		k := min(n, int64(len(z)))
		if _, err := b.f.WriteAt(z[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}
func (b rawBase) size() int64 {
	st, err := b.f.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}
func (b rawBase) grow(n int64) error { return b.f.Truncate(n) }
func (b rawBase) Close() error {
	if err := b.f.Sync(); err != nil {
		b.f.Close()
		return err
	}
	return b.f.Close()
}

// Commit writes r.File's data into its backing file and, unless r.Keep,
// empties r.File. Refusals write nothing.
func Commit(r Request) (err error) {
	if r.Format != "" && r.Format != blockdev.Qcow2 {
		return &OpenError{Path: r.File, Err: fmt.Errorf("format '%s' has no backing file", r.Format)}
	}
	top, err := image.Open(r.File, image.Options{NoBacking: true, Features: image.IncompatZoned, Cache: image.CacheWriteBack})
	if err != nil {
		return &OpenError{Path: r.File, Err: err}
	}
	defer func() {
		if top != nil {
			if cerr := top.Close(); err == nil && cerr != nil {
				err = cerr
			}
		}
	}()
	if top.Header().IncompatibleFeatures&image.IncompatZoned != 0 {
		return &OpenError{Path: r.File, Err: ErrZoned}
	}
	name, format := top.BackingFile()
	if name == "" {
		return ErrNoBacking
	}
	path := blockdev.BackingPath(r.File, name)
	// layers: the images whose data goes into the base, top first.
	layers := []*image.Image{top}
	defer func() {
		for _, l := range layers[1:] {
			l.Close()
		}
	}()
	if r.Base != "" {
		between, err := findBase(r.File, r.Base, path, format)
		if err != nil {
			return err
		}
		for _, in := range between {
			img, err := image.Open(in.path, image.Options{ReadOnly: true, NoBacking: true, Features: image.IncompatZoned})
			if err != nil {
				return fmt.Errorf("could not open backing file '%s': %w", in.path, err)
			}
			layers = append(layers, img)
			path, format = in.backing, in.backingFormat
		}
	}
	if format == "" {
		if format, err = blockdev.Probe(path); err != nil {
			return fmt.Errorf("could not open backing file '%s': %w", path, err)
		}
	}
	var b base
	switch format {
	case blockdev.Qcow2:
		img, err := image.Open(path, image.Options{Cache: image.CacheWriteBack})
		if err != nil {
			return fmt.Errorf("could not open backing file '%s': %w", path, err)
		}
		b = qcowBase{img}
	case blockdev.Raw:
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("could not open backing file '%s': %w", path, err)
		}
		if err := image.Lock(f, path, false); err != nil {
			f.Close()
			return err
		}
		b = rawBase{f}
	default:
		return fmt.Errorf("could not open backing file '%s': %w", path, &blockdev.UnknownFormatError{Format: format})
	}
	if err := copyInto(layers, b, r.Progress); err != nil {
		b.Close()
		return err
	}
	if err := b.Close(); err != nil {
		return fmt.Errorf("backing file '%s': %w", path, err)
	}
	if r.Keep || r.Base != "" {
		return nil // -b implies -d (qemu-img)
	}
	return top.MakeEmpty()
}

// layer is an image between the overlay and a -b base: its path and the
// backing file it names (resolved) with that file's format.
type layer struct{ path, backing, backingFormat string }

// findBase finds a -b base in the backing chain of file, whose own
// backing file is found at path (format: its recorded format), and
// returns the images between them (none for the own backing file).
func findBase(file, want, path, format string) ([]layer, error) {
	wst, err := os.Stat(want)
	if err != nil {
		return nil, &BaseNotFoundError{Base: want, File: file}
	}
	var between []layer
	for depth := 0; depth < image.MaxBackingDepth && path != ""; depth++ {
		st, err := os.Stat(path)
		if err != nil {
			break
		}
		if os.SameFile(st, wst) {
			return between, nil
		}
		if format == blockdev.Raw {
			break
		}
		img, err := image.Open(path, image.Options{ReadOnly: true, NoLock: true, NoBacking: true, Features: image.IncompatZoned})
		if err != nil {
			break
		}
		name, f := img.BackingFile()
		img.Close()
		if name == "" {
			break
		}
		next := blockdev.BackingPath(path, name)
		between = append(between, layer{path: path, backing: next, backingFormat: f})
		path, format = next, f
	}
	return nil, &BaseNotFoundError{Base: want, File: file}
}

// copyInto writes into b every range that one of layers (top first, each
// opened without its backing file) stores, from the topmost layer that
// stores it: data as data, zeroes as zero writes (qemu-img commit copies
// what is allocated above the base). Bytes past the end of an
// intermediate layer shorter than the top read as zeroes through it, and
// are committed as such. b grows first when it is shorter than the top.
func copyInto(layers []*image.Image, b base, progress func(done, total int64)) error {
	top := layers[0]
	size := top.Size()
	if b.size() < size {
		if err := b.grow(size); err != nil {
			return err
		}
	}
	buf := make([]byte, ioBuf)
	var n int64
	for off := int64(0); off < size; off += n {
		if progress != nil {
			progress(off, size)
		}
		n = min(ioBuf, size-off)
		var from *image.Image
		kind := image.Unallocated
		for _, l := range layers {
			if off >= l.Size() {
				kind = image.Zero // past the end of an intermediate layer
				break
			}
			ext, err := l.BlockStatus(off, min(n, l.Size()-off))
			if err != nil {
				return err
			}
			n = min(n, ext.Len)
			if ext.Kind != image.Unallocated {
				kind, from = ext.Kind, l
				break
			}
		}
		switch kind {
		case image.Unallocated:
		case image.Zero:
			if err := b.zero(off, n); err != nil {
				return err
			}
		default:
			if _, err := from.ReadAt(buf[:n], off); err != nil {
				return err
			}
			if _, err := b.WriteAt(buf[:n], off); err != nil {
				return err
			}
		}
	}
	if progress != nil {
		progress(size, size)
	}
	return nil
}
