package interop

// Shared helpers of the map, compare, convert and measure interop tests.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// needQemu fails the test when qemu-img or qemu-io is missing: these
// tests compare zqimg's output with theirs and must never pass without
// them.
func needQemu(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required to compare zqimg with it: %v", tool, err)
		}
	}
}

// plainImage describes a plain image built for the tests: created by
// qemu-img, then changed by qemu-io (whole clusters only, so that qemu
// leaves no holes in its file: a file with holes makes qemu-img guess
// "metadata preallocation" and report file-system holes as zeroes) and by
// zqimg io (unaligned writes, which zqimg stores as whole clusters).
type plainImage struct {
	name    string
	fmt     string // "qcow2" (default) or "raw"
	opts    string // qemu-img create -o
	size    string
	qemu    []string // qemu-io -c commands
	zqimg   []string // zqimg io -c commands
	backing *plainImage
	// compressed: the image holds compressed clusters (qemu-img map's
	// human output then stops with an error).
	compressed bool
}

// plainImages is the corpus of plain images: cluster sizes from 512 bytes
// to 2 MiB, version 2, extended L2, zlib and zstd compressed clusters,
// zero clusters, discards, a size that is not a multiple of the cluster
// size, a backing chain and raw files with holes.
func plainImages() []plainImage {
	base := &plainImage{name: "base", opts: "cluster_size=64k", size: "8M",
		qemu: []string{"write -P 0x11 0 256k", "write -P 0x12 1M 64k", "write -P 0x13 6M 128k"}}
	return []plainImage{
		{name: "c64k", opts: "cluster_size=64k", size: "16M",
			qemu:  []string{"write -P 1 0 128k", "write -z 1M 64k", "write -P 3 4M 256k", "discard 4M 64k", "write -P 4 8M 64k", "write -z -u 8M 64k"},
			zqimg: []string{"write -P 5 5243880 3000", "write -P 6 12587008 70000", "write -z 12591104 4096"}},
		{name: "compressed-zlib", opts: "cluster_size=64k", size: "4M", compressed: true,
			qemu: []string{"write -P 1 0 64k", "write -c -P 2 1M 128k", "write -P 3 2M 64k", "write -c -P 4 3M 64k"}},
		{name: "compressed-zstd", opts: "cluster_size=4k,compression_type=zstd", size: "2M", compressed: true,
			qemu: []string{"write -c -P 7 0 16k", "write -P 8 64k 8k", "write -c -P 9 1M 4k"}},
		{name: "c512", opts: "cluster_size=512", size: "300k",
			qemu:  []string{"write -P 1 0 4k", "write -z 8k 1k", "write -P 2 100k 512"},
			zqimg: []string{"write -P 3 50000 3333", "discard 150k 10k", "write -P 4 299k 1k"}},
		{name: "c2M-unaligned-size", opts: "cluster_size=2M", size: "5243392",
			qemu:  []string{"write -P 1 0 2M", "write -P 2 4M 1049088"},
			zqimg: []string{"write -P 3 2097229 4000"}},
		{name: "extl2", opts: "cluster_size=64k,extended_l2=on", size: "4M",
			qemu: []string{"write -P 1 0 4k", "write -z 64k 4k", "write -P 2 128k 64k", "write -z 128k 2k",
				"write -P 3 256k 64k", "write -z 256k 64k", "write -P 4 1M 6k", "write -c -P 5 2M 64k"},
			compressed: true},
		{name: "v2", opts: "compat=0.10,cluster_size=4k", size: "1M",
			qemu:  []string{"write -P 1 0 8k", "write -z 64k 8k", "write -P 2 512k 4k"},
			zqimg: []string{"write -P 3 100000 5000"}},
		{name: "backing", opts: "cluster_size=64k", size: "12M", backing: base,
			qemu: []string{"write -P 0x21 64k 64k", "write -z 192k 64k", "write -P 0x22 6M 64k", "write -P 0x23 10M 64k"}},
		{name: "raw", fmt: "raw", size: "3M",
			qemu: []string{"write -P 1 0 64k", "write -P 2 1M 4k", "write -P 3 3141632 4k"}},
		{name: "empty", opts: "cluster_size=64k", size: "64M"},
		// Preallocated clusters lie in holes of the file: they read as
		// zeroes, which block status reports from the file (map "zero":
		// true, human map leaves them out).
		{name: "prealloc-metadata", opts: "cluster_size=64k,preallocation=metadata", size: "4M",
			qemu: []string{"write -P 1 1M 64k", "write -z 2M 64k", "discard 3M 64k", "write -P 2 3200k 4k"}},
		{name: "prealloc-falloc-extl2", opts: "cluster_size=64k,extended_l2=on,preallocation=falloc", size: "2M",
			qemu: []string{"write -P 1 0 4k", "write -P 2 1M 64k"}},
	}
}

// build makes the image in dir and returns its path.
func (p plainImage) build(t testing.TB, dir string) string {
	t.Helper()
	format := p.fmt
	if format == "" {
		format = "qcow2"
	}
	path := filepath.Join(dir, p.name+"."+format)
	args := []string{"create", "-q", "-f", format}
	if p.opts != "" {
		args = append(args, "-o", p.opts)
	}
	if p.backing != nil {
		b := p.backing.build(t, dir)
		args = append(args, "-b", filepath.Base(b), "-F", "qcow2")
	}
	args = append(args, path, p.size)
	if r := runQemu(t, dir, "qemu-img", args...); r.code != 0 {
		t.Fatalf("creating %s:\n%s", p.name, r)
	}
	if len(p.qemu) > 0 {
		args := []string{"-f", format}
		for _, c := range p.qemu {
			args = append(args, "-c", c)
		}
		if r := runQemu(t, dir, "qemu-io", append(args, path)...); r.code != 0 || strings.Contains(r.stdout, "failed") {
			t.Fatalf("qemu-io on %s:\n%s", p.name, r)
		}
	}
	if len(p.zqimg) > 0 {
		var args []string
		for _, c := range p.zqimg {
			args = append(args, "-c", c)
		}
		if r := zq(t, dir, append(append([]string{"io"}, args...), path)...); r.code != 0 {
			t.Fatalf("zqimg io on %s:\n%s", p.name, r)
		}
	}
	return path
}

// normalizeProg replaces the program name in messages.
func normalizeProg(s string) string {
	return strings.NewReplacer("qemu-img: ", "PROG: ", "zqimg: ", "PROG: ").Replace(s)
}

// sameRun asserts that qemu-img and zqimg, run with the same arguments in
// dir, print the same (program names aside) and exit alike.
func sameRun(t *testing.T, dir string, args ...string) (q, z result) {
	t.Helper()
	q = runQemu(t, dir, "qemu-img", args...)
	z = zq(t, dir, args...)
	if q.code != z.code || q.stdout != z.stdout || normalizeProg(q.stderr) != normalizeProg(z.stderr) {
		t.Errorf("qemu-img and zqimg differ:\n%s\n%s", q, z)
	}
	return q, z
}

func removeAll(t testing.TB, paths ...string) {
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
}
