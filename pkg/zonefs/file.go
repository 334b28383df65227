package zonefs

import (
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

func imageErrno(err error) syscall.Errno { return image.Errno(err) }

// sectorSize is the write granularity of sequential zones (docs/zones.md:
// offsets and lengths of writes to a sequential zone are multiples of 512).
const sectorSize = 512

// Open opens a zone file. Sequential files are served with
// FOPEN_DIRECT_IO so that every write reaches Write unchanged and in
// order; conventional files go through the page cache.
func (fs *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	f := fs.file(in.NodeId)
	if f == nil {
		if fs.isDir(in.NodeId) {
			return fuse.Status(syscall.EISDIR)
		}
		return fuse.ENOENT
	}
	write := in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if write {
		if fs.opts.ReadOnly {
			return fuse.EROFS
		}
		if fs.condition(f.idx) != Good {
			return fuse.EPERM
		}
		if f.seq {
			if e := fs.writeOpen(f); e != 0 {
				return fuse.Status(e)
			}
		}
	}
	fs.mu.Lock()
	fh := fs.nextFh
	fs.nextFh++
	fs.handles[fh] = &handle{f: f, write: write}
	fs.mu.Unlock()
	out.Fh = fh
	if f.seq {
		out.OpenFlags = fuse.FOPEN_DIRECT_IO
	}
	return fuse.OK
}

// writeOpen accounts an open for writing of sequential file f and, with
// explicit-open, explicitly opens its zone on the first one.
func (fs *FS) writeOpen(f *zfile) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.wr == 0 {
		if e := fs.takeWro(); e != 0 {
			return e
		}
		if fs.explicit {
			size, e := fs.fileSize(f)
			if e == 0 && size < f.max {
				e = errno(fs.dev.Manage(zone.OpOpen, int64(f.start), int64(f.zlen)))
				f.open = e == 0
			}
			if e != 0 {
				fs.putWro()
				return e
			}
		}
	}
	f.wr++
	return 0
}

// releaseWait is how long an open for writing waits for a slot of
// max_open_zones before it fails with EBUSY. FUSE releases files
// asynchronously: a program that closes one file and opens another may
// find the first one's slot still taken for a moment.
const releaseWait = 500 * time.Millisecond

// takeWro counts one more sequential file open for writing; with
// explicit-open it fails with EBUSY when max_open_zones files already are.
func (fs *FS) takeWro() syscall.Errno {
	deadline := time.Now().Add(releaseWait)
	for {
		fs.mu.Lock()
		if !fs.explicit || fs.wro < fs.maxWro {
			fs.wro++
			fs.mu.Unlock()
			return 0
		}
		freed := fs.wroFreed
		fs.mu.Unlock()
		wait := time.Until(deadline)
		if wait <= 0 {
			return syscall.EBUSY
		}
		select {
		case <-freed:
		case <-time.After(wait):
		}
	}
}

// putWro undoes takeWro and wakes the opens waiting for a slot.
func (fs *FS) putWro() {
	fs.mu.Lock()
	fs.wro--
	close(fs.wroFreed)
	fs.wroFreed = make(chan struct{})
	fs.mu.Unlock()
}

// writeClose undoes writeOpen; the last close of an explicitly opened
// zone closes it (a failure cannot fail close(2) and is dropped).
func (fs *FS) writeClose(f *zfile) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wr--
	if f.wr > 0 {
		return
	}
	if f.open {
		_ = fs.dev.Manage(zone.OpClose, int64(f.start), int64(f.zlen))
		f.open = false
	}
	fs.putWro()
}

// Release closes an open file.
func (fs *FS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	fs.mu.Lock()
	h := fs.handles[in.Fh]
	delete(fs.handles, in.Fh)
	fs.mu.Unlock()
	if h != nil && h.write && h.f.seq {
		fs.writeClose(h.f)
	}
}

// Flush (close(2)) makes nothing durable, as zonefs.
func (fs *FS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status { return fuse.OK }

// Fsync makes the data written so far and the write pointers durable.
func (fs *FS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if f := fs.file(in.NodeId); f != nil && fs.condition(f.idx) != Good {
		return fuse.EPERM
	}
	return fuse.Status(errno(fs.dev.Flush()))
}

// Read reads file data; nothing at or beyond the file size.
func (fs *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	f := fs.file(in.NodeId)
	if f == nil {
		return nil, fuse.Status(syscall.EISDIR)
	}
	if fs.condition(f.idx) == Offline {
		return nil, fuse.EPERM
	}
	size, e := fs.fileSize(f)
	if e != 0 {
		return nil, fuse.Status(e)
	}
	off := in.Offset
	if off >= size {
		return fuse.ReadResultData(nil), fuse.OK
	}
	n := min(uint64(len(buf)), uint64(in.Size), size-off)
	if _, err := fs.dev.ReadAt(buf[:n], int64(f.start+off)); err != nil {
		return nil, fuse.Status(errno(err))
	}
	f.atime.Store(time.Now().UnixNano())
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

// Write writes at in.Offset (a conventional file), or at the end of a
// sequential file, with zonefs's checks in zonefs's order.
func (fs *FS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	f := fs.file(in.NodeId)
	if f == nil {
		return 0, fuse.Status(syscall.EISDIR)
	}
	n, e := fs.write(f, data, in.Offset, in.Flags)
	return uint32(n), fuse.Status(e)
}

func (fs *FS) write(f *zfile, data []byte, off uint64, flags uint32) (int, syscall.Errno) {
	if fs.opts.ReadOnly {
		return 0, syscall.EROFS
	}
	if fs.condition(f.idx) != Good {
		return 0, syscall.EPERM
	}
	if len(data) == 0 {
		return 0, 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	appendMode := flags&syscall.O_APPEND != 0
	if appendMode && !f.seq {
		return 0, syscall.EINVAL
	}
	var size uint64 // of a sequential file: where the next write goes
	if f.seq {
		var e syscall.Errno
		if size, e = fs.fileSize(f); e != 0 {
			return 0, e
		}
		if appendMode {
			off = size
		}
	}
	if off >= f.max {
		return 0, syscall.EFBIG
	}
	n := min(uint64(len(data)), f.max-off)
	if f.seq && (off%sectorSize != 0 || n%sectorSize != 0 || off != size) {
		return 0, syscall.EINVAL
	}
	if _, err := fs.dev.WriteAt(data[:n], int64(f.start+off)); err != nil {
		return 0, errno(err)
	}
	if f.seq && off+n >= f.max {
		f.open = false // FULL: no longer open
	}
	if flags&(syscall.O_SYNC|syscall.O_DSYNC) != 0 {
		if err := fs.dev.Flush(); err != nil {
			return 0, errno(err)
		}
	}
	now := time.Now().UnixNano()
	f.mtime.Store(now)
	f.ctime.Store(now)
	return int(n), 0
}

// SetAttr truncates sequential files (reset or finish) and sets times;
// every other attribute change is refused.
func (fs *FS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	id := in.NodeId
	if fs.isDir(id) {
		if in.Valid&(fuse.FATTR_MODE|fuse.FATTR_UID|fuse.FATTR_GID|fuse.FATTR_SIZE) != 0 {
			return fuse.EPERM
		}
		return fs.GetAttr(cancel, &fuse.GetAttrIn{InHeader: in.InHeader}, out)
	}
	f := fs.file(id)
	if f == nil {
		return fuse.ENOENT
	}
	if fs.opts.ReadOnly {
		return fuse.EROFS
	}
	if fs.condition(f.idx) != Good {
		return fuse.EPERM
	}
	if in.Valid&(fuse.FATTR_MODE|fuse.FATTR_UID|fuse.FATTR_GID) != 0 {
		return fuse.EPERM
	}
	if size, ok := in.GetSize(); ok {
		if e := fs.truncate(f, size); e != 0 {
			return fuse.Status(e)
		}
	}
	now := time.Now().UnixNano()
	if in.Valid&fuse.FATTR_MTIME != 0 {
		t := now
		if in.Valid&fuse.FATTR_MTIME_NOW == 0 {
			t = int64(in.Mtime)*1e9 + int64(in.Mtimensec)
		}
		f.mtime.Store(t)
		f.ctime.Store(now)
	}
	if in.Valid&fuse.FATTR_ATIME != 0 {
		t := now
		if in.Valid&fuse.FATTR_ATIME_NOW == 0 {
			t = int64(in.Atime)*1e9 + int64(in.Atimensec)
		}
		f.atime.Store(t)
		f.ctime.Store(now)
	}
	return fs.GetAttr(cancel, &fuse.GetAttrIn{InHeader: in.InHeader}, out)
}

// truncate resets (size 0) or finishes (size = capacity) the zone of a
// sequential file.
func (fs *FS) truncate(f *zfile, size uint64) syscall.Errno {
	if !f.seq {
		return syscall.EPERM
	}
	var op zone.Op
	switch size {
	case 0:
		op = zone.OpReset
	case f.max:
		op = zone.OpFinish
	default:
		if size > fs.maxCap {
			return syscall.EFBIG
		}
		// Kernel zonefs returns EPERM here; zqimg's contract says EINVAL
		// (an invalid size for the operation), as issue 11 specifies.
		return syscall.EINVAL
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, e := fs.fileSize(f)
	if e != 0 {
		return e
	}
	if cur == size {
		return 0
	}
	if err := fs.dev.Manage(op, int64(f.start), int64(f.zlen)); err != nil {
		return errno(err)
	}
	if op == zone.OpFinish {
		// Make the FULL state durable now, as the reset already is.
		if err := fs.dev.Flush(); err != nil {
			return errno(err)
		}
	}
	if f.open {
		if op == zone.OpReset {
			// The reset closed the explicitly open zone: open it
			// again so that the writers keep their slot.
			if err := fs.dev.Manage(zone.OpOpen, int64(f.start), int64(f.zlen)); err != nil {
				f.open = false
				return errno(err)
			}
		} else {
			f.open = false
		}
	}
	now := time.Now().UnixNano()
	f.mtime.Store(now)
	f.ctime.Store(now)
	return 0
}
