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
		l2off := image.L1Entry(e).Offset()
		if l2off == 0 {
			continue
		}
		rc, ok := c.storedAt(l2off >> c.cb)
		if !ok {
			continue
		}
		if (rc == 1) != image.L1Entry(e).Copied() {
			f := finding(KindCorruption, ProblemL1Copied, "%s OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d", verb(repair), i, e, rc).at(l2off).cluster(l2off >> c.cb).guest(uint64(i) * c.l2Ents << c.cb)
			ne := withCopied(e, rc == 1)
			if err := c.reportFix(f, repair, func() error { c.l1[i] = ne; return c.writeU64(l1off+uint64(i)*8, ne) }); err != nil {
				return err
			}
		}
		if l2off >= c.fileSize {
			continue
		}
		t, err := c.readCluster(l2off)
		if err != nil {
			return err
		}
		if err := c.copiedL2(&l2Walk{off: l2off, t: t}, uint64(i), repair); err != nil {
			return err
		}
	}
	return c.syncWrites()
}

// copiedL2 checks (and repairs) OFLAG_COPIED of the entries of the L2 table
// of w, that of L1 entry l1i.
func (c *checker) copiedL2(w *l2Walk, l1i uint64, repair bool) error {
	for j := uint64(0); j < c.l2Ents; j++ {
		s := &l2Slot{j: j, guest: (l1i*c.l2Ents + j) << c.cb, e: image.DecodeL2Entry(w.t, j, c.extL2)}
		if !s.e.Type(c.extL2).Allocated() {
			continue
		}
		off := s.e.Offset()
		rc, ok := c.storedAt(off >> c.cb)
		if !ok || (rc == 1) == s.e.Copied() {
			continue
		}
		f := finding(KindCorruption, ProblemCopied, "%s OFLAG_COPIED data cluster: l2_entry=%x refcount=%d", verb(repair), s.e.Desc, rc).at(off).cluster(off >> c.cb).guest(s.guest)
		fixed := image.L2Entry{Desc: withCopied(s.e.Desc, rc == 1), Bitmap: s.e.Bitmap}
		if err := c.reportFix(f, repair, func() error { return c.setL2(w, s, fixed) }); err != nil {
			return err
		}
	}
	return nil
}

// withCopied returns the entry e with OFLAG_COPIED set or cleared.
func withCopied(e uint64, copied bool) uint64 {
	if copied {
		return e | image.OflagCopied
	}
	return e &^ image.OflagCopied
}
