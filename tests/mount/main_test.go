// Package mount holds the integration tests of `zqimg mount`: the command
// runs as its own process (this test binary re-executed as zqimg), and
// ordinary programs (dd, cat, truncate, stat, df, and helper processes that
// append with O_APPEND) drive the mount. After unmounting, `zqimg zrp`,
// `zqimg read` and `zqimg check` must show exactly what was written.
//
// The tests need root and /dev/fuse (CI has both); without them they fail
// with a message saying so.
package mount

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zqimg/zqimg/internal/cmd/root"
	"golang.org/x/sys/unix"
)

// roleVar selects what this binary does when re-executed.
const roleVar = "ZQIMG_MOUNT_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleVar) {
	case "zqimg":
		os.Exit(root.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	case "appender":
		os.Exit(appenderMain(os.Args[1:]))
	case "streamer":
		os.Exit(streamerMain(os.Args[1:]))
	case "":
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%s\n", roleVar, os.Getenv(roleVar))
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// self returns a command running this binary in role.
func self(t testing.TB, role string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), roleVar+"="+role)
	return cmd
}

func requireFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("mount tests need root (FUSE mounts without fusermount): running as uid %d", os.Geteuid())
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("mount tests need /dev/fuse: %v", err)
	}
}

// result is the outcome of a command.
type result struct {
	cmdline        string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", r.cmdline, r.code, r.stdout, r.stderr)
}

func run(t testing.TB, cmd *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{cmdline: strings.Join(cmd.Args, " "), stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", r.cmdline, err)
	}
	return r
}

// zqimg runs a zqimg command.
func zqimg(t testing.TB, args ...string) result {
	t.Helper()
	r := run(t, self(t, "zqimg", args...))
	r.cmdline = "zqimg " + strings.Join(args, " ")
	return r
}

// mustZqimg runs a zqimg command that must succeed.
func mustZqimg(t testing.TB, args ...string) string {
	t.Helper()
	r := zqimg(t, args...)
	if r.code != 0 {
		t.Fatal(r)
	}
	return r.stdout
}

// sh runs a shell command line that must succeed and returns its output.
func sh(t testing.TB, dir, script string) string {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = dir
	r := run(t, cmd)
	if r.code != 0 {
		t.Fatal(r)
	}
	return r.stdout
}

// shFail runs a shell command line that must fail and returns its
// standard error.
func shFail(t testing.TB, dir, script string) string {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = dir
	r := run(t, cmd)
	if r.code == 0 {
		t.Fatalf("%s succeeded, want a failure\n%s", script, r)
	}
	return r.stderr
}

// mounted reports whether dir is a mount point.
func mounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 4 && unescapeMount(f[4]) == dir {
			return true
		}
	}
	return false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountProc is a running `zqimg mount`.
type mountProc struct {
	t      testing.TB
	cmd    *exec.Cmd
	dir    string
	stderr *bytes.Buffer
	done   chan struct{}
	err    error
}

// startMount runs `zqimg mount ARGS... IMG DIR` and waits until DIR is
// mounted. The process is stopped (SIGTERM, then killed) when the test
// ends if it is still running.
func startMount(t testing.TB, img, dir string, args ...string) *mountProc {
	t.Helper()
	requireFUSE(t)
	cmd := self(t, "zqimg", append(append([]string{"mount"}, args...), img, dir)...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	cmd.Stdout = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &mountProc{t: t, cmd: cmd, dir: dir, stderr: &errb, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-p.done
			}
		}
		if mounted(dir) {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !mounted(dir) {
		select {
		case <-p.done:
			t.Fatalf("zqimg mount exited before mounting: %v\n%s", p.err, errb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted after 20 s; zqimg mount said:\n%s", dir, errb.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return p
}

// wait waits for the mount process to exit and returns its exit status.
func (p *mountProc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("zqimg mount still running %v after it should have stopped\n%s", timeout, p.stderr.String())
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if p.err != nil {
		p.t.Fatalf("zqimg mount: %v", p.err)
	}
	return 0
}

// umount unmounts with umount(8) (retrying while the kernel still holds
// files being released) and waits for the process to exit with status 0.
func (p *mountProc) umount() {
	p.t.Helper()
	var out []byte
	var err error
	for i := 0; i < 100; i++ {
		out, err = exec.Command("umount", p.dir).CombinedOutput()
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("umount %s: %v: %s", p.dir, err, out)
	}
	if code := p.wait(20 * time.Second); code != 0 {
		p.t.Fatalf("zqimg mount exited with %d after umount:\n%s", code, p.stderr.String())
	}
}

// newZoned creates a zoned image with zqimg create and a mount point.
func newZoned(t testing.TB, size string, opts string) (img, dir string) {
	t.Helper()
	tmp := t.TempDir()
	img = filepath.Join(tmp, "zbc.qcow2")
	dir = filepath.Join(tmp, "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mustZqimg(t, "create", "-q", "-f", "qcow2", "-o", "zone.mode=host-managed,"+opts, img, size)
	return img, dir
}
