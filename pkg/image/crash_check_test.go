package image_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
)

type checkResult struct {
	corruptions, leaks int
	dataBeyondWP       int // findings of data beyond a write pointer
	report             string
}

// checkImage runs check (with repair, check -r all) on f and returns the
// counts of the final pass.
func checkImage(t *testing.T, where string, f image.File, repair bool) checkResult {
	t.Helper()
	mode := check.RepairNone
	if repair {
		mode = check.RepairAll
	}
	res, err := check.Check(f, check.Options{Repair: mode})
	if res == nil {
		t.Fatalf("%s: check could not run: %v", where, err)
	}
	var b strings.Builder
	for _, fd := range res.Findings {
		fmt.Fprintln(&b, fd.Msg)
	}
	if err != nil || res.CheckErrors != 0 {
		t.Fatalf("%s: check did not complete (%v, %d check errors):\n%s", where, err, res.CheckErrors, b.String())
	}
	return checkResult{corruptions: int(res.Corruptions), leaks: int(res.Leaks),
		dataBeyondWP: res.Count(check.ProblemDataBeyondWP, check.KindLeak), report: b.String()}
}
