package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// goldenDir holds the images made by the reference qemu-img (see its
// README.md); the tests only read them.
const goldenDir = "../../testdata/reference/create"

// golden returns the bytes of testdata/reference/create/NAME.qcow2.
func golden(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(goldenDir, name+".qcow2"))
	if err != nil {
		tb.Fatalf("reading golden image: %v", err)
	}
	return b
}

// goldenPrefix returns the first n bytes of a golden image (for the large ones).
func goldenPrefix(tb testing.TB, name string, n int) []byte {
	tb.Helper()
	f, err := os.Open(filepath.Join(goldenDir, name+".qcow2"))
	if err != nil {
		tb.Fatalf("opening golden image: %v", err)
	}
	defer f.Close()
	b := make([]byte, n)
	m, _ := f.ReadAt(b, 0)
	return b[:m]
}

func be64(b []byte, off int) uint64 { return binary.BigEndian.Uint64(b[off:]) }
func be32(b []byte, off int) uint32 { return binary.BigEndian.Uint32(b[off:]) }
func put32(b []byte, off int, v uint32) {
	binary.BigEndian.PutUint32(b[off:], v)
}
func put64(b []byte, off int, v uint64) {
	binary.BigEndian.PutUint64(b[off:], v)
}

// TestParseHeaderGolden checks the decoded fields of the reference images
// against the values implied by the qemu-img command that made each one
// (see NAME.cmd) and the layout docs/format.md describes (header, refcount
// table, refcount block, [write-pointer table,] L1 table), and that
// Marshal gives back the exact header bytes.
func TestParseHeaderGolden(t *testing.T) {
	const (
		K = 1 << 10
		M = 1 << 20
		G = 1 << 30
		T = 1 << 40
	)
	tests := []struct {
		name        string
		version     uint32
		clusterBits uint32
		size        uint64
		l1Size      uint32 // ceil(size / (cluster size * L2 entries))
		l1Off       uint64
		rtOff       uint64
		order       uint32
		incompat    uint64
		headerLen   uint32
		l2Entries   uint64
	}{
		// 1G, 64K clusters: an L2 table maps 8192*64K = 512M, so 2 L1 entries.
		{"plain-v2", 2, 16, 1 * G, 2, 3 * 64 * K, 64 * K, 4, 0, 72, 8192},
		{"plain-default", 3, 16, 1 * G, 2, 3 * 64 * K, 64 * K, 4, 0, 112, 8192},
		// Extended L2: 4096 entries per table map 256M, so 4 L1 entries.
		{"plain-extl2", 3, 16, 1 * G, 4, 3 * 64 * K, 64 * K, 4, IncompatExtL2, 112, 4096},
		// 512-byte clusters: 64 entries map 32K; 256M/32K = 8192 entries.
		{"plain-c512-rc1", 3, 9, 256 * M, 8192, 3 * 512, 512, 0, 0, 112, 64},
		// Zoned: the write-pointer table takes cluster 3, the L1 table follows.
		{"iotest", 3, 16, 768 * M, 2, 4 * 64 * K, 64 * K, 4, IncompatZoned, 112, 8192},
		{"conv-cap", 3, 16, 512 * M, 1, 4 * 64 * K, 64 * K, 4, IncompatZoned, 112, 8192},
		{"small-last-zone", 3, 16, 100 * M, 1, 4 * 64 * K, 64 * K, 4, IncompatZoned, 112, 8192},
		{"defaults", 3, 16, 1 * G, 2, 4 * 64 * K, 64 * K, 4, IncompatZoned, 112, 8192},
		// 4K clusters: 512 entries map 2M; 64M/2M = 32.
		{"cluster4k", 3, 12, 64 * M, 32, 4 * 4 * K, 4 * K, 4, IncompatZoned, 112, 512},
		// 4T in 64M zones: 65536 zones, a table of 512K = 8 clusters.
		{"many-zones", 3, 16, 4 * T, 8192, 11 * 64 * K, 64 * K, 4, IncompatZoned, 112, 8192},
		// 2M clusters, 64-bit refcounts: an L2 table maps 256K*2M = 512G.
		{"cluster2m-rc64", 3, 21, 2 * G, 1, 4 * 2 * M, 2 * M, 6, IncompatZoned, 112, 262144},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := goldenPrefix(t, tc.name, 4096)
			h, err := ParseHeader(b)
			if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			want := Header{
				Magic:                 0x514649fb,
				Version:               tc.version,
				ClusterBits:           tc.clusterBits,
				Size:                  tc.size,
				L1Size:                tc.l1Size,
				L1TableOffset:         tc.l1Off,
				RefcountTableOffset:   tc.rtOff,
				RefcountTableClusters: 1,
				IncompatibleFeatures:  tc.incompat,
				RefcountOrder:         tc.order,
				HeaderLength:          tc.headerLen,
			}
			if !reflect.DeepEqual(*h, want) {
				t.Errorf("header\n got %+v\nwant %+v", *h, want)
			}
			if got := h.ClusterSize(); got != 1<<tc.clusterBits {
				t.Errorf("ClusterSize = %d", got)
			}
			if got := h.L2Entries(); got != tc.l2Entries {
				t.Errorf("L2Entries = %d, want %d", got, tc.l2Entries)
			}
			if got := h.ExtendedL2(); got != (tc.incompat&IncompatExtL2 != 0) {
				t.Errorf("ExtendedL2 = %v", got)
			}
			m := h.Marshal()
			if !bytes.Equal(m, b[:tc.headerLen]) {
				t.Errorf("Marshal differs from the golden header\n got %x\nwant %x", m, b[:tc.headerLen])
			}
			h2, err := ParseHeader(append(m, make([]byte, 64)...))
			if err != nil || !reflect.DeepEqual(h2, h) {
				t.Errorf("reparse of Marshal: %+v, %v", h2, err)
			}
		})
	}
}

// validV3 returns a valid version 3 header (64K clusters, 1G), from the
// golden plain-default image, padded to one cluster.
func validV3(t *testing.T) []byte {
	t.Helper()
	b := goldenPrefix(t, "plain-default", 65536)
	if _, err := ParseHeader(b); err != nil {
		t.Fatalf("golden header does not parse: %v", err)
	}
	return b
}

func TestParseHeaderErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(b []byte) []byte
		off    int64  // file offset the error must name
		substr string // must appear in the message
	}{
		{"empty", func(b []byte) []byte { return nil }, 0, "too short"},
		{"71 bytes", func(b []byte) []byte { return b[:71] }, 0, "71 bytes"},
		{"bad magic", func(b []byte) []byte { put32(b, 0, 0x514649fa); return b }, 0, "0x514649fa"},
		{"raw zeroes", func(b []byte) []byte { return make([]byte, 512) }, 0, "magic"},
		{"version 1", func(b []byte) []byte { put32(b, 4, 1); return b }, 4, "version 1"},
		{"version 4", func(b []byte) []byte { put32(b, 4, 4); return b }, 4, "version 4"},
		{"version 0", func(b []byte) []byte { put32(b, 4, 0); return b }, 4, "version 0"},
		{"cluster_bits 8", func(b []byte) []byte { put32(b, 20, 8); return b }, 20, "2^8"},
		{"cluster_bits 22", func(b []byte) []byte { put32(b, 20, 22); return b }, 20, "2^22"},
		{"cluster_bits 2^31", func(b []byte) []byte { put32(b, 20, 1<<31); return b }, 20, "cluster"},
		{"v3 cut at 100 bytes", func(b []byte) []byte { return b[:100] }, 0, "version 3"},
		{"header_length 103", func(b []byte) []byte { put32(b, 100, 103); return b }, 100, "103"},
		{"header_length 0", func(b []byte) []byte { put32(b, 100, 0); return b }, 100, "header_length 0"},
		{"header_length beyond 512-byte cluster", func(b []byte) []byte {
			put32(b, 20, 9)
			put32(b, 36, 1<<15) // keep L1 large enough for 1G with 512-byte clusters
			put64(b, 40, 0x600)
			put64(b, 48, 0x200)
			put32(b, 100, 520)
			return b
		}, 100, "520"},
		{"header_length beyond 64K cluster", func(b []byte) []byte { put32(b, 100, 65544); return b }, 100, "65544"},
		{"header_length beyond buffer", func(b []byte) []byte { put32(b, 100, 200); return b[:150] }, 0, "header_length 200"},
		{"refcount_order 7", func(b []byte) []byte { put32(b, 96, 7); return b }, 96, "refcount_order 7"},
		{"refcount_order 2^32-1", func(b []byte) []byte { put32(b, 96, ^uint32(0)); return b }, 96, "refcount_order"},
		{"zstd without the bit", func(b []byte) []byte { b[104] = CompressionZstd; return b }, 72, "zstd"},
		{"bit without zstd", func(b []byte) []byte { put64(b, 72, IncompatCompression); return b }, 72, "zlib"},
		{"compression type 2", func(b []byte) []byte { b[104] = 2; return b }, 104, "compression type 2"},
		{"compression type 255 with the bit", func(b []byte) []byte {
			b[104] = 255
			put64(b, 72, IncompatCompression)
			return b
		}, 104, "255"},
		{"backing name offset beyond the cluster", func(b []byte) []byte {
			put64(b, 8, 65537)
			put32(b, 16, 0)
			return b
		}, 8, "65537"},
		{"backing name beyond the cluster", func(b []byte) []byte {
			put64(b, 8, 65000)
			put32(b, 16, 537)
			return b
		}, 8, "length 537"},
		{"backing name of 1024 bytes", func(b []byte) []byte {
			put64(b, 8, 1024)
			put32(b, 16, 1024)
			return b
		}, 8, "1024"},
		{"backing name offset near 2^64", func(b []byte) []byte {
			put64(b, 8, ^uint64(0)-3)
			put32(b, 16, 10)
			return b
		}, 8, "backing"},
		{"unaligned L1 table", func(b []byte) []byte { put64(b, 40, 0x30200); return b }, 40, "0x30200"},
		{"L1 table larger than 32M", func(b []byte) []byte { put32(b, 36, 32<<20/8+1); return b }, 36, "4194305"},
		{"L1 table beyond 2^56", func(b []byte) []byte { put64(b, 40, 1<<56); return b }, 40, "0x100000000000000"},
		{"unaligned refcount table", func(b []byte) []byte { put64(b, 48, 0x10200); return b }, 48, "0x10200"},
		{"refcount table at 0", func(b []byte) []byte { put64(b, 48, 0); return b }, 48, "is 0"},
		{"refcount table of 0 clusters", func(b []byte) []byte { put32(b, 56, 0); return b }, 56, "no clusters"},
		// 8M / 64K = 128 clusters is QEMU's limit.
		{"refcount table of 129 clusters", func(b []byte) []byte { put32(b, 56, 129); return b }, 56, "129"},
		{"refcount table beyond 2^56", func(b []byte) []byte { put64(b, 48, 1<<56-1<<16); return b }, 48, "out of range"},
		// The snapshot table fields as QEMU's qcow2_validate_table checks
		// them, with its words.
		{"65537 snapshots", func(b []byte) []byte { put32(b, 60, 65537); return b }, 60, "Snapshot table too large: 65537"},
		{"2^32-1 snapshots", func(b []byte) []byte { put32(b, 60, ^uint32(0)); return b }, 60, "Snapshot table too large: 4294967295"},
		{"unaligned snapshot table", func(b []byte) []byte {
			put32(b, 60, 1)
			put64(b, 64, 0x40100)
			return b
		}, 64, "Snapshot table offset invalid: 0x40100 is not cluster aligned"},
		{"unaligned snapshot offset without snapshots", func(b []byte) []byte { put64(b, 64, 0x123); return b }, 64, "Snapshot table offset invalid: 0x123"},
		{"snapshot table wrapping 2^64", func(b []byte) []byte {
			put32(b, 60, 1)
			put64(b, 64, 0xffffffffffff0000)
			return b
		}, 64, "Snapshot table offset invalid: 1 snapshots at 0xffffffffffff0000"},
		{"snapshot table offset past 2^63 without snapshots", func(b []byte) []byte { put64(b, 64, 1<<63); return b }, 64, "Snapshot table offset invalid"},
		{"snapshot table ending past 2^63-1", func(b []byte) []byte {
			put32(b, 60, MaxSnapshots)
			put64(b, 64, (1<<63-MaxSnapshots*40)&^0xffff+0x10000)
			return b
		}, 64, "Snapshot table offset invalid: 65536 snapshots"},
		{"virtual size beyond 2^62", func(b []byte) []byte { put64(b, 24, 1<<62+512); return b }, 24, "too large"},
		// 2^62 with 64K clusters needs 2^33 L1 entries: more than QEMU's
		// limit of 2^31-1 ("Image is too big").
		{"virtual size 2^62", func(b []byte) []byte { put64(b, 24, 1<<62); return b }, 24, "more than 2147483647"},
		// 2^60 needs 2^31 entries: also too big. 2^60-2^29 needs 2^31-1
		// and fails on the L1 table instead.
		{"virtual size 2^60", func(b []byte) []byte { put64(b, 24, 1<<60); return b }, 24, "too large"},
		{"virtual size 2^60-2^29", func(b []byte) []byte { put64(b, 24, 1<<60-1<<29); return b }, 36, "L1 table too small"},
		// 1G needs 2 entries with 64K clusters.
		{"L1 table too small", func(b []byte) []byte { put32(b, 36, 1); return b }, 36, "1 entries"},
		{"L1 table empty", func(b []byte) []byte { put32(b, 36, 0); return b }, 36, "needs 2"},
		// With extended L2 an L2 table maps half as much: 1G needs 4 entries.
		{"L1 table too small for extended L2", func(b []byte) []byte {
			put64(b, 72, IncompatExtL2)
			put32(b, 36, 3)
			return b
		}, 36, "needs 4"},
		{"v2: unaligned L1 table", func(b []byte) []byte {
			put32(b, 4, 2)
			put64(b, 40, 0x30008)
			return b[:72]
		}, 40, "0x30008"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mutate(validV3(t))
			h, err := ParseHeader(b)
			if err == nil {
				t.Fatalf("ParseHeader accepted the header: %+v", h)
			}
			if h != nil {
				t.Errorf("ParseHeader returned a header with its error")
			}
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *FormatError", err, err)
			}
			if fe.Off != tc.off {
				t.Errorf("error names offset %d, want %d: %v", fe.Off, tc.off, err)
			}
			if !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("error %q does not mention %q", err, tc.substr)
			}
			if fe.Off >= 0 && !strings.Contains(err.Error(), "offset 0x") {
				t.Errorf("error %q does not print its offset", err)
			}
		})
	}
}

// TestParseHeaderAccepts covers the edges of each rule from the valid side.
func TestParseHeaderAccepts(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(b []byte) []byte
		check  func(t *testing.T, h *Header)
	}{
		{"cluster_bits 21", func(b []byte) []byte {
			put32(b, 20, 21)
			put64(b, 40, 2<<20)
			put64(b, 48, 4<<20)
			return b
		}, func(t *testing.T, h *Header) {
			if h.ClusterSize() != 2<<20 || h.L2Entries() != 1<<18 {
				t.Errorf("cluster size %d, %d L2 entries", h.ClusterSize(), h.L2Entries())
			}
		}},
		{"cluster_bits 9", func(b []byte) []byte {
			put32(b, 20, 9)
			put32(b, 36, 1<<15) // 1G / (512*64)
			put64(b, 40, 0x600)
			put64(b, 48, 0x200)
			return b
		}, nil},
		{"header_length 104", func(b []byte) []byte {
			put32(b, 100, 104)
			b[104] = 0xff // beyond the header: not a compression type
			return b
		}, func(t *testing.T, h *Header) {
			if h.CompressionType != 0 || h.Extra != nil {
				t.Errorf("compression type %d, extra %x", h.CompressionType, h.Extra)
			}
		}},
		{"header_length of a whole cluster", func(b []byte) []byte { put32(b, 100, 65536); return b }, func(t *testing.T, h *Header) {
			if len(h.Extra) != 65536-112 {
				t.Errorf("extra has %d bytes", len(h.Extra))
			}
		}},
		{"refcount_order 6", func(b []byte) []byte { put32(b, 96, 6); return b }, nil},
		{"refcount_order 0", func(b []byte) []byte { put32(b, 96, 0); return b }, nil},
		{"zstd with the bit", func(b []byte) []byte {
			b[104] = CompressionZstd
			put64(b, 72, IncompatCompression)
			return b
		}, func(t *testing.T, h *Header) {
			if h.CompressionType != CompressionZstd {
				t.Errorf("compression type %d", h.CompressionType)
			}
		}},
		{"65536 snapshots", func(b []byte) []byte {
			put32(b, 60, 65536)
			put64(b, 64, 0x50000)
			return b
		}, nil},
		// QEMU's bound is 2^63-1 for the end of 65536 entries of 40 bytes.
		{"snapshot table ending at 2^63-1", func(b []byte) []byte {
			put32(b, 60, MaxSnapshots)
			put64(b, 64, (1<<63-1-MaxSnapshots*40)&^0xffff)
			return b
		}, nil},
		{"unaligned L1 offset with an empty L1 table", func(b []byte) []byte {
			put64(b, 24, 0)
			put32(b, 36, 0)
			put64(b, 40, 0x123)
			return b
		}, nil},
		{"backing name at the end of the cluster", func(b []byte) []byte {
			put64(b, 8, 65536-1023)
			put32(b, 16, 1023)
			return b
		}, func(t *testing.T, h *Header) {
			if h.BackingFileOffset != 65536-1023 || h.BackingFileSize != 1023 {
				t.Errorf("backing %d+%d", h.BackingFileOffset, h.BackingFileSize)
			}
		}},
		{"refcount table of 128 clusters", func(b []byte) []byte { put32(b, 56, 128); return b }, nil},
		{"L1 table of exactly 32M", func(b []byte) []byte { put32(b, 36, 32<<20/8); return b }, nil},
		{"v2 ignores bytes 72 onwards", func(b []byte) []byte {
			put32(b, 4, 2)
			for i := 72; i < 112; i++ {
				b[i] = 0xff
			}
			return b
		}, func(t *testing.T, h *Header) {
			if h.HeaderLength != 72 || h.RefcountOrder != 4 || h.IncompatibleFeatures != 0 || h.CompressionType != 0 {
				t.Errorf("v2 implied fields: %+v", h)
			}
			if m := h.Marshal(); len(m) != 72 {
				t.Errorf("v2 header marshals to %d bytes", len(m))
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mutate(validV3(t))
			h, err := ParseHeader(b)
			if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			if tc.check != nil {
				tc.check(t, h)
			}
			// Whatever was accepted round-trips.
			m := h.Marshal()
			n := int(h.HeaderLength)
			if !bytes.Equal(m, b[:n]) {
				t.Errorf("Marshal differs from the input header")
			}
		})
	}
}

// TestHeaderExtraBytes checks that header bytes this package does not know
// are kept and written back (qcow2.rst: "preserving its value when
// rewriting the image header").
func TestHeaderExtraBytes(t *testing.T) {
	for _, n := range []uint32{105, 108, 112, 120, 200} {
		for _, fill := range []byte{0, 0xa5} {
			b := validV3(t)
			put32(b, 100, n)
			for i := 105; i < int(n); i++ {
				if fill != 0 {
					b[i] = fill ^ byte(i)
				}
			}
			h, err := ParseHeader(b)
			if err != nil {
				t.Fatalf("length %d: %v", n, err)
			}
			m := h.Marshal()
			if len(m) != int(n) {
				t.Fatalf("length %d: Marshal gives %d bytes", n, len(m))
			}
			want := append([]byte(nil), b[:n]...)
			if n > HeaderV3Size {
				// QEMU keeps the unknown fields after byte 112 and
				// rewrites the padding 105..111 as zeroes.
				clear(want[105:112])
			}
			if !bytes.Equal(m, want) {
				t.Errorf("length %d fill %#x:\n got %x\nwant %x", n, fill, m[104:], want[104:])
			}
		}
	}
}

func TestExtensionsGolden(t *testing.T) {
	featData := func(b []byte) []byte { return b[0x78 : 0x78+9*48] }
	tests := []struct {
		name  string
		magic []uint32
		size  []int
	}{
		{"plain-v2", nil, nil},
		{"plain-default", []uint32{0x6803f857}, []int{432}},
		{"plain-extl2", []uint32{0x6803f857}, []int{432}},
		{"plain-c512-rc1", nil, nil},
		{"iotest", []uint32{0x6803f857, 0x007a6264}, []int{432, 56}},
		{"conv-cap", []uint32{0x6803f857, 0x007a6264}, []int{432, 56}},
		{"cluster2m-rc64", []uint32{0x6803f857, 0x007a6264}, []int{432, 56}},
		// 4K clusters: QEMU leaves the feature name table out.
		{"cluster4k", []uint32{0x007a6264}, []int{56}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := goldenPrefix(t, tc.name, 2<<20)
			h, err := ParseHeader(b)
			if err != nil {
				t.Fatal(err)
			}
			cs := int(h.ClusterSize())
			exts, err := ParseExtensions(b, int(h.HeaderLength), cs)
			if err != nil {
				t.Fatalf("ParseExtensions: %v", err)
			}
			if len(exts) != len(tc.magic) {
				t.Fatalf("%d extensions, want %d", len(exts), len(tc.magic))
			}
			off := int(h.HeaderLength)
			for i, e := range exts {
				if e.Magic != tc.magic[i] || len(e.Data) != tc.size[i] {
					t.Errorf("extension %d: magic %#x, %d bytes; want %#x, %d", i, e.Magic, len(e.Data), tc.magic[i], tc.size[i])
				}
				// Independently of the parser: the magic and length sit at off,
				// the data right after, padded to 8 bytes.
				if be32(b, off) != e.Magic || int(be32(b, off+4)) != len(e.Data) || !bytes.Equal(b[off+8:off+8+len(e.Data)], e.Data) {
					t.Errorf("extension %d does not match the bytes at 0x%x", i, off)
				}
				off += 8 + (len(e.Data)+7)/8*8
			}
			// The end marker follows.
			if be64(b, off) != 0 {
				t.Errorf("no end marker at 0x%x", off)
			}
			if len(exts) > 0 && exts[0].Magic == ExtFeatureTable && !bytes.Equal(exts[0].Data, featData(b)) {
				t.Errorf("feature table data differs")
			}
			// Rebuilding the header cluster with Marshal and AppendExtension
			// gives the golden cluster byte for byte.
			hc := h.Marshal()
			for _, e := range exts {
				hc = AppendExtension(hc, e)
			}
			hc = AppendExtension(hc, Extension{Magic: ExtEnd})
			hc = append(hc, make([]byte, cs-len(hc))...)
			if !bytes.Equal(hc, b[:cs]) {
				t.Errorf("rebuilt header cluster differs from the golden one")
			}
		})
	}
}

func TestZonedExtensionBytes(t *testing.T) {
	b := golden(t, "iotest")
	exts, err := ParseExtensions(b, 112, 65536)
	if err != nil {
		t.Fatal(err)
	}
	z := exts[1]
	// iotest.cmd: zone.size=64M, capacity 64M, 0 conventional, 768M/64M = 12
	// zones, max_active 8, max_open 6, max_append 32M, table of 96 bytes in
	// cluster 3.
	want := make([]byte, 56)
	want[0] = 1
	put64(want, 4, 64<<20)
	put64(want, 12, 64<<20)
	put32(want, 20, 0)
	put32(want, 24, 12)
	put32(want, 28, 8)
	put32(want, 32, 6)
	put32(want, 36, 32<<20)
	put64(want, 40, 96)
	put64(want, 48, 3*65536)
	if z.Magic != ExtZoned || !bytes.Equal(z.Data, want) {
		t.Errorf("zoned extension %#x\n got %x\nwant %x", z.Magic, z.Data, want)
	}
}

// ext builds one extension by hand: magic, length, data, then pad bytes.
func ext(magic uint32, length uint32, data []byte, pad []byte) []byte {
	b := make([]byte, 8)
	put32(b, 0, magic)
	put32(b, 4, length)
	b = append(b, data...)
	return append(b, pad...)
}

func TestParseExtensions(t *testing.T) {
	prefix := make([]byte, 16) // stands for the header; parsing starts at 16
	cat := func(parts ...[]byte) []byte {
		out := append([]byte(nil), prefix...)
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	unknown := []byte{1, 2, 3, 4, 5}
	tests := []struct {
		name   string
		b      []byte
		end    int // -1: len(b)
		want   []Extension
		errOff int64 // -1: no error
	}{
		{"empty area", cat(), -1, nil, -1},
		{"only an end marker", cat(ext(0, 0, nil, nil)), -1, nil, -1},
		{"end marker with a length", cat(ext(0, 8, nil, nil), ext(0xabcd, 0, nil, nil)), -1, nil, -1},
		// QEMU checks the length of the end marker too.
		{"end marker with a length past the end", cat(ext(0, 99, nil, nil), ext(0xabcd, 0, nil, nil)), -1, nil, 16},
		{"data padded to 8", cat(
			ext(0x11111111, 5, unknown, []byte{0xee, 0xee, 0xee}),
			ext(0x22222222, 8, []byte("abcdefgh"), nil),
			ext(0, 0, nil, nil)), -1,
			[]Extension{{0x11111111, unknown, 16}, {0x22222222, []byte("abcdefgh"), 32}}, -1},
		{"zero length", cat(ext(0x33333333, 0, nil, nil), ext(0x44444444, 1, []byte{9}, make([]byte, 7))), -1,
			[]Extension{{0x33333333, []byte{}, 16}, {0x44444444, []byte{9}, 24}}, -1},
		{"no end marker", cat(ext(0x55555555, 3, []byte{7, 8, 9}, make([]byte, 5))), -1,
			[]Extension{{0x55555555, []byte{7, 8, 9}, 16}}, -1},
		// QEMU reads an extension header wherever the area goes on.
		{"trailing bytes shorter than an extension header", cat(ext(0x55555555, 0, nil, nil), []byte{1, 2, 3, 4, 5, 6, 7}), -1, nil, 24},
		{"padding past the end ends the area", cat(ext(0x55555555, 1, []byte{1}, nil)), -1,
			[]Extension{{0x55555555, []byte{1}, 16}}, -1},
		{"data after the end marker is ignored", cat(ext(0, 0, nil, nil), ext(0x66666666, 1, []byte{1}, make([]byte, 7))), -1, nil, -1},
		{"too large", cat(ext(0x77777777, 9, []byte{1, 2, 3, 4, 5, 6, 7, 8}, nil)), -1, nil, 16},
		{"second too large", cat(ext(0x77777777, 0, nil, nil), ext(0x88888888, 0xffffffff, nil, nil)), -1, nil, 24},
		{"exactly fills the area, unpadded", cat(ext(0x99999999, 3, []byte{1, 2, 3}, nil)), -1,
			[]Extension{{0x99999999, []byte{1, 2, 3}, 16}}, -1},
		{"area shorter than the buffer", cat(ext(0x99999999, 8, make([]byte, 8), nil)), 16 + 12, nil, 16},
		{"end beyond the buffer is clamped", cat(ext(0xaaaaaaaa, 2, []byte{5, 6}, nil)), 1 << 20,
			[]Extension{{0xaaaaaaaa, []byte{5, 6}, 16}}, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			end := tc.end
			if end < 0 {
				end = len(tc.b)
			}
			got, err := ParseExtensions(tc.b, 16, end)
			if tc.errOff >= 0 {
				var fe *FormatError
				if !errors.As(err, &fe) {
					t.Fatalf("got %v, %v; want a *FormatError", got, err)
				}
				if fe.Off != tc.errOff || !strings.Contains(err.Error(), "Header extension too large") {
					t.Errorf("error %v at %d, want offset %d", err, fe.Off, tc.errOff)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d extensions %v, want %v", len(got), got, tc.want)
			}
			for i := range got {
				if got[i].Magic != tc.want[i].Magic || !bytes.Equal(got[i].Data, tc.want[i].Data) || got[i].Off != tc.want[i].Off {
					t.Errorf("extension %d: got %#x %x, want %#x %x", i, got[i].Magic, got[i].Data, tc.want[i].Magic, tc.want[i].Data)
				}
			}
		})
	}
}

func TestParseExtensionsCopiesData(t *testing.T) {
	b := ext(0x12345678, 4, []byte{1, 2, 3, 4}, make([]byte, 4))
	exts, err := ParseExtensions(b, 0, len(b))
	if err != nil || len(exts) != 1 {
		t.Fatal(exts, err)
	}
	b[8] = 0xff
	if exts[0].Data[0] != 1 {
		t.Errorf("extension data aliases the input buffer")
	}
}

func TestAppendExtension(t *testing.T) {
	for n := 0; n <= 17; n++ {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(0xf0 + i)
		}
		prefix := []byte{0xde, 0xad}
		got := AppendExtension(prefix, Extension{Magic: 0xcafe0001, Data: data})
		padded := (n + 7) / 8 * 8
		want := append([]byte{0xde, 0xad, 0xca, 0xfe, 0x00, 0x01, 0, 0, 0, byte(n)}, data...)
		want = append(want, make([]byte, padded-n)...)
		if !bytes.Equal(got, want) {
			t.Errorf("n=%d:\n got %x\nwant %x", n, got, want)
		}
		// An unknown extension survives parse + append byte for byte.
		exts, err := ParseExtensions(got, 2, len(got))
		if err != nil || len(exts) != 1 || exts[0].Magic != 0xcafe0001 || !bytes.Equal(exts[0].Data, data) {
			t.Errorf("n=%d: reparse %v %v", n, exts, err)
		}
		if again := AppendExtension([]byte{0xde, 0xad}, exts[0]); !bytes.Equal(again, got) {
			t.Errorf("n=%d: append after parse differs", n)
		}
	}
	if got := AppendExtension(nil, Extension{Magic: ExtEnd}); !bytes.Equal(got, make([]byte, 8)) {
		t.Errorf("end marker: %x", got)
	}
}

// TestUnknownExtensionsKept parses a header area holding extensions this
// package does not know, with odd sizes and garbage padding, and rebuilds it.
func TestUnknownExtensionsKept(t *testing.T) {
	area := append(ext(0x0badf00d, 13, bytes.Repeat([]byte{0x5a}, 13), []byte{0, 0, 0}),
		ext(ExtBackingFormat, 5, []byte("qcow2"), []byte{0, 0, 0})...)
	area = append(area, ext(0x7fffffff, 1, []byte{0x80}, make([]byte, 7))...)
	area = append(area, make([]byte, 8)...)
	exts, err := ParseExtensions(area, 0, len(area))
	if err != nil {
		t.Fatal(err)
	}
	var rebuilt []byte
	for _, e := range exts {
		rebuilt = AppendExtension(rebuilt, e)
	}
	rebuilt = AppendExtension(rebuilt, Extension{})
	if !bytes.Equal(rebuilt, area) {
		t.Errorf("rebuilt extension area differs\n got %x\nwant %x", rebuilt, area)
	}
}

func TestFeatureTableGolden(t *testing.T) {
	b := golden(t, "plain-default")
	data := b[0x78 : 0x78+432]
	fs, err := ParseFeatureTable(data)
	if err != nil {
		t.Fatal(err)
	}
	// The names as they read in the golden header (hexdump of plain-default).
	want := []Feature{
		{0, 0, "dirty bit"},
		{0, 1, "corrupt bit"},
		{0, 2, "external data file"},
		{0, 3, "compression type"},
		{0, 4, "extended L2 entries"},
		{0, 5, "zoned format"},
		{1, 0, "lazy refcounts"},
		{2, 0, "bitmaps"},
		{2, 1, "raw external data"},
	}
	if !reflect.DeepEqual(fs, want) {
		t.Errorf("parsed %v\nwant %v", fs, want)
	}
	if !reflect.DeepEqual(DefaultFeatures(), want) {
		t.Errorf("DefaultFeatures() = %v", DefaultFeatures())
	}
	if m := MarshalFeatureTable(DefaultFeatures()); !bytes.Equal(m, data) {
		t.Errorf("MarshalFeatureTable(DefaultFeatures()) differs from the golden table\n got %x\nwant %x", m, data)
	}
	// Every zoned golden image with clusters > 4K carries the same table.
	for _, name := range []string{"iotest", "conv-cap", "plain-extl2", "small-last-zone", "defaults"} {
		if g := golden(t, name)[0x70:0x78]; be32(g, 0) != ExtFeatureTable || be32(g, 4) != 432 {
			t.Errorf("%s: no feature table at 0x70", name)
		} else if !bytes.Equal(golden(t, name)[0x78:0x78+432], data) {
			t.Errorf("%s: feature table differs", name)
		}
	}
}

func TestFeatureTable(t *testing.T) {
	name46 := strings.Repeat("n", 46)
	entry := func(typ, bit byte, name string) []byte {
		e := make([]byte, 48)
		e[0], e[1] = typ, bit
		copy(e[2:], name)
		return e
	}
	tests := []struct {
		name string
		data []byte
		want []Feature
		err  bool
	}{
		{"empty", nil, nil, false},
		{"one", entry(1, 63, "x"), []Feature{{1, 63, "x"}}, false},
		{"name of 46 bytes, no NUL", entry(0, 7, name46), []Feature{{0, 7, name46}}, false},
		{"name stops at the first NUL", entry(2, 1, "ab\x00cd"), []Feature{{2, 1, "ab"}}, false},
		{"unknown type kept", entry(9, 200, "odd"), []Feature{{9, 200, "odd"}}, false},
		{"47 bytes", make([]byte, 47), nil, true},
		{"49 bytes", make([]byte, 49), nil, true},
		{"97 bytes", make([]byte, 97), nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFeatureTable(tc.data)
			if tc.err {
				var fe *FormatError
				if !errors.As(err, &fe) || !strings.Contains(err.Error(), "48") {
					t.Fatalf("got %v, %v; want a *FormatError about 48-byte entries", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			m := MarshalFeatureTable(got)
			want := tc.data
			if tc.name == "name stops at the first NUL" {
				want = entry(2, 1, "ab") // bytes after the NUL are not kept
			}
			if !bytes.Equal(m, want) {
				t.Errorf("Marshal: %x, want %x", m, want)
			}
		})
	}
	// Marshal truncates a name longer than 46 bytes and never spills into
	// the next entry.
	m := MarshalFeatureTable([]Feature{{0, 1, strings.Repeat("L", 60)}, {1, 2, "next"}})
	if len(m) != 96 || m[48] != 1 || m[49] != 2 || string(m[50:54]) != "next" || string(m[2:48]) != strings.Repeat("L", 46) {
		t.Errorf("long name: %q", m)
	}
}
