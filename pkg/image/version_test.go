package image_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

func upgrade(img *image.Image) error   { return img.Upgrade(image.VersionOptions{}) }
func downgrade(img *image.Image) error { return img.Downgrade(image.VersionOptions{}) }

// versionOf returns the qcow2 version in the header of an image's bytes.
func versionOf(b []byte) uint32 { return binary.BigEndian.Uint32(b[image.HdrVersion:]) }

// stripSnapshotExtra rewrites the snapshot table of b in place with the
// extra data of every entry cut to keep bytes (as version 2 writers that
// predate the extra fields leave it; the table only gets shorter).
func stripSnapshotExtra(t *testing.T, b []byte, keep int) {
	t.Helper()
	h, err := image.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	off := h.SnapshotsOffset
	entries, err := image.ParseSnapshotTable(b[off:], h.NbSnapshots, off, h.ClusterSize())
	if err != nil {
		t.Fatal(err)
	}
	old := image.SnapshotTableSize(entries)
	for i := range entries {
		entries[i].Extra = entries[i].Extra[:min(keep, len(entries[i].Extra))]
	}
	nt := image.MarshalSnapshotTable(entries)
	clear(b[off : off+old])
	copy(b[off:], nt)
}

// zeroClusterBase makes a version 3 image (64 KiB clusters) with data,
// plain and preallocated zero clusters, a snapshot sharing some of them,
// and more zero clusters written after it: every kind of zero cluster a
// downgrade expands, the shared preallocated one needing a new cluster.
// Without the snapshot, every zero cluster is expanded in place.
func zeroClusterBase(t *testing.T, snapshot bool, opts ...string) []byte {
	t.Helper()
	f := imagetest.NewMemFile(formatImage(t, crashConfig{"v3", opts, "4M"}))
	img := openMem(t, f)
	cs := img.ClusterSize()
	rng := rand.New(rand.NewSource(1))
	model := make([]byte, img.Size())
	randomWrites(t, rng, img, model, 6)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	fill := bytes.Repeat([]byte{0x5a}, int(2*cs))
	_, err := img.WriteAt(fill, 0)
	must(err)
	must(img.WriteZeroes(0, cs)) // preallocated zero cluster, then shared
	must(img.WriteZeroes(8*cs, 2*cs))
	if snapshot {
		_, err = img.CreateSnapshot(image.SnapshotCreateOptions{Name: "old"})
		must(err)
	}
	_, err = img.WriteAt(fill, 20*cs)
	must(err)
	must(img.WriteZeroes(20*cs, cs)) // preallocated, only in the active image
	must(img.WriteZeroes(30*cs, cs))
	must(img.Close())
	return f.Bytes()
}

// TestDowngradeExpandsZeroClusters: after a downgrade the image is
// version 2 with the 72-byte header, reads as before (active image and
// snapshot), has no zero flag left in any L2 table, and checks clean.
func TestDowngradeExpandsZeroClusters(t *testing.T) {
	base := zeroClusterBase(t, true)
	before := stateOfBytes(t, "before", base)
	f := imagetest.NewMemFile(base)
	img := openMem(t, f)
	if err := img.Downgrade(image.VersionOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	b := f.Bytes()
	h, err := image.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != 2 || h.HeaderLength != 72 {
		t.Fatalf("version %d, header length %d; want 2, 72", h.Version, h.HeaderLength)
	}
	if got := stateOfBytes(t, "after", b); !got.equal(before) {
		t.Fatalf("the downgrade changed what the image shows")
	}
	if r := checkImage(t, "after", imagetest.NewMemFile(b), false); r.corruptions != 0 || r.leaks != 0 {
		t.Fatalf("check after the downgrade:\n%s", r.report)
	}
	// Applying the snapshot shows its data (zeroes where it had zero
	// clusters) on the version 2 image.
	img = openMem(t, imagetest.NewMemFile(b))
	defer img.Close()
	if err := img.ApplySnapshot("old", image.SnapshotApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, img.ClusterSize())
	if _, err := img.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, make([]byte, len(p))) {
		t.Fatalf("the snapshot's zero cluster does not read as zeroes after the downgrade")
	}
}

// TestDowngradeRefusals: what version 2 cannot hold is refused with a
// VersionError, the file unchanged.
func TestDowngradeRefusals(t *testing.T) {
	for _, tc := range []struct {
		opts []string
		want string
	}{
		{[]string{"refcount_bits=8"}, "compat=0.10 requires refcount_bits=16"},
		{[]string{"extended_l2=on"}, "Cannot downgrade an image with incompatible features 0x10 set"},
		{[]string{"zone.mode=host-managed", "zone.size=1M"}, "Cannot downgrade a zoned image: the zoned format requires compat=1.1"},
	} {
		base := formatImage(t, crashConfig{"r", tc.opts, "4M"})
		f := imagetest.NewMemFile(base)
		img, err := image.OpenFile(f, "mem", image.Options{NoLock: true, Features: image.IncompatZoned})
		if err != nil {
			t.Fatal(err)
		}
		err = img.Downgrade(image.VersionOptions{})
		img.Close()
		var ve *image.VersionError
		if !errors.As(err, &ve) || ve.Msg != tc.want || !errors.Is(err, image.ErrVersionChange) {
			t.Errorf("%v: got %v, want %q", tc.opts, err, tc.want)
		}
		if !bytes.Equal(f.Bytes(), base) {
			t.Errorf("%v: the refused downgrade wrote to the image", tc.opts)
		}
	}
	// A snapshot of another disk size.
	f := imagetest.NewMemFile(formatImage(t, crashConfig{"s", nil, "4M"}))
	img := openMem(t, f)
	if _, err := img.CreateSnapshot(image.SnapshotCreateOptions{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := img.Resize(8<<20, image.ResizeOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := img.CheckDowngrade(4<<20, 0); err != nil {
		t.Errorf("at the snapshot's size the downgrade is refused: %v", err)
	}
	before := append([]byte(nil), f.Bytes()...)
	if err := img.Downgrade(image.VersionOptions{}); err == nil || err.Error() != "Internal snapshots prevent downgrade of image" {
		t.Errorf("got %v", err)
	}
	img.Close()
	if !bytes.Equal(f.Bytes(), before) {
		t.Errorf("the refused downgrade wrote to the image")
	}
}

// TestUpgradeCompletesSnapshotTable: an upgrade of a version 2 image whose
// snapshot table entries have no or only 8 bytes of extra data gives every
// entry QEMU's 24 bytes (VM state size, disk size = the image's size,
// icount -1), keeps the snapshots, and writes the version 3 header.
func TestUpgradeCompletesSnapshotTable(t *testing.T) {
	for _, keep := range []int{0, 8} {
		base := crashBase(t, crashConfig{"v2", []string{"compat=0.10", "cluster_size=4k"}, "2M"}, 3)
		stripSnapshotExtra(t, base, keep)
		before := stateOfBytes(t, "before", base)
		f := imagetest.NewMemFile(base)
		img := openMem(t, f)
		if err := img.Upgrade(image.VersionOptions{}); err != nil {
			t.Fatal(err)
		}
		h := img.Header()
		if h.Version != 3 || h.HeaderLength != image.HeaderV3Size || h.RefcountOrder != 4 {
			t.Fatalf("header after the upgrade: version %d, length %d, refcount order %d", h.Version, h.HeaderLength, h.RefcountOrder)
		}
		list, err := img.Snapshots()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list {
			ds, ok := e.DiskSize()
			if len(e.Extra) != image.SnapshotKnownExtraSize || !ok || ds != uint64(img.Size()) || e.ICount() != -1 {
				t.Errorf("keep %d: snapshot %s: extra %x", keep, e.ID, e.Extra)
			}
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		if got := stateOfBytes(t, "after", f.Bytes()); !got.equal(before) {
			t.Fatalf("the upgrade changed what the image shows")
		}
		if r := checkImage(t, "after", imagetest.NewMemFile(f.Bytes()), false); r.corruptions != 0 || r.leaks != 0 {
			t.Fatalf("check after the upgrade:\n%s", r.report)
		}
	}
}

// TestVersionChangeCrashSafety cuts the power at every write, zero range
// and sync of an upgrade (snapshot table rewritten, header switched) and
// of downgrades (zero clusters expanded in place and in a transaction,
// header switched; with 64 KiB clusters the version 3 header and its
// feature name table reach into the second sector, so the switch takes
// SetBacking's steps): every crashed image opens, checks without
// corruption, shows the same data and snapshots, is version 2 or 3, and
// running the operation again completes it.
func TestVersionChangeCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	up := crashBase(t, crashConfig{"v2", []string{"compat=0.10", "cluster_size=4k"}, "2M"}, 5)
	stripSnapshotExtra(t, up, 0)
	down := zeroClusterBase(t, true)
	plainDown := zeroClusterBase(t, true, "cluster_size=4k")
	inPlace := zeroClusterBase(t, false)
	for _, tc := range []struct {
		name string
		base []byte
		op   func(*image.Image) error
	}{
		{"upgrade", up, upgrade},
		{"downgrade", down, downgrade},
		{"downgrade-4k", plainDown, downgrade},
		{"downgrade-in-place", inPlace, downgrade},
	} {
		before := stateOfBytes(t, tc.name+" before", tc.base)
		ref := imagetest.NewFaultFile(tc.base)
		img := openMem(t, ref)
		start := ref.Ops()
		if err := tc.op(img); err != nil {
			t.Fatal(err)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		total := ref.Ops()
		wantV := versionOf(ref.Current())
		sides := map[uint32]int{}
		for cut := start; cut < total; cut++ {
			for seed := int64(0); seed < 3; seed++ {
				w := fmt.Sprintf("%s cut at operation %d of %d (seed %d)", tc.name, cut, total, seed)
				ff := imagetest.NewFaultFile(tc.base)
				img, err := image.OpenFile(ff, "mem", image.Options{NoLock: true})
				if err != nil {
					t.Fatal(err)
				}
				ff.PowerFailAfter(cut)
				if err := tc.op(img); err == nil {
					_ = img.Close()
				}
				if !ff.PowerLost() {
					t.Fatalf("%s: the power never failed", w)
				}
				crashed := ff.Crash(rand.New(rand.NewSource(int64(cut)*3 + seed)))
				if r := checkImage(t, w, imagetest.NewMemFile(crashed), false); r.corruptions != 0 {
					t.Fatalf("%s: %d corruptions:\n%s", w, r.corruptions, r.report)
				}
				if got := stateOfBytes(t, w, crashed); !got.equal(before) {
					t.Fatalf("%s: the image shows other data or snapshots", w)
				}
				v := versionOf(crashed)
				if v != 2 && v != 3 {
					t.Fatalf("%s: version %d", w, v)
				}
				sides[v]++
				// Running it again completes it.
				again := imagetest.NewMemFile(crashed)
				img = openMem(t, again)
				if err := tc.op(img); err != nil {
					t.Fatalf("%s: again: %v", w, err)
				}
				if err := img.Close(); err != nil {
					t.Fatal(err)
				}
				if versionOf(again.Bytes()) != wantV {
					t.Fatalf("%s: again: version %d", w, versionOf(again.Bytes()))
				}
			}
		}
		// The old version must be seen; the new one is, when a cut keeps
		// the unsynced switch (random), and always after the full run.
		if sides[versionOf(tc.base)] == 0 || sides[2]+sides[3] == 0 {
			t.Errorf("%s: the cuts do not reach the state before the switch: %v", tc.name, sides)
		}
		t.Logf("%s: %d crash points, by version %v", tc.name, total-start, sides)
	}
}
