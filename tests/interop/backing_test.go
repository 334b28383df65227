package interop

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// canonicalHeader rebuilds a header cluster without the feature name
// table (zqimg's has the "zoned format" entry in addition, see
// TestCreateMatchesQemu) and with the backing file offset recomputed, so
// that two images whose headers differ only there compare equal. It also
// checks that the backing file name lies right after the end marker.
func canonicalHeader(t *testing.T, who string, h *qcowHeader) []byte {
	t.Helper()
	b := append([]byte(nil), h.raw[:h.headerLen]...)
	binary.BigEndian.PutUint64(b[8:], 0)
	for _, e := range h.exts {
		if e.magic == extFeatureTable {
			continue
		}
		var eh [8]byte
		binary.BigEndian.PutUint32(eh[0:], e.magic)
		binary.BigEndian.PutUint32(eh[4:], uint32(len(e.data)))
		b = append(b, eh[:]...)
		b = append(b, e.data...)
		b = append(b, make([]byte, (len(e.data)+7)/8*8-len(e.data))...)
	}
	b = append(b, make([]byte, 8)...)
	if h.backingOff != 0 {
		if int(h.backingOff) != h.extAreaEnd {
			t.Errorf("%s: backing file name at %d, the extensions end at %d", who, h.backingOff, h.extAreaEnd)
		}
		b = append(b, h.raw[h.backingOff:h.backingOff+uint64(h.backingSize)]...)
	}
	return b
}

// compareOverlay checks that zqimg's image at zpath is qemu-img's at
// qpath byte for byte, but for the feature name table (and so the backing
// name's offset) in the header cluster.
func compareOverlay(t *testing.T, qpath, zpath string) {
	t.Helper()
	qb, zb := readFile(t, qpath), readFile(t, zpath)
	if len(qb) != len(zb) {
		t.Errorf("file length: zqimg %d, qemu-img %d", len(zb), len(qb))
	}
	qh, zh := parseQcowHeader(t, qb), parseQcowHeader(t, zb)
	cs := 1 << qh.clusterBits
	if len(qb) > cs && len(zb) > cs {
		if d := firstDiff(zb[cs:], qb[cs:]); d != "" {
			t.Errorf("after the header cluster, zqimg's file differs from qemu-img's: %s", d)
		}
	}
	if _, ok := qh.ext(extFeatureTable); !ok {
		if d := firstDiff(zb[:min(cs, len(zb))], qb[:min(cs, len(qb))]); d != "" {
			t.Errorf("qemu-img writes no feature name table here, so the header clusters must be identical: %s", d)
		}
	}
	qc, zc := canonicalHeader(t, "qemu-img", qh), canonicalHeader(t, "zqimg", zh)
	if !bytes.Equal(qc, zc) {
		t.Errorf("header (without the feature name table) differs: %s\nzqimg    %x\nqemu-img %x", firstDiff(zc, qc), zc, qc)
	}
	for _, x := range []struct {
		who string
		h   *qcowHeader
	}{{"zqimg", zh}, {"qemu-img", qh}} {
		end := x.h.extAreaEnd + int(x.h.backingSize)
		if i := bytes.IndexFunc(x.h.raw[end:], func(r rune) bool { return r != 0 }); i >= 0 {
			t.Errorf("%s's header cluster has non-zero bytes after the backing file name, at %d", x.who, end+i)
		}
	}
}

// TestCreateBackingMatchesQemu: `create -b BACKING -F FMT` (and -o
// backing_file=,backing_fmt=, and -u) prints qemu-img's Formatting line,
// takes the size from the backing file when none is given, and writes
// qemu-img's image, byte for byte but for the feature name table.
func TestCreateBackingMatchesQemu(t *testing.T) {
	requireQemu(t)
	shared := t.TempDir() // the backing file named by an absolute path
	mustRun(t, shared, "qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "48M")
	for _, c := range []struct {
		name string
		args []string // {} stands for the new image
	}{
		{"size-from-qcow2", []string{"-b", "base.qcow2", "-F", "qcow2", "{}"}},
		{"explicit-size", []string{"-b", "base.qcow2", "-F", "qcow2", "{}", "32M"}},
		{"larger", []string{"-b", "base.qcow2", "-F", "qcow2", "{}", "1G"}},
		{"o-options", []string{"-o", "backing_file=base.qcow2,backing_fmt=qcow2", "{}", "128M"}},
		{"b-overrides-o", []string{"-o", "backing_file=other", "-b", "base.qcow2", "-F", "qcow2", "{}"}},
		{"c4k", []string{"-o", "cluster_size=4k", "-b", "base.qcow2", "-F", "qcow2", "{}"}},
		{"c512", []string{"-o", "cluster_size=512", "-b", "base.qcow2", "-F", "qcow2", "{}"}},
		{"v2", []string{"-o", "compat=0.10", "-b", "base.qcow2", "-F", "qcow2", "{}"}},
		{"extl2-zstd", []string{"-o", "extended_l2=on,compression_type=zstd", "-b", "base.qcow2", "-F", "qcow2", "{}"}},
		{"raw-size-rounded", []string{"-b", "odd.raw", "-F", "raw", "{}"}},
		{"qcow2-as-raw", []string{"-b", "base.qcow2", "-F", "raw", "{}"}},
		{"unsafe-missing", []string{"-u", "-b", "missing.qcow2", "-F", "qcow2", "{}", "1M"}},
		{"comma-name", []string{"-u", "-b", "a,b.qcow2", "-F", "qcow2", "{}", "1M"}},
		{"absolute", []string{"-b", "@/base.qcow2", "-F", "qcow2", "{}"}},
		{"subdir", []string{"-b", "../base.qcow2", "-F", "qcow2", "sub/{}"}},
		// Refused, by both.
		{"no-format", []string{"-b", "base.qcow2", "{}"}},
		{"no-format-unsafe", []string{"-u", "-b", "base.qcow2", "{}", "1M"}},
		{"missing", []string{"-b", "missing.qcow2", "-F", "qcow2", "{}", "1M"}},
		{"missing-in-subdir", []string{"-b", "base.qcow2", "-F", "qcow2", "sub/{}"}},
		{"wrong-format", []string{"-b", "odd.raw", "-F", "qcow2", "{}"}},
		{"unsafe-no-size", []string{"-u", "-b", "base.qcow2", "-F", "qcow2", "{}"}},
		{"empty-name", []string{"-b", "", "-F", "qcow2", "{}", "1M"}},
		{"same-name", []string{"-b", "{}", "-F", "qcow2", "{}", "1M"}},
		{"format-without-file", []string{"-F", "qcow2", "{}", "1M"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var res [2]result
			var paths [2]string
			for i, tool := range []string{"qemu-img", zqimgBin} {
				dir := t.TempDir()
				if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
					t.Fatal(err)
				}
				mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "64M")
				mustRun(t, dir, "qemu-io", "-c", "write -P 0x11 0 1M", "base.qcow2")
				writeFile(t, filepath.Join(dir, "odd.raw"), bytes.Repeat([]byte{7}, 1000))
				args := []string{"create", "-f", "qcow2"}
				for _, a := range c.args {
					a = strings.ReplaceAll(a, "{}", "img.qcow2")
					args = append(args, strings.ReplaceAll(a, "@", shared))
				}
				res[i] = run(t, dir, tool, args...)
				img := "img.qcow2"
				if strings.HasPrefix(c.args[len(c.args)-1], "sub/") || (len(c.args) > 1 && strings.HasPrefix(c.args[len(c.args)-2], "sub/")) {
					img = "sub/img.qcow2"
				}
				paths[i] = filepath.Join(dir, img)
				res[i].stdout = strings.ReplaceAll(res[i].stdout, dir, "@")
				res[i].stderr = strings.ReplaceAll(res[i].stderr, dir, "@")
			}
			q, z := res[0], res[1]
			if (q.code == 0) != (z.code == 0) {
				t.Fatalf("qemu-img and zqimg disagree:\n%s\n%s", q, z)
			}
			if q.stdout != z.stdout {
				t.Errorf("stdout: zqimg\n%q\nqemu-img\n%q", z.stdout, q.stdout)
			}
			if q.code != 0 {
				// qemu-img's hint "Detected format of qcow2." has no newline.
				qe := strings.TrimSuffix(strings.TrimPrefix(q.stderr, "qemu-img: "), "\n")
				ze := strings.TrimSuffix(strings.TrimPrefix(z.stderr, "zqimg: "), "\n")
				if !strings.HasPrefix(ze, strings.SplitN(qe, ":", 2)[0]) || !sameFirstWords(qe, ze) {
					t.Errorf("message: zqimg\n%q\nqemu-img\n%q", z.stderr, q.stderr)
				}
				if _, err := os.Stat(paths[1]); err == nil {
					t.Errorf("zqimg refused but left %s behind", paths[1])
				}
				return
			}
			compareOverlay(t, paths[0], paths[1])
			if !strings.HasPrefix(c.name, "unsafe") && c.name != "comma-name" {
				mustRun(t, "", "qemu-img", "compare", paths[0], paths[1])
				qemuCheckClean(t, paths[1])
			}
		})
	}
}

// sameFirstWords reports whether two messages agree in their first line
// up to qemu-img's wording of errno reasons and zqimg's extra detail: the
// first five words must match.
func sameFirstWords(q, z string) bool {
	qf := strings.Fields(strings.SplitN(q, "\n", 2)[0])
	zf := strings.Fields(strings.SplitN(z, "\n", 2)[0])
	n := min(5, len(qf))
	if len(zf) < n {
		return false
	}
	for i := 0; i < n; i++ {
		if qf[i] != zf[i] {
			return false
		}
	}
	return true
}
