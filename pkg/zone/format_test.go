package zone

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
)

// zgoldenDir holds the images made by the reference qemu-img.
const zgoldenDir = "../../testdata/reference/create"

// zgoldenRange returns n bytes at off of testdata/reference/create/NAME.qcow2.
func zgoldenRange(tb testing.TB, name string, off int64, n int) []byte {
	tb.Helper()
	f, err := os.Open(filepath.Join(zgoldenDir, name+".qcow2"))
	if err != nil {
		tb.Fatalf("opening golden image: %v", err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		tb.Fatalf("reading %d bytes at %#x of %s: %v", n, off, name, err)
	}
	return b
}

// zgoldenExt returns the golden image's virtual size, the file offset of
// its zoned extension data, and that data.
func zgoldenExt(tb testing.TB, name string) (vsize uint64, at int, data []byte) {
	tb.Helper()
	b := zgoldenRange(tb, name, 0, 4096)
	h, err := image.ParseHeader(b)
	if err != nil {
		tb.Fatal(err)
	}
	// Walk the extensions by hand: magic, length, data padded to 8.
	off := int(h.HeaderLength)
	for off+8 <= len(b) {
		magic := binary.BigEndian.Uint32(b[off:])
		n := int(binary.BigEndian.Uint32(b[off+4:]))
		if magic == 0 {
			break
		}
		if magic == 0x007a6264 {
			return h.Size, off + 8, b[off+8 : off+8+n]
		}
		off += 8 + (n+7)/8*8
	}
	tb.Fatalf("%s: no zoned extension", name)
	return 0, 0, nil
}

type goldenZoned struct {
	name  string
	at    int // file offset of the extension data
	vsize uint64
	h     Header
}

// zonedGoldens lists the zoned reference images with the extension each
// should carry, from its NAME.cmd (values the reference clamps or defaults
// noted) and the layout of docs/format.md (table in cluster 3).
var zonedGoldens = []goldenZoned{
	// -o size=768M zone.size=64M capacity=64M conventional_zones=0
	// max_append_bytes=32M max_open_zones=6 max_active_zones=8
	{"iotest", 0x230, 768 << 20, Header{Model: 1, ZoneSize: 64 << 20, ZoneCapacity: 64 << 20, NrZones: 12,
		MaxActiveZones: 8, MaxOpenZones: 6, MaxAppendBytes: 32 << 20, MetaSize: 96, MetaOffset: 0x30000}},
	// size=512M zone.size=32M capacity=24M conventional_zones=4
	// max_active_zones=10 max_open_zones=5 max_append_bytes=128k
	{"conv-cap", 0x230, 512 << 20, Header{Model: 1, ZoneSize: 32 << 20, ZoneCapacity: 24 << 20, ConventionalZones: 4, NrZones: 16,
		MaxActiveZones: 10, MaxOpenZones: 5, MaxAppendBytes: 128 << 10, MetaSize: 128, MetaOffset: 0x30000}},
	// size=64M cluster_size=4k zone.size=1M max_active_zones=16: no
	// feature table, max_open follows max_active, append defaults to 64K.
	{"cluster4k", 0x78, 64 << 20, Header{Model: 1, ZoneSize: 1 << 20, ZoneCapacity: 1 << 20, NrZones: 64,
		MaxActiveZones: 16, MaxOpenZones: 16, MaxAppendBytes: 64 << 10, MetaSize: 512, MetaOffset: 3 * 4096}},
	// size=100M zone.size=32M: 4 zones, the last one 4M.
	{"small-last-zone", 0x230, 100 << 20, Header{Model: 1, ZoneSize: 32 << 20, ZoneCapacity: 32 << 20, NrZones: 4,
		MaxAppendBytes: 64 << 10, MetaSize: 32, MetaOffset: 0x30000}},
	// size=1G, all defaults: 256M zones.
	{"defaults", 0x230, 1 << 30, Header{Model: 1, ZoneSize: 256 << 20, ZoneCapacity: 256 << 20, NrZones: 4,
		MaxAppendBytes: 64 << 10, MetaSize: 32, MetaOffset: 0x30000}},
	// size=4T zone.size=64M: 65536 zones, a 512K table.
	{"many-zones", 0x230, 4 << 40, Header{Model: 1, ZoneSize: 64 << 20, ZoneCapacity: 64 << 20, NrZones: 65536,
		MaxAppendBytes: 64 << 10, MetaSize: 512 << 10, MetaOffset: 0x30000}},
	// size=2G cluster_size=2M refcount_bits=64 zone.size=128M conventional_zones=2
	{"cluster2m-rc64", 0x230, 2 << 30, Header{Model: 1, ZoneSize: 128 << 20, ZoneCapacity: 128 << 20, ConventionalZones: 2, NrZones: 16,
		MaxAppendBytes: 64 << 10, MetaSize: 128, MetaOffset: 3 * 2 << 20}},
}

func TestParseHeaderGolden(t *testing.T) {
	for _, g := range zonedGoldens {
		t.Run(g.name, func(t *testing.T) {
			vsize, at, data := zgoldenExt(t, g.name)
			if at != g.at || vsize != g.vsize || len(data) != 56 {
				t.Fatalf("extension of %d bytes at %#x, virtual size %d; want 56 at %#x, %d", len(data), at, vsize, g.at, g.vsize)
			}
			h, err := ParseHeader(data)
			if err != nil {
				t.Fatal(err)
			}
			if *h != g.h {
				t.Errorf("header\n got %+v\nwant %+v", *h, g.h)
			}
			if err := h.Validate(vsize); err != nil {
				t.Errorf("Validate: %v", err)
			}
			if m := h.Marshal(); !bytes.Equal(m, data) {
				t.Errorf("Marshal\n got %x\nwant %x", m, data)
			}
			// Marshal of the expected header gives the golden bytes too.
			if m := g.h.Marshal(); !bytes.Equal(m, data) {
				t.Errorf("Marshal of the expected header differs from the golden bytes")
			}
		})
	}
}

// TestHeaderLayout encodes a header with distinct bytes in every field and
// checks each field's position and big-endian order by hand.
func TestHeaderLayout(t *testing.T) {
	h := Header{
		Model:             0x01,
		Reserved:          [3]byte{0x02, 0x03, 0x04},
		ZoneSize:          0x0506070809101112,
		ZoneCapacity:      0x1314151617181920,
		ConventionalZones: 0x21222324,
		NrZones:           0x25262728,
		MaxActiveZones:    0x29303132,
		MaxOpenZones:      0x33343536,
		MaxAppendBytes:    0x37383940,
		MetaSize:          0x4142434445464748,
		MetaOffset:        0x4950515253545556,
	}
	want := []byte{
		0x01, 0x02, 0x03, 0x04,
		0x05, 0x06, 0x07, 0x08, 0x09, 0x10, 0x11, 0x12,
		0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x20,
		0x21, 0x22, 0x23, 0x24,
		0x25, 0x26, 0x27, 0x28,
		0x29, 0x30, 0x31, 0x32,
		0x33, 0x34, 0x35, 0x36,
		0x37, 0x38, 0x39, 0x40,
		0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
		0x49, 0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56,
	}
	if m := h.Marshal(); !bytes.Equal(m, want) {
		t.Errorf("Marshal\n got %x\nwant %x", m, want)
	}
	p, err := ParseHeader(want)
	if err != nil || *p != h {
		t.Errorf("ParseHeader: %+v, %v", p, err)
	}
}

func TestParseHeaderLength(t *testing.T) {
	for _, n := range []int{0, 1, 55, 57, 64, 112} {
		_, err := ParseHeader(make([]byte, n))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "length" || !strings.Contains(err.Error(), fmt.Sprint(n)) || !strings.Contains(err.Error(), "56") {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
}

// validZoned is iotest's extension: 768M in 12 zones of 64M.
func validZoned() Header {
	return Header{Model: 1, ZoneSize: 64 << 20, ZoneCapacity: 64 << 20, NrZones: 12,
		MaxActiveZones: 8, MaxOpenZones: 6, MaxAppendBytes: 32 << 20, MetaSize: 96, MetaOffset: 0x30000}
}

func TestValidate(t *testing.T) {
	const vsize = 768 << 20
	tests := []struct {
		name   string
		vsize  uint64
		mutate func(h *Header)
		field  string   // "" when valid
		values []string // must appear in the message
	}{
		{"valid", vsize, func(h *Header) {}, "", nil},
		{"model 0", vsize, func(h *Header) { h.Model = 0 }, "zoned", []string{"0"}},
		{"model 2", vsize, func(h *Header) { h.Model = 2 }, "zoned", []string{"2"}},
		{"model 255", vsize, func(h *Header) { h.Model = 255 }, "zoned", []string{"255"}},
		{"reserved byte 2", vsize, func(h *Header) { h.Reserved[1] = 0x40 }, "reserved", []string{"004000"}},
		{"zone_size 0", vsize, func(h *Header) { h.ZoneSize = 0 }, "zone_size", []string{"zone_size 0"}},
		{"zone_size 256", vsize, func(h *Header) { h.ZoneSize = 256; h.ZoneCapacity = 256 }, "zone_size", []string{"256"}},
		{"zone_size 48M", vsize, func(h *Header) { h.ZoneSize = 48 << 20 }, "zone_size", []string{"50331648"}},
		{"zone_size 2^63+512", vsize, func(h *Header) { h.ZoneSize = 1<<63 + 512 }, "zone_size", []string{"9223372036854776320"}},
		{"zone_capacity 0", vsize, func(h *Header) { h.ZoneCapacity = 0 }, "zone_capacity", []string{"zone_capacity 0", "67108864"}},
		{"zone_capacity above zone_size", vsize, func(h *Header) { h.ZoneCapacity = 128 << 20 }, "zone_capacity", []string{"134217728", "67108864"}},
		{"zone_capacity unaligned", vsize, func(h *Header) { h.ZoneCapacity = 64<<20 - 100 }, "zone_capacity", []string{"67108764", "67108864"}},
		{"nr_zones too small", vsize, func(h *Header) { h.NrZones = 11; h.MetaSize = 88 }, "nr_zones", []string{"nr_zones 11", "805306368", "67108864", "make 12"}},
		{"nr_zones too large", vsize, func(h *Header) { h.NrZones = 13; h.MetaSize = 104 }, "nr_zones", []string{"13", "12"}},
		// A partial last zone counts: 768M+512 needs 13 zones.
		{"partial last zone", vsize + 512, func(h *Header) {}, "nr_zones", []string{"12", "13"}},
		{"no zones", 0, func(h *Header) { h.NrZones = 0; h.MaxActiveZones = 0; h.MaxOpenZones = 0; h.MetaSize = 0 }, "nr_zones", []string{"nr_zones 0"}},
		{"too many zones", (MaxZones + 1) * 8192, func(h *Header) {
			h.ZoneSize, h.ZoneCapacity, h.MaxAppendBytes = 8192, 8192, 4096
			h.NrZones = MaxZones + 1
			h.MetaSize = 8 * (MaxZones + 1)
		}, "nr_zones", []string{"536870912", "536870911"}},
		{"conventional_zones = nr_zones", vsize, func(h *Header) { h.ConventionalZones = 12; h.MaxOpenZones = 0 }, "conventional_zones", []string{"conventional_zones 12", "nr_zones 12"}},
		{"conventional_zones = nr_zones - 1", vsize, func(h *Header) { h.ConventionalZones = 11; h.MaxOpenZones = 1 }, "", nil},
		{"max_active above nr_zones", vsize, func(h *Header) { h.MaxActiveZones = 13 }, "max_active_zones", []string{"13", "12"}},
		{"max_active = nr_zones", vsize, func(h *Header) { h.MaxActiveZones = 12 }, "", nil},
		{"max_open above the sequential zones", vsize, func(h *Header) { h.ConventionalZones = 4; h.MaxActiveZones = 0; h.MaxOpenZones = 9 }, "max_open_zones", []string{"9", "8"}},
		{"max_open = the sequential zones", vsize, func(h *Header) { h.ConventionalZones = 4; h.MaxActiveZones = 0; h.MaxOpenZones = 8 }, "", nil},
		{"max_open above max_active", vsize, func(h *Header) { h.MaxActiveZones = 5 }, "max_open_zones", []string{"6", "5"}},
		{"max_open = max_active", vsize, func(h *Header) { h.MaxActiveZones = 6 }, "", nil},
		{"max_open without max_active", vsize, func(h *Header) { h.MaxActiveZones = 0; h.MaxOpenZones = 12 }, "", nil},
		{"max_append unaligned", vsize, func(h *Header) { h.MaxAppendBytes = 1000 }, "max_append_bytes", []string{"1000", "512"}},
		{"max_append + 512 = capacity", vsize, func(h *Header) { h.MaxAppendBytes = 64<<20 - 512 }, "max_append_bytes", []string{"67108352", "67108864"}},
		{"max_append + 512 above capacity", vsize, func(h *Header) { h.MaxAppendBytes = 64 << 20 }, "max_append_bytes", []string{"67108864"}},
		{"max_append + 1024 = capacity", vsize, func(h *Header) { h.MaxAppendBytes = 64<<20 - 1024 }, "", nil},
		{"max_append 0", vsize, func(h *Header) { h.MaxAppendBytes = 0 }, "", nil},
		{"zonedmeta_size short", vsize, func(h *Header) { h.MetaSize = 95 }, "zonedmeta_size", []string{"95", "96"}},
		{"zonedmeta_size a cluster", vsize, func(h *Header) { h.MetaSize = 65536 }, "zonedmeta_size", []string{"65536", "96"}},
		{"zone_size 512", 4096, func(h *Header) {
			h.ZoneSize, h.ZoneCapacity, h.NrZones, h.MaxAppendBytes, h.MetaSize = 512, 512, 8, 0, 64
			h.MaxActiveZones, h.MaxOpenZones = 0, 0
		}, "max_append_bytes", []string{"512"}}, // 0 + 512 is not below a 512-byte capacity
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := validZoned()
			tc.mutate(&h)
			err := h.Validate(tc.vsize)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("got %v (%T), want a *FieldError for %s", err, err, tc.field)
			}
			if fe.Field != tc.field {
				t.Errorf("field %q, want %q: %v", fe.Field, tc.field, err)
			}
			for _, v := range tc.values {
				if !strings.Contains(err.Error(), v) {
					t.Errorf("message %q does not mention %q", err, v)
				}
			}
		})
	}
}

func TestEntryProblem(t *testing.T) {
	const (
		zs   = 1 << 20
		capa = 768 << 10 // not a power of two
	)
	// 4.5M: zones 0-1 conventional, 2-3 sequential, 4 sequential of 512K
	// (shorter than the capacity).
	h := Header{Model: 1, ZoneSize: zs, ZoneCapacity: capa, ConventionalZones: 2, NrZones: 5, MaxAppendBytes: 64 << 10, MetaSize: 40, MetaOffset: 0x30000}
	const vsize = 4<<20 + 512<<10
	if err := h.Validate(vsize); err != nil {
		t.Fatal(err)
	}
	zoneLen := func(i uint32) uint64 { return min(zs, vsize-uint64(i)*zs) }
	start := func(i uint32) uint64 { return uint64(i) * zs }
	tests := []struct {
		name  string
		zone  uint32
		entry uint64
		ok    bool
		about string // a word the message must contain
	}{
		{"conventional: start with the bit", 0, ConvBit, true, ""},
		{"conventional 1: start with the bit", 1, start(1) | ConvBit, true, ""},
		{"conventional: bit missing", 1, start(1), false, "lacks"},
		{"conventional: other offset", 1, (start(1) + 512) | ConvBit, false, "does not hold"},
		{"conventional: other zone's start", 0, start(1) | ConvBit, false, "does not hold"},
		{"sequential: conventional bit", 2, start(2) | ConvBit, false, "conventional bit"},
		{"sequential: empty", 2, start(2), true, ""},
		{"sequential: written", 2, start(2) + 4096, true, ""},
		{"sequential: 512 short of capacity", 3, start(3) + capa - 512, true, ""},
		{"sequential: full at capacity", 3, start(3) + capa, true, ""},
		{"sequential: between capacity and zone end", 3, start(3) + capa + 512, false, "capacity"},
		{"sequential: 512 before the zone end", 3, start(3) + zs - 512, false, "capacity"},
		{"sequential: finished at the zone end", 3, start(3) + zs, true, ""},
		{"sequential: beyond the zone", 3, start(3) + zs + 512, false, "outside"},
		{"sequential: before the zone", 3, start(3) - 512, false, "outside"},
		{"sequential: zero", 3, 0, false, "outside"},
		{"sequential: unaligned", 2, start(2) + 100, false, "512"},
		{"sequential: unaligned by one", 2, start(2) + 4097, false, "512"},
		{"sequential: high bits", 2, start(2) | 1<<63, false, "outside"},
		// The last zone is 512K, less than the capacity: full at its end.
		{"last zone: empty", 4, start(4), true, ""},
		{"last zone: written", 4, start(4) + 256<<10, true, ""},
		{"last zone: full", 4, start(4) + 512<<10, true, ""},
		{"last zone: beyond its end", 4, start(4) + 512<<10 + 512, false, "outside"},
		{"last zone: at capacity beyond its end", 4, start(4) + capa, false, "outside"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := h.EntryProblem(tc.zone, tc.entry, zoneLen(tc.zone))
			if tc.ok {
				if p != "" {
					t.Errorf("valid entry %#x of zone %d refused: %s", tc.entry, tc.zone, p)
				}
				return
			}
			if p == "" {
				t.Fatalf("entry %#x of zone %d accepted", tc.entry, tc.zone)
			}
			if !strings.Contains(p, fmt.Sprintf("zone %d", tc.zone)) || !strings.Contains(p, fmt.Sprintf("0x%x", tc.entry)) {
				t.Errorf("message %q does not name zone %d and entry 0x%x", p, tc.zone, tc.entry)
			}
			if !strings.Contains(p, tc.about) {
				t.Errorf("message %q does not mention %q", p, tc.about)
			}
		})
	}
}

func TestEncodeDecodeTable(t *testing.T) {
	entries := []uint64{0x0102030405060708, ConvBit | 0x4000000, 0, ^uint64(0)}
	want := []byte{
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
		0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x08, // bit 59 is bit 3 of the last byte
		0, 0, 0, 0, 0, 0, 0, 0,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	}
	if got := EncodeTable(entries); !bytes.Equal(got, want) {
		t.Errorf("EncodeTable\n got %x\nwant %x", got, want)
	}
	if got := DecodeTable(want); fmt.Sprint(got) != fmt.Sprint(entries) {
		t.Errorf("DecodeTable = %x", got)
	}
	// A trailing partial entry is ignored.
	if got := DecodeTable(append(append([]byte(nil), want...), 1, 2, 3)); len(got) != 4 {
		t.Errorf("DecodeTable of 35 bytes gives %d entries", len(got))
	}
	if got := DecodeTable(want[:7]); len(got) != 0 {
		t.Errorf("DecodeTable of 7 bytes gives %d entries", len(got))
	}
	if got := EncodeTable(nil); len(got) != 0 {
		t.Errorf("EncodeTable(nil) = %x", got)
	}
}

// TestInitialTableGolden compares the write-pointer table of every zoned
// reference image with InitialTable, and each entry with the value docs/format.md
// gives: i × zone_size, with bit 59 on the conventional zones, stored
// little-endian.
func TestInitialTableGolden(t *testing.T) {
	for _, g := range zonedGoldens {
		t.Run(g.name, func(t *testing.T) {
			h := g.h
			cs := uint64(65536)
			switch g.name {
			case "cluster4k":
				cs = 4096
			case "cluster2m-rc64":
				cs = 2 << 20
			}
			// The table and the rest of its clusters.
			n := int((h.MetaSize + cs - 1) / cs * cs)
			raw := zgoldenRange(t, g.name, int64(h.MetaOffset), n)
			table := raw[:h.MetaSize]
			if !bytes.Equal(raw[h.MetaSize:], make([]byte, n-int(h.MetaSize))) {
				t.Errorf("bytes after the table are not zero")
			}
			for i := uint64(0); i < uint64(h.NrZones); i++ {
				e := table[8*i : 8*i+8]
				want := i * h.ZoneSize
				if i < uint64(h.ConventionalZones) {
					want |= 1 << 59
				}
				var got uint64
				for j := 7; j >= 0; j-- {
					got = got<<8 | uint64(e[j])
				}
				if got != want {
					t.Fatalf("entry %d = %#x (bytes %x), want %#x", i, got, e, want)
				}
			}
			if enc := EncodeTable(h.InitialTable()); !bytes.Equal(enc, table) {
				t.Errorf("EncodeTable(InitialTable()) differs from the golden table")
			}
			dec := DecodeTable(table)
			if len(dec) != int(h.NrZones) {
				t.Fatalf("DecodeTable: %d entries", len(dec))
			}
			for i, e := range dec {
				zl := min(h.ZoneSize, g.vsize-uint64(i)*h.ZoneSize)
				if p := h.EntryProblem(uint32(i), e, zl); p != "" {
					t.Fatalf("golden entry %d: %s", i, p)
				}
			}
		})
	}
	// conv-cap's second entry, byte by byte: 32M | 1<<59 = 0x0800000002000000.
	b := zgoldenRange(t, "conv-cap", 0x30008, 8)
	if want := []byte{0, 0, 0, 2, 0, 0, 0, 8}; !bytes.Equal(b, want) {
		t.Errorf("conv-cap entry 1: %x, want %x", b, want)
	}
}

func TestInitialTable(t *testing.T) {
	h := Header{ZoneSize: 4096, NrZones: 5, ConventionalZones: 2}
	want := []uint64{ConvBit, 4096 | ConvBit, 8192, 12288, 16384}
	if got := h.InitialTable(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("InitialTable = %x, want %x", got, want)
	}
	if got := (&Header{ZoneSize: 4096}).InitialTable(); len(got) != 0 {
		t.Errorf("no zones: %x", got)
	}
	if got := (&Header{ZoneSize: 1 << 40, NrZones: 3}).ZoneStart(2); got != 2<<40 {
		t.Errorf("ZoneStart(2) = %#x", got)
	}
}
