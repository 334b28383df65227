package image_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// writeWithBacking writes a fresh 1 MiB image at path whose header names
// backing as its backing file (format unspecified: probed).
func writeWithBacking(t *testing.T, path, backing string) {
	t.Helper()
	m := imagetest.NewMemFile(nil)
	if err := image.Format(m, image.CreateOptions{Size: 1 << 20, ClusterBits: 16, Version: 3, RefcountOrder: 4}); err != nil {
		t.Fatal(err)
	}
	b := m.Bytes()
	if backing != "" {
		const at = 0x1000 // after the extensions, inside the header cluster
		copy(b[at:], backing)
		binary.BigEndian.PutUint64(b[8:], at)
		binary.BigEndian.PutUint32(b[16:], uint32(len(backing)))
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Two images naming each other as backing file: open stops at once with
// one short message naming the loop.
func TestBackingChainLoop(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2")
	writeWithBacking(t, a, "b.qcow2")
	writeWithBacking(t, b, "a.qcow2")
	for _, top := range []string{a, b} {
		_, err := image.Open(top, image.Options{ReadOnly: true})
		var ce *image.BackingChainError
		if !errors.As(err, &ce) || !ce.Loop {
			t.Fatalf("open %s: %v; want a BackingChainError loop", top, err)
		}
		if strings.Count(err.Error(), "backing") > 3 || len(err.Error()) > 300 {
			t.Fatalf("loop message is not short: %q", err)
		}
	}
	// A self-loop through a symbolic link is the same file.
	c := filepath.Join(dir, "c.qcow2")
	if err := os.Symlink("c.qcow2", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	writeWithBacking(t, c, "link")
	if _, err := image.Open(c, image.Options{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "loops") {
		t.Fatalf("self loop through a link: %v", err)
	}
}

// A chain deeper than MaxBackingDepth is refused quickly with one message.
func TestBackingChainDepth(t *testing.T) {
	dir := t.TempDir()
	n := image.MaxBackingDepth + 5
	for i := 0; i < n; i++ {
		backing := ""
		if i+1 < n {
			backing = fmt.Sprintf("%d.qcow2", i+1)
		}
		writeWithBacking(t, filepath.Join(dir, fmt.Sprintf("%d.qcow2", i)), backing)
	}
	start := time.Now()
	_, err := image.Open(filepath.Join(dir, "0.qcow2"), image.Options{ReadOnly: true})
	var ce *image.BackingChainError
	if !errors.As(err, &ce) || ce.Loop {
		t.Fatalf("open of a %d-deep chain: %v; want the depth error", n, err)
	}
	if len(err.Error()) > 300 {
		t.Fatalf("depth message is not short: %q", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("refusing the chain took %v", d)
	}
	// A chain within the limit opens.
	img, err := image.Open(filepath.Join(dir, fmt.Sprintf("%d.qcow2", n-image.MaxBackingDepth)), image.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("a chain of %d images: %v", image.MaxBackingDepth, err)
	}
	img.Close()
}

// An image whose backing format extension names a format zqimg cannot
// read ("foo", iotest 114) is refused with BackingFileError around
// BackingFormatError, worded as QEMU words it; Options.BackingFormat
// (qemu-io's open -o backing.driver=qcow2) overrides the recorded format,
// for the top image's backing file only.
func TestBackingFormatOverride(t *testing.T) {
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	writeWithBacking(t, base, "")
	img, err := image.Open(base, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt([]byte("base data"), 4096); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	writeWithBacking(t, top, "")
	img, err = image.Open(top, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.SetBacking("base.qcow2", "foo"); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = image.Open(top, image.Options{ReadOnly: true})
	var be *image.BackingFileError
	var fe *image.BackingFormatError
	if !errors.As(err, &be) || !errors.As(err, &fe) || fe.Format != "foo" {
		t.Fatalf("open: %v (%T); want a BackingFileError of format foo", err, err)
	}
	if got, want := image.QEMUMessage(err), "Could not open backing file: Unknown driver 'foo'"; got != want {
		t.Errorf("QEMUMessage %q, want %q", got, want)
	}
	img, err = image.Open(top, image.Options{ReadOnly: true, BackingFormat: "qcow2"})
	if err != nil {
		t.Fatalf("open with backing format qcow2: %v", err)
	}
	defer img.Close()
	got := make([]byte, 9)
	if _, err := img.ReadAt(got, 4096); err != nil || string(got) != "base data" {
		t.Fatalf("read through the backing file: %q, %v", got, err)
	}
	if name, format := img.BackingFile(); name != "base.qcow2" || format != "foo" {
		t.Errorf("BackingFile %q %q: the recorded format is kept", name, format)
	}
}
