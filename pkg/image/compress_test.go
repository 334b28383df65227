package image_test

import (
	"bytes"
	"errors"
	"math/rand"
	"slices"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

func writeCompressed(t testing.TB, img *image.Image, p []byte, off int64) bool {
	t.Helper()
	c, err := img.CompressCluster(p)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := img.WriteCompressed(c, off)
	if err != nil {
		t.Fatalf("compressed write at %d: %v", off, err)
	}
	if ok != c.Compressed() {
		t.Fatalf("compressed write at %d: stored compressed %v, but the cluster compressed %v", off, ok, c.Compressed())
	}
	return ok
}

func readAll(t testing.TB, img *image.Image) []byte {
	t.Helper()
	p := make([]byte, img.Size())
	if _, err := img.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	return p
}

// Compressed clusters read back; small streams share host clusters;
// incompressible clusters are stored as data; refcounts stay exact (check
// finds neither leaks nor corruptions), for every compression type,
// cluster size, extended L2 and refcount width, including 1-bit refcounts
// (no sharing possible) and a short last cluster.
func TestWriteCompressed(t *testing.T) {
	for _, c := range append(statusConfigs,
		statusConfig{"rc1-64k", 16, 3, false, image.CompressionZlib, 2<<20 + 1536}) {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(c.clusterBits)))
			img, mem := newTestImage(t, c)
			if c.name == "rc1-64k" {
				mem2 := imagetest.NewMemFile(nil)
				if err := image.Format(mem2, image.CreateOptions{Size: c.size, ClusterBits: c.clusterBits, Version: 3, RefcountOrder: 0}); err != nil {
					t.Fatal(err)
				}
				img.Close()
				var err error
				if img, err = image.OpenFile(mem2, "rc1.qcow2", image.Options{}); err != nil {
					t.Fatal(err)
				}
				mem = mem2
			}
			cs := img.ClusterSize()
			size := img.Size()
			model := make([]byte, size)
			var compressed, plain int
			for off := int64(0); off < size; off += cs {
				n := min(cs, size-off)
				var p []byte
				switch rng.Intn(6) {
				case 0:
					p = make([]byte, n)
					rng.Read(p) // does not compress
				case 1:
					p = make([]byte, n) // zeroes compress very well
				default:
					p = compressibleData(rng, int(n))
				}
				if writeCompressed(t, img, p, off) {
					compressed++
				} else {
					plain++
				}
				copy(model[off:], p)
			}
			if compressed == 0 || plain == 0 {
				t.Fatalf("%d compressed and %d plain clusters: the test data should give both", compressed, plain)
			}
			if !bytes.Equal(readAll(t, img), model) {
				t.Fatal("data read back differs")
			}
			// Overwrite some clusters, compressed and not.
			for k := 0; k < 10; k++ {
				off := rng.Int63n(size) / cs * cs
				n := min(cs, size-off)
				p := compressibleData(rng, int(n))
				if k%2 == 0 {
					writeCompressed(t, img, p, off)
				} else if _, err := img.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
				copy(model[off:], p)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			r := checkImage(t, "after compressed writes", mem, false)
			if r.corruptions != 0 || r.leaks != 0 {
				t.Fatalf("check: %d corruptions, %d leaks\n%s", r.corruptions, r.leaks, r.report)
			}
			img, err := image.OpenFile(mem, "x", image.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			if !bytes.Equal(readAll(t, img), model) {
				t.Fatal("data read back after reopening differs")
			}
			fileSize, _ := mem.Size()
			if c.name != "rc1-64k" && c.clusterBits >= 12 && fileSize >= int64(size) {
				t.Errorf("file of %d bytes for %d bytes of mostly compressible data: streams are not packed", fileSize, size)
			}
		})
	}
}

func TestWriteCompressedArguments(t *testing.T) {
	img, _ := newTestImage(t, statusConfigs[0])
	defer img.Close()
	cs := img.ClusterSize()
	c, err := img.CompressCluster(make([]byte, cs))
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{1, 512, cs / 2, img.Size(), -cs} {
		if _, err := img.WriteCompressed(c, off); err == nil {
			t.Errorf("compressed write at %d succeeded", off)
		}
	}
	short, err := img.CompressCluster(make([]byte, 4096))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteCompressed(short, 0); !errors.Is(err, image.ErrUnaligned) {
		t.Errorf("short cluster in the middle of the image: %v, want ErrUnaligned", err)
	}
	if _, err := img.CompressCluster(make([]byte, cs+1)); err == nil {
		t.Error("CompressCluster accepted more than a cluster")
	}
	other, _ := newTestImage(t, statusConfig{"4k", 12, 3, false, image.CompressionZlib, 1 << 20})
	defer other.Close()
	oc, _ := other.CompressCluster(make([]byte, 4096))
	if _, err := img.WriteCompressed(oc, 0); err == nil {
		t.Error("a cluster prepared for another image was accepted")
	}
	ro, mem := newTestImage(t, statusConfigs[0])
	ro.Close()
	ro, _ = image.OpenFile(mem, "x", image.Options{ReadOnly: true})
	defer ro.Close()
	if _, err := ro.WriteCompressed(c, 0); !errors.Is(err, image.ErrReadOnly) {
		t.Errorf("read-only image: %v", err)
	}
}

// A power failure at any point of a run of compressed writes leaves an
// image without corruption (leaks are allowed), in which everything
// flushed before reads back.
func TestWriteCompressedCrash(t *testing.T) {
	for _, c := range []statusConfig{statusConfigs[0], statusConfigs[2], statusConfigs[3]} {
		t.Run(c.name, func(t *testing.T) {
			base, mem := newTestImage(t, c)
			base.Close()
			start := mem.Bytes()
			// Count the operations of a full run.
			total := crashRun(t, c, start, -1, nil)
			if total < 20 {
				t.Fatalf("only %d operations", total)
			}
			for cut := 0; cut < total; cut++ {
				crashRun(t, c, start, cut, rand.New(rand.NewSource(int64(cut))))
			}
		})
	}
}

// crashRun writes compressed clusters with a flush in the middle on a
// FaultFile whose power fails after cut operations (never when cut < 0),
// then checks the crashed image. It returns the operations done.
func crashRun(t *testing.T, c statusConfig, start []byte, cut int, crashRNG *rand.Rand) int {
	t.Helper()
	ff := imagetest.NewFaultFile(start)
	if cut >= 0 {
		ff.PowerFailAfter(ff.Ops() + cut)
	}
	img, err := image.OpenFile(ff, "x", image.Options{})
	if err != nil {
		if cut < 0 {
			t.Fatal(err)
		}
		return 0
	}
	rng := rand.New(rand.NewSource(99))
	cs := img.ClusterSize()
	model := make([]byte, img.Size())
	var flushed []byte
	for k := 0; k < 12; k++ {
		off := rng.Int63n(img.Size()/cs) * cs
		p := compressibleData(rng, int(min(cs, img.Size()-off)))
		cl, _ := img.CompressCluster(p)
		if _, err := img.WriteCompressed(cl, off); err != nil {
			break
		}
		copy(model[off:], p)
		if k == 5 {
			if err := img.Flush(); err != nil {
				break
			}
			flushed = append([]byte(nil), model...)
		}
	}
	img.Close()
	if cut < 0 {
		return ff.Ops()
	}
	if !ff.PowerLost() {
		return ff.Ops()
	}
	crashed := ff.Crash(crashRNG)
	r := checkImage(t, "crashed image", imagetest.NewMemFile(crashed), false)
	if r.corruptions != 0 {
		t.Fatalf("power cut after %d operations: %d corruptions\n%s", cut, r.corruptions, r.report)
	}
	if flushed != nil {
		img, err := image.OpenFile(imagetest.NewMemFile(crashed), "x", image.Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("power cut after %d operations: %v", cut, err)
		}
		defer img.Close()
		got := readAll(t, img)
		// Clusters written after the flush may or may not be there;
		// those not written again since must hold the flushed data.
		rng := rand.New(rand.NewSource(99))
		rewritten := map[int64]bool{}
		for k := 0; k < 12; k++ {
			off := rng.Int63n(img.Size()/cs) * cs
			_ = compressibleData(rng, int(min(cs, img.Size()-off)))
			if k > 5 {
				rewritten[off] = true
			}
		}
		for off := int64(0); off < img.Size(); off += cs {
			end := min(off+cs, img.Size())
			if !rewritten[off] && !bytes.Equal(got[off:end], flushed[off:end]) {
				t.Fatalf("power cut after %d operations: cluster at %d lost its flushed data", cut, off)
			}
		}
	}
	return ff.Ops()
}

// After the only stream in a partly used host cluster is overwritten and
// the cluster freed and reused for data, the next compressed stream must
// not be packed into it.
func TestWriteCompressedReusedCluster(t *testing.T) {
	img, mem := newTestImage(t, statusConfigs[0])
	cs := img.ClusterSize()
	rng := rand.New(rand.NewSource(3))
	a := compressibleData(rng, int(cs))
	for a[0] == 0 || !writeCompressed(t, img, a, 0) {
		a = compressibleData(rng, int(cs))
	}
	b := bytes.Repeat([]byte{0xbb}, int(cs))
	if _, err := img.WriteAt(b, 0); err != nil { // drops the stream
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil { // frees its host cluster
		t.Fatal(err)
	}
	d := bytes.Repeat([]byte{0xdd}, int(cs))
	if _, err := img.WriteAt(d, cs); err != nil { // reuses it
		t.Fatal(err)
	}
	e := compressibleData(rng, int(cs))
	writeCompressed(t, img, e, 2*cs)
	got := make([]byte, 3*cs)
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, slices.Concat(b, d, e)) {
		t.Fatal("data differs: a stream was packed into a reused cluster")
	}
	img.Close()
	if r := checkImage(t, "reused", mem, false); r.corruptions != 0 || r.leaks != 0 {
		t.Fatalf("check: %d corruptions, %d leaks\n%s", r.corruptions, r.leaks, r.report)
	}
}
