package image

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// File is the storage an image lives in. Writes may be buffered by the
// implementation; only Sync makes them durable. *OSFile implements it for
// regular files; tests substitute a fault-injecting implementation.
type File interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes every completed write durable (fdatasync).
	Sync() error
	// Size returns the current length of the file in bytes.
	Size() (int64, error)
	// Truncate sets the length of the file.
	Truncate(size int64) error
	// ZeroRange makes n bytes at off read as zeroes and reserves their disk
	// space (so that later writes there cannot fail for lack of space),
	// extending the file if needed. Like a write, it is durable at Sync.
	ZeroRange(off, n int64) error
	Close() error
}

// OSFile is a File backed by an operating-system file, holding QEMU-style
// image locks for as long as it is open. With direct I/O (cache modes none
// and directsync) it bypasses the page cache: requests that are not aligned
// to the device's block size go through an aligned bounce buffer, as QEMU's
// file driver does. With cache mode unsafe, Sync does nothing.
type OSFile struct {
	f      *os.File
	path   string
	noSync bool
	align  int64 // direct I/O alignment in bytes; 0 without direct I/O

	mu     sync.Mutex // guards bounce
	bounce []byte

	// directErr says why direct I/O was asked for but not used (the file
	// system refused O_DIRECT); nil otherwise.
	directErr error
	// zeroMode is how ZeroRange zeroes: 0 not probed, 1 FALLOC_FL_ZERO_RANGE,
	// 2 punch a hole then allocate, 3 write zeroes. Atomic: zeroing runs
	// in parallel (the image allocates outside its lock).
	zeroMode atomic.Int32

	behind writeBehind
}

// FileOptions say how OpenFileOptions opens an image file.
type FileOptions struct {
	ReadOnly bool
	// NoLock neither takes nor checks the image locks (qemu-img -U).
	NoLock bool
	// Cache selects direct I/O (none, directsync) and whether Sync reaches
	// the disk (not with unsafe).
	Cache CacheMode
}

// OpenOSFile opens path for reading, or for reading and writing, and takes
// the image locks QEMU's file driver takes for the same access (see Lock).
// With noLock the locks are neither taken nor checked (qemu-img -U).
func OpenOSFile(path string, readOnly, noLock bool) (*OSFile, error) {
	return OpenFileOptions(path, FileOptions{ReadOnly: readOnly, NoLock: noLock})
}

// OpenFileOptions opens path as OpenOSFile does, in the given cache mode.
// When direct I/O is asked for and the file system refuses O_DIRECT, the
// file is opened through the page cache and DirectIOError says why.
func OpenFileOptions(path string, o FileOptions) (*OSFile, error) {
	flag := os.O_RDWR
	if o.ReadOnly {
		flag = os.O_RDONLY
	}
	var directErr error
	f, err := openOS(path, flag, o.Cache.Direct())
	if err != nil && o.Cache.Direct() && errors.Is(err, unix.EINVAL) {
		directErr = fmt.Errorf("the file system of %s does not support O_DIRECT (cache mode %s); using the page cache", path, o.Cache)
		f, err = openOS(path, flag, false)
	}
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("%s: is a directory", path)
	}
	of := &OSFile{f: f, path: path, noSync: o.Cache.NoFlush(), directErr: directErr}
	if o.Cache.Direct() && directErr == nil {
		of.align = probeAlignment(f)
	}
	if !o.NoLock {
		if err := Lock(f, path, o.ReadOnly); err != nil {
			f.Close()
			return nil, err
		}
	}
	return of, nil
}

// WrapOSFile returns an OSFile over f, an already open regular file, for
// code that manages the file's life and locks itself (pkg/create builds
// images in anonymous O_TMPFILE files). Sync is fdatasync; no direct I/O.
func WrapOSFile(f *os.File) *OSFile { return &OSFile{f: f, path: f.Name()} }

func openOS(path string, flag int, direct bool) (*os.File, error) {
	if direct {
		flag |= unix.O_DIRECT
	}
	return os.OpenFile(path, flag, 0)
}

// probeAlignment finds the smallest block size direct reads accept, as
// QEMU does: 512 bytes on most devices, 4096 on 4K-native ones.
func probeAlignment(f *os.File) int64 {
	buf := alignedBuf(4096, 4096)
	for _, a := range []int64{512, 4096} {
		if _, err := unix.Pread(int(f.Fd()), buf[:a], 0); !errors.Is(err, unix.EINVAL) {
			return a
		}
	}
	return 4096
}

// alignedBuf returns n bytes whose address is a multiple of align.
func alignedBuf(n, align int) []byte {
	b := make([]byte, n+align)
	skip := (align - int(uintptr(unsafe.Pointer(&b[0]))%uintptr(align))) % align
	return b[skip : skip+n : skip+n]
}

// DirectIOError says why direct I/O was asked for but is not used, or nil.
func (o *OSFile) DirectIOError() error { return o.directErr }

func (o *OSFile) aligned(p []byte, off int64) bool {
	return off%o.align == 0 && int64(len(p))%o.align == 0 &&
		(len(p) == 0 || int64(uintptr(unsafe.Pointer(&p[0])))%o.align == 0)
}

// bounceFor returns an aligned buffer of n bytes; o.mu must be held.
func (o *OSFile) bounceFor(n int64) []byte {
	if int64(len(o.bounce)) < n {
		o.bounce = alignedBuf(int(max(n, 64<<10)), int(o.align))
	}
	return o.bounce[:n]
}

// ReadAt reads len(p) bytes at off; reads past the end return io.EOF.
func (o *OSFile) ReadAt(p []byte, off int64) (int, error) {
	if o.align == 0 || o.aligned(p, off) {
		return o.f.ReadAt(p, off)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	a := off / o.align * o.align
	b := (off + int64(len(p)) + o.align - 1) / o.align * o.align
	buf := o.bounceFor(b - a)
	n, err := o.f.ReadAt(buf, a)
	got := max(0, min(int64(n)-(off-a), int64(len(p))))
	copy(p, buf[off-a:off-a+got])
	if got < int64(len(p)) {
		if err == nil {
			err = io.EOF
		}
		return int(got), err
	}
	return len(p), nil
}

// WriteAt writes p at off. With direct I/O an unaligned request reads the
// partial head and tail blocks, merges and writes whole blocks, then cuts
// the file back if the rounding made it longer.
func (o *OSFile) WriteAt(p []byte, off int64) (int, error) {
	if o.align == 0 && !o.noSync {
		n, err := o.f.WriteAt(p, off)
		o.behind.wrote(o.f, off, int64(n))
		return n, err
	}
	if o.align == 0 || o.aligned(p, off) {
		return o.f.WriteAt(p, off)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	size, err := o.Size()
	if err != nil {
		return 0, err
	}
	a := off / o.align * o.align
	end := off + int64(len(p))
	b := (end + o.align - 1) / o.align * o.align
	buf := o.bounceFor(b - a)
	clear(buf)
	if off != a {
		if _, err := o.f.ReadAt(buf[:o.align], a); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
	}
	if end != b && (b-o.align != a || off == a) {
		if _, err := o.f.ReadAt(buf[b-a-o.align:], b-o.align); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
	}
	copy(buf[off-a:], p)
	if _, err := o.f.WriteAt(buf, a); err != nil {
		return 0, err
	}
	if b > size && end < b {
		if err := o.f.Truncate(max(size, end)); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Sync calls fdatasync (nothing in cache mode unsafe).
func (o *OSFile) Sync() error {
	if o.noSync {
		return nil
	}
	for {
		err := unix.Fdatasync(int(o.f.Fd()))
		if !errors.Is(err, unix.EINTR) {
			if err != nil {
				return fmt.Errorf("fdatasync %s: %w", o.path, err)
			}
			o.behind.synced()
			return nil
		}
	}
}

// ZeroRange zeroes and reserves [off, off+n) with fallocate: the
// FALLOC_FL_ZERO_RANGE mode where the file system has it, else a punched
// hole then a plain allocation (tmpfs), else by writing zeroes.
func (o *OSFile) ZeroRange(off, n int64) error {
	if n <= 0 {
		return nil
	}
	fd := int(o.f.Fd())
	for {
		var err error
		mode := o.zeroMode.Load()
		switch mode {
		case 0, 1:
			err = unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, off, n)
		case 2:
			err = unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
			if err == nil {
				err = unix.Fallocate(fd, 0, off, n)
			}
		default:
			return o.writeZeroes(off, n)
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || (errors.Is(err, unix.EINVAL) && mode <= 1) {
			o.zeroMode.CompareAndSwap(mode, max(mode, 1)+1)
			continue
		}
		if err != nil {
			return fmt.Errorf("fallocate %s [0x%x, 0x%x): %w", o.path, off, off+n, err)
		}
		o.zeroMode.CompareAndSwap(0, 1)
		return nil
	}
}

// Allocate reserves [off, off+n) with fallocate (mode 0: the file grows
// if needed, data already there is kept), as posix_fallocate.
func (o *OSFile) Allocate(off, n int64) error {
	if n <= 0 {
		return nil
	}
	for {
		err := unix.Fallocate(int(o.f.Fd()), 0, off, n)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
			// No fallocate: write zeroes where the file has none yet.
			size, serr := o.Size()
			if serr != nil {
				return serr
			}
			if off+n <= size {
				return nil
			}
			from := max(off, size)
			return o.writeZeroes(from, off+n-from)
		}
		if err != nil {
			return fmt.Errorf("fallocate %s [0x%x, 0x%x): %w", o.path, off, off+n, err)
		}
		return nil
	}
}

func (o *OSFile) writeZeroes(off, n int64) error {
	z := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(z)))
		if _, err := o.WriteAt(z[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// Size returns the file length.
func (o *OSFile) Size() (int64, error) {
	st, err := o.f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// Truncate sets the file length.
func (o *OSFile) Truncate(size int64) error { return o.f.Truncate(size) }

// Fd returns the file descriptor, for queries such as SEEK_DATA.
func (o *OSFile) Fd() uintptr { return o.f.Fd() }

// Close releases the locks and closes the file.
func (o *OSFile) Close() error { return o.f.Close() }

// AllocatedBytes returns the bytes the file occupies on disk (st_blocks).
func (o *OSFile) AllocatedBytes() (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(o.f.Fd()), &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}

// readFull reads exactly len(p) bytes at off; bytes past the end of the file
// read as zeroes only when the whole range starts inside the file.
func readFull(f io.ReaderAt, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %d of %d bytes at offset 0x%x lie beyond the end of the file", ErrTruncated, len(p)-n, len(p), off)
	}
	return err
}

// writeBehindBytes is how many bytes written through the page cache make
// OSFile start their writeback (in bytes).
const writeBehindBytes = 8 << 20

// writeBehind starts the writeback of page-cache writes once
// writeBehindBytes of them have accumulated, so that the disk works while
// the caller produces more data and the next Sync has less to wait for.
// It is only a hint (sync_file_range with SYNC_FILE_RANGE_WRITE): it
// neither waits for the data nor makes anything durable; Sync still does.
type writeBehind struct {
	mu      sync.Mutex
	lo, hi  int64 // the byte range written since the last hint
	pending int64 // bytes written since the last hint
	hints   int   // hints given (for tests)
}

func (w *writeBehind) wrote(f *os.File, off, n int64) {
	if n <= 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending == 0 {
		w.lo, w.hi = off, off+n
	} else {
		w.lo, w.hi = min(w.lo, off), max(w.hi, off+n)
	}
	w.pending += n
	if w.pending < writeBehindBytes {
		return
	}
	// Errors are ignored: a failed hint changes nothing (Sync reports
	// any write error).
	_ = unix.SyncFileRange(int(f.Fd()), w.lo, w.hi-w.lo, unix.SYNC_FILE_RANGE_WRITE)
	w.pending = 0
	w.hints++
}

// synced forgets the writes a Sync has made durable.
func (w *writeBehind) synced() {
	w.mu.Lock()
	w.pending = 0
	w.mu.Unlock()
}

// DataRun reports, as QEMU's file driver reports block status, the run of
// the file's bytes from off (at most n) that are all data or all zeroes:
// holes (SEEK_HOLE) and the bytes at or beyond size read as zeroes; a data
// run ends at the next hole rounded up to 512 bytes. When the file system
// cannot tell, the whole run is data.
func (o *OSFile) DataRun(off, n, size int64) (zero bool, length int64) {
	if off >= size {
		return true, n
	}
	fd := int(o.f.Fd())
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		return true, n // a hole up to the end of the file
	case err != nil:
		return false, n
	case data > off:
		return true, min(n, data-off)
	}
	hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil || hole <= off {
		hole = size
	}
	return false, min(n, (hole+511)&^511-off)
}
