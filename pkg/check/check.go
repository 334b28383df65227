package check

import (
	"errors"
	"fmt"

	"github.com/zqimg/zqimg/pkg/image"
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
		res, err := runPass(f, opts, RepairNone, hints{})
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
	// A repair that extended the file over a table gets another round
	// even when the image checks clean: the read-only pass before it did
	// not see that table as metadata, which no entry may point into.
	pre, err := runPass(f, opts, RepairNone, hints{})
	if pre == nil {
		return nil, err
	}
	var rep, final *Result
	for round := 0; round < maxRepairRounds; round++ {
		first, err := runPass(f, opts, mode, pre.hints)
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
		final, err = runPass(f, opts, RepairNone, hints{})
		if final == nil || err != nil {
			if final == nil {
				return rep, &AbortError{Err: fmt.Errorf("the repaired image cannot be checked again: %w", err)}
			}
			final.Repair = rep
			return final, &AbortError{Err: err}
		}
		if final.Clean() && !first.extended || mode != RepairAll {
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
