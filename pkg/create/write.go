package create

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"unicode"

	"github.com/zqimg/zqimg/pkg/image"
	"golang.org/x/sys/unix"
)

// Role says which file a file wrapper (WithFileWrapper) wraps.
type Role int

const (
	// RoleBuild is the file the new image is laid out in: an anonymous
	// O_TMPFILE file in the target's directory, or memory where the file
	// system has no O_TMPFILE.
	RoleBuild Role = iota
	// RoleTarget is the file at the path given to Create, when Create
	// writes it: an existing file, whose content is replaced in place, or
	// a new file made without O_TMPFILE.
	RoleTarget
)

func (r Role) String() string {
	if r == RoleBuild {
		return "build"
	}
	return "target"
}

// Option changes how Create works; the options exist for tests.
type Option func(*config)

type config struct {
	wrap         func(Role, image.File) image.File
	noTmpfile    bool
	tempFallback bool
	rename       bool
	syncDir      func(dir string) error // the directory sync (tests inject failures)
	beforeLink   func()                 // called just before a new image is linked into place
}

func (c *config) file(r Role, f image.File) image.File {
	if c.wrap == nil {
		return f
	}
	return c.wrap(r, f)
}

// WithFileWrapper makes Create do every write, truncation and sync of a
// file through wrap(role, file): tests inject failures this way.
func WithFileWrapper(wrap func(Role, image.File) image.File) Option {
	return func(c *config) { c.wrap = wrap }
}

// WithoutTmpfile makes Create work as on a file system without O_TMPFILE.
func WithoutTmpfile() Option { return func(c *config) { c.noTmpfile = true } }

// WithTempFallback makes Install build in a hidden named file beside the
// target, instead of memory, where the file system has no O_TMPFILE (for
// files too large for memory, such as convert's output).
func WithTempFallback() Option { return func(c *config) { c.tempFallback = true } }

// WithRenameReplace makes Install replace an existing file by renaming the
// complete, synced new file over it (then syncing the directory), instead
// of replacing its content in place. For files without a magic that could
// be written last (raw images): the target is then always the old file or
// the new one. The new file takes the old one's permission bits (and, for
// root, its owner); hard links to the old file keep the old content. The
// new file is built in a hidden named file beside the target where there
// is no O_TMPFILE.
func WithRenameReplace() Option { return func(c *config) { c.rename = true } }

// WithDirSync makes Install sync directories with fn (tests inject
// failures this way).
func WithDirSync(fn func(dir string) error) Option { return func(c *config) { c.syncDir = fn } }

// Error is a failure to create the image file, worded as qemu-img's
// "Could not create 'PATH': Reason".
type Error struct {
	Path string
	Err  error
}

func (e *Error) Error() string {
	return fmt.Sprintf("Could not create '%s': %s", e.Path, reason(e.Err))
}

func (e *Error) Unwrap() error { return e.Err }

// ErrAppeared is why a new image was not put in place: a file of the same
// name appeared while the image was being built.
var ErrAppeared = errors.New("a file of that name appeared while the image was being built (it was left alone)")

// errNotRegular refuses targets that are neither regular files nor absent.
//
//lint:ignore ST1005 worded as strerror, like the errno reasons
var errNotRegular = errors.New("Not a regular file")

// reason returns the text of err; an errno is worded as strerror does
// ("No such file or directory").
func reason(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		m := []rune(errno.Error())
		if len(m) > 0 {
			m[0] = unicode.ToUpper(m[0])
		}
		return string(m)
	}
	return err.Error()
}

// Create writes the image described by s to path, as qemu-img create does
// and with these guarantees:
//
//   - An existing file is opened first and QEMU's write lock is taken on it
//     (see image.Lock) and held until Create returns: if another process
//     uses the image, Create fails with the *image.LockError and writes
//     nothing. The new image replaces the file's content in place, so the
//     file keeps its inode, permissions and hard links, and a symbolic link
//     at path stays a link to it. Links are followed by the kernel, never
//     by Create (see openTarget): fs.protected_symlinks applies (EACCES).
//   - A new file (or the missing target of a dangling symbolic link, which
//     is created empty through the link, then filled as an existing file
//     and removed on failure) gets mode 0666 minus the process umask,
//     applied by the kernel.
//   - The image is first built completely in an anonymous O_TMPFILE file
//     in the target's directory, which disappears with the process. A new
//     image is then linked into place with linkat (never over a file that
//     appeared meanwhile: that fails with ErrAppeared). For an existing
//     file, the target is truncated to 0, everything but the first 512
//     bytes (which hold the qcow2 magic) is copied from the built image,
//     holes skipped, the file is synced, then the first 512 bytes are
//     written and the file synced again.
//   - Where the file system has no O_TMPFILE, the image is built in
//     memory, and a new file is created exclusively and filled in the same
//     order as an existing one.
//
// So at every moment, a crash or a kill included, the target is the old
// file, a file without a qcow2 header, or the complete new image, no
// temporary file is left behind, and on failure a new file is removed.
func Create(path string, s *Spec, opts ...Option) error {
	return Install(path, func(f *BuildFile) error { return image.Format(f, s.Image) }, opts...)
}

// Install writes a new file at path, built by build, with Create's
// guarantees (lock held on an existing file from the start, built in an
// anonymous O_TMPFILE file, linked into place or copied in place first
// sector last, nothing left behind). build gets the file to fill and must
// not close it. Where the file system has no O_TMPFILE, the file is built
// in memory, unless WithTempFallback says to build it in a hidden named
// file beside path (removed on failure; a kill -9 can leave it).
func Install(path string, build func(f *BuildFile) error, opts ...Option) (err error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	existing, target, created, err := openTarget(path)
	if err != nil {
		return &Error{Path: path, Err: err}
	}
	if existing != nil {
		defer existing.Close() // releases the lock
		if created {
			// The missing target of a dangling link, made empty here:
			// removed again unless the new file is put in place.
			defer func() {
				if err != nil {
					os.Remove(target)
				}
			}()
		}
		if err := image.Lock(existing, path, false); err != nil {
			return err
		}
	}
	if cfg.syncDir == nil {
		cfg.syncDir = syncDir
	}
	bf, err := newBuildFile(target, cfg.noTmpfile, cfg.tempFallback || (cfg.rename && existing != nil))
	if err != nil {
		return &Error{Path: path, Err: err}
	}
	defer bf.close()
	bf.wrapped = cfg.file(RoleBuild, bf.File)
	if err := build(bf); err != nil {
		return err
	}
	sector := int64(512)
	switch {
	case existing != nil && cfg.rename:
		if err := renameOver(bf, existing, target, &cfg); err != nil {
			return fmt.Errorf("replacing %s (the old file is left as it was unless the directory sync failed): %w", path, err)
		}
		return nil
	case existing != nil:
		if err := replaceInPlace(cfg.file(RoleTarget, image.WrapOSFile(existing)), bf, sector); err != nil {
			return fmt.Errorf("replacing the content of %s (it may now hold no image): %w", path, err)
		}
		return nil
	case bf.fd >= 0:
		if cfg.beforeLink != nil {
			cfg.beforeLink()
		}
		if err := linkTmpfile(bf.fd, target); err != nil {
			if errors.Is(err, unix.EEXIST) {
				err = ErrAppeared
			}
			return &Error{Path: path, Err: err}
		}
		if err := cfg.syncDir(filepath.Dir(target)); err != nil {
			return fmt.Errorf("%s was created but may not be durable: %w", path, err)
		}
		return nil
	}
	// No O_TMPFILE: create the file exclusively, hold the write lock, and
	// fill it magic last.
	f, err := os.OpenFile(target, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			err = ErrAppeared
		}
		return &Error{Path: path, Err: err}
	}
	defer func() {
		f.Close()
		if err != nil {
			os.Remove(target)
		}
	}()
	if err := image.Lock(f, path, false); err != nil {
		return err
	}
	if err := replaceInPlace(cfg.file(RoleTarget, image.WrapOSFile(f)), bf, sector); err != nil {
		return err
	}
	if err := cfg.syncDir(filepath.Dir(target)); err != nil {
		return fmt.Errorf("%s was created but may not be durable: %w", path, err)
	}
	return nil
}

// renameOver puts the complete build file bf in place of the existing file
// old (named target) by rename: the build file gets a hidden name beside
// target (unless it has one), old's permission bits (and owner, as root),
// is synced, renamed over target, and the directory is synced. Until the
// rename the target is untouched; the hidden name is removed on failure.
func renameOver(bf *BuildFile, old *os.File, target string, cfg *config) error {
	if bf.os == nil {
		return errors.New("no file to rename over the target") // not reached: the fallback is named
	}
	if bf.named == "" {
		name, err := linkHidden(bf.fd, target)
		if err != nil {
			return err
		}
		bf.named = name // removed by bf.close unless renamed
	}
	st, err := old.Stat()
	if err != nil {
		return err
	}
	if err := bf.os.Chmod(st.Mode().Perm() | st.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return err
	}
	if sys, ok := st.Sys().(*unix.Stat_t); ok && os.Geteuid() == 0 {
		if err := bf.os.Chown(int(sys.Uid), int(sys.Gid)); err != nil {
			return err
		}
	}
	if err := bf.Sync(); err != nil {
		return err
	}
	if err := os.Rename(bf.named, target); err != nil {
		return err
	}
	bf.named = ""
	if err := cfg.syncDir(filepath.Dir(target)); err != nil {
		return fmt.Errorf("the new file is in place but may not be durable: %w", err)
	}
	return nil
}

// linkHidden gives the O_TMPFILE file fd a new hidden name beside target
// and returns it.
func linkHidden(fd int, target string) (string, error) {
	dir, base := filepath.Dir(target), filepath.Base(target)
	for i := 0; ; i++ {
		name := filepath.Join(dir, fmt.Sprintf(".%s.zqimg-%d-%d", base, os.Getpid(), i))
		err := linkTmpfile(fd, name)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, unix.EEXIST) || i >= 100 {
			return "", err
		}
	}
}

// openTarget opens the file at path as the kernel resolves it, so that
// the kernel's rules on following links apply (fs.protected_symlinks
// refuses, with EACCES, a link in a sticky world-writable directory that
// belongs to someone else): zqimg never resolves a link itself. It returns
// the open file (nil when path names nothing), the name the file is
// reached at (path itself, or the end of the links for a link) and
// whether it created the file: a dangling link's missing target is
// created empty through the link (O_CREAT), as qemu-img does.
func openTarget(path string) (f *os.File, target string, created bool, err error) {
	f, err = openExisting(path, false)
	if err != nil {
		return nil, "", false, err
	}
	st, lerr := os.Lstat(path)
	isLink := lerr == nil && st.Mode()&fs.ModeSymlink != 0
	if f == nil && isLink {
		if f, err = openExisting(path, true); err != nil {
			return nil, "", false, err
		}
		created = true
	}
	if f == nil || !isLink {
		return f, path, false, nil
	}
	target, err = os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil || !filepath.IsAbs(target) {
		f.Close()
		return nil, "", false, fmt.Errorf("finding the file the link %s names: %w", path, err)
	}
	return f, target, created, nil
}

// openExisting opens target for writing, or returns nil if it does not
// exist (with create, creates it, mode 0666 minus the umask). It refuses
// what is not a regular file.
func openExisting(target string, create bool) (*os.File, error) {
	flags := os.O_RDWR | unix.O_NONBLOCK | unix.O_NOCTTY
	if create {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(target, flags, 0o666)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, errNotRegular
	}
	return f, nil
}

// BuildFile is where a new file is laid out before Install puts it in
// place: an anonymous O_TMPFILE file, memory, or (WithTempFallback, no
// O_TMPFILE) a hidden named file. Its Close does nothing: Install closes
// it. Writes go through the file wrapper of the options (tests).
type BuildFile struct {
	image.File
	wrapped image.File // File, through the options' wrapper
	fd      int        // the O_TMPFILE descriptor, or -1
	mem     *memFile   // when in memory
	os      *os.File   // when in a file
	named   string     // the hidden file's name (fallback), removed at Close
	// reserved are the ranges Allocate reserved: a copy of the file (an
	// existing target filled in place) reserves them too, since copying
	// skips what reads as holes.
	reserved []extentRange
}

type extentRange struct{ off, n int64 }

// Allocate reserves [off, off+n) (fallocate), extending the file, and
// records the range for the target (preallocation=falloc).
func (b *BuildFile) Allocate(off, n int64) error {
	b.reserved = append(b.reserved, extentRange{off, n})
	if a, ok := b.wrapped.(image.Allocator); ok {
		return a.Allocate(off, n)
	}
	if size, err := b.wrapped.Size(); err != nil || size >= off+n {
		return err
	}
	return b.wrapped.Truncate(off + n)
}

// OS returns the operating-system file being built, or nil when the file
// is built in memory (for hints such as sync_file_range).
func (b *BuildFile) OS() *os.File { return b.os }

// The image.File methods go through the wrapper; Close is Install's.
func (b *BuildFile) ReadAt(p []byte, off int64) (int, error)  { return b.wrapped.ReadAt(p, off) }
func (b *BuildFile) WriteAt(p []byte, off int64) (int, error) { return b.wrapped.WriteAt(p, off) }
func (b *BuildFile) Sync() error                              { return b.wrapped.Sync() }
func (b *BuildFile) Size() (int64, error)                     { return b.wrapped.Size() }
func (b *BuildFile) Truncate(n int64) error                   { return b.wrapped.Truncate(n) }
func (b *BuildFile) ZeroRange(off, n int64) error             { return b.wrapped.ZeroRange(off, n) }
func (b *BuildFile) Close() error                             { return nil }

// close releases the build file (and removes a named one).
func (b *BuildFile) close() {
	b.File.Close()
	if b.named != "" {
		os.Remove(b.named)
	}
}

// newBuildFile opens an anonymous O_TMPFILE file in target's directory,
// or, where the file system does not support it (or noTmpfile), a file in
// memory or, with named, a hidden file beside target.
func newBuildFile(target string, noTmpfile, named bool) (*BuildFile, error) {
	dir := filepath.Dir(target)
	if !noTmpfile {
		fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o666)
		if err == nil {
			f := os.NewFile(uintptr(fd), filepath.Join(dir, "(O_TMPFILE)"))
			of := image.WrapOSFile(f)
			return &BuildFile{File: of, wrapped: of, fd: fd, os: f}, nil
		}
		// Old kernels or file systems without O_TMPFILE.
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
			return nil, err
		}
		if st, serr := os.Stat(dir); serr != nil || !st.IsDir() {
			return nil, err
		}
	}
	if named {
		f, err := os.CreateTemp(dir, "."+filepath.Base(target)+".zqimg-*")
		if err != nil {
			return nil, err
		}
		of := image.WrapOSFile(f)
		return &BuildFile{File: of, wrapped: of, fd: -1, os: f, named: f.Name()}, nil
	}
	m := &memFile{}
	return &BuildFile{File: m, wrapped: m, fd: -1, mem: m}, nil
}

// extents calls fn for each range of the build file that may hold data, in
// order (holes are skipped).
func (b *BuildFile) extents(fn func(off, n int64) error) error {
	size, err := b.Size()
	if err != nil {
		return err
	}
	if b.mem != nil {
		const block = 64 << 10
		data := b.mem.b
		for off := int64(0); off < size; off += block {
			end := min(off+block, size)
			if !allZero(data[off:end]) {
				if err := fn(off, end-off); err != nil {
					return err
				}
			}
		}
		return nil
	}
	fd := int(b.os.Fd())
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // no data after off
		}
		if err != nil {
			// No SEEK_DATA: copy everything.
			return fn(off, size-off)
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			end = size
		}
		end = min(end, size)
		if err := fn(start, end-start); err != nil {
			return err
		}
		off = end
	}
	return nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	return bytes.Count(b, []byte{0}) == len(b)
}

// replaceInPlace makes dst a copy of the built image src so that dst never
// holds a qcow2 magic before it holds the complete image: truncate to 0 and
// to the image's length, copy every extent but the first magicLen bytes,
// sync, write the first magicLen bytes (a sector: written whole or not at
// all), sync.
func replaceInPlace(dst image.File, src *BuildFile, magicLen int64) error {
	size, err := src.Size()
	if err != nil {
		return err
	}
	magicLen = min(magicLen, size)
	if err := dst.Truncate(0); err != nil {
		return err
	}
	if err := dst.Truncate(size); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	err = src.extents(func(off, n int64) error {
		if off < magicLen {
			skip := min(magicLen-off, n)
			off, n = off+skip, n-skip
		}
		for n > 0 {
			k := min(n, int64(len(buf)))
			if _, err := src.ReadAt(buf[:k], off); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if _, err := dst.WriteAt(buf[:k], off); err != nil {
				return err
			}
			off, n = off+k, n-k
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range src.reserved {
		if a, ok := dst.(image.Allocator); ok {
			if err := a.Allocate(r.off, r.n); err != nil {
				return err
			}
		}
	}
	if err := dst.Sync(); err != nil {
		return err
	}
	head := buf[:magicLen]
	if _, err := src.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if _, err := dst.WriteAt(head, 0); err != nil {
		return err
	}
	return dst.Sync()
}

// linkTmpfile gives the O_TMPFILE file fd the name target; it fails with
// EEXIST if the name exists.
func linkTmpfile(fd int, target string) error {
	err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, target, unix.AT_SYMLINK_FOLLOW)
	if errors.Is(err, unix.ENOENT) {
		if _, serr := os.Stat("/proc/self/fd"); serr != nil {
			// No /proc: AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH.
			err = unix.Linkat(fd, "", unix.AT_FDCWD, target, unix.AT_EMPTY_PATH)
		}
	}
	return err
}

// syncDir makes the entries of dir durable. A file system that cannot sync
// a directory (EINVAL) is not an error; any other failure is.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// memFile is an image.File in memory.
type memFile struct{ b []byte }

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.Truncate(end)
	}
	return copy(m.b[off:], p), nil
}

func (m *memFile) Truncate(n int64) error {
	switch {
	case n <= int64(len(m.b)):
		clear(m.b[n:])
		m.b = m.b[:n]
	case n <= int64(cap(m.b)):
		m.b = m.b[:n]
	default:
		nb := make([]byte, n, max(n, 2*int64(cap(m.b))))
		copy(nb, m.b)
		m.b = nb
	}
	return nil
}

func (m *memFile) ZeroRange(off, n int64) error {
	if end := off + n; end > int64(len(m.b)) {
		m.Truncate(end)
	}
	clear(m.b[off : off+n])
	return nil
}

func (m *memFile) Sync() error          { return nil }
func (m *memFile) Close() error         { return nil }
func (m *memFile) Size() (int64, error) { return int64(len(m.b)), nil }
