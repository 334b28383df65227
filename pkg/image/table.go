package image

import (
	"encoding/binary"
	"fmt"
	"iter"
)

// tablePage is the number of entries of a sparseTable page (4 KiB).
const tablePage = 512

// sparseTable holds a table of 64-bit entries in memory (the active L1
// table, the refcount table), in pages of tablePage entries allocated when
// an entry of the page first becomes non-zero. A table as large as the
// format allows (32 MiB of L1 entries, 8 MiB of refcount table) but mostly
// empty — a huge sparse disk, or a header naming a big table — then costs
// memory for its used entries only, so that a backing chain of such images
// stays small. Indexes are entry numbers; get and set panic beyond len,
// like a slice.
type sparseTable struct {
	n     uint64
	pages []*[tablePage]uint64
}

func newSparseTable(n uint64) sparseTable {
	return sparseTable{n: n, pages: make([]*[tablePage]uint64, ceilDiv(n, tablePage))}
}

// sparseFrom copies s.
func sparseFrom(s []uint64) sparseTable {
	t := newSparseTable(uint64(len(s)))
	for i, v := range s {
		if v != 0 {
			t.set(uint64(i), v)
		}
	}
	return t
}

// len returns the number of entries.
func (t *sparseTable) len() uint64 { return t.n }

func (t *sparseTable) get(i uint64) uint64 {
	if i >= t.n {
		panic(fmt.Sprintf("sparse table index %d out of range [0:%d]", i, t.n))
	}
	p := t.pages[i/tablePage]
	if p == nil {
		return 0
	}
	return p[i%tablePage]
}

func (t *sparseTable) set(i, v uint64) {
	if i >= t.n {
		panic(fmt.Sprintf("sparse table index %d out of range [0:%d]", i, t.n))
	}
	p := t.pages[i/tablePage]
	if p == nil {
		if v == 0 {
			return
		}
		p = new([tablePage]uint64)
		t.pages[i/tablePage] = p
	}
	p[i%tablePage] = v
}

// nonZero yields the index and value of every non-zero entry, in order.
func (t *sparseTable) nonZero() iter.Seq2[uint64, uint64] {
	return func(yield func(uint64, uint64) bool) {
		for pi, p := range t.pages {
			if p == nil {
				continue
			}
			for j, v := range p {
				if v != 0 && !yield(uint64(pi)*tablePage+uint64(j), v) {
					return
				}
			}
		}
	}
}

// slice returns the table as a slice (all n entries).
func (t *sparseTable) slice() []uint64 {
	s := make([]uint64, t.n)
	for i, v := range t.nonZero() {
		s[i] = v
	}
	return s
}

// readSparseTable reads a table of n big-endian entries at off, a chunk
// at a time, so that reading costs no more memory than the table's
// non-zero pages and one chunk.
func readSparseTable(f File, off int64, n uint64) (sparseTable, error) {
	t := newSparseTable(n)
	const chunk = 8192 // entries
	buf := make([]byte, min(n, chunk)*8)
	for i := uint64(0); i < n; i += chunk {
		m := min(n-i, chunk)
		b := buf[:m*8]
		if err := readFull(f, b, off+int64(i*8)); err != nil {
			return sparseTable{}, err
		}
		for j := uint64(0); j < m; j++ {
			if v := binary.BigEndian.Uint64(b[j*8:]); v != 0 {
				t.set(i+j, v)
			}
		}
	}
	return t, nil
}
