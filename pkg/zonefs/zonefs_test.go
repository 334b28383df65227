package zonefs_test

import (
	"bytes"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
	"github.com/zqimg/zqimg/pkg/zonefs"
	"golang.org/x/sys/unix"
)

// geometry of most tests: 2 conventional zones of 1 MiB, then 3 sequential
// zones of 1 MiB with a capacity of 768 KiB and a short last one of 512 KiB.
var geometry = []string{"zone.size=1M", "zone.capacity=768K", "zone.conventional_zones=2"}

const geomSize = "5632K"

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestLayout(t *testing.T) {
	img := newImage(t, geomSize, geometry...)
	f := mountImage(t, img, zonefs.Options{UID: 12, GID: 34}, image.CacheWriteBack)

	if got := names(t, f.dir); !slices.Equal(got, []string{"cnv", "seq"}) {
		t.Errorf("root holds %v", got)
	}
	if got := names(t, f.path("cnv")); !slices.Equal(got, []string{"0", "1"}) {
		t.Errorf("cnv holds %v", got)
	}
	if got := names(t, f.path("seq")); !slices.Equal(got, []string{"0", "1", "2", "3"}) {
		t.Errorf("seq holds %v", got)
	}
	type want struct {
		name         string
		mode         uint32
		size, blocks int64
		nlink, ino   uint64
	}
	nr := uint64(6)
	for _, w := range []want{
		{name: "", mode: syscall.S_IFDIR | 0o555, size: 2, nlink: 4, ino: 1},
		{name: "cnv", mode: syscall.S_IFDIR | 0o555, size: 2, nlink: 2, ino: nr + 2},
		{name: "seq", mode: syscall.S_IFDIR | 0o555, size: 4, nlink: 2, ino: nr + 3},
		{name: "cnv/0", mode: syscall.S_IFREG | 0o640, size: mib, blocks: mib / 512, nlink: 1, ino: 2},
		{name: "cnv/1", mode: syscall.S_IFREG | 0o640, size: mib, blocks: mib / 512, nlink: 1, ino: 3},
		{name: "seq/0", mode: syscall.S_IFREG | 0o640, size: 0, blocks: 768 * kib / 512, nlink: 1, ino: 4},
		{name: "seq/2", mode: syscall.S_IFREG | 0o640, size: 0, blocks: 768 * kib / 512, nlink: 1, ino: 6},
		{name: "seq/3", mode: syscall.S_IFREG | 0o640, size: 0, blocks: 512 * kib / 512, nlink: 1, ino: 7},
	} {
		var st unix.Stat_t
		if err := unix.Stat(f.path(w.name), &st); err != nil {
			t.Errorf("stat %q: %v", w.name, err)
			continue
		}
		if st.Mode != w.mode || st.Size != w.size || st.Blocks != w.blocks || uint64(st.Nlink) != w.nlink || st.Ino != w.ino || st.Uid != 12 || st.Gid != 34 {
			t.Errorf("stat %q: mode %o size %d blocks %d nlink %d ino %d uid %d gid %d; want mode %o size %d blocks %d nlink %d ino %d uid 12 gid 34",
				w.name, st.Mode, st.Size, st.Blocks, st.Nlink, st.Ino, st.Uid, st.Gid, w.mode, w.size, w.blocks, w.nlink, w.ino)
		}
		if st.Mode&syscall.S_IFREG != 0 && st.Blksize != 512 {
			t.Errorf("stat %q: blksize %d, want 512", w.name, st.Blksize)
		}
	}
	for _, bad := range []string{"seq/4", "seq/01", "seq/+1", "seq/x", "cnv/2", "other", "seq/0/x"} {
		if _, err := os.Stat(f.path(bad)); err == nil {
			t.Errorf("%s exists", bad)
		}
	}
	// The name space is fixed.
	for what, err := range map[string]error{
		"create": func() error { _, err := os.Create(f.path("seq/new")); return err }(),
		"mkdir":  os.Mkdir(f.path("seq/d"), 0o755),
		"remove": os.Remove(f.path("seq/0")),
		"rename": os.Rename(f.path("seq/0"), f.path("seq/9")),
		"chmod":  os.Chmod(f.path("seq/0"), 0o600),
		"chown":  os.Chown(f.path("seq/0"), 1, 1),
		"rmdir":  os.Remove(f.path("cnv")),
	} {
		if err == nil {
			t.Errorf("%s succeeded", what)
		} else if what == "create" {
			wantErrno(t, what, err, syscall.EACCES)
		} else {
			wantErrno(t, what, err, syscall.EPERM)
		}
	}
}

func TestNoConventionalDirectory(t *testing.T) {
	img := newImage(t, "4M", "zone.size=1M")
	f := mountImage(t, img, zonefs.Options{}, image.CacheWriteBack)
	if got := names(t, f.dir); !slices.Equal(got, []string{"seq"}) {
		t.Errorf("root holds %v, want [seq]", got)
	}
	var st unix.Stat_t
	wantOK(t, "stat root", unix.Stat(f.dir, &st))
	if st.Size != 1 || st.Nlink != 3 {
		t.Errorf("root: size %d nlink %d, want 1 and 3", st.Size, st.Nlink)
	}
}

func TestSequentialWrites(t *testing.T) {
	img := newImage(t, geomSize, geometry...)
	f := mountImage(t, img, zonefs.Options{}, image.CacheWriteBack)
	fd := f.open("seq/0", unix.O_RDWR)
	defer unix.Close(fd)

	data := pattern(768*kib, 1)
	n, err := pwrite(fd, data[:64*kib], 0)
	wantOK(t, "write at 0", err)
	if n != 64*kib {
		t.Fatalf("wrote %d", n)
	}
	// Not at the end of the file.
	_, err = pwrite(fd, data[:4*kib], 0)
	wantErrno(t, "write at 0 again", err, syscall.EINVAL)
	_, err = pwrite(fd, data[:4*kib], 68*kib)
	wantErrno(t, "write past the end", err, syscall.EINVAL)
	// Not in 512-byte units.
	_, err = pwrite(fd, data[:100], 64*kib)
	wantErrno(t, "write of 100 bytes", err, syscall.EINVAL)
	// Reads stop at the size.
	buf := make([]byte, 128*kib)
	n, err = unix.Pread(fd, buf, 0)
	wantOK(t, "read", err)
	if n != 64*kib || !bytes.Equal(buf[:n], data[:64*kib]) {
		t.Fatalf("read %d bytes (want 65536), data equal %v", n, bytes.Equal(buf[:min(n, 64*kib)], data[:min(n, 64*kib)]))
	}
	n, err = unix.Pread(fd, buf, 100*kib)
	if err != nil || n != 0 {
		t.Errorf("read beyond the size: %d, %v; want 0, nil", n, err)
	}
	// O_APPEND goes to the end, whatever the offset.
	afd := f.open("seq/0", unix.O_WRONLY|unix.O_APPEND)
	n, err = pwrite(afd, data[64*kib:128*kib], 0)
	wantOK(t, "append", err)
	if n != 64*kib {
		t.Fatalf("appended %d", n)
	}
	unix.Close(afd)
	var st unix.Stat_t
	wantOK(t, "fstat", unix.Fstat(fd, &st))
	if st.Size != 128*kib {
		t.Errorf("size %d after two writes, want %d", st.Size, 128*kib)
	}
	// A write running past the capacity is cut short there; then EFBIG.
	n, err = pwrite(fd, pattern(700*kib, 9), 128*kib)
	wantOK(t, "write across the capacity", err)
	if n != 640*kib {
		t.Errorf("write across the capacity wrote %d, want %d", n, 640*kib)
	}
	_, err = pwrite(fd, data[:4*kib], 768*kib)
	wantErrno(t, "write at the capacity", err, syscall.EFBIG)
	if z := f.zone(2); z.Cond != zone.CondFull {
		t.Errorf("zone 2 is %v after filling its file, want FULL", z.Cond)
	}
	n, err = unix.Pread(fd, buf[:4*kib], 768*kib-4*kib)
	if err != nil || n != 4*kib || !bytes.Equal(buf[:n], pattern(700*kib, 9)[636*kib:640*kib]) {
		t.Errorf("read of the last 4 KiB: %d, %v", n, err)
	}
	n, err = unix.Pread(fd, buf, 768*kib)
	if err != nil || n != 0 {
		t.Errorf("read at the capacity: %d, %v; want 0, nil", n, err)
	}
	// The short last zone holds 512 KiB.
	lfd := f.open("seq/3", unix.O_WRONLY)
	n, err = pwrite(lfd, pattern(640*kib, 3), 0)
	if err != nil || n != 512*kib {
		t.Errorf("write to the short zone: %d, %v; want 524288", n, err)
	}
	unix.Close(lfd)
}

func TestConventionalFiles(t *testing.T) {
	img := newImage(t, geomSize, geometry...)
	f := mountImage(t, img, zonefs.Options{}, image.CacheWriteBack)
	fd := f.open("cnv/1", unix.O_RDWR)
	defer unix.Close(fd)
	want := make([]byte, mib)
	for _, w := range []struct {
		off int
		n   int
	}{{1000, 3}, {0, 4096}, {mib - 10, 10}, {333333, 70000}} {
		p := pattern(w.n, byte(w.off))
		n, err := pwrite(fd, p, int64(w.off))
		if err != nil || n != w.n {
			t.Fatalf("write %d at %d: %d, %v", w.n, w.off, n, err)
		}
		copy(want[w.off:], p)
	}
	n, err := pwrite(fd, pattern(100, 1), mib-50)
	if err != nil || n != 50 {
		t.Errorf("write across the end: %d, %v; want 50", n, err)
	}
	copy(want[mib-50:], pattern(100, 1))
	_, err = pwrite(fd, []byte{1}, mib)
	wantErrno(t, "write at the end", err, syscall.EFBIG)
	afd := f.open("cnv/1", unix.O_WRONLY|unix.O_APPEND)
	_, err = unix.Write(afd, []byte{1})
	wantErrno(t, "O_APPEND write", err, syscall.EINVAL)
	unix.Close(afd)
	got, err := os.ReadFile(f.path("cnv/1"))
	wantOK(t, "read", err)
	if !bytes.Equal(got, want) {
		t.Errorf("conventional file content differs (%d bytes read)", len(got))
	}
	wantErrno(t, "truncate cnv", os.Truncate(f.path("cnv/1"), 0), syscall.EPERM)
	_, err = os.OpenFile(f.path("cnv/0"), os.O_WRONLY|os.O_TRUNC, 0)
	wantErrno(t, "open cnv with O_TRUNC", err, syscall.EPERM)
	// Through the device: the bytes are in zone 1.
	dev := make([]byte, mib)
	if _, err := f.dev.ReadAt(dev, mib); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dev, want) {
		t.Error("zone 1 of the device does not hold what was written to cnv/1")
	}
}

func TestTruncate(t *testing.T) {
	img := newImage(t, geomSize, geometry...)
	f := mountImage(t, img, zonefs.Options{}, image.CacheWriteBack)
	p := f.path("seq/1")
	fd := f.open("seq/1", unix.O_WRONLY)
	_, err := pwrite(fd, pattern(8*kib, 5), 0)
	wantOK(t, "write", err)
	unix.Close(fd)
	for _, size := range []int64{100, 4 * kib, 768*kib - 512, 768*kib + 512, mib} {
		wantErrno(t, "truncate", os.Truncate(p, size), syscall.EINVAL)
	}
	wantErrno(t, "truncate beyond every file", os.Truncate(p, 2*mib), syscall.EFBIG)
	// zonefs checks the size before comparing it with the current one.
	wantErrno(t, "truncate to the size", os.Truncate(p, 8*kib), syscall.EINVAL)
	// Finish.
	wantOK(t, "truncate to the capacity", os.Truncate(p, 768*kib))
	st, _ := os.Stat(p)
	if st.Size() != 768*kib || f.zone(3).Cond != zone.CondFull {
		t.Errorf("after finish: size %d, zone %v", st.Size(), f.zone(3).Cond)
	}
	got, _ := os.ReadFile(p)
	if len(got) != 768*kib || !bytes.Equal(got[:8*kib], pattern(8*kib, 5)) || !bytes.Equal(got[8*kib:], make([]byte, 760*kib)) {
		t.Errorf("after finish the file reads %d bytes, data then zeroes: %v", len(got), len(got) == 768*kib)
	}
	// Reset.
	wantOK(t, "truncate to 0", os.Truncate(p, 0))
	st, _ = os.Stat(p)
	if st.Size() != 0 || f.zone(3).Cond != zone.CondEmpty {
		t.Errorf("after reset: size %d, zone %v", st.Size(), f.zone(3).Cond)
	}
	wantOK(t, "truncate an empty file to 0", os.Truncate(p, 0))
	// O_TRUNC resets too (dd without conv=notrunc).
	fd = f.open("seq/1", unix.O_WRONLY)
	_, err = pwrite(fd, pattern(4*kib, 6), 0)
	wantOK(t, "write", err)
	unix.Close(fd)
	fd = f.open("seq/1", unix.O_WRONLY|unix.O_TRUNC)
	_, err = pwrite(fd, pattern(4*kib, 7), 0)
	wantOK(t, "write after O_TRUNC", err)
	unix.Close(fd)
	got, _ = os.ReadFile(p)
	if !bytes.Equal(got, pattern(4*kib, 7)) {
		t.Errorf("after O_TRUNC and a write the file holds %d bytes", len(got))
	}
}

func TestStatfs(t *testing.T) {
	img := newImage(t, geomSize, geometry...)
	f := mountImage(t, img, zonefs.Options{}, image.CacheWriteBack)
	blocks := uint64(2*mib+3*768*kib+512*kib) / 512
	used := uint64(2*mib) / 512
	check := func(what string) {
		t.Helper()
		var st unix.Statfs_t
		wantOK(t, "statfs", unix.Statfs(f.dir, &st))
		if st.Bsize != 512 || st.Blocks != blocks || st.Bfree != blocks-used || st.Bavail != blocks-used || st.Files != 8 || st.Ffree != 0 || st.Namelen != 16 {
			t.Errorf("%s: statfs bsize %d blocks %d bfree %d bavail %d files %d ffree %d namelen %d; want 512 %d %d %d 8 0 16",
				what, st.Bsize, st.Blocks, st.Bfree, st.Bavail, st.Files, st.Ffree, st.Namelen, blocks, blocks-used, blocks-used)
		}
	}
	check("new")
	fd := f.open("seq/0", unix.O_WRONLY)
	_, err := pwrite(fd, make([]byte, 12*kib), 0)
	wantOK(t, "write", err)
	unix.Close(fd)
	used += 12 * kib / 512
	check("after 12 KiB")
	wantOK(t, "finish", os.Truncate(f.path("seq/2"), 768*kib))
	used += 768 * kib / 512
	check("after a finish")
	wantOK(t, "reset", os.Truncate(f.path("seq/0"), 0))
	used -= 12 * kib / 512
	check("after a reset")
}

func TestActiveLimit(t *testing.T) {
	img := newImage(t, "4M", "zone.size=1M", "zone.max_active_zones=2")
	f := mountImage(t, img, zonefs.Options{}, image.CacheWriteBack)
	for _, name := range []string{"seq/0", "seq/1"} {
		fd := f.open(name, unix.O_WRONLY)
		_, err := pwrite(fd, make([]byte, 4*kib), 0)
		wantOK(t, name, err)
		unix.Close(fd)
	}
	fd := f.open("seq/2", unix.O_WRONLY)
	defer unix.Close(fd)
	_, err := pwrite(fd, make([]byte, 4*kib), 0)
	wantErrno(t, "write to a third zone", err, syscall.EOVERFLOW)
	if st, _ := os.Stat(f.path("seq/2")); st.Size() != 0 {
		t.Errorf("failed write changed the size to %d", st.Size())
	}
	// Finishing zone 0 frees an active slot.
	wantOK(t, "finish seq/0", os.Truncate(f.path("seq/0"), mib))
	_, err = pwrite(fd, make([]byte, 4*kib), 0)
	wantOK(t, "write after the finish", err)
}

func TestOpenLimitImplicit(t *testing.T) {
	img := newImage(t, "4M", "zone.size=1M", "zone.max_open_zones=1")
	f := mountImage(t, img, zonefs.Options{}, image.CacheWriteBack)
	for round := 0; round < 2; round++ {
		for i, name := range []string{"seq/0", "seq/1", "seq/2"} {
			fd := f.open(name, unix.O_WRONLY|unix.O_APPEND)
			_, err := unix.Write(fd, make([]byte, 4*kib))
			wantOK(t, name, err)
			unix.Close(fd)
			if c := f.zone(uint32(i)).Cond; c != zone.CondImpOpen {
				t.Errorf("zone %d is %v after a write, want IMP_OPEN", i, c)
			}
		}
	}
	// Every open slot explicitly open: a write that needs one fails.
	wantOK(t, "explicit open", f.dev.Manage(zone.OpOpen, 3*mib, mib))
	fd := f.open("seq/0", unix.O_WRONLY|unix.O_APPEND)
	defer unix.Close(fd)
	_, err := unix.Write(fd, make([]byte, 4*kib))
	wantErrno(t, "write with every open zone explicitly open", err, syscall.ETOOMANYREFS)
}

func TestExplicitOpen(t *testing.T) {
	img := newImage(t, "4M", "zone.size=1M", "zone.max_open_zones=2")
	f := mountImage(t, img, zonefs.Options{ExplicitOpen: true}, image.CacheWriteBack)
	if f.m.FS.ExplicitOpenIgnored() {
		t.Fatal("explicit-open ignored with max_open_zones=2")
	}
	a := f.open("seq/0", unix.O_WRONLY)
	a2 := f.open("seq/0", unix.O_RDWR) // the same file again takes no slot
	if c := f.zone(0).Cond; c != zone.CondExpOpen {
		t.Errorf("zone 0 is %v with its file open for writing, want EXP_OPEN", c)
	}
	r := f.open("seq/2", unix.O_RDONLY) // reading takes no slot
	unix.Close(r)
	b := f.open("seq/1", unix.O_WRONLY)
	_, err := unix.Open(f.path("seq/2"), unix.O_WRONLY, 0)
	wantErrno(t, "third open for writing", err, syscall.EBUSY)
	_, err = pwrite(a, make([]byte, 4*kib), 0)
	wantOK(t, "write", err)
	if c := f.zone(0).Cond; c != zone.CondExpOpen {
		t.Errorf("zone 0 is %v after a write, want EXP_OPEN", c)
	}
	// A reset keeps the zone open for its writers.
	wantOK(t, "truncate 0", unix.Ftruncate(a, 0))
	if c := f.zone(0).Cond; c != zone.CondExpOpen {
		t.Errorf("zone 0 is %v after a reset, want EXP_OPEN", c)
	}
	_, err = pwrite(a, make([]byte, 4*kib), 0)
	wantOK(t, "write after reset", err)
	unix.Close(a)
	if c := f.zone(0).Cond; c != zone.CondExpOpen {
		t.Errorf("zone 0 is %v with one writer left, want EXP_OPEN", c)
	}
	unix.Close(a2)
	unix.Close(b)
	// Release is asynchronous: wait for the slots to come back.
	var fd int
	for i := 0; ; i++ {
		fd, err = unix.Open(f.path("seq/2"), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err == nil || i == 100 {
			break
		}
		unix.Nanosleep(&unix.Timespec{Nsec: 10e6}, nil)
	}
	wantOK(t, "open after closing the others", err)
	unix.Close(fd)
	if c := f.waitCond(0, zone.CondClosed); c != zone.CondClosed {
		t.Errorf("zone 0 is %v after its last writer closed, want CLOSED", c)
	}
	if c := f.waitCond(1, zone.CondEmpty); c != zone.CondEmpty {
		t.Errorf("zone 1 is %v after its writer closed without writing, want EMPTY", c)
	}
}

func TestExplicitOpenIgnoredWithoutLimit(t *testing.T) {
	img := newImage(t, "4M", "zone.size=1M")
	f := mountImage(t, img, zonefs.Options{ExplicitOpen: true}, image.CacheWriteBack)
	if !f.m.FS.ExplicitOpenIgnored() {
		t.Error("explicit-open not reported ignored without max_open_zones")
	}
	fd := f.open("seq/0", unix.O_WRONLY)
	defer unix.Close(fd)
	if c := f.zone(0).Cond; c != zone.CondEmpty {
		t.Errorf("zone 0 is %v, want EMPTY (explicit-open ignored)", c)
	}
}

func TestZoneConditions(t *testing.T) {
	img := newImage(t, geomSize, geometry...)
	var conds [6]atomic.Int32
	f := mountImage(t, img, zonefs.Options{Condition: func(i uint32) zonefs.Condition {
		return zonefs.Condition(conds[i].Load())
	}}, image.CacheWriteBack)
	fd := f.open("seq/0", unix.O_RDWR)
	_, err := pwrite(fd, pattern(8*kib, 4), 0)
	wantOK(t, "write", err)

	conds[2].Store(int32(zonefs.ReadOnly))
	st, err := os.Stat(f.path("seq/0"))
	wantOK(t, "stat", err)
	if st.Mode().Perm() != 0o440 || st.Size() != 8*kib {
		t.Errorf("read-only zone: mode %v size %d, want -r--r----- and 8192", st.Mode(), st.Size())
	}
	_, err = pwrite(fd, make([]byte, 4*kib), 8*kib)
	wantErrno(t, "write to a read-only zone", err, syscall.EPERM)
	wantErrno(t, "truncate a read-only zone", os.Truncate(f.path("seq/0"), 0), syscall.EPERM)
	_, err = unix.Open(f.path("seq/0"), unix.O_WRONLY, 0)
	wantErrno(t, "open a read-only zone for writing", err, syscall.EPERM)
	got, err := os.ReadFile(f.path("seq/0"))
	if err != nil || !bytes.Equal(got, pattern(8*kib, 4)) {
		t.Errorf("read of a read-only zone: %d bytes, %v", len(got), err)
	}

	conds[2].Store(int32(zonefs.Offline))
	st, err = os.Stat(f.path("seq/0"))
	wantOK(t, "stat", err)
	if st.Mode().Perm() != 0 || st.Size() != 0 {
		t.Errorf("offline zone: mode %v size %d, want ---------- and 0", st.Mode(), st.Size())
	}
	buf := make([]byte, 4*kib)
	_, err = unix.Pread(fd, buf, 0)
	wantErrno(t, "read of an offline zone", err, syscall.EPERM)
	unix.Close(fd)

	conds[0].Store(int32(zonefs.ReadOnly))
	wantErrno(t, "write to a read-only conventional zone", os.WriteFile(f.path("cnv/0"), []byte("x"), 0), syscall.EPERM)
}

func TestReadOnlyMount(t *testing.T) {
	img := newImage(t, geomSize, geometry...)
	func() {
		f := mountImage(t, img, zonefs.Options{}, image.CacheWriteBack)
		fd := f.open("seq/0", unix.O_WRONLY)
		_, err := pwrite(fd, pattern(4*kib, 2), 0)
		wantOK(t, "write", err)
		unix.Close(fd)
		f.unmount()
	}()
	f := mountImage(t, img, zonefs.Options{ReadOnly: true}, image.CacheWriteBack)
	got, err := os.ReadFile(f.path("seq/0"))
	if err != nil || !bytes.Equal(got, pattern(4*kib, 2)) {
		t.Errorf("read: %d bytes, %v", len(got), err)
	}
	_, err = unix.Open(f.path("seq/1"), unix.O_WRONLY, 0)
	wantErrno(t, "open for writing", err, syscall.EROFS)
	wantErrno(t, "truncate", os.Truncate(f.path("seq/0"), 0), syscall.EROFS)
}

// TestFsyncDurability: in writeback mode the write pointer on disk moves
// at fsync, not before; with writethrough at every write.
func TestFsyncDurability(t *testing.T) {
	onDisk := func(t *testing.T, img string) uint64 {
		t.Helper()
		d, err := zone.Open(img, image.Options{ReadOnly: true, NoLock: true})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		zs, err := d.Report(0, 1)
		if err != nil {
			t.Fatal(err)
		}
		return zs[0].WP
	}
	for _, tc := range []struct {
		cache   image.CacheMode
		durable bool // a write is durable without fsync
	}{{image.CacheWriteBack, false}, {image.CacheWriteThrough, true}} {
		t.Run(tc.cache.String(), func(t *testing.T) {
			img := newImage(t, "4M", "zone.size=1M")
			f := mountImage(t, img, zonefs.Options{}, tc.cache)
			fd := f.open("seq/0", unix.O_WRONLY)
			defer unix.Close(fd)
			_, err := pwrite(fd, pattern(64*kib, 1), 0)
			wantOK(t, "write", err)
			want := uint64(0)
			if tc.durable {
				want = 64 * kib
			}
			if wp := onDisk(t, img); wp != want {
				t.Errorf("write pointer on disk before fsync: 0x%x, want 0x%x", wp, want)
			}
			wantOK(t, "fsync", unix.Fsync(fd))
			if wp := onDisk(t, img); wp != 64*kib {
				t.Errorf("write pointer on disk after fsync: 0x%x, want 0x%x", wp, 64*kib)
			}
			// O_DSYNC writes are durable when they return.
			sfd := f.open("seq/0", unix.O_WRONLY|unix.O_APPEND|unix.O_DSYNC)
			_, err = unix.Write(sfd, pattern(4*kib, 2))
			wantOK(t, "O_DSYNC write", err)
			unix.Close(sfd)
			if wp := onDisk(t, img); wp != 68*kib {
				t.Errorf("write pointer on disk after an O_DSYNC write: 0x%x, want 0x%x", wp, 68*kib)
			}
		})
	}
}
