package check_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// TestCheckReportsHeaderChecksQemuMakes: the header fields QEMU refuses
// stop check as they stop qemu-img check, with or without -r all, and the
// image is left as it was. A bad header extension cannot be opened (nil
// Result: "Could not open"); a bad snapshot table is a check error
// ("ERROR snapshot table offset invalid" then "Check failed"). More than
// 65536 snapshots are that too, but -r all drops those beyond, as qemu-img
// check -r all does.
func TestCheckReportsHeaderChecksQemuMakes(t *testing.T) {
	be := binary.BigEndian
	tests := []struct {
		name     string
		patch    func(b []byte)
		openErr  string // the error of an image that cannot be opened
		checkErr string // the finding of a check that fails
		repairs  string // the finding of -r all, which repairs
	}{
		{"extension crossing the end of the header cluster", func(b []byte) {
			be.PutUint32(b[0x74:], 0x10000)
		}, "Header extension too large", "", ""},
		{"extension crossing the backing file name", func(b []byte) {
			be.PutUint64(b[image.HdrBackingFileOffset:], 0x200)
			be.PutUint32(b[image.HdrBackingFileSize:], 4)
			copy(b[0x200:], "back")
		}, "Header extension too large: extension 0x6803f857 of 432 bytes crosses the backing file name at 0x200", "", ""},
		{"snapshot table offset not cluster aligned", func(b []byte) {
			be.PutUint32(b[image.HdrNbSnapshots:], 1)
			be.PutUint64(b[image.HdrSnapshotsOffset:], 0x30200)
		}, "", "ERROR snapshot table offset invalid: 0x30200 is not cluster aligned", ""},
		{"snapshot table wrapping 2^64", func(b []byte) {
			be.PutUint32(b[image.HdrNbSnapshots:], 1)
			be.PutUint64(b[image.HdrSnapshotsOffset:], 0xffffffffffff0000)
		}, "", "ERROR snapshot table offset invalid: 1 snapshots at 0xffffffffffff0000", ""},
		{"too many snapshots", func(b []byte) {
			be.PutUint32(b[image.HdrNbSnapshots:], image.MaxSnapshots+1)
		}, "", "ERROR snapshot table too large: 65537 snapshots", "Discarding 1 overhanging snapshots"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newImage(t, "cluster_size=64k", "1M")
			b := f.Bytes()
			if be.Uint32(b[0x70:]) != image.ExtFeatureTable {
				t.Fatalf("no feature name table at 0x70")
			}
			tc.patch(b)
			before := bytes.Clone(b)
			for _, mode := range []check.Mode{check.RepairNone, check.RepairAll} {
				f := imagetest.NewMemFile(bytes.Clone(before))
				res, err := run(t, f, mode)
				if tc.repairs != "" && mode == check.RepairAll {
					if err != nil || !strings.Contains(report(res), tc.repairs) {
						t.Fatalf("mode %v: error %v; want a repair saying %q:\n%s", mode, err, tc.repairs, report(res))
					}
					// (The table at offset 0 lies past the end of the
					// file: its entries are dropped too.)
					if n := be.Uint32(f.Bytes()[image.HdrNbSnapshots:]); n > image.MaxSnapshots {
						t.Errorf("mode %v: %d snapshots after the repair, want at most %d", mode, n, image.MaxSnapshots)
					}
					continue
				}
				if err == nil {
					t.Fatalf("mode %v: check succeeded:\n%s", mode, report(res))
				}
				if tc.openErr != "" {
					if res != nil || !strings.Contains(err.Error(), tc.openErr) {
						t.Errorf("mode %v: result %v, error %v; want no result and %q", mode, res != nil, err, tc.openErr)
					}
				} else {
					var ae *check.AbortError
					if res == nil || !errors.As(err, &ae) || res.CheckErrors == 0 || !has(res, is(check.ProblemSnapshot, check.KindCheckError)) {
						t.Fatalf("mode %v: error %v; want a check error:\n%s", mode, err, report(res))
					}
					if !strings.Contains(report(res), tc.checkErr) {
						t.Errorf("mode %v: findings do not say %q:\n%s", mode, tc.checkErr, report(res))
					}
				}
				if !bytes.Equal(f.Bytes(), before) {
					t.Errorf("mode %v: check changed the image", mode)
				}
			}
		})
	}
}
