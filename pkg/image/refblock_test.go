package image

import (
	"bytes"
	"math/rand"
	"testing"
)

// refModel reads and writes refcount entries bit by bit, straight from the
// specification: entry i occupies bits [i*w, (i+1)*w) of the block. Below
// 8 bits, bit k of the block is bit k%8 of byte k/8 and bit 0 of an entry
// is its least significant bit; from 8 bits up, an entry is a big-endian
// integer of w/8 bytes.
type refModel struct{ w uint64 }

func (m refModel) get(b []byte, i uint64) uint64 {
	if m.w < 8 {
		var v uint64
		for j := uint64(0); j < m.w; j++ {
			k := i*m.w + j
			v |= uint64(b[k/8]>>(k%8)&1) << j
		}
		return v
	}
	n := m.w / 8
	var v uint64
	for _, c := range b[i*n : (i+1)*n] {
		v = v<<8 | uint64(c)
	}
	return v
}

func (m refModel) set(b []byte, i, v uint64) {
	if m.w < 8 {
		for j := uint64(0); j < m.w; j++ {
			k := i*m.w + j
			b[k/8] &^= 1 << (k % 8)
			b[k/8] |= byte(v>>j&1) << (k % 8)
		}
		return
	}
	n := m.w / 8
	for j := n; j > 0; j-- {
		b[i*n+j-1] = byte(v)
		v >>= 8
	}
}

func TestMaxRefcount(t *testing.T) {
	want := []uint64{1, 3, 15, 255, 65535, 4294967295, 18446744073709551615}
	for order, w := range want {
		if got := MaxRefcount(uint32(order)); got != w {
			t.Errorf("MaxRefcount(%d) = %d, want %d", order, got, w)
		}
	}
}

// TestRefcountHandBytes checks single entries against bytes worked out by
// hand from the specification.
func TestRefcountHandBytes(t *testing.T) {
	tests := []struct {
		order uint32
		i, v  uint64
		want  []byte // the first bytes of a zeroed block after the Set
	}{
		{0, 0, 1, []byte{0x01, 0}},
		{0, 7, 1, []byte{0x80, 0}},
		{0, 8, 1, []byte{0x00, 0x01}},
		{0, 13, 1, []byte{0x00, 0x20}},
		{1, 0, 3, []byte{0x03, 0}},
		{1, 1, 2, []byte{0x08, 0}},
		{1, 3, 1, []byte{0x40, 0}},
		{1, 5, 3, []byte{0x00, 0x0c}},
		{2, 0, 0xa, []byte{0x0a, 0}},
		{2, 1, 0xa, []byte{0xa0, 0}},
		{2, 3, 0x5, []byte{0x00, 0x50}},
		{3, 1, 0xab, []byte{0x00, 0xab, 0}},
		{4, 1, 0x1234, []byte{0, 0, 0x12, 0x34, 0}},
		{5, 1, 0x01020304, []byte{0, 0, 0, 0, 1, 2, 3, 4, 0}},
		{6, 1, 0x0102030405060708, []byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0}},
	}
	for _, tc := range tests {
		b := make([]byte, 32)
		SetRefcount(b, tc.i, tc.order, tc.v)
		if !bytes.Equal(b[:len(tc.want)], tc.want) || !bytes.Equal(b[len(tc.want):], make([]byte, 32-len(tc.want))) {
			t.Errorf("order %d: Set(%d, %#x) gives %x, want %x", tc.order, tc.i, tc.v, b, tc.want)
		}
		if got := GetRefcount(b, tc.i, tc.order); got != tc.v {
			t.Errorf("order %d: Get(%d) = %#x, want %#x", tc.order, tc.i, got, tc.v)
		}
	}
}

// TestRefcountAllOrders sets every entry of a random block, one at a time
// in random order, for each width, and checks each Set against the bit
// model: the entry reads back and no other bit of the block changes.
func TestRefcountAllOrders(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for order := uint32(0); order <= 6; order++ {
		m := refModel{w: 1 << order}
		block := make([]byte, 512)
		rng.Read(block)
		n := uint64(len(block)) * 8 / m.w
		// Reading: every entry of the random block matches the model.
		for i := uint64(0); i < n; i++ {
			if got, want := GetRefcount(block, i, order), m.get(block, i); got != want {
				t.Fatalf("order %d: Get(%d) = %#x, model %#x", order, i, got, want)
			}
		}
		max := MaxRefcount(order)
		for _, i := range rng.Perm(int(n)) {
			idx := uint64(i)
			var v uint64
			switch rng.Intn(4) {
			case 0:
				v = 0
			case 1:
				v = max
			case 2:
				v = 1
			default:
				v = rng.Uint64() & max
			}
			want := append([]byte(nil), block...)
			m.set(want, idx, v)
			SetRefcount(block, idx, order, v)
			if !bytes.Equal(block, want) {
				t.Fatalf("order %d: Set(%d, %#x) changed other bits:\n got %x\nwant %x", order, idx, v, block, want)
			}
			if got := GetRefcount(block, idx, order); got != v {
				t.Fatalf("order %d: Get(%d) = %#x after Set %#x", order, idx, got, v)
			}
		}
	}
}

// TestRefcountOversizedValue: a value wider than the entry keeps its low
// bits and leaves the neighbours alone.
func TestRefcountOversizedValue(t *testing.T) {
	for order := uint32(0); order < 6; order++ {
		m := refModel{w: 1 << order}
		for _, i := range []uint64{0, 1, 5, 17} {
			block := bytes.Repeat([]byte{0x96}, 256)
			want := append([]byte(nil), block...)
			m.set(want, i, ^uint64(0)&MaxRefcount(order))
			SetRefcount(block, i, order, ^uint64(0))
			if !bytes.Equal(block, want) {
				t.Errorf("order %d index %d: all-ones value spilled into the neighbours", order, i)
			}
		}
	}
}

// TestRefcountGoldenBlocks reads the first refcount block of reference
// images: every cluster of a freshly created image is used exactly once.
func TestRefcountGoldenBlocks(t *testing.T) {
	tests := []struct {
		name    string
		blockAt int
		order   uint32
		used    uint64 // clusters in the file
	}{
		// 131 clusters of 512 bytes: header, refcount table, refcount
		// block and 128 clusters of L1 table (8192 entries).
		{"plain-c512-rc1", 0x400, 0, 131},
		// header, refcount table, refcount block, L1 table.
		{"plain-default", 0x20000, 4, 4},
		{"plain-v2", 0x20000, 4, 4},
		// plus one cluster of write-pointer table.
		{"iotest", 0x20000, 4, 5},
		{"cluster4k", 0x2000, 4, 5},
		// plus eight clusters of write-pointer table (65536 zones).
		{"many-zones", 0x20000, 4, 12},
		{"cluster2m-rc64", 0x400000, 6, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := golden(t, tc.name)
			h, err := ParseHeader(b)
			if err != nil {
				t.Fatal(err)
			}
			cs := h.ClusterSize()
			if got := (uint64(len(b)) + cs - 1) / cs; got != tc.used {
				t.Fatalf("file has %d clusters, want %d", got, tc.used)
			}
			if h.RefcountOrder != tc.order || be64(b, int(h.RefcountTableOffset)) != uint64(tc.blockAt) {
				t.Fatalf("refcount order %d, first block at %#x", h.RefcountOrder, be64(b, int(h.RefcountTableOffset)))
			}
			block := b[tc.blockAt : tc.blockAt+int(cs)]
			entries := cs * 8 >> tc.order
			for i := uint64(0); i < entries; i++ {
				want := uint64(0)
				if i < tc.used {
					want = 1
				}
				if got := GetRefcount(block, i, tc.order); got != want {
					t.Fatalf("refcount of cluster %d = %d, want %d", i, got, want)
				}
			}
			// The layout has one refcount block and one refcount table
			// cluster for the other clusters, as RefcountMetadataSize says.
			if blocks, n := RefcountMetadataSize(tc.used-2, cs, tc.order, false); blocks != 1 || n != 2*cs {
				t.Errorf("RefcountMetadataSize(%d) = %d blocks, %d bytes; the image has 1 block and 1 table cluster", tc.used-2, blocks, n)
			}
			// Building the block with SetRefcount gives the same bytes.
			mine := make([]byte, cs)
			for i := uint64(0); i < tc.used; i++ {
				SetRefcount(mine, i, tc.order, 1)
			}
			if !bytes.Equal(mine, block) {
				t.Errorf("block built with SetRefcount differs from the golden block")
			}
		})
	}
	// The 1-bit block, byte by byte: 128 bits in 16 bytes of 0xff, then
	// the three bits 0, 1 and 2 of byte 16 (0x07).
	b := golden(t, "plain-c512-rc1")[0x400:0x600]
	want := append(bytes.Repeat([]byte{0xff}, 16), 0x07)
	want = append(want, make([]byte, 512-17)...)
	if !bytes.Equal(b, want) {
		t.Errorf("golden 1-bit refcount block: %x", b[:24])
	}
}

// TestRefcountMetadataSize checks fixed points worked out by hand and the
// invariant the result must satisfy: the blocks count every cluster
// including themselves and the table, and the table holds every block.
func TestRefcountMetadataSize(t *testing.T) {
	tests := []struct {
		clusters, cs uint64
		order        uint32
		generous     bool
		blocks       uint64
		bytes        uint64
	}{
		// 64K clusters, 16-bit refcounts: a block counts 32768 clusters, a
		// table cluster holds 8192 blocks. 3 clusters + 1 block + 1 table
		// cluster fit in one block.
		{3, 65536, 4, false, 1, 2 * 65536},
		// 32768 data clusters fill a block; with the block and the table
		// 32770 need a second block, 32771 still fits two.
		{32768, 65536, 4, false, 2, 3 * 65536},
		{32766, 65536, 4, false, 1, 2 * 65536},
		{32767, 65536, 4, false, 2, 3 * 65536},
		// 512-byte clusters, 1-bit refcounts: 4096 per block, 64 blocks per
		// table cluster. 262144 clusters: 64 blocks + 1 table -> 262209,
		// 65 blocks -> 2 table clusters -> 262211 -> 65 blocks.
		{262144, 512, 0, false, 65, 67 * 512},
		// 2M clusters, 64-bit: 262144 per block, 262144 blocks per table cluster.
		{1, 2 << 20, 6, false, 1, 2 * (2 << 20)},
		{0, 65536, 4, false, 0, 0},
		// generous: the table gets half of its size again as headroom; for
		// tiny images that changes nothing.
		{3, 65536, 4, true, 1, 2 * 65536},
	}
	for _, tc := range tests {
		blocks, n := RefcountMetadataSize(tc.clusters, tc.cs, tc.order, tc.generous)
		if blocks != tc.blocks || n != tc.bytes {
			t.Errorf("RefcountMetadataSize(%d, %d, %d, %v) = %d, %d; want %d, %d",
				tc.clusters, tc.cs, tc.order, tc.generous, blocks, n, tc.blocks, tc.bytes)
		}
	}
	rng := rand.New(rand.NewSource(2))
	for k := 0; k < 2000; k++ {
		cb := uint32(9 + rng.Intn(13))
		cs := uint64(1) << cb
		order := uint32(rng.Intn(7))
		clusters := uint64(rng.Int63n(1 << 26))
		perBlock := cs * 8 >> order
		perTable := cs / 8
		blocks, n := RefcountMetadataSize(clusters, cs, order, false)
		table := n/cs - blocks
		if n%cs != 0 || n/cs < blocks {
			t.Fatalf("cs %d: %d bytes for %d blocks", cs, n, blocks)
		}
		if table*perTable < blocks {
			t.Fatalf("cs %d order %d clusters %d: %d table clusters cannot hold %d blocks", cs, order, clusters, table, blocks)
		}
		if blocks*perBlock < clusters+blocks+table {
			t.Fatalf("cs %d order %d clusters %d: %d blocks cannot count %d clusters", cs, order, clusters, blocks, clusters+blocks+table)
		}
		// The least such layout: one block less does not suffice (unless
		// the table cluster count would then shrink as well, which the
		// check accounts for).
		if blocks > 1 {
			b1 := blocks - 1
			t1 := (b1 + perTable - 1) / perTable
			if b1*perBlock >= clusters+b1+t1 {
				t.Fatalf("cs %d order %d clusters %d: %d blocks would do, got %d", cs, order, clusters, b1, blocks)
			}
		}
		gb, gn := RefcountMetadataSize(clusters, cs, order, true)
		if gb < blocks || gn < n {
			t.Fatalf("generous layout smaller than the exact one: %d/%d < %d/%d", gb, gn, blocks, n)
		}
	}
}
