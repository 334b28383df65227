package zone_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// An L2 entry that points into the write-pointer table is not written
// through: the zone write is refused as a write on metadata, the table
// and the write pointer stay as they were, and the image is marked
// corrupt (it then opens read-only only).
func TestWriteIntoWritePointerTableRefused(t *testing.T) {
	path := newImage(t, "64M", "zone.size=1M")
	d := open(t, path)
	if _, err := d.WriteAt(fill(64*kib, 0x61), 0); err != nil {
		t.Fatal(err)
	}
	tableOff := d.Header().MetaOffset
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := must(image.ParseHeader(raw))
	l2 := binary.BigEndian.Uint64(raw[h.L1TableOffset:]) & image.L1OffsetMask
	// Guest cluster 1 (the write pointer of zone 0) maps into the table.
	binary.BigEndian.PutUint64(raw[l2+8:], tableOff|image.OflagCopied)
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}

	d = open(t, path)
	_, err = d.WriteAt(fill(64*kib, 0x55), 64*kib)
	var oe *image.OverlapError
	if !errors.As(err, &oe) || oe.Metadata != zone.TableName || !strings.Contains(err.Error(), "(overlaps with zoned write-pointer table)") {
		t.Fatalf("zone write into the write-pointer table: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("close after the refusal: %v", err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after[tableOff:tableOff+64*kib], raw[tableOff:tableOff+64*kib]) {
		t.Error("the write-pointer table changed")
	}
	if ah := must(image.ParseHeader(after)); ah.IncompatibleFeatures&image.IncompatCorrupt == 0 {
		t.Error("the corrupt bit is not set")
	}
	if _, err := zone.Open(path, image.Options{}); !errors.Is(err, image.ErrCorrupt) {
		t.Errorf("read/write open of the marked image: %v", err)
	}
	ro, err := zone.Open(path, image.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	zs, err := ro.Report(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(zs) != 1 || zs[0].WP != 64*kib {
		t.Errorf("zone 0 after the refused write: %+v, want its write pointer at 64 KiB", zs)
	}
}
