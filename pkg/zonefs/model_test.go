package zonefs_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zonefs"
	"golang.org/x/sys/unix"
)

var modelSteps = flag.Int("model.steps", 400, "operations of TestMountAgainstModel")

// modelFile is what one zone file should hold.
type modelFile struct {
	name string
	seq  bool
	max  int    // maximum size
	data []byte // the file: len = size (seq); fixed length (cnv)
}

// model is the zonefs view of a zoned device in a few lines: sizes,
// contents, and the active zone limit (without explicit-open, the open
// limit never fails a write: the least recently written zone is closed).
type model struct {
	files     []*modelFile
	maxActive int
}

func (m *model) active() int {
	n := 0
	for _, f := range m.files {
		if f.seq && len(f.data) > 0 && len(f.data) < f.max {
			n++
		}
	}
	return n
}

// write returns the count and errno a write of p at off (or appending)
// must give, and applies it.
func (m *model) write(f *modelFile, p []byte, off int, appendMode bool) (int, syscall.Errno) {
	if appendMode {
		if !f.seq {
			return 0, syscall.EINVAL
		}
		off = len(f.data)
	}
	if off >= f.max {
		return 0, syscall.EFBIG
	}
	n := min(len(p), f.max-off)
	if !f.seq {
		copy(f.data[off:], p[:n])
		return n, 0
	}
	if off%512 != 0 || n%512 != 0 || off != len(f.data) {
		return 0, syscall.EINVAL
	}
	if len(f.data) == 0 && m.maxActive > 0 && m.active() >= m.maxActive {
		return 0, syscall.EOVERFLOW
	}
	f.data = append(f.data, p[:n]...)
	return n, 0
}

func (m *model) truncate(f *modelFile, size int) syscall.Errno {
	if !f.seq {
		return syscall.EPERM
	}
	switch {
	case size == 0:
		f.data = f.data[:0]
	case size == f.max:
		if len(f.data) == 0 && m.maxActive > 0 && m.active() >= m.maxActive {
			return syscall.EOVERFLOW // finishing an EMPTY zone activates it
		}
		f.data = append(f.data, make([]byte, f.max-len(f.data))...)
	default:
		return syscall.EINVAL
	}
	return 0
}

func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if err == nil {
		return 0
	}
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

// TestMountAgainstModel drives the mount with random file operations
// (aligned, unaligned, misplaced, appending and oversized writes, reads,
// truncations to every kind of size, fsync, statfs, remounts) and
// compares every result, size and byte with the model.
func TestMountAgainstModel(t *testing.T) {
	all := map[string]int{}
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			for k, v := range runModel(t, seed, *modelSteps) {
				all[k] += v
			}
		})
	}
	// The runs must have reached every outcome.
	for _, k := range []string{"write errno 0 short=false", "write errno 0 short=true", "write invalid argument short=false",
		"write file too large short=false", "write value too large for defined data type short=false",
		"truncate errno 0", "truncate operation not permitted"} {
		if all[k] == 0 {
			t.Errorf("no %q in %d steps", k, 3**modelSteps)
		}
	}
}

// runModel runs one random sequence and returns how often each outcome
// occurred.
func runModel(t *testing.T, seed uint64, steps int) map[string]int {
	const zsize, zcap = 256 * kib, 200 * kib
	img := newImage(t, "1792K", "zone.size=256K", "zone.capacity=200K", "zone.conventional_zones=2",
		"zone.max_active_zones=2", "zone.max_open_zones=1", "cluster_size=4k")
	m := &model{maxActive: 2}
	for i := 0; i < 7; i++ {
		f := &modelFile{seq: i >= 2}
		if f.seq {
			f.name = fmt.Sprintf("seq/%d", i-2)
			f.max = zcap
		} else {
			f.name = fmt.Sprintf("cnv/%d", i)
			f.max = zsize
			f.data = make([]byte, zsize)
		}
		m.files = append(m.files, f)
	}
	rng := rand.New(rand.NewPCG(seed, 99))
	seen := map[string]int{} // outcomes, to show what the run covered
	fx := mountImage(t, img, zonefs.Options{}, image.CacheWriteBack)
	fail := func(step int, format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d step %d: %s", seed, step, fmt.Sprintf(format, args...))
	}
	for step := 0; step < steps; step++ {
		f := m.files[rng.IntN(len(m.files))]
		switch op := rng.IntN(20); {
		case op < 9: // write
			size := len(f.data)
			var off int
			switch rng.IntN(6) {
			case 0, 1, 2:
				off = size
			case 3:
				off = rng.IntN(f.max+1024) &^ 511
			case 4:
				off = rng.IntN(f.max + 1024)
			default:
				off = max(0, size-512)
			}
			if !f.seq {
				off = rng.IntN(f.max + 100)
			}
			var n int
			switch rng.IntN(5) {
			case 0:
				n = rng.IntN(2000) + 1
			case 1:
				n = f.max - size + 512*rng.IntN(4)
			default:
				n = 512 * (rng.IntN(32) + 1)
			}
			n = max(n, 1)
			appendMode := rng.IntN(4) == 0
			flags := unix.O_WRONLY
			if appendMode {
				flags |= unix.O_APPEND
			}
			p := pattern(n, byte(rng.Uint32()))
			wantN, wantE := m.write(f, p, off, appendMode)
			fd := fx.open(f.name, flags)
			got, err := unix.Pwrite(fd, p, int64(off))
			unix.Close(fd)
			seen[fmt.Sprintf("write %v short=%v", wantE, wantE == 0 && wantN < n)]++
			if e := errnoOf(err); e != wantE || (e == 0 && got != wantN) {
				fail(step, "write %s %d bytes at %d (append %v, size %d): %d, %v; want %d, %v", f.name, n, off, appendMode, size, got, err, wantN, wantE)
			}
		case op < 13: // read
			off := rng.IntN(f.max + 1024)
			n := rng.IntN(64*kib) + 1
			buf := make([]byte, n)
			fd := fx.open(f.name, unix.O_RDONLY)
			got, err := unix.Pread(fd, buf, int64(off))
			unix.Close(fd)
			want := []byte{}
			if off < len(f.data) {
				want = f.data[off:min(len(f.data), off+n)]
			}
			if err != nil || !bytes.Equal(buf[:got], want) {
				fail(step, "read %s %d bytes at %d: %d bytes, %v; want %d bytes (equal %v)", f.name, n, off, got, err, len(want), err == nil && bytes.Equal(buf[:got], want))
			}
		case op < 16: // truncate
			var size int
			switch rng.IntN(4) {
			case 0:
				size = 0
			case 1:
				size = f.max
			case 2:
				size = len(f.data)
			default:
				size = rng.IntN(f.max)
			}
			want := m.truncate(f, size)
			seen[fmt.Sprintf("truncate %v", want)]++
			err := unix.Truncate(fx.path(f.name), int64(size))
			if e := errnoOf(err); e != want {
				fail(step, "truncate %s to %d (size %d): %v, want %v", f.name, size, len(f.data), err, want)
			}
		case op < 17: // fsync
			fd := fx.open(f.name, unix.O_RDONLY)
			err := unix.Fsync(fd)
			unix.Close(fd)
			if err != nil {
				fail(step, "fsync: %v", err)
			}
		case op < 18: // statfs
			var st unix.Statfs_t
			if err := unix.Statfs(fx.dir, &st); err != nil {
				fail(step, "statfs: %v", err)
			}
			var free uint64
			for _, mf := range m.files {
				if mf.seq {
					free += uint64(mf.max-len(mf.data)) / 512
				}
			}
			if st.Bfree != free {
				fail(step, "statfs free blocks %d, want %d", st.Bfree, free)
			}
		case op < 19: // remount now and then
			if rng.IntN(8) == 0 {
				fx.unmount()
				checkImage(t, img)
				fx = mountImage(t, img, zonefs.Options{}, image.CacheWriteBack)
			}
		default: // stat every file
			for _, mf := range m.files {
				var st unix.Stat_t
				if err := unix.Stat(fx.path(mf.name), &st); err != nil {
					fail(step, "stat %s: %v", mf.name, err)
				}
				if st.Size != int64(len(mf.data)) {
					fail(step, "%s has size %d, want %d", mf.name, st.Size, len(mf.data))
				}
			}
		}
	}
	t.Logf("seed %d: %v", seed, seen)
	// Every byte, then check after unmounting.
	for _, mf := range m.files {
		fd := fx.open(mf.name, unix.O_RDONLY)
		buf := make([]byte, mf.max+512)
		n, err := unix.Pread(fd, buf, 0)
		unix.Close(fd)
		if err != nil || !bytes.Equal(buf[:n], mf.data) {
			t.Errorf("final read of %s: %d bytes, %v; want %d bytes", mf.name, n, err, len(mf.data))
		}
	}
	fx.unmount()
	checkImage(t, img)
	return seen
}
