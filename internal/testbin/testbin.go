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
