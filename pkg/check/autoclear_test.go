package check_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// TestRepairClearsUnknownAutoclearBits: check -r (leaks or all) clears the
// autoclear feature bits QEMU does not know, as QEMU does when it opens
// the image for the repair (iotest 036: bit 63 set, then check -r all);
// the bitmaps bit is kept. A check without repair writes nothing.
func TestRepairClearsUnknownAutoclearBits(t *testing.T) {
	b := newImage(t, "", "64M").Bytes()
	binary.BigEndian.PutUint64(b[image.HdrAutoclearFeatures:], 1<<63|1<<5|image.AutoclearBitmaps)
	before := bytes.Clone(b)
	f := imagetest.NewMemFile(bytes.Clone(b))
	if res, err := check.Check(f, check.Options{}); err != nil || !res.Clean() {
		t.Fatalf("check: %+v, %v", res, err)
	}
	if !bytes.Equal(f.Bytes(), before) {
		t.Fatal("a check without repair changed the image")
	}
	for _, mode := range []check.Mode{check.RepairLeaks, check.RepairAll} {
		f := imagetest.NewMemFile(bytes.Clone(b))
		res, err := check.Check(f, check.Options{Repair: mode})
		if err != nil || !res.Clean() || res.CorruptionsFixed+res.LeaksFixed != 0 {
			t.Fatalf("repair %v: %+v, %v", mode, res, err)
		}
		after := f.Bytes()
		if got := binary.BigEndian.Uint64(after[image.HdrAutoclearFeatures:]); got != image.AutoclearBitmaps {
			t.Errorf("repair %v: autoclear features 0x%x, want the bitmaps bit", mode, got)
		}
		want := bytes.Clone(before)
		binary.BigEndian.PutUint64(want[image.HdrAutoclearFeatures:], image.AutoclearBitmaps)
		if !bytes.Equal(after, want) {
			t.Errorf("repair %v changed more than the autoclear bits", mode)
		}
	}
}
