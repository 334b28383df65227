package check

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"syscall"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// Entry masks and limits of QEMU's check that pkg/image does not export.
const (
	l2StdReservedMask = 0x3f000000000001fe // L2E_STD_RESERVED_MASK
	bitmapAllAlloc    = 0x00000000ffffffff // QCOW_L2_BITMAP_ALL_ALLOC
	bitmapAllZeroes   = 0xffffffff00000000 // QCOW_L2_BITMAP_ALL_ZEROES
	maxSnapshotsSize  = 1024 * image.MaxSnapshots
	maxSnapshotExtra  = 1024
	maxL1Entries      = image.MaxL1Bytes / 8
	maxCheckClusters  = 1<<31 - 1 // QEMU refuses more (INT_MAX)
)

// cluster types, as qcow2_get_cluster_type.
type clusterType int

const (
	ctUnallocated clusterType = iota
	ctZeroPlain
	ctZeroAlloc
	ctNormal
	ctCompressed
)

// OpenError reports an image that could not be opened for checking.
type OpenError struct {
	Path string
	Err  error
}

func (e *OpenError) Error() string { return fmt.Sprintf("Could not open '%s': %v", e.Path, e.Err) }
func (e *OpenError) Unwrap() error { return e.Err }

// CheckPath opens the image at path (read-only with reader locks, or
// read-write with writer locks when repairing), checks it and closes it.
// The Result's Filename is path. An image that cannot be opened returns a
// nil Result and an *OpenError.
func CheckPath(path string, opts Options) (*Result, error) {
	ro := opts.Repair == RepairNone
	if !ro && opts.ForceShare {
		return nil, &OpenError{Path: path, Err: errors.New("force-share=on can only be used with read-only images")}
	}
	f, err := image.OpenOSFile(path, ro, opts.ForceShare)
	if err != nil {
		return nil, &OpenError{Path: path, Err: err}
	}
	res, err := Check(f, opts)
	if cerr := f.Close(); cerr != nil && err == nil && !ro {
		err = &AbortError{Err: cerr}
	}
	if res == nil {
		return nil, &OpenError{Path: path, Err: err}
	}
	for r := res; r != nil; r = r.Repair {
		r.Filename = path
	}
	return res, err
}

// Check checks (and with opts.Repair, repairs) the image stored in f, which
// must be writable when repairing. It returns a nil Result when f does not
// hold an image it can check (bad header, unsupported feature), and a
// partial Result with an *AbortError when the check could not complete.
//
// When something was repaired, the image is checked a second time,
// read-only, and that second Result is returned with the Fixed counters of
// the repairing pass, which is in its Repair field (as qemu-img reports).
func Check(f image.File, opts Options) (*Result, error) {
	mode := opts.Repair & RepairAll
	if mode == RepairNone {
		res, err := runPass(f, RepairNone, hints{})
		if res != nil && err != nil {
			err = &AbortError{Err: err}
		}
		return res, err
	}
	// Each round is a read-only pass, which tells what is shared between
	// structures (only known once every table was read: a repair must not
	// write into a table that is also something else, an L2 table that is
	// really a refcount block, nor trust a write-pointer table overlapping
	// other clusters), then the repairing pass. A repair can make another
	// possible (a table stops being shared once the refcount structure over
	// it is rebuilt elsewhere), so rounds go on while they make progress.
	pre, err := runPass(f, RepairNone, hints{})
	if pre == nil {
		return nil, err
	}
	var rep, final *Result
	for round := 0; round < maxRepairRounds; round++ {
		first, err := runPass(f, mode, pre.hints)
		if first == nil {
			return final, &AbortError{Err: fmt.Errorf("the repaired image cannot be checked again: %w", err)}
		}
		// A rebuild can change the image without a net count of fixed
		// problems (qemu-img counts the difference of the counts).
		fixed := first.CorruptionsFixed+first.LeaksFixed > 0 || first.changed
		if err != nil {
			return mergeRepair(rep, first), &AbortError{Err: err}
		}
		if !fixed {
			if final == nil {
				// Nothing repaired: qemu-img reports the repairing pass.
				if mode == RepairAll {
					markUnrepaired(first, nil)
				}
				return first, nil
			}
			break
		}
		rep = mergeRepair(rep, first)
		final, err = runPass(f, RepairNone, hints{})
		if final == nil || err != nil {
			if final == nil {
				return rep, &AbortError{Err: fmt.Errorf("the repaired image cannot be checked again: %w", err)}
			}
			final.Repair = rep
			return final, &AbortError{Err: err}
		}
		if final.Clean() || mode != RepairAll {
			break
		}
		pre = final
	}
	final.CorruptionsFixed = rep.CorruptionsFixed
	final.LeaksFixed = rep.LeaksFixed
	if final.Zoned != nil && rep.Zoned != nil {
		final.Zoned.ExtensionErrorsFixed = rep.Zoned.ExtensionErrorsFixed
		final.Zoned.WritePointerErrorsFixed = rep.Zoned.WritePointerErrorsFixed
		final.Zoned.DataBeyondWPFixed = rep.Zoned.DataBeyondWPFixed
		final.Zoned.ZeroBeyondWPReclaimed = rep.Zoned.ZeroBeyondWPReclaimed
	}
	if mode == RepairAll {
		markUnrepaired(rep, final)
	}
	final.Repair = rep
	return final, nil
}

// unrepairedSuffix ends the line of a problem a repair could not repair.
const unrepairedSuffix = " (could not be repaired)"

// isProblem reports whether a finding counts as a problem that is still
// there (not a progress line, not a repair).
func (f *Finding) isProblem() bool { return f.Kind != KindInfo && !f.Repaired }

// markUnrepaired tells apart, after a repair (-r all), the problems it
// could not repair: those the second check (final) finds again. They are
// marked Unrepaired in final, their line saying so, and left out of the
// repairing passes' lines (rep), where they would otherwise be listed
// again, once per round, as if they were new. With final nil nothing
// was repaired: every problem rep found is still there.
func markUnrepaired(rep, final *Result) {
	type key struct {
		p   Problem
		msg string
	}
	mark := func(f *Finding) {
		f.Unrepaired = true
		f.Msg += unrepairedSuffix
	}
	found := map[key]bool{}
	for _, f := range rep.Findings {
		if f.isProblem() {
			found[key{f.Problem, f.Msg}] = true
		}
	}
	// Problems the second check finds again, and that a repairing pass
	// had found: not repaired. One the second check finds for the first
	// time is new and keeps its line.
	still := map[key]bool{}
	if final != nil {
		for i := range final.Findings {
			f := &final.Findings[i]
			if k := (key{f.Problem, f.Msg}); f.isProblem() && found[k] {
				still[k] = true
				mark(f)
			}
		}
	}
	seen := map[key]bool{}
	kept := rep.Findings[:0]
	for _, f := range rep.Findings {
		if f.isProblem() {
			k := key{f.Problem, f.Msg}
			if still[k] || seen[k] {
				continue
			}
			seen[k] = true
			if final == nil {
				mark(&f)
			}
		}
		kept = append(kept, f)
	}
	rep.Findings = kept
}

// maxRepairRounds bounds the repairing rounds of one Check.
const maxRepairRounds = 4

// mergeRepair adds the repairing pass r to the ones before (acc): findings
// in order, fixed counters summed, other counters from r.
func mergeRepair(acc, r *Result) *Result {
	if acc == nil {
		return r
	}
	findings := append(acc.Findings, r.Findings...)
	cf, lf := acc.CorruptionsFixed+r.CorruptionsFixed, acc.LeaksFixed+r.LeaksFixed
	var z *ZonedResult
	if acc.Zoned != nil || r.Zoned != nil {
		z = &ZonedResult{}
		if r.Zoned != nil {
			*z = *r.Zoned
		}
		if acc.Zoned != nil {
			z.ExtensionErrorsFixed += acc.Zoned.ExtensionErrorsFixed
			z.WritePointerErrorsFixed += acc.Zoned.WritePointerErrorsFixed
			z.DataBeyondWPFixed += acc.Zoned.DataBeyondWPFixed
			z.ZeroBeyondWPReclaimed += acc.Zoned.ZeroBeyondWPReclaimed
		}
	}
	m := *r
	m.Findings, m.CorruptionsFixed, m.LeaksFixed, m.Zoned = findings, cf, lf, z
	return &m
}

// checker is the state of one pass over the image.
type checker struct {
	f    image.File
	mode Mode
	res  *Result

	fileSize uint64
	hdr      *image.Header
	exts     []extension
	cs       uint64
	cb       uint32
	extL2    bool
	entSize  uint64 // bytes per L2 entry
	l2Ents   uint64 // entries per L2 table
	// compressed cluster descriptor layout
	csizeShift uint32
	csizeMask  uint64
	coffMask   uint64

	// refcount structure
	order     uint32
	rbEnts    uint64
	rbBits    uint32
	rmax      uint64
	reftable  []uint64 // entries inside the file (those beyond read as 0)
	reftableN uint64   // entries the header declares
	badBlock  map[uint64]bool
	stored    counts // stored refcounts of clusters [0, stored.n())
	used      counts // references found (QEMU's in-memory refcount table)
	nb        uint64 // clusters compared (QEMU's nb_clusters)
	rebuild   bool

	l1 []uint64 // active L1 table (entries inside the file)

	bitmaps       []bitmap
	bitmapDirOff  uint64
	bitmapDirSize uint64

	snapshots      []snapshot
	snapshotsSize  uint64
	snapCorruption int64 // counted apart, as QEMU's snapshot_res

	// Non-repairing passes check OFLAG_COPIED while walking the L2 tables
	// (each is read once) and report it after the refcount comparison, in
	// qemu-img's order.
	inlineCopied  bool
	copied        []Finding
	copiedCorrupt int64

	deferredL1 []deferredL1
	deferredL2 []deferredL2
	discarded  map[uint64]uint64 // references removed by this pass, per cluster

	dirtyRC map[uint64]struct{} // clusters whose stored refcount must be written
	wrote   bool                // writes not yet synced

	z           *zstate
	unsafeTable bool // the write-pointer table overlaps other clusters: do not use it
	// located: where this read-only pass found the write-pointer table
	// the zoned extension does not point to (hints.table); hintTable:
	// where the read-only pass before found it; keptTable: that table,
	// counted although the extension does not point to it.
	located, hintTable, keptTable extent
	// zext: the zoned extension as parsed (nil: missing or unparsable);
	// needLocate: it does not lead to a usable write-pointer table.
	zext       *zone.Header
	needLocate bool

	// metadata: from the read-only pass before a repair, the metadata
	// clusters entries must not point into (see hints.metadata).
	metadata *metaSet
	// intoMeta counts, per cluster, references by L1 and L2 entries that
	// point into metadata, and garbage the references counted while
	// walking such an "L2 table" (which a repair never walks): a table is
	// not unsafe to write because of them, since the repair removes them.
	intoMeta, garbage map[uint64]uint64
	walkingGarbage    bool
	candidates        *metaSet // a read-only pass's metadata clusters, known before the walk
	// reclaim: per zone, the zero clusters beyond its write pointer this
	// pass reclaimed.
	reclaimed map[int64]int64

	// Clusters referenced as L1 and as L2 tables, and (from a read-only
	// pass before a repair) the table clusters a repair must not write:
	// those also used as something else.
	l1Refs, l2Refs map[uint64]uint64
	unsafe         map[uint64]bool
	// The header cluster is also used as something else (a snapshot
	// table at offset 0...): writing the header would change that too, so
	// a repair does not.
	headerShared bool

	buf []byte // scratch cluster
}

// extension is a header extension with the file offset of its data.
type extension struct {
	magic uint32
	off   uint64
	data  []byte
}

type snapshot struct {
	l1Off  uint64
	l1Size uint32
	id     string
	name   string
	extra  uint32
}

type deferredL1 struct {
	tableOff uint64
	index    uint64
	entry    uint64
	active   bool
}

type deferredL2 struct {
	l2Off  uint64
	index  uint64
	entry  uint64
	bitmap uint64
	active bool
	guest  uint64
}

// hints is what a read-only pass tells the repairing pass after it.
type hints struct {
	zonedOverlap bool            // the write-pointer table overlaps other clusters
	headerShared bool            // the header cluster is also used as something else
	unsafeTables map[uint64]bool // table clusters also used as something else
	// metadata names the clusters of the metadata structures (header, L1
	// table, refcount table and blocks, snapshot table, write-pointer
	// table) that an L1 or L2 entry must never point into: a repair
	// clears such an entry.
	metadata *metaSet
	// table is where the write-pointer table really lies when the zoned
	// extension does not say so (size 0: not found; see locateTable).
	table extent
}

// extent is a byte range of the file.
type extent struct{ off, size uint64 }

// tally is a copy of the counters QEMU saves and restores.
type tally struct {
	checkErrors, corruptions, leaks, corrFixed, leaksFixed int64
}

func (c *checker) tally() tally {
	r := c.res
	return tally{r.CheckErrors, r.Corruptions, r.Leaks, r.CorruptionsFixed, r.LeaksFixed}
}

func (c *checker) setTally(t tally) {
	r := c.res
	r.CheckErrors, r.Corruptions, r.Leaks, r.CorruptionsFixed, r.LeaksFixed = t.checkErrors, t.corruptions, t.leaks, t.corrFixed, t.leaksFixed
}

// finding returns a Finding with every location field unset.
func finding(k Kind, p Problem, format string, args ...any) Finding {
	return Finding{Kind: k, Problem: p, Cluster: -1, Offset: -1, Guest: -1, Zone: -1, WP: -1, Msg: fmt.Sprintf(format, args...)}
}

// report appends f and counts it.
func (c *checker) report(f Finding) {
	c.res.Findings = append(c.res.Findings, f)
	switch f.Kind {
	case KindLeak:
		if f.Repaired {
			c.res.LeaksFixed++
		} else {
			c.res.Leaks++
		}
	case KindCorruption:
		if f.Repaired {
			c.res.CorruptionsFixed++
		} else {
			c.res.Corruptions++
		}
	case KindCheckError:
		c.res.CheckErrors++
	}
}

// verb is "Repairing" or "ERROR".
func verb(repair bool) string {
	if repair {
		return "Repairing"
	}
	return "ERROR"
}

// hexAlt formats v as C's %#x does (0 has no prefix).
func hexAlt(v uint64) string {
	if v == 0 {
		return "0"
	}
	return fmt.Sprintf("%#x", v)
}

// runPass runs one pass (QEMU's qcow2_co_check_locked). It returns a nil
// Result when the header cannot be used.
func runPass(f image.File, mode Mode, h hints) (*Result, error) {
	c := &checker{f: f, mode: mode, res: &Result{Format: "qcow2"}, unsafeTable: h.zonedOverlap, unsafe: h.unsafeTables, headerShared: h.headerShared,
		metadata: h.metadata, hintTable: h.table}
	if err := c.open(); err != nil {
		return nil, err
	}
	err := c.run()
	if err != nil {
		var ae *AbortError
		if errors.As(err, &ae) {
			err = ae.Err
		}
	}
	return c.res, err
}

// open reads and validates the header and the header extensions, as
// opening the image does.
func (c *checker) open() error {
	size, err := c.f.Size()
	if err != nil {
		return err
	}
	c.fileSize = uint64(size)
	first := make([]byte, min(size, int64(1)<<image.MaxClusterBits))
	if n, err := c.f.ReadAt(first, 0); err != nil && !errors.Is(err, io.EOF) {
		return err
	} else {
		first = first[:n]
	}
	h, err := image.ParseHeader(first)
	if err != nil {
		return err
	}
	c.hdr = h
	c.cb = h.ClusterBits
	c.cs = uint64(1) << c.cb
	hc := make([]byte, c.cs)
	copy(hc, first)
	extEnd := c.cs
	if h.BackingFileOffset != 0 {
		extEnd = h.BackingFileOffset
	}
	if h.Version >= 3 {
		exts, err := parseExtensions(hc, uint64(h.HeaderLength), extEnd)
		if err != nil {
			return err
		}
		c.exts = exts
	}
	known := image.IncompatDirty | image.IncompatCorrupt | image.IncompatCompression | image.IncompatExtL2 | image.IncompatZoned
	if unk := h.IncompatibleFeatures &^ known; unk != 0 {
		return &image.UnsupportedFeatureError{Names: c.featureNames(unk)}
	}
	if h.CryptMethod > 2 {
		return fmt.Errorf("unsupported encryption method %d", h.CryptMethod)
	}
	c.extL2 = h.ExtendedL2()
	c.entSize = 8
	if c.extL2 {
		c.entSize = 16
	}
	c.l2Ents = c.cs / c.entSize
	c.csizeShift = 62 - (c.cb - 8)
	c.csizeMask = uint64(1)<<(c.cb-8) - 1
	c.coffMask = uint64(1)<<c.csizeShift - 1
	c.order = h.RefcountOrder
	c.rbEnts = c.cs * 8 >> c.order
	c.rbBits = uint32(log2(c.rbEnts))
	c.rmax = image.MaxRefcount(c.order)
	c.reftableN = uint64(h.RefcountTableClusters) * c.cs / 8
	return c.loadBitmaps()
}

// parseExtensions decodes the header extensions like image.ParseExtensions
// and records where each one's data lies.
func parseExtensions(b []byte, start, end uint64) ([]extension, error) {
	if _, err := image.ParseExtensions(b, int(start), int(end)); err != nil {
		return nil, err
	}
	end = min(end, uint64(len(b)))
	var exts []extension
	for off := start; off+8 <= end; {
		magic := binary.BigEndian.Uint32(b[off:])
		n := uint64(binary.BigEndian.Uint32(b[off+4:]))
		if magic == image.ExtEnd {
			break
		}
		d := off + 8
		exts = append(exts, extension{magic: magic, off: d, data: append([]byte(nil), b[d:d+n]...)})
		off = d + (n+7)&^7
	}
	return exts, nil
}

func (c *checker) ext(magic uint32) *extension {
	for i := range c.exts {
		if c.exts[i].magic == magic {
			return &c.exts[i]
		}
	}
	return nil
}

// featureNames names unknown incompatible feature bits as QEMU does.
func (c *checker) featureNames(mask uint64) []string {
	var names []string
	if e := c.ext(image.ExtFeatureTable); e != nil {
		if fs, err := image.ParseFeatureTable(e.data); err == nil {
			for _, f := range fs {
				if f.Type == image.FeatureIncompatible && f.Bit < 64 && mask&(1<<f.Bit) != 0 {
					names = append(names, f.Name)
					mask &^= 1 << f.Bit
				}
			}
		}
	}
	for _, f := range image.DefaultFeatures() {
		if f.Type == image.FeatureIncompatible && mask&(1<<f.Bit) != 0 {
			names = append(names, f.Name)
			mask &^= 1 << f.Bit
		}
	}
	if mask != 0 {
		names = append(names, fmt.Sprintf("Unknown incompatible feature: %x", mask))
	}
	return names
}

// run is QEMU's qcow2_co_check_locked: the snapshot table, then the
// refcounts (qcow2_check_refcounts), then the header flags.
func (c *checker) run() error {
	h := c.hdr
	c.res.TotalClusters = int64(ceilDiv(h.Size/512*512, c.cs))
	c.nb = ceilDiv(c.fileSize, c.cs)
	if c.nb > maxCheckClusters {
		c.report(finding(KindCheckError, ProblemIO, "ERROR image file of %d bytes is too large to check", c.fileSize))
		return fmt.Errorf("image file of %d clusters: %w", c.nb, syscall.EFBIG)
	}
	if err := c.readSnapshots(); err != nil {
		return err
	}
	if err := c.loadRefcounts(); err != nil {
		return err
	}
	c.used = newCounts(c.nb)
	c.inlineCopied = c.mode == RepairNone
	if err := c.calculate(c.mode); err != nil {
		return err
	}
	pre := c.tally()
	highest := c.compare(RepairNone)
	if c.rebuild && c.mode&repairErrors != 0 && c.headerShared {
		c.report(finding(KindCheckError, ProblemRebuild, "ERROR cannot rebuild the refcount structure: the header cluster is also used by another structure"))
		return errors.New("the refcount structure cannot be rebuilt")
	}
	if c.rebuild && c.mode&repairErrors != 0 {
		c.report(finding(KindInfo, ProblemRebuild, "Rebuilding refcount structure"))
		old := c.tally()
		if err := c.rebuildRefcounts(); err != nil {
			c.report(finding(KindCheckError, ProblemRebuild, "ERROR rebuilding the refcount structure: %v", err))
			return err
		}
		c.res.Corruptions, c.res.Leaks = 0, 0
		if z := c.res.Zoned; z != nil {
			z.ExtensionErrors, z.WritePointerErrors, z.DataBeyondWP = 0, 0, 0
		}
		c.rebuild = false
		c.used = newCounts(c.nb)
		c.discarded = nil
		if err := c.calculate(RepairNone); err != nil {
			return err
		}
		var fresh int64
		if c.mode&RepairLeaks != 0 {
			saved := c.tally()
			c.setTally(tally{})
			highest = c.compare(RepairLeaks)
			if c.rebuild {
				c.report(finding(KindInfo, ProblemRebuild, "ERROR rebuilt refcount structure is still broken"))
			}
			fresh = c.res.Leaks
			c.setTally(saved)
			if err := c.writeRefcounts(); err != nil {
				return err
			}
		}
		if c.res.Corruptions < old.corruptions {
			c.res.CorruptionsFixed += old.corruptions - c.res.Corruptions
		}
		if c.res.Leaks < old.leaks {
			c.res.LeaksFixed += old.leaks - c.res.Leaks
		}
		c.res.Leaks += fresh
	} else if c.mode != RepairNone {
		if c.rebuild {
			c.report(finding(KindCheckError, ProblemRebuild, "ERROR need to rebuild refcount structures"))
			return ErrNeedRebuild
		}
		if c.res.Leaks > 0 || c.res.Corruptions > 0 {
			c.setTally(pre)
			highest = c.compare(c.mode)
		}
		if err := c.writeRefcounts(); err != nil {
			return err
		}
	}
	if c.mode == RepairNone {
		c.res.Findings = append(c.res.Findings, c.copied...)
		c.res.Corruptions += c.copiedCorrupt
	} else if err := c.copiedPass(c.mode); err != nil {
		return err
	}
	c.res.ImageEndOffset = int64((highest + 1) * c.cs)
	if c.mode == RepairNone {
		c.res.hints.unsafeTables = c.sharedTables()
		c.res.hints.headerShared = c.headerShared0()
		c.res.hints.metadata = c.metadataClusters(true)
		c.res.hints.table = c.located
	}
	c.res.Corruptions += c.snapCorruption
	if c.mode != RepairNone && c.res.CheckErrors == 0 && c.res.Corruptions == 0 && !c.headerShared {
		// Clearing the flags changes nothing a check finds.
		changed := c.res.changed
		if err := c.markClean(); err != nil {
			return err
		}
		c.res.changed = changed
	}
	return nil
}

// headerShared0 reports whether another structure lies in the header
// cluster, counted or not (a table too long for the file is not counted).
func (c *checker) headerShared0() bool {
	h := c.hdr
	in0 := func(off, size uint64) bool { return size > 0 && off < c.cs }
	if c.used.get(0) > 1 || in0(h.L1TableOffset, uint64(h.L1Size)*8) ||
		(h.NbSnapshots > 0 && h.SnapshotsOffset < c.cs) {
		return true
	}
	for _, sn := range c.snapshots {
		if in0(sn.l1Off, uint64(sn.l1Size)*8) {
			return true
		}
	}
	return false
}

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

// tableRef records that [off, off+size) was counted as an L1 or L2 table.
func (c *checker) tableRef(refs *map[uint64]uint64, off, size uint64) {
	if size == 0 || c.beyondEOF(off, size) {
		return
	}
	if *refs == nil {
		*refs = map[uint64]uint64{}
	}
	for k := off >> c.cb; k <= (off+size-1)>>c.cb; k++ {
		(*refs)[k]++
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

// markClean clears the dirty and corrupt bits (qcow2_mark_clean,
// qcow2_mark_consistent): the last step of a repair.
func (c *checker) markClean() error {
	h := c.hdr
	bits := h.IncompatibleFeatures & (image.IncompatDirty | image.IncompatCorrupt)
	if h.Version < 3 || bits == 0 {
		return nil
	}
	if err := c.syncWrites(); err != nil {
		return err
	}
	v := h.IncompatibleFeatures &^ bits
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	if err := c.write(b[:], 72); err != nil {
		return err
	}
	if err := c.syncWrites(); err != nil {
		return err
	}
	h.IncompatibleFeatures = v
	return nil
}

// readAt reads len(p) bytes at off; what lies beyond the end of the file
// reads as zeroes, as in QEMU's file driver.
func (c *checker) readAt(p []byte, off uint64) error {
	if off >= c.fileSize {
		clear(p)
		return nil
	}
	n, err := c.f.ReadAt(p, int64(off))
	if n < len(p) {
		clear(p[n:])
		if err != nil && !errors.Is(err, io.EOF) {
			return c.ioError(err, "reading %d bytes at offset 0x%x", len(p), off)
		}
	}
	return nil
}

func (c *checker) ioError(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	c.report(finding(KindCheckError, ProblemIO, "ERROR: I/O error %s: %v", msg, err))
	return &AbortError{Err: fmt.Errorf("%s: %w", msg, err)}
}

// readEntries reads a table of n big-endian 64-bit entries at off. Only the
// entries inside the file are returned: the others read as zero.
func (c *checker) readEntries(off, n uint64) ([]uint64, error) {
	if n == 0 || off >= c.fileSize {
		return nil, nil
	}
	n = min(n, (c.fileSize-off+7)/8)
	b := make([]byte, n*8)
	if err := c.readAt(b, off); err != nil {
		return nil, err
	}
	t := make([]uint64, n)
	for i := range t {
		t[i] = binary.BigEndian.Uint64(b[i*8:])
	}
	return t, nil
}

// readCluster reads cs bytes at off into the scratch buffer.
func (c *checker) readCluster(off uint64) ([]byte, error) {
	if c.buf == nil {
		c.buf = make([]byte, c.cs)
	}
	return c.buf, c.readAt(c.buf, off)
}

// write writes p at off (repairs only).
func (c *checker) write(p []byte, off uint64) error {
	if c.mode == RepairNone {
		panic("check: write in a read-only pass")
	}
	if _, err := c.f.WriteAt(p, int64(off)); err != nil {
		return c.ioError(err, "writing %d bytes at offset 0x%x", len(p), off)
	}
	c.wrote = true
	c.res.changed = true
	if end := off + uint64(len(p)); end > c.fileSize {
		c.fileSize = end
	}
	return nil
}

// syncWrites makes the writes so far durable.
func (c *checker) syncWrites() error {
	if !c.wrote {
		return nil
	}
	if err := c.f.Sync(); err != nil {
		return c.ioError(err, "syncing the image")
	}
	c.wrote = false
	return nil
}

func (c *checker) writeU64(off, v uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return c.write(b[:], off)
}

// clusterType classifies an L2 entry like qcow2_get_cluster_type.
func (c *checker) clusterType(e uint64) clusterType {
	switch {
	case e&image.OflagCompressed != 0:
		return ctCompressed
	case e&image.OflagZero != 0 && !c.extL2:
		if e&image.L2OffsetMask != 0 {
			return ctZeroAlloc
		}
		return ctZeroPlain
	case e&image.L2OffsetMask == 0:
		return ctUnallocated
	}
	return ctNormal
}

// compressedRange returns the host bytes a compressed entry occupies
// (qcow2_parse_compressed_l2_entry).
func (c *checker) compressedRange(e uint64) (off, size uint64) {
	off = e & c.coffMask
	sectors := (e>>c.csizeShift)&c.csizeMask + 1
	return off, sectors*512 - off&511
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
		f := finding(KindCorruption, ProblemBeyondEOF, "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset %#x size %#x", off, size)
		f.Offset = int64(off)
		c.report(f)
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
			f := finding(KindCorruption, ProblemRefcountOverflow, "ERROR: overflow cluster offset=0x%x", k<<c.cb)
			f.Cluster, f.Offset = int64(k), int64(k<<c.cb)
			c.report(f)
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
func (c *checker) dropRef(off, size uint64) {
	if size == 0 || c.beyondEOF(off, size) {
		return
	}
	if c.discarded == nil {
		c.discarded = map[uint64]uint64{}
	}
	for k := off >> c.cb; k <= (off+size-1)>>c.cb; k++ {
		c.discarded[k]++
	}
}

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

func ceilDiv(a, b uint64) uint64 {
	if a == 0 {
		return 0
	}
	return (a-1)/b + 1
}

// log2 returns the base-2 logarithm of a power of two.
func log2(v uint64) int { return bits.Len64(v) - 1 }
