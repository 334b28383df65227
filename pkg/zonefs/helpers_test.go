package zonefs_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zqimg/zqimg/internal/testimg"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
	"github.com/zqimg/zqimg/pkg/zonefs"
	"golang.org/x/sys/unix"
)

const (
	kib = 1 << 10
	mib = 1 << 20
)

// requireFUSE fails (never skips) when the tests cannot mount: they need
// root and /dev/fuse, which CI has.
func requireFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("mount tests need root (FUSE mounts without fusermount): running as uid %d", os.Geteuid())
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("mount tests need /dev/fuse: %v", err)
	}
}

// newImage creates a zoned image with the given -o options.
func newImage(t testing.TB, size string, opts ...string) string {
	t.Helper()
	return testimg.Zoned(t, size, opts...)
}

// fixture is a mounted image.
type fixture struct {
	t    testing.TB
	img  string
	dir  string
	dev  *zone.Device
	m    *zonefs.Mount
	once sync.Once
}

// mountImage opens img and mounts it on a fresh directory; the mount is
// undone when the test ends.
func mountImage(t testing.TB, img string, o zonefs.Options, cache image.CacheMode) *fixture {
	t.Helper()
	requireFUSE(t)
	dev, err := zone.Open(img, image.Options{ReadOnly: o.ReadOnly, Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := zonefs.NewMount(dev, dir, zonefs.MountOptions{Options: o, Source: img})
	if err != nil {
		dev.Close()
		t.Fatalf("mounting %s on %s: %v", img, dir, err)
	}
	f := &fixture{t: t, img: img, dir: dir, dev: dev, m: m}
	t.Cleanup(f.unmount)
	return f
}

// unmount unmounts and closes the device (once).
func (f *fixture) unmount() {
	f.once.Do(func() {
		var err error
		for i := 0; i < 50; i++ {
			if err = f.m.Unmount(); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			f.t.Errorf("unmount %s: %v", f.dir, err)
			_ = f.m.Detach()
		}
		f.m.Wait()
		if err := f.dev.Close(); err != nil {
			f.t.Errorf("closing the device: %v", err)
		}
	})
}

func (f *fixture) path(name string) string { return filepath.Join(f.dir, name) }

// open opens a file of the mount with open(2) flags.
func (f *fixture) open(name string, flags int) int {
	f.t.Helper()
	fd, err := unix.Open(f.path(name), flags|unix.O_CLOEXEC, 0)
	if err != nil {
		f.t.Fatalf("open %s: %v", name, err)
	}
	return fd
}

// zone returns zone i of the mounted device.
func (f *fixture) zone(i uint32) zone.Zone {
	f.t.Helper()
	h := f.dev.Header()
	zs, err := f.dev.Report(int64(uint64(i)*h.ZoneSize), 1)
	if err != nil {
		f.t.Fatal(err)
	}
	return zs[0]
}

// waitCond polls zone i until it reaches want or 5 s pass, and returns its
// last condition. The kernel sends FUSE RELEASE after close(2) returns, so a
// condition that depends on a file being released is reached asynchronously.
func (f *fixture) waitCond(i uint32, want zone.Cond) zone.Cond {
	f.t.Helper()
	c := f.zone(i).Cond
	for tries := 0; c != want && tries < 500; tries++ {
		unix.Nanosleep(&unix.Timespec{Nsec: 10e6}, nil)
		c = f.zone(i).Cond
	}
	return c
}

// pwrite writes and returns the count and errno.
func pwrite(fd int, p []byte, off int64) (int, error) {
	n, err := unix.Pwrite(fd, p, off)
	return n, err
}

func wantErrno(t testing.TB, what string, err error, want syscall.Errno) {
	t.Helper()
	var got syscall.Errno
	if !errors.As(err, &got) || got != want {
		t.Errorf("%s: error %v, want %v (%d)", what, err, want, int(want))
	}
}

func wantOK(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7) + byte(i>>9)
	}
	return b
}

// checkImage runs zqimg's check on a closed image: no corruption, no
// check error; leaks are reported to the caller.
func checkImage(t testing.TB, img string) *check.Result {
	t.Helper()
	res, err := check.CheckPath(img, check.Options{})
	if err != nil {
		t.Fatalf("check %s: %v", img, err)
	}
	if res.Corruptions != 0 || res.CheckErrors != 0 {
		var b strings.Builder
		for _, f := range res.Findings {
			b.WriteString(f.Msg + "\n")
		}
		t.Fatalf("check %s: %d corruptions, %d check errors:\n%s", img, res.Corruptions, res.CheckErrors, b.String())
	}
	return res
}
