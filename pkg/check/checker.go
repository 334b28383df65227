package check

import (
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/internal/arith"
	"github.com/zqimg/zqimg/pkg/zone"
)

// Limits of QEMU's check.
const (
	maxSnapshotsSize = 1024 * image.MaxSnapshots
	maxSnapshotExtra = 1024
	maxL1Entries     = image.MaxL1Bytes / 8
	maxCheckClusters = 1<<31 - 1 // QEMU refuses more (INT_MAX)
)

// checker is the state of one pass over the image.
type checker struct {
	f         image.File
	mode      Mode
	res       *Result
	maxExtend uint64 // Options.MaxExtend

	fileSize uint64
	hdr      *image.Header
	exts     []image.Extension
	cs       uint64
	cb       uint32
	extL2    bool
	entSize  uint64 // bytes per L2 entry
	l2Ents   uint64 // entries per L2 table

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
	// fixSnaps counts the snapshot table entries completeSnapshots
	// rewrites: version 3 entries without the extra data version 3
	// requires, and entries with too much extra data (truncated).
	fixSnaps int

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

type snapshot struct {
	off    uint64 // host offset of the entry
	l1Off  uint64
	l1Size uint32
	id     string
	name   string
	extra  uint32
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
	// extension does not say so (size 0: not found; see locate).
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

// Location setters of a Finding under construction.
func (f Finding) at(off uint64) Finding     { f.Offset = int64(off); return f }
func (f Finding) guest(g uint64) Finding    { f.Guest = int64(g); return f }
func (f Finding) cluster(k uint64) Finding  { f.Cluster = int64(k); return f }
func (f Finding) zone(zi, wp int64) Finding { f.Zone, f.WP = zi, wp; return f }
func (f Finding) repaired(r bool) Finding   { f.Repaired = r; return f }
func (f Finding) clusterAt(k uint64, cb uint32) Finding {
	return f.cluster(k).at(k << cb)
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

// reportFix records f, a problem a repair can fix, and with repair fixes
// it: f is marked Repaired (its message must then say so) and fix, the
// repair, runs once the finding is recorded. Without repair f is only
// recorded.
func (c *checker) reportFix(f Finding, repair bool, fix func() error) error {
	c.report(f.repaired(repair))
	if !repair {
		return nil
	}
	return fix()
}

// verb is "Repairing" or "ERROR".
func verb(repair bool) string { return pick(repair, "ERROR", "Repairing") }

// pick returns found, or repaired when repair is set: the two wordings of
// a message.
func pick(repair bool, found, repaired string) string {
	if repair {
		return repaired
	}
	return found
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
func runPass(f image.File, opts Options, mode Mode, h hints) (*Result, error) {
	c := &checker{f: f, mode: mode, res: &Result{Format: "qcow2"}, maxExtend: opts.MaxExtend,
		unsafeTable: h.zonedOverlap, unsafe: h.unsafeTables, headerShared: h.headerShared,
		metadata: h.metadata, hintTable: h.table}
	if c.maxExtend == 0 {
		c.maxExtend = defaultMaxExtend
	}
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
	h, err := image.ParseHeaderForCheck(first)
	if err != nil {
		return err
	}
	c.hdr = h
	c.cb = h.ClusterBits
	c.cs = uint64(1) << c.cb
	hc := make([]byte, c.cs)
	copy(hc, first)
	exts, err := image.HeaderExtensions(h, hc)
	if err != nil {
		return err
	}
	if h.Version >= 3 {
		c.exts = exts
	}
	known := image.IncompatDirty | image.IncompatCorrupt | image.IncompatCompression | image.IncompatExtL2 | image.IncompatZoned
	if unk := h.IncompatibleFeatures &^ known; unk != 0 {
		return &image.UnsupportedFeatureError{Names: image.FeatureNames(image.FeatureTable(c.exts), unk)}
	}
	if h.CryptMethod > 2 {
		return fmt.Errorf("unsupported encryption method %d", h.CryptMethod)
	}
	c.extL2 = h.ExtendedL2()
	c.entSize = image.L2EntrySize(c.extL2)
	c.l2Ents = c.cs / c.entSize
	c.order = h.RefcountOrder
	c.rbEnts = c.cs * 8 >> c.order
	c.rbBits = uint32(arith.Log2(c.rbEnts))
	c.rmax = image.MaxRefcount(c.order)
	c.reftableN = uint64(h.RefcountTableClusters) * c.cs / 8
	return c.loadBitmaps()
}

// ext returns the header extension with the given magic, or nil.
func (c *checker) ext(magic uint32) *image.Extension {
	for i := range c.exts {
		if c.exts[i].Magic == magic {
			return &c.exts[i]
		}
	}
	return nil
}

// run is QEMU's qcow2_co_check_locked: the snapshot table, then the
// refcounts (qcow2_check_refcounts), then the header flags.
func (c *checker) run() error {
	h := c.hdr
	c.res.TotalClusters = int64(arith.CeilDiv(h.Size/512*512, c.cs))
	c.nb = arith.CeilDiv(c.fileSize, c.cs)
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
	highest, err := c.settleRefcounts()
	if err != nil {
		return err
	}
	if c.mode == RepairNone {
		c.res.Findings = append(c.res.Findings, c.copied...)
		c.res.Corruptions += c.copiedCorrupt
	} else if err := c.copiedPass(c.mode); err != nil {
		return err
	}
	if c.mode&repairErrors != 0 {
		if err := c.completeSnapshots(); err != nil {
			c.report(finding(KindCheckError, ProblemSnapshot, "ERROR rewriting the snapshot table: %v", err))
			return err
		}
		if end := (c.hdr.SnapshotsOffset + c.snapshotsSize - 1) >> c.cb; c.hdr.NbSnapshots > 0 && end > highest {
			highest = end
		}
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

// settleRefcounts compares the stored refcounts with the references and,
// repairing, makes them agree: in place, or by rebuilding the refcount
// structure when it is broken. It returns the highest cluster in use.
func (c *checker) settleRefcounts() (uint64, error) {
	pre := c.tally()
	highest := c.compare(RepairNone)
	switch {
	case c.rebuild && c.mode&repairErrors != 0:
		if c.headerShared {
			c.report(finding(KindCheckError, ProblemRebuild, "ERROR cannot rebuild the refcount structure: the header cluster is also used by another structure"))
			return 0, errors.New("the refcount structure cannot be rebuilt")
		}
		return c.rebuildAndRecount(highest)
	case c.mode != RepairNone:
		if c.rebuild {
			c.report(finding(KindCheckError, ProblemRebuild, "ERROR need to rebuild refcount structures"))
			return 0, ErrNeedRebuild
		}
		if c.res.Leaks > 0 || c.res.Corruptions > 0 {
			c.setTally(pre)
			highest = c.compare(c.mode)
		}
		return highest, c.writeRefcounts()
	}
	return highest, nil
}

// rebuildAndRecount rebuilds the refcount structure (QEMU's
// rebuild_refcount_structure), counts the references again over the new
// structure and, with RepairLeaks, frees what the rebuild left unused.
// The counters then say what the rebuild fixed. highest is the highest
// cluster in use before the rebuild.
func (c *checker) rebuildAndRecount(highest uint64) (uint64, error) {
	c.report(finding(KindInfo, ProblemRebuild, "Rebuilding refcount structure"))
	old := c.tally()
	if err := c.rebuildRefcounts(); err != nil {
		c.report(finding(KindCheckError, ProblemRebuild, "ERROR rebuilding the refcount structure: %v", err))
		return 0, err
	}
	c.res.Corruptions, c.res.Leaks = 0, 0
	if z := c.res.Zoned; z != nil {
		z.ExtensionErrors, z.WritePointerErrors, z.DataBeyondWP = 0, 0, 0
	}
	c.rebuild = false
	c.used = newCounts(c.nb)
	c.discarded = nil
	if err := c.calculate(RepairNone); err != nil {
		return 0, err
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
			return 0, err
		}
	}
	if c.res.Corruptions < old.corruptions {
		c.res.CorruptionsFixed += old.corruptions - c.res.Corruptions
	}
	if c.res.Leaks < old.leaks {
		c.res.LeaksFixed += old.leaks - c.res.Leaks
	}
	c.res.Leaks += fresh
	return highest, nil
}

// knownAutoclear are the autoclear feature bits QEMU knows: a repair
// clears the others, as QEMU does when it opens an image for writing
// (iotest 036).
const knownAutoclear = image.AutoclearBitmaps | image.AutoclearDataFileRaw

// markClean clears the dirty and corrupt bits (qcow2_mark_clean,
// qcow2_mark_consistent) and the unknown autoclear bits: the last step
// of a repair.
func (c *checker) markClean() error {
	h := c.hdr
	if h.Version < 3 {
		return nil
	}
	if ac := h.AutoclearFeatures &^ knownAutoclear; ac != 0 {
		v := h.AutoclearFeatures &^ ac
		if err := c.writeU64(image.HdrAutoclearFeatures, v); err != nil {
			return err
		}
		if err := c.syncWrites(); err != nil {
			return err
		}
		h.AutoclearFeatures = v
	}
	bits := h.IncompatibleFeatures & (image.IncompatDirty | image.IncompatCorrupt)
	if bits == 0 {
		return nil
	}
	if err := c.syncWrites(); err != nil {
		return err
	}
	v := h.IncompatibleFeatures &^ bits
	if err := c.writeU64(image.HdrIncompatibleFeatures, v); err != nil {
		return err
	}
	if err := c.syncWrites(); err != nil {
		return err
	}
	h.IncompatibleFeatures = v
	return nil
}

// headerShared0 reports whether another structure lies in the header
// cluster, counted or not (a table too long for the file is not counted).
func (c *checker) headerShared0() bool {
	h := c.hdr
	in0 := func(off, size uint64) bool { return arith.Overlaps(off, size, 0, c.cs) }
	// References into the header from entries a repair clears do not
	// count: the repair leaves the header alone.
	if u := c.used.get(0); u-min(u, c.intoMeta[0]) > 1 || in0(h.L1TableOffset, uint64(h.L1Size)*8) ||
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
