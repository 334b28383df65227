package interop

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zqimg/zqimg/pkg/image"
	"golang.org/x/sys/unix"
)

// session is a long-running qemu-io or zqimg io process reading commands
// from a pipe that stays open.
type session struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	out   bytes.Buffer
	done  chan struct{}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// startSession starts name args... with a stdin pipe kept open. The
// process is ended (stdin closed, then killed if it does not exit) when
// the test ends.
func startSession(t *testing.T, name string, args ...string) *session {
	t.Helper()
	s := &session{t: t, name: name + " " + strings.Join(args, " "), done: make(chan struct{})}
	s.cmd = exec.Command(name, args...)
	w := lockedWriter{&s.mu, &s.out}
	s.cmd.Stdout, s.cmd.Stderr = w, w
	var err error
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", s.name, err)
	}
	go func() {
		s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() { s.stop() })
	return s
}

// send writes a command line to the session.
func (s *session) send(line string) {
	s.t.Helper()
	if _, err := io.WriteString(s.stdin, line+"\n"); err != nil {
		s.t.Fatalf("%s: writing %q: %v", s.name, line, err)
	}
}

func (s *session) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// stop closes stdin and waits for the process to exit, killing it after a
// few seconds. It returns the exit status.
func (s *session) stop() int {
	s.stdin.Close()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		s.t.Errorf("%s did not exit after its input was closed; killed", s.name)
	}
	return s.cmd.ProcessState.ExitCode()
}

func (s *session) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// QEMU's lock bytes: 100+i while permission i is used, 200+i while it is
// not shared (0 consistent read, 1 write, 3 resize).
var (
	writerLockBytes = []int64{100, 101, 103, 201, 203}
	readerLockBytes = []int64{100, 201, 203}
)

// waitLocked waits until some process holds OFD locks on every one of the
// given bytes of path (probed with F_OFD_GETLK, which reports a conflicting
// lock held through any other open file description).
func waitLocked(t *testing.T, s *session, path string, lockBytes []int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var missing []int64
		for _, b := range lockBytes {
			lk := unix.Flock_t{Type: unix.F_WRLCK, Start: b, Len: 1}
			if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
				t.Fatalf("F_OFD_GETLK: %v", err)
			}
			if lk.Type == unix.F_UNLCK {
				missing = append(missing, b)
			}
		}
		if len(missing) == 0 {
			return
		}
		if s.exited() {
			t.Fatalf("%s exited before holding the image:\n%s", s.name, s.output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not hold QEMU's lock bytes %v of %s (missing %v); output:\n%s", s.name, lockBytes, filepath.Base(path), missing, s.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const (
	msgWrite       = `Failed to get "write" lock`
	msgSharedWrite = `Failed to get shared "write" lock`
	msgInUse       = "Is another process using the image"
)

// contender is a short command run while a session holds the image.
type contender struct {
	name   string
	writer bool // asks for write permission
	qemu   bool
	args   func(img string) (string, []string)
	// ok decides from the result whether the command succeeded (an exit
	// status of 0 is not enough for qemu-io 7.2 on some failures).
	ok func(r result) bool
}

func contenders() []contender {
	succeeded := func(r result) bool { return r.code == 0 && !strings.Contains(r.stderr+r.stdout, "Failed to") }
	return []contender{
		{"qemu-io", true, true, func(img string) (string, []string) {
			return "qemu-io", []string{"-c", "read 0 512", img}
		}, succeeded},
		{"qemu-io -r", false, true, func(img string) (string, []string) {
			return "qemu-io", []string{"-r", "-c", "read 0 512", img}
		}, succeeded},
		{"qemu-img info", false, true, func(img string) (string, []string) {
			return "qemu-img", []string{"info", img}
		}, succeeded},
		{"zqimg io", true, false, func(img string) (string, []string) {
			return zqimgBin, []string{"io", "-c", "read 0 512", img}
		}, succeeded},
		{"zqimg io -r", false, false, func(img string) (string, []string) {
			return zqimgBin, []string{"io", "-r", "-c", "read 0 512", img}
		}, succeeded},
		{"zqimg info", false, false, func(img string) (string, []string) {
			return zqimgBin, []string{"info", img}
		}, succeeded},
		{"zqimg info --output=json", false, false, func(img string) (string, []string) {
			return zqimgBin, []string{"info", "--output=json", img}
		}, succeeded},
		{"zqimg write", true, false, func(img string) (string, []string) {
			return zqimgBin, []string{"write", "-P", "0x61", img, "0", "512"}
		}, succeeded},
	}
}

// TestLocking: while qemu-io or zqimg io holds an image (read-write or
// read-only), the other side's openers fail or succeed exactly as stock
// QEMU's own would, with QEMU's messages; zqimg create never replaces an
// image in use.
func TestLocking(t *testing.T) {
	requireQemu(t)
	type holder struct {
		name   string
		writer bool
		start  func(t *testing.T, img string) *session
	}
	holders := []holder{
		{"qemu-io", true, func(t *testing.T, img string) *session { return startSession(t, "qemu-io", img) }},
		{"qemu-io -r", false, func(t *testing.T, img string) *session { return startSession(t, "qemu-io", "-r", img) }},
		{"zqimg io", true, func(t *testing.T, img string) *session { return startSession(t, zqimgBin, "io", img) }},
		{"zqimg io -r", false, func(t *testing.T, img string) *session { return startSession(t, zqimgBin, "io", "-r", img) }},
	}
	for _, h := range holders {
		t.Run(strings.ReplaceAll(h.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := filepath.Join(dir, "img.qcow2")
			mustRun(t, "", "qemu-img", "create", "-q", "-f", "qcow2", img, "16M")
			runQemuIO(t, img, []string{"write -P 0x5a 0 1M"})
			s := h.start(t, img)
			lb := readerLockBytes
			if h.writer {
				lb = writerLockBytes
			}
			waitLocked(t, s, img, lb)
			before := readFile(t, img)

			for _, c := range contenders() {
				name, args := c.args(img)
				r := run(t, "", name, args...)
				conflict := h.writer || c.writer
				switch {
				case !conflict && !c.ok(r):
					t.Errorf("%s must coexist with %s holding the image, but fails:\n%s", c.name, h.name, r)
				case conflict && c.ok(r):
					t.Errorf("%s must fail while %s holds the image, but succeeds:\n%s", c.name, h.name, r)
				case conflict:
					want := msgSharedWrite
					if c.writer {
						want = msgWrite
					}
					if !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, msgInUse) {
						t.Errorf("%s while %s holds the image: want QEMU's messages %q and %q on stderr:\n%s", c.name, h.name, want, msgInUse, r)
					}
				}
			}

			// The Go API reports a *image.LockError on conflict. The
			// read-only open goes first: a failed read-write open takes
			// byte 101 before it finds the conflict, and the parallel
			// subtests fork processes that hold a reference to every
			// open file description of this process until they exec, so
			// the lock can outlive the close for a moment and a
			// read-only open right after would see it.
			for _, ro := range []bool{true, false} {
				img2, err := image.Open(img, image.Options{ReadOnly: ro})
				var le *image.LockError
				if h.writer || !ro {
					if !errors.As(err, &le) {
						t.Errorf("image.Open(ReadOnly=%v) while %s holds the image: want a *image.LockError, got %v", ro, h.name, err)
					}
				} else if err != nil {
					t.Errorf("image.Open(ReadOnly=true) while %s holds the image read-only: %v", h.name, err)
				}
				if err == nil {
					img2.Close()
				}
			}
			// Opening without locks (-U) always works for readers.
			if r := zq(t, "", "info", "-U", img); r.code != 0 {
				t.Errorf("zqimg info -U while %s holds the image:\n%s", h.name, r)
			}

			// zqimg create over the image in use fails and leaves it intact.
			for _, o := range []string{"", "cluster_size=4k"} {
				args := []string{"create", "-f", "qcow2"}
				if o != "" {
					args = append(args, "-o", o)
				}
				r := zq(t, "", append(args, img, "1M")...)
				if r.code == 0 {
					t.Errorf("zqimg create over an image %s holds succeeds:\n%s", h.name, r)
				} else if !strings.Contains(r.stderr, msgWrite) || !strings.Contains(r.stderr, msgInUse) {
					t.Errorf("zqimg create over an image %s holds: want %q and %q:\n%s", h.name, msgWrite, msgInUse, r)
				}
			}
			// And so does qemu-img's (the premise).
			if r := run(t, "", "qemu-img", "create", "-f", "qcow2", img, "1M"); r.code == 0 {
				t.Errorf("test premise: qemu-img create over an image %s holds succeeds:\n%s", h.name, r)
			}
			if d := firstDiff(readFile(t, img), before); d != "" {
				t.Errorf("the image changed while %s held it and others were refused: %s", h.name, d)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, ".img.qcow2*")); len(left) > 0 {
				t.Errorf("a failed create left files behind: %v", left)
			}

			// The holder still works, then releases the image.
			if h.writer {
				s.send("write -P 0x42 4096 4096")
			}
			s.send("read -P 0x5a 0 4096")
			if code := s.stop(); code != 0 {
				t.Errorf("%s exited with status %d:\n%s", h.name, code, s.output())
			}
			if out := s.output(); strings.Contains(out, "failed") || strings.Contains(out, "Pattern verification") {
				t.Errorf("%s session commands failed:\n%s", h.name, out)
			}
			want := "read -P 0x5a 0 4096"
			if h.writer {
				want = "read -P 0x42 4096 4096"
			}
			if r := run(t, "", "qemu-io", "-c", want, img); r.code != 0 || strings.Contains(r.stdout+r.stderr, "ailed") {
				t.Errorf("after %s exited, qemu-io cannot use the image or its writes are missing:\n%s", h.name, r)
			}
			if r := zq(t, "", "io", "-c", "read -P 0x5a 0 4096", img); r.code != 0 {
				t.Errorf("after %s exited, zqimg io cannot use the image:\n%s", h.name, r)
			}
			qemuCheckClean(t, img)
		})
	}
}
