package image_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

// statusConfig is one image layout the block status tests cover.
type statusConfig struct {
	name        string
	clusterBits uint32
	version     uint32
	extL2       bool
	ctype       uint8
	size        uint64
}

var statusConfigs = []statusConfig{
	{"64k", 16, 3, false, image.CompressionZlib, 8 << 20},
	{"512", 9, 3, false, image.CompressionZlib, 300 << 10},
	{"4k-zstd", 12, 3, false, image.CompressionZstd, 3<<20 + 4096*5 + 512},
	{"extl2-32k", 15, 3, true, image.CompressionZlib, 4<<20 - 512},
	{"v2-4k", 12, 2, false, image.CompressionZlib, 2 << 20},
}

func newTestImage(t testing.TB, c statusConfig) (*image.Image, *imagetest.MemFile) {
	t.Helper()
	mem := imagetest.NewMemFile(nil)
	err := image.Format(mem, image.CreateOptions{Size: c.size, ClusterBits: c.clusterBits, Version: c.version,
		RefcountOrder: 4, ExtendedL2: c.extL2, CompressionType: c.ctype})
	if err != nil {
		t.Fatal(err)
	}
	img, err := image.OpenFile(mem, "test.qcow2", image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return img, mem
}

// randomOps changes img with random writes, zero writes, discards and
// compressed cluster writes, mirroring the guest data in model.
func randomOps(t testing.TB, rng *rand.Rand, img *image.Image, model []byte, n int) {
	t.Helper()
	cs := img.ClusterSize()
	size := int64(len(model))
	for k := 0; k < n; k++ {
		off := rng.Int63n(size)
		length := 1 + rng.Int63n(min(size-off, 4*cs))
		switch op := rng.Intn(10); {
		case op < 4:
			p := make([]byte, length)
			fill := byte(1 + rng.Intn(255))
			for i := range p {
				p[i] = fill
			}
			if _, err := img.WriteAt(p, off); err != nil {
				t.Fatalf("write %d@%d: %v", length, off, err)
			}
			copy(model[off:], p)
		case op < 6:
			if err := img.WriteZeroes(off, length); err != nil {
				t.Fatalf("zero %d@%d: %v", length, off, err)
			}
			clear(model[off : off+length])
		case op < 7:
			if err := img.Discard(off, length); err != nil {
				t.Fatalf("discard %d@%d: %v", length, off, err)
			}
			clear(model[off : off+length])
		default:
			c := off / cs * cs
			end := min(c+cs, size)
			p := compressibleData(rng, int(end-c))
			cl, err := img.CompressCluster(p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := img.WriteCompressed(cl, c); err != nil {
				t.Fatalf("compressed write at %d: %v", c, err)
			}
			copy(model[c:], p)
		}
	}
}

// compressibleData returns n bytes of text-like data, or random bytes
// (which do not compress) one time in five.
func compressibleData(rng *rand.Rand, n int) []byte {
	p := make([]byte, n)
	if rng.Intn(5) == 0 {
		rng.Read(p)
		return p
	}
	words := []string{"zone ", "qcow2 ", "write pointer ", "cluster ", "\n"}
	for i := 0; i < n; {
		i += copy(p[i:], words[rng.Intn(len(words))])
		if rng.Intn(40) == 0 {
			for j := 0; j < 16 && i < n; j++ {
				p[i] = byte(rng.Intn(256))
				i++
			}
		}
	}
	return p
}

// TestBlockStatusAgainstMap checks every run BlockStatus reports against
// the per-byte Map, sector by sector: same kind, contiguous host offsets
// for data, zeroes where it says zero or unallocated, and runs that are
// maximal (the next byte differs, is compressed, is not contiguous, or
// lies in the next L2 table).
func TestBlockStatusAgainstMap(t *testing.T) {
	for _, c := range statusConfigs {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(c.clusterBits)*7 + int64(c.version)))
			img, _ := newTestImage(t, c)
			defer img.Close()
			model := make([]byte, c.size)
			randomOps(t, rng, img, model, 60)
			if err := img.Flush(); err != nil {
				t.Fatal(err)
			}
			cs := img.ClusterSize()
			l2span := cs * (cs / 8)
			if c.extL2 {
				l2span = cs * (cs / 16)
			}
			size := img.Size()
			sawKinds := map[image.Kind]bool{}
			for off := int64(0); off < size; {
				x, err := img.BlockStatus(off, size-off)
				if err != nil {
					t.Fatal(err)
				}
				if x.Len <= 0 || off+x.Len > size {
					t.Fatalf("run at %d: length %d", off, x.Len)
				}
				if x.Len > l2span-off%l2span {
					t.Fatalf("run at %d of %d bytes crosses an L2 table", off, x.Len)
				}
				if x.Kind == image.Compressed && x.Len > cs-off%cs {
					t.Fatalf("compressed run at %d of %d bytes spans clusters", off, x.Len)
				}
				sawKinds[x.Kind] = true
				for p := off; p < off+x.Len; p = min(p+512, off+x.Len) {
					k, host, err := img.Map(p)
					if err != nil {
						t.Fatal(err)
					}
					if k != x.Kind {
						t.Fatalf("run at %d (%v, %d bytes): byte %d is %v", off, x.Kind, x.Len, p, k)
					}
					if k == image.Data && host != x.Host+uint64(p-off) {
						t.Fatalf("run at %d: byte %d at host 0x%x, want 0x%x", off, p, host, x.Host+uint64(p-off))
					}
				}
				if x.Kind == image.Zero || x.Kind == image.Unallocated {
					if !bytes.Equal(model[off:off+x.Len], make([]byte, x.Len)) {
						t.Fatalf("run at %d reported %v but the guest wrote data there", off, x.Kind)
					}
				}
				next := off + x.Len
				if next < size && next%l2span != 0 && x.Kind != image.Compressed {
					k, host, err := img.Map(next)
					if err != nil {
						t.Fatal(err)
					}
					if k == x.Kind && k != image.Compressed && (k != image.Data || host == x.Host+uint64(x.Len)) {
						y, _ := img.BlockStatus(next, size-next)
						if y.HostValid == x.HostValid && (!x.HostValid || y.Host == x.Host+uint64(x.Len)) {
							t.Fatalf("run at %d (%v, %d bytes) is not maximal: %d continues it", off, x.Kind, x.Len, next)
						}
					}
				}
				off = next
			}
			for _, k := range []image.Kind{image.Data, image.Unallocated, image.Compressed} {
				if !sawKinds[k] {
					t.Errorf("the random image has no %v run", k)
				}
			}
			// Reads agree with the model everywhere.
			got := make([]byte, size)
			if _, err := img.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, model) {
				t.Fatal("image content differs from the model")
			}
		})
	}
}

func TestBlockStatusArguments(t *testing.T) {
	img, _ := newTestImage(t, statusConfigs[0])
	defer img.Close()
	for _, tc := range []struct{ off, n int64 }{{-1, 10}, {0, 0}, {0, -5}, {img.Size(), 1}, {img.Size() + 4096, 1}} {
		if _, err := img.BlockStatus(tc.off, tc.n); err == nil {
			t.Errorf("BlockStatus(%d, %d) succeeded", tc.off, tc.n)
		}
	}
	// A request is never answered with more than was asked for.
	x, err := img.BlockStatus(100, 7)
	if err != nil || x.Len != 7 || x.Kind != image.Unallocated {
		t.Errorf("BlockStatus(100, 7) = %+v, %v", x, err)
	}
}

// Preallocated zero clusters and the zero and unallocated subclusters of
// an allocated extended-L2 cluster keep their host offset, as QEMU's
// block status reports it.
func TestBlockStatusHostOffsets(t *testing.T) {
	c := statusConfig{"extl2", 16, 3, true, image.CompressionZlib, 1 << 20}
	img, mem := newTestImage(t, c)
	sub := int64(65536 / 32)
	if _, err := img.WriteAt(bytes.Repeat([]byte{7}, 65536), 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	// zqimg writes whole subcluster bitmaps; QEMU leaves partial ones.
	// Make subcluster 0 data, 1 zero, the others unallocated.
	b := mem.Bytes()
	h, err := image.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	l2 := binary.BigEndian.Uint64(b[h.L1TableOffset:]) & image.L1OffsetMask
	binary.BigEndian.PutUint64(b[l2+8:], 1|1<<(32+1))
	img, err = image.OpenFile(imagetest.NewMemFile(b), "x.qcow2", image.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	want := []struct {
		kind image.Kind
		len  int64
		host bool
	}{{image.Data, sub, true}, {image.Zero, sub, true}, {image.Unallocated, 65536 - 2*sub, true}, {image.Unallocated, 1<<20 - 65536, false}}
	off := int64(0)
	var first uint64
	for i, w := range want {
		x, err := img.BlockStatus(off, img.Size()-off)
		if err != nil {
			t.Fatal(err)
		}
		if x.Kind != w.kind || x.Len != w.len || x.HostValid != w.host {
			t.Fatalf("run %d: %+v, want %v of %d bytes (host valid %v)", i, x, w.kind, w.len, w.host)
		}
		if i == 0 {
			first = x.Host
		} else if w.host && x.Host != first+uint64(off) {
			t.Errorf("run %d: host 0x%x, want 0x%x", i, x.Host, first+uint64(off))
		}
		off += x.Len
	}
}

func ExampleImage_BlockStatus() {
	mem := imagetest.NewMemFile(nil)
	_ = image.Format(mem, image.CreateOptions{Size: 1 << 20, ClusterBits: 16, Version: 3, RefcountOrder: 4})
	img, _ := image.OpenFile(mem, "x.qcow2", image.Options{})
	_, _ = img.WriteAt(bytes.Repeat([]byte{1}, 128<<10), 0)
	for off := int64(0); off < img.Size(); {
		x, _ := img.BlockStatus(off, img.Size()-off)
		fmt.Println(off, x.Len, x.Kind)
		off += x.Len
	}
	// Output:
	// 0 131072 data
	// 131072 917504 unallocated
}
