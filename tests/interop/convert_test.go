package interop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// convertVariant is one way of converting.
type convertVariant struct {
	name string
	args []string // flags before SRC DST
	raw  bool     // the output is raw
	// compressed: the output holds compressed clusters.
	compressed bool
	// layout says how far the output's layout must match qemu-img's:
	// "exact" (same qemu-img map, host offsets included), "extents" (the
	// same ranges of data and zeroes: with 512-byte clusters a refcount
	// block is needed every 128 KiB of file, and zqimg's engine places
	// some of them a cluster apart from QEMU, shifting later offsets), or
	// "" (extended L2: zqimg allocates every subcluster of a cluster it
	// writes, QEMU only the written ones, so only contents are compared).
	layout string
}

var convertVariants = []convertVariant{
	{name: "qcow2", args: []string{"-O", "qcow2"}, layout: "exact"},
	{name: "c4k-rb1", args: []string{"-O", "qcow2", "-o", "cluster_size=4k,refcount_bits=1"}, layout: "exact"},
	{name: "c512", args: []string{"-O", "qcow2", "-o", "cluster_size=512"}, layout: "extents"},
	{name: "extl2", args: []string{"-O", "qcow2", "-o", "extended_l2=on,cluster_size=32k"}},
	{name: "v2", args: []string{"-O", "qcow2", "-o", "compat=0.10"}, layout: "exact"},
	{name: "zlib", args: []string{"-c", "-O", "qcow2"}, compressed: true, layout: "exact"},
	{name: "zstd-16k", args: []string{"-c", "-O", "qcow2", "-o", "compression_type=zstd,cluster_size=16k"}, compressed: true, layout: "exact"},
	{name: "raw", args: []string{"-O", "raw"}, raw: true},
}

// zqimg convert makes, from every image of the corpus and with every
// variant, an image that stock qemu-img reads as the source (compare
// identical) and checks clean, allocated exactly as qemu-img convert
// allocates it (same qemu-img map, host offsets included; compressed
// clusters where qemu-img's has them); raw outputs are byte-identical to
// qemu-img's. The other way round, zqimg reads qemu-img's outputs as the
// source.
func TestConvertMatchesQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	for _, p := range plainImages() {
		t.Run(p.name, func(t *testing.T) {
			src := filepath.Base(p.build(t, dir))
			fa := formatOf(p)
			raw := p.name + ".src.raw"
			mustRun(t, dir, "qemu-img", "convert", "-f", fa, "-O", "raw", src, raw)
			for _, v := range convertVariants {
				// The basic variants on every image, the others on a few.
				basic := v.name == "qcow2" || v.name == "raw" || v.name == "zlib"
				if !basic && !strings.Contains(" c64k compressed-zstd c2M-unaligned-size extl2 backing raw ", " "+p.name+" ") {
					continue
				}
				ext := ".qcow2"
				if v.raw {
					ext = ".raw"
				}
				zout := p.name + "." + v.name + ".zq" + ext
				qout := p.name + "." + v.name + ".qemu" + ext
				args := append(append([]string{"convert", "-f", fa}, v.args...), src)
				if r := zq(t, dir, append(args, zout)...); r.code != 0 || r.stdout != "" || r.stderr != "" {
					t.Fatalf("zqimg convert (%s):\n%s", v.name, r)
				}
				mustRun(t, dir, "qemu-img", append(args, qout)...)
				ofmt := "qcow2"
				if v.raw {
					ofmt = "raw"
				}
				r := runQemu(t, dir, "qemu-img", "compare", "-f", fa, "-F", ofmt, src, zout)
				if r.code != 0 || r.stdout != "Images are identical.\n" {
					t.Errorf("%s: qemu-img compare of the source and zqimg's output:\n%s", v.name, r)
				}
				if z := zq(t, dir, "compare", "-F", ofmt, src, qout); z.code != 0 {
					t.Errorf("%s: zqimg compare of the source and qemu-img's output:\n%s", v.name, z)
				}
				if v.raw {
					if a, b := readFile(t, filepath.Join(dir, zout)), readFile(t, filepath.Join(dir, qout)); !bytes.Equal(a, b) {
						t.Errorf("%s: raw outputs differ: %s", v.name, firstDiff(a, b))
					}
					continue
				}
				qemuCheckClean(t, filepath.Join(dir, zout))
				zm := runQemu(t, dir, "qemu-img", "map", "--output=json", zout)
				qm := runQemu(t, dir, "qemu-img", "map", "--output=json", qout)
				switch {
				case v.layout == "exact" && zm.stdout != qm.stdout,
					v.layout == "extents" && extents(t, zm.stdout) != extents(t, qm.stdout):
					t.Errorf("%s: qemu-img map of zqimg's and qemu-img's outputs differ:\n%s\n%s", v.name, zm, qm)
				}
				if v.compressed && p.name != "empty" {
					// qemu-io reads the compressed clusters too.
					size := int64(len(readFile(t, filepath.Join(dir, raw))))
					if r := runQemu(t, dir, "qemu-io", "-r", "-f", "qcow2", "-c", fmt.Sprintf("read -q 0 %d", size), zout); r.code != 0 || r.stdout != "" {
						t.Errorf("%s: qemu-io cannot read zqimg's output:\n%s", v.name, r)
					}
					h := runQemu(t, dir, "qemu-img", "map", zout)
					if h.code == 0 || !strings.Contains(h.stderr, "compressed clusters") {
						t.Errorf("%s: qemu-img map does not see compressed clusters:\n%s", v.name, h)
					}
					var entries []map[string]any
					if err := json.Unmarshal([]byte(zm.stdout), &entries); err != nil {
						t.Fatal(err)
					}
					for _, e := range entries {
						if e["data"] == true {
							if _, ok := e["offset"]; ok {
								t.Errorf("%s: data stored uncompressed: %v", v.name, e)
							}
						}
					}
				}
				removeAll(t, filepath.Join(dir, zout), filepath.Join(dir, qout))
			}
		})
	}
}

// A raw image (with holes) converted to qcow2 by zqimg reads back in
// qemu-img as the raw file, and zqimg's raw export of qemu-img's qcow2 is
// the same file.
func TestConvertRawRoundTrip(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	var raw plainImage
	for _, p := range plainImages() {
		if p.name == "raw" {
			raw = p
		}
	}
	src := filepath.Base(raw.build(t, dir))
	if r := zq(t, dir, "convert", "-f", "raw", "-O", "qcow2", src, "r.qcow2"); r.code != 0 {
		t.Fatal(r)
	}
	qemuCompareRaw(t, filepath.Join(dir, "r.qcow2"), filepath.Join(dir, src))
	qemuCheckClean(t, filepath.Join(dir, "r.qcow2"))
	if r := zq(t, dir, "convert", "-O", "raw", "r.qcow2", "back.raw"); r.code != 0 {
		t.Fatal(r)
	}
	if a, b := readFile(t, filepath.Join(dir, src)), readFile(t, filepath.Join(dir, "back.raw")); !bytes.Equal(a, b) {
		t.Errorf("raw -> qcow2 -> raw changed the data: %s", firstDiff(a, b))
	}
}

// Failures print qemu-img's message (program name aside) or zqimg's
// equivalent, exit 1 like qemu-img, and leave no output file.
func TestConvertErrorsMatchQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	src := filepath.Base(plainImages()[0].build(t, dir))
	for _, tc := range []struct {
		args []string
		same bool // same message
	}{
		{[]string{"convert", "-O", "qcow2", "missing.qcow2", "out.qcow2"}, false},
		{[]string{"convert", "-O", "vmdk2", src, "out.qcow2"}, true},
		{[]string{"convert", "-O", "qcow2", "-o", "cluster_size=3k", src, "out.qcow2"}, false},
		{[]string{"convert", "-O", "qcow2", "-o", "compat=0.10,compression_type=zstd", src, "out.qcow2"}, false},
		{[]string{"convert", "-c", "-O", "raw", src, "out.raw"}, true},
		{[]string{"convert", "-O", "qcow2", src, "nodir/out.qcow2"}, true},
		{[]string{"convert", "-O", "raw", src, "nodir/out.raw"}, true},
		{[]string{"convert", src}, false},
	} {
		q := runQemu(t, dir, "qemu-img", tc.args...)
		z := zq(t, dir, tc.args...)
		if q.code != z.code || q.stdout != z.stdout || z.stderr == "" {
			t.Errorf("qemu-img and zqimg differ:\n%s\n%s", q, z)
		}
		if tc.same && normalizeProg(q.stderr) != normalizeProg(z.stderr) {
			t.Errorf("messages differ:\n%s\n%s", q, z)
		}
		for _, out := range []string{"out.qcow2", "out.raw"} {
			if fileExists(filepath.Join(dir, out)) {
				t.Errorf("%v left %s behind", tc.args, out)
				removeAll(t, filepath.Join(dir, out))
			}
		}
	}
}

// extents returns qemu-img map's JSON entries without host offsets,
// adjacent entries of the same kind merged.
func extents(t *testing.T, js string) string {
	t.Helper()
	var entries []struct {
		Start, Length       int64
		Present, Zero, Data bool
	}
	if err := json.Unmarshal([]byte(js), &entries); err != nil {
		t.Fatalf("%v\n%s", err, js)
	}
	var b strings.Builder
	for i := 0; i < len(entries); {
		e := entries[i]
		j := i + 1
		for j < len(entries) && entries[j].Present == e.Present && entries[j].Zero == e.Zero && entries[j].Data == e.Data {
			e.Length += entries[j].Length
			j++
		}
		fmt.Fprintf(&b, "%d+%d present=%v zero=%v data=%v\n", e.Start, e.Length, e.Present, e.Zero, e.Data)
		i = j
	}
	return b.String()
}
