package convert

import (
	"fmt"
	"os"

	pcreate "github.com/zqimg/zqimg/pkg/create"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
	"golang.org/x/sys/unix"
)

// target is the new image being written.
type target interface {
	// write writes data at off.
	write(p []byte, off int64) error
	// zero makes n bytes at off read as zeroes; in a fresh image this
	// only moves a sequential zone's write pointer.
	zero(off, n int64) error
	// compress prepares a cluster for writeCompressed (safe for
	// concurrent use).
	compress(p []byte) (*image.Cluster, error)
	// writeCompressed writes a prepared cluster at off.
	writeCompressed(c *image.Cluster, off int64) (bool, error)
	// finish finishes the zone starting at off, n bytes long.
	finish(off, n int64) error
	// clusterSize is the unit of compression (0 when there is none).
	clusterSize() int64
	// close flushes everything and closes the target.
	close() error
}

// earlyWriteback asks the kernel, every few megabytes written, to start
// writing the output's dirty pages to the disk (sync_file_range with
// SYNC_FILE_RANGE_WRITE), so that the final flush has little left to wait
// for. It neither waits nor orders anything: durability and the order of
// writes remain those of the flushes of the image layer, and the kernel
// may write any dirty page at any time anyway.
type earlyWriteback struct {
	f       *os.File
	pending int64
}

const earlyWritebackBytes = 32 << 20

func newEarlyWriteback(f *os.File) *earlyWriteback {
	if f == nil {
		return nil // built in memory: nothing to write back
	}
	return &earlyWriteback{f: f}
}

func (w *earlyWriteback) wrote(n int64) {
	if w == nil {
		return
	}
	if w.pending += n; w.pending >= earlyWritebackBytes {
		_ = unix.SyncFileRange(int(w.f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
		w.pending = 0
	}
}

// newQcowTarget lays out the image of spec in f and opens it as a device.
// dest is the image's final path: a backing file name is resolved
// against its directory.
func newQcowTarget(f *pcreate.BuildFile, spec *pcreate.Spec, dest string) (*qcowTarget, error) {
	if err := image.Format(f, spec.Image); err != nil {
		return nil, err
	}
	// The build file is anonymous (or private to this process): no lock.
	// A backing file is attached (for the copy-on-write of partial
	// clusters), read-only.
	img, err := image.OpenFile(f, dest, image.Options{Features: image.IncompatZoned, NoLock: true, NoBacking: spec.Image.BackingFile == ""})
	if err != nil {
		return nil, err
	}
	dev, err := zone.New(img)
	if err != nil {
		img.Close()
		return nil, err
	}
	return &qcowTarget{dev: dev, cs: img.ClusterSize(), wb: newEarlyWriteback(f.OS())}, nil
}

// qcowTarget writes through a zone.Device, which enforces the zone rules
// and persists write pointers after the data they cover.
type qcowTarget struct {
	dev *zone.Device
	cs  int64
	wb  *earlyWriteback
}

func (t *qcowTarget) write(p []byte, off int64) error {
	_, err := t.dev.WriteAt(p, off)
	t.wb.wrote(int64(len(p)))
	return err
}

func (t *qcowTarget) zero(off, n int64) error { return t.dev.WriteZeroes(off, n) }

func (t *qcowTarget) compress(p []byte) (*image.Cluster, error) {
	return t.dev.Image().CompressCluster(p)
}

func (t *qcowTarget) writeCompressed(c *image.Cluster, off int64) (bool, error) {
	t.wb.wrote(int64(c.StreamLen()))
	return t.dev.WriteCompressed(c, off)
}

func (t *qcowTarget) finish(off, n int64) error { return t.dev.Manage(zone.OpFinish, off, n) }

func (t *qcowTarget) clusterSize() int64 { return t.cs }

func (t *qcowTarget) close() error {
	return t.dev.Close()
}

// rawTarget writes a raw file, sparse: it starts as a hole of the image's
// size, and zeroes are never written.
type rawTarget struct {
	f  *pcreate.BuildFile
	wb *earlyWriteback
}

func newRawTarget(f *pcreate.BuildFile, size int64) (*rawTarget, error) {
	if err := f.Truncate(size); err != nil {
		return nil, err
	}
	return &rawTarget{f: f, wb: newEarlyWriteback(f.OS())}, nil
}

func (t *rawTarget) write(p []byte, off int64) error {
	_, err := t.f.WriteAt(p, off)
	t.wb.wrote(int64(len(p)))
	return err
}

func (t *rawTarget) zero(off, n int64) error { return nil }

func (t *rawTarget) compress(p []byte) (*image.Cluster, error) {
	return nil, ErrCompressRaw
}

func (t *rawTarget) writeCompressed(c *image.Cluster, off int64) (bool, error) {
	return false, ErrCompressRaw
}

func (t *rawTarget) finish(off, n int64) error {
	return fmt.Errorf("a raw image has no zones")
}

func (t *rawTarget) clusterSize() int64 { return 0 }

func (t *rawTarget) close() error { return t.f.Sync() }

// existingQcow is a qcow2 image that existed before the conversion (-n):
// zeroes are written as a write of zeroes that may unmap, as qemu-img
// writes them: every whole cluster gets the zero flag, allocated or not
// (version 2 without a backing file: deallocated), so that the range
// reads as zeroes whatever the image's backing file holds.
type existingQcow struct{ qcowTarget }

func (t *existingQcow) zero(off, n int64) error { return t.dev.Image().WriteZeroesUnmap(off, n) }

func (t *existingQcow) size() int64 { return t.dev.Size() }

// existingRaw is a raw file that existed before the conversion (-n):
// zeroes punch holes where the file system can, else are written.
type existingRaw struct{ f *os.File }

func (t *existingRaw) write(p []byte, off int64) error {
	_, err := t.f.WriteAt(p, off)
	return err
}

func (t *existingRaw) zero(off, n int64) error {
	if unix.Fallocate(int(t.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n) == nil {
		return nil
	}
	z := make([]byte, min(n, bufSize))
	for n > 0 {
		k := min(n, int64(len(z)))
		if _, err := t.f.WriteAt(z[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

func (t *existingRaw) compress(p []byte) (*image.Cluster, error) { return nil, ErrCompressRaw }

func (t *existingRaw) writeCompressed(c *image.Cluster, off int64) (bool, error) {
	return false, ErrCompressRaw
}

func (t *existingRaw) finish(off, n int64) error { return fmt.Errorf("a raw image has no zones") }

func (t *existingRaw) clusterSize() int64 { return 0 }

func (t *existingRaw) size() int64 {
	st, err := t.f.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}

func (t *existingRaw) close() error {
	err := t.f.Sync()
	if cerr := t.f.Close(); err == nil {
		err = cerr
	}
	return err
}
