// Package rebase changes the backing file of a qcow2 image, as qemu-img
// rebase does.
//
// In safe mode (the default) every range the image leaves to its backing
// file (unallocated in the image itself) is read from the old backing
// chain and from the new backing file; the 512-byte sectors that differ
// get the old content written into the image (zeroes written as zeroes
// where the old chain is shorter), so that the guest sees the same disk
// after the change. The data is flushed before the header names the new
// backing file. In unsafe mode (-u) only the header changes. An image
// without a backing file gets the new name without any copy, as
// qemu-img does.
//
// The header switch is crash-safe (image.SetBacking): a crash leaves the
// old backing file or the new one. Offsets and lengths are bytes.
package rebase

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/zqimg/zqimg/pkg/blockdev"
	"github.com/zqimg/zqimg/pkg/image"
)

// Request describes one rebase.
type Request struct {
	File          string // the image to change
	Format        string // its format: "" (probe), "qcow2"; "raw" cannot have a backing file
	Backing       string // the new backing file name, stored as given; "" removes it
	BackingFormat string // its format ("qcow2" or "raw"); required with a name
	Unsafe        bool   // change the header only (-u)
	// Progress, when set, is called with the bytes handled and the total.
	Progress func(done, total int64)
}

// ChangeError is a backing file that cannot be set, worded as qemu-img's
// "Could not change the backing file to 'NAME': REASON". Nothing was
// written.
type ChangeError struct {
	Backing string
	Err     error
}

func (e *ChangeError) Error() string {
	return fmt.Sprintf("Could not change the backing file to '%s': %v", e.Backing, e.Err)
}

func (e *ChangeError) Unwrap() error { return e.Err }

// ErrNoBackingFormat refuses a new backing file without a format.
var ErrNoBackingFormat = errors.New("backing format must be specified")

// ErrNotSupported refuses a format that has no backing file (raw).
var ErrNotSupported = errors.New("Operation not supported")

// ErrZoned refuses zoned images, which have no backing chain
// (docs/zones.md, "Backing files").
var ErrZoned = errors.New("a zoned image has no backing file (docs/zones.md)")

// OpenError is a failure to open the image itself.
type OpenError struct {
	Path string
	Err  error
}

func (e *OpenError) Error() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }
func (e *OpenError) Unwrap() error { return e.Err }

// NewBackingError is a new backing file that cannot be opened, worded
// as qemu-img's "Could not open new backing file 'PATH': REASON".
type NewBackingError struct {
	Path string // resolved against the image's directory
	Err  error
}

func (e *NewBackingError) Error() string {
	return fmt.Sprintf("Could not open new backing file '%s': %v", e.Path, e.Err)
}

func (e *NewBackingError) Unwrap() error { return e.Err }

// ioBuf is how much is compared at a time, as qemu-img's IO_BUF_SIZE.
const ioBuf = 2 << 20

// sector is the unit in which old and new content are compared.
const sector = 512

// Rebase changes r.File's backing file. On every refusal nothing is
// written.
func Rebase(r Request) (err error) {
	format := r.Format
	if format == "" {
		if format, err = blockdev.Probe(r.File); err != nil {
			return &OpenError{Path: r.File, Err: err}
		}
	}
	switch format {
	case blockdev.Qcow2:
	case blockdev.Raw:
		return &ChangeError{Backing: r.Backing, Err: ErrNotSupported}
	default:
		return &OpenError{Path: r.File, Err: &blockdev.UnknownFormatError{Format: format}}
	}
	if r.Backing != "" && r.BackingFormat == "" {
		return &ChangeError{Backing: r.Backing, Err: ErrNoBackingFormat}
	}
	if err := refuseZoned(r.File); err != nil {
		return err
	}
	img, err := image.Open(r.File, image.Options{NoBacking: r.Unsafe, Cache: image.CacheWriteBack})
	if err != nil {
		return &OpenError{Path: r.File, Err: err}
	}
	defer func() {
		if cerr := img.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	oldSize, hasOld := img.BackingSize()
	if !r.Unsafe && (hasOld || r.Backing != "") {
		// Without an old backing file, what the image leaves unallocated
		// reads as zeroes (oldSize 0): where the new backing file holds
		// data, zeroes are written so that nothing the guest sees changes.
		var nb *blockdev.Disk
		if r.Backing != "" {
			path := blockdev.BackingPath(r.File, r.Backing)
			if nb, err = blockdev.Open(path, blockdev.Options{Format: r.BackingFormat}); err != nil {
				return &NewBackingError{Path: path, Err: err}
			}
			defer nb.Close()
			if nb.Zoned() {
				return &NewBackingError{Path: path, Err: errors.New("a zoned image cannot be a backing file (docs/zones.md)")}
			}
		}
		if err := copyDiffering(img, oldSize, hasOld, nb, r.Progress); err != nil {
			return err
		}
		if err := img.Flush(); err != nil {
			return err
		}
	}
	return img.SetBacking(r.Backing, r.BackingFormat)
}

// refuseZoned returns ErrZoned for a zoned image (opened for reading,
// without its backing chain).
func refuseZoned(path string) error {
	img, err := image.Open(path, image.Options{ReadOnly: true, NoBacking: true, Features: image.IncompatZoned})
	if err != nil {
		return &OpenError{Path: path, Err: err}
	}
	zoned := img.Header().IncompatibleFeatures&image.IncompatZoned != 0
	img.Close()
	if zoned {
		return &OpenError{Path: path, Err: ErrZoned}
	}
	return nil
}

// copyDiffering writes into img, in every range img leaves to its backing
// file, the sectors whose content differs between the old backing chain
// (oldSize bytes; zeroes beyond; hasOld false: none) and nb (nil: none,
// all zeroes).
func copyDiffering(img *image.Image, oldSize int64, hasOld bool, nb *blockdev.Disk, progress func(done, total int64)) error {
	size := img.Size()
	var newSize int64
	if nb != nil {
		newSize = nb.Size()
	}
	bufOld, bufNew := make([]byte, ioBuf), make([]byte, ioBuf)
	var n int64
	for off := int64(0); off < size; off += n {
		if progress != nil {
			progress(off, size)
		}
		n = min(ioBuf, size-off)
		ext, err := img.BlockStatus(off, n)
		if err != nil {
			return err
		}
		n = ext.Len
		if ext.Kind != image.Unallocated {
			continue
		}
		oldZero := off >= oldSize
		if oldZero {
			clear(bufOld[:n])
		} else {
			n = min(n, oldSize-off)
			if _, err := img.ReadAt(bufOld[:n], off); err != nil {
				return err
			}
		}
		if off >= newSize {
			clear(bufNew[:n])
		} else {
			n = min(n, newSize-off)
			if _, err := nb.ReadAt(bufNew[:n], off); err != nil {
				return err
			}
		}
		for w := int64(0); w < n; {
			differ, run := compareSectors(bufOld[w:n], bufNew[w:n])
			if differ {
				switch {
				case oldZero && !hasOld:
					err = writeZeroesOverUnallocated(img, off+w, run)
				case oldZero:
					err = img.WriteZeroes(off+w, run)
				default:
					_, err = img.WriteAt(bufOld[w:w+run], off+w)
				}
				if err != nil {
					return err
				}
			}
			w += run
		}
	}
	if progress != nil {
		progress(size, size)
	}
	return nil
}

// writeZeroesOverUnallocated makes n unallocated bytes at off, in an image
// opened without a backing file, read as zeroes once a backing file is
// attached: whole clusters of a version 3 image get the zero flag (as
// qemu-img's write of zeroes leaves them); the rest is written as zero
// data, since without a backing file the image thinks it already reads
// as zeroes there and would change nothing.
func writeZeroesOverUnallocated(img *image.Image, off, n int64) error {
	cs := img.ClusterSize()
	end := off + n
	if img.Header().Version >= 3 {
		lo, hi := (off+cs-1)/cs*cs, end/cs*cs
		if end == img.Size() {
			hi = end
		}
		if lo < hi {
			if err := writeZeroData(img, off, lo-off); err != nil {
				return err
			}
			if err := img.WriteZeroes(lo, hi-lo); err != nil {
				return err
			}
			off = hi
		}
	}
	return writeZeroData(img, off, end-off)
}

// writeZeroData writes n zero bytes at off as data.
func writeZeroData(img *image.Image, off, n int64) error {
	if n <= 0 {
		return nil
	}
	_, err := img.WriteAt(make([]byte, n), off)
	return err
}

// compareSectors reports whether the first 512-byte sectors of a and b
// differ, and for how many bytes from the start the sectors keep that
// answer (qemu-img's compare_buffers).
func compareSectors(a, b []byte) (bool, int64) {
	i := min(len(a), sector)
	differ := !bytes.Equal(a[:i], b[:i])
	for i < len(a) {
		j := min(len(a), i+sector)
		if !bytes.Equal(a[i:j], b[i:j]) != differ {
			break
		}
		i = j
	}
	return differ, int64(i)
}
