package interop

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestArgv0AgainstStock: zqimg run through links named qemu-img and
// qemu-io (as QEMU's iotests run it, see scripts/iotests.sh) prints what
// the stock programs print: the "qemu-io> " prompt before each command
// read from standard input, messages prefixed "qemu-io: " or "qemu-img: ",
// qemu-io's --aio/-i modes accepted (an unknown one refused), and the same
// exit status.
func TestArgv0AgainstStock(t *testing.T) {
	requireQemu(t)
	bin := t.TempDir()
	for _, name := range []string{"qemu-img", "qemu-io"} {
		if err := os.Symlink(zqimgBin, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	stockImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Fatal(err)
	}
	stock := filepath.Dir(stockImg)
	zqWork, stockWork := t.TempDir(), t.TempDir()
	script := "write -q -P 0x5a 0 4k\nread -q -P 0x5a 0 4k\nread -q -P 0x11 0 512\nbogus\nlength\n"
	for _, c := range []struct {
		name  string
		args  []string
		stdin string
	}{
		{"qemu-img", []string{"create", "-q", "-f", "qcow2", "x.qcow2", "1M"}, ""},
		{"qemu-io", []string{"--aio", "threads", "-f", "qcow2", "x.qcow2"}, script},
		{"qemu-io", []string{"--aio", "io_uring", "x.qcow2"}, script},
		{"qemu-io", []string{"-i", "threads", "-t", "writeback", "-c", "read -q -P 0x5a 0 4k", "-c", "bogus", "x.qcow2"}, ""},
		{"qemu-io", []string{"-i", "posix", "-c", "read 0 512", "x.qcow2"}, ""},
		{"qemu-io", []string{"-d", "trim", "-c", "read 0 512", "x.qcow2"}, ""},
		{"qemu-io", []string{"--aio", "native", "-c", "read 0 512", "x.qcow2"}, ""},
		{"qemu-io", []string{"-c", "write -q 1M 512", "-c", "writev -q 1020k 4k 1k", "x.qcow2"}, ""},
		{"qemu-io", []string{"-c", "readv -q -P 0x5a 0 1k 3k", "-c", "aio_write -q 1M 4k", "-c", "aio_flush", "x.qcow2"}, ""},
		{"qemu-io", []string{"-c", "write -q -P 0x66 8k 4k", "-c", "close", "-c", "read 0 512", "-c", "close", "x.qcow2"}, ""},
		{"qemu-io", []string{"-c", "read -q -P 0x66 8k 4k", "-c", "c", "x.qcow2"}, ""},
		{"qemu-io", []string{"-c", "write -c -q -P 0x21 64k 128k", "-c", "read -q -P 0x21 64k 128k", "-c", "write -c -q 1k 512",
			"-c", "write -c -q 3 512", "-c", "write -c -f 0 64k", "x.qcow2"}, ""},
		{"qemu-io", []string{"-c", "read -q 0 512", "-c", "open -o driver=qcow2 x.qcow2", "-c", "read -q -P 0x66 8k 4k", "-c", "close",
			"-c", "open -r x.qcow2", "-c", "write 0 512"}, ""},
		{"qemu-io", nil, "open x.qcow2\nopen x.qcow2\nread -q -P 0x66 8k 4k\n"},
		{"qemu-io", []string{"-c", "open nonexist.qcow2"}, ""},
		{"qemu-img", []string{"check", "x.qcow2"}, ""},
	} {
		got := runIn(t, bin, zqWork, c.name, c.args, c.stdin)
		want := runIn(t, stock, stockWork, c.name, c.args, c.stdin)
		got.cmdline, want.cmdline = "", ""
		if got != want {
			t.Errorf("%s %s:\nzqimg:\n%s\nstock:\n%s", c.name, strings.Join(c.args, " "), got, want)
		}
	}
	// Stock qemu-img finds zqimg's compressed clusters (write -c) sound and
	// counted as compressed.
	r := runIn(t, stock, zqWork, "qemu-img", []string{"check", "x.qcow2"}, "")
	if r.code != 0 || !strings.Contains(r.stdout, "No errors were found") || strings.Contains(r.stdout, " 0.00% compressed") {
		t.Errorf("stock check of zqimg's image:\n%s", r)
	}
}

// runIn runs the program name of directory dir with args and stdin in the
// working directory work.
func runIn(t *testing.T, dir, work, name string, args []string, stdin string) result {
	t.Helper()
	cmd := exec.Command(filepath.Join(dir, name), args...)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return r
}
