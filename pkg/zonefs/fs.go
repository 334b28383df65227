package zonefs

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/zqimg/zqimg/pkg/zone"
)

// Condition is the health of a zone as the file system sees it (zonefs's
// handling of zones a device reports READ ONLY or OFFLINE).
type Condition int

// Zone conditions.
const (
	Good     Condition = iota
	ReadOnly           // readable, never writable again
	Offline            // neither readable nor writable
)

// Options configure the file system.
type Options struct {
	// ReadOnly refuses every change with EROFS (the image is open
	// read-only).
	ReadOnly bool
	// ExplicitOpen is zonefs's explicit-open mount option.
	ExplicitOpen bool
	// UID and GID own every file and directory.
	UID, GID uint32
	// Condition reports the health of zone i (zone index on the device);
	// nil means every zone is Good. It is called on every access and must
	// be safe for concurrent use.
	Condition func(zone uint32) Condition
}

// DeviceFaults returns a Condition hook reporting the zone faults injected
// into dev's image (zqimg zone-fault): READ ONLY zones are ReadOnly,
// OFFLINE zones Offline.
func DeviceFaults(dev *zone.Device) func(uint32) Condition {
	return func(i uint32) Condition {
		switch dev.Fault(i) {
		case zone.CondReadOnly:
			return ReadOnly
		case zone.CondOffline:
			return Offline
		}
		return Good
	}
}

// Node IDs (and inode numbers).
const rootID = fuse.FUSE_ROOT_ID // 1

// Block size reported by stat and statfs: the write granularity of
// sequential zones.
const blockSize = 512

// Timeouts given to the kernel. The tree never changes while mounted;
// file attributes (size, times) are asked for at every stat.
const (
	entryTimeout = time.Hour
	dirAttrTTL   = time.Hour
	fileAttrTTL  = 0
)

// FS is the file system: a fuse.RawFileSystem over a zone.Device. Its
// node tree is static: the root, one directory per zone type, and one
// file per zone.
type FS struct {
	fuse.RawFileSystem // ENOSYS for every operation not implemented here

	dev  *zone.Device
	opts Options

	nr, conv uint32
	maxCap   uint64 // largest file size
	files    []*zfile
	cnvID    uint64 // node ID of cnv (0 when there are no conventional zones)
	seqID    uint64 // node ID of seq (0 when there are no sequential zones)
	mounted  time.Time

	maxWro   uint32 // max_open_zones; 0 = no limit
	explicit bool   // ExplicitOpen in effect (needs max_open_zones)

	mu       sync.Mutex
	handles  map[uint64]*handle
	nextFh   uint64
	wro      uint32        // sequential files open for writing
	wroFreed chan struct{} // closed (and replaced) when wro goes down
}

// zfile is the file of one zone.
type zfile struct {
	id    uint64 // node ID = inode number
	idx   uint32 // zone index on the device
	num   uint32 // file number within its directory
	seq   bool
	start uint64 // zone start, bytes
	zlen  uint64 // zone length (zone size, or less for a short last zone)
	max   uint64 // maximum file size: capacity (seq) or zone length (cnv)

	// mu serialises the writes, truncations and write opens and closes of
	// this zone, as the inode lock does in zonefs.
	mu   sync.Mutex
	wr   int  // opens for writing
	open bool // explicitly opened for explicit-open

	mtime, ctime, atime atomic.Int64 // Unix nanoseconds
}

// handle is an open file.
type handle struct {
	f     *zfile
	write bool
}

// New builds the file system of a zoned device.
func New(dev *zone.Device, o Options) (*FS, error) {
	h := dev.Header()
	if h == nil {
		return nil, fmt.Errorf("zonefs: %w", zone.ErrNotZoned)
	}
	fs := &FS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		dev:           dev,
		opts:          o,
		nr:            h.NrZones,
		conv:          h.ConventionalZones,
		mounted:       time.Now(),
		maxWro:        h.MaxOpenZones,
		handles:       map[uint64]*handle{},
		wroFreed:      make(chan struct{}),
		nextFh:        1,
	}
	fs.explicit = o.ExplicitOpen && h.MaxOpenZones > 0
	size := uint64(dev.Size())
	now := fs.mounted.UnixNano()
	for i := uint32(0); i < h.NrZones; i++ {
		start := uint64(i) * h.ZoneSize
		f := &zfile{
			id:    uint64(i) + 2,
			idx:   i,
			start: start,
			zlen:  h.ZoneLen(i, size),
			seq:   i >= h.ConventionalZones,
		}
		f.max = f.zlen
		f.num = i
		if f.seq {
			f.max = min(h.ZoneCapacity, f.zlen)
			f.num = i - h.ConventionalZones
		}
		f.mtime.Store(now)
		f.ctime.Store(now)
		f.atime.Store(now)
		fs.maxCap = max(fs.maxCap, f.max)
		fs.files = append(fs.files, f)
	}
	if fs.conv > 0 {
		fs.cnvID = uint64(fs.nr) + 2
	}
	if fs.nr > fs.conv {
		fs.seqID = uint64(fs.nr) + 3
	}
	return fs, nil
}

// ExplicitOpenIgnored reports that the explicit-open option was asked for
// but has no effect because the device has no open zone limit (zonefs
// ignores it then too).
func (fs *FS) ExplicitOpenIgnored() bool { return fs.opts.ExplicitOpen && !fs.explicit }

// String names the file system (fuse.RawFileSystem).
func (fs *FS) String() string { return "zqimg" }

// Init is called once the kernel has answered INIT.
func (fs *FS) Init(*fuse.Server) {}

// condition returns the health of zone i.
func (fs *FS) condition(i uint32) Condition {
	if fs.opts.Condition == nil {
		return Good
	}
	return fs.opts.Condition(i)
}

// file returns the zone file with node ID id, or nil.
func (fs *FS) file(id uint64) *zfile {
	if id >= 2 && id < uint64(fs.nr)+2 {
		return fs.files[id-2]
	}
	return nil
}

// isDir reports whether id is a directory: the root, cnv or seq.
func (fs *FS) isDir(id uint64) bool {
	return id == rootID || (id != 0 && (id == fs.cnvID || id == fs.seqID))
}

// children lists a directory's entries in order (without . and ..).
func (fs *FS) children(id uint64) []dirent {
	var out []dirent
	switch id {
	case rootID:
		if fs.cnvID != 0 {
			out = append(out, dirent{name: "cnv", id: fs.cnvID, mode: syscall.S_IFDIR})
		}
		if fs.seqID != 0 {
			out = append(out, dirent{name: "seq", id: fs.seqID, mode: syscall.S_IFDIR})
		}
	case fs.cnvID, fs.seqID:
		lo, hi := uint32(0), fs.conv
		if id == fs.seqID {
			lo, hi = fs.conv, fs.nr
		}
		out = make([]dirent, 0, hi-lo)
		for i := lo; i < hi; i++ {
			f := fs.files[i]
			out = append(out, dirent{name: strconv.FormatUint(uint64(f.num), 10), id: f.id, mode: syscall.S_IFREG})
		}
	}
	return out
}

type dirent struct {
	name string
	id   uint64
	mode uint32
}

// nfiles returns the number of entries of directory id.
func (fs *FS) nfiles(id uint64) uint64 {
	switch id {
	case rootID:
		n := uint64(0)
		if fs.cnvID != 0 {
			n++
		}
		if fs.seqID != 0 {
			n++
		}
		return n
	case fs.cnvID:
		return uint64(fs.conv)
	case fs.seqID:
		return uint64(fs.nr - fs.conv)
	}
	return 0
}

// lookup resolves name in directory parent.
func (fs *FS) lookup(parent uint64, name string) (uint64, syscall.Errno) {
	switch parent {
	case rootID:
		switch {
		case name == "cnv" && fs.cnvID != 0:
			return fs.cnvID, 0
		case name == "seq" && fs.seqID != 0:
			return fs.seqID, 0
		}
		return 0, syscall.ENOENT
	case fs.cnvID, fs.seqID:
		n, err := strconv.ParseUint(name, 10, 32)
		if err != nil || strconv.FormatUint(n, 10) != name {
			return 0, syscall.ENOENT
		}
		if parent == fs.cnvID && n < uint64(fs.conv) {
			return fs.files[n].id, 0
		}
		if parent == fs.seqID && n < uint64(fs.nr-fs.conv) {
			return fs.files[uint64(fs.conv)+n].id, 0
		}
		return 0, syscall.ENOENT
	}
	if fs.file(parent) != nil {
		return 0, syscall.ENOTDIR
	}
	return 0, syscall.ENOENT
}

// zone returns the current state of f's zone.
func (fs *FS) zone(f *zfile) (zone.Zone, error) {
	zs, err := fs.dev.Report(int64(f.start), 1)
	if err != nil {
		return zone.Zone{}, err
	}
	if len(zs) != 1 {
		return zone.Zone{}, fmt.Errorf("zone report at 0x%x returned %d zones", f.start, len(zs))
	}
	return zs[0], nil
}

// size returns the file size of f given its zone.
func (f *zfile) size(z zone.Zone) uint64 {
	if !f.seq {
		return f.zlen
	}
	if z.WP <= f.start {
		return 0
	}
	return min(z.WP-f.start, f.max)
}

// fileSize returns f's current size.
func (fs *FS) fileSize(f *zfile) (uint64, syscall.Errno) {
	if !f.seq {
		return f.zlen, 0
	}
	z, err := fs.zone(f)
	if err != nil {
		return 0, errno(err)
	}
	return f.size(z), 0
}

func setTime(sec *uint64, nsec *uint32, ns int64) {
	*sec = uint64(ns / 1e9)
	*nsec = uint32(ns % 1e9)
}

// attr fills the attributes of node id.
func (fs *FS) attr(id uint64, a *fuse.Attr) syscall.Errno {
	*a = fuse.Attr{Ino: id, Blksize: blockSize}
	a.Owner = fuse.Owner{Uid: fs.opts.UID, Gid: fs.opts.GID}
	if fs.isDir(id) {
		a.Mode = syscall.S_IFDIR | 0o555
		a.Nlink = 2
		if id == rootID {
			a.Nlink += uint32(fs.nfiles(rootID))
		}
		a.Size = fs.nfiles(id)
		t := fs.mounted.UnixNano()
		setTime(&a.Atime, &a.Atimensec, t)
		setTime(&a.Mtime, &a.Mtimensec, t)
		setTime(&a.Ctime, &a.Ctimensec, t)
		return 0
	}
	f := fs.file(id)
	if f == nil {
		return syscall.ENOENT
	}
	size, e := fs.fileSize(f)
	if e != 0 {
		return e
	}
	perm := uint32(0o640)
	switch fs.condition(f.idx) {
	case ReadOnly:
		perm &^= 0o222
	case Offline:
		perm, size = 0, 0
	}
	a.Mode = syscall.S_IFREG | perm
	a.Nlink = 1
	a.Size = size
	a.Blocks = f.max / 512
	setTime(&a.Atime, &a.Atimensec, f.atime.Load())
	setTime(&a.Mtime, &a.Mtimensec, f.mtime.Load())
	setTime(&a.Ctime, &a.Ctimensec, f.ctime.Load())
	return 0
}

func (fs *FS) fillEntry(id uint64, out *fuse.EntryOut) syscall.Errno {
	if e := fs.attr(id, &out.Attr); e != 0 {
		return e
	}
	out.NodeId = id
	out.Generation = 1
	out.SetEntryTimeout(entryTimeout)
	if fs.isDir(id) {
		out.SetAttrTimeout(dirAttrTTL)
	} else {
		out.SetAttrTimeout(fileAttrTTL)
	}
	return 0
}

// Lookup resolves a name in a directory.
func (fs *FS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	id, e := fs.lookup(h.NodeId, name)
	if e != 0 {
		if e == syscall.ENOENT {
			// The tree never changes: cache the negative entry.
			out.SetEntryTimeout(entryTimeout)
		}
		return fuse.Status(e)
	}
	return fuse.Status(fs.fillEntry(id, out))
}

// Forget does nothing: every node lives as long as the mount.
func (fs *FS) Forget(nodeid, nlookup uint64) {}

// GetAttr returns the attributes of a node.
func (fs *FS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if e := fs.attr(in.NodeId, &out.Attr); e != 0 {
		return fuse.Status(e)
	}
	if fs.isDir(in.NodeId) {
		out.SetTimeout(dirAttrTTL)
	} else {
		out.SetTimeout(fileAttrTTL)
	}
	return fuse.OK
}

// Access allows everything the kernel's permission check
// (default_permissions) allowed.
func (fs *FS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status { return fuse.OK }

// The name space cannot change.

func (fs *FS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EPERM
}

func (fs *FS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EPERM
}

func (fs *FS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fuse.EPERM
}

func (fs *FS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fuse.EPERM
}

func (fs *FS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	return fuse.EPERM
}

func (fs *FS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EPERM
}

func (fs *FS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EPERM
}

// Create is refused as by a directory without a create operation.
func (fs *FS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return fuse.Status(syscall.EACCES)
}

func (fs *FS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	return fuse.Status(syscall.EOPNOTSUPP)
}

// OpenDir opens a directory; listing needs no state.
func (fs *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if !fs.isDir(in.NodeId) {
		return fuse.ENOTDIR
	}
	return fuse.OK
}

// ReleaseDir closes a directory.
func (fs *FS) ReleaseDir(in *fuse.ReleaseIn) {}

// ReadDir lists a directory from entry in.Offset on (0 is ".", 1 "..").
func (fs *FS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(in, out, false)
}

// ReadDirPlus lists a directory with each entry's attributes.
func (fs *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(in, out, true)
}

func (fs *FS) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	if !fs.isDir(in.NodeId) {
		return fuse.ENOTDIR
	}
	// The parent of every directory is the root (the root's own ".." is
	// resolved by the kernel above the mount).
	ents := append([]dirent{
		{name: ".", id: in.NodeId, mode: syscall.S_IFDIR},
		{name: "..", id: rootID, mode: syscall.S_IFDIR},
	}, fs.children(in.NodeId)...)
	for i := in.Offset; i < uint64(len(ents)); i++ {
		d := ents[i]
		de := fuse.DirEntry{Name: d.name, Ino: d.id, Mode: d.mode, Off: i + 1}
		if !plus {
			if !out.AddDirEntry(de) {
				break
			}
			continue
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			break
		}
		if d.name == "." || d.name == ".." {
			continue // no lookup for these (node ID 0)
		}
		if e := fs.fillEntry(d.id, eo); e != 0 {
			*eo = fuse.EntryOut{}
		}
	}
	return fuse.OK
}

// FsyncDir makes everything durable (syncfs reaches here too).
func (fs *FS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fuse.Status(errno(fs.dev.Flush()))
}

// StatFs reports the space as zonefs does: blocks are the sum of the file
// maximum sizes, used blocks the sum of the file sizes (conventional files
// count as full), so free space is what sequential zones can still take.
func (fs *FS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	zs, err := fs.dev.Report(0, uint64(fs.nr))
	if err != nil {
		return fuse.Status(errno(err))
	}
	var total, used uint64
	for i, f := range fs.files {
		total += f.max / blockSize
		if i < len(zs) {
			size := f.size(zs[i])
			if fs.condition(f.idx) == Offline {
				size = 0
			}
			used += size / blockSize
		}
	}
	*out = fuse.StatfsOut{
		Blocks:  total,
		Bfree:   total - min(used, total),
		Bsize:   blockSize,
		Frsize:  blockSize,
		NameLen: 16,
		Files:   fs.nfiles(fs.cnvID) + fs.nfiles(fs.seqID),
	}
	out.Bavail = out.Bfree
	if fs.cnvID != 0 {
		out.Files++
	}
	if fs.seqID != 0 {
		out.Files++
	}
	return fuse.OK
}

// errno maps an error of zone.Device to the errno the file system
// returns.
func errno(err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, zone.ErrTooManyActive):
		return syscall.EOVERFLOW
	case errors.Is(err, zone.ErrTooManyOpen):
		return syscall.ETOOMANYREFS
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return imageErrno(err)
}
