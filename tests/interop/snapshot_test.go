package interop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// zqCheckClean asserts that zqimg check finds img clean.
func zqCheckClean(t testing.TB, img string) {
	t.Helper()
	if r := zq(t, "", "check", img); r.code != 0 {
		t.Errorf("zqimg check does not find %s clean:\n%s", filepath.Base(img), r)
	}
}

// mustZq runs zqimg and fails the test unless it succeeds.
func mustZq(t testing.TB, dir string, args ...string) result {
	t.Helper()
	r := zq(t, dir, args...)
	if r.code != 0 {
		t.Fatalf("zqimg failed:\n%s", r)
	}
	return r
}

// asQemu renames zqimg's messages as qemu-img's.
func asQemu(s string) string { return strings.ReplaceAll(s, "zqimg:", "qemu-img:") }

// firstLine returns the first line of s.
func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

var (
	diskSizeRE   = regexp.MustCompile(`(?m)^disk size: .*$`)
	actualSizeRE = regexp.MustCompile(`("actual-size": )[0-9]+`)
)

// normInfo replaces the disk usage, which depends on the file system.
func normInfo(s string) string {
	return actualSizeRE.ReplaceAllString(diskSizeRE.ReplaceAllString(s, "disk size: X"), "${1}0")
}

// TestSnapshotInterop: snapshots made by zqimg are listed, applied and
// deleted by qemu-img and the other way round, on several image kinds;
// both list them identically, qemu-img check finds the image clean after
// every zqimg command, and applied snapshots read back byte for byte (with
// the size they were taken at).
func TestSnapshotInterop(t *testing.T) {
	requireQemu(t)
	kinds := []struct{ name, opts, size string }{
		{"default", "cluster_size=64k", "32M"},
		{"c4k-rc8", "cluster_size=4k,refcount_bits=8", "8M"},
		{"v2", "compat=0.10,cluster_size=16k", "8M"},
		{"extl2", "extended_l2=on,cluster_size=32k", "8M"},
	}
	for ki, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "s.qcow2")
			mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", k.opts, img, k.size)
			q := func(cmds ...string) { runQemuIO(t, img, cmds) }
			q("write -P 0x11 0 1M", "write -P 0x12 3M 100k", "write -z 5M 64k")
			data1 := zqRead(t, img)
			mustZq(t, dir, "snapshot", "-c", "zq-one", img)
			qemuCheckClean(t, img)
			q("write -P 0x21 512k 1M", "discard 3M 64k")
			data2 := qemuToRaw(t, img)
			mustRun(t, dir, "qemu-img", "snapshot", "-c", "qemu-two", img)
			zqCheckClean(t, img)
			q("write -P 0x31 0 2M")
			if k.name != "v2" {
				// A snapshot remembers its size: resize, then apply.
				mustRun(t, dir, "qemu-img", "resize", img, "+1M")
			}
			zl, ql := zq(t, dir, "snapshot", "-l", img), runQemu(t, dir, "qemu-img", "snapshot", "-l", img)
			if zl.code != 0 || zl.stdout != ql.stdout {
				t.Fatalf("snapshot -l differs:\n%s\n%s", zl, ql)
			}
			if !strings.Contains(zl.stdout, "zq-one") || !strings.Contains(zl.stdout, "qemu-two") {
				t.Fatalf("snapshot list lacks a snapshot:\n%s", zl)
			}
			// info (human and JSON) agree too, snapshot list included.
			zi, qi := zq(t, dir, "info", img), runQemu(t, dir, "qemu-img", "info", img)
			if normInfo(zi.stdout) != normInfo(qi.stdout) {
				t.Errorf("info differs:\n%s\n%s", zi, qi)
			}
			zj, qj := zq(t, dir, "info", "--output=json", img), runQemu(t, dir, "qemu-img", "info", "--output=json", img)
			var a, b any
			if json.Unmarshal([]byte(normInfo(zj.stdout)), &a) != nil || json.Unmarshal([]byte(normInfo(qj.stdout)), &b) != nil || fmt.Sprint(a) != fmt.Sprint(b) {
				t.Errorf("info --output=json differs:\n%s\n%s", zj, qj)
			}
			// zqimg applies qemu-img's snapshot, qemu-img zqimg's, by name or ID.
			mustZq(t, dir, "snapshot", "-a", "qemu-two", img)
			qemuCheckClean(t, img)
			if got := qemuToRaw(t, img); !bytes.Equal(got, data2) {
				t.Fatalf("after zqimg snapshot -a qemu-two, qemu-img reads: %s", firstDiff(got, data2))
			}
			mustRun(t, dir, "qemu-img", "snapshot", "-a", "1", img)
			if got := zqRead(t, img); !bytes.Equal(got, data1) {
				t.Fatalf("after qemu-img snapshot -a 1, zqimg reads: %s", firstDiff(got, data1))
			}
			zqCheckClean(t, img)
			// Writes after an apply go to copies; the snapshots stay.
			q(fmt.Sprintf("write -P 0x%02x 0 64k", 0x41+ki))
			mustZq(t, dir, "snapshot", "-a", "zq-one", img)
			if got := qemuToRaw(t, img); !bytes.Equal(got, data1) {
				t.Fatalf("second apply of zq-one: %s", firstDiff(got, data1))
			}
			// Each deletes the other's.
			mustZq(t, dir, "snapshot", "-d", "qemu-two", img)
			qemuCheckClean(t, img)
			mustRun(t, dir, "qemu-img", "snapshot", "-d", "zq-one", img)
			zqCheckClean(t, img)
			qemuCheckClean(t, img)
			if r := zq(t, dir, "snapshot", "-l", img); r.code != 0 || r.stdout != "" {
				t.Fatalf("list of no snapshots:\n%s", r)
			}
			if got := zqRead(t, img); !bytes.Equal(got, data1) {
				t.Fatalf("deleting the snapshots changed the disk: %s", firstDiff(got, data1))
			}
		})
	}
}

// TestSnapshotErrorsMatchQemu: refusals print qemu-img's messages and
// exit status.
func TestSnapshotErrorsMatchQemu(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "e.qcow2", "1M")
	mustRun(t, dir, "qemu-img", "snapshot", "-c", "s", "e.qcow2")
	for _, args := range [][]string{
		{"-a", "nope", "e.qcow2"},
		{"-d", "nope", "e.qcow2"},
		{"-d", "1", "e.qcow2"}, // delete looks names up, not IDs
		{"-l", "missing.qcow2"},
		{"-U", "-c", "x", "e.qcow2"},
		{"-l", "-c", "x", "e.qcow2"},
		{"e.qcow2"},
		{"-l", "-U", "e.qcow2"},
	} {
		z := zq(t, dir, append([]string{"snapshot"}, args...)...)
		q := runQemu(t, dir, "qemu-img", append([]string{"snapshot"}, args...)...)
		if z.code != q.code || z.stdout != q.stdout || firstLine(asQemu(z.stderr)) != firstLine(q.stderr) {
			t.Errorf("snapshot %v:\n%s\n%s", args, z, q)
		}
	}
}

// TestResizeInterop: zqimg resize gives qemu-img's output and exit status
// and an image qemu-img reads with the new size, the data kept (or cut),
// the new space reading as zeroes; qemu-img check is clean after each.
func TestResizeInterop(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	cases := []struct {
		opts string
		args []string // after the file name: the size, and flags
	}{
		{"cluster_size=64k", []string{"+64M"}},
		{"cluster_size=512", []string{"+300M"}}, // the L1 table moves
		{"cluster_size=4k", []string{"--shrink", "5M"}},
		{"cluster_size=64k", []string{"--shrink", "-3M"}},
		{"cluster_size=64k", []string{"3M"}},
		{"cluster_size=64k", []string{"+1000"}},
		{"cluster_size=64k", []string{"+0"}},
		{"compat=0.10", []string{"+1G"}},
		{"cluster_size=64k", []string{"--shrink", "0"}},
		{"cluster_size=64k", []string{"-20M"}},
		{"cluster_size=64k", []string{"-q", "+1M"}},
		{"extended_l2=on", []string{"--shrink", "5000k"}},
	}
	for i, c := range cases {
		zimg, qimg := filepath.Join(dir, fmt.Sprintf("z%d.qcow2", i)), filepath.Join(dir, fmt.Sprintf("q%d.qcow2", i))
		for _, p := range []string{zimg, qimg} {
			mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", c.opts, p, "10M")
			runQemuIO(t, p, []string{"write -P 0x5a 1M 8M", "write -P 0x5b 9M 512k"})
		}
		before := qemuToRaw(t, zimg)
		z := zq(t, dir, append([]string{"resize", zimg}, c.args...)...)
		q := runQemu(t, dir, "qemu-img", append([]string{"resize", qimg}, c.args...)...)
		if z.code != q.code || z.stdout != q.stdout || asQemu(z.stderr) != q.stderr {
			t.Errorf("resize %v:\n%s\n%s", c.args, z, q)
			continue
		}
		qemuCheckClean(t, zimg)
		// A shrink gives the file's tail back, as qemu-img's does: the
		// file ends where qemu-img's does, or at most two clusters later
		// (the refcount structure, which zqimg rewrites in one
		// contiguous run, may find no hole of that size below the data).
		if zs, qs := fileSize(t, zimg), fileSize(t, qimg); slices.Contains(c.args, "--shrink") && z.code == 0 && (zs < qs || zs > qs+2*clusterSize(c.opts)) {
			t.Errorf("resize %v: file of %d bytes, qemu-img's %d", c.args, zs, qs)
		}
		zd, qd := qemuToRaw(t, zimg), qemuToRaw(t, qimg)
		if !bytes.Equal(zd, qd) {
			t.Errorf("resize %v: qemu-img reads the two images differently: %s", c.args, firstDiff(zd, qd))
		}
		if z.code == 0 {
			n := min(len(zd), len(before))
			if !bytes.Equal(zd[:n], before[:n]) || bytes.IndexFunc(zd[n:], func(r rune) bool { return r != 0 }) >= 0 {
				t.Errorf("resize %v: data not kept or new space not zero", c.args)
			}
		}
	}
}

// clusterSize returns the cluster size an -o option string asks for.
func clusterSize(opts string) int64 {
	for _, o := range strings.Split(opts, ",") {
		switch o {
		case "cluster_size=512":
			return 512
		case "cluster_size=4k":
			return 4 << 10
		}
	}
	return 64 << 10
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestResizeWithSnapshotsInterop: a resized image with internal snapshots
// is applied back to its old size by qemu-img, and the other way round.
func TestResizeWithSnapshotsInterop(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "r.qcow2")
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", img, "20M")
	runQemuIO(t, img, []string{"write -P 0x61 0 20M"})
	mustRun(t, dir, "qemu-img", "snapshot", "-c", "full", img)
	data := qemuToRaw(t, img)
	mustZq(t, dir, "resize", "--shrink", img, "6M")
	qemuCheckClean(t, img)
	mustZq(t, dir, "resize", img, "+100M")
	qemuCheckClean(t, img)
	if got := qemuToRaw(t, img); len(got) != 106<<20 || !bytes.Equal(got[:6<<20], data[:6<<20]) || bytes.IndexFunc(got[6<<20:], func(r rune) bool { return r != 0 }) >= 0 {
		t.Fatalf("after shrink and grow: %d bytes", len(got))
	}
	mustRun(t, dir, "qemu-img", "snapshot", "-a", "full", img)
	if got := zqRead(t, img); !bytes.Equal(got, data) {
		t.Fatalf("qemu-img apply after zqimg resizes: %s", firstDiff(got, data))
	}
	zqCheckClean(t, img)
}

// TestAmendInterop: lazy_refcounts amended by zqimg is what qemu-img
// reports, the image stays clean, and refusals match qemu-img's words.
func TestAmendInterop(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "a.qcow2")
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", img, "16M")
	runQemuIO(t, img, []string{"write -P 0x71 0 1M"})
	for _, on := range []string{"on", "off", "on"} {
		mustZq(t, dir, "amend", "-o", "lazy_refcounts="+on, img)
		qemuCheckClean(t, img)
		info := runQemu(t, dir, "qemu-img", "info", img).stdout
		want := map[string]string{"on": "true", "off": "false"}[on]
		if !strings.Contains(info, "lazy refcounts: "+want) {
			t.Fatalf("after amend lazy_refcounts=%s qemu-img info says:\n%s", on, info)
		}
	}
	mustZq(t, dir, "amend", "-o", "size=64M", img)
	qemuCheckClean(t, img)
	if got := qemuToRaw(t, img); len(got) != 64<<20 {
		t.Fatalf("amend size: %d bytes", len(got))
	}
	for _, args := range [][]string{
		{"-o", "foo=bar"},
		{"-o", "cluster_size=4k"},
		{"-o", "compression_type=zstd"},
		{"-o", "extended_l2=on"},
		{"-o", "lazy_refcounts=maybe"},
		{},
	} {
		a := append(append([]string{"amend"}, args...), "a.qcow2")
		z, q := zq(t, dir, a...), runQemu(t, dir, "qemu-img", a...)
		// qemu-img's "Try 'qemu-img --help'" line names the program.
		if z.code != q.code || z.stdout != q.stdout || firstLine(asQemu(z.stderr)) != firstLine(q.stderr) {
			t.Errorf("amend %v:\n%s\n%s", args, z, q)
		}
	}
	zqCheckClean(t, img)
}

var runCompleted = regexp.MustCompile(`^Run completed in [0-9]+\.[0-9]{3} seconds\.$`)

// TestBenchMatchesQemu: zqimg bench prints qemu-img bench's lines for the
// same options, writes the pattern where qemu-img bench would, and
// refuses bad options with qemu-img's messages.
func TestBenchMatchesQemu(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	for i, args := range [][]string{
		{"-c", "2000"},
		{"-c", "3000", "-d", "4", "-s", "8k", "-w", "--pattern=0x55"},
		{"-c", "500", "-w", "-S", "12k", "-o", "1M", "--pattern=0xa1", "-d", "1"},
		{"-c", "300", "-d", "2", "-w", "--flush-interval=100"},
		{"-c", "300", "-d", "2", "-w", "--flush-interval=100", "--no-drain", "-t", "unsafe"},
		{"-c", "40", "-s", "1M", "-o", "60M", "-w", "--pattern=7"}, // wraps at the end
		{"-c", "10", "-o", "100M"}, // beyond the end
		{"-c", "x"}, {"-d", "x"}, {"-s", "x"}, {"-S", "x"}, {"-o", "x"},
		{"-w", "--pattern=300"}, {"-w", "--flush-interval=x"},
		{"-c", "10", "-w", "--flush-interval=10"}, {"-c", "10", "--flush-interval=100", "-d", "1"},
		{"-t", "bogus"}, {"-c", "10", "-n"}, {"-s", "2G"},
	} {
		zimg, qimg := filepath.Join(dir, fmt.Sprintf("z%d.qcow2", i)), filepath.Join(dir, fmt.Sprintf("q%d.qcow2", i))
		for _, p := range []string{zimg, qimg} {
			mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", p, "64M")
		}
		z := zq(t, dir, append(append([]string{"bench"}, args...), zimg)...)
		q := runQemu(t, dir, "qemu-img", append(append([]string{"bench"}, args...), qimg)...)
		zl, ql := strings.Split(z.stdout, "\n"), strings.Split(strings.ReplaceAll(q.stdout, qimg, zimg), "\n")
		same := z.code == q.code && len(zl) == len(ql) && asQemu(strings.ReplaceAll(z.stderr, zimg, qimg)) == q.stderr
		for j := range zl {
			if same && zl[j] != ql[j] && !(runCompleted.MatchString(zl[j]) && runCompleted.MatchString(ql[j])) {
				same = false
			}
		}
		if !same {
			t.Errorf("bench %v:\n%s\n%s", args, z, q)
			continue
		}
		if z.code == 0 && strings.Contains(strings.Join(args, " "), "-w") {
			zd, qd := qemuToRaw(t, zimg), qemuToRaw(t, qimg)
			if !bytes.Equal(zd, qd) {
				t.Errorf("bench %v: the written data differs: %s", args, firstDiff(zd, qd))
			}
			qemuCheckClean(t, zimg)
		}
	}
}

// TestInfoBackingChainMatchesQemu: info --backing-chain prints what
// qemu-img prints (disk sizes aside) for a chain of qcow2 images with a
// snapshot and a raw base, named relatively from another directory, in
// human and JSON output; a loop is refused with qemu-img's message.
func TestInfoBackingChainMatchesQemu(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	mustRun(t, dir, "mkdir", sub)
	q := func(args ...string) { mustRun(t, sub, "qemu-img", args...) }
	q("create", "-q", "-f", "raw", "base.raw", "8M")
	q("create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "mid.qcow2")
	q("snapshot", "-c", "snap", "mid.qcow2")
	q("create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "-o", "cluster_size=4k", "top.qcow2")
	for _, out := range []string{"human", "json"} {
		z := zq(t, dir, "info", "--backing-chain", "--output="+out, "sub/top.qcow2")
		r := runQemu(t, dir, "qemu-img", "info", "--backing-chain", "--output="+out, "sub/top.qcow2")
		if z.code != 0 || normInfo(z.stdout) != normInfo(r.stdout) {
			t.Errorf("info --backing-chain --output=%s differs:\n%s\n%s", out, z, r)
		}
	}
	q("create", "-q", "-f", "qcow2", "l1.qcow2", "1M")
	q("create", "-q", "-f", "qcow2", "-b", "l1.qcow2", "-F", "qcow2", "l2.qcow2")
	q("rebase", "-u", "-b", "l2.qcow2", "-F", "qcow2", "l1.qcow2")
	z := zq(t, sub, "info", "--backing-chain", "l2.qcow2")
	r := runQemu(t, sub, "qemu-img", "info", "--backing-chain", "l2.qcow2")
	if z.code != r.code || z.stdout != r.stdout || asQemu(z.stderr) != r.stderr {
		t.Errorf("backing chain loop:\n%s\n%s", z, r)
	}
}
