package image_test

import (
	"errors"
	"fmt"
	"math/rand"
	"syscall"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
	"github.com/zqimg/zqimg/pkg/zone"
)

// TestFullDisk runs random operations on images on a small disk (the
// FaultFile's space limit). Every request either succeeds or fails with
// ENOSPC at that request; a failed request changes nothing that was
// acknowledged; Flush and Close never fail for lack of space (the metadata
// had its space reserved when it was allocated); and the image checks
// without corruption, with every acknowledged write in place.
func TestFullDisk(t *testing.T) {
	for _, cfg := range crashConfigs {
		for seed := int64(1); seed <= 6; seed++ {
			t.Run(fmt.Sprintf("%s/%d", cfg.name, seed), func(t *testing.T) {
				fullDisk(t, cfg, seed)
			})
		}
	}
	// Runs where no request reached the limit would prove nothing.
	if fullDiskStats.hit < fullDiskStats.runs*3/4 {
		t.Errorf("only %d of %d runs ran out of space", fullDiskStats.hit, fullDiskStats.runs)
	}
}

var fullDiskStats struct{ runs, hit int }

func fullDisk(t *testing.T, cfg crashConfig, seed int64) {
	base := formatImage(t, cfg)
	ff := imagetest.NewFaultFile(base)
	rng := rand.New(rand.NewSource(seed))
	// Room for a little data beyond the fresh image.
	ff.SetSpace(int64(len(base)) + int64(rng.Intn(96<<10)) + 4096)
	img, err := image.OpenFile(ff, "full.qcow2", image.Options{Features: image.IncompatZoned, NoLock: true})
	if err != nil {
		t.Fatal(err)
	}
	d, err := zone.New(img)
	if err != nil {
		t.Fatal(err)
	}
	tr := newTracker(d.Size())
	enospc := 0
	for step := 0; step < 120; step++ {
		op := genOp(rng, d)
		if op.n == 0 && op.kind != opFlush {
			continue
		}
		err := apply(d, op, tr)
		switch {
		case err == nil:
		case zone.IsZoneError(err):
		case errors.Is(err, syscall.ENOSPC):
			enospc++
			markUndetermined(tr, op, d)
		default:
			t.Fatalf("step %d %+v: %v", step, op, err)
		}
		if op.kind == opFlush && err != nil {
			t.Fatalf("step %d: flush failed: %v", step, err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatalf("close on a full disk: %v", err)
	}
	t.Logf("%d requests ran out of space", enospc)
	fullDiskStats.runs++
	if enospc > 0 {
		fullDiskStats.hit++
	}
	tr.flushedNowFrom(tr.live)
	mf := imagetest.NewMemFile(ff.Durable())
	res := checkImage(t, "full disk", mf, false)
	if res.corruptions != 0 {
		t.Fatalf("check finds %d corruptions after a full disk:\n%s", res.corruptions, res.report)
	}
	verifyContent(t, "full disk", mf, tr)
}

// markUndetermined takes the device's view of the range a failed request
// may have changed (a failed write leaves its range undetermined, as on a
// real disk): from now on that is the content to keep.
func markUndetermined(tr *tracker, op crashOp, d *zone.Device) {
	off, n := op.off, op.n
	switch op.kind {
	case opAppend:
		z := must(d.Report(int64(d.Header().ZoneStart(uint32(op.appendTo))), 1))[0]
		off, n = int64(z.Start), int64(z.Len)
	case opFlush:
		return
	}
	tr.touch(off, n)
	must(d.ReadAt(tr.live[off:off+n], off))
}

// flushedNowFrom records content as flushed.
func (tr *tracker) flushedNowFrom(content []byte) {
	copy(tr.flushed, content)
	clear(tr.touched)
}
