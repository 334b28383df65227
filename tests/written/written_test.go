// Package written tests zqimg on images that the reference implementation
// (QEMU with the zoned patch) WROTE with its ordinary commands — the
// images users bring after a guest ran on them — and on images written
// the same way, emulated with pkg/image on random geometries.
//
// The reference images are in testdata/written (see its README.md): for
// each NAME, the image (gzip), the number of zones and the virtual size,
// the zone report zqimg must print and the hash of the data it must read.
package written

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/internal/cmd/root"
	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// refImage is one image of testdata/written.
type refImage struct {
	name     string
	size     int64
	nz       int
	expected string // NAME.expected: what zrp 0 NZ prints
	sha      string // NAME.sha: hash of the filtered read -v dump
	script   string // NAME.sh: what the reference ran
}

// dataDir returns the absolute path of testdata/written.
func dataDir(t testing.TB) string {
	t.Helper()
	d, err := filepath.Abs(filepath.Join("..", "..", "testdata", "written"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d, "README.md")); err != nil {
		t.Fatalf("reference images not found: %v", err)
	}
	return d
}

func readText(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// refImages lists the reference images.
func refImages(t testing.TB) []refImage {
	t.Helper()
	dir := dataDir(t)
	gz, err := filepath.Glob(filepath.Join(dir, "*.qcow2.gz"))
	if err != nil || len(gz) == 0 {
		t.Fatalf("no reference images in %s: %v", dir, err)
	}
	var imgs []refImage
	for _, p := range gz {
		name := strings.TrimSuffix(filepath.Base(p), ".qcow2.gz")
		base := filepath.Join(dir, name)
		size, err := strconv.ParseInt(strings.TrimSpace(readText(t, base+".size")), 10, 64)
		if err != nil {
			t.Fatalf("%s.size: %v", name, err)
		}
		nz, err := strconv.Atoi(strings.TrimSpace(readText(t, base+".nz")))
		if err != nil {
			t.Fatalf("%s.nz: %v", name, err)
		}
		imgs = append(imgs, refImage{
			name: name, size: size, nz: nz,
			expected: readText(t, base+".expected"),
			sha:      strings.TrimSpace(readText(t, base+".sha")),
			script:   readText(t, base+".sh"),
		})
	}
	return imgs
}

// unpack writes the image NAME to a temporary directory and returns its
// path.
func unpack(t testing.TB, name string) string {
	t.Helper()
	f, err := os.Open(filepath.Join(dataDir(t), name+".qcow2.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name+".qcow2")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// zqimg runs the command in-process and returns its exit status; its
// standard output goes to out (a buffer when nil is passed: returned).
func zqimg(out io.Writer, args ...string) (code int, stdout, stderr string) {
	var ob, eb bytes.Buffer
	if out == nil {
		out = &ob
	}
	code = root.Main(args, strings.NewReader(""), out, &eb)
	return code, ob.String(), eb.String()
}

// dumpHash is a writer that hashes the lines of a read -v dump, without
// the "read ..." and statistics lines (as NAME.sha was made: the data
// lines of the reference's output).
type dumpHash struct {
	h    hashWriter
	part []byte
}

type hashWriter interface {
	io.Writer
	Sum([]byte) []byte
}

func newDumpHash() *dumpHash { return &dumpHash{h: sha256.New()} }

func (d *dumpHash) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			d.part = append(d.part, p...)
			break
		}
		line := p[:i+1]
		if len(d.part) > 0 {
			line = append(d.part, line...)
			d.part = d.part[:0]
		}
		if !bytes.HasPrefix(line, []byte("read ")) && !bytes.Contains(line, []byte("ops/sec")) {
			d.h.Write(line)
		}
		p = p[i+1:]
	}
	return n, nil
}

func (d *dumpHash) sum() string { return hex.EncodeToString(d.h.Sum(nil)) }

// guestHash hashes the guest data of the image at path, read through the
// zoned layer.
func guestHash(t testing.TB, path string) string {
	t.Helper()
	d, err := zone.Open(path, image.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	defer d.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < d.Size(); off += int64(len(buf)) {
		n := min(int64(len(buf)), d.Size()-off)
		if _, err := d.ReadAt(buf[:n], off); err != nil {
			t.Fatalf("reading %s at %d: %v", path, off, err)
		}
		h.Write(buf[:n])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// problems returns the findings of r that are problems (not progress
// lines), for failure messages and assertions.
func problems(r *check.Result) []check.Finding {
	var fs []check.Finding
	for _, f := range r.Findings {
		if f.Kind != check.KindInfo {
			fs = append(fs, f)
		}
	}
	return fs
}

// TestReferenceWritten: zqimg opens every image the reference wrote with
// every command, without repair; reports the zones as NAME.expected says;
// reads the data NAME.sha hashes; and checks it clean (exit 0). The
// reference's reset keeps zero clusters allocated beyond the write
// pointer: not damage, only reclaimable space, which -r leaks and -r all
// give back without changing what the image reads or reports.
func TestReferenceWritten(t *testing.T) {
	imgs := refImages(t)
	if len(imgs) != 8 {
		t.Errorf("%d reference images, want the 8 of testdata/written/README.md", len(imgs))
	}
	for _, ri := range imgs {
		t.Run(ri.name, func(t *testing.T) {
			t.Parallel()
			p := unpack(t, ri.name)
			nz := strconv.Itoa(ri.nz)
			size := strconv.FormatInt(ri.size, 10)

			// info, human and JSON.
			if code, out, errOut := zqimg(nil, "info", p); code != 0 || !strings.Contains(out, "    zoned:\n") || strings.Contains(out, "corrupt: true") {
				t.Errorf("info: exit %d\n%s%s", code, out, errOut)
			}
			code, out, errOut := zqimg(nil, "info", "--output=json", p)
			var inf struct {
				Size int64 `json:"virtual-size"`
				FS   struct {
					Data struct {
						Zoned *struct {
							NrZones int  `json:"nr-zones"`
							Corrupt bool `json:"corrupt"`
						} `json:"zoned"`
					} `json:"data"`
				} `json:"format-specific"`
			}
			if err := json.Unmarshal([]byte(out), &inf); code != 0 || err != nil {
				t.Fatalf("info --output=json: exit %d, %v\n%s%s", code, err, out, errOut)
			}
			if z := inf.FS.Data.Zoned; inf.Size != ri.size || z == nil || z.NrZones != ri.nz || z.Corrupt {
				t.Errorf("info --output=json: size %d, zoned %+v; want size %d, %d zones, not corrupt", inf.Size, z, ri.size, ri.nz)
			}

			// check: exit 0, nothing on standard error.
			if code, out, errOut := zqimg(nil, "check", p); code != 0 || errOut != "" || !strings.HasPrefix(out, "No errors were found on the image.\n") {
				t.Errorf("check: exit %d\n%s%s", code, out, errOut)
			}
			res, err := check.CheckPath(p, check.Options{})
			if err != nil || res == nil {
				t.Fatalf("check: %v", err)
			}
			if res.ExitCode() != 0 || len(res.Findings) != 0 {
				t.Errorf("check findings: %v", res.Findings)
			}
			// Zero clusters beyond write pointers exactly where the
			// reference reset zones.
			resets := strings.Contains(ri.script, "\nzrs ")
			if z := res.Zoned; z == nil || (z.ZeroBeyondWP > 0) != resets {
				t.Errorf("zoned result %+v; the script resets zones: %v", z, resets)
			}

			// zrp, single shot and in an io session opened read-only.
			if code, out, errOut := zqimg(nil, "zrp", p, "0", nz); code != 0 || out != ri.expected {
				t.Errorf("zrp 0 %s: exit %d\n%s%s\nwant\n%s", nz, code, out, errOut, ri.expected)
			}
			if code, out, errOut := zqimg(nil, "io", "-r", "-c", "zrp 0 "+nz, p); code != 0 || out != ri.expected {
				t.Errorf("io -r -c 'zrp 0 %s': exit %d\n%s%s\nwant\n%s", nz, code, out, errOut, ri.expected)
			}
			if code, out, errOut := zqimg(nil, "io", "-r", "-c", "read -q 0 512", "-c", "length", p); code != 0 || !strings.Contains(out, strconv.FormatInt(ri.size>>20, 10)+" MiB") {
				t.Errorf("io -r read/length: exit %d\n%s%s", code, out, errOut)
			}

			// read -v of the whole device, hashed as NAME.sha was.
			dh := newDumpHash()
			bw := bufio.NewWriterSize(dh, 1<<20)
			code, _, errOut = zqimg(bw, "read", "-v", p, "0", size)
			bw.Flush()
			if code != 0 || dh.sum() != ri.sha {
				t.Errorf("read -v 0 %s: exit %d, hash %s, want %s\n%s", size, code, dh.sum(), ri.sha, errOut)
			}

			// The image was only read.
			data := guestHash(t, p)
			for _, mode := range []string{"leaks", "all"} {
				q := filepath.Join(t.TempDir(), "r.qcow2")
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(q, b, 0o644); err != nil {
					t.Fatal(err)
				}
				rep, err := check.CheckPath(q, check.Options{Repair: map[string]check.Mode{"leaks": check.RepairLeaks, "all": check.RepairAll}[mode]})
				if err != nil || rep == nil || rep.ExitCode() != 0 || len(problems(rep)) != 0 {
					t.Fatalf("check -r %s: %v, findings %v", mode, err, rep)
				}
				if rep.CorruptionsFixed != 0 || rep.LeaksFixed != 0 {
					t.Errorf("check -r %s repaired %d corruptions and %d leaks on a sound image", mode, rep.CorruptionsFixed, rep.LeaksFixed)
				}
				if z := rep.Zoned; z == nil || z.ZeroBeyondWPReclaimed != res.Zoned.ZeroBeyondWP || z.ZeroBeyondWP != 0 {
					t.Errorf("check -r %s: zoned result %+v, want %d zero clusters reclaimed", mode, z, res.Zoned.ZeroBeyondWP)
				}
				if got := guestHash(t, q); got != data {
					t.Errorf("check -r %s changed the data", mode)
				}
				if code, out, _ := zqimg(nil, "zrp", q, "0", nz); code != 0 || out != ri.expected {
					t.Errorf("after check -r %s: zrp\n%s", mode, out)
				}
				again, err := check.CheckPath(q, check.Options{})
				if err != nil || again.ExitCode() != 0 || len(again.Findings) != 0 || again.Zoned.ZeroBeyondWP != 0 {
					t.Errorf("after check -r %s: %v %+v", mode, err, again)
				}
			}
			if got := guestHash(t, p); got != data {
				t.Error("the image changed")
			}
		})
	}
}
