package interop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCreatePreallocationMatchesQemu: zqimg create -o preallocation=MODE
// lays the image out exactly as stock qemu-img does (compared as
// TestCreateMatchesQemu compares: length, fixed header, every byte after
// the header cluster), for metadata, falloc and full, partly covered last
// clusters, refcount tables that grow while the data is mapped, version
// 2, extended L2 entries and narrow refcounts.
func TestCreatePreallocationMatchesQemu(t *testing.T) {
	requireQemu(t)
	refFeatures := referenceFeatureTable(t)
	var cases []createCase
	for _, mode := range []string{"metadata", "falloc", "full"} {
		for _, c := range []createCase{
			{opts: "cluster_size=64k", size: "64M"},
			{opts: "cluster_size=64k", size: "1536"},
			{opts: "cluster_size=64k", size: "100k"},
			{opts: "cluster_size=512", size: "2000k"},
			{opts: "cluster_size=1k,refcount_bits=1", size: "64512K"},
			{opts: "cluster_size=4k,compat=0.10", size: "30M"},
			{opts: "cluster_size=32k,extended_l2=on", size: "20M"},
			{opts: "cluster_size=2M", size: "100M"},
		} {
			c.opts += ",preallocation=" + mode
			cases = append(cases, c)
		}
	}
	// iotest 115's case: the refcount table grows many times over
	// (64-bit refcounts, 512-byte clusters); iotest 079's large clusters
	// (smaller sizes: the files are compared in memory).
	cases = append(cases,
		createCase{opts: "refcount_bits=64,cluster_size=512,preallocation=metadata", size: "256M", grows: true},
		createCase{opts: "cluster_size=2M,preallocation=metadata", size: "300M"},
		createCase{opts: "cluster_size=16k,preallocation=metadata", size: "300M"})
	for _, c := range cases {
		t.Run(c.name(), func(t *testing.T) {
			qdir, zdir := t.TempDir(), t.TempDir()
			qr := run(t, qdir, "qemu-img", "create", "-f", "qcow2", "-o", c.opts, "img.qcow2", c.size)
			zr := zq(t, zdir, "create", "-f", "qcow2", "-o", c.opts, "img.qcow2", c.size)
			if qr.code != 0 || zr.code != 0 {
				t.Fatalf("create failed:\n%s\n%s", qr, zr)
			}
			if qr.stdout != zr.stdout {
				t.Errorf("zqimg create prints\n%q\nqemu-img prints\n%q", zr.stdout, qr.stdout)
			}
			qpath, zpath := filepath.Join(qdir, "img.qcow2"), filepath.Join(zdir, "img.qcow2")
			compareCreated(t, qpath, zpath, refFeatures)
			qemuCheckClean(t, zpath)
			if n := readHeader(t, qpath).rtClusters; c.grows && n < 2 {
				t.Errorf("test premise: qemu-img's refcount table has %d cluster(s); this case should make it grow", n)
			}
			// falloc and full reserve the data: the file uses about as
			// much space as qemu-img's (metadata: as little).
			if zu, qu := diskUsage(t, zpath), diskUsage(t, qpath); zu < qu/2 || zu > qu*2+1<<20 {
				t.Errorf("disk usage: zqimg %d bytes, qemu-img %d", zu, qu)
			}
		})
	}
}

// TestResizePreallocationMatchesQemu: zqimg resize --preallocation=MODE
// gives the bytes stock qemu-img resize gives, on images qemu-img made
// (empty, with data, preallocated), growing within the L2 table, into a
// new one and with a larger L1 table (iotest 125's cases); and qemu-img's
// refusals with their words.
func TestResizePreallocationMatchesQemu(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	for _, c := range []struct {
		create, size, grow string
		io                 string // a qemu-io command run before the resize
	}{
		{"cluster_size=512", "2000k", "+16k", ""},
		{"cluster_size=512", "2000k", "+48k", ""},
		{"cluster_size=512", "2000k", "+80k", ""}, // the L1 table grows
		{"cluster_size=64k", "2000k", "+80k", ""},
		{"cluster_size=64k", "31k", "96k", "write -P 3 0 31k"},
		{"cluster_size=4k", "1M", "3M", "write -P 4 100k 900k"},
		{"cluster_size=512,preallocation=metadata", "2000k", "+80k", "write -P 7 1000k 500k"},
		{"cluster_size=512,preallocation=falloc", "2000k", "+80k", ""},
		{"cluster_size=64k,compat=0.10", "10M", "+30M", ""},
	} {
		for _, mode := range []string{"off", "metadata", "falloc", "full"} {
			name := strings.NewReplacer(",", "-", "=", "").Replace(c.create) + "-" + c.size + c.grow + "-" + mode
			q, z := filepath.Join(dir, name+".q.qcow2"), filepath.Join(dir, name+".z.qcow2")
			mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", c.create, q, c.size)
			if c.io != "" {
				runQemuIO(t, q, []string{c.io})
			}
			if err := os.WriteFile(z, readFile(t, q), 0o644); err != nil {
				t.Fatal(err)
			}
			qr := runQemu(t, dir, "qemu-img", "resize", "--preallocation="+mode, q, c.grow)
			zr := zq(t, dir, "resize", "--preallocation="+mode, z, c.grow)
			if qr.code != zr.code || qr.stdout != zr.stdout || qr.stderr != asQemu(zr.stderr) {
				t.Errorf("%s:\n%s\n%s", name, zr, qr)
				continue
			}
			if d := firstDiff(readFile(t, z), readFile(t, q)); d != "" {
				t.Errorf("%s: zqimg's image differs from qemu-img's: %s", name, d)
			}
			qemuCheckClean(t, z)
		}
	}
	img := filepath.Join(dir, "r.qcow2")
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
	for _, args := range [][]string{
		{"--preallocation=fast", img, "2M"},
		{"--preallocation=full", img, "1M"},
		{"--preallocation=metadata", "--shrink", img, "512k"},
	} {
		qr := runQemu(t, dir, "qemu-img", append([]string{"resize"}, args...)...)
		zr := zq(t, dir, append([]string{"resize"}, args...)...)
		if qr.code != zr.code || qr.stdout != zr.stdout || qr.stderr != asQemu(zr.stderr) {
			t.Errorf("resize %v:\n%s\n%s", args, zr, qr)
		}
	}
}

// TestResizePreallocationBacking: iotest 125's last part. Growing an
// overlay of a longer backing file with preallocation keeps the backing
// data below the old size, reads zeroes above it, and makes a file of
// seven clusters, as qemu-img.
func TestResizePreallocationBacking(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "raw", base, "128k")
	runQemuIO(t, base, []string{"write -P 1 0 128k"}, "-f", "raw")
	for _, orig := range []string{"31k", "33k"} {
		for _, mode := range []string{"metadata", "falloc", "full"} {
			img := filepath.Join(dir, orig+mode+".qcow2")
			mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, "-o", "cluster_size=64k", img, orig)
			zr := zq(t, dir, "resize", "-f", "qcow2", "--preallocation="+mode, img, "96k")
			if zr.code != 0 {
				t.Fatalf("%s", zr)
			}
			for _, c := range []string{"read -q -P 1 0 " + orig, "read -q -P 0 " + orig + " 63k"} {
				if r := runQemu(t, dir, "qemu-io", "-c", c, img); r.code != 0 || r.stdout != "" {
					t.Errorf("%s %s: %s", orig, mode, r)
				}
			}
			if n := fileSize(t, img); n != 7*65536 {
				t.Errorf("%s %s: file of %d bytes, want 7 clusters", orig, mode, n)
			}
			qemuCheckClean(t, img)
		}
	}
}

// diskUsage returns the bytes the file system allocated for path.
func diskUsage(t *testing.T, path string) int64 {
	t.Helper()
	return blocks(t, path) * 512
}

// TestCreateRawMatchesQemu: zqimg create -f raw prints what qemu-img
// prints, refuses what it refuses, and makes a file of the same length
// (zeroes), reserved as qemu-img's is (falloc, full) or not (off).
func TestCreateRawMatchesQemu(t *testing.T) {
	requireQemu(t)
	for _, c := range []struct{ opts, size string }{
		{"", "1000"},
		{"preallocation=off", "1M"},
		{"preallocation=falloc", "3M"},
		{"preallocation=full,extent_size_hint=0", "2M"},
		{"preallocation=metadata", "1M"},
		{"preallocation=1234", "1M"},
		{"cluster_size=4k", "1M"},
		{"size=5k", ""},
	} {
		qdir, zdir := t.TempDir(), t.TempDir()
		args := []string{"create", "-f", "raw"}
		if c.opts != "" {
			args = append(args, "-o", c.opts)
		}
		args = append(args, "r.raw")
		if c.size != "" {
			args = append(args, c.size)
		}
		qr := run(t, qdir, "qemu-img", args...)
		zr := zq(t, zdir, args...)
		if qr.code != zr.code || qr.stdout != zr.stdout || qr.stderr != asQemu(zr.stderr) {
			t.Errorf("%v:\n%s\n%s", args, zr, qr)
			continue
		}
		if qr.code != 0 {
			continue
		}
		q, z := filepath.Join(qdir, "r.raw"), filepath.Join(zdir, "r.raw")
		if fileSize(t, q) != fileSize(t, z) {
			t.Errorf("%v: file of %d bytes, qemu-img's %d", args, fileSize(t, z), fileSize(t, q))
		}
		if zu, qu := diskUsage(t, z), diskUsage(t, q); (qu > fileSize(t, q)/2) != (zu > fileSize(t, z)/2) {
			t.Errorf("%v: %d bytes allocated, qemu-img's %d", args, zu, qu)
		}
		if d := firstDiff(readFile(t, z), readFile(t, q)); d != "" {
			t.Errorf("%v: %s", args, d)
		}
	}
}
