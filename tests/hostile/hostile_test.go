// Package hostile runs zqimg, as a separate process, on images built to
// exhaust it: long backing chains of huge sparse images, and table entries
// naming host offsets far beyond the end of the file. Every command must
// either work or refuse with a message naming the problem, leave the image
// as it was, and stay under a peak resident set of 256 MiB (measured from
// the child's rusage; the child also runs under an address-space limit so
// that a regression fails the test instead of the machine).
package hostile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/zqimg/zqimg/internal/testbin"
)

var zqimg string

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, &zqimg)) }

// maxRSS is the peak resident set every command must stay under.
const maxRSS = 256 << 20

// result is the outcome of one zqimg run.
type result struct {
	args   []string
	code   int
	stdout string
	stderr string
	rss    int64 // peak resident set, bytes
}

func (r result) String() string {
	return fmt.Sprintf("$ zqimg %s\nexit=%d rss=%d KiB\n--- stdout\n%s--- stderr\n%s", strings.Join(r.args, " "), r.code, r.rss>>10, r.stdout, r.stderr)
}

// run runs zqimg in dir under a 2 GiB address-space limit and returns its
// output, exit status and peak resident set.
func run(t *testing.T, dir string, args ...string) result {
	t.Helper()
	// sh execs zqimg: the process waited for is zqimg itself.
	cmd := exec.Command("/bin/sh", append([]string{"-c", `ulimit -v 2097152; exec "$0" "$@"`, zqimg}, args...)...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{args: args, stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("zqimg %v: %v", args, err)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.rss = ru.Maxrss << 10 // Linux reports KiB
	}
	return r
}

func mustRun(t *testing.T, dir string, args ...string) result {
	t.Helper()
	r := run(t, dir, args...)
	if r.code != 0 {
		t.Fatalf("command failed:\n%s", r)
	}
	return r
}

func checkRSS(t *testing.T, r result) {
	t.Helper()
	if r.rss <= 0 {
		t.Fatalf("no peak resident set measured for zqimg %v", r.args)
	}
	if r.rss >= maxRSS {
		t.Errorf("peak resident set %d MiB >= %d MiB:\n%s", r.rss>>20, maxRSS>>20, r)
	}
}

// image is a qcow2 file patched in place by the test.
type image struct {
	t    *testing.T
	path string
	b    []byte
}

func load(t *testing.T, path string) *image {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return &image{t: t, path: path, b: b}
}

func (m *image) u64(off uint64) uint64 { return binary.BigEndian.Uint64(m.b[off:]) }

func (m *image) put64(off, v uint64) {
	m.t.Helper()
	binary.BigEndian.PutUint64(m.b[off:], v)
	if err := os.WriteFile(m.path, m.b, 0o644); err != nil {
		m.t.Fatal(err)
	}
}

const offMask = 0x00fffffffffffe00

// l1Entry returns where L1 entry i of the active table lies in the file.
func (m *image) l1Entry(i uint64) uint64 { return m.u64(40) + 8*i }

// l2Entry returns where the L2 entry of guest cluster 0 lies in the file.
func (m *image) l2Entry0() uint64 {
	l2 := m.u64(m.l1Entry(0)) & offMask
	if l2 == 0 {
		m.t.Fatal("test setup: no L2 table for guest offset 0")
	}
	return l2
}

// setBacking names backing (format probed) in the header cluster.
func setBacking(t *testing.T, path, backing string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const at = 4096 // after the header extensions, in the header cluster
	var h [12]byte
	binary.BigEndian.PutUint64(h[0:], at)
	binary.BigEndian.PutUint32(h[8:], uint32(len(backing)))
	if _, err := f.WriteAt([]byte(backing), at); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(h[:], 8); err != nil {
		t.Fatal(err)
	}
}

// TestHostileChainMemory: a chain of 41 images of 64 TiB each (1 MiB L1
// tables, all sparse) is opened once per image by map, compare, convert
// and measure: each stays far under 256 MiB (opening each level's chain
// anew cost 41·42/2 opens and gigabytes).
func TestHostileChainMemory(t *testing.T) {
	const n = 41
	dir := t.TempDir()
	for i := range n {
		name := "c" + strconv.Itoa(i) + ".qcow2"
		mustRun(t, dir, "create", "-q", "-f", "qcow2", name, "64T")
		if i > 0 {
			setBacking(t, filepath.Join(dir, name), "c"+strconv.Itoa(i-1)+".qcow2")
		}
	}
	mustRun(t, dir, "write", "-q", "-P", "0x5a", "c0.qcow2", "1M", "64k")
	top := "c" + strconv.Itoa(n-1) + ".qcow2"
	for _, args := range [][]string{
		{"map", top},
		{"compare", top, "c" + strconv.Itoa(n-2) + ".qcow2"},
		{"convert", "-O", "qcow2", top, "out.qcow2"},
		{"measure", "-O", "qcow2", top},
	} {
		r := mustRun(t, dir, args...)
		t.Logf("zqimg %s: peak RSS %d KiB", strings.Join(args, " "), r.rss>>10)
		checkRSS(t, r)
		if args[0] == "map" && !strings.Contains(r.stdout, "c0.qcow2") {
			t.Errorf("map does not reach the bottom of the chain:\n%s", r)
		}
	}
	mustRun(t, dir, "read", "-q", "-P", "0x5a", "out.qcow2", "1M", "64k")
}

// TestBeyondEOF: an L2 entry, an L1 entry or a refcount table entry
// naming host offset 1 TiB in a 400 KiB file. Commands that need the
// cluster refuse with a message naming the offset; nothing is written
// (the file keeps its size and bytes); memory stays small; check reports
// the entry.
func TestBeyondEOF(t *testing.T) {
	const far = 1 << 40
	farHex := fmt.Sprintf("0x%x", uint64(far))
	// base: a 64 MiB image with one data cluster at guest offset 0.
	base := func(t *testing.T, dir string) *image {
		mustRun(t, dir, "create", "-q", "-f", "qcow2", "a.qcow2", "64M")
		mustRun(t, dir, "write", "-q", "-P", "0x11", "a.qcow2", "0", "64k")
		return load(t, filepath.Join(dir, "a.qcow2"))
	}
	// withSnapshot: base with snapshot s1 taken (the active tables are
	// then copies, the data cluster shared).
	withSnapshot := func(t *testing.T, dir string) *image {
		base(t, dir)
		mustRun(t, dir, "snapshot", "-c", "s1", "a.qcow2")
		return load(t, filepath.Join(dir, "a.qcow2"))
	}
	type cmd struct {
		args []string
		ok   bool // the command does not need the bad entry: it works
	}
	refuse := func(args ...string) cmd { return cmd{args: args} }
	works := func(args ...string) cmd { return cmd{args: args, ok: true} }
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
		cmds  []cmd
	}{
		{"L2 entry, in place", func(t *testing.T, dir string) {
			m := base(t, dir)
			m.put64(m.l2Entry0(), far|1<<63)
		}, []cmd{
			refuse("snapshot", "-c", "s2", "a.qcow2"),
			refuse("write", "-q", "-P", "1", "a.qcow2", "512", "512"),
			refuse("write", "-q", "-P", "1", "a.qcow2", "0", "64k"),
			refuse("write", "-q", "-z", "a.qcow2", "0", "64k"),
			refuse("discard", "-q", "a.qcow2", "0", "64k"),
			refuse("read", "-q", "a.qcow2", "0", "512"),
			refuse("convert", "-O", "qcow2", "a.qcow2", "out.qcow2"),
		}},
		{"L2 entry, copy on write", func(t *testing.T, dir string) {
			m := base(t, dir)
			m.put64(m.l2Entry0(), far) // no OFLAG_COPIED: a write copies
		}, []cmd{
			refuse("write", "-q", "-P", "1", "a.qcow2", "512", "512"),
			refuse("snapshot", "-c", "s2", "a.qcow2"),
			refuse("convert", "-O", "raw", "a.qcow2", "out.raw"),
		}},
		{"L2 entry, snapshot apply", func(t *testing.T, dir string) {
			m := withSnapshot(t, dir)
			m.put64(m.l2Entry0(), far|1<<63)
		}, []cmd{
			refuse("snapshot", "-a", "s1", "a.qcow2"),
			refuse("snapshot", "-d", "s1", "a.qcow2"),
			refuse("snapshot", "-c", "s2", "a.qcow2"),
		}},
		{"L1 entry", func(t *testing.T, dir string) {
			m := base(t, dir)
			m.put64(m.l1Entry(0), far|1<<63)
		}, []cmd{
			refuse("snapshot", "-c", "s2", "a.qcow2"),
			refuse("write", "-q", "-P", "1", "a.qcow2", "512", "512"),
			refuse("read", "-q", "a.qcow2", "0", "512"),
			refuse("convert", "-O", "qcow2", "a.qcow2", "out.qcow2"),
		}},
		{"refcount table entry", func(t *testing.T, dir string) {
			m := base(t, dir)
			m.put64(m.u64(48), far)
		}, []cmd{
			refuse("snapshot", "-c", "s2", "a.qcow2"),
			refuse("write", "-q", "-P", "1", "a.qcow2", "512", "512"),
			// Reading needs no refcounts.
			works("read", "-q", "-P", "0x11", "a.qcow2", "0", "64k"),
			works("convert", "-O", "qcow2", "a.qcow2", "out.qcow2"),
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			path := filepath.Join(dir, "a.qcow2")
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tc.cmds {
				r := run(t, dir, c.args...)
				t.Logf("zqimg %s: exit %d, peak RSS %d KiB", strings.Join(c.args, " "), r.code, r.rss>>10)
				checkRSS(t, r)
				switch {
				case c.ok && r.code != 0:
					t.Errorf("command failed:\n%s", r)
				case !c.ok && r.code == 0:
					t.Errorf("command succeeded on an entry beyond the end of the file:\n%s", r)
				case !c.ok && !strings.Contains(r.stderr, farHex):
					t.Errorf("message does not name offset %s:\n%s", farHex, r)
				case r.code > 2 || strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "internal"):
					t.Errorf("not a clean refusal:\n%s", r)
				}
				got, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("zqimg %s changed the image (%d bytes, was %d)", strings.Join(c.args, " "), len(got), len(want))
				}
			}
			r := run(t, dir, "check", "a.qcow2")
			checkRSS(t, r)
			if r.code != 2 || !strings.Contains(r.stdout+r.stderr, "ERROR") {
				t.Errorf("check does not report the corruption (exit 2):\n%s", r)
			}
		})
	}
}

// TestHostileChainCaches: 41 chained images whose L1 tables each name 600
// distinct (sparse, all-zero) L2 tables: map reads every table of every
// layer. Each layer's L2 cache filling its own 32 MiB would cost 1.3 GiB;
// backing images get a halving share, so the whole chain stays small.
func TestHostileChainCaches(t *testing.T) {
	const n, tables = 41, 600
	dir := t.TempDir()
	for i := range n {
		name := "c" + strconv.Itoa(i) + ".qcow2"
		mustRun(t, dir, "create", "-q", "-f", "qcow2", name, "1T")
		path := filepath.Join(dir, name)
		if i > 0 {
			setBacking(t, path, "c"+strconv.Itoa(i-1)+".qcow2")
		}
		m := load(t, path)
		l1 := m.u64(40)
		for j := uint64(0); j < tables; j++ {
			binary.BigEndian.PutUint64(m.b[l1+8*j:], 64<<20+j<<16)
		}
		if err := os.WriteFile(path, m.b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, 64<<20+tables<<16); err != nil {
			t.Fatal(err)
		}
	}
	r := mustRun(t, dir, "map", "c"+strconv.Itoa(n-1)+".qcow2")
	t.Logf("zqimg map: peak RSS %d KiB", r.rss>>10)
	checkRSS(t, r)
}
