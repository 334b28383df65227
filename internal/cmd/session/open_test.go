package session

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/internal/cmdutil"
	"github.com/zqimg/zqimg/internal/ioshell"
	"github.com/zqimg/zqimg/internal/testimg"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// runQemuIO runs a qemu-io session with args and returns its exit status,
// standard output and standard error.
func runQemuIO(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ios := &cmdutil.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errb, Prog: "qemu-io"}
	cmd := NewCmdIO(ios, nil)
	cmd.SilenceErrors = true
	cmd.SetArgs(args)
	err := cmd.Execute()
	return exitCode(err), out.String(), errb.String()
}

// TestSnapshotMode: with -s, writes go to a temporary overlay: the session
// reads them back, the image is not changed (byte for byte), and no
// temporary file is left in $TMPDIR (QEMU's iotest 052).
func TestSnapshotMode(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	path := filepath.Join(t.TempDir(), "s.qcow2")
	testimg.File(t, path, "4M")
	if code, _, errb := runQemuIO(t, "-c", "write -q -P 0x11 0 4M", path); code != 0 {
		t.Fatalf("write: %s", errb)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errb := runQemuIO(t, "-s", "-c", "read -q -P 0x11 0 4M", "-c", "write -q -P 0x22 1M 2M", "-c", "read -q -P 0x22 1M 2M", "-c", "read -q -P 0x11 0 1M", "-c", "truncate 8M", "-c", "length", path)
	if code != 0 || out != "8 MiB\n" || errb != "" {
		t.Fatalf("-s session: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("the image changed in snapshot mode")
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("left in TMPDIR: %v", ents)
	}
	if code, _, errb := runQemuIO(t, "-r", "-c", "read -q -P 0x11 0 4M", path); code != 0 {
		t.Errorf("data after -s: %s", errb)
	}
	// open -s does the same.
	code, out, errb = runQemuIO(t, "-c", "open -s "+path, "-c", "write -q -P 0x33 0 4M", "-c", "read -q -P 0x33 0 4M", "-c", "close", "-c", "open -r "+path, "-c", "read -q -P 0x11 0 4M")
	if code != 0 || out != "" || errb != "" {
		t.Errorf("open -s: exit %d, stdout %q, stderr %q", code, out, errb)
	}
}

// TestSnapshotModeLocks: in snapshot mode the image is only read: another
// reader may share it, a writer may not.
func TestSnapshotModeLocks(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	path := filepath.Join(t.TempDir(), "l.qcow2")
	testimg.File(t, path, "1M")
	dev, err := openDevice(ioOpen(path, true))
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	r, err := zone.Open(path, image.Options{ReadOnly: true})
	if err != nil {
		t.Errorf("a reader beside snapshot mode: %v", err)
	} else {
		r.Close()
	}
	if w, err := zone.Open(path, image.Options{}); err == nil {
		w.Close()
		t.Errorf("a writer was let in beside snapshot mode")
	}
}

// TestSnapshotModeZoned: a zoned image cannot be the backing file of the
// overlay: snapshot mode refuses it, and nothing is written.
func TestSnapshotModeZoned(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	path := testimg.Zoned(t, "4M", "zone.size=1M")
	code, _, errb := runQemuIO(t, "-s", "-c", "zap 0 4k", path)
	if code != 1 || !strings.Contains(errb, "a zoned image cannot be a backing file") {
		t.Errorf("exit %d, stderr %q", code, errb)
	}
}

// TestOpenNested: open -o driver=qcow2,file.driver=qcow2,file.file.filename=X
// opens the qcow2 image stored as the guest data of the qcow2 image X
// (QEMU's iotest 072).
func TestOpenNested(t *testing.T) {
	dir := t.TempDir()
	inner := filepath.Join(dir, "inner.qcow2")
	testimg.File(t, inner, "1M")
	if code, _, errb := runQemuIO(t, "-c", "write -q -P 0x42 0 512", "-c", "write -q -P 0x23 512 512", inner); code != 0 {
		t.Fatal(errb)
	}
	data, err := os.ReadFile(inner)
	if err != nil {
		t.Fatal(err)
	}
	outer := filepath.Join(dir, "outer.qcow2")
	testimg.File(t, outer, "4M")
	d, err := zone.Open(outer, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	code, out, errb := runQemuIO(t, "-c", "open -o driver=qcow2,file.driver=qcow2,file.file.filename="+outer,
		"-c", "read -q -P 0x42 0 512", "-c", "read -q -P 0x23 512 512", "-c", "length", "-c", "write -q -P 0x66 1024 512", "-c", "read -q -P 0x66 1024 512")
	if code != 0 || out != "1 MiB\n" || errb != "" {
		t.Errorf("nested: exit %d, stdout %q, stderr %q", code, out, errb)
	}
}

// ioOpen is the request of qemu-io's command line for path.
func ioOpen(path string, snapshot bool) ioshell.OpenRequest {
	return ioshell.OpenRequest{Path: path, Snapshot: snapshot, Cache: "writethrough"}
}

// TestBackingDriverOverride: an image naming an unknown backing format is
// refused with qemu's wording, and -o backing.driver=qcow2 opens it
// (QEMU's iotest 114); a missing backing file is worded as qemu's too
// (iotest 069).
func TestBackingDriverOverride(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	testimg.File(t, base, "1M")
	if code, _, errb := runQemuIO(t, "-c", "write -q -P 0x5c 0 64k", base); code != 0 {
		t.Fatal(errb)
	}
	top := filepath.Join(dir, "top.qcow2")
	testimg.File(t, top, "1M", "backing_file="+base, "backing_fmt=qcow2")
	img, err := image.Open(top, image.Options{NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.SetBacking(base, "foo"); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	code, _, errb := runQemuIO(t, "-c", "read -q 0 4k", top)
	if want := "qemu-io: can't open device " + top + ": Could not open backing file: Unknown driver 'foo'\n"; code != 1 || errb != want {
		t.Errorf("unknown backing driver: exit %d, stderr %q, want %q", code, errb, want)
	}
	code, _, errb = runQemuIO(t, "-c", "open "+top)
	if want := "qemu-io: can't open device " + top + ": Could not open backing file: Unknown driver 'foo'\n"; code != 1 || errb != want {
		t.Errorf("open, unknown backing driver: exit %d, stderr %q, want %q", code, errb, want)
	}
	code, out, errb := runQemuIO(t, "-c", "open -o backing.driver=qcow2 "+top, "-c", "read -q -P 0x5c 0 64k", "-c", "reopen -o backing.driver=qcow2")
	if code != 0 || out != "" || errb != "" {
		t.Errorf("backing.driver=qcow2: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	if err := os.Remove(base); err != nil {
		t.Fatal(err)
	}
	want := "qemu-io: can't open device " + top + ": Could not open backing file: Could not open '" + base + "': No such file or directory\n"
	code, _, errb = runQemuIO(t, "-c", "open -o backing.driver=qcow2 "+top)
	if code != 1 || errb != want {
		t.Errorf("open, missing backing file: exit %d, stderr %q, want %q", code, errb, want)
	}
}

// TestRawFormat: qemu-io -f raw (and open -o driver=raw, driver=file, or
// host_device on a character device) opens a raw file: reads and writes go
// to its bytes, map reports everything allocated, truncate sets its length,
// zone commands and compressed writes are refused (QEMU's iotests 107,
// 226, 287).
func TestRawFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.raw")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errb := runQemuIO(t, "-f", "raw", "-c", "write -q -P 0xfa 4k 8k", "-c", "read -q -P 0xfa 4k 8k", "-c", "write -q -z -u 0 4k", "-c", "map", "-c", "truncate 2M", "-c", "length", path)
	if code != 0 || errb != "" || out != "1 MiB (0x100000) bytes     allocated at offset 0 bytes (0x0)\n2 MiB\n" {
		t.Errorf("-f raw: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 2<<20 || data[4096] != 0xfa || data[12287] != 0xfa || data[12288] != 0 {
		t.Errorf("file: %d bytes, %x %x %x", len(data), data[4096], data[12287], data[12288])
	}
	code, out, errb = runQemuIO(t, "-c", "open -r -o driver=file,filename="+path, "-c", "read -q -P 0xfa 4k 8k", "-c", "zrp 0 1", "-c", "write -c 0 64k")
	if code != 1 || out != "zone report failed: Operation not supported\n" || errb != "qemu-io: Block node is read-only\n" {
		t.Errorf("driver=file: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	code, out, errb = runQemuIO(t, "-c", "open -o driver=raw "+path, "-c", "write -c 0 64k", "-c", "read -q -P 0 2M 512")
	if code != 1 || out != "write failed: Operation not supported\nread failed: Input/output error\n" || errb != "" {
		t.Errorf("driver=raw: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	code, out, errb = runQemuIO(t, "-c", "open -o driver=host_device,filename=/dev/null,locking=off", "-c", "length")
	if code != 0 || out != "0 bytes\n" || errb != "" {
		t.Errorf("host_device /dev/null: exit %d, stdout %q, stderr %q", code, out, errb)
	}
}

// TestNullCoJSON: qemu-io -f null-co json:{...} opens a null-co device;
// reopen without options keeps it; info prints qemu-io's lines and fails
// (QEMU's iotest 133).
func TestNullCoJSON(t *testing.T) {
	code, out, errb := runQemuIO(t, "-f", "null-co", "-c", "reopen", "-c", "info", "-c", "read -q 0 4k", "json:{'driver': 'null-co', 'size': 65536}")
	if code != 1 || out != "format name: null-co\nformat name: null-co\n" || errb != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errb)
	}
	code, out, errb = runQemuIO(t, "-c", "length", "json:{'driver': 'null-co', 'size': 1M")
	if code != 1 || out != "" || !strings.HasPrefix(errb, "qemu-io: can't open device json:{'driver': 'null-co', 'size': 1M: Could not parse the JSON options: ") {
		t.Errorf("broken json: exit %d, stdout %q, stderr %q", code, out, errb)
	}
}

// TestJSONBackingNull: json:{..., 'backing': null} opens an overlay
// without its backing file: unallocated clusters read as zeroes (QEMU's
// iotest 089).
func TestJSONBackingNull(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	testimg.File(t, base, "1M")
	if code, _, errb := runQemuIO(t, "-c", "write -q -P 0x5c 0 1M", base); code != 0 {
		t.Fatal(errb)
	}
	top := filepath.Join(dir, "top.qcow2")
	testimg.File(t, top, "1M", "backing_file="+base, "backing_fmt=qcow2")
	if code, _, errb := runQemuIO(t, "-c", "write -q -P 0x11 0 64k", top); code != 0 {
		t.Fatal(errb)
	}
	code, out, errb := runQemuIO(t, "-c", "read -q -P 0x11 0 64k", "-c", "read -q -P 0 64k 64k",
		"json:{'driver': 'qcow2', 'file': {'driver': 'file', 'filename': '"+top+"'}, 'backing': null}")
	if code != 0 || out != "" || errb != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errb)
	}
	code, _, errb = runQemuIO(t, "-c", "read -q -P 0x5c 64k 64k", "json:{'driver': 'qcow2', 'file': {'driver': 'file', 'filename': '"+top+"'}}")
	if code != 0 {
		t.Errorf("with its backing file: %s", errb)
	}
}

// TestCompressFilter: --image-opts driver=compress,file.driver=qcow2,...
// (or the same as json:) stores every write as compressed clusters, the
// write widened to whole clusters with the bytes around it kept (QEMU's
// iotest 214).
func TestCompressFilter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.qcow2")
	testimg.File(t, path, "2M")
	code, out, errb := runQemuIO(t, "--image-opts", "-c", "write -q -P 0xbb 0 224k",
		"driver=compress,file.driver=qcow2,file.file.driver=file,file.file.filename="+path)
	if code != 0 || out != "" || errb != "" {
		t.Fatalf("--image-opts: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	code, out, errb = runQemuIO(t, "-c", "write -q -P 0xcc 272k 224k",
		"json:{'driver': 'compress', 'file': {'driver': 'qcow2', 'file': {'driver': 'file', 'filename': '"+path+"'}}}")
	if code != 0 || out != "" || errb != "" {
		t.Fatalf("json: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	code, _, errb = runQemuIO(t, "-r", "-c", "read -q -P 0xbb 0 224k", "-c", "read -q -P 0 224k 48k", "-c", "read -q -P 0xcc 272k 224k", "-c", "read -q -P 0 496k 16k", path)
	if code != 0 {
		t.Fatalf("read back: %s", errb)
	}
	d, err := zone.Open(path, image.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for off := int64(0); off < 512<<10; off += 64 << 10 {
		x, err := d.Image().BlockStatus(off, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		if x.Kind != image.Compressed {
			t.Errorf("cluster at %d: %v, want compressed", off, x.Kind)
		}
	}
}

// TestBlkdebugName: a blkdebug:CONFIG:FILE name on the command line opens
// FILE when CONFIG holds no rules.
func TestBlkdebugName(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.qcow2")
	testimg.File(t, path, "1M")
	code, out, errb := runQemuIO(t, "-c", "write -q -P 0x7 0 4k", "-c", "read -q -P 0x7 0 4k", "blkdebug::"+path)
	if code != 0 || out != "" || errb != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errb)
	}
}

// TestBlkdebugInjectL2Update: a blkdebug:CONFIG:FILE name whose rule
// injects an error on l2_update fails a write that must write an L2 table
// back, with the rule's errno, and the image stays consistent (it opens
// and reads afterwards); a write that changes no L2 table succeeds (QEMU's
// iotest 179).
func TestBlkdebugInjectL2Update(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "i.qcow2")
	testimg.File(t, path, "4M")
	if code, _, errb := runQemuIO(t, "-c", "write -q -z -u 1M 1M", path); code != 0 {
		t.Fatal(errb)
	}
	conf := filepath.Join(dir, "b.conf")
	if err := os.WriteFile(conf, []byte("[inject-error]\nevent = \"l2_update\"\nerrno = \"5\"\nimmediately = \"on\"\nonce = \"off\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	name := "blkdebug:" + conf + ":" + path
	code, out, errb := runQemuIO(t, "-c", "write -q -z -u 1M 1M", name)
	if code != 0 || out != "" || errb != "" {
		t.Errorf("a write that changes no L2 table: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	code, out, _ = runQemuIO(t, "-c", "write -q -P 0x11 0 64k", name)
	if code != 1 || out != "write failed: Input/output error\n" {
		t.Errorf("a write that allocates: exit %d, stdout %q", code, out)
	}
	if code, _, errb := runQemuIO(t, "-c", "read -q 0 64k", "-c", "read -q -P 0 1M 1M", path); code != 0 {
		t.Errorf("the image after the injected error: %s", errb)
	}
}
