package interop

import (
	"path/filepath"
	"testing"
)

// zqimg measure prints exactly what qemu-img measure prints for new
// images of many sizes and options, and for every image of the corpus
// (with and without persistent bitmaps, to qcow2 with several cluster
// sizes and to raw), in both output formats.
func TestMeasureMatchesQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	for _, size := range []string{"0", "1", "1000000", "1G", "100G", "3T", "256T"} {
		for _, o := range []string{"", "cluster_size=512", "cluster_size=4k,refcount_bits=64", "cluster_size=2M,refcount_bits=1",
			"extended_l2=on", "extended_l2=on,cluster_size=16k", "compat=0.10", "lazy_refcounts=on,compression_type=zstd",
			"preallocation=metadata", "preallocation=falloc,cluster_size=512", "preallocation=full,extended_l2=on"} {
			args := []string{"measure", "-O", "qcow2", "--size", size}
			if o != "" {
				args = append(args, "-o", o)
			}
			sameRun(t, dir, args...)
		}
		sameRun(t, dir, "measure", "--size", size)
		sameRun(t, dir, "measure", "--output=json", "-O", "qcow2", "--size", size)
	}
	bitmapped := plainImage{name: "bitmaps", opts: "cluster_size=64k", size: "100M",
		qemu: []string{"write -P 1 0 1M", "write -P 2 50M 64k"}}
	images := append(plainImages(), bitmapped)
	for _, p := range images {
		path := filepath.Base(p.build(t, dir))
		if p.name == "bitmaps" {
			mustRun(t, dir, "qemu-img", "bitmap", "--add", path, "b0")
			mustRun(t, dir, "qemu-img", "bitmap", "--add", "-g", "4k", path, "a-longer-bitmap-name")
			mustRun(t, dir, "qemu-img", "bitmap", "--add", "-g", "2M", "--disable", path, "b2")
		}
		for _, args := range [][]string{
			{"measure", path},
			{"measure", "-O", "qcow2", path},
			{"measure", "-O", "qcow2", "-f", formatOf(p), "--output=json", path},
			{"measure", "-O", "qcow2", "-o", "cluster_size=4k", path},
			{"measure", "-O", "qcow2", "-o", "cluster_size=2M,extended_l2=on", path},
			{"measure", "-O", "qcow2", "-o", "compat=0.10", path},
			{"measure", "-O", "qcow2", "-o", "preallocation=full", path},
			{"measure", "-O", "raw", "--output=json", path},
		} {
			sameRun(t, dir, args...)
		}
	}
}

// Bad invocations fail as qemu-img's do, with the same messages.
func TestMeasureErrorsMatchQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	path := filepath.Base(plainImages()[0].build(t, dir))
	for _, args := range [][]string{
		{"measure", "-O", "qcow2"},
		{"measure", "-O", "qcow2", "--size", "1G", path},
		{"measure", "-O", "qcow2", "--size", "1x"},
		{"measure", "-O", "qcow2", "--size", "100E"},
		{"measure", "-O", "qcow2", "--size", "1G", "-o", "foo=bar"},
		{"measure", "-O", "foo", "--size", "1G"},
		{"measure", "--output=xml", "--size", "1G"},
	} {
		sameRun(t, dir, args...)
	}
	for _, args := range [][]string{
		{"measure", "-O", "qcow2", "missing.qcow2"},
		{"measure", "-O", "qcow2", "--size", "1G", "-o", "cluster_size=3k"},
		{"measure", "-O", "qcow2", "--size", "1G", "-o", "compat=0.10,refcount_bits=8"},
		{"measure", "-O", "qcow2", "-o", "cluster_size=512", "--size", "1000000000000000"},
	} {
		q := runQemu(t, dir, "qemu-img", args...)
		z := zq(t, dir, args...)
		if q.code != z.code || q.stdout != z.stdout || z.stderr == "" {
			t.Errorf("qemu-img and zqimg differ:\n%s\n%s", q, z)
		}
	}
}
