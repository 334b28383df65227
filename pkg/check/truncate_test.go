package check_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// TestReferenceImagesClean checks every image the reference implementation
// created: all must be clean, the write-pointer table counted as used
// (the reference's own check reports it as leaked).
func TestReferenceImagesClean(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "reference", "create", "*.qcow2"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no reference images: %v", err)
	}
	zoned := 0
	for _, name := range files {
		res, err := check.CheckPath(name, check.Options{})
		if err != nil || res == nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !res.Clean() || len(res.Findings) != 0 {
			t.Errorf("%s is not clean:\n%s", name, report(res))
		}
		if res.ImageEndOffset == 0 {
			t.Errorf("%s: no image end offset", name)
		}
		if res.Zoned != nil {
			zoned++
			if res.Zoned.Zones == 0 {
				t.Errorf("%s: zoned result without zones", name)
			}
		}
	}
	if zoned == 0 {
		t.Error("no zoned reference image was recognised as zoned")
	}
}

// truncationLengths returns the lengths a file of n bytes is cut to:
// every length around the header, then every cluster boundary and
// points inside clusters.
func truncationLengths(n, cs int) []int {
	var ls []int
	for _, l := range []int{0, 1, 4, 8, 20, 71, 72, 73, 100, 103, 104, 111, 112, 200, 511, 512, 4095, 4096} {
		if l < n {
			ls = append(ls, l)
		}
	}
	for c := cs; c < n; c += cs {
		ls = append(ls, c-8, c, c+8, c+cs/2)
	}
	return append(ls, n-1)
}

// TestTruncated checks images cut at many lengths: each gives a clear
// error or findings, never a panic, and -r all leaves an image whose
// remaining findings are only those a repair cannot fix.
func TestTruncated(t *testing.T) {
	bases := map[string][]byte{
		"plain": plainBase(t),
		"zoned": zonedBase(t),
	}
	f := newImage(t, "cluster_size=4k,refcount_bits=8", "8M")
	writeImage(t, f, write{0, 64 << 10, 1}, write{1 << 20, 16 << 10, 2})
	bases["4k"] = f.Bytes()
	for name, full := range bases {
		cs := int(rawOf(t, full).cs())
		for _, l := range truncationLengths(len(full), cs) {
			b := full[:l:l]
			res, err := check.Check(imagetest.NewMemFile(b), check.Options{})
			if res == nil {
				if err == nil || err.Error() == "" {
					t.Errorf("%s cut to %d: no result and no error", name, l)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s cut to %d: check failed: %v\n%s", name, l, err, report(res))
				continue
			}
			if !res.Clean() && len(res.Findings) == 0 {
				t.Errorf("%s cut to %d: problems counted but none reported", name, l)
			}
			mf := imagetest.NewMemFile(b)
			fixed, err := check.Check(mf, check.Options{Repair: check.RepairAll})
			if err != nil || fixed == nil {
				t.Errorf("%s cut to %d: repair failed: %v\n%s", name, l, err, report(fixed))
				continue
			}
			again := mustCheck(t, mf, check.RepairNone)
			for _, f := range again.Findings {
				if !unrepairable(t, mf.Bytes(), f) {
					t.Errorf("%s cut to %d: after -r all: %s\nrepair:\n%s", name, l, f.Msg, report(fixed))
					break
				}
			}
			if again.Corruptions != fixed.Corruptions || again.Leaks != fixed.Leaks {
				t.Errorf("%s cut to %d: the repair's second pass and a new check disagree:\n%s\n%s", name, l, report(fixed), report(again))
			}
		}
	}
}

// unrepairable reports whether f, found in the repaired image b, is one a
// repair leaves by design.
func unrepairable(t testing.TB, b []byte, f check.Finding) bool {
	switch f.Problem {
	case check.ProblemBeyondEOF:
		// A table (the active L1 table) lies beyond the end of the file,
		// too far to extend the file over it.
		return f.Kind == check.KindCorruption && !f.Repaired
	case check.ProblemZonedTable:
		// The write-pointer table lies (partly) beyond the end of the file.
		z := rawOf(t, b).zoned(t)
		return f.Kind == check.KindCorruption && f.Offset == int64(z.MetaOffset) && z.MetaOffset+z.MetaSize > uint64(len(b))
	case check.ProblemZonedExtensionMissing:
		// The zoned extension itself was cut off.
		return true
	}
	return false
}

// TestReadOnlyNeverWrites: a check without repair does not write, even on
// a damaged image (the File would see it).
func TestReadOnlyNeverWrites(t *testing.T) {
	for _, tc := range corpus {
		b := tc.base(t)
		tc.mutate(t, rawOf(t, b))
		f := imagetest.NewMemFile(b)
		check.Check(f, check.Options{})
		if !bytes.Equal(f.Bytes(), b) {
			t.Errorf("%s: a read-only check changed the image", tc.name)
		}
	}
}

// TestCheckPath checks and repairs a file by name, with QEMU's image locks.
func TestCheckPath(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "img.qcow2")
	b := plainBase(t)
	r := rawOf(t, b)
	r.setRefcount(20, 2) // a leak
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := check.CheckPath(name, check.Options{})
	if err != nil || res.Filename != name || res.Leaks != 1 || res.ExitCode() != 2 {
		t.Fatalf("check: %v\n%s", err, report(res))
	}
	if _, err := check.CheckPath(name, check.Options{Repair: check.RepairLeaks, ForceShare: true}); err == nil {
		t.Fatal("a repair with force-share was accepted")
	}
	res, err = check.CheckPath(name, check.Options{Repair: check.RepairLeaks})
	if err != nil || !res.Clean() || res.LeaksFixed != 1 || res.Repair == nil || res.Repair.Filename != name {
		t.Fatalf("repair: %v\n%s", err, report(res))
	}
	// Another process writing the image: a check refuses it (qemu-img's
	// locks), unless told to share (-U); a repair always refuses.
	w, err := image.OpenOSFile(name, false, false)
	if err != nil {
		t.Fatal(err)
	}
	var le *image.LockError
	if _, err := check.CheckPath(name, check.Options{}); !errors.As(err, &le) {
		t.Errorf("check of an image open for writing elsewhere: %v", err)
	}
	if _, err := check.CheckPath(name, check.Options{Repair: check.RepairAll}); !errors.As(err, &le) {
		t.Errorf("repair of an image open for writing elsewhere: %v", err)
	}
	if res, err := check.CheckPath(name, check.Options{ForceShare: true}); err != nil || !res.Clean() {
		t.Errorf("check -U of an image open for writing elsewhere: %v", err)
	}
	w.Close()
	var oe *check.OpenError
	if _, err := check.CheckPath(filepath.Join(dir, "missing.qcow2"), check.Options{}); !errors.As(err, &oe) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
