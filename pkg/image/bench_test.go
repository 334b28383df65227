package image_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// Benchmarks of the qcow2 engine. Each has a "file" variant on a regular
// file in b.TempDir (page cache, real syscalls; only Flush syncs; if /tmp
// is a tmpfs, set TMPDIR to a disk-backed directory or the Flush figures
// mean nothing) and, where it helps to separate the engine's CPU cost from
// the kernel's, a "mem" variant on an in-memory image.File. Image
// creation, pre-filling and the replacement of a full image by a fresh one
// happen with the timer stopped.

const benchImageSize = 256 << 20 // virtual size of the write benchmarks' images

// undoFile is an in-memory image file that can record the ranges written
// since a snapshot, to undo them cheaply.
type undoFile struct {
	*imagetest.MemFile
	track bool
	log   [][2]int64 // offset, length of each write while tracking
}

func (u *undoFile) WriteAt(p []byte, off int64) (int, error) {
	if u.track {
		u.log = append(u.log, [2]int64{off, int64(len(p))})
	}
	return u.MemFile.WriteAt(p, off)
}

// restore undoes every write logged since snap was taken.
func (u *undoFile) restore(snap []byte) {
	u.Truncate(int64(len(snap)))
	for _, w := range u.log {
		if w[0] < int64(len(snap)) {
			u.MemFile.WriteAt(snap[w[0]:min(w[0]+w[1], int64(len(snap)))], w[0])
		}
	}
	u.log = u.log[:0]
}

// benchStore makes fresh images, either as files in a temporary directory or
// in memory.
type benchStore struct {
	tb   testing.TB
	mem  bool
	dir  string
	n    int
	cur  string             // path of the current file image
	file *imagetest.MemFile // mem: the current image's file; its array is reused
}

func newBenchStore(b *testing.B, mem bool) *benchStore {
	s := &benchStore{tb: b, mem: mem}
	if !mem {
		s.dir = b.TempDir()
	}
	return s
}

// fresh returns a new, empty image of size bytes with 2^clusterBits clusters.
// The file of the previous image, if any, is removed (close it first).
func (s *benchStore) fresh(size uint64, clusterBits uint32) *image.Image {
	s.tb.Helper()
	co := image.CreateOptions{Size: size, ClusterBits: clusterBits, Version: 3, RefcountOrder: 4}
	if s.mem {
		// Reuse the previous image's array, cleared with the timer stopped.
		if s.file == nil {
			s.file = imagetest.NewMemFile(nil)
		}
		s.file.Reserve(int(size + size/8 + 4<<20))
		s.file.Reset(nil)
		f := s.file
		if err := image.Format(f, co); err != nil {
			s.tb.Fatal(err)
		}
		img, err := image.OpenFile(f, "mem.qcow2", image.Options{})
		if err != nil {
			s.tb.Fatal(err)
		}
		return img
	}
	if s.cur != "" {
		os.Remove(s.cur)
	}
	s.n++
	s.cur = filepath.Join(s.dir, fmt.Sprintf("bench%d.qcow2", s.n))
	if err := os.WriteFile(s.cur, nil, 0o644); err != nil {
		s.tb.Fatal(err)
	}
	f, err := image.OpenOSFile(s.cur, false, false)
	if err != nil {
		s.tb.Fatal(err)
	}
	if err := image.Format(f, co); err != nil {
		s.tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		s.tb.Fatal(err)
	}
	img, err := image.Open(s.cur, image.Options{})
	if err != nil {
		s.tb.Fatal(err)
	}
	return img
}

func benchClose(tb testing.TB, img *image.Image) {
	tb.Helper()
	if err := img.Close(); err != nil {
		tb.Fatal(err)
	}
}

// benchFill writes pattern over the whole image in 1 MiB requests.
func benchFill(tb testing.TB, img *image.Image, pattern byte) {
	tb.Helper()
	buf := bytes.Repeat([]byte{pattern}, 1<<20)
	for off := int64(0); off < img.Size(); off += int64(len(buf)) {
		n := min(int64(len(buf)), img.Size()-off)
		if _, err := img.WriteAt(buf[:n], off); err != nil {
			tb.Fatal(err)
		}
	}
}

var benchBackings = []struct {
	name string
	mem  bool
}{{"file", false}, {"mem", true}}

// benchWriteSeq writes 64 KiB requests one after the other into fresh
// images; when an image is full it is closed (flushed) and replaced, with
// the timer stopped. Every timed write therefore allocates.
func benchWriteSeq(b *testing.B, clusterBits uint32) {
	for _, bk := range benchBackings {
		b.Run(bk.name, func(b *testing.B) {
			s := newBenchStore(b, bk.mem)
			img := s.fresh(benchImageSize, clusterBits)
			buf := bytes.Repeat([]byte{0x5a}, 64<<10)
			b.SetBytes(int64(len(buf)))
			off := int64(0)
			for b.Loop() {
				if off == img.Size() {
					b.StopTimer()
					benchClose(b, img)
					img = s.fresh(benchImageSize, clusterBits)
					off = 0
					b.StartTimer()
				}
				if _, err := img.WriteAt(buf, off); err != nil {
					b.Fatal(err)
				}
				off += int64(len(buf))
			}
			benchClose(b, img)
		})
	}
}

// BenchmarkWriteSeq64K: sequential 64 KiB writes into fresh images with
// 64 KiB clusters (one new cluster per write).
func BenchmarkWriteSeq64K(b *testing.B) { benchWriteSeq(b, 16) }

// BenchmarkWriteSeq64KCluster4K: the same with 4 KiB clusters (16 new
// clusters and far more L2/refcount traffic per write).
func BenchmarkWriteSeq64KCluster4K(b *testing.B) { benchWriteSeq(b, 12) }

// BenchmarkReadRandom4K: 4 KiB reads at random 4 KiB-aligned offsets of a
// fully written image (a fixed seed, so every run reads the same offsets).
func BenchmarkReadRandom4K(b *testing.B) {
	for _, bk := range benchBackings {
		b.Run(bk.name, func(b *testing.B) {
			s := newBenchStore(b, bk.mem)
			img := s.fresh(benchImageSize, 16)
			benchFill(b, img, 0x5a)
			if err := img.Flush(); err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			offs := make([]int64, 1<<16)
			for i := range offs {
				offs[i] = rng.Int64N(img.Size()/4096) * 4096
			}
			buf := make([]byte, 4096)
			b.SetBytes(int64(len(buf)))
			i := 0
			for b.Loop() {
				if _, err := img.ReadAt(buf, offs[i&(len(offs)-1)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
			if buf[0] != 0x5a {
				b.Fatalf("read 0x%02x, want 0x5a", buf[0])
			}
			benchClose(b, img)
		})
	}
}

// BenchmarkWriteZeroes zeroes the clusters of a fully written image.
//
//   - cluster/mem: one whole 64 KiB data cluster per op, which becomes a
//     zero-flag entry (pure metadata work: the engine's CPU cost). After
//     every pass over the image, untimed, the image is closed (flushed),
//     the writes made since it was filled are undone byte for byte, and it
//     is opened again, so every pass zeroes allocated clusters.
//   - partial4K/file: 4 KiB inside an allocated cluster per op, which is
//     written in place with zero bytes (repeatable, no state change).
func BenchmarkWriteZeroes(b *testing.B) {
	const zeroImageSize = 64 << 20
	b.Run("cluster/mem", func(b *testing.B) {
		f := &undoFile{MemFile: imagetest.NewMemFile(nil)}
		f.Reserve(benchImageSize + 8<<20)
		err := image.Format(f, image.CreateOptions{Size: benchImageSize, ClusterBits: 16, Version: 3, RefcountOrder: 4})
		if err != nil {
			b.Fatal(err)
		}
		open := func() *image.Image {
			img, err := image.OpenFile(f, "mem.qcow2", image.Options{})
			if err != nil {
				b.Fatal(err)
			}
			return img
		}
		img := open()
		benchFill(b, img, 0x5a)
		benchClose(b, img)
		snap := f.Bytes()
		f.track = true
		img = open()
		off := int64(0)
		for b.Loop() {
			if off == img.Size() {
				b.StopTimer()
				benchClose(b, img)
				f.restore(snap)
				img = open()
				one := []byte{0}
				if _, err := img.ReadAt(one, 0); err != nil || one[0] != 0x5a {
					b.Fatalf("restored image reads 0x%02x (%v), want 0x5a", one[0], err)
				}
				off = 0
				b.StartTimer()
			}
			if err := img.WriteZeroes(off, 64<<10); err != nil {
				b.Fatal(err)
			}
			off += 64 << 10
		}
		one := []byte{0xff}
		if _, err := img.ReadAt(one, 0); err != nil || one[0] != 0 {
			b.Fatalf("zeroed cluster reads 0x%02x (%v)", one[0], err)
		}
		benchClose(b, img)
	})
	b.Run("partial4K/file", func(b *testing.B) {
		s := newBenchStore(b, false)
		img := s.fresh(zeroImageSize, 16)
		benchFill(b, img, 0x5a)
		if err := img.Flush(); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(4096)
		c := int64(0)
		for b.Loop() {
			// 4 KiB at offset 8 KiB of cluster c: neither head nor tail.
			if err := img.WriteZeroes(c*(64<<10)+8192, 4096); err != nil {
				b.Fatal(err)
			}
			c = (c + 1) % (zeroImageSize >> 16)
		}
		benchClose(b, img)
	})
}

// BenchmarkFlush measures Flush on a file image.
//
//   - clean: nothing to write back (a single fdatasync).
//   - after64KWrite: one allocating 64 KiB write (untimed) before each
//     Flush, which then writes back a refcount block and an L2 table in
//     order, with its syncs.
func BenchmarkFlush(b *testing.B) {
	b.Run("clean", func(b *testing.B) {
		s := newBenchStore(b, false)
		img := s.fresh(benchImageSize, 16)
		for b.Loop() {
			if err := img.Flush(); err != nil {
				b.Fatal(err)
			}
		}
		benchClose(b, img)
	})
	b.Run("after64KWrite", func(b *testing.B) {
		s := newBenchStore(b, false)
		img := s.fresh(benchImageSize, 16)
		buf := bytes.Repeat([]byte{0x5a}, 64<<10)
		off := int64(0)
		for b.Loop() {
			b.StopTimer()
			if off == img.Size() {
				benchClose(b, img)
				img = s.fresh(benchImageSize, 16)
				off = 0
			}
			if _, err := img.WriteAt(buf, off); err != nil {
				b.Fatal(err)
			}
			off += int64(len(buf))
			b.StartTimer()
			if err := img.Flush(); err != nil {
				b.Fatal(err)
			}
		}
		benchClose(b, img)
	})
}
