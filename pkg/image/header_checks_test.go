package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// formatted returns a fresh 64K-cluster version 3 image of 1 MiB (with
// QEMU's feature name table extension at 0x70, 432 bytes of data).
func formatted(t *testing.T) []byte {
	t.Helper()
	f := imagetest.NewMemFile(nil)
	if err := Format(f, CreateOptions{Size: 1 << 20, ClusterBits: 16, Version: 3, RefcountOrder: 4}); err != nil {
		t.Fatal(err)
	}
	b := f.Bytes()
	if binary.BigEndian.Uint32(b[0x70:]) != ExtFeatureTable || binary.BigEndian.Uint32(b[0x74:]) != 432 {
		t.Fatalf("no feature name table of 432 bytes at 0x70: %x", b[0x70:0x78])
	}
	return b
}

// TestOpenRefusesHeaderChecksQemuMakes opens images whose header QEMU
// refuses, read-only and read-write: each is refused with QEMU's words
// and the file is left as it was.
func TestOpenRefusesHeaderChecksQemuMakes(t *testing.T) {
	be := binary.BigEndian
	tests := []struct {
		name   string
		patch  func(b []byte)
		substr string
	}{
		{"extension crossing the end of the header cluster", func(b []byte) {
			be.PutUint32(b[0x74:], 0x10000-0x78+1)
		}, "Header extension too large: extension 0x6803f857 of 65417 bytes crosses the end of the header cluster at 0x10000"},
		{"extension crossing the backing file name", func(b []byte) {
			be.PutUint64(b[HdrBackingFileOffset:], 0x200)
			be.PutUint32(b[HdrBackingFileSize:], 4)
			copy(b[0x200:], "back")
		}, "Header extension too large: extension 0x6803f857 of 432 bytes crosses the backing file name at 0x200"},
		{"extension header crossing the backing file name", func(b []byte) {
			be.PutUint64(b[HdrBackingFileOffset:], 0x74)
			be.PutUint32(b[HdrBackingFileSize:], 4)
			copy(b[0x74:], "back")
		}, "Header extension too large: its 8-byte header crosses the backing file name at 0x74"},
		{"snapshot table offset not cluster aligned", func(b []byte) {
			be.PutUint32(b[HdrNbSnapshots:], 1)
			be.PutUint64(b[HdrSnapshotsOffset:], 0x30200)
		}, "Snapshot table offset invalid: 0x30200 is not cluster aligned"},
		{"snapshot table offset not cluster aligned, no snapshots", func(b []byte) {
			be.PutUint64(b[HdrSnapshotsOffset:], 0x1234)
		}, "Snapshot table offset invalid: 0x1234 is not cluster aligned"},
		{"snapshot table wrapping 2^64", func(b []byte) {
			be.PutUint32(b[HdrNbSnapshots:], 2)
			be.PutUint64(b[HdrSnapshotsOffset:], 0xffffffffffff0000)
		}, "Snapshot table offset invalid: 2 snapshots at 0xffffffffffff0000 end past 2^63-1"},
		{"too many snapshots", func(b []byte) {
			be.PutUint32(b[HdrNbSnapshots:], MaxSnapshots+1)
		}, "Snapshot table too large: 65537 snapshots"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := formatted(t)
			tc.patch(b)
			before := bytes.Clone(b)
			for _, ro := range []bool{true, false} {
				f := imagetest.NewMemFile(bytes.Clone(b))
				img, err := OpenFile(f, "bad", Options{ReadOnly: ro, NoBacking: true})
				if err == nil {
					img.Close()
					t.Fatalf("read-only %v: image opened", ro)
				}
				var fe *FormatError
				if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.substr) {
					t.Errorf("read-only %v: error %v (%T), want a *FormatError with %q", ro, err, err, tc.substr)
				}
				if !bytes.Equal(f.Bytes(), before) {
					t.Errorf("read-only %v: refused open changed the file", ro)
				}
			}
		})
	}
}

// TestHeaderExtensionsEndAtBackingName: the extension area ends at the
// backing file name; an extension that ends exactly there is accepted.
func TestHeaderExtensionsEndAtBackingName(t *testing.T) {
	b := formatted(t)
	end := uint64(0x78 + 432) // no end marker: the name follows the table
	binary.BigEndian.PutUint64(b[HdrBackingFileOffset:], end)
	binary.BigEndian.PutUint32(b[HdrBackingFileSize:], 4)
	copy(b[end:], "back")
	h, err := ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	exts, err := HeaderExtensions(h, b[:h.ClusterSize()])
	if err != nil || len(exts) != 1 || exts[0].Magic != ExtFeatureTable {
		t.Fatalf("got %v, %v; want the feature name table", exts, err)
	}
}

// TestOpenQEMUMessages: an image QEMU refuses to open is refused with an
// error whose QEMUMessage is QEMU 7.2's message for it (iotests 054 and
// 080 print them), while its Error keeps zqimg's details; the file is
// left as it was.
func TestOpenQEMUMessages(t *testing.T) {
	be := binary.BigEndian
	u32 := func(off int, v uint32) func([]byte) { return func(b []byte) { be.PutUint32(b[off:], v) } }
	u64 := func(off int, v uint64) func([]byte) { return func(b []byte) { be.PutUint64(b[off:], v) } }
	both := func(fs ...func([]byte)) func([]byte) {
		return func(b []byte) {
			for _, f := range fs {
				f(b)
			}
		}
	}
	tests := []struct {
		name  string
		patch func([]byte)
		want  string
	}{
		{"magic", u32(HdrMagic, 0x12345678), "Image is not in qcow2 format"},
		{"version 4", u32(HdrVersion, 4), "Unsupported qcow2 version 4"},
		{"cluster bits 22", u32(HdrClusterBits, 22), "Unsupported cluster size: 2^22"},
		{"header length 100", u32(HdrHeaderLength, 100), "qcow2 header too short"},
		{"header length 2^32-1", u32(HdrHeaderLength, 0xffffffff), "qcow2 header exceeds cluster size"},
		{"header length 2^31-1", u32(HdrHeaderLength, 0x7fffffff), "qcow2 header exceeds cluster size"},
		{"refcount order 7", u32(HdrRefcountOrder, 7), "Reference count entry width too large; may not exceed 64 bits"},
		{"compression type 2", func(b []byte) { b[HdrCompressionType] = 2 }, "qcow2: unknown compression type: 2"},
		{"backing file offset 2^64-1", u64(HdrBackingFileOffset, ^uint64(0)), "Invalid backing file offset"},
		{"backing file name too long", both(u64(HdrBackingFileOffset, 0x1000), u32(HdrBackingFileSize, 0xffffffff)), "Backing file name too long"},
		{"extension header crossing the backing file name", both(u64(HdrBackingFileOffset, 0x74), u32(0x70, 0x12345678), u32(0x74, 0x7fffffff)), "Header extension too large"},
		{"extension crossing the cluster", both(u32(0x70, 0x12345678), u32(0x74, 0x7fffffff)), "Header extension too large"},
		{"refcount table of 2^32-1 clusters", u32(HdrRefcountTableClusters, 0xffffffff), "Reference count table too large"},
		{"refcount table of 0x20001 clusters", u32(HdrRefcountTableClusters, 0x20001), "Reference count table too large"},
		{"refcount table of 0 clusters", u32(HdrRefcountTableClusters, 0), "Image does not contain a reference count table"},
		{"refcount table unaligned", u64(HdrRefcountTableOffset, 0x1234567890abcdef), "Reference count table offset invalid"},
		{"refcount table huge offset", both(u64(HdrRefcountTableOffset, 0xffffffffffff0000), u32(HdrRefcountTableClusters, 0x7f)), "Reference count table offset invalid"},
		{"2^32-1 snapshots", u32(HdrNbSnapshots, 0xffffffff), "Snapshot table too large"},
		{"snapshot table huge offset", both(u64(HdrSnapshotsOffset, 0xffffffffffff0000), u32(HdrNbSnapshots, 0xffff)), "Snapshot table offset invalid"},
		{"snapshot table unaligned", u64(HdrSnapshotsOffset, 0x1234567890abcdef), "Snapshot table offset invalid"},
		{"L1 table of 2^32-1 entries", u32(HdrL1Size, 0xffffffff), "Active L1 table too large"},
		{"L1 table huge offset", both(u64(HdrL1TableOffset, 0x7fffffffffff0000), u32(HdrL1Size, 0xffff)), "Active L1 table offset invalid"},
		{"L1 table unaligned", both(u64(HdrL1TableOffset, 0x1234567890abcdef), u32(HdrL1Size, 1)), "Active L1 table offset invalid"},
		{"L1 table too small", u32(HdrL1Size, 0), "L1 table is too small"},
		{"virtual size 2^60", u64(HdrSize, 1<<60), "Image is too big"},
		{"unknown incompatible feature", u64(HdrIncompatibleFeatures, 1<<63), "Unsupported qcow2 feature(s): Unknown incompatible feature: 8000000000000000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := formatted(t)
			tc.patch(b)
			before := bytes.Clone(b)
			for _, ro := range []bool{true, false} {
				f := imagetest.NewMemFile(bytes.Clone(b))
				img, err := OpenFile(f, "bad", Options{ReadOnly: ro, NoBacking: true})
				if err == nil {
					img.Close()
					t.Fatalf("read-only %v: image opened", ro)
				}
				if got := QEMUMessage(err); got != tc.want {
					t.Errorf("read-only %v: QEMUMessage %q, want %q (Error: %v)", ro, got, tc.want, err)
				}
				if !bytes.Equal(f.Bytes(), before) {
					t.Errorf("read-only %v: refused open changed the file", ro)
				}
			}
		})
	}
}

// TestBackingQEMUMessages: a backing file that cannot be opened is
// reported as QEMU reports it (iotests 069 and 114).
func TestBackingQEMUMessages(t *testing.T) {
	err := &BackingFileError{Name: "t.qcow2.base", Err: &os.PathError{Op: "open", Path: "dir/t.qcow2.base", Err: syscall.ENOENT}}
	if got, want := QEMUMessage(err), "Could not open backing file: Could not open 'dir/t.qcow2.base': No such file or directory"; got != want {
		t.Errorf("missing: %q, want %q", got, want)
	}
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), `"t.qcow2.base"`) {
		t.Errorf("Error %q", err)
	}
	err = &BackingFileError{Name: "b", Err: &BackingFormatError{Format: "foo"}}
	if got, want := QEMUMessage(fmt.Errorf("ctx: %w", err)), "Could not open backing file: Unknown driver 'foo'"; got != want {
		t.Errorf("format: %q, want %q", got, want)
	}
	// Through a chain: the backing file's own backing file is missing.
	err = &BackingFileError{Name: "mid", Err: &BackingFileError{Name: "base", Err: &os.PathError{Op: "open", Path: "base", Err: syscall.ENOENT}}}
	if got, want := QEMUMessage(err), "Could not open backing file: Could not open backing file: Could not open 'base': No such file or directory"; got != want {
		t.Errorf("chain: %q, want %q", got, want)
	}
}

// TestCorruptBitQEMUMessage: an image with the corrupt bit is refused for
// writing with ErrCorrupt, worded as QEMU words it, and opens read-only.
func TestCorruptBitQEMUMessage(t *testing.T) {
	b := formatted(t)
	binary.BigEndian.PutUint64(b[HdrIncompatibleFeatures:], IncompatCorrupt)
	f := imagetest.NewMemFile(bytes.Clone(b))
	_, err := OpenFile(f, "bad", Options{NoBacking: true})
	if !errors.Is(err, ErrCorrupt) || QEMUMessage(err) != "qcow2: Image is corrupt; cannot be opened read/write" {
		t.Fatalf("read/write open: %v (QEMU: %q)", err, QEMUMessage(err))
	}
	if !bytes.Equal(f.Bytes(), b) {
		t.Error("refused open changed the file")
	}
	img, err := OpenFile(f, "bad", Options{ReadOnly: true, NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
}
