package interop

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
)

// TestInfoJSONMatchesQemu: `zqimg info --output=json` agrees with
// `qemu-img info --output=json` on every key qemu-img prints, for images
// of many kinds, named by relative and absolute paths.
func TestInfoJSONMatchesQemu(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	q := func(args ...string) { mustRun(t, dir, "qemu-img", args...) }
	qio := func(img string, cmds ...string) { runQemuIO(t, filepath.Join(dir, img), cmds) }
	type tc struct {
		name  string
		setup func()
		img   string // relative to dir
	}
	cases := []tc{
		{"v2", func() {
			q("create", "-q", "-f", "qcow2", "-o", "compat=0.10", "v2.qcow2", "64M")
			qio("v2.qcow2", "write -P 0x11 0 1M")
		}, "v2.qcow2"},
		{"v3", func() {
			q("create", "-q", "-f", "qcow2", "v3.qcow2", "1G")
			qio("v3.qcow2", "write -P 0x11 1M 3M", "write -z 8M 1M")
		}, "v3.qcow2"},
		{"c512-rb1", func() {
			q("create", "-q", "-f", "qcow2", "-o", "cluster_size=512,refcount_bits=1", "c512.qcow2", "100M")
		}, "c512.qcow2"},
		{"c2M-rb64", func() { q("create", "-q", "-f", "qcow2", "-o", "cluster_size=2M,refcount_bits=64", "c2m.qcow2", "10G") }, "c2m.qcow2"},
		{"extl2", func() {
			q("create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k", "extl2.qcow2", "256M")
			qio("extl2.qcow2", "write -P 0x22 4k 4k")
		}, "extl2.qcow2"},
		{"lazy", func() { q("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", "lazy.qcow2", "64M") }, "lazy.qcow2"},
		{"lazy-dirty", func() {
			q("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", "dirty.qcow2", "64M")
			// qemu-io's abort leaves the image with the dirty bit set.
			r := run(t, dir, "qemu-io", "-c", "write -P 0x33 0 64k", "-c", "abort", "dirty.qcow2")
			if r.code == 0 {
				t.Fatalf("qemu-io abort did not abort:\n%s", r)
			}
			if h := readHeader(t, filepath.Join(dir, "dirty.qcow2")); h.incompat&1 == 0 {
				t.Fatal("test setup: dirty bit not set after qemu-io abort")
			}
		}, "dirty.qcow2"},
		{"corrupt", func() {
			q("create", "-q", "-f", "qcow2", "corrupt.qcow2", "64M")
			setHeaderBit(t, filepath.Join(dir, "corrupt.qcow2"), 79, 1<<1)
		}, "corrupt.qcow2"},
		{"zstd", func() {
			q("create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", "zstd.qcow2", "64M")
			qio("zstd.qcow2", "write -c -P 0x44 0 64k")
		}, "zstd.qcow2"},
		{"convert-c-zlib", func() {
			writeFile(t, filepath.Join(dir, "data.raw"), randomData(7, 4<<20))
			q("convert", "-c", "-f", "raw", "-O", "qcow2", "data.raw", "conv.qcow2")
		}, "conv.qcow2"},
		{"zqimg-created-zstd", func() {
			mustRun(t, dir, zqimgBin, "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd,cluster_size=4k,refcount_bits=64", "zq.qcow2", "5G")
		}, "zq.qcow2"},
		{"zqimg-created-v2", func() {
			mustRun(t, dir, zqimgBin, "create", "-q", "-f", "qcow2", "-o", "compat=0.10", "zq2.qcow2", "1M")
		}, "zq2.qcow2"},
		{"backing-qcow2-F", func() {
			q("create", "-q", "-f", "qcow2", "base.qcow2", "64M")
			q("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "ov-q.qcow2")
			qio("ov-q.qcow2", "write -P 0x55 100k 10k")
		}, "ov-q.qcow2"},
		{"backing-raw-F", func() {
			writeFile(t, filepath.Join(dir, "base.raw"), randomData(8, 1<<20))
			q("create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "ov-r.qcow2", "2M")
		}, "ov-r.qcow2"},
		{"backing-no-format", func() {
			q("create", "-q", "-f", "qcow2", "base2.qcow2", "64M")
			q("create", "-q", "-f", "qcow2", "-b", "base2.qcow2", "-F", "qcow2", "ov-n.qcow2")
			stripBackingFormat(t, filepath.Join(dir, "ov-n.qcow2"))
		}, "ov-n.qcow2"},
		{"backing-absolute", func() {
			q("create", "-q", "-f", "qcow2", "base3.qcow2", "64M")
			q("create", "-q", "-f", "qcow2", "-b", filepath.Join(dir, "base3.qcow2"), "-F", "qcow2", "ov-a.qcow2")
		}, "ov-a.qcow2"},
		{"image-in-subdir", func() {
			q("create", "-q", "-f", "qcow2", "sub/base4.qcow2", "64M")
			q("create", "-q", "-f", "qcow2", "-b", "base4.qcow2", "-F", "qcow2", "sub/ov-s.qcow2")
		}, "sub/ov-s.qcow2"},
		{"backing-in-subdir-v2", func() {
			q("create", "-q", "-f", "qcow2", "sub/base5.qcow2", "64M")
			q("create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", "sub/base5.qcow2", "-F", "qcow2", "ov-s2.qcow2")
		}, "ov-s2.qcow2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.setup()
			compareInfo(t, dir, c.img)
			compareInfo(t, "", filepath.Join(dir, c.img))
		})
	}
}

// compareInfo runs both info commands on img from dir and compares every
// key qemu-img prints.
func compareInfo(t *testing.T, dir, img string) {
	t.Helper()
	qr := mustRun(t, dir, "qemu-img", "info", "--output=json", img)
	zr := zq(t, dir, "info", "--output=json", img)
	if zr.code != 0 {
		t.Errorf("zqimg info failed:\n%s", zr)
		return
	}
	var qm, zm map[string]any
	if err := json.Unmarshal([]byte(qr.stdout), &qm); err != nil {
		t.Fatalf("qemu-img info output: %v\n%s", err, qr)
	}
	if err := json.Unmarshal([]byte(zr.stdout), &zm); err != nil {
		t.Fatalf("zqimg info output is not JSON: %v\n%s", err, zr)
	}
	for _, k := range []string{"virtual-size", "filename", "cluster-size", "format", "actual-size", "dirty-flag", "format-specific"} {
		if _, ok := qm[k]; !ok {
			t.Fatalf("test setup: qemu-img info has no %q:\n%s", k, qr)
		}
	}
	var diffs []string
	compareJSON("", qm, zm, &diffs)
	if len(diffs) > 0 {
		sort.Strings(diffs)
		t.Errorf("zqimg info --output=json %s disagrees with qemu-img:\n  %s\n%s\n%s", img, joinLines(diffs), qr, zr)
	}
}

// compareJSON records, for every key of want (recursively into objects),
// where got lacks it or holds another value.
func compareJSON(path string, want, got map[string]any, diffs *[]string) {
	for k, wv := range want {
		p := path + "/" + k
		gv, ok := got[k]
		if !ok {
			*diffs = append(*diffs, fmt.Sprintf("%s: missing (qemu-img: %v)", p, wv))
			continue
		}
		wm, wIsMap := wv.(map[string]any)
		gm, gIsMap := gv.(map[string]any)
		switch {
		case wIsMap && gIsMap:
			compareJSON(p, wm, gm, diffs)
		case !reflect.DeepEqual(wv, gv):
			*diffs = append(*diffs, fmt.Sprintf("%s: zqimg %v, qemu-img %v", p, gv, wv))
		}
	}
}

func joinLines(s []string) string {
	out := ""
	for i, l := range s {
		if i > 0 {
			out += "\n  "
		}
		out += l
	}
	return out
}

// setHeaderBit sets bits in one byte of a file.
func setHeaderBit(t testing.TB, path string, off int64, bits byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] |= bits
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}
