package mount

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

const (
	kib = 1 << 10
	mib = 1 << 20
)

// readImage reads n bytes at off from a closed image.
func readImage(t testing.TB, img string, off, n int64) []byte {
	t.Helper()
	d, err := zone.Open(img, image.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b := make([]byte, n)
	if _, err := d.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func wantLines(t testing.TB, what, got string, want ...string) {
	t.Helper()
	if g := strings.TrimRight(got, "\n"); g != strings.Join(want, "\n") {
		t.Errorf("%s:\n%s\nwant:\n%s", what, g, strings.Join(want, "\n"))
	}
}

// TestToolsWalkthrough drives the mount with dd, cat, printf, truncate,
// stat, df and ls, then checks the image with zqimg zrp, read and check.
func TestToolsWalkthrough(t *testing.T) {
	img, dir := newZoned(t, "20M", "zone.size=4M,zone.capacity=3M,zone.conventional_zones=1,zone.max_open_zones=2")
	tmp := filepath.Dir(dir)
	rnd := make([]byte, 64*kib)
	for i := range rnd {
		rnd[i] = byte(i*13 + i>>8)
	}
	if err := os.WriteFile(filepath.Join(tmp, "rnd"), rnd, 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, tmp, `head -c 524288 /dev/zero | tr '\000' '\253' > ab`)
	p := startMount(t, img, dir)

	wantLines(t, "ls", sh(t, tmp, "ls mnt mnt/cnv mnt/seq"), "mnt:", "cnv", "seq", "", "mnt/cnv:", "0", "", "mnt/seq:", "0", "1", "2", "3")
	sh(t, tmp, "dd if=ab of=mnt/seq/0 bs=64k oflag=append conv=notrunc status=none")
	sh(t, tmp, "cat rnd >> mnt/seq/0")
	if e := shFail(t, tmp, "dd if=rnd of=mnt/seq/0 bs=4k count=1 seek=1 conv=notrunc status=none"); !strings.Contains(e, "Invalid argument") {
		t.Errorf("dd at an offset that is not the end: %s", e)
	}
	shFail(t, tmp, "printf abc >> mnt/seq/0") // EINVAL (dash's printf says "I/O error")
	sh(t, tmp, "dd if=ab of=mnt/seq/1 bs=64k count=2 oflag=append conv=notrunc status=none && truncate -s 0 mnt/seq/1")
	sh(t, tmp, "truncate -s 3M mnt/seq/2")
	if e := shFail(t, tmp, "truncate -s 1000 mnt/seq/0"); !strings.Contains(e, "Invalid argument") {
		t.Errorf("truncate to 1000: %s", e)
	}
	if e := shFail(t, tmp, "truncate -s 0 mnt/cnv/0"); !strings.Contains(e, "Operation not permitted") {
		t.Errorf("truncate of a conventional file: %s", e)
	}
	if e := shFail(t, tmp, "dd if=ab of=mnt/seq/2 bs=4k count=1 oflag=append conv=notrunc status=none"); !strings.Contains(e, "File too large") {
		t.Errorf("write to a full file: %s", e)
	}
	sh(t, tmp, "dd if=rnd of=mnt/cnv/0 bs=1000 seek=5 count=3 conv=notrunc status=none")

	wantLines(t, "stat", sh(t, tmp, "stat -c '%n %s %b %B %A %h %U' mnt/seq/0 mnt/seq/1 mnt/seq/2 mnt/cnv/0 mnt/seq"),
		"mnt/seq/0 589824 6144 512 -rw-r----- 1 root",
		"mnt/seq/1 0 6144 512 -rw-r----- 1 root",
		"mnt/seq/2 3145728 6144 512 -rw-r----- 1 root",
		"mnt/cnv/0 4194304 8192 512 -rw-r----- 1 root",
		"mnt/seq 4 0 512 dr-xr-xr-x 2 root")
	total := int64(4*mib + 4*3*mib)
	used := int64(4*mib + 576*kib + 3*mib)
	wantLines(t, "df", sh(t, tmp, "df -B1 --output=size,used,avail mnt | tail -n 1 | tr -s ' '"),
		fmt.Sprintf(" %d %d %d", total, used, total-used))
	wantLines(t, "stat -f", sh(t, tmp, "stat -f -c '%S %b %f %a %c %d %l' mnt"),
		fmt.Sprintf("512 %d %d %d 7 0 16", total/512, (total-used)/512, (total-used)/512))
	// What was written reads back through the mount.
	got, err := os.ReadFile(filepath.Join(dir, "seq/0"))
	if err != nil || len(got) != 576*kib || !bytes.Equal(got[:512*kib], bytes.Repeat([]byte{0xab}, 512*kib)) || !bytes.Equal(got[512*kib:], rnd) {
		t.Errorf("seq/0 reads %d bytes (%v), not what was written", len(got), err)
	}

	p.umount()
	wantLines(t, "zrp", mustZqimg(t, "zrp", img, "0", "5"),
		"start: 0x0, len 0x2000, cap 0x2000, wptr 0x0, zcond:0, [type: 1]",
		"start: 0x2000, len 0x2000, cap 0x1800, wptr 0x2480, zcond:4, [type: 2]",
		"start: 0x4000, len 0x2000, cap 0x1800, wptr 0x4000, zcond:1, [type: 2]",
		"start: 0x6000, len 0x2000, cap 0x1800, wptr 0x8000, zcond:14, [type: 2]",
		"start: 0x8000, len 0x2000, cap 0x1800, wptr 0x8000, zcond:1, [type: 2]")
	mustZqimg(t, "read", "-q", "-P", "0xab", img, "4M", "512k")
	if r := zqimg(t, "read", "-q", "-P", "0xab", img, "4M", "513k"); r.code == 0 {
		t.Errorf("the byte after the 0xab run is 0xab too:\n%s", r)
	}
	if b := readImage(t, img, 4*mib+512*kib, 64*kib); !bytes.Equal(b, rnd) {
		t.Error("the image does not hold the cat-appended bytes after the dd-appended ones")
	}
	if b := readImage(t, img, 4000, 5000); !bytes.Equal(b[1000:4000], rnd[:3000]) || !bytes.Equal(b[:1000], make([]byte, 1000)) || !bytes.Equal(b[4000:], make([]byte, 1000)) {
		t.Error("the image does not hold the bytes dd wrote into cnv/0 at 5000")
	}
	if r := zqimg(t, "check", img); r.code != 0 || !strings.Contains(r.stdout, "No errors were found on the image.") {
		t.Errorf("check after the walk-through:\n%s", r)
	}
}

// TestConcurrentAppenders runs several processes appending with O_APPEND
// to one file while others write other zones: every record lands whole,
// once, in each writer's order.
func TestConcurrentAppenders(t *testing.T) {
	const writers, records, recSize = 4, 64, 4 * kib
	img, dir := newZoned(t, "64M", "zone.size=16M,zone.max_open_zones=3")
	p := startMount(t, img, dir)
	var wg sync.WaitGroup
	results := make([]result, writers+2)
	start := make(chan struct{})
	for w := 0; w < writers+2; w++ {
		file, id, n := "seq/0", w, records
		if w >= writers {
			file, n = fmt.Sprintf("seq/%d", w-writers+1), 3*records
		}
		cmd := self(t, "appender", filepath.Join(dir, file), fmt.Sprint(id), fmt.Sprint(n), fmt.Sprint(recSize))
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[w] = run(t, cmd)
		}()
	}
	close(start)
	wg.Wait()
	for _, r := range results {
		if r.code != 0 {
			t.Fatal(r)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "seq/0"))
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != writers*records*recSize {
		t.Fatalf("seq/0 holds %d bytes, want %d", len(data), writers*records*recSize)
	}
	next := make([]int, writers)
	for off := 0; off < len(data); off += recSize {
		var w, r int
		if _, err := fmt.Sscanf(string(data[off:off+16]), "W%02d R%06d ", &w, &r); err != nil || w >= writers {
			t.Fatalf("record at %d has header %q", off, data[off:off+16])
		}
		if r != next[w] || !bytes.Equal(data[off:off+recSize], record(w, r, recSize)) {
			t.Fatalf("record at %d: writer %d record %d (want record %d), intact %v", off, w, r, next[w], bytes.Equal(data[off:off+recSize], record(w, r, recSize)))
		}
		next[w]++
	}
	for w := 1; w <= 2; w++ {
		got, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("seq/%d", w)))
		if len(got) != 3*records*recSize || !bytes.Equal(got[:recSize], record(writers+w-1, 0, recSize)) {
			t.Errorf("seq/%d holds %d bytes", w, len(got))
		}
	}
	p.umount()
	wantLines(t, "zrp", mustZqimg(t, "zrp", img, "0", "3"),
		fmt.Sprintf("start: 0x0, len 0x8000, cap 0x8000, wptr 0x%x, zcond:4, [type: 2]", len(data)/512),
		fmt.Sprintf("start: 0x8000, len 0x8000, cap 0x8000, wptr 0x%x, zcond:4, [type: 2]", 0x8000+3*records*recSize/512),
		fmt.Sprintf("start: 0x10000, len 0x8000, cap 0x8000, wptr 0x%x, zcond:4, [type: 2]", 0x10000+3*records*recSize/512))
	if b := readImage(t, img, 0, int64(len(data))); !bytes.Equal(b, data) {
		t.Error("the image differs from what the mount showed")
	}
	if r := zqimg(t, "check", img); r.code != 0 {
		t.Errorf("check:\n%s", r)
	}
}

// TestSignals: SIGTERM unmounts, flushes and releases the image; SIGINT
// with a file still open detaches the mount and still closes the image
// cleanly.
func TestSignals(t *testing.T) {
	for _, tc := range []struct {
		sig      syscall.Signal
		holdOpen bool
	}{{syscall.SIGTERM, false}, {syscall.SIGINT, true}} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			img, dir := newZoned(t, "16M", "zone.size=4M")
			p := startMount(t, img, dir)
			// While mounted, the image is locked for writing.
			if r := zqimg(t, "zrp", img, "0", "1"); r.code == 0 || !strings.Contains(r.stderr, "lock") {
				t.Errorf("zrp while mounted: want a lock failure\n%s", r)
			}
			sh(t, filepath.Dir(dir), "dd if=/dev/zero bs=8k count=3 oflag=append conv=notrunc status=none of=mnt/seq/1")
			var held *os.File
			if tc.holdOpen {
				var err error
				if held, err = os.Open(filepath.Join(dir, "seq/1")); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			if code := p.wait(20 * time.Second); code != 0 {
				t.Fatalf("zqimg mount exited with %d after %v:\n%s", code, tc.sig, p.stderr.String())
			}
			if mounted(dir) {
				t.Errorf("%s still mounted after %v", dir, tc.sig)
			}
			if held != nil {
				if _, err := held.Read(make([]byte, 1)); err == nil {
					t.Error("read from a file of the detached mount succeeded after the server exited")
				}
				held.Close()
				if !strings.Contains(p.stderr.String(), "detaching") {
					t.Errorf("no word of the lazy unmount:\n%s", p.stderr.String())
				}
			} else if p.stderr.Len() != 0 {
				t.Errorf("zqimg mount printed:\n%s", p.stderr.String())
			}
			// Flushed and unlocked: a writer can open it and sees the data.
			wantLines(t, "zrp", mustZqimg(t, "zrp", img, "4M", "1"), "start: 0x2000, len 0x2000, cap 0x2000, wptr 0x2030, zcond:4, [type: 2]")
			if r := zqimg(t, "check", img); r.code != 0 {
				t.Errorf("check:\n%s", r)
			}
		})
	}
}

// TestReadOnlyMount: -r takes the read lock (another reader may open the
// image) and refuses writes.
func TestReadOnlyMount(t *testing.T) {
	img, dir := newZoned(t, "16M", "zone.size=4M")
	mustZqimg(t, "zap", img, "0", "64k")
	p := startMount(t, img, dir, "-r")
	if r := zqimg(t, "io", "-r", "-c", "zrp 0 1", img); r.code != 0 {
		t.Errorf("a reader could not open the image mounted read-only:\n%s", r)
	}
	if r := zqimg(t, "zap", img, "0", "4k"); r.code == 0 || !strings.Contains(r.stderr, "lock") {
		t.Errorf("a writer opened the image mounted read-only:\n%s", r)
	}
	got := sh(t, filepath.Dir(dir), "stat -c %s mnt/seq/0 && cmp -n 65536 mnt/seq/0 /dev/zero 2>&1 || true")
	if !strings.HasPrefix(got, "65536\n") || !strings.Contains(got, "differ") {
		t.Errorf("read-only mount: %q", got)
	}
	if e := shFail(t, filepath.Dir(dir), "dd if=/dev/zero of=mnt/seq/0 bs=4k count=1 oflag=append conv=notrunc status=none"); !strings.Contains(e, "Read-only file system") {
		t.Errorf("write on a read-only mount: %s", e)
	}
	p.umount()
}

// TestMountRefusesPlainImage: a plain image is refused with a message, and
// nothing is mounted.
func TestMountRefusesPlainImage(t *testing.T) {
	tmp := t.TempDir()
	img := filepath.Join(tmp, "plain.qcow2")
	mustZqimg(t, "create", "-q", "-f", "qcow2", img, "16M")
	dir := filepath.Join(tmp, "mnt")
	os.Mkdir(dir, 0o755)
	r := zqimg(t, "mount", img, dir)
	if r.code != 1 || !strings.Contains(r.stderr, "is not a zoned image") || mounted(dir) {
		t.Errorf("mount of a plain image:\n%s", r)
	}
	if out, err := exec.Command("cmp", img, img).CombinedOutput(); err != nil {
		t.Fatal(string(out))
	}
}

// TestMountOptions: -o allow_other reaches the kernel; -o explicit-open
// makes a second sequential file opened for writing fail with EBUSY when
// max_open_zones is 1; unknown options are refused.
func TestMountOptions(t *testing.T) {
	img, dir := newZoned(t, "16M", "zone.size=4M,zone.max_open_zones=1")
	p := startMount(t, img, dir, "-o", "allow_other", "-o", "explicit-open")
	info, _ := os.ReadFile("/proc/self/mountinfo")
	var line string
	for _, l := range strings.Split(string(info), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			line = l
		}
	}
	if !strings.Contains(line, "allow_other") || !strings.Contains(line, "default_permissions") || !strings.Contains(line, "fuse.zqimg") {
		t.Errorf("mountinfo line: %q", line)
	}
	tmp := filepath.Dir(dir)
	if e := shFail(t, tmp, "exec 3>>mnt/seq/0 && exec 4>>mnt/seq/1"); !strings.Contains(e, "busy") {
		t.Errorf("second open for writing with explicit-open: %s", e)
	}
	// One writer at a time is fine, and the zone is explicitly open
	// while its file is.
	sh(t, tmp, "dd if=/dev/zero of=mnt/seq/0 bs=4k count=1 oflag=append conv=notrunc status=none")
	sh(t, tmp, "dd if=/dev/zero of=mnt/seq/1 bs=4k count=1 oflag=append conv=notrunc status=none")
	p.umount()
	wantLines(t, "zrp", mustZqimg(t, "zrp", img, "0", "2"),
		"start: 0x0, len 0x2000, cap 0x2000, wptr 0x8, zcond:4, [type: 2]",
		"start: 0x2000, len 0x2000, cap 0x2000, wptr 0x2008, zcond:4, [type: 2]")
	if r := zqimg(t, "mount", "-o", "errors=repair", img, dir); r.code != 1 || !strings.Contains(r.stderr, "unknown mount option 'errors=repair'") {
		t.Errorf("unknown option:\n%s", r)
	}
}

// TestInjectedFaults: zones made read-only or offline with zqimg
// zone-fault appear as zonefs shows such zones: a read-only file (mode
// without write bits, writes and truncation refused, data readable), an
// offline one (mode 0, size 0, no access).
func TestInjectedFaults(t *testing.T) {
	img, dir := newZoned(t, "16M", "zone.size=4M")
	mustZqimg(t, "zap", img, "4M", "64k")
	mustZqimg(t, "zone-fault", img, "set", "ro", "4M", "4M")
	mustZqimg(t, "zone-fault", img, "set", "offline", "8M", "4M")
	p := startMount(t, img, dir)
	tmp := filepath.Dir(dir)
	got := sh(t, tmp, "stat -c '%a %s' mnt/seq/1 mnt/seq/2 mnt/seq/3")
	if got != "440 65536\n0 0\n640 0\n" {
		t.Errorf("modes and sizes of read-only, offline and healthy zones: %q", got)
	}
	if out := sh(t, tmp, "cmp -n 65536 mnt/seq/1 /dev/zero 2>&1 || true"); !strings.Contains(out, "differ") {
		t.Errorf("the read-only zone does not read its data: %q", out)
	}
	if e := shFail(t, tmp, "dd if=/dev/zero of=mnt/seq/1 bs=4k count=1 oflag=append conv=notrunc status=none"); !strings.Contains(e, "Permission denied") && !strings.Contains(e, "not permitted") {
		t.Errorf("write to the read-only zone: %s", e)
	}
	if e := shFail(t, tmp, "truncate -s 0 mnt/seq/1"); !strings.Contains(e, "not permitted") && !strings.Contains(e, "Permission denied") {
		t.Errorf("reset of the read-only zone: %s", e)
	}
	if e := shFail(t, tmp, "cat mnt/seq/2 > /dev/null"); !strings.Contains(e, "not permitted") && !strings.Contains(e, "Permission denied") {
		t.Errorf("read of the offline zone: %s", e)
	}
	sh(t, tmp, "dd if=/dev/zero of=mnt/seq/3 bs=4k count=1 oflag=append conv=notrunc status=none")
	p.umount()
	if out := mustZqimg(t, "zrp", img, "4M", "3"); !strings.Contains(out, "zcond:13") || !strings.Contains(out, "zcond:15") || !strings.Contains(out, "wptr 0x6008") {
		t.Errorf("zone report after the mount:\n%s", out)
	}
}
