package interop

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type createCase struct {
	opts string // -o value
	size string
	// grows: qemu-img's refcount table must end up larger than one
	// cluster (it grew while the L1 table was allocated).
	grows bool
}

func (c createCase) name() string {
	return strings.NewReplacer("cluster_size=", "c", "refcount_bits=", "rb", "compat=", "v",
		"extended_l2=on", "extl2", "compression_type=", "", "lazy_refcounts=on", "lazy", ",", "-").Replace(c.opts) + "-" + c.size
}

// createMatrix lists the create options compared with qemu-img: cluster
// sizes from 512 to 2M, refcount widths 1/16/64, both compat levels,
// extended L2, zstd and lazy refcounts, sizes from 0 to 256 TiB; some of them
// qemu-img refuses (then zqimg must refuse too), and the large
// 512-byte-cluster ones make the refcount table grow while the L1 table is
// laid out.
func createMatrix() []createCase {
	var cs []createCase
	for _, cl := range []string{"512", "4k", "64k", "2M"} {
		for _, v := range []string{"compat=1.1,refcount_bits=1", "compat=1.1,refcount_bits=16", "compat=1.1,refcount_bits=64", "compat=0.10,refcount_bits=16"} {
			for _, size := range []string{"0", "1000000", "1G", "1T"} {
				cs = append(cs, createCase{opts: "cluster_size=" + cl + "," + v, size: size})
			}
		}
	}
	more := []createCase{
		// The smallest clusters with a feature name table.
		{opts: "cluster_size=8k,refcount_bits=16", size: "1"},
		{opts: "cluster_size=8k,refcount_bits=64", size: "1G"},
		{opts: "cluster_size=8k,compat=0.10", size: "1T"},
		// The refcount table grows while the L1 table is allocated.
		{opts: "cluster_size=512,refcount_bits=64", size: "12G", grows: true},
		{opts: "cluster_size=512,refcount_bits=16", size: "40G", grows: true},
		// Largest sizes.
		{opts: "cluster_size=512,refcount_bits=1", size: "129G"}, // refused: L1 too large
		{opts: "cluster_size=64k", size: "256T"},
		{opts: "cluster_size=2M,refcount_bits=64", size: "256T"},
		{opts: "cluster_size=4k", size: "16T"}, // refused: L1 too large
		// Extended L2 entries.
		{opts: "cluster_size=16k,extended_l2=on", size: "0"},
		{opts: "cluster_size=16k,extended_l2=on", size: "1G"},
		{opts: "cluster_size=64k,extended_l2=on", size: "1T"},
		{opts: "cluster_size=2M,extended_l2=on,refcount_bits=1", size: "1T"},
		{opts: "cluster_size=4k,extended_l2=on", size: "1G"},              // refused: clusters too small
		{opts: "cluster_size=64k,extended_l2=on,compat=0.10", size: "1G"}, // refused
		// zstd and lazy refcounts.
		{opts: "cluster_size=4k,compression_type=zstd", size: "1G"},
		{opts: "cluster_size=64k,compression_type=zstd", size: "1G"},
		{opts: "cluster_size=64k,compression_type=zstd,compat=0.10", size: "1G"}, // refused
		{opts: "cluster_size=4k,lazy_refcounts=on", size: "1G"},
		{opts: "cluster_size=2M,lazy_refcounts=on", size: "1G"},
		{opts: "lazy_refcounts=on,compat=0.10", size: "1G"}, // refused
		{opts: "cluster_size=64k,extended_l2=on,compression_type=zstd,lazy_refcounts=on,refcount_bits=64", size: "1T"},
		{opts: "cluster_size=1k,refcount_bits=2", size: "3G"},
		{opts: "cluster_size=1M,refcount_bits=32,lazy_refcounts=on", size: "100G"},
	}
	return append(cs, more...)
}

// TestCreateMatchesQemu: zqimg create lays images out exactly as stock
// qemu-img create does: same length, same fixed header, identical bytes
// after the header cluster; the header cluster is identical when qemu-img
// writes no feature name table (clusters of 4 KiB or less, version 2) and
// otherwise differs only in that table, which has the "zoned format" entry
// in addition. Where qemu-img refuses the options, zqimg refuses too.
func TestCreateMatchesQemu(t *testing.T) {
	requireQemu(t)
	refFeatures := referenceFeatureTable(t)
	for _, c := range createMatrix() {
		t.Run(c.name(), func(t *testing.T) {
			t.Parallel()
			qdir, zdir := t.TempDir(), t.TempDir()
			qr := run(t, qdir, "qemu-img", "create", "-f", "qcow2", "-o", c.opts, "img.qcow2", c.size)
			zr := zq(t, zdir, "create", "-f", "qcow2", "-o", c.opts, "img.qcow2", c.size)
			zpath := filepath.Join(zdir, "img.qcow2")
			if qr.code != 0 {
				if zr.code == 0 {
					t.Errorf("qemu-img refuses these options but zqimg creates an image:\n%s\n%s", qr, zr)
				}
				if fileExists(zpath) {
					t.Errorf("zqimg refused the options but left %s behind", zpath)
				}
				return
			}
			if zr.code != 0 {
				t.Fatalf("qemu-img creates the image but zqimg fails:\n%s\n%s", qr, zr)
			}
			if qr.stdout != zr.stdout {
				t.Errorf("zqimg create prints\n%q\nqemu-img prints\n%q", zr.stdout, qr.stdout)
			}
			compareCreated(t, filepath.Join(qdir, "img.qcow2"), zpath, refFeatures)
			if n := readHeader(t, filepath.Join(qdir, "img.qcow2")).rtClusters; c.grows && n < 2 {
				t.Errorf("test premise: qemu-img's refcount table has %d cluster(s); this case should make it grow", n)
			}
		})
	}
}

func compareCreated(t *testing.T, qpath, zpath string, refFeatures []byte) {
	t.Helper()
	qb, zb := readFile(t, qpath), readFile(t, zpath)
	if len(qb) != len(zb) {
		t.Errorf("file length: zqimg %d, qemu-img %d", len(zb), len(qb))
	}
	qh, zh := parseQcowHeader(t, qb), parseQcowHeader(t, zb)
	cs := 1 << qh.clusterBits
	if qh.clusterBits != zh.clusterBits {
		t.Fatalf("cluster bits: zqimg %d, qemu-img %d", zh.clusterBits, qh.clusterBits)
	}
	if len(qb) > cs && len(zb) > cs {
		if d := firstDiff(zb[cs:], qb[cs:]); d != "" {
			t.Errorf("after the header cluster (offset %d on), zqimg's file differs from qemu-img's: %s", cs, d)
		}
	}
	// Fixed header fields.
	if !bytes.Equal(zb[:zh.headerLen], qb[:qh.headerLen]) {
		t.Errorf("fixed header differs: %s\nzqimg   %x\nqemu-img %x", firstDiff(zb[:zh.headerLen], qb[:qh.headerLen]), zb[:zh.headerLen], qb[:qh.headerLen])
	}
	qft, qHasFT := qh.ext(extFeatureTable)
	if !qHasFT {
		// No feature name table (version 2, or clusters of 4 KiB or
		// less): the whole file must be identical.
		if qh.version >= 3 && cs > 4096 {
			t.Fatalf("test premise: qemu-img wrote no feature name table for a v3 image with %d-byte clusters", cs)
		}
		if d := firstDiff(zb, qb); d != "" {
			t.Errorf("qemu-img writes no feature name table here, so the files must be identical: %s", d)
		}
		return
	}
	if cs <= 4096 {
		t.Fatalf("test premise: qemu-img wrote a feature name table with %d-byte clusters", cs)
	}
	// The extension lists: the same extensions in the same order, equal
	// except for the feature name table.
	if len(zh.exts) != len(qh.exts) {
		t.Errorf("header extensions: zqimg %s, qemu-img %s", extList(zh.exts), extList(qh.exts))
	} else {
		for i := range qh.exts {
			q, z := qh.exts[i], zh.exts[i]
			if q.magic != z.magic {
				t.Errorf("header extension %d: zqimg 0x%08x, qemu-img 0x%08x", i, z.magic, q.magic)
				continue
			}
			if q.magic != extFeatureTable && !bytes.Equal(q.data, z.data) {
				t.Errorf("header extension 0x%08x differs: zqimg %x, qemu-img %x", q.magic, z.data, q.data)
			}
		}
	}
	zft, ok := zh.ext(extFeatureTable)
	if !ok {
		t.Fatalf("zqimg wrote no feature name table")
	}
	// zqimg's table is qemu-img 7.2's with {incompatible, bit 5, "zoned
	// format"} inserted after the extended L2 entry, as the reference
	// writes it.
	const entry = 48
	if len(qft)%entry != 0 || len(zft)%entry != 0 {
		t.Fatalf("feature name table lengths %d (zqimg), %d (qemu-img) are not multiples of %d", len(zft), len(qft), entry)
	}
	zoned := make([]byte, entry)
	zoned[0], zoned[1] = 0, 5
	copy(zoned[2:], "zoned format")
	var want []byte
	inserted := false
	for i := 0; i < len(qft); i += entry {
		e := qft[i : i+entry]
		want = append(want, e...)
		if e[0] == 0 && e[1] == 4 {
			want = append(want, zoned...)
			inserted = true
		}
	}
	if !inserted {
		t.Fatalf("test premise: qemu-img's feature name table has no extended L2 entry:\n%s", featureNames(qft))
	}
	if !bytes.Equal(zft, want) {
		t.Errorf("feature name table:\nzqimg:\n%s\nwant (qemu-img's plus zoned format):\n%s", featureNames(zft), featureNames(want))
	}
	if !bytes.Equal(zft, refFeatures) {
		t.Errorf("feature name table differs from the reference's (testdata/reference/create/plain-default.qcow2):\nzqimg:\n%s\nreference:\n%s", featureNames(zft), featureNames(refFeatures))
	}
	if len(zft) != len(qft)+entry {
		t.Errorf("feature name table: zqimg %d entries, qemu-img %d; want one more", len(zft)/entry, len(qft)/entry)
	}
	// Beyond the extension area the header cluster is zero in both.
	for _, x := range []struct {
		who string
		h   *qcowHeader
	}{{"zqimg", zh}, {"qemu-img", qh}} {
		rest := x.h.raw[x.h.extAreaEnd:]
		if i := bytes.IndexFunc(rest, func(r rune) bool { return r != 0 }); i >= 0 {
			t.Errorf("%s's header cluster has non-zero bytes after the extensions, at %d", x.who, x.h.extAreaEnd+i)
		}
	}
	if zh.extAreaEnd != qh.extAreaEnd+entry {
		t.Errorf("extension area ends at %d in zqimg's header, %d in qemu-img's; want 48 bytes more", zh.extAreaEnd, qh.extAreaEnd)
	}
}

func extList(es []hdrExt) string {
	var s []string
	for _, e := range es {
		s = append(s, fmt.Sprintf("0x%08x(%d)", e.magic, len(e.data)))
	}
	return "[" + strings.Join(s, " ") + "]"
}

func featureNames(ft []byte) string {
	var s []string
	for i := 0; i+48 <= len(ft); i += 48 {
		s = append(s, fmt.Sprintf("  type %d bit %d %q", ft[i], ft[i+1], strings.TrimRight(string(ft[i+2:i+48]), "\x00")))
	}
	return strings.Join(s, "\n")
}

// referenceFeatureTable returns the feature name table of an image made by
// the reference implementation.
func referenceFeatureTable(t *testing.T) []byte {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "reference", "create", "plain-default.qcow2"))
	if err != nil {
		t.Fatalf("reference image not available: %v", err)
	}
	h := parseQcowHeader(t, b)
	ft, ok := h.ext(extFeatureTable)
	if !ok || binary.BigEndian.Uint32(b[100:]) == 0 {
		t.Fatalf("reference image has no feature name table")
	}
	return ft
}
