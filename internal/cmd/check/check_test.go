package check

import (
	"testing"

	pcheck "github.com/zqimg/zqimg/pkg/check"
)

// The keys in the order qemu-img 7.2 prints them (the iteration order of
// QEMU's QDict), every one present.
func TestJSONAllKeys(t *testing.T) {
	r := &pcheck.Result{
		Filename: "a<b>.qcow2", Format: "qcow2",
		CheckErrors: 1, Corruptions: 2, Leaks: 3, CorruptionsFixed: 4, LeaksFixed: 5,
		ImageEndOffset: 6, TotalClusters: 7, AllocatedClusters: 8, FragmentedClusters: 9, CompressedClusters: 10,
	}
	b, err := JSON(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
    "image-end-offset": 6,
    "compressed-clusters": 10,
    "total-clusters": 7,
    "corruptions": 2,
    "corruptions-fixed": 4,
    "check-errors": 1,
    "leaks": 3,
    "leaks-fixed": 5,
    "allocated-clusters": 8,
    "filename": "a<b>.qcow2",
    "format": "qcow2",
    "fragmented-clusters": 9
}`
	if string(b) != want {
		t.Errorf("got\n%s\nwant\n%s", b, want)
	}
	// Zero counters are omitted, check-errors, filename and format never.
	b, _ = JSON(&pcheck.Result{Filename: "x", Format: "qcow2"})
	if want := "{\n    \"check-errors\": 0,\n    \"filename\": \"x\",\n    \"format\": \"qcow2\"\n}"; string(b) != want {
		t.Errorf("got\n%s\nwant\n%s", b, want)
	}
}

func TestHuman(t *testing.T) {
	r := &pcheck.Result{CheckErrors: 1, Corruptions: 2, Leaks: 3, TotalClusters: 3, AllocatedClusters: 2, FragmentedClusters: 1, ImageEndOffset: 65536}
	want := "\n2 errors were found on the image.\n" +
		"Data may be corrupted, or further writes to the image may corrupt it.\n" +
		"\n3 leaked clusters were found on the image.\n" +
		"This means waste of disk space, but no harm to data.\n" +
		"\n1 internal errors have occurred during the check.\n" +
		"2/3 = 66.67% allocated, 50.00% fragmented, 0.00% compressed clusters\n" +
		"Image end offset: 65536\n"
	if got := Human(r); got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	if got := Human(&pcheck.Result{}); got != "No errors were found on the image.\n" {
		t.Errorf("empty result: %q", got)
	}
}

// Zero clusters beyond write pointers are not damage: the summary says
// there are none, then counts them as reclaimable space.
func TestHumanZeroClusters(t *testing.T) {
	r := &pcheck.Result{TotalClusters: 8, AllocatedClusters: 4, ImageEndOffset: 65536, Zoned: &pcheck.ZonedResult{ZeroBeyondWP: 3}}
	want := "No errors were found on the image.\n" +
		"3 zero clusters beyond write pointers are still allocated (a zone reset left them; no harm to data, -r leaks reclaims the space).\n" +
		"4/8 = 50.00% allocated, 0.00% fragmented, 0.00% compressed clusters\n" +
		"Image end offset: 65536\n"
	if got := Human(r); got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	if got := reclaimed(&pcheck.Result{Zoned: &pcheck.ZonedResult{ZeroBeyondWPReclaimed: 2}}); got != "2 zero clusters beyond write pointers were reclaimed.\n\n" {
		t.Errorf("reclaimed: %q", got)
	}
	if got := reclaimed(&pcheck.Result{}); got != "" {
		t.Errorf("reclaimed without zoned result: %q", got)
	}
}
