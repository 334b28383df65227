package image_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
)

func sampleEntries() []image.SnapshotEntry {
	extra := make([]byte, 24)
	binary.BigEndian.PutUint64(extra[8:], 64<<20)
	return []image.SnapshotEntry{
		{L1Offset: 0x50000, L1Size: 1, DateSec: 1700000000, DateNsec: 5000, Extra: extra, ID: "1", Name: "first"},
		{L1Offset: 0x70000, L1Size: 2, VMClockNsec: 3_723_004_000_000, VMState32: 9, ID: "2", Name: ""},
		{L1Offset: 0x90000, L1Size: 3, Extra: append(append([]byte{}, extra...), "zqimg"...), ID: "17", Name: "with own extra"},
	}
}

func TestSnapshotTableRoundTrip(t *testing.T) {
	es := sampleEntries()
	b := image.MarshalSnapshotTable(es)
	if uint64(len(b)) != image.SnapshotTableSize(es) || len(b)%8 != 0 {
		t.Fatalf("table of %d bytes, size says %d", len(b), image.SnapshotTableSize(es))
	}
	got, err := image.ParseSnapshotTable(b, uint32(len(es)), 0x10000, 65536)
	if err != nil {
		t.Fatal(err)
	}
	for i := range es {
		g, w := got[i], es[i]
		if g.L1Offset != w.L1Offset || g.L1Size != w.L1Size || g.ID != w.ID || g.Name != w.Name || g.DateSec != w.DateSec ||
			g.DateNsec != w.DateNsec || g.VMClockNsec != w.VMClockNsec || g.VMState32 != w.VMState32 || !bytes.Equal(g.Extra, w.Extra) {
			t.Fatalf("entry %d: %+v, want %+v", i, g, w)
		}
	}
	if ds, ok := got[0].DiskSize(); !ok || ds != 64<<20 {
		t.Fatalf("disk size %d %v", ds, ok)
	}
	if got[1].ICount() != -1 || got[0].ICount() != 0 {
		t.Fatalf("icount: %d, %d", got[1].ICount(), got[0].ICount())
	}
	if got[1].VMStateSize() != 9 || got[0].VMStateSize() != 0 {
		t.Fatalf("vm state size")
	}
	if string(got[2].OwnExtra()) != "zqimg" || got[0].OwnExtra() != nil {
		t.Fatalf("own extra %q", got[2].OwnExtra())
	}
	if i, ok := image.FindSnapshot(got, "17"); !ok || i != 2 {
		t.Fatal("find by ID")
	}
	if i, ok := image.FindSnapshot(got, "first"); !ok || i != 0 {
		t.Fatal("find by name")
	}
	if _, ok := image.FindSnapshotByName(got, "17"); ok {
		t.Fatal("found by name an ID")
	}
}

// TestSnapshotTableErrors: malformed tables are refused with an error
// naming the entry and the file offset.
func TestSnapshotTableErrors(t *testing.T) {
	b := image.MarshalSnapshotTable(sampleEntries())
	cases := []struct {
		name string
		mut  func(b []byte) []byte
		n    uint32
		want string
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)-20] }, 3, "entry 2 (85 bytes) extends past the end of the table (188 bytes) (at offset 0x10078)"},
		{"unaligned L1", func(b []byte) []byte { binary.BigEndian.PutUint64(b[0:], 0x50001); return b }, 3, "L1 table offset 0x50001 is not cluster aligned (at offset 0x10000)"},
		{"huge extra", func(b []byte) []byte { binary.BigEndian.PutUint32(b[36:], 5000); return b }, 3, "entry 0 has 5000 bytes of extra data (at most 1024) (at offset 0x10024)"},
		{"huge L1", func(b []byte) []byte { binary.BigEndian.PutUint32(b[8:], 1<<30); return b }, 3, "L1 table of 1073741824 entries is too large (at offset 0x10008)"},
		{"more entries", func(b []byte) []byte { return b }, 4, "entry 3 is truncated"},
		{"too many", func(b []byte) []byte { return b }, image.MaxSnapshots + 1, "too many snapshots"},
	}
	for _, c := range cases {
		_, err := image.ParseSnapshotTable(c.mut(append([]byte(nil), b...)), c.n, 0x10000, 65536)
		var fe *image.FormatError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a FormatError with %q", c.name, err, c.want)
		}
	}
}

func FuzzParseSnapshotTable(f *testing.F) {
	f.Add(image.MarshalSnapshotTable(sampleEntries()), uint32(3))
	f.Add([]byte{}, uint32(1))
	f.Fuzz(func(t *testing.T, b []byte, n uint32) {
		es, err := image.ParseSnapshotTable(b, n%70000, 0, 512)
		if err != nil {
			return
		}
		// What parses marshals back to a prefix-equal table, and parses again.
		m := image.MarshalSnapshotTable(es)
		es2, err := image.ParseSnapshotTable(m, uint32(len(es)), 0, 512)
		if err != nil || len(es2) != len(es) {
			t.Fatalf("re-parse: %v", err)
		}
		for i := range es {
			if es[i].ID != es2[i].ID || es[i].Name != es2[i].Name || !bytes.Equal(es[i].Extra, es2[i].Extra) || es[i].L1Offset != es2[i].L1Offset {
				t.Fatalf("entry %d changed", i)
			}
		}
	})
}
