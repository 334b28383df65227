package check_test

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

var (
	fuzzOnce   sync.Once
	fuzzImages [][]byte
)

// fuzzBases returns small images covering the layouts the check handles:
// cluster sizes from 512 bytes to 64 KiB, refcount widths from 1 to 64
// bits, version 2, extended L2 entries, zoned images with zones larger
// and smaller than a cluster.
func fuzzBases(t testing.TB) [][]byte {
	fuzzOnce.Do(func() {
		mk := func(opts, size string, ws ...write) []byte {
			f := newImage(t, opts, size)
			writeImage(t, f, ws...)
			return f.Bytes()
		}
		fuzzImages = [][]byte{
			mk("cluster_size=4k", "2M", write{0, 16 << 10, 1}, write{1 << 20, 8 << 10, 2}),
			mk("cluster_size=512,refcount_bits=1", "1M", write{0, 4 << 10, 1}, write{600 << 10, 2 << 10, 2}),
			mk("cluster_size=4k,zone.mode=host-managed,zone.size=64k,zone.conventional_zones=1,zone.max_append_bytes=4k", "1M",
				write{0, 8 << 10, 1}, write{64 << 10, 12 << 10, 2}, write{192 << 10, 64 << 10, 3}),
			mk("cluster_size=16k,extended_l2=on", "2M", write{0, 20 << 10, 1}, write{1 << 20, 1 << 10, 2}),
			mk("cluster_size=4k,compat=0.10", "2M", write{4 << 10, 8 << 10, 1}),
			mk("cluster_size=64k,zone.mode=host-managed,zone.size=16k,zone.max_append_bytes=4k", "1M",
				write{0, 16 << 10, 1}, write{16 << 10, 8 << 10, 2}, write{128 << 10, 16 << 10, 3}, write{144 << 10, 4 << 10, 4}),
			mk("cluster_size=4k,refcount_bits=64", "1M", write{8 << 10, 12 << 10, 1}),
		}
	})
	return fuzzImages
}

// mutate applies a fuzz input to a copy of one of the base images: two
// 8-byte writes (big- and little-endian) and an optional cut.
func mutate(bases [][]byte, which uint8, off1 uint32, v1 uint64, off2 uint32, v2 uint64, cut uint32) []byte {
	b := append([]byte(nil), bases[int(which)%len(bases)]...)
	if n := uint32(len(b)); n >= 8 {
		binary.BigEndian.PutUint64(b[min(off1, n-8):], v1)
		if off2 != 0 {
			binary.LittleEndian.PutUint64(b[min(off2, n-8):], v2)
		}
	}
	if cut != 0 && int(cut) < len(b) {
		b = b[:cut]
	}
	return b
}

// addSeeds adds inputs aimed at the structures of every base image.
func addSeeds(f *testing.F, bases [][]byte) {
	for i, b := range bases {
		w := uint8(i)
		r := rawOf(f, b)
		h := r.h
		f.Add(w, uint32(0), uint64(0x514649fb00000003), uint32(0), uint64(0), uint32(0))
		for _, off := range []uint32{image.HdrClusterBits, image.HdrSize, image.HdrCryptMethod, image.HdrL1Size,
			image.HdrL1TableOffset, image.HdrRefcountTableOffset, image.HdrRefcountTableClusters, image.HdrNbSnapshots,
			image.HdrSnapshotsOffset, image.HdrIncompatibleFeatures, image.HdrAutoclearFeatures, image.HdrRefcountOrder,
			image.HdrHeaderLength} {
			f.Add(w, off, uint64(0xffffffff00000000), uint32(0), uint64(0), uint32(0))
		}
		l1 := uint32(h.L1TableOffset)
		f.Add(w, l1, r.l1(0)+512, uint32(0), uint64(0), uint32(0))
		f.Add(w, l1, uint64(1)<<63|uint64(len(b))*4, uint32(0), uint64(0), uint32(0))
		l2 := uint32(r.l1(0) & 0x00fffffffffffe00)
		f.Add(w, l2, r.l2(0)+512, l2+8, uint64(1)<<63, uint32(0))
		f.Add(w, l2, uint64(1)<<62|uint64(len(b)), uint32(0), uint64(0), uint32(0))
		rb := uint32(r.u64(h.RefcountTableOffset))
		f.Add(w, rb, uint64(0), uint32(0), uint64(0), uint32(0))
		f.Add(w, uint32(h.RefcountTableOffset), uint64(len(b))*2, uint32(0), uint64(0), uint32(0))
		f.Add(w, uint32(0), uint64(0x514649fb00000003), uint32(0), uint64(0), uint32(len(b)/2))
		if h.IncompatibleFeatures&(1<<5) != 0 {
			z := r.zoned(f)
			e := uint32(r.zonedExt(f))
			f.Add(w, e+48, z.MetaOffset+512, uint32(0), uint64(0), uint32(0))
			f.Add(w, e+20, uint64(z.ConventionalZones)<<32|uint64(z.NrZones+1), uint32(0), uint64(0), uint32(0))
			f.Add(w, uint32(0), uint64(0x514649fb00000003), uint32(z.MetaOffset+8), uint64(5), uint32(0))
			f.Add(w, uint32(z.MetaOffset+8), uint64(0x10000), uint32(0), uint64(0), uint32(0))
		}
	}
}

// FuzzCheck checks mutated images read-only: never a panic, a result or
// an error, counters that agree with the findings, and no write.
func FuzzCheck(f *testing.F) {
	bases := fuzzBases(f)
	addSeeds(f, bases)
	f.Fuzz(func(t *testing.T, which uint8, off1 uint32, v1 uint64, off2 uint32, v2 uint64, cut uint32) {
		b := mutate(bases, which, off1, v1, off2, v2, cut)
		mf := imagetest.NewMemFile(b)
		res, err := check.Check(mf, check.Options{})
		if res == nil {
			if err == nil {
				t.Fatal("no result and no error")
			}
			return
		}
		if !bytes.Equal(mf.Bytes(), b) {
			t.Fatal("a read-only check wrote to the image")
		}
		if err != nil {
			if res.CheckErrors == 0 {
				t.Fatalf("check failed (%v) without a check error", err)
			}
			return
		}
		var c, l, e int64
		for _, fd := range res.Findings {
			switch fd.Kind {
			case check.KindCorruption:
				c++
			case check.KindLeak:
				l++
			case check.KindCheckError:
				e++
			}
			if fd.Msg == "" || fd.Repaired {
				t.Fatalf("bad finding %+v", fd)
			}
		}
		if c != res.Corruptions || l != res.Leaks || e != res.CheckErrors {
			t.Fatalf("findings count %d/%d/%d, the result %d/%d/%d\n%s", c, l, e, res.Corruptions, res.Leaks, res.CheckErrors, report(res))
		}
		if res.AllocatedClusters > res.TotalClusters+int64(len(b)) || res.ImageEndOffset <= 0 {
			t.Fatalf("bad statistics\n%s", report(res))
		}
	})
}

// FuzzCheckRepair repairs mutated images: never a panic; the result of
// the repair is what a new check finds; and a second repair has nothing
// left to fix.
func FuzzCheckRepair(f *testing.F) {
	bases := fuzzBases(f)
	addSeeds(f, bases)
	// In-memory files: a repair extends one by at most 1 MiB.
	opts := check.Options{Repair: check.RepairAll, MaxExtend: 1 << 20}
	f.Fuzz(func(t *testing.T, which uint8, off1 uint32, v1 uint64, off2 uint32, v2 uint64, cut uint32) {
		b := mutate(bases, which, off1, v1, off2, v2, cut)
		mf := imagetest.NewMemFile(b)
		res, err := check.Check(mf, opts)
		if res == nil || err != nil {
			if res == nil && err == nil {
				t.Fatal("no result and no error")
			}
			return
		}
		again, err := check.Check(mf, check.Options{})
		if err != nil || again == nil {
			t.Fatalf("the repaired image cannot be checked: %v\nrepair:\n%s", err, report(res))
		}
		if again.Corruptions != res.Corruptions || again.Leaks != res.Leaks || again.CheckErrors != res.CheckErrors {
			t.Fatalf("the repair reports\n%sa new check\n%s", report(res), report(again))
		}
		third, err := check.Check(mf, opts)
		if err != nil || third == nil {
			t.Fatalf("second repair: %v", err)
		}
		if third.CorruptionsFixed+third.LeaksFixed != 0 {
			t.Fatalf("a second repair fixed more:\nfirst:\n%ssecond:\n%s", report(res), report(third))
		}
	})
}
