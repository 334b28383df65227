package ioshell

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// TestVectoredCommands: readv, writev, aio_read and aio_write take an
// offset and several lengths and act on their total, one request, with
// read's and write's output; a pattern is checked across the buffers;
// aio_flush succeeds and prints nothing.
func TestVectoredCommands(t *testing.T) {
	d := newDevice(t, "1M", image.Options{})
	var out, errb bytes.Buffer
	s := New(d, &out, &errb)
	for _, line := range []string{
		"writev -P 0x11 512 1k 512",
		"aio_write -P 0x22 4k 1k 3k",
		"aio_flush",
		"readv -P 0x11 512 1k 512",
		"aio_read -P 0x22 4k 4k",
	} {
		if !s.Run(line) {
			t.Fatalf("%s failed: %s %s", line, out.String(), errb.String())
		}
	}
	if s.Run("readv -q -P 0x11 512 1k 1k") {
		t.Errorf("readv past the written range verified the pattern")
	}
	s.Flush()
	got := regexp.MustCompile(`sec \(.*\)`).ReplaceAllString(out.String(), "sec")
	want := `wrote 1536/1536 bytes at offset 512
1.500 KiB, 1 ops; 00.00 sec
wrote 4096/4096 bytes at offset 4096
4 KiB, 1 ops; 00.00 sec
read 1536/1536 bytes at offset 512
1.500 KiB, 1 ops; 00.00 sec
read 4096/4096 bytes at offset 4096
4 KiB, 1 ops; 00.00 sec
Pattern verification failed at offset 512, 2048 bytes
`
	if got != want || errb.Len() != 0 {
		t.Errorf("output:\n%s\nwant:\n%s\nstderr %q", got, want, errb.String())
	}
	buf := make([]byte, 2048)
	if _, err := d.ReadAt(buf, 512); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:1536], bytes.Repeat([]byte{0x11}, 1536)) || !bytes.Equal(buf[1536:], make([]byte, 512)) {
		t.Errorf("writev wrote the wrong bytes")
	}
	out.Reset()
	if s.Run("readv 0") || !bytes.Contains(errb.Bytes(), []byte("bad argument count 1 to readv, expected at least 2 arguments")) {
		t.Errorf("readv 0: stderr %q", errb.String())
	}
}

// TestTerseFailure: a failed request prints qemu-io's failure line on the
// output and, unless Terse (zqimg run as qemu-io), zqimg's explanation on
// the error stream.
func TestTerseFailure(t *testing.T) {
	d := newDevice(t, "1M", image.Options{})
	for _, terse := range []bool{false, true} {
		var out, errb bytes.Buffer
		s := New(d, &out, &errb)
		s.Terse = terse
		if s.Run("write 1M 512") {
			t.Fatalf("write beyond the end succeeded")
		}
		s.Flush()
		if out.String() != "write failed: Input/output error\n" {
			t.Errorf("terse %v: stdout %q", terse, out.String())
		}
		if terse != (errb.Len() == 0) {
			t.Errorf("terse %v: stderr %q", terse, errb.String())
		}
	}
}

// TestVectoredFailure: a failed request of readv/writev/aio_* is reported
// under the command's own name; an aio_ request's failure does not fail
// the command (qemu-io reports it when the request completes, after the
// command returned), a readv/writev one does.
func TestVectoredFailure(t *testing.T) {
	d := newDevice(t, "1M", image.Options{})
	for _, c := range []struct {
		line string
		ok   bool
	}{
		{"writev 1020k 4k 1k", false},
		{"readv 1M 512", false},
		{"aio_write -q 1M 512", true},
		{"aio_read 1M 512", true},
	} {
		var out, errb bytes.Buffer
		s := New(d, &out, &errb)
		s.Terse = true
		if ok := s.Run(c.line); ok != c.ok {
			t.Errorf("%s: ok %v, want %v", c.line, ok, c.ok)
		}
		s.Flush()
		name, _, _ := bytes.Cut([]byte(c.line), []byte(" "))
		if want := string(name) + " failed: Input/output error\n"; out.String() != want {
			t.Errorf("%s: stdout %q, want %q", c.line, out.String(), want)
		}
	}
}

// TestClose: close flushes and closes the image; every later command but
// help and quit fails with qemu-io's "no file open" message.
func TestClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.qcow2")
	testimg.File(t, path, "1M")
	d, err := zone.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	s := New(d, &out, &errb)
	if !s.Run("write -q -P 0x77 0 512") || !s.Run("close") || s.Dev != nil {
		t.Fatalf("write, close: stderr %q", errb.String())
	}
	for _, line := range []string{"read 0 512", "close", "length"} {
		errb.Reset()
		if s.Run(line) || errb.String() != "no file open, try 'help open'\n" {
			t.Errorf("%s after close: stderr %q", line, errb.String())
		}
	}
	if !s.Run("help close") || !s.Run("quit") {
		t.Errorf("help, quit after close failed")
	}
	// The write reached the file: reopen and read it back.
	d2, err := zone.Open(path, image.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	buf := make([]byte, 512)
	if _, err := d2.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, bytes.Repeat([]byte{0x77}, 512)) {
		t.Errorf("after close: read %v, %x...", err, buf[:4])
	}
}

// TestWriteCompressed: write -c stores whole clusters compressed (1 MiB of
// one byte grows the file by far less than 1 MiB) and reads back; a
// misaligned request fails with EINVAL, -f with -c and an offset that is
// not a sector multiple are refused with qemu-io's messages.
func TestWriteCompressed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.qcow2")
	testimg.File(t, path, "4M")
	d, err := zone.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	st0, _ := os.Stat(path)
	var out, errb bytes.Buffer
	s := New(d, &out, &errb)
	s.Terse = true
	if !s.Run("write -c -q -P 0x21 1M 1M") || !s.Run("read -q -P 0x21 1M 1M") {
		t.Fatalf("write -c, read: %s %s", out.String(), errb.String())
	}
	st1, _ := os.Stat(path)
	if grow := st1.Size() - st0.Size(); grow >= 256<<10 {
		t.Errorf("1 MiB compressed write grew the file by %d bytes", grow)
	}
	for _, c := range []struct{ line, want string }{
		{"write -c -q 1k 512", "write failed: Invalid argument\n"},
		{"write -c -q 64k 1000", "1000 is not a sector-aligned value for 'count'\n"},
		{"write -c -q 3 512", "3 is not a sector-aligned value for 'offset'\n"},
		{"write -c -f 0 64k", "-f and -b or -c cannot be specified at the same time\n"},
	} {
		out.Reset()
		if s.Run(c.line) {
			t.Errorf("%s succeeded", c.line)
		}
		s.Flush()
		if out.String() != c.want {
			t.Errorf("%s: stdout %q, want %q", c.line, out.String(), c.want)
		}
	}
}

// TestOpen: open opens an image when none is open (through Shell.Open,
// with -r and -t passed on), refuses a second one and -o options other
// than those zqimg implements, with qemu-io's messages.
func TestOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "o.qcow2")
	testimg.File(t, path, "1M")
	var out, errb bytes.Buffer
	s := New(nil, &out, &errb)
	s.Prog, s.Terse = "qemu-io", true
	var gotRO bool
	var gotCache string
	s.Open = func(r OpenRequest) (Device, error) {
		gotRO, gotCache = r.ReadOnly, r.Cache
		return zone.Open(r.Path, image.Options{ReadOnly: r.ReadOnly})
	}
	for _, c := range []struct{ line, stderr string }{
		{"read 0 512", "no file open, try 'help open'\n"},
		{"open -o driver=vmdk " + path, "qemu-io: can't open device " + path + ": option 'driver=vmdk' is not supported by zqimg\n"},
		{"open -o driver=qcow2,lazy-refcounts=on " + path, "qemu-io: can't open device " + path + ": option 'lazy-refcounts=on' is not supported by zqimg\n"},
		{"open", "bad argument count 0 to open, expected at least 1 arguments\n"},
	} {
		errb.Reset()
		if s.Run(c.line) || errb.String() != c.stderr {
			t.Errorf("%s: stderr %q, want %q", c.line, errb.String(), c.stderr)
		}
	}
	errb.Reset()
	if !s.Run("open -r -t writeback -o driver=qcow2 "+path) || s.Dev == nil || !gotRO || gotCache != "writeback" {
		t.Fatalf("open -r: stderr %q, read-only %v, cache %q", errb.String(), gotRO, gotCache)
	}
	defer func() { s.Dev.Close() }()
	if s.Run("open "+path) || errb.String() != "qemu-io: file open already, try 'help close'\n" {
		t.Errorf("second open: stderr %q", errb.String())
	}
	errb.Reset()
	if s.Run("write 0 512") || errb.String() != "qemu-io: Block node is read-only\n" {
		t.Errorf("write after open -r: stderr %q", errb.String())
	}
	if !s.Run("read -q 0 512") {
		t.Errorf("read after open failed: %q", errb.String())
	}
}

// TestOpenBackingDriver: open -o backing.driver=FORMAT passes the backing
// file's format to Open (iotest 114), beside driver=qcow2; other options
// are still refused.
func TestOpenBackingDriver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "o.qcow2")
	testimg.File(t, path, "1M")
	var out, errb bytes.Buffer
	s := New(nil, &out, &errb)
	s.Prog, s.Terse = "qemu-io", true
	var got OpenRequest
	s.Open = func(o OpenRequest) (Device, error) {
		got = o
		return zone.Open(o.Path, image.Options{ReadOnly: o.ReadOnly, BackingFormat: o.BackingFormat})
	}
	if s.Run("open -o backing.driver=raw,no-such-option=on " + path) {
		t.Fatal("an unsupported option was accepted")
	}
	if !s.Run("open -r -o driver=qcow2,backing.driver=qcow2 "+path) || s.Dev == nil {
		t.Fatalf("open: stderr %q", errb.String())
	}
	defer s.Dev.Close()
	if got.BackingFormat != "qcow2" || !got.ReadOnly {
		t.Errorf("Open got %+v", got)
	}
}
