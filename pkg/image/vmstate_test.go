package image_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"
	"github.com/zqimg/zqimg/pkg/image"
)

// TestVMStateArea: the VM state area (qemu-io write -b / read -b) lies
// past the virtual disk in the same tables: a write far out grows the L1
// table and leaves the disk, its size and check alone; it reads back,
// also after a reopen and after a snapshot is taken, overwritten and
// applied (the area is saved with the snapshot, qemu iotest 029). Zoned
// images have none.
func TestVMStateArea(t *testing.T) {
	for _, opts := range [][]string{nil, {"cluster_size=1k"}, {"compat=0.10"}} {
		dir := t.TempDir()
		path := filepath.Join(dir, "vm.qcow2")
		if err := os.WriteFile(path, testimg.Bytes(t, "64M", opts...), 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := image.Open(path, image.Options{})
		if err != nil {
			t.Fatal(err)
		}
		disk := bytes.Repeat([]byte{0x55}, 8192)
		if _, err := img.WriteAt(disk, 64<<20-8192); err != nil {
			t.Fatal(err)
		}
		far := int64(1) << 40
		if opts != nil && opts[0] == "cluster_size=1k" {
			far = 1 << 30 // 1 KiB clusters address 32 GiB of L1 at most
		}
		state := bytes.Repeat([]byte{0x11}, 4096)
		for _, pos := range []int64{0, far} {
			if _, err := img.WriteVMState(state, pos); err != nil {
				t.Fatalf("%v: write at VM state offset %#x: %v", opts, pos, err)
			}
		}
		if _, err := img.CreateSnapshot(image.SnapshotCreateOptions{Name: "s"}); err != nil {
			t.Fatal(err)
		}
		if _, err := img.WriteVMState(bytes.Repeat([]byte{0x22}, 4096), far); err != nil {
			t.Fatal(err)
		}
		if err := img.ApplySnapshot("s", image.SnapshotApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		img, err = image.Open(path, image.Options{})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 4096)
		for _, pos := range []int64{0, far} {
			if _, err := img.ReadVMState(got, pos); err != nil || !bytes.Equal(got, state) {
				t.Errorf("%v: VM state at %#x after the snapshot was applied: %v, equal %v", opts, pos, err, bytes.Equal(got, state))
			}
		}
		if _, err := img.ReadVMState(got, 1<<20); err != nil || !bytes.Equal(got, make([]byte, 4096)) {
			t.Errorf("%v: unwritten VM state does not read as zeroes (%v)", opts, err)
		}
		d := make([]byte, 8192)
		if _, err := img.ReadAt(d, 64<<20-8192); err != nil || !bytes.Equal(d, disk) || img.Size() != 64<<20 {
			t.Errorf("%v: the disk changed (size %d, %v)", opts, img.Size(), err)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		f, err := image.OpenOSFile(path, true, false)
		if err != nil {
			t.Fatal(err)
		}
		if r := checkImage(t, "after VM state writes", f, false); r.corruptions != 0 || r.leaks != 0 {
			t.Errorf("%v: check: %+v\n%s", opts, r, r.report)
		}
		f.Close()
	}
	dir := t.TempDir()
	z := filepath.Join(dir, "z.qcow2")
	if err := os.WriteFile(z, testimg.Bytes(t, "4M", "zone.mode=host-managed", "zone.size=1M"), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := image.Open(z, image.Options{Features: image.IncompatZoned})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if _, err := img.WriteVMState(make([]byte, 512), 0); !errors.Is(err, image.ErrVMStateZoned) {
		t.Errorf("zoned image: %v, want ErrVMStateZoned", err)
	}
}
