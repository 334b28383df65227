package image_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

var snapConfigs = []crashConfig{
	{"64k", nil, "4M"},
	{"4k-rc8", []string{"cluster_size=4k", "refcount_bits=8"}, "3M"},
	{"512-rc64", []string{"cluster_size=512", "refcount_bits=64"}, "600k"},
	{"v2", []string{"compat=0.10", "cluster_size=4k"}, "2M"},
	{"extl2", []string{"extended_l2=on", "cluster_size=16k"}, "2M"},
	{"zstd-2", []string{"compression_type=zstd", "refcount_bits=2", "cluster_size=8k"}, "1M"},
}

func openMem(t testing.TB, f image.File) *image.Image {
	t.Helper()
	img, err := image.OpenFile(f, "mem.qcow2", image.Options{NoLock: true})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func mustClean(t *testing.T, where string, f image.File) {
	t.Helper()
	if r := checkImage(t, where, f, false); r.corruptions != 0 || r.leaks != 0 {
		t.Fatalf("%s: check: %d corruptions, %d leaks:\n%s", where, r.corruptions, r.leaks, r.report)
	}
}

// randomWrites writes n random runs into img and the model.
func randomWrites(t testing.TB, rng *rand.Rand, img *image.Image, model []byte, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		off := rng.Int63n(int64(len(model)))
		l := min(int64(len(model))-off, 1+rng.Int63n(40<<10))
		switch rng.Intn(6) {
		case 0:
			if err := img.Discard(off, l); err != nil {
				t.Fatal(err)
			}
			clear(model[off : off+l])
		case 1:
			if err := img.WriteZeroes(off, l); err != nil {
				t.Fatal(err)
			}
			clear(model[off : off+l])
		default:
			p := bytes.Repeat([]byte{byte(1 + rng.Intn(255))}, int(l))
			if _, err := img.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], p)
		}
	}
}

// TestSnapshotModel creates, applies and deletes snapshots between random
// writes, comparing the disk with a model after every step and checking
// the image clean (no leaks, no corruptions, exact OFLAG_COPIED).
func TestSnapshotModel(t *testing.T) {
	for _, cfg := range snapConfigs {
		t.Run(cfg.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(len(cfg.name))))
			f := imagetest.NewMemFile(formatImage(t, cfg))
			img := openMem(t, f)
			model := make([]byte, img.Size())
			saved := map[string][]byte{}
			var names []string
			for step := 0; step < 24; step++ {
				randomWrites(t, rng, img, model, 6)
				where := fmt.Sprintf("step %d", step)
				switch r := rng.Intn(4); {
				case r < 2 || len(names) == 0:
					name := fmt.Sprintf("s%d", step)
					_, err := img.CreateSnapshot(image.SnapshotCreateOptions{Name: name})
					if cfg.name == "zstd-2" && len(names) >= 2 {
						// 2-bit refcounts: a third reference does not fit.
						if err == nil {
							t.Fatalf("%s: a fourth reference fit a 2-bit refcount", where)
						}
						continue
					}
					if err != nil {
						t.Fatalf("%s: create: %v", where, err)
					}
					saved[name] = append([]byte(nil), model...)
					names = append(names, name)
				case r == 2:
					name := names[rng.Intn(len(names))]
					if err := img.ApplySnapshot(name, image.SnapshotApplyOptions{}); err != nil {
						t.Fatalf("%s: apply %s: %v", where, name, err)
					}
					copy(model, saved[name])
				default:
					k := rng.Intn(len(names))
					if err := img.DeleteSnapshot(names[k]); err != nil {
						t.Fatalf("%s: delete: %v", where, err)
					}
					delete(saved, names[k])
					names = append(names[:k], names[k+1:]...)
				}
				if !bytes.Equal(readAll(t, img), model) {
					t.Fatalf("%s: disk differs from the model", where)
				}
				if err := img.Flush(); err != nil {
					t.Fatal(err)
				}
				mustClean(t, where, imagetest.NewMemFile(f.Bytes()))
			}
			// Every remaining snapshot reads back as saved.
			for _, n := range names {
				if err := img.ApplySnapshot(n, image.SnapshotApplyOptions{}); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(readAll(t, img), saved[n]) {
					t.Fatalf("snapshot %s does not read back as saved", n)
				}
			}
			list, err := img.Snapshots()
			if err != nil || len(list) != len(names) {
				t.Fatalf("list: %d entries, %v; want %d", len(list), err, len(names))
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			mustClean(t, "end", imagetest.NewMemFile(f.Bytes()))
		})
	}
}

func TestSnapshotNotFound(t *testing.T) {
	f := imagetest.NewMemFile(formatImage(t, snapConfigs[0]))
	img := openMem(t, f)
	defer img.Close()
	if _, err := img.CreateSnapshot(image.SnapshotCreateOptions{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := img.ApplySnapshot("b", image.SnapshotApplyOptions{}); !errors.Is(err, image.ErrSnapshotNotFound) {
		t.Fatalf("apply of a missing snapshot: %v", err)
	}
	// Delete looks names up, not IDs.
	if err := img.DeleteSnapshot("1"); !errors.Is(err, image.ErrSnapshotNotFound) {
		t.Fatalf("delete by ID: %v", err)
	}
	if err := img.ApplySnapshot("1", image.SnapshotApplyOptions{}); err != nil {
		t.Fatalf("apply by ID: %v", err)
	}
}
