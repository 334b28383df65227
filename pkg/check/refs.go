package check

// sharedTables returns the clusters referenced as L1 or L2 tables that are
// also referenced as something else (or as both).
func (c *checker) sharedTables() map[uint64]bool {
	var m map[uint64]bool
	mark := func(k uint64) {
		if m == nil {
			m = map[uint64]bool{}
		}
		m[k] = true
	}
	// References a repair removes (entries into metadata, and what the
	// walk of such an "L2 table" counted) do not make a table shared.
	used := func(k uint64) uint64 {
		u := c.used.get(k)
		return u - min(u, c.intoMeta[k]+c.garbage[k])
	}
	for k, n := range c.l1Refs {
		if used(k) != n || c.l2Refs[k] > 0 {
			mark(k)
		}
	}
	for k, n := range c.l2Refs {
		if used(k) != n {
			mark(k)
		}
	}
	return m
}

// countClusters adds one to the count in *m of every cluster touched by
// [off, off+size), unless the range is empty or reaches one cluster or
// more beyond the end of the file (inc does not count it either).
func (c *checker) countClusters(m *map[uint64]uint64, off, size uint64) {
	if size == 0 || c.beyondEOF(off, size) {
		return
	}
	if *m == nil {
		*m = map[uint64]uint64{}
	}
	for k := off >> c.cb; k <= (off+size-1)>>c.cb; k++ {
		(*m)[k]++
	}
}

// writable reports whether a repair may write into the table clusters of
// [off, off+size): none of them is also used as something else.
func (c *checker) writable(off, size uint64) bool {
	if c.unsafe == nil {
		return true
	}
	for k := off >> c.cb; k <= (off+size-1)>>c.cb; k++ {
		if c.unsafe[k] {
			return false
		}
	}
	return true
}

// beyondEOF reports whether [off, off+size) reaches one cluster or more
// past the end of the file (the limit of qcow2_inc_refcounts_imrt).
func (c *checker) beyondEOF(off, size uint64) bool {
	end := off + size
	return end < off || end >= c.fileSize+c.cs
}

// inc counts a reference to every cluster touched by [off, off+size)
// (qcow2_inc_refcounts_imrt).
func (c *checker) inc(off, size uint64) {
	if size == 0 {
		return
	}
	if c.beyondEOF(off, size) {
		c.report(finding(KindCorruption, ProblemBeyondEOF, "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset %#x size %#x", off, size).at(off))
		return
	}
	first, last := off>>c.cb, (off+size-1)>>c.cb
	if last >= c.nb {
		c.nb = last + 1
		c.used.grow(c.nb)
	}
	for k := first; k <= last; k++ {
		v := c.used.a[k]
		if uint64(v)+1 < countBig && uint64(v) < c.rmax {
			c.used.a[k] = v + 1
			c.noteGarbage(k)
			continue
		}
		rc := c.used.get(k)
		if rc >= c.rmax {
			c.report(finding(KindCorruption, ProblemRefcountOverflow, "ERROR: overflow cluster offset=0x%x", k<<c.cb).clusterAt(k, c.cb))
			c.report(finding(KindInfo, ProblemRefcountOverflow, "Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing"))
			continue
		}
		c.used.set(k, rc+1)
		c.noteGarbage(k)
	}
}

// noteGarbage records, while a read-only pass walks an "L2 table" that
// lies in metadata, a reference it counted to cluster k.
func (c *checker) noteGarbage(k uint64) {
	if !c.walkingGarbage {
		return
	}
	if c.garbage == nil {
		c.garbage = map[uint64]uint64{}
	}
	c.garbage[k]++
}

// dropRef records that a repair removed a reference to every cluster
// touched by [off, off+size) without counting it: the refcount compare then
// lowers the stored refcount silently, since the repair reported it.
func (c *checker) dropRef(off, size uint64) { c.countClusters(&c.discarded, off, size) }

// applyDropped lowers the stored refcounts of the clusters whose
// references a repair removed, by at most the excess over the references
// left.
func (c *checker) applyDropped() {
	for k, d := range c.discarded {
		s, ok := c.storedAt(k)
		u := c.used.get(k)
		if !ok || s <= u {
			continue
		}
		c.setStored(k, s-min(d, s-u))
	}
	c.discarded = nil
}
