package session

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/internal/ioshell"
	"github.com/zqimg/zqimg/pkg/create"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// openDevice opens the image r asks for: the image itself, the qcow2
// image stored in it (r.Nested), or, in snapshot mode, a temporary overlay
// of it.
func openDevice(r ioshell.OpenRequest) (ioshell.Device, error) {
	mode, err := image.ParseCacheMode(r.Cache)
	if err != nil {
		return nil, err
	}
	if r.Format == "null-co" {
		return ioshell.NewNull(r.NullSize, r.NullReadZeroes, r.ReadOnly || r.ForceShare), nil
	}
	if r.Format == "raw" {
		if r.Snapshot {
			return nil, errors.New("snapshot mode (-s) of a raw image is not supported by zqimg")
		}
		d, err := ioshell.OpenRaw(r.Path, image.FileOptions{ReadOnly: r.ReadOnly || r.ForceShare, NoLock: r.ForceShare || r.NoLock, Cache: mode})
		if err != nil {
			return nil, err
		}
		return d, nil
	}
	cacheBytes, err := r.L2CacheBytes()
	if err != nil {
		return nil, err
	}
	opts := image.Options{ReadOnly: r.ReadOnly || r.ForceShare, NoLock: r.ForceShare, Cache: mode, BackingFormat: r.BackingFormat, CacheBytes: cacheBytes, NoBacking: r.NoBacking, Event: r.EventFunc()}
	switch {
	case r.Snapshot && r.Nested:
		return nil, errors.New("snapshot mode (-s) of an image stored in another image is not supported by zqimg")
	case r.Snapshot:
		return nilIfNone(openSnapshot(r.Path, opts))
	case r.Nested:
		return nilIfNone(openNested(r.Path, opts))
	case r.Compress && r.Snapshot:
		return nil, errors.New("snapshot mode (-s) under the compress filter is not supported by zqimg")
	}
	d, err := zone.Open(r.Path, opts)
	if err != nil {
		return nil, err
	}
	if err := r.CheckCacheEntrySize(d.Image().ClusterSize()); err != nil {
		d.Close()
		return nil, err
	}
	if r.Compress {
		return ioshell.NewCompress(d), nil
	}
	return d, nil
}

// nilIfNone returns d as a shell device: nil, not a nil *zone.Device, when
// the open failed.
func nilIfNone(d *zone.Device, err error) (ioshell.Device, error) {
	if err != nil {
		return nil, err
	}
	return d, nil
}

// warnDirectIO warns when the file system refused the direct I/O the
// cache mode asked for.
func warnDirectIO(ios *cmdutil.IOStreams, d ioshell.Device) {
	switch d := d.(type) {
	case *zone.Device:
		ios.WarnDirectIO(d.Image())
	case *ioshell.RawDevice:
		ios.WarnDirectIO(d)
	}
}

// qemuOpenError words an error opening the image at path as the program
// zqimg runs as (cmdutil.IOStreams.Reason; as qemu-io, qemu's block
// layer's words: "Could not open backing file: Unknown driver 'foo'"), a
// missing image as "Could not open 'X': No such file or directory".
func qemuOpenError(ios *cmdutil.IOStreams, path string, err error) error {
	var be *image.BackingFileError
	if errors.Is(err, fs.ErrNotExist) && !errors.As(err, &be) {
		//lint:ignore ST1005 qemu's message
		return fmt.Errorf("Could not open '%s': No such file or directory", path)
	}
	return &reasonError{err: err, msg: ios.Reason(err)}
}

// tempDir is where QEMU puts the overlays of snapshot mode.
func tempDir() string {
	if d := os.Getenv("TMPDIR"); d != "" {
		return d
	}
	return "/var/tmp"
}

// openSnapshot opens a temporary overlay of the image at path, as QEMU's
// snapshot mode (-s) does: a new qcow2 image in the temporary directory,
// of the image's size, with the image (by absolute name) as its backing
// file. The image is opened read-only, as the overlay's backing file, and
// never written; the overlay is removed from the directory as soon as it
// is open, so that nothing is left behind however the session ends, and
// is written without flushes (QEMU's cache.no-flush=on): it is discarded.
// A zoned image cannot be a backing file: snapshot mode refuses it.
func openSnapshot(path string, opts image.Options) (*zone.Device, error) {
	ro := opts
	ro.ReadOnly = true
	base, err := zone.Open(path, ro)
	if err != nil {
		return nil, err
	}
	size, zoned := base.Size(), base.Zoned()
	if err := base.Close(); err != nil {
		return nil, err
	}
	if zoned {
		return nil, fmt.Errorf("snapshot mode (-s) needs a temporary overlay, and %w", create.ErrZonedBacking)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	co, err := create.ParseOptions(nil, fmt.Sprint(size), true)
	if err != nil {
		return nil, err
	}
	spec, err := create.Resolve(co)
	if err != nil {
		return nil, err
	}
	spec.Image.BackingFile, spec.Image.BackingFormat = abs, "qcow2"
	f, err := os.CreateTemp(tempDir(), "vl.")
	if err != nil {
		return nil, fmt.Errorf("Could not get temporary filename: %w", err)
	}
	name := f.Name()
	defer os.Remove(name)
	err = image.Format(image.WrapOSFile(f), spec.Image)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("creating the snapshot overlay %s: %w", name, err)
	}
	oo := opts
	oo.ReadOnly, oo.NoLock, oo.Cache = false, false, image.CacheUnsafe
	if opts.ReadOnly {
		oo.ReadOnly = true
	}
	return zone.Open(name, oo)
}

// openNested opens the qcow2 image stored, as guest data, in the qcow2
// image at path: the outer image is opened as a device and the inner one
// reads and writes through it. The inner image cannot grow beyond the
// outer image's virtual size.
func openNested(path string, opts image.Options) (*zone.Device, error) {
	outer, err := zone.Open(path, opts)
	if err != nil {
		return nil, err
	}
	io := opts
	io.NoLock = true // the outer image holds the locks
	img, err := image.OpenFile(&deviceFile{d: outer}, path, io)
	if err != nil {
		outer.Close()
		return nil, err
	}
	d, err := zone.New(img)
	if err != nil {
		img.Close()
		return nil, err
	}
	d.SetWriteThrough(opts.Cache.WriteThrough())
	return d, nil
}

// deviceFile is a device seen as the file of an image stored in it.
type deviceFile struct{ d *zone.Device }

func (f *deviceFile) ReadAt(p []byte, off int64) (int, error)  { return f.d.ReadAt(p, off) }
func (f *deviceFile) WriteAt(p []byte, off int64) (int, error) { return f.d.WriteAt(p, off) }
func (f *deviceFile) Sync() error                              { return f.d.Flush() }
func (f *deviceFile) Size() (int64, error)                     { return f.d.Size(), nil }
func (f *deviceFile) Close() error                             { return f.d.Close() }

// Truncate can only keep the size: the outer image's size is fixed.
func (f *deviceFile) Truncate(size int64) error {
	if size > f.d.Size() {
		return fmt.Errorf("the image is stored in an image of %d bytes and cannot grow to %d: %w", f.d.Size(), size, syscall.ENOSPC)
	}
	return nil
}

func (f *deviceFile) ZeroRange(off, n int64) error {
	if off+n > f.d.Size() {
		return fmt.Errorf("the image is stored in an image of %d bytes and cannot grow to %d: %w", f.d.Size(), off+n, syscall.ENOSPC)
	}
	return f.d.WriteZeroes(off, n)
}
