package ioshell

import (
	"bytes"
	"regexp"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
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
