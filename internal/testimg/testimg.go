// Package testimg makes images for tests the way zqimg create makes them,
// from qemu-img create's -o option lists and a size in qemu's syntax.
// Every failure fails the test.
package testimg

import (
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/pkg/create"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// Spec resolves -o option lists (each "key=value[,key=value...]"; empty
// lists are skipped) and a size into a create specification.
func Spec(t testing.TB, size string, opts ...string) *create.Spec {
	t.Helper()
	var lists []string
	for _, o := range opts {
		if o != "" {
			lists = append(lists, o)
		}
	}
	o, err := create.ParseOptions(lists, size, true)
	if err != nil {
		t.Fatal(err)
	}
	s, err := create.Resolve(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// File creates the image at path, as zqimg create does.
func File(t testing.TB, path, size string, opts ...string) {
	t.Helper()
	if err := create.Create(path, Spec(t, size, opts...)); err != nil {
		t.Fatal(err)
	}
}

// Zoned creates a zoned image (zone.mode=host-managed and opts) in a
// temporary directory and returns its path.
func Zoned(t testing.TB, size string, opts ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "z.qcow2")
	File(t, path, size, append([]string{"zone.mode=host-managed"}, opts...)...)
	return path
}

// Bytes lays the image out in memory and returns its bytes.
func Bytes(t testing.TB, size string, opts ...string) []byte {
	t.Helper()
	m := imagetest.NewMemFile(nil)
	if err := image.Format(m, Spec(t, size, opts...).Image); err != nil {
		t.Fatal(err)
	}
	return m.Bytes()
}
