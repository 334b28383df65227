package check

import (
	"errors"
	"fmt"
)

// Mode selects what a check repairs. The values are bit masks, as QEMU's
// BdrvCheckMode: RepairAll includes RepairLeaks.
type Mode int

const (
	// RepairNone only checks; the file is never written.
	RepairNone Mode = 0
	// RepairLeaks lowers refcounts that are higher than the references
	// (qemu-img check -r leaks).
	RepairLeaks Mode = 1
	// repairErrors is QEMU's BDRV_FIX_ERRORS.
	repairErrors Mode = 2
	// RepairAll also repairs corruptions (qemu-img check -r all).
	RepairAll Mode = RepairLeaks | repairErrors
)

func (m Mode) String() string {
	switch m {
	case RepairNone:
		return "none"
	case RepairLeaks:
		return "leaks"
	case RepairAll:
		return "all"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses the argument of -r: "leaks" or "all".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "leaks":
		return RepairLeaks, nil
	case "all":
		return RepairAll, nil
	}
	return RepairNone, fmt.Errorf("Unknown option value for -r (expecting 'leaks' or 'all'): %s", s)
}

// Options control a check.
type Options struct {
	// Repair selects what is repaired; RepairNone never writes.
	Repair Mode
	// ForceShare opens the image without taking locks (qemu-img -U). It is
	// used by CheckPath only, and refused together with a repair.
	ForceShare bool
	// MaxExtend bounds, in bytes, how far beyond its end a repair extends
	// the file to bring a table lying past it back inside (see doc.go,
	// "a table lying beyond the end of the file"); 0 selects 64 MiB.
	MaxExtend uint64
}

// defaultMaxExtend is Options.MaxExtend when it is 0.
const defaultMaxExtend = 64 << 20

// Kind says how a finding counts.
type Kind int

const (
	// KindInfo counts nothing: progress lines such as "Rebuilding
	// refcount structure" and second lines of a message.
	KindInfo Kind = iota
	// KindLeak counts as a leaked cluster.
	KindLeak
	// KindCorruption counts as an error (corruption).
	KindCorruption
	// KindCheckError counts as an internal error of the check.
	KindCheckError
)

func (k Kind) String() string {
	switch k {
	case KindInfo:
		return "info"
	case KindLeak:
		return "leak"
	case KindCorruption:
		return "corruption"
	case KindCheckError:
		return "check-error"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Problem is the typed cause of a finding.
type Problem int

// The problems a check reports.
const (
	ProblemNone                  Problem = iota
	ProblemRefcount                      // stored refcount differs from the references
	ProblemRefcountOverflow              // more references than the refcount width holds
	ProblemBeyondEOF                     // a structure lies one cluster or more beyond the end of the file
	ProblemCopied                        // L2 entry's OFLAG_COPIED wrong for its data cluster's refcount
	ProblemL1Unaligned                   // L1 entry points to an unaligned L2 table
	ProblemL1Reserved                    // L1 entry with reserved bits set
	ProblemL2Reserved                    // L2 entry with reserved bits set
	ProblemL2Unaligned                   // L2 entry points to an unaligned data cluster
	ProblemCompressedCopied              // compressed L2 entry with OFLAG_COPIED
	ProblemSubclusterBitmap              // extended L2 entry with an impossible subcluster bitmap
	ProblemSnapshot                      // snapshot table or snapshot entry problem
	ProblemRefcountTable                 // refcount table entry or refcount block problem
	ProblemRebuild                       // the refcount structure is (being) rebuilt
	ProblemBitmaps                       // bitmap directory or bitmap table problem
	ProblemZonedExtension                // zoned header extension invalid
	ProblemZonedTable                    // write-pointer table misplaced (or found where the extension does not point)
	ProblemZonedByteSwap                 // write-pointer table stored big-endian
	ProblemWritePointer                  // impossible write-pointer table entry
	ProblemDataBeyondWP                  // allocated data at or beyond a write pointer
	ProblemIO                            // an I/O error
	ProblemEntryIntoMetadata             // an L1 or L2 entry points into a metadata structure
	ProblemZeroBeyondWP                  // allocated zero clusters beyond a write pointer (not damage)
	ProblemZonedExtensionMissing         // the zoned format bit is set but the zoned extension is missing
	ProblemZonedFeatureBit               // the zoned extension is present but the zoned format bit is clear
	ProblemZonedTableOverlap             // a write-pointer table cluster is also used by something else
	ProblemL1Copied                      // L1 entry's OFLAG_COPIED wrong for its L2 table's refcount
	ProblemZoneFaultPlan                 // zqimg's zone fault extension invalid
	ProblemActiveZones                   // more active (CLOSED) zones than max_active_zones
)

var problemNames = [...]string{
	ProblemNone:              "none",
	ProblemRefcount:          "refcount",
	ProblemRefcountOverflow:  "refcount-overflow",
	ProblemBeyondEOF:         "beyond-eof",
	ProblemCopied:            "copied-flag",
	ProblemL1Unaligned:       "l1-unaligned",
	ProblemL1Reserved:        "l1-reserved-bits",
	ProblemL2Reserved:        "l2-reserved-bits",
	ProblemL2Unaligned:       "l2-unaligned",
	ProblemCompressedCopied:  "compressed-copied",
	ProblemSubclusterBitmap:  "subcluster-bitmap",
	ProblemSnapshot:          "snapshot",
	ProblemRefcountTable:     "refcount-table",
	ProblemRebuild:           "rebuild",
	ProblemBitmaps:           "bitmaps",
	ProblemZonedExtension:    "zoned-extension",
	ProblemZonedTable:        "zoned-table",
	ProblemZonedByteSwap:     "zoned-byte-swapped",
	ProblemWritePointer:      "write-pointer",
	ProblemDataBeyondWP:      "data-beyond-write-pointer",
	ProblemIO:                "io",
	ProblemEntryIntoMetadata: "entry-into-metadata",
	ProblemZeroBeyondWP:      "zero-clusters-beyond-write-pointer",

	ProblemZonedExtensionMissing: "zoned-extension-missing",
	ProblemZonedFeatureBit:       "zoned-feature-bit",
	ProblemZonedTableOverlap:     "zoned-table-overlap",
	ProblemL1Copied:              "l1-copied-flag",
	ProblemZoneFaultPlan:         "zone-fault-plan",
	ProblemActiveZones:           "too-many-active-zones",
}

func (p Problem) String() string {
	if int(p) >= 0 && int(p) < len(problemNames) {
		return problemNames[p]
	}
	return fmt.Sprintf("Problem(%d)", int(p))
}

// Finding is one line of the report: what was found (or repaired) and
// where. Fields that do not apply are -1.
type Finding struct {
	Kind     Kind
	Problem  Problem
	Repaired bool // the problem was repaired (the line says "Repairing")
	// Unrepaired marks a problem that a repair (-r all) found and could
	// not repair: the second check of the repaired image still finds it
	// (the line then ends with "(could not be repaired)").
	Unrepaired bool
	Cluster    int64  // host cluster index
	Offset     int64  // host byte offset
	Guest      int64  // guest byte offset
	Zone       int64  // zone index
	WP         int64  // write pointer (guest byte offset)
	Msg        string // the line, in qemu-img's wording where qemu-img has one
	// QEMUMsg is qemu-img's wording of the line where it differs from
	// Msg ("" when it does not).
	QEMUMsg string
	// Report marks a line qemu-img prints as an error message (its
	// program name before it); the message's later lines are hints,
	// printed as they are.
	Report bool
}

// ZonedResult holds the zoned-specific counts. They are included in the
// Result's Corruptions and Leaks: extension, table and write-pointer
// errors are corruptions; data beyond a write pointer is a leak.
type ZonedResult struct {
	Zones             uint32
	ConventionalZones uint32
	// ExtensionErrors counts problems of the extension and of the
	// placement or encoding of the write-pointer table.
	ExtensionErrors int64
	// WritePointerErrors counts impossible write-pointer table entries.
	WritePointerErrors int64
	// DataBeyondWP counts allocated data clusters lying wholly at or
	// beyond the write pointer of their sequential zone.
	DataBeyondWP int64

	ExtensionErrorsFixed    int64
	WritePointerErrorsFixed int64
	DataBeyondWPFixed       int64

	// ZeroBeyondWP counts allocated clusters that read as zeroes (zero
	// flag, or no allocated subcluster) and lie wholly at or beyond the
	// write pointer of their sequential zone: what the reference
	// implementation's zone reset leaves (it zeroes a zone's clusters and
	// keeps them allocated). They are not damage: neither leaks nor
	// corruptions, only space a repair (-r leaks or -r all) can reclaim.
	ZeroBeyondWP int64
	// ZeroBeyondWPReclaimed counts such clusters a repair gave back: the
	// L2 entry becomes a plain zero entry, then the refcount is lowered.
	ZeroBeyondWPReclaimed int64
}

// Result is the outcome of a check, with qemu-img's counters
// (BdrvCheckResult and ImageCheck).
//
// Findings lists the report lines in the order qemu-img prints them; like
// qemu-img, a repairing pass can report a problem once as found and again
// as repaired. The counters are authoritative.
type Result struct {
	Filename string
	Format   string

	CheckErrors      int64
	Corruptions      int64
	Leaks            int64
	CorruptionsFixed int64
	LeaksFixed       int64

	// ImageEndOffset is the end of the last cluster in use (by refcount
	// or by reference).
	ImageEndOffset int64

	TotalClusters      int64 // guest clusters of the virtual disk
	AllocatedClusters  int64
	FragmentedClusters int64
	CompressedClusters int64

	// Zoned is set for images carrying the zoned format.
	Zoned *ZonedResult

	Findings []Finding

	// Repair is the repairing pass when something was repaired: the
	// counters above then come from the second, read-only pass (with the
	// Fixed counters of the repairing pass), as qemu-img reports them.
	Repair *Result

	hints    hints // for the repairing pass that follows a read-only one
	changed  bool  // the pass wrote to the image
	extended bool  // the pass extended the file over a table beyond its end
}

// ExitCode returns qemu-img check's exit status for the result: 1 when the
// check could not complete, 2 when the image is corrupted, 3 when it only
// has leaked clusters, 0 when it is clean.
func (r *Result) ExitCode() int {
	switch {
	case r == nil || r.CheckErrors > 0:
		return 1
	case r.Corruptions > 0:
		return 2
	case r.Leaks > 0:
		return 3
	}
	return 0
}

// Clean reports whether the result has no leaks, corruptions or check
// errors.
func (r *Result) Clean() bool { return r.ExitCode() == 0 }

// Count returns how many findings have the given problem and kind.
func (r *Result) Count(p Problem, k Kind) int {
	n := 0
	for _, f := range r.Findings {
		if f.Problem == p && f.Kind == k {
			n++
		}
	}
	return n
}

// ErrNeedRebuild is returned when the refcount structure is broken and the
// repair mode does not allow rebuilding it (-r leaks).
var ErrNeedRebuild = errors.New("the refcount structure needs to be rebuilt (use -r all)")

// AbortError is returned with a partial Result when a check could not
// complete (qemu-img: "Check failed").
type AbortError struct {
	Err error
}

func (e *AbortError) Error() string { return e.Err.Error() }
func (e *AbortError) Unwrap() error { return e.Err }
