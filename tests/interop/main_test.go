// Package interop holds interoperability tests between zqimg and stock
// qemu-img/qemu-io: images written by one must be read and checked clean by
// the other, byte for byte.
//
// Tests that need qemu-img or qemu-io skip when they are missing, unless
// ZQIMG_REQUIRE_QEMU=1 is set (as CI does): then they fail.
package interop

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zqimg/zqimg/internal/testbin"
	"github.com/zqimg/zqimg/pkg/image"
)

// zqimgBin is the zqimg binary built once by TestMain.
var zqimgBin string

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, &zqimgBin)) }

// requireQemu skips the test when qemu-img or qemu-io is missing, or fails
// it when ZQIMG_REQUIRE_QEMU=1.
func requireQemu(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testbin.Required() {
				t.Fatalf("%s not found (ZQIMG_REQUIRE_QEMU=1): %v", tool, err)
			}
			t.Skipf("%s not found: %v", tool, err)
		}
	}
}

// result is the outcome of one command.
type result struct {
	cmdline string
	stdout  string
	stderr  string
	code    int
}

func (r result) String() string {
	return fmt.Sprintf("$ %s\nexit=%d\n--- stdout\n%s--- stderr\n%s", r.cmdline, r.code, r.stdout, r.stderr)
}

// run runs a command in dir ("" for the current directory) with a
// timeout, and returns what it printed and its exit status. A command that
// cannot be started or times out fails the test.
func run(t testing.TB, dir, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{cmdline: name + " " + strings.Join(args, " "), stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%s: %v\n%s", r.cmdline, err, r)
	}
	return r
}

// runQemu runs qemu-img or qemu-io like run, retrying for a few seconds
// while it fails only because the image looks locked: a parallel test's
// child process may hold a just-closed image's locks for a moment (see
// retryLocked). Not for tests that expect lock conflicts.
func runQemu(t testing.TB, dir, name string, args ...string) result {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := run(t, dir, name, args...)
		if r.code == 0 || !strings.Contains(r.stderr, "Is another process using the image") || time.Now().After(deadline) {
			return r
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mustRun runs a command that must succeed.
func mustRun(t testing.TB, dir, name string, args ...string) result {
	t.Helper()
	r := run(t, dir, name, args...)
	if r.code != 0 {
		t.Fatalf("command failed:\n%s", r)
	}
	return r
}

func zq(t testing.TB, dir string, args ...string) result {
	t.Helper()
	return run(t, dir, zqimgBin, args...)
}

// qemuCheckClean asserts that `qemu-img check` finds img clean.
func qemuCheckClean(t testing.TB, img string) {
	t.Helper()
	r := runQemu(t, "", "qemu-img", "check", "-f", "qcow2", img)
	if r.code != 0 || !strings.Contains(r.stdout, "No errors were found on the image.") {
		t.Errorf("qemu-img check does not find %s clean:\n%s", filepath.Base(img), r)
	}
}

// qemuCompareRaw asserts that qemu-img reads img (qcow2, through its
// backing chain) exactly as the raw file raw.
func qemuCompareRaw(t testing.TB, img, raw string) {
	t.Helper()
	r := runQemu(t, "", "qemu-img", "compare", "-f", "qcow2", "-F", "raw", img, raw)
	if r.code != 0 || !strings.Contains(r.stdout, "Images are identical.") {
		t.Errorf("qemu-img compare: %s differs from the model:\n%s", filepath.Base(img), r)
	}
}

// qemuCompareModel asserts that qemu-img reads img (qcow2) exactly as
// model, the bytes the test expects (written to a raw file beside img).
func qemuCompareModel(t testing.TB, img string, model []byte) {
	t.Helper()
	raw := img + ".model.raw"
	writeFile(t, raw, model)
	qemuCompareRaw(t, img, raw)
	os.Remove(raw)
}

// qemuToRaw converts img (any format qemu-img detects) to a raw file and
// returns its content.
func qemuToRaw(t testing.TB, img string) []byte {
	t.Helper()
	out := img + ".qemu.raw"
	if r := runQemu(t, "", "qemu-img", "convert", "-O", "raw", img, out); r.code != 0 {
		t.Fatalf("command failed:\n%s", r)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(out)
	return b
}

// writeFile writes b to path.
func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameRefusal requires qemu-img's run q and zqimg's run z to both succeed,
// or both fail with the same messages (program names aside) and zqimg to
// leave nothing at out; it reports whether they failed.
func sameRefusal(t testing.TB, q, z result, out string) bool {
	t.Helper()
	if (q.code == 0) != (z.code == 0) {
		t.Fatalf("qemu-img and zqimg disagree:\n%s\n%s", q, z)
	}
	if q.code == 0 {
		return false
	}
	sameMessages(t, q, z)
	if _, err := os.Stat(out); err == nil {
		t.Errorf("zqimg refused but left %s", out)
	}
	return true
}

// sameMessages requires qemu-img's run q and zqimg's run z to print the
// same on standard error, program names aside.
func sameMessages(t testing.TB, q, z result) {
	t.Helper()
	if qe, ze := strings.ReplaceAll(q.stderr, "qemu-img: ", ""), strings.ReplaceAll(z.stderr, "zqimg: ", ""); qe != ze {
		t.Errorf("message: zqimg %q, qemu-img %q", ze, qe)
	}
}

// sameRefusalUnchanged requires q and z to exit alike and, when they
// fail, with the same messages, zqimg leaving the file at path as before;
// it reports whether they failed.
func sameRefusalUnchanged(t testing.TB, q, z result, path string, before []byte) bool {
	t.Helper()
	if q.code != z.code {
		t.Fatalf("exit status: qemu-img %d, zqimg %d\n%s\n%s", q.code, z.code, q, z)
	}
	if q.code == 0 {
		return false
	}
	sameMessages(t, q, z)
	if string(readFile(t, path)) != string(before) {
		t.Errorf("zqimg refused but changed %s", path)
	}
	return true
}

// sameMap requires qemu-img map --output=json to print the same for the
// images q and z of format fmt.
func sameMap(t testing.TB, fmt, q, z string) {
	t.Helper()
	qm := mustRun(t, "", "qemu-img", "map", "-f", fmt, "--output=json", q).stdout
	zm := mustRun(t, "", "qemu-img", "map", "-f", fmt, "--output=json", z).stdout
	if qm != zm {
		t.Errorf("map: zqimg\n%s\nqemu-img\n%s", zm, qm)
	}
}

// readFileIfAny returns the content of path, nil when it does not exist.
func readFileIfAny(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}

// firstDiff describes the first difference between two byte slices, or
// returns "" if they are equal.
func firstDiff(a, b []byte) string {
	if bytes.Equal(a, b) {
		return ""
	}
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			j := i
			for j < n && a[j] != b[j] {
				j++
			}
			return fmt.Sprintf("first difference at byte %d (0x%x): %#02x vs %#02x; differing run of %d bytes", i, i, a[i], b[i], j-i)
		}
	}
	return fmt.Sprintf("lengths differ: %d vs %d (equal up to %d)", len(a), len(b), n)
}

// qcow2 header access, parsed independently of pkg/image.

func be64(b []byte, off int) uint64 { return binary.BigEndian.Uint64(b[off:]) }
func be32(b []byte, off int) uint32 { return binary.BigEndian.Uint32(b[off:]) }

type hdrExt struct {
	magic uint32
	data  []byte
}

// qcowHeader is the part of a qcow2 header cluster the tests look at.
type qcowHeader struct {
	raw          []byte // the header cluster
	version      uint32
	clusterBits  uint32
	size         uint64
	l1Size       uint32
	l1Offset     uint64
	rtOffset     uint64
	rtClusters   uint32
	incompat     uint64
	headerLen    uint32
	backingOff   uint64
	backingSize  uint32
	exts         []hdrExt
	extAreaEnd   int // offset just past the end-of-extensions marker
	extAreaStart int
}

func parseQcowHeader(t testing.TB, b []byte) *qcowHeader {
	t.Helper()
	if len(b) < 72 || be32(b, 0) != 0x514649fb {
		t.Fatalf("not a qcow2 header")
	}
	h := &qcowHeader{
		version:     be32(b, 4),
		backingOff:  be64(b, 8),
		backingSize: be32(b, 16),
		clusterBits: be32(b, 20),
		size:        be64(b, 24),
		l1Size:      be32(b, 36),
		l1Offset:    be64(b, 40),
		rtOffset:    be64(b, 48),
		rtClusters:  be32(b, 56),
		headerLen:   72,
	}
	cs := 1 << h.clusterBits
	if len(b) > cs {
		b = b[:cs]
	}
	h.raw = b
	if h.version >= 3 {
		h.incompat = be64(b, 72)
		h.headerLen = be32(b, 100)
	}
	end := len(b)
	if h.backingOff != 0 && int(h.backingOff) < end {
		end = int(h.backingOff)
	}
	off := int(h.headerLen)
	h.extAreaStart = off
	for off+8 <= end {
		magic, n := be32(b, off), int(be32(b, off+4))
		if magic == 0 {
			h.extAreaEnd = off + 8
			return h
		}
		if off+8+n > end {
			t.Fatalf("header extension 0x%08x at %d overruns the header area", magic, off)
		}
		h.exts = append(h.exts, hdrExt{magic: magic, data: append([]byte(nil), b[off+8:off+8+n]...)})
		off += 8 + (n+7)/8*8
	}
	h.extAreaEnd = off
	return h
}

func (h *qcowHeader) ext(magic uint32) ([]byte, bool) {
	for _, e := range h.exts {
		if e.magic == magic {
			return e.data, true
		}
	}
	return nil, false
}

func readHeader(t testing.TB, path string) *qcowHeader {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 2<<20)
	n, _ := f.ReadAt(b, 0)
	return parseQcowHeader(t, b[:n])
}

const (
	extBackingFormat = 0xe2792aca
	extFeatureTable  = 0x6803f857
	extZoned         = 0x007a6264
)

// stripBackingFormat removes the backing format extension from a qcow2
// image, so that it names its backing file without a format (stock
// qemu-img 7.2 refuses to create such images; older ones made them).
func stripBackingFormat(t testing.TB, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := readHeader(t, path)
	if h.backingOff == 0 {
		t.Fatalf("%s has no backing file", path)
	}
	name := h.raw[h.backingOff : h.backingOff+uint64(h.backingSize)]
	var area []byte
	found := false
	for _, e := range h.exts {
		if e.magic == extBackingFormat {
			found = true
			continue
		}
		var eh [8]byte
		binary.BigEndian.PutUint32(eh[0:], e.magic)
		binary.BigEndian.PutUint32(eh[4:], uint32(len(e.data)))
		area = append(area, eh[:]...)
		area = append(area, e.data...)
		area = append(area, make([]byte, (len(e.data)+7)/8*8-len(e.data))...)
	}
	if !found {
		t.Fatalf("%s has no backing format extension", path)
	}
	area = append(area, make([]byte, 8)...) // end marker
	cl := make([]byte, len(h.raw))
	copy(cl, h.raw[:h.headerLen])
	copy(cl[h.headerLen:], area)
	boff := int(h.headerLen) + len(area)
	copy(cl[boff:], name)
	binary.BigEndian.PutUint64(cl[8:], uint64(boff))
	if _, err := f.WriteAt(cl, 0); err != nil {
		t.Fatal(err)
	}
}

var leakRE = regexp.MustCompile(`(?m)^Leaked cluster (\d+) refcount=(\d+) reference=(\d+)$`)

// retryLocked calls open until it does not fail with a lock conflict, for
// at most a few seconds. Parallel tests start processes: between fork and
// exec a child briefly shares the parent's open file descriptions, so a
// lock this process just released can look held for a moment.
func retryLocked(open func() error) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := open()
		var le *image.LockError
		if err == nil || !errors.As(err, &le) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
