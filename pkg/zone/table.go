package zone

import (
	"fmt"

	"github.com/zqimg/zqimg/pkg/image"
)

// chunkZones is how many write-pointer entries (8 bytes each) table reads
// and validates at a time.
const chunkZones = 4096

// table holds the write pointers of a zoned image. The on-disk table is
// read a chunk at a time, the first time one of its zones is used, and
// every entry of the chunk is validated then (EntryProblem): opening an
// image costs nothing per zone, and a command that touches a few zones
// reads and checks only their chunks. wp holds absolute byte offsets with
// the conventional bit cleared; its entries are valid where loaded.
type table struct {
	img    *image.Image
	h      *Header
	size   uint64 // device size, bytes
	wp     []uint64
	loaded []bool // per chunk
	nLoad  int    // chunks loaded
}

func newTable(img *image.Image, h *Header, size uint64) *table {
	n := int(h.NrZones)
	return &table{img: img, h: h, size: size, wp: make([]uint64, n), loaded: make([]bool, (n+chunkZones-1)/chunkZones)}
}

// load reads and validates the chunks holding zones [first, end).
func (t *table) load(first, end uint32) error {
	if t.nLoad == len(t.loaded) || first >= end {
		return nil
	}
	for c := first / chunkZones; c <= (end-1)/chunkZones; c++ {
		if t.loaded[c] {
			continue
		}
		if err := t.loadChunk(c); err != nil {
			return err
		}
	}
	return nil
}

func (t *table) loadChunk(c uint32) error {
	lo := c * chunkZones
	hi := min(lo+chunkZones, t.h.NrZones)
	raw := make([]byte, 8*int(hi-lo))
	if err := t.img.HostReadAt(raw, int64(t.h.MetaOffset)+8*int64(lo)); err != nil {
		return fmt.Errorf("reading the write-pointer table: %w", err)
	}
	for k, e := range DecodeTable(raw) {
		i := lo + uint32(k)
		if p := t.h.EntryProblem(i, e, t.h.ZoneLen(i, t.size)); p != "" {
			return fmt.Errorf("%w: %s (run 'zqimg check -r all' to repair it)", ErrBadTable, p)
		}
		t.wp[i] = e &^ ConvBit
	}
	t.loaded[c] = true
	t.nLoad++
	return nil
}

// loadedTable returns a table holding wp, every chunk loaded (the state
// after an operation that rewrote the whole table).
func loadedTable(img *image.Image, h *Header, size uint64, wp []uint64) *table {
	t := &table{img: img, h: h, size: size, wp: wp, loaded: make([]bool, (len(wp)+chunkZones-1)/chunkZones)}
	for i := range t.loaded {
		t.loaded[i] = true
	}
	t.nLoad = len(t.loaded)
	return t
}
