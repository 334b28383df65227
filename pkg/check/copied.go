package check

import (
	"github.com/zqimg/zqimg/pkg/image"
)

// copiedPass checks (and repairs) OFLAG_COPIED of the active L1 and L2
// entries against the refcounts left by the repairs (QEMU's
// check_oflag_copied). It runs in repairing passes, after the refcounts
// are final: setting the flag on a shared cluster would let a write go
// into it.
func (c *checker) copiedPass(fix Mode) error {
	repair := false
	switch {
	case fix&repairErrors != 0:
		repair = true
	case fix&RepairLeaks != 0:
		// Only when the refcounts were all repaired.
		repair = c.res.CheckErrors == 0 && c.res.Corruptions == 0 && c.res.Leaks == 0
	}
	l1off := c.hdr.L1TableOffset
	for i, e := range c.l1 {
		l2off := e & image.L1OffsetMask
		if l2off == 0 {
			continue
		}
		rc, ok := c.storedAt(l2off >> c.cb)
		if !ok {
			continue
		}
		if (rc == 1) != (e&image.OflagCopied != 0) {
			f := finding(KindCorruption, ProblemCopied, "%s OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d", verb(repair), i, e, rc)
			f.Offset, f.Cluster, f.Repaired = int64(l2off), int64(l2off>>c.cb), repair
			c.report(f)
			if repair {
				ne := e &^ image.OflagCopied
				if rc == 1 {
					ne = e | image.OflagCopied
				}
				c.l1[i] = ne
				if err := c.writeU64(l1off+uint64(i)*8, ne); err != nil {
					return err
				}
			}
		}
		if l2off >= c.fileSize {
			continue
		}
		t, err := c.readCluster(l2off)
		if err != nil {
			return err
		}
		for j := uint64(0); j < c.l2Ents; j++ {
			le, bm := c.l2Entry(t, j)
			typ := c.clusterType(le)
			if typ != ctNormal && typ != ctZeroAlloc {
				continue
			}
			off := le & image.L2OffsetMask
			rc, ok := c.storedAt(off >> c.cb)
			if !ok || (rc == 1) == (le&image.OflagCopied != 0) {
				continue
			}
			f := finding(KindCorruption, ProblemCopied, "%s OFLAG_COPIED data cluster: l2_entry=%x refcount=%d", verb(repair), le, rc)
			f.Offset, f.Cluster, f.Repaired = int64(off), int64(off>>c.cb), repair
			c.report(f)
			if repair {
				ne := le &^ image.OflagCopied
				if rc == 1 {
					ne = le | image.OflagCopied
				}
				if err := c.setL2(t, l2off, j, ne, bm); err != nil {
					return err
				}
			}
		}
	}
	return c.syncWrites()
}
