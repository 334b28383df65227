package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/zqimg/zqimg/pkg/internal/arith"
	"golang.org/x/sys/unix"
)

// Options control how an image is opened.
type Options struct {
	// ReadOnly opens the image for reading only (and takes reader locks).
	ReadOnly bool
	// Features lists incompatible feature bits implemented by the caller on
	// top of this package (IncompatZoned for the zoned layer). Images with
	// any other unknown incompatible bit are refused.
	Features uint64
	// NoLock skips QEMU-compatible image locking (qemu-img's -U).
	NoLock bool
	// NoBacking leaves the backing file closed: unallocated clusters then
	// read as zeroes, and writes are refused if they would need it.
	NoBacking bool
	// Event, when set, is called at the points of the image's work that
	// QEMU's blkdebug driver names (EventL2Update: before an L2 table is
	// written back); an error it returns fails that work as a write error
	// of the file would (debugging: error injection).
	Event func(name string) error
	// Snapshot, when set, makes the image read that internal snapshot's
	// disk instead of the active one (read-only, non-zoned images only;
	// qemu-img convert -l).
	Snapshot SnapshotRef
	// CacheBytes bounds the L2 table cache; 0 selects 32 MiB.
	CacheBytes int
	// BackingFormat, when not "", is the format of the backing file
	// ("qcow2" or "raw"), in place of the one the image records (its
	// backing format extension, or probing without one): qemu-io's open
	// -o backing.driver=FORMAT. It applies to this image's backing file
	// only; the levels below use what their images record.
	BackingFormat string
	// Cache is the cache mode (qemu-io's -t). The zero value is writeback.
	// Writethrough is carried out by the layer that completes requests
	// (zone.Device flushes after every write); O_DIRECT and unsafe are
	// carried out by the file.
	Cache CacheMode

	// chain lists the files of the backing chain opened so far (the
	// overlays of this image), to detect loops and bound the depth.
	chain []fileID
}

// EventL2Update is the blkdebug event of an L2 table written back.
const EventL2Update = "l2_update"

// EventReadAIO is the blkdebug event of guest data read from the image's
// file (data clusters; QEMU's read_aio).
const EventReadAIO = "read_aio"

// MaxBackingDepth bounds the length of a backing chain: a deeper chain is
// refused rather than opened file after file.
const MaxBackingDepth = 256

// fileID identifies a file whatever the path that names it.
type fileID struct{ dev, ino uint64 }

// BackingChainError reports a backing chain that loops or is too deep. It
// is returned as it is through every level of the chain.
type BackingChainError struct {
	Chain []string // the file names, from the top image down
	Loop  bool     // false: the chain exceeds MaxBackingDepth
}

func (e *BackingChainError) Error() string {
	if e.Loop {
		return fmt.Sprintf("backing chain loops: %s names %s as its backing file, which is already in the chain", e.Chain[len(e.Chain)-2], e.Chain[len(e.Chain)-1])
	}
	return fmt.Sprintf("backing chain is deeper than %d images (from %s)", MaxBackingDepth, e.Chain[0])
}

// Image is an open qcow2 image. It is safe for concurrent use: mu
// serialises the work on metadata and caches, while the transfer of guest
// data to and from clusters that are already mapped runs outside it, so
// that reads, and writes over allocated clusters, are in flight at once
// (see io).
//
// Writes follow the order data, refcount blocks, L2 tables, L1 table, with a
// sync before each structure that depends on what was just written. Metadata
// is cached and written back lazily (at Flush, Close, or when the cache is
// full); references dropped by a write are only freed once the metadata no
// longer pointing at them is durable. A crash can therefore leak clusters
// but never leave a reference to unwritten data or a refcount lower than
// the references on disk.
type Image struct {
	// io fences the data transfers that run outside mu. ReadAt and the
	// in-place path of WriteAt hold it shared: they map the request under
	// mu, release mu, and move the data to or from clusters that stay
	// theirs until they release io. Every operation that may free, move or
	// reallocate a cluster, sync, or close holds it exclusively (lock), so
	// that it never runs while such a transfer is in flight. Lock order:
	// io, then mu.
	io    sync.RWMutex
	mu    sync.Mutex
	raw   File        // the file as opened
	f     guardedFile // every write goes through here (see writable)
	name  string
	ro    bool
	hdr   Header
	exts  []Extension
	feats []Feature

	backingName   string
	backingFormat string
	backing       backingFile

	cs      uint64 // cluster size, bytes
	cb      uint32 // cluster bits
	l2Bits  uint32 // log2 of entries per L2 table
	l2Ents  uint64 // entries per L2 table
	entSize uint64 // bytes per L2 entry (8, or 16 with extended L2)
	extL2   bool
	subSize uint64 // subcluster size (cs/32 with extended L2, else cs)

	l1      sparseTable             // the active L1 table
	l1Dirty map[uint64]struct{}     // dirty 512-byte sectors of the L1 table
	event   func(name string) error // Options.Event

	rc  refcounts
	l2c *metaCache

	// allocating holds the guest clusters (index) that a write is
	// allocating with mu released (writeAllocating); allocDone (on mu)
	// is signalled when such a write completes.
	allocating map[uint64]struct{}
	allocDone  *sync.Cond

	// fileEnd is a lower bound of the file's length in bytes (0: not
	// known), so that beyondEOF needs no fstat for offsets below it. The
	// file only grows, except through guardedFile.Truncate, which resets it.
	fileEnd atomic.Uint64

	deallocating bool     // MakeEmpty is running (under mu): zeroed entries become unallocated
	pendingFree  []extent // references dropped; freed after the next durable writeback
	unsynced     bool     // the file was changed since the last sync
	corrupt      bool
	closed       bool
	meta         *metaIndex   // the metadata clusters, for the overlap check (overlap.go); nil: to build
	layers       []layerTable // metadata of layers above (SetLayerTable)
	zbuf         zcache
	cz           compressState // where the next compressed stream goes (compress.go)
}

type extent struct{ off, len uint64 }

// backingFile is what a backing image must provide.
type backingFile interface {
	io.ReaderAt
	Close() error
}

// Open opens the qcow2 image at path, taking QEMU-compatible locks.
func Open(path string, opts Options) (*Image, error) {
	f, err := OpenFileOptions(path, FileOptions{ReadOnly: opts.ReadOnly, NoLock: opts.NoLock, Cache: opts.Cache})
	if err != nil {
		return nil, err
	}
	img, err := OpenFile(f, path, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return img, nil
}

// OpenFile opens an image stored in f; name is used to resolve a relative
// backing file name and in messages. On success the Image owns f.
func OpenFile(f File, name string, opts Options) (*Image, error) {
	return openFile(f, name, opts, true)
}

// openFile opens an image; checkMeta enables the metadata refcount check of
// writable opens (Format opens images whose refcounts are not written yet).
func openFile(f File, name string, opts Options, checkMeta bool) (*Image, error) {
	img := &Image{raw: f, name: name, ro: opts.ReadOnly, l1Dirty: map[uint64]struct{}{}, allocating: map[uint64]struct{}{}, event: opts.Event}
	img.allocDone = sync.NewCond(&img.mu)
	img.f = guardedFile{File: f, img: img}
	fileSize, hc, err := readHeaderCluster(f)
	if err != nil {
		return nil, err
	}
	h, err := ParseHeader(hc)
	if err != nil {
		return nil, err
	}
	if uint64(fileSize) < uint64(h.HeaderLength) {
		return nil, formatErr(0, "file of %d bytes is too short for its header", fileSize)
	}
	img.hdr = *h
	img.setGeometry()
	cluster := make([]byte, img.cs) // hc may be shorter (a short file) or longer (small clusters)
	copy(cluster, hc)
	hc = cluster
	if err := img.loadExtensions(hc); err != nil {
		return nil, err
	}
	if err := img.checkFeatures(opts); err != nil {
		return nil, err
	}
	if err := img.loadL1(fileSize); err != nil {
		return nil, err
	}
	if err := img.rc.init(img, fileSize); err != nil {
		return nil, err
	}
	cache := opts.CacheBytes
	if cache <= 0 {
		cache = 32 << 20
	}
	img.l2c = newMetaCache(img.f, int(img.cs), cache, "L2 table")
	img.l2c.guard = img.tableGuard(metaActiveL2)
	if img.ro {
		// Nothing is ever dirty: a small budget may hold fewer tables
		// than the 16 a writable image keeps (backing images, see
		// backingCacheBytes).
		img.l2c.max = max(4, cache/int(img.cs))
	}
	if !img.ro && checkMeta {
		if err := img.checkMetadataRefcounts(); err != nil {
			return nil, err
		}
	}
	if !img.ro && h.AutoclearFeatures != 0 {
		// We maintain no autoclear feature (bitmaps): clear the bits before
		// writing, as the specification requires.
		img.hdr.AutoclearFeatures = 0
		if err := img.writeHeaderField(HdrAutoclearFeatures, 8, 0); err != nil {
			return nil, err
		}
	}
	if !opts.Snapshot.IsZero() {
		if err := img.loadSnapshotView(opts.Snapshot, fileSize); err != nil {
			return nil, err
		}
	}
	if img.backingName != "" && !opts.NoBacking {
		if err := img.attachBacking(opts); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// readHeaderCluster returns the file size and the first cluster of the
// file (or less, if the file is shorter). The cluster size is in the
// first bytes; the header may fill the cluster.
func readHeaderCluster(f File) (int64, []byte, error) {
	fileSize, err := f.Size()
	if err != nil {
		return 0, nil, err
	}
	first := make([]byte, min(fileSize, 4096))
	if _, err := f.ReadAt(first, 0); err != nil && !errors.Is(err, io.EOF) {
		return 0, nil, err
	}
	if len(first) >= HdrClusterBits+4 {
		cb := binary.BigEndian.Uint32(first[HdrClusterBits:])
		if cb >= MinClusterBits && cb <= MaxClusterBits && int64(1)<<cb > int64(len(first)) {
			first = make([]byte, min(fileSize, int64(1)<<cb))
			if _, err := f.ReadAt(first, 0); err != nil && !errors.Is(err, io.EOF) {
				return 0, nil, err
			}
		}
	}
	return fileSize, first, nil
}

// setGeometry derives the cluster and L2 geometry from the header.
func (img *Image) setGeometry() {
	h := &img.hdr
	img.cb = h.ClusterBits
	img.cs = 1 << h.ClusterBits
	img.extL2 = h.ExtendedL2()
	img.entSize = 8
	img.subSize = img.cs
	if img.extL2 {
		img.entSize = 16
		img.subSize = img.cs / 32
	}
	img.l2Ents = img.cs / img.entSize
	img.l2Bits = uint32(log2(img.l2Ents))
}

// loadExtensions parses the header extensions and the backing file name
// of the header cluster hc.
func (img *Image) loadExtensions(hc []byte) error {
	h := &img.hdr
	exts, err := HeaderExtensions(h, hc)
	if err != nil {
		return err
	}
	img.exts = exts
	img.feats = FeatureTable(exts)
	for _, e := range exts {
		if e.Magic == ExtBackingFormat {
			img.backingFormat = string(e.Data)
		}
	}
	if h.BackingFileOffset != 0 {
		img.backingName = string(hc[h.BackingFileOffset : h.BackingFileOffset+uint64(h.BackingFileSize)])
	}
	return nil
}

// attachBacking opens the backing file. A loop or an overly deep chain is
// reported once, as it is, whatever the level that found it.
func (img *Image) attachBacking(opts Options) error {
	b, err := img.openBacking(opts)
	if err != nil {
		var ce *BackingChainError
		if errors.As(err, &ce) {
			return ce
		}
		return &BackingFileError{Name: img.backingName, Err: err}
	}
	img.backing = b
	return nil
}

// openBacking opens the backing file, refusing a chain that comes back to
// a file already in it or grows past MaxBackingDepth.
func (img *Image) openBacking(opts Options) (backingFile, error) {
	path := img.backingPath()
	chain := opts.chain
	if len(chain) == 0 {
		if id, ok := statID(img.name); ok {
			chain = []fileID{id}
		}
	}
	names := []string{img.name, path}
	id, ok := statID(path)
	if ok {
		for _, c := range chain {
			if c == id {
				return nil, &BackingChainError{Chain: names, Loop: true}
			}
		}
	}
	if len(chain) >= MaxBackingDepth {
		return nil, &BackingChainError{Chain: names}
	}
	opts.chain = append(append([]fileID(nil), chain...), id)
	format := img.backingFormat
	if opts.BackingFormat != "" {
		format = opts.BackingFormat
	}
	opts.BackingFormat = ""
	return openBacking(path, format, opts)
}

// statID returns the identity of the file at path.
func statID(path string) (fileID, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileID{}, false
	}
	return fileID{uint64(st.Dev), st.Ino}, true
}

func (img *Image) checkFeatures(opts Options) error {
	h := &img.hdr
	known := IncompatDirty | IncompatCorrupt | IncompatCompression | IncompatExtL2 | opts.Features
	if unk := h.IncompatibleFeatures &^ known; unk != 0 {
		return &UnsupportedFeatureError{Names: FeatureNames(img.feats, unk)}
	}
	if h.CryptMethod != 0 {
		kind := "unknown method"
		switch h.CryptMethod {
		case 1:
			kind = "AES"
		case 2:
			kind = "LUKS"
		}
		return &UnsupportedFeatureError{Names: []string{fmt.Sprintf("encryption (crypt_method %d, %s)", h.CryptMethod, kind)}}
	}
	if !img.ro && h.IncompatibleFeatures&IncompatCorrupt != 0 {
		return &worded{err: fmt.Errorf("%w: the corrupt bit is set; it cannot be opened read/write (run 'zqimg check -r all' to repair it)", ErrCorrupt),
			qemu: "qcow2: Image is corrupt; cannot be opened read/write"}
	}
	if !img.ro && h.IncompatibleFeatures&IncompatDirty != 0 {
		return fmt.Errorf("%w: refcounts were not written back (lazy refcounts); run 'zqimg check -r all' to repair it before writing", ErrDirty)
	}
	return nil
}

func (img *Image) loadL1(fileSize int64) error {
	n := uint64(img.hdr.L1Size)
	img.l1 = newSparseTable(n)
	if n == 0 {
		return nil
	}
	off := img.hdr.L1TableOffset
	if off+n*8 > uint64(fileSize) {
		return formatErr(int64(off), "L1 table (%d entries) extends past the end of the file (%d bytes)", n, fileSize)
	}
	l1, err := readSparseTable(img.f, int64(off), n)
	if err != nil {
		return err
	}
	img.l1 = l1
	return nil
}

func (img *Image) backingPath() string { return CombinePath(img.name, img.backingName) }

// CombinePath returns the path of a file named name (a backing file) in
// the image at path, as QEMU's path_combine does: name itself when
// absolute, else name appended to path's directory as written, neither
// cleaned nor resolved ("sub/ov.qcow2" and "../b.qcow2" give
// "sub/../b.qcow2"), so that the file opened and the name printed are
// the ones qemu-img opens and prints.
func CombinePath(path, name string) string {
	if strings.HasPrefix(name, "/") {
		return name
	}
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[:i+1] + name
	}
	return name
}

// lock takes the image exclusively: no data transfer is in flight.
func (img *Image) lock() {
	img.io.Lock()
	img.mu.Lock()
}

func (img *Image) unlock() {
	img.mu.Unlock()
	img.io.Unlock()
}

// Close flushes (if writable) and releases the image, its backing file and
// its locks. A failed flush is reported and the file is closed regardless.
func (img *Image) Close() error {
	img.lock()
	defer img.unlock()
	if img.closed {
		return nil
	}
	var err error
	if img.writable() == nil {
		err = img.flush()
	}
	img.closed = true
	if img.backing != nil {
		if e := img.backing.Close(); err == nil {
			err = e
		}
	}
	if e := img.raw.Close(); err == nil {
		err = e
	}
	return err
}

// Size returns the virtual disk size in bytes.
func (img *Image) Size() int64 { return int64(img.hdr.Size) }

// ClusterSize returns the cluster size in bytes.
func (img *Image) ClusterSize() int64 { return int64(img.cs) }

// Header returns a copy of the image header.
func (img *Image) Header() Header {
	img.mu.Lock()
	defer img.mu.Unlock()
	h := img.hdr
	h.Extra = append([]byte(nil), h.Extra...)
	return h
}

// ReadOnly reports whether the image was opened read-only.
func (img *Image) ReadOnly() bool { return img.ro }

// Name returns the name the image was opened with.
func (img *Image) Name() string { return img.name }

// Extensions returns the header extensions in on-disk order.
func (img *Image) Extensions() []Extension {
	out := make([]Extension, len(img.exts))
	for i, e := range img.exts {
		out[i] = Extension{Magic: e.Magic, Data: append([]byte(nil), e.Data...)}
	}
	return out
}

// Extension returns the data of the first extension with the given magic.
func (img *Image) Extension(magic uint32) ([]byte, bool) {
	for _, e := range img.exts {
		if e.Magic == magic {
			return append([]byte(nil), e.Data...), true
		}
	}
	return nil, false
}

// Features returns the image's feature name table (nil when absent).
func (img *Image) Features() []Feature { return append([]Feature(nil), img.feats...) }

// BackingFile returns the backing file name and format as stored in the
// header ("" when there is none).
func (img *Image) BackingFile() (name, format string) { return img.backingName, img.backingFormat }

// Backing returns the open backing file: its qcow2 image or its raw file
// (both nil when the image has none, or was opened with NoBacking). They
// belong to img, which closes them with itself; callers only read them,
// so that a backing chain is opened once, by its top image.
func (img *Image) Backing() (*Image, *OSFile) {
	z, ok := img.backing.(*zeroPastEnd)
	if !ok {
		return nil, nil
	}
	switch b := z.r.(type) {
	case *Image:
		return b, nil
	case *OSFile:
		return nil, b
	}
	return nil, nil
}

// MetadataPreallocated reports whether the image looks preallocated, as
// QEMU's qcow2_detect_metadata_preallocation decides it: at least
// max(10/9, +2) as many clusters have a refcount as the file occupies on
// disk. QEMU then asks the file which data clusters lie in holes (block
// status: such clusters read as zeroes); a file that cannot tell its
// allocation reports false.
func (img *Image) MetadataPreallocated() (bool, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	a, isOS := img.raw.(interface{ AllocatedBytes() (int64, error) })
	if !isOS {
		return false, nil
	}
	allocated, err := a.AllocatedBytes()
	if err != nil {
		return false, nil
	}
	size, err := img.raw.Size()
	if err != nil {
		return false, err
	}
	real := allocated / int64(img.cs)
	threshold := max(real*10/9, real+2)
	count := int64(0)
	for ci := uint64(0); ci < ceilDiv(uint64(size), img.cs) && count < threshold; ci++ {
		rc, err := img.rc.get(ci)
		if err != nil {
			return false, err
		}
		if rc != 0 {
			count++
		}
	}
	return count >= threshold, nil
}

// HostRun reports, for n bytes of the image file at host offset host,
// whether the file reads them as zeroes (a hole, or beyond its end) and
// for how many bytes that holds (OSFile.DataRun); a file that cannot tell
// reports data for all n.
func (img *Image) HostRun(host, n int64) (zero bool, length int64) {
	o, ok := img.raw.(*OSFile)
	if !ok {
		return false, n
	}
	size, err := o.Size()
	if err != nil {
		return false, n
	}
	return o.DataRun(host, n, size)
}

// FileSize returns the length of the image file in bytes.
func (img *Image) FileSize() (int64, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.raw.Size()
}

// AllocatedBytes returns the bytes the image file occupies on disk, when
// the file can tell (ok false otherwise).
func (img *Image) AllocatedBytes() (n int64, ok bool) {
	img.mu.Lock()
	defer img.mu.Unlock()
	a, isOS := img.raw.(interface{ AllocatedBytes() (int64, error) })
	if !isOS {
		return 0, false
	}
	n, err := a.AllocatedBytes()
	return n, err == nil
}

// DirectIOError says why the cache mode asked for direct I/O (O_DIRECT)
// but the image file is used through the page cache (its file system
// refused O_DIRECT), or returns nil.
func (img *Image) DirectIOError() error {
	if o, ok := img.raw.(*OSFile); ok {
		return o.DirectIOError()
	}
	return nil
}

// HostReadAt reads raw bytes of the image file, for structures owned by a
// layer above this package (the zoned write-pointer table).
func (img *Image) HostReadAt(p []byte, off int64) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	return readFull(img.f, p, off)
}

// HostWriteAt writes raw bytes of the image file, within a table the
// caller registered with SetLayerTable (a write reaching other metadata
// is refused and the image marked corrupt). The caller owns the ordering
// of such writes relative to Flush.
func (img *Image) HostWriteAt(p []byte, off int64) error {
	img.lock()
	defer img.unlock()
	if err := img.writable(); err != nil {
		return err
	}
	if off < 0 {
		return fmt.Errorf("%w: host offset %d", ErrOutOfRange, off)
	}
	if err := img.checkHostWrite(uint64(off), uint64(len(p))); err != nil {
		return err
	}
	_, err := img.f.WriteAt(p, off)
	return err
}

// Sync makes every completed write to the file durable. On a read-only
// image there is nothing to sync.
func (img *Image) Sync() error {
	img.lock()
	defer img.unlock()
	if img.ro && !img.closed {
		return nil
	}
	return img.f.Sync()
}

// writeHeaderField writes a big-endian field of the fixed header and syncs.
// All fields lie in the first sector, which is written atomically.
func (img *Image) writeHeaderField(off, size int, v uint64) error {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	if _, err := img.f.WriteAt(b[8-size:], int64(off)); err != nil {
		return err
	}
	return img.f.Sync()
}

// signalCorruption marks the image corrupt (when writable), so that no
// further writes can damage it, and returns the error describing why.
func (img *Image) signalCorruption(off int64, format string, args ...any) error {
	return img.signalCorruptionQ(off, "", format, args...)
}

// signalCorruptionQ is signalCorruption with QEMU's description of the
// event (CorruptionError.QEMU).
func (img *Image) signalCorruptionQ(off int64, qemu, format string, args ...any) error {
	err := &CorruptionError{Off: off, Msg: fmt.Sprintf(format, args...), QEMU: qemu, First: !img.corrupt && !img.ro}
	img.markCorrupt()
	return err
}

func openBacking(path, format string, opts Options) (backingFile, error) {
	if format == "" {
		var magic [4]byte
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		_, _ = f.ReadAt(magic[:], 0)
		f.Close()
		format = "raw"
		if binary.BigEndian.Uint32(magic[:]) == Magic {
			format = "qcow2"
		}
	}
	bopts := Options{ReadOnly: true, NoLock: opts.NoLock, CacheBytes: backingCacheBytes(opts.CacheBytes), Cache: opts.Cache, chain: opts.chain}
	switch format {
	case "qcow2":
		img, err := Open(path, bopts)
		if err != nil {
			return nil, err
		}
		return &zeroPastEnd{r: img, size: img.Size(), c: img}, nil
	case "raw":
		f, err := OpenOSFile(path, true, opts.NoLock)
		if err != nil {
			return nil, err
		}
		size, err := f.Size()
		if err != nil {
			f.Close()
			return nil, err
		}
		return &zeroPastEnd{r: f, size: size, c: f}, nil
	default:
		return nil, &BackingFormatError{Format: format}
	}
}

// backingCacheBytes returns the L2 cache budget of a backing image whose
// overlay has budget c (0: the default 32 MiB): half of it, at least
// 256 KiB (and 4 tables). A chain's caches then total about twice the
// top's plus 256 KiB per level below the eighth, where a full budget per
// level let a chain of 41 images whose tables fill their caches take
// 1.3 GiB.
func backingCacheBytes(c int) int {
	if c <= 0 {
		c = 32 << 20
	}
	return max(c/2, 256<<10)
}

// zeroPastEnd reads a backing file, returning zeroes beyond its size.
type zeroPastEnd struct {
	r    io.ReaderAt
	size int64
	c    io.Closer
}

func (z *zeroPastEnd) ReadAt(p []byte, off int64) (int, error) {
	n := len(p)
	if off >= z.size {
		clear(p)
		return n, nil
	}
	in := p
	if off+int64(len(p)) > z.size {
		in = p[:z.size-off]
		clear(p[len(in):])
	}
	m, err := z.r.ReadAt(in, off)
	if m < len(in) {
		if err == nil || errors.Is(err, io.EOF) {
			clear(in[m:])
		} else {
			return m, err
		}
	}
	return n, nil
}

func (z *zeroPastEnd) Close() error { return z.c.Close() }

// log2 returns the base-2 logarithm of a power of two.
func log2(v uint64) int { return arith.Log2(v) }

// AppendExtension adds a header extension after the last one, crash-safely:
// its data (and the new end marker) are written beyond the current end
// marker and synced first, then its 8-byte header replaces the end marker
// in one sector write, synced. Until then the image reads as before. It
// fails if the extension exists or does not fit in the header cluster.
func (img *Image) AppendExtension(magic uint32, data []byte) error {
	img.lock()
	defer img.unlock()
	if err := img.writable(); err != nil {
		return err
	}
	end := int(img.hdr.HeaderLength)
	for _, e := range img.exts {
		if e.Magic == magic {
			return fmt.Errorf("header extension 0x%08x already exists", magic)
		}
		end = max(end, e.Off+8+int(roundUp(uint64(len(e.Data)), 8)))
	}
	b := AppendExtension(nil, Extension{Magic: magic, Data: data})
	limit := int(img.cs)
	if img.hdr.BackingFileOffset != 0 {
		limit = int(img.hdr.BackingFileOffset)
	}
	if end+len(b)+8 > limit {
		return fmt.Errorf("header extension 0x%08x (%d bytes) does not fit in the header cluster: %d of %d bytes used", magic, len(data), end+8, limit)
	}
	tail := append(b[8:], make([]byte, 8)...) // data, padding, end marker
	if _, err := img.f.WriteAt(tail, int64(end+8)); err != nil {
		return err
	}
	if err := img.f.Sync(); err != nil {
		return err
	}
	if _, err := img.f.WriteAt(b[:8], int64(end)); err != nil {
		return err
	}
	if err := img.f.Sync(); err != nil {
		return err
	}
	img.exts = append(img.exts, Extension{Magic: magic, Data: append([]byte(nil), data...), Off: end})
	return nil
}

// WriteExtensionData overwrites bytes [off, off+len(p)) of the data of an
// existing header extension in place and syncs. The extension's own format
// must make a torn write harmless (e.g. a slot with a checksum).
func (img *Image) WriteExtensionData(magic uint32, off int, p []byte) error {
	img.lock()
	defer img.unlock()
	if err := img.writable(); err != nil {
		return err
	}
	for i, e := range img.exts {
		if e.Magic != magic {
			continue
		}
		if off < 0 || off+len(p) > len(e.Data) {
			return fmt.Errorf("header extension 0x%08x: %d bytes at %d lie outside its %d bytes", magic, len(p), off, len(e.Data))
		}
		if _, err := img.f.WriteAt(p, int64(e.Off+8+off)); err != nil {
			return err
		}
		if err := img.f.Sync(); err != nil {
			return err
		}
		copy(img.exts[i].Data[off:], p)
		return nil
	}
	return fmt.Errorf("header extension 0x%08x not found", magic)
}
