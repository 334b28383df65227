// Package testbin builds the zqimg binary for tests that run it as a
// separate process (kill -9 tests, full-disk tests, interoperability tests),
// and says whether the environment must provide what a test needs.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Build compiles github.com/zqimg/zqimg/cmd/zqimg into a temporary
// directory and returns the binary's path and a function removing it.
func Build() (path string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "zqimg-test-bin-")
	if err != nil {
		return "", nil, err
	}
	path = filepath.Join(dir, "zqimg")
	// The go command of PATH, else the usual install location.
	goTool := "/usr/local/go/bin/go"
	if p, err := exec.LookPath("go"); err == nil {
		goTool = p
	}
	cmd := exec.Command(goTool, "build", "-o", path, "github.com/zqimg/zqimg/cmd/zqimg")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("building zqimg: %w", err)
	}
	return path, func() { os.RemoveAll(dir) }, nil
}

// Main builds the binary into *path, runs the tests and removes it.
func Main(m *testing.M, path *string) int {
	p, cleanup, err := Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	*path = p
	return m.Run()
}

// Required reports whether tests must fail rather than skip when what
// they need is missing: CI sets ZQIMG_REQUIRE_QEMU=1 (scripts/test.sh).
func Required() bool { return os.Getenv("ZQIMG_REQUIRE_QEMU") == "1" }

// NeedRoot skips the test when not running as root, or fails it in CI.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if Required() {
		t.Fatalf("%s needs root (ZQIMG_REQUIRE_QEMU=1: CI runs as root)", why)
	}
	t.Skipf("%s needs root", why)
}

// ProtectedSymlinks sets fs.protected_symlinks to 1 for the rest of the
// test (restoring the old value at its end), and returns a new sticky,
// world-writable (1777) directory, owned by root, holding real (a file of
// content old, owned by root) and link, a symbolic link to real owned by
// uid 1000: a link the kernel refuses to follow for root. It needs root
// and a writable sysctl (skips, or fails in CI).
func ProtectedSymlinks(t testing.TB, old []byte) (dir, real, link string) {
	t.Helper()
	NeedRoot(t, "fs.protected_symlinks")
	const knob = "/proc/sys/fs/protected_symlinks"
	prev, err := os.ReadFile(knob)
	if err == nil {
		err = os.WriteFile(knob, []byte("1"), 0o644)
	}
	if err != nil {
		if Required() {
			t.Fatalf("setting fs.protected_symlinks: %v", err)
		}
		t.Skipf("setting fs.protected_symlinks: %v", err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(knob, prev, 0o644); err != nil {
			t.Errorf("restoring fs.protected_symlinks: %v", err)
		}
	})
	dir = filepath.Join(t.TempDir(), "sticky")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	real, link = filepath.Join(dir, "real"), filepath.Join(dir, "link")
	if err := os.WriteFile(real, old, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", link); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(link, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	return dir, real, link
}
