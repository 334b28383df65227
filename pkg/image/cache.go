package image

import (
	"container/list"
	"fmt"
	"slices"
)

// metaCache caches cluster-sized metadata tables (L2 tables or refcount
// blocks) keyed by their host offset, like QEMU's qcow2 cache. Dirty tables
// are written only by writeDirty, which the Image calls in dependency order;
// eviction drops clean tables only.
type metaCache struct {
	f     File
	size  int // bytes per table
	max   int // tables kept before clean ones are evicted
	m     map[uint64]*cacheEntry
	lru   *list.List // front = most recently used
	dirty int
	what  string // "L2 table" or "refcount block", for errors
	// guard, if set, is asked before a table is written back; an error
	// stops the write-back (the metadata overlap check).
	guard func(off uint64) error
}

type cacheEntry struct {
	off   uint64
	data  []byte
	dirty bool
	elem  *list.Element
}

func newMetaCache(f File, size, maxBytes int, what string) *metaCache {
	n := maxBytes / size
	if n < 16 {
		n = 16
	}
	return &metaCache{f: f, size: size, max: n, m: make(map[uint64]*cacheEntry), lru: list.New(), what: what}
}

// get returns the table at off, reading it from the file on a miss.
func (c *metaCache) get(off uint64) (*cacheEntry, error) {
	if e, ok := c.m[off]; ok {
		c.lru.MoveToFront(e.elem)
		return e, nil
	}
	if off > MaxHostOffset {
		// A corrupt table entry (e.g. a refcount table entry with high
		// bits set) must not reach the file as a negative offset.
		return nil, &CorruptionError{Off: -1, Msg: fmt.Sprintf("%s offset 0x%x is beyond the largest host offset 0x%x", c.what, off, uint64(MaxHostOffset))}
	}
	data := make([]byte, c.size)
	if err := readFull(c.f, data, int64(off)); err != nil {
		return nil, fmt.Errorf("reading %s at offset 0x%x: %w", c.what, off, err)
	}
	return c.insert(off, data), nil
}

// getEmpty returns a zeroed table for off without reading the file.
func (c *metaCache) getEmpty(off uint64) *cacheEntry {
	if e, ok := c.m[off]; ok {
		clear(e.data)
		c.lru.MoveToFront(e.elem)
		return e
	}
	return c.insert(off, make([]byte, c.size))
}

func (c *metaCache) insert(off uint64, data []byte) *cacheEntry {
	e := &cacheEntry{off: off, data: data}
	e.elem = c.lru.PushFront(e)
	c.m[off] = e
	return e
}

func (c *metaCache) markDirty(e *cacheEntry) {
	if !e.dirty {
		e.dirty = true
		c.dirty++
	}
}

// discard forgets the table at off without writing it (its cluster was freed).
func (c *metaCache) discard(off uint64) {
	if e, ok := c.m[off]; ok {
		if e.dirty {
			c.dirty--
		}
		c.lru.Remove(e.elem)
		delete(c.m, off)
	}
}

// writeDirty writes every dirty table, in offset order, and marks it clean.
// It does not sync.
func (c *metaCache) writeDirty() error {
	if c.dirty == 0 {
		return nil
	}
	offs := make([]uint64, 0, c.dirty)
	for off, e := range c.m {
		if e.dirty {
			offs = append(offs, off)
		}
	}
	slices.Sort(offs)
	for _, off := range offs {
		e := c.m[off]
		if c.guard != nil {
			if err := c.guard(off); err != nil {
				return err
			}
		}
		if _, err := c.f.WriteAt(e.data, int64(off)); err != nil {
			return fmt.Errorf("writing %s at offset 0x%x: %w", c.what, off, err)
		}
		e.dirty = false
		c.dirty--
	}
	return nil
}

// overfull reports whether the cache holds more tables than its budget.
func (c *metaCache) overfull() bool { return len(c.m) > c.max }

// evictClean drops least recently used clean tables until the cache is at
// three quarters of its budget (or only dirty tables are left).
func (c *metaCache) evictClean() {
	target := c.max * 3 / 4
	for el := c.lru.Back(); el != nil && len(c.m) > target; {
		prev := el.Prev()
		e := el.Value.(*cacheEntry)
		if !e.dirty {
			c.lru.Remove(el)
			delete(c.m, e.off)
		}
		el = prev
	}
}
