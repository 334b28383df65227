// Package fulldisk runs zqimg on a real, small file system (an 8 MiB
// tmpfs mounted by the test, which needs root: CI runs as root) that fills
// up: plain writes, zero writes, zone appends, create and check -r all.
// Every request that cannot be stored fails at that request with
// "No space left on device"; nothing acknowledged is lost; the image
// checks without corruption.
package fulldisk

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/internal/testbin"
	"golang.org/x/sys/unix"
)

var zqimg string

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, &zqimg)) }

// smallFS mounts an 8 MiB tmpfs for the test and returns its path.
func smallFS(t *testing.T) string {
	t.Helper()
	testbin.NeedRoot(t, "mounting a tmpfs")
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=8m"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fillUp leaves about free bytes free on the file system of dir.
func fillUp(t *testing.T, dir string, free int64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	avail := int64(st.Bavail) * st.Bsize
	if avail <= free {
		return
	}
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, avail-free); err != nil {
		t.Fatalf("filling the file system: %v", err)
	}
}

type run struct {
	out, err string
	code     int
}

func zq(t *testing.T, stdin string, args ...string) run {
	t.Helper()
	cmd := exec.Command(zqimg, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return run{o.String(), e.String(), code}
}

// checkNoCorruption runs zqimg check (and, for plain images, qemu-img
// check when present): leaks are allowed (exit 3), corruption is not.
func checkNoCorruption(t *testing.T, img string, zoned bool) {
	t.Helper()
	r := zq(t, "", "check", img)
	if r.code != 0 && r.code != 3 {
		t.Fatalf("zqimg check: exit %d\n%s%s", r.code, r.out, r.err)
	}
	if _, err := exec.LookPath("qemu-img"); err == nil && !zoned {
		out, err := exec.Command("qemu-img", "check", img).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() != 3 {
			t.Fatalf("qemu-img check: %v\n%s", err, out)
		} else if err != nil && !ok {
			t.Fatal(err)
		}
	}
}

var wroteRE = regexp.MustCompile(`^wrote (\d+)/\d+ bytes at offset (\d+)$`)

// acknowledged returns the offsets of the writes a session acknowledged,
// in the order of its commands, and how many failed for lack of space.
func acknowledged(t *testing.T, out string) (offs []int64, nospace int) {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimPrefix(l, "zqimg> ")
		if m := wroteRE.FindStringSubmatch(l); m != nil {
			off, _ := strconv.ParseInt(m[2], 10, 64)
			offs = append(offs, off)
		}
		if strings.Contains(l, "failed: No space left on device") {
			nospace++
		}
	}
	return offs, nospace
}

// Plain and zero writes on a disk that fills: each command either prints
// `wrote` (and its data is there afterwards) or fails with ENOSPC.
func TestWritesOnAFullDisk(t *testing.T) {
	for _, c := range []struct {
		name, opts string
		zero       bool
	}{
		{"writes-4k-clusters", "cluster_size=4k", false},
		{"writes-512-clusters", "cluster_size=512", false},
		{"writes-64k-clusters", "cluster_size=64k", false},
		{"zero-writes-4k-clusters", "cluster_size=4k", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := smallFS(t)
			img := filepath.Join(dir, "disk.qcow2")
			size := "4G"
			if c.zero {
				size = "4M"
			}
			if r := zq(t, "", "create", "-q", "-o", c.opts, img, size); r.code != 0 {
				t.Fatalf("create: %s", r.err)
			}
			if c.zero {
				// Zeroing part of a cluster needs space only where the
				// cluster is shared: fill the image with data and take an
				// internal snapshot (qemu-img's) so that every zero write
				// copies its cluster.
				if r := zq(t, "", "write", "-q", "-P", "0x77", img, "0", "4M"); r.code != 0 {
					t.Fatalf("fill: %s", r.err)
				}
				if out, err := exec.Command("qemu-img", "snapshot", "-c", "s1", img).CombinedOutput(); err != nil {
					t.Fatalf("qemu-img snapshot: %v\n%s", err, out)
				}
			}
			fillUp(t, dir, 256<<10)
			rng := rand.New(rand.NewSource(int64(len(c.name))))
			var script strings.Builder
			type wr struct {
				off     int64
				pattern int
			}
			var cmds []wr
			span := int64(4 << 30)
			if c.zero {
				span = 4 << 20
			}
			for i := 0; i < 400; i++ {
				off := rng.Int63n(span/4096) * 4096
				if c.zero {
					off += 1024 // partial clusters: written as zeroes in new clusters
				}
				cmds = append(cmds, wr{off, 1 + i%250})
				if c.zero {
					fmt.Fprintf(&script, "write -z %d 2k\n", off)
				} else {
					fmt.Fprintf(&script, "write -P %d %d 4k\n", 1+i%250, off)
				}
			}
			r := zq(t, script.String(), "io", img)
			offs, nospace := acknowledged(t, r.out)
			if nospace == 0 {
				t.Fatalf("the disk never filled (%d writes acknowledged)\n%s", len(offs), r.err)
			}
			if r.code != 1 {
				t.Fatalf("session exit %d with failed writes", r.code)
			}
			if strings.Contains(r.err, "closing") {
				t.Fatalf("the session failed at close: acknowledged data may be lost:\n%s", r.err)
			}
			for _, l := range strings.Split(r.err, "\n") {
				if l != "" && !strings.Contains(l, "no space left on device") {
					t.Fatalf("unexpected message: %q", l)
				}
			}
			checkNoCorruption(t, img, false)
			// Every acknowledged write reads back (the last write to an
			// offset wins; offsets rarely repeat).
			last := map[int64]int{}
			ack := map[int64]bool{}
			for _, o := range offs {
				ack[o] = true
			}
			for _, w := range cmds {
				if ack[w.off] {
					last[w.off] = w.pattern
				}
			}
			for off, p := range last {
				args := []string{"read", "-q", "-P", strconv.Itoa(p), img, strconv.FormatInt(off, 10), "4k"}
				if c.zero {
					args = []string{"read", "-q", "-P", "0", img, strconv.FormatInt(off, 10), "2k"}
				}
				if r := zq(t, "", args...); r.code != 0 {
					t.Fatalf("acknowledged write at %d does not read back: %s%s", off, r.out, r.err)
				}
			}
			t.Logf("%d writes acknowledged, %d refused for lack of space", len(offs), nospace)
		})
	}
}

// Zone appends on a full disk: each append lands where it says or fails.
func TestAppendsOnAFullDisk(t *testing.T) {
	dir := smallFS(t)
	img := filepath.Join(dir, "zoned.qcow2")
	if r := zq(t, "", "create", "-q", "-o", "cluster_size=512,zone.mode=host-managed,zone.size=1M,zone.max_append_bytes=8k", img, "64M"); r.code != 0 {
		t.Fatalf("create: %s", r.err)
	}
	fillUp(t, dir, 192<<10)
	var script strings.Builder
	for i := 0; i < 600; i++ {
		fmt.Fprintf(&script, "zap -p %dM 4k\n", i%64)
	}
	r := zq(t, script.String(), "io", img)
	if !strings.Contains(r.out, "zone append failed: No space left on device") {
		t.Fatalf("the disk never filled:\n%s", r.err)
	}
	var landed []int64
	for _, l := range strings.Split(r.out, "\n") {
		if i := strings.Index(l, "the append sector is 0x"); i >= 0 {
			s, _ := strconv.ParseInt(l[i+len("the append sector is 0x"):], 16, 64)
			landed = append(landed, s*512)
		}
	}
	checkNoCorruption(t, img, true)
	for _, off := range landed {
		if r := zq(t, "", "read", "-q", "-P", "0xcd", img, strconv.FormatInt(off, 10), "4k"); r.code != 0 {
			t.Fatalf("acknowledged append at %#x does not read back: %s%s", off, r.out, r.err)
		}
	}
	// The write pointers cover exactly the acknowledged appends.
	perZone := map[int64]int64{}
	for _, off := range landed {
		perZone[off/(1<<20)] += 4096
	}
	r = zq(t, "", "zrp", img, "0", "64")
	for i, l := range strings.Split(strings.TrimSpace(r.out), "\n") {
		var start, ln, cp, wp int64
		var cond, typ int
		if _, err := fmt.Sscanf(l, "start: 0x%x, len 0x%x, cap 0x%x, wptr 0x%x, zcond:%d, [type: %d]", &start, &ln, &cp, &wp, &cond, &typ); err != nil {
			t.Fatalf("zone report line %q: %v", l, err)
		}
		if got := (wp - start) * 512; got != perZone[int64(i)] {
			t.Fatalf("zone %d: write pointer %d bytes in, %d bytes acknowledged", i, got, perZone[int64(i)])
		}
	}
}

// create on a full disk fails clearly and leaves nothing behind.
func TestCreateOnAFullDisk(t *testing.T) {
	dir := smallFS(t)
	fillUp(t, dir, 16<<10)
	img := filepath.Join(dir, "new.qcow2")
	r := zq(t, "", "create", "-q", "-o", "cluster_size=512,zone.mode=host-managed,zone.size=512k", img, "1G")
	if r.code == 0 {
		t.Fatal("create succeeded on a full disk")
	}
	if !strings.Contains(r.err, "No space left on device") && !strings.Contains(r.err, "no space left on device") {
		t.Fatalf("create message does not name the problem: %q", r.err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "filler" {
			t.Fatalf("create left %s behind", e.Name())
		}
	}
}

// check -r all on a full disk repairs, or fails clearly without damage.
func TestRepairOnAFullDisk(t *testing.T) {
	dir := smallFS(t)
	img := filepath.Join(dir, "leaky.qcow2")
	if r := zq(t, "", "create", "-q", "-o", "cluster_size=4k,zone.mode=host-managed,zone.size=1M", img, "256M"); r.code != 0 {
		t.Fatalf("create: %s", r.err)
	}
	var script strings.Builder
	for i := 0; i < 32; i++ {
		fmt.Fprintf(&script, "write -P 0x%x %dM 64k\n", i+1, i)
	}
	if r := zq(t, script.String(), "io", img); r.code != 0 {
		t.Fatalf("writes: %s", r.err)
	}
	// Move write pointers back over data (as a crash between data and
	// pointers does) so that check has data beyond them to discard.
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	tab := bytes.Index(b, le64(1<<20+64<<10))
	if tab < 0 {
		t.Fatal("write-pointer table not found")
	}
	for i := 0; i < 32; i += 2 {
		copy(b[tab+8*(i-1):], le64(uint64(i)<<20+32<<10))
	}
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	fillUp(t, dir, 0)
	r := zq(t, "", "check", "-r", "all", img)
	if r.code == 2 || r.code == 1 && !strings.Contains(strings.ToLower(r.err), "no space left on device") {
		t.Fatalf("check -r all on a full disk: exit %d\n%s%s", r.code, r.out, r.err)
	}
	checkNoCorruption(t, img, true)
	for i := 1; i < 32; i += 2 {
		if r := zq(t, "", "read", "-q", "-P", fmt.Sprintf("0x%x", i+1), img, fmt.Sprintf("%dM", i), "64k"); r.code != 0 {
			t.Fatalf("zone %d data lost: %s%s", i, r.out, r.err)
		}
	}
}

func le64(v uint64) []byte {
	b := make([]byte, 8)
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
	return b
}
