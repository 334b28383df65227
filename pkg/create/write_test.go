package create

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/zqimg/zqimg/internal/testbin"
	"github.com/zqimg/zqimg/pkg/image"
	"golang.org/x/sys/unix"
)

var qcowMagic = []byte("QFI\xfb")

// mustSpec resolves options that must be valid.
func mustSpec(t *testing.T, size string, opts ...string) *Spec {
	t.Helper()
	s, err := resolve(t, size, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// formatted returns the bytes Format lays out for s.
func formatted(t *testing.T, s *Spec) []byte {
	t.Helper()
	m := &memFile{}
	if err := image.Format(m, s.Image); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), m.b...)
}

// names lists the directory's entries.
func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range es {
		n = append(n, e.Name())
	}
	sort.Strings(n)
	return n
}

// checkImage asserts that path holds exactly the image s describes and that
// pkg/image opens it.
func checkImage(t *testing.T, path string, s *Spec) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := formatted(t, s); !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes, not the %d-byte image Format lays out", path, len(got), len(want))
	}
	img, err := image.Open(path, image.Options{ReadOnly: true, Features: s.Image.Incompatible})
	if err != nil {
		t.Fatalf("opening the new image: %v", err)
	}
	img.Close()
}

// failingFile fails the n-th change (write, truncation or sync; counted
// from 1 across every file sharing count) with EIO.
type failingFile struct {
	image.File
	count  *int
	failAt int
	role   Role
}

var errInjected = fmt.Errorf("injected failure: %w", syscall.EIO)

func (f *failingFile) change() error {
	*f.count++
	if *f.count == f.failAt {
		return errInjected
	}
	return nil
}

func (f *failingFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.change(); err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

func (f *failingFile) Truncate(n int64) error {
	if err := f.change(); err != nil {
		return err
	}
	return f.File.Truncate(n)
}

func (f *failingFile) Sync() error {
	if err := f.change(); err != nil {
		return err
	}
	return f.File.Sync()
}

// TestCreateLeavesNothingOnFailure: a create that fails, before or after
// its temporary file exists, in the build or while writing the target,
// leaves no file behind, never leaves a qcow2 header on a half-written
// target, and leaves an existing file alone when the build fails.
func TestCreateLeavesNothingOnFailure(t *testing.T) {
	dir := t.TempDir()
	s := mustSpec(t, "64M", "zone.mode=host-managed", "zone.size=1M", "cluster_size=4k")
	if err := Create(filepath.Join(dir, "missing", "x.qcow2"), s); !errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), "Could not create") || !strings.Contains(err.Error(), "No such file or directory") {
		t.Fatalf("create in a missing directory: %v", err)
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	if err := Create(sub, s); !errors.Is(err, syscall.EISDIR) {
		t.Fatalf("create over a directory: %v", err)
	}
	if got := names(t, dir); len(got) != 1 {
		t.Fatalf("files left behind: %v", got)
	}

	// Count the changes of a successful create, then fail each of them.
	for _, mode := range []struct {
		name     string
		existing bool
		opts     []Option
	}{
		{"new", false, nil},
		{"existing", true, nil},
		{"new-without-tmpfile", false, []Option{WithoutTmpfile()}},
		{"existing-without-tmpfile", true, []Option{WithoutTmpfile()}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "x.qcow2")
			old := []byte("old content, not an image")
			reset := func() {
				os.Remove(p)
				if mode.existing {
					if err := os.WriteFile(p, old, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			count := 0
			counting := WithFileWrapper(func(r Role, f image.File) image.File {
				return &failingFile{File: f, count: &count, role: r}
			})
			reset()
			if err := Create(p, s, append(mode.opts, counting)...); err != nil {
				t.Fatal(err)
			}
			checkImage(t, p, s)
			total := count
			if total < 5 {
				t.Fatalf("only %d changes counted", total)
			}
			for k := 1; k <= total; k++ {
				reset()
				n := 0
				// Fail the k-th change, and note which file it hit.
				var failedRole Role
				rec := WithFileWrapper(func(r Role, f image.File) image.File {
					ff := &failingFile{File: f, count: &n, failAt: k, role: r}
					return roleRecorder{ff, &failedRole, k, &n}
				})
				err := Create(p, s, append(mode.opts, rec)...)
				if !errors.Is(err, errInjected) {
					t.Fatalf("failure at change %d/%d: Create returned %v", k, total, err)
				}
				if got := names(t, dir); mode.existing != (len(got) == 1) || len(got) > 1 {
					t.Fatalf("failure at change %d/%d: directory holds %v", k, total, got)
				}
				if !mode.existing {
					continue
				}
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				switch {
				case failedRole == RoleBuild && !bytes.Equal(b, old):
					t.Fatalf("failure at change %d/%d (building): the existing file changed", k, total)
				case failedRole == RoleTarget && bytes.HasPrefix(b, qcowMagic) && !bytes.Equal(b, formatted(t, s)):
					t.Fatalf("failure at change %d/%d (writing the target): a qcow2 header is on a half-written file", k, total)
				}
			}
		})
	}
}

// roleRecorder notes the role of the file whose change number k was made.
type roleRecorder struct {
	*failingFile
	role  *Role
	k     int
	count *int
}

func (r roleRecorder) note() {
	if *r.count == r.k {
		*r.role = r.failingFile.role
	}
}

func (r roleRecorder) WriteAt(p []byte, off int64) (int, error) {
	defer r.note()
	return r.failingFile.WriteAt(p, off)
}

func (r roleRecorder) Truncate(n int64) error {
	defer r.note()
	return r.failingFile.Truncate(n)
}

func (r roleRecorder) Sync() error {
	defer r.note()
	return r.failingFile.Sync()
}

// opRecorder records the changes made to a file.
type opRecorder struct {
	image.File
	ops *[]string
}

func (o opRecorder) WriteAt(p []byte, off int64) (int, error) {
	*o.ops = append(*o.ops, fmt.Sprintf("write %d+%d", off, len(p)))
	return o.File.WriteAt(p, off)
}

func (o opRecorder) Truncate(n int64) error {
	*o.ops = append(*o.ops, fmt.Sprintf("truncate %d", n))
	return o.File.Truncate(n)
}

func (o opRecorder) Sync() error {
	*o.ops = append(*o.ops, "sync")
	return o.File.Sync()
}

// TestCreateReplacesInPlaceMagicLast: an existing file is truncated, filled
// with everything but its first sector, synced, and only then given its
// first sector (the qcow2 magic), and synced again; holes are not written.
func TestCreateReplacesInPlaceMagicLast(t *testing.T) {
	for _, opts := range [][]Option{nil, {WithoutTmpfile()}} {
		dir := t.TempDir()
		p := filepath.Join(dir, "x.qcow2")
		if err := os.WriteFile(p, bytes.Repeat([]byte{0xaa}, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		s := mustSpec(t, "1G", "zone.mode=host-managed", "zone.size=1M")
		var ops []string
		rec := WithFileWrapper(func(r Role, f image.File) image.File {
			if r == RoleTarget {
				return opRecorder{f, &ops}
			}
			return f
		})
		if err := Create(p, s, append(opts, rec)...); err != nil {
			t.Fatal(err)
		}
		checkImage(t, p, s)
		want := formatted(t, s)
		n := len(ops)
		if n < 6 || ops[0] != "truncate 0" || ops[1] != fmt.Sprintf("truncate %d", len(want)) ||
			ops[n-3] != "sync" || ops[n-2] != "write 0+512" || ops[n-1] != "sync" {
			t.Fatalf("target changes: %v", ops)
		}
		written := 0
		for _, op := range ops[2 : n-3] {
			var off, l int
			if _, err := fmt.Sscanf(op, "write %d+%d", &off, &l); err != nil {
				t.Fatalf("unexpected change %q between the truncation and the sync: %v", op, ops)
			}
			if off < 512 {
				t.Fatalf("the first sector is written before the rest is synced: %v", ops)
			}
			written += l
		}
		// The image is mostly holes (an L1 table of zeroes, a zeroed table
		// tail): they are not copied.
		if written >= len(want) {
			t.Errorf("%d bytes written for a %d-byte image: holes were copied", written, len(want))
		}
	}
}

// TestCreateHoldsLockFromStart: the QEMU write lock on an existing file is
// taken before anything is built and held until the new image is in place:
// an image in use is refused, and a process that tries to open the image
// while the new one is being built is refused too.
func TestCreateHoldsLockFromStart(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.qcow2")
	s := mustSpec(t, "16M")
	if err := Create(p, s); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(p)

	// A holder: refused, nothing written.
	holder, err := image.Open(p, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s2 := mustSpec(t, "32M", "cluster_size=4k")
	err = Create(p, s2)
	var le *image.LockError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), `Failed to get "write" lock`) || !strings.Contains(err.Error(), "Is another process using the image ["+p+"]?") {
		t.Fatalf("create over an image in use: %v", err)
	}
	holder.Close()
	if after, _ := os.ReadFile(p); !bytes.Equal(after, before) {
		t.Fatal("create changed an image in use")
	}

	// During the build, and while the target is rewritten, the image is
	// locked: opening it fails.
	var probes, refused int
	probe := func() {
		probes++
		img, err := image.Open(p, image.Options{ReadOnly: true})
		if errors.As(err, &le) {
			refused++
			return
		}
		if err == nil {
			img.Close()
		}
	}
	wrap := WithFileWrapper(func(r Role, f image.File) image.File { return probingFile{f, probe} })
	if err := Create(p, s2, wrap); err != nil {
		t.Fatal(err)
	}
	if probes == 0 || refused != probes {
		t.Fatalf("%d of %d opens during the create were refused; want all", refused, probes)
	}
	checkImage(t, p, s2)
	// And released at the end.
	img, err := image.Open(p, image.Options{})
	if err != nil {
		t.Fatalf("the lock outlives the create: %v", err)
	}
	img.Close()
}

// probingFile calls probe before each sync.
type probingFile struct {
	image.File
	probe func()
}

func (f probingFile) Sync() error { f.probe(); return f.File.Sync() }

// TestCreateNewFileAppeared: a file that appears at the target while a new
// image is built is not replaced.
func TestCreateNewFileAppeared(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.qcow2")
	s := mustSpec(t, "16M")
	appear := func(c *config) {
		c.beforeLink = func() { os.WriteFile(p, []byte("theirs"), 0o644) }
	}
	err := Create(p, s, appear)
	if !errors.Is(err, ErrAppeared) || !strings.Contains(err.Error(), "Could not create '"+p+"'") {
		t.Fatalf("create while the file appeared: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "theirs" {
		t.Fatalf("the file that appeared was replaced: %q", b)
	}
	if got := names(t, dir); len(got) != 1 {
		t.Fatalf("files left: %v", got)
	}
}

// TestCreateSymlinks: a symbolic link stays a link and its target gets the
// image; a dangling link's target is created.
func TestCreateSymlinks(t *testing.T) {
	for _, opts := range [][]Option{nil, {WithoutTmpfile()}} {
		dir := t.TempDir()
		s := mustSpec(t, "16M")
		real := filepath.Join(dir, "real.qcow2")
		os.WriteFile(real, []byte("old"), 0o640)
		link := filepath.Join(dir, "link.qcow2")
		if err := os.Symlink("real.qcow2", link); err != nil {
			t.Fatal(err)
		}
		if err := Create(link, s, opts...); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("the link is no longer a link: %v %v", st.Mode(), err)
		}
		checkImage(t, real, s)

		// A chain ending in a missing name, relative to a subdirectory.
		os.Mkdir(filepath.Join(dir, "d"), 0o755)
		l1 := filepath.Join(dir, "l1")
		os.Symlink("d/l2", l1)
		os.Symlink("new.qcow2", filepath.Join(dir, "d", "l2"))
		if err := Create(l1, s, opts...); err != nil {
			t.Fatal(err)
		}
		checkImage(t, filepath.Join(dir, "d", "new.qcow2"), s)
		if st, err := os.Lstat(l1); err != nil || st.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("the dangling link was replaced: %v", err)
		}
		if got := names(t, dir); strings.Join(got, " ") != "d l1 link.qcow2 real.qcow2" {
			t.Fatalf("directory: %v", got)
		}
	}
}

// TestCreateKeepsInodeModeAndLinks: an existing file keeps its inode, its
// permissions and its hard links; its content is the new image.
func TestCreateKeepsInodeModeAndLinks(t *testing.T) {
	for _, opts := range [][]Option{nil, {WithoutTmpfile()}} {
		dir := t.TempDir()
		p := filepath.Join(dir, "x.qcow2")
		other := filepath.Join(dir, "hardlink")
		os.WriteFile(p, bytes.Repeat([]byte("old image "), 100000), 0o600)
		if err := os.Chmod(p, 0o604); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(p, other); err != nil {
			t.Fatal(err)
		}
		var before unix.Stat_t
		unix.Stat(p, &before)
		s := mustSpec(t, "16M", "zone.mode=host-managed", "zone.size=4M")
		if err := Create(p, s, opts...); err != nil {
			t.Fatal(err)
		}
		var after unix.Stat_t
		unix.Stat(p, &after)
		if after.Ino != before.Ino || after.Mode != before.Mode || after.Nlink != 2 {
			t.Fatalf("inode %d -> %d, mode %o -> %o, links %d", before.Ino, after.Ino, before.Mode, after.Mode, after.Nlink)
		}
		checkImage(t, p, s)
		checkImage(t, other, s)
	}
}

// TestCreateNewFileMode: a new file gets 0666 minus the umask.
func TestCreateNewFileMode(t *testing.T) {
	old := unix.Umask(0o027)
	defer unix.Umask(old)
	for i, opts := range [][]Option{nil, {WithoutTmpfile()}} {
		p := filepath.Join(t.TempDir(), fmt.Sprint("x", i))
		if err := Create(p, mustSpec(t, "1M"), opts...); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != 0o640 {
			t.Fatalf("mode %v with umask 027, want -rw-r-----: %v", st.Mode(), err)
		}
	}
}

// TestCreateDoesNotChangeUmask: Create never calls umask(2), which would
// change the umask of every thread of the process for a moment (another
// thread creating a file meanwhile would get the wrong permissions). The
// test runs creates in a child process under a seccomp filter that kills
// the process on umask.
func TestCreateDoesNotChangeUmask(t *testing.T) {
	if os.Getenv(umaskChildEnv) != "" {
		umaskChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCreateDoesNotChangeUmask$", "-test.count=1")
	cmd.Env = append(os.Environ(), umaskChildEnv+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGSYS {
			t.Fatalf("Create called umask(2) (killed by the seccomp filter)")
		}
	}
	if err != nil || !strings.Contains(string(out), "umask child: ok") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

const umaskChildEnv = "ZQIMG_CREATE_UMASK_CHILD"

// umaskChild installs a seccomp filter that kills the process on umask(2),
// on every thread, then creates new and existing images both ways.
func umaskChild() {
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_UMASK},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_KILL_PROCESS},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Println("umask child: no_new_privs:", err)
		os.Exit(2)
	}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); e != 0 {
		fmt.Println("umask child: seccomp:", e)
		os.Exit(2)
	}
	dir := os.Getenv(umaskChildEnv)
	o, _ := ParseOptions(nil, "1M", true)
	s, _ := Resolve(o)
	for _, opts := range [][]Option{nil, {WithoutTmpfile()}} {
		for range 2 { // new, then existing
			if err := Create(filepath.Join(dir, "x.qcow2"), s, opts...); err != nil {
				fmt.Println("umask child:", err)
				os.Exit(2)
			}
		}
		os.Remove(filepath.Join(dir, "x.qcow2"))
	}
	fmt.Println("umask child: ok")
}

// TestCreateProtectedSymlinks: create goes through a symbolic link as the
// kernel does, so fs.protected_symlinks applies: a link in a sticky
// world-writable directory owned by someone else is refused with
// Permission denied (qemu-img's answer), whether it names a file or
// nothing, and nothing is written or created.
func TestCreateProtectedSymlinks(t *testing.T) {
	dir, real, link := testbin.ProtectedSymlinks(t, []byte("old"))
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink("missing", dangling); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(dangling, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	s := mustSpec(t, "16M")
	for _, opts := range [][]Option{nil, {WithoutTmpfile()}, {WithRenameReplace()}} {
		for _, p := range []string{link, dangling} {
			err := Create(p, s, opts...)
			if !errors.Is(err, syscall.EACCES) || !strings.HasSuffix(err.Error(), ": Permission denied") {
				t.Fatalf("create through %s: %v, want Permission denied", filepath.Base(p), err)
			}
		}
		if got, _ := os.ReadFile(real); string(got) != "old" {
			t.Fatalf("the link's target was changed: %q", got)
		}
		if got := names(t, dir); strings.Join(got, " ") != "dangling link real" {
			t.Fatalf("directory: %v", got)
		}
	}
}
