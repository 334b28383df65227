package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
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
