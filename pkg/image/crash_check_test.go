package image_test

import (
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
)

type checkResult struct {
	corruptions, leaks int
	report             string
}

// checkImage runs check (and with repair, check -r all) on f.
// TEMPORARY: until pkg/check lands it only verifies that the image opens.
func checkImage(t *testing.T, where string, f image.File, repair bool) checkResult {
	t.Helper()
	d, err := openDevice(f)
	if err != nil {
		return checkResult{corruptions: 1, report: err.Error()}
	}
	d.Close()
	return checkResult{}
}
