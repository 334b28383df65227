package check

// counts is a compact array of per-cluster counts (refcounts or
// references): two bytes a cluster, with the rare values that do not fit
// (refcounts of 64K and more, possible with 32- and 64-bit refcount
// entries) kept in a map.
type counts struct {
	a   []uint16
	big map[uint64]uint64
}

const countBig = 0xffff // sentinel: the value lives in big

func newCounts(n uint64) counts { return counts{a: make([]uint16, n)} }

// n returns the number of clusters covered.
func (c *counts) n() uint64 { return uint64(len(c.a)) }

// grow makes the array cover at least n clusters.
func (c *counts) grow(n uint64) {
	if n <= uint64(len(c.a)) {
		return
	}
	if n <= uint64(cap(c.a)) {
		c.a = c.a[:n]
		return
	}
	b := make([]uint16, n, n+n/4+16)
	copy(b, c.a)
	c.a = b
}

func (c *counts) get(i uint64) uint64 {
	if i >= uint64(len(c.a)) {
		return 0
	}
	v := c.a[i]
	if v == countBig {
		return c.big[i]
	}
	return uint64(v)
}

// set stores v for cluster i, which must be covered.
func (c *counts) set(i, v uint64) {
	if v >= countBig {
		if c.big == nil {
			c.big = map[uint64]uint64{}
		}
		c.a[i] = countBig
		c.big[i] = v
		return
	}
	if c.a[i] == countBig {
		delete(c.big, i)
	}
	c.a[i] = uint16(v)
}

// clone returns an independent copy.
func (c *counts) clone() counts {
	d := counts{a: append([]uint16(nil), c.a...)}
	if len(c.big) > 0 {
		d.big = make(map[uint64]uint64, len(c.big))
		for k, v := range c.big {
			d.big[k] = v
		}
	}
	return d
}
