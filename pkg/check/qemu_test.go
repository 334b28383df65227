package check_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/internal/cmd/root"
	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
)

// requireQemu returns the paths of stock qemu-img and qemu-io; the test
// is skipped without them, unless ZQIMG_REQUIRE_QEMU=1.
func requireQemu(t *testing.T) (qemuImg, qemuIO string) {
	t.Helper()
	var err error
	if qemuImg, err = exec.LookPath("qemu-img"); err == nil {
		qemuIO, err = exec.LookPath("qemu-io")
	}
	if err != nil {
		if os.Getenv("ZQIMG_REQUIRE_QEMU") == "1" {
			t.Fatalf("qemu-img and qemu-io are required (ZQIMG_REQUIRE_QEMU=1): %v", err)
		}
		t.Skipf("qemu-img or qemu-io not found: %v", err)
	}
	return qemuImg, qemuIO
}

// runCmd runs a command and returns its stdout, stderr and exit status.
func runCmd(t *testing.T, name string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s %v: %v", name, args, err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errb.String(), code
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, errs, code := runCmd(t, name, args...); code != 0 {
		t.Fatalf("%s %v: exit %d\n%s%s", name, args, code, out, errs)
	}
}

// zqimg runs the zqimg command line in-process.
func zqimg(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := root.Main(args, strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), code
}

// qemuCheck is qemu-img check --output=json.
type qemuCheck struct {
	ImageEndOffset     int64 `json:"image-end-offset"`
	CompressedClusters int64 `json:"compressed-clusters"`
	TotalClusters      int64 `json:"total-clusters"`
	Corruptions        int64 `json:"corruptions"`
	CorruptionsFixed   int64 `json:"corruptions-fixed"`
	CheckErrors        int64 `json:"check-errors"`
	Leaks              int64 `json:"leaks"`
	LeaksFixed         int64 `json:"leaks-fixed"`
	AllocatedClusters  int64 `json:"allocated-clusters"`
	FragmentedClusters int64 `json:"fragmented-clusters"`
	exit               int
	out                string
}

func (q qemuCheck) String() string {
	return fmt.Sprintf("exit=%d corruptions=%d leaks=%d check-errors=%d fixed=%d/%d allocated=%d/%d fragmented=%d compressed=%d end=%d",
		q.exit, q.Corruptions, q.Leaks, q.CheckErrors, q.CorruptionsFixed, q.LeaksFixed, q.AllocatedClusters, q.TotalClusters,
		q.FragmentedClusters, q.CompressedClusters, q.ImageEndOffset)
}

func qemuJSON(t *testing.T, qemuImg string, args ...string) qemuCheck {
	t.Helper()
	out, errs, code := runCmd(t, qemuImg, append([]string{"check", "--output=json"}, args...)...)
	var q qemuCheck
	if strings.TrimSpace(out) != "" {
		if err := json.Unmarshal([]byte(out), &q); err != nil {
			t.Fatalf("qemu-img check %v: %v\n%s%s", args, err, out, errs)
		}
	}
	q.exit, q.out = code, out+errs
	return q
}

func zqimgJSON(t *testing.T, args ...string) qemuCheck {
	t.Helper()
	out, errs, code := zqimg(append([]string{"check", "--output=json"}, args...)...)
	var q qemuCheck
	if strings.TrimSpace(out) != "" {
		if err := json.Unmarshal([]byte(out), &q); err != nil {
			t.Fatalf("zqimg check %v: %v\n%s%s", args, err, out, errs)
		}
	}
	q.exit, q.out = code, out+errs
	return q
}

// recipe makes an image with stock qemu tools in dir.
type recipe struct {
	name string
	make func(t *testing.T, qemuImg, qemuIO, path string)
}

func qemuRecipes(dir string) []recipe {
	create := func(opts, size string, ios ...string) func(*testing.T, string, string, string) {
		return func(t *testing.T, qi, qio, p string) {
			args := []string{"create", "-q", "-f", "qcow2"}
			if opts != "" {
				args = append(args, "-o", opts)
			}
			mustRun(t, qi, append(args, p, size)...)
			if len(ios) > 0 {
				var a []string
				for _, c := range ios {
					a = append(a, "-c", c)
				}
				mustRun(t, qio, append(a, p)...)
			}
		}
	}
	writes := []string{"write -P 1 0 1M", "write -P 2 10M 192k", "write -P 3 33M 64k", "write -P 4 5M 4k"}
	return []recipe{
		{"c64k", create("", "64M", writes...)},
		{"c512-rc1", create("cluster_size=512,refcount_bits=1", "16M", "write -P 1 0 64k", "write -P 2 1M 8k", "write -P 3 9M 4k")},
		{"c4k-rc8", create("cluster_size=4k,refcount_bits=8", "32M", "write -P 1 0 256k", "write -P 2 10M 64k", "write -P 3 20M 12k")},
		{"c2m-rc64", create("cluster_size=2M,refcount_bits=64", "64M", "write -P 1 0 3M", "write -P 2 32M 1M")},
		{"v2", create("compat=0.10", "64M", writes...)},
		{"extl2", create("extended_l2=on", "64M", "write -P 1 0 4k", "write -P 2 64k 8k", "write -P 3 1M 128k", "write -z 2M 64k")},
		{"zero-alloc", create("", "64M", "write -P 1 0 512k", "write -z 64k 128k", "write -P 5 8M 64k", "discard 8M 64k")},
		{"compressed", func(t *testing.T, qi, qio, p string) {
			src := filepath.Join(dir, "src.raw")
			b := make([]byte, 4<<20)
			for i := range b {
				switch {
				case i < 1<<20:
					b[i] = byte(i*7 + i>>9)
				case i < 3<<20:
					b[i] = 'a' + byte(i>>16)
				default:
					b[i] = byte(i * 13)
				}
			}
			if err := os.WriteFile(src, b, 0o644); err != nil {
				t.Fatal(err)
			}
			mustRun(t, qi, "convert", "-q", "-c", "-O", "qcow2", src, p)
			mustRun(t, qio, "-c", "write -P 9 1M 64k", "-c", "write -P 8 3M 128k", p)
		}},
		{"snapshots", func(t *testing.T, qi, qio, p string) {
			create("", "64M", "write -P 1 0 1M", "write -P 2 10M 128k")(t, qi, qio, p)
			mustRun(t, qi, "snapshot", "-c", "s1", p)
			mustRun(t, qio, "-c", "write -P 3 0 128k", "-c", "write -P 4 20M 64k", p)
			mustRun(t, qi, "snapshot", "-c", "s2", p)
			mustRun(t, qio, "-c", "write -P 5 64k 64k", p)
		}},
		{"lazy-dirty", func(t *testing.T, qi, qio, p string) {
			create("lazy_refcounts=on", "64M")(t, qi, qio, p)
			// The process dies before it can mark the image clean.
			runCmd(t, qio, "-c", "write -P 1 0 1M", "-c", "write -P 2 10M 128k", "-c", "sigraise 9", p)
		}},
		{"bitmaps", func(t *testing.T, qi, qio, p string) {
			create("", "64M")(t, qi, qio, p)
			mustRun(t, qi, "bitmap", "--add", p, "b0")
			mustRun(t, qio, "-c", "write -P 1 0 1M", "-c", "write -P 2 30M 64k", p)
		}},
	}
}

// fault is an injected inconsistency.
type fault struct {
	name   string
	inject func(t *testing.T, r *raw) bool // false: does not apply
}

// dataGC returns the first guest cluster whose active L2 entry is a
// normal cluster with OFLAG_COPIED set (copied) or not.
func dataGC(r *raw, copied bool) (uint64, bool) {
	n := r.h.L2Entries()
	for i := uint64(0); i < uint64(r.h.L1Size); i++ {
		l2 := r.l1(i) & image.L1OffsetMask
		if l2 == 0 || l2+r.cs() > uint64(len(r.b)) {
			continue
		}
		for j := uint64(0); j < n; j++ {
			e := r.u64(l2 + j*(r.cs()/n))
			if e&image.OflagCompressed != 0 || e&image.L2OffsetMask == 0 || (e&image.OflagCopied != 0) != copied {
				continue
			}
			return i*n + j, true
		}
	}
	return 0, false
}

var faults = []fault{
	{"none", func(t *testing.T, r *raw) bool { return true }},
	{"leak", func(t *testing.T, r *raw) bool {
		gc, ok := dataGC(r, true)
		if !ok || r.h.RefcountOrder == 0 {
			return false
		}
		r.setRefcount(r.hostCluster(gc), 2)
		return true
	}},
	{"refcount-0", func(t *testing.T, r *raw) bool {
		gc, ok := dataGC(r, true)
		if !ok {
			return false
		}
		r.setRefcount(r.hostCluster(gc), 0)
		return true
	}},
	{"refcount-too-low", func(t *testing.T, r *raw) bool {
		gc, ok := dataGC(r, false)
		if !ok || r.refcount(r.hostCluster(gc)) < 2 {
			return false
		}
		r.setRefcount(r.hostCluster(gc), r.refcount(r.hostCluster(gc))-1)
		return true
	}},
	{"copied-cleared", func(t *testing.T, r *raw) bool {
		gc, ok := dataGC(r, true)
		if !ok {
			return false
		}
		r.setL2(gc, r.l2(gc)&^image.OflagCopied)
		return true
	}},
	{"l2-unaligned", func(t *testing.T, r *raw) bool {
		gc, ok := dataGC(r, true)
		if !ok || r.cs() < 1024 {
			return false
		}
		r.setL2(gc, r.l2(gc)+r.cs()/2)
		return true
	}},
	{"l2-past-eof", func(t *testing.T, r *raw) bool {
		gc, ok := dataGC(r, true)
		if !ok {
			return false
		}
		end := (uint64(len(r.b)) + 10*r.cs()) &^ (r.cs() - 1)
		r.setL2(gc, r.l2(gc)&^image.L2OffsetMask|end)
		return true
	}},
	{"l1-unaligned", func(t *testing.T, r *raw) bool {
		r.put64(r.l1Off(0), r.l1(0)+512)
		return r.l1(0)&image.L1OffsetMask != 512 && r.cs() > 512
	}},
	{"truncated", func(t *testing.T, r *raw) bool {
		r.b = r.b[:len(r.b)*2/3]
		return true
	}},
}

// TestAgainstQemu makes images with stock qemu-img, injects faults, and
// requires zqimg check to report what qemu-img check reports: the same
// output (stdout and stderr, line for line), counts, statistics, image end
// offset and exit status; after zqimg check -r all, qemu-img check finds
// the image clean; after qemu-img check -r all, zqimg check agrees with
// qemu-img check on the result.
func TestAgainstQemu(t *testing.T) {
	qi, qio := requireQemu(t)
	dir := t.TempDir()
	for _, rc := range qemuRecipes(dir) {
		base := filepath.Join(dir, rc.name+".base.qcow2")
		rc.make(t, qi, qio, base)
		orig, err := os.ReadFile(base)
		if err != nil {
			t.Fatal(err)
		}
		for _, ft := range faults {
			t.Run(rc.name+"/"+ft.name, func(t *testing.T) {
				r := rawOf(t, append([]byte(nil), orig...))
				if !ft.inject(t, r) {
					t.Skip("fault does not apply to this image")
				}
				img := filepath.Join(dir, rc.name+"."+ft.name+".qcow2")
				write := func(name string) string {
					p := filepath.Join(dir, name)
					if err := os.WriteFile(p, r.b, 0o644); err != nil {
						t.Fatal(err)
					}
					return p
				}
				write(filepath.Base(img))

				// The same report, line for line.
				qout, qerr, qcode := runCmd(t, qi, "check", img)
				zout, zerr, zcode := zqimg("check", img)
				qerr = strings.ReplaceAll(qerr, "qemu-img: ", "zqimg: ")
				if qcode != zcode || qout != zout || qerr != zerr {
					t.Errorf("qemu-img check (exit %d):\n%s%s\nzqimg check (exit %d):\n%s%s", qcode, qout, qerr, zcode, zout, zerr)
				}
				q := qemuJSON(t, qi, img)
				z := zqimgJSON(t, img)
				if q.String() != z.String() || strings.ReplaceAll(q.out, "qemu-img: ", "zqimg: ") != z.out {
					t.Errorf("--output=json differs:\nqemu-img %v\n%s\nzqimg    %v\n%s", q, q.out, z, z.out)
				}
				res, err := check.CheckPath(img, check.Options{})
				if err == nil && res != nil && (res.Corruptions != q.Corruptions || res.Leaks != q.Leaks ||
					res.AllocatedClusters != q.AllocatedClusters || res.FragmentedClusters != q.FragmentedClusters ||
					res.CompressedClusters != q.CompressedClusters || res.ImageEndOffset != q.ImageEndOffset || res.ExitCode() != q.exit) {
					t.Errorf("library result differs from qemu-img: %v\n%s", q, report(res))
				}

				// -r leaks: the same repairs and the same report.
				l1, l2 := write("leaks-q.qcow2"), write("leaks-z.qcow2")
				qout, qerr, qcode = runCmd(t, qi, "check", "-r", "leaks", l1)
				zout, zerr, zcode = zqimg("check", "-r", "leaks", l2)
				qerr = strings.ReplaceAll(qerr, "qemu-img: ", "zqimg: ")
				qerr = strings.ReplaceAll(qerr, "Check failed: Input/output error", "Check failed: "+check.ErrNeedRebuild.Error())
				qerr = strings.ReplaceAll(qerr, l1, l2)
				if qcode != zcode || qout != zout || qerr != zerr {
					t.Errorf("check -r leaks: qemu-img (exit %d):\n%s%s\nzqimg (exit %d):\n%s%s", qcode, qout, qerr, zcode, zout, zerr)
				}

				if q.exit == 1 && strings.Contains(q.out, "Could not open") {
					return // nothing to repair: neither can open it
				}
				// zqimg -r all, then qemu-img finds the image clean.
				za := write("all-z.qcow2")
				zout, zerr, zcode = zqimg("check", "-r", "all", za)
				if after := qemuJSON(t, qi, za); after.exit != 0 || zcode != 0 {
					t.Errorf("after zqimg check -r all (exit %d):\n%s%s\nqemu-img check: %v\n%s", zcode, zout, zerr, after, after.out)
				}

				// qemu-img -r all, then zqimg agrees with qemu-img.
				qa := write("all-q.qcow2")
				runCmd(t, qi, "check", "-r", "all", qa)
				qafter := qemuJSON(t, qi, qa)
				zafter := zqimgJSON(t, qa)
				if qafter.String() != zafter.String() {
					t.Errorf("after qemu-img check -r all:\nqemu-img %v\n%s\nzqimg    %v\n%s", qafter, qafter.out, zafter, zafter.out)
				}
			})
		}
	}
}

// fullImage makes a 4 GiB image whose every cluster is allocated
// (preallocated metadata: sparse on disk) with stock qemu-img.
func fullImage(b *testing.B, opts string) string {
	b.Helper()
	qi, err := exec.LookPath("qemu-img")
	if err != nil {
		b.Skip("qemu-img not found")
	}
	p := filepath.Join(b.TempDir(), "full.qcow2")
	if out, err := exec.Command(qi, "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata"+opts, p, "4G").CombinedOutput(); err != nil {
		b.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	return p
}

func benchCheck(b *testing.B, opts string) {
	p := fullImage(b, opts)
	for b.Loop() {
		res, err := check.CheckPath(p, check.Options{})
		if err != nil || !res.Clean() || res.AllocatedClusters != res.TotalClusters {
			b.Fatalf("%v\n%s", err, report(res))
		}
	}
}

func benchQemuCheck(b *testing.B, opts string) {
	p := fullImage(b, opts)
	for b.Loop() {
		if out, err := exec.Command("qemu-img", "check", p).CombinedOutput(); err != nil {
			b.Fatalf("qemu-img check: %v\n%s", err, out)
		}
	}
}

// BenchmarkCheck4G checks a fully allocated 4 GiB image (64 KiB clusters);
// BenchmarkQemuImgCheck4G runs stock qemu-img check on the same image.
func BenchmarkCheck4G(b *testing.B)        { benchCheck(b, "") }
func BenchmarkQemuImgCheck4G(b *testing.B) { benchQemuCheck(b, "") }

// The same with 4 KiB clusters (a million clusters, 2048 L2 tables).
func BenchmarkCheck4G4k(b *testing.B)        { benchCheck(b, ",cluster_size=4k") }
func BenchmarkQemuImgCheck4G4k(b *testing.B) { benchQemuCheck(b, ",cluster_size=4k") }
