package interop

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
)

// ioScript builds qemu-io commands and keeps a model of their effect.
type ioScript struct {
	rng   *rand.Rand
	model []byte
	cs    int64
	gran  int64 // granularity of the "small aligned" requests (subcluster size)
	cmds  []string
	// keepOnDiscard: discards leave the data (version 2 overlays).
	keepOnDiscard bool
}

func newIOScript(seed uint64, model []byte, cs, gran int64) *ioScript {
	return &ioScript{rng: rand.New(rand.NewPCG(seed, 0x71656d75)), model: model, cs: cs, gran: gran}
}

func (s *ioScript) pattern() byte { return byte(1 + s.rng.IntN(255)) }

// writeP writes pattern p to [off, off+n).
func (s *ioScript) writeP(off, n int64, p byte) {
	s.cmds = append(s.cmds, fmt.Sprintf("write -P 0x%02x %d %d", p, off, n))
	for i := off; i < off+n; i++ {
		s.model[i] = p
	}
}

// compressed writes pattern p compressed to whole clusters that must not
// be allocated yet (qemu refuses to compress over allocated clusters).
func (s *ioScript) compressed(off, n int64, p byte) {
	s.cmds = append(s.cmds, fmt.Sprintf("write -c -P 0x%02x %d %d", p, off, n))
	for i := off; i < off+n; i++ {
		s.model[i] = p
	}
}

func (s *ioScript) zero(off, n int64, unmap bool) {
	c := "write -z"
	if unmap {
		c += " -u"
	}
	s.cmds = append(s.cmds, fmt.Sprintf("%s %d %d", c, off, n))
	clear(s.model[off : off+n])
}

// discard discards [off, off+n). QEMU discards whole clusters only and
// ignores the partial clusters at either end (a discard is advisory); the
// discarded clusters read as zeroes. In a version 2 overlay it cannot make
// them read as zeroes and discards nothing (s.keepOnDiscard).
func (s *ioScript) discard(off, n int64) {
	s.cmds = append(s.cmds, fmt.Sprintf("discard %d %d", off, n))
	if s.keepOnDiscard {
		return
	}
	start := (off + s.cs - 1) / s.cs * s.cs
	end := min(off+n, int64(len(s.model))/s.cs*s.cs) / s.cs * s.cs
	for c := start; c < end; c += s.cs {
		clear(s.model[c : c+s.cs])
	}
}

// rangeOf picks a range: unaligned, granule aligned, cluster aligned or
// straddling a cluster boundary.
func (s *ioScript) rangeOf() (off, n int64) {
	size := int64(len(s.model))
	switch s.rng.IntN(4) {
	case 0:
		n = 1 + s.rng.Int64N(3000)
		off = s.rng.Int64N(size - n)
	case 1:
		n = s.gran * (1 + s.rng.Int64N(3))
		off = s.gran * s.rng.Int64N((size-n)/s.gran+1)
	case 2:
		n = s.cs * (1 + s.rng.Int64N(3))
		n = min(n, size)
		off = s.cs * s.rng.Int64N((size-n)/s.cs+1)
	default:
		b := s.cs * (1 + s.rng.Int64N(size/s.cs-1))
		before := 1 + s.rng.Int64N(min(b, s.cs))
		after := 1 + s.rng.Int64N(min(size-b, s.cs))
		off, n = b-before, before+after
	}
	return off, n
}

// random appends n random writes, zero writes and discards.
func (s *ioScript) random(n int) {
	for range n {
		off, l := s.rangeOf()
		switch k := s.rng.IntN(10); {
		case k < 6:
			s.writeP(off, l, s.pattern())
		case k < 8:
			s.zero(off, l, k == 7)
		default:
			s.discard(off, l)
		}
	}
}

// runQemuIO runs the commands in one qemu-io session; every one must
// succeed.
func runQemuIO(t testing.TB, img string, cmds []string, extra ...string) {
	t.Helper()
	args := append([]string{}, extra...)
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	args = append(args, img)
	r := runQemu(t, "", "qemu-io", args...)
	if r.code != 0 || strings.Contains(r.stdout, "failed") || strings.Contains(r.stderr, "failed") {
		t.Fatalf("qemu-io failed:\n%s", r)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("qemu-io commands run on %s:\n%s", filepath.Base(img), strings.Join(cmds, "\n"))
		}
	})
}

// zqRead reads the whole virtual disk of img through zqimg's Go API
// (following its backing chain).
func zqRead(t testing.TB, img string) []byte {
	t.Helper()
	var im *image.Image
	err := retryLocked(func() (err error) {
		im, err = image.Open(img, image.Options{ReadOnly: true})
		return err
	})
	if err != nil {
		t.Fatalf("zqimg cannot open %s: %v", filepath.Base(img), err)
	}
	defer im.Close()
	b := make([]byte, im.Size())
	if _, err := im.ReadAt(b, 0); err != nil {
		t.Fatalf("zqimg cannot read %s: %v", filepath.Base(img), err)
	}
	return b
}

// checkReadback asserts that zqimg reads img exactly as qemu-img converts
// it to raw, and that both match the model of what was written.
func checkReadback(t *testing.T, img string, model []byte) {
	t.Helper()
	want := qemuToRaw(t, img)
	if d := firstDiff(want, model); d != "" {
		t.Fatalf("test setup: qemu-img reads %s differently from the model of the qemu-io writes: %s", filepath.Base(img), d)
	}
	got := zqRead(t, img)
	if d := firstDiff(got, want); d != "" {
		t.Errorf("zqimg reads %s differently from qemu-img convert -O raw: %s", filepath.Base(img), d)
	}
}

// zqWriteBack writes into img at random through zqimg's Go API, starting
// from model (its current content), and has qemu-img check it and compare
// it with the result.
func zqWriteBack(t *testing.T, img string, model []byte, cs int64, seed uint64, nops int) {
	t.Helper()
	if t.Failed() {
		return
	}
	r := newRandomOps(t, img, model, cs, seed)
	r.run(nops)
	if t.Failed() {
		return
	}
	r.verifyAll()
	raw := img + ".model.raw"
	writeFile(t, raw, model)
	qemuCheckClean(t, img)
	qemuCompareRaw(t, img, raw)
}

// randomData makes n bytes that compress partly: runs of random bytes,
// repeated patterns, zeroes and text.
func randomData(seed uint64, n int64) []byte {
	rng := rand.New(rand.NewPCG(seed, 0x64617461))
	b := make([]byte, n)
	for off := int64(0); off < n; {
		l := min(n-off, 512+rng.Int64N(96<<10))
		switch rng.IntN(4) {
		case 0:
			for i := off; i < off+l; i++ {
				b[i] = byte(rng.Uint32())
			}
		case 1:
			p := byte(rng.Uint32())
			for i := off; i < off+l; i++ {
				b[i] = p
			}
		case 2: // zeroes
		case 3:
			txt := fmt.Sprintf("sector %d of the compressible text, line %d; ", off/512, rng.IntN(1000))
			for i := off; i < off+l; i++ {
				b[i] = txt[(i-off)%int64(len(txt))]
			}
		}
		off += l
	}
	return b
}

func sizeName(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dk", n>>10)
	}
	return fmt.Sprint(n)
}

// TestQemuIOWritesReadBack: images created by qemu-img and written by
// qemu-io (patterns, zero writes, discards, compressed writes) read back
// byte-exact through zqimg; zqimg's own writes into them leave them clean.
func TestQemuIOWritesReadBack(t *testing.T) {
	requireQemu(t)
	i := 0
	for _, cs := range []int64{512, 4 << 10, 64 << 10, 2 << 20} {
		for _, compat := range []string{"0.10", "1.1"} {
			i++
			seed := uint64(i)
			t.Run(fmt.Sprintf("c%s-v%s", sizeName(cs), compat), func(t *testing.T) {
				t.Parallel()
				img := filepath.Join(t.TempDir(), "img.qcow2")
				size := max(8<<20, 8*cs)
				mustRun(t, "", "qemu-img", "create", "-q", "-f", "qcow2",
					"-o", fmt.Sprintf("cluster_size=%d,compat=%s", cs, compat), img, fmt.Sprint(size))
				model := make([]byte, size)
				s := newIOScript(seed, model, cs, 512)
				// Compressed clusters first, while nothing is allocated.
				s.compressed(0, cs, s.pattern())
				s.compressed(size/2, 2*cs, s.pattern())
				s.random(60)
				runQemuIO(t, img, s.cmds)
				checkReadback(t, img, model)
				zqWriteBack(t, img, model, cs, 100+seed, 120)
			})
		}
	}
}

// TestQemuCompressedReadBack: `qemu-img convert -c` output (zlib and zstd,
// several cluster sizes) reads back byte-exact through zqimg, and zqimg's
// writes over compressed clusters leave the image clean.
func TestQemuCompressedReadBack(t *testing.T) {
	requireQemu(t)
	type tc struct {
		ct     string
		cs     int64
		compat string
	}
	cases := []tc{
		{"zlib", 512, "1.1"}, {"zlib", 4 << 10, "1.1"}, {"zlib", 64 << 10, "1.1"}, {"zlib", 2 << 20, "1.1"},
		{"zlib", 64 << 10, "0.10"},
		{"zstd", 4 << 10, "1.1"}, {"zstd", 64 << 10, "1.1"}, {"zstd", 2 << 20, "1.1"},
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("%s-c%s-v%s", c.ct, sizeName(c.cs), c.compat), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			size := int64(12<<20 + 4096 + 512) // last cluster partial
			if c.cs == 2<<20 {
				size = 24<<20 + 512
			}
			src := filepath.Join(dir, "src.raw")
			data := randomData(uint64(200+i), size)
			writeFile(t, src, data)
			img := filepath.Join(dir, "img.qcow2")
			o := fmt.Sprintf("cluster_size=%d,compat=%s", c.cs, c.compat)
			if c.ct != "zlib" || c.compat == "1.1" {
				o += ",compression_type=" + c.ct
			}
			mustRun(t, "", "qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", o, src, img)
			h := readHeader(t, img)
			if wantZstd := c.ct == "zstd"; wantZstd != (h.version >= 3 && h.raw[104] == 1) {
				t.Fatalf("test setup: compression type byte %d in %s", h.raw[104], img)
			}
			checkReadback(t, img, data)
			zqWriteBack(t, img, data, c.cs, uint64(300+i), 120)
		})
	}
}

// TestQemuExtendedL2ReadBack: extended-L2 images written by qemu-io with
// subcluster-sized writes, zero writes and discards (also over a backing
// file, where unallocated subclusters show the backing data) read back
// byte-exact through zqimg and stay clean under zqimg's writes.
func TestQemuExtendedL2ReadBack(t *testing.T) {
	requireQemu(t)
	i := 0
	for _, cs := range []int64{16 << 10, 64 << 10, 2 << 20} {
		for _, backing := range []bool{false, true} {
			i++
			seed := uint64(400 + i)
			name := fmt.Sprintf("c%s", sizeName(cs))
			if backing {
				name += "-backing"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				size := max(8<<20, 8*cs)
				img := filepath.Join(dir, "img.qcow2")
				model := make([]byte, size)
				args := []string{"create", "-q", "-f", "qcow2", "-o", fmt.Sprintf("cluster_size=%d,extended_l2=on", cs)}
				if backing {
					base := filepath.Join(dir, "base.raw")
					copy(model, randomData(seed, size))
					writeFile(t, base, model)
					args = append(args, "-b", "base.raw", "-F", "raw")
				}
				mustRun(t, "", "qemu-img", append(args, img, fmt.Sprint(size))...)
				sub := cs / 32
				s := newIOScript(seed, model, cs, sub)
				// Subcluster-sized requests in a few clusters, then
				// random ones.
				for c := int64(1); c < 4; c++ {
					base := c * cs
					s.writeP(base, sub, s.pattern())
					s.writeP(base+3*sub, 2*sub, s.pattern())
					s.zero(base+6*sub, sub, false)
					s.discard(base+8*sub, 3*sub)
					s.writeP(base+20*sub+100, sub, s.pattern()) // unaligned, two subclusters
					s.zero(base+31*sub, sub, true)
				}
				s.zero(5*cs, cs, false) // whole cluster zeroed
				s.discard(6*cs, 2*cs)   // whole clusters discarded
				s.random(60)
				runQemuIO(t, img, s.cmds)
				checkReadback(t, img, model)
				zqWriteBack(t, img, model, cs, seed+50, 120)
			})
		}
	}
}

// TestQemuBackingReadBack: overlays made by qemu-img over qcow2 and raw
// backing files (with and without a backing format recorded, backing file
// shorter than the overlay, two-level chains) and written by qemu-io read
// through byte-exact in zqimg; zqimg's writes into the overlays leave them
// clean and equal to the model.
func TestQemuBackingReadBack(t *testing.T) {
	requireQemu(t)
	type tc struct {
		name       string
		baseFmt    string // raw or qcow2
		withFmt    bool   // -F given (else the backing format extension is removed)
		compat     string // of the overlay
		cs         int64  // of the overlay
		absolute   bool   // absolute backing file name
		chain      bool   // base <- mid (qcow2) <- top
		baseShort  bool   // backing file shorter than the overlay
		baseCompat string
	}
	cases := []tc{
		{name: "qcow2-F", baseFmt: "qcow2", withFmt: true, compat: "1.1", cs: 64 << 10},
		{name: "qcow2-noF", baseFmt: "qcow2", withFmt: false, compat: "1.1", cs: 64 << 10},
		{name: "raw-F", baseFmt: "raw", withFmt: true, compat: "1.1", cs: 4 << 10},
		{name: "raw-noF", baseFmt: "raw", withFmt: false, compat: "1.1", cs: 64 << 10, absolute: true},
		{name: "qcow2-F-v2", baseFmt: "qcow2", withFmt: true, compat: "0.10", cs: 64 << 10, baseCompat: "0.10"},
		{name: "raw-F-v2-short", baseFmt: "raw", withFmt: true, compat: "0.10", cs: 512, baseShort: true},
		{name: "qcow2-F-short-c2M", baseFmt: "qcow2", withFmt: true, compat: "1.1", cs: 2 << 20, baseShort: true},
		{name: "chain-noF", baseFmt: "raw", withFmt: false, compat: "1.1", cs: 64 << 10, chain: true},
		{name: "chain-F-abs", baseFmt: "qcow2", withFmt: true, compat: "1.1", cs: 4 << 10, chain: true, absolute: true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			seed := uint64(500 + 10*i)
			dir := t.TempDir()
			size := max(8<<20, 8*c.cs)
			baseSize := size
			if c.baseShort {
				baseSize = size - 3*c.cs - 1536 // ends inside a cluster
			}
			model := make([]byte, size)
			// The base: raw data, or a qcow2 image written by qemu-io.
			base := filepath.Join(dir, "base."+c.baseFmt)
			baseModel := model[:baseSize]
			if c.baseFmt == "raw" {
				copy(baseModel, randomData(seed, baseSize))
				writeFile(t, base, baseModel)
			} else {
				o := "cluster_size=65536"
				if c.baseCompat != "" {
					o += ",compat=" + c.baseCompat
				}
				mustRun(t, "", "qemu-img", "create", "-q", "-f", "qcow2", "-o", o, base, fmt.Sprint(baseSize))
				s := newIOScript(seed, baseModel, 65536, 512)
				s.random(40)
				runQemuIO(t, base, s.cmds)
			}
			overlay := func(name, backing, backingFmt string) string {
				p := filepath.Join(dir, name)
				ref := filepath.Base(backing)
				if c.absolute {
					ref = backing
				}
				mustRun(t, "", "qemu-img", "create", "-q", "-f", "qcow2",
					"-o", fmt.Sprintf("cluster_size=%d,compat=%s", c.cs, c.compat),
					"-b", ref, "-F", backingFmt, p, fmt.Sprint(size))
				if !c.withFmt {
					stripBackingFormat(t, p)
					if _, ok := readHeader(t, p).ext(extBackingFormat); ok {
						t.Fatal("test setup: backing format extension still present")
					}
				}
				return p
			}
			top := overlay("top.qcow2", base, c.baseFmt)
			if c.chain {
				// Write into the middle layer, then stack the top on it.
				s := newIOScript(seed+1, model, c.cs, 512)
				s.random(30)
				runQemuIO(t, top, s.cmds)
				mid := filepath.Join(dir, "mid.qcow2")
				if err := os.Rename(top, mid); err != nil {
					t.Fatal(err)
				}
				top = overlay("top.qcow2", mid, "qcow2")
			}
			s := newIOScript(seed+2, model, c.cs, 512)
			s.keepOnDiscard = c.compat == "0.10"

			s.random(40)
			runQemuIO(t, top, s.cmds)
			checkReadback(t, top, model)
			zqWriteBack(t, top, model, c.cs, seed+3, 120)
		})
	}
}

// TestZqimgWritesIntoQemuSubclusters: zqimg writes, zero writes and
// discards that start or end inside a subcluster qemu-io allocated, and
// run into a neighbouring unallocated subcluster, keep the allocated
// subcluster's other bytes (a deterministic form of what the random
// extended-L2 runs exercise).
func TestZqimgWritesIntoQemuSubclusters(t *testing.T) {
	requireQemu(t)
	type tc struct {
		name    string
		qemuW   [2]int64 // qemu-io writes pattern 0x5a here (off, len): one subcluster
		zq      string   // zqimg io command
		keep    [2]int64 // must still read 0x5a
		zeroOut [2]int64 // must read as zeroes (or 0x11 for writes)
	}
	cases := []tc{
		// Subclusters are 512 bytes with 16 KiB clusters.
		{"write-head-allocated", [2]int64{512, 512}, "write -P 0x11 1000 100", [2]int64{512, 488}, [2]int64{1000, 100}},
		{"write-tail-allocated", [2]int64{1024, 512}, "write -P 0x11 600 500", [2]int64{1100, 436}, [2]int64{600, 500}},
		{"zero-head-allocated", [2]int64{512, 512}, "write -z 525 600", [2]int64{512, 13}, [2]int64{525, 600}},
		{"zero-tail-allocated", [2]int64{1024, 512}, "write -z 600 500", [2]int64{1100, 436}, [2]int64{600, 500}},
		{"discard-head-allocated", [2]int64{512, 512}, "discard 525 600", [2]int64{512, 13}, [2]int64{525, 600}},
		{"write-inside-allocated", [2]int64{512, 512}, "write -P 0x11 600 100", [2]int64{512, 88}, [2]int64{600, 100}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "img.qcow2")
			mustRun(t, "", "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=16k", img, "1M")
			runQemuIO(t, img, []string{fmt.Sprintf("write -P 0x5a %d %d", c.qemuW[0], c.qemuW[1])})
			if r := zq(t, "", "io", "-c", c.zq, img); r.code != 0 {
				t.Fatalf("zqimg io -c %q:\n%s", c.zq, r)
			}
			model := make([]byte, 1<<20)
			for i := c.qemuW[0]; i < c.qemuW[0]+c.qemuW[1]; i++ {
				model[i] = 0x5a
			}
			fill := byte(0)
			if strings.HasPrefix(c.zq, "write -P") {
				fill = 0x11
			}
			for i := c.zeroOut[0]; i < c.zeroOut[0]+c.zeroOut[1]; i++ {
				model[i] = fill
			}
			for i := c.keep[0]; i < c.keep[0]+c.keep[1]; i++ {
				if model[i] != 0x5a {
					t.Fatalf("test setup: byte %d of the kept range is overwritten", i)
				}
			}
			got := qemuToRaw(t, img)
			if d := firstDiff(got, model); d != "" {
				t.Errorf("after qemu-io 'write -P 0x5a %d %d' and zqimg %q, qemu-img reads: %s", c.qemuW[0], c.qemuW[1], c.zq, d)
			}
			if d := firstDiff(zqRead(t, img), model); d != "" {
				t.Errorf("after qemu-io 'write -P 0x5a %d %d' and zqimg %q, zqimg reads: %s", c.qemuW[0], c.qemuW[1], c.zq, d)
			}
			qemuCheckClean(t, img)
		})
	}
}

// TestPatternInterop: a pattern written by qemu-io verifies with
// `zqimg read -P`, and one written by `zqimg write -P` verifies with
// qemu-io's `read -P`, for pattern bytes in every notation qemu-io accepts
// (decimal, hex in either case, octal).
func TestPatternInterop(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "img.qcow2")
	mustRun(t, "", "qemu-img", "create", "-q", "-f", "qcow2", img, "4M")
	patterns := []string{"0x01", "0x7f", "0x80", "0xab", "0xbe", "0xBB", "0xff", "200", "0377", "0x5a"}
	var cmds []string
	for i, p := range patterns {
		cmds = append(cmds, fmt.Sprintf("write -P %s %d 4096", p, i*65536))
	}
	runQemuIO(t, img, cmds)
	for i, p := range patterns {
		off := fmt.Sprint(i * 65536)
		if r := zq(t, "", "read", "-P", p, img, off, "4096"); r.code != 0 || strings.Contains(r.stdout, "failed") || !strings.Contains(r.stdout, "read 4096/4096 bytes") {
			t.Errorf("zqimg read -P %s of qemu-io's pattern %s:\n%s", p, p, r)
		}
		off2 := fmt.Sprint(i*65536 + 8192)
		if r := zq(t, "", "write", "-P", p, img, off2, "4096"); r.code != 0 || !strings.Contains(r.stdout, "wrote 4096/4096 bytes") {
			t.Errorf("zqimg write -P %s:\n%s", p, r)
			continue
		}
		if r := run(t, "", "qemu-io", "-c", "read -P "+p+" "+off2+" 4096", img); r.code != 0 || strings.Contains(r.stdout, "failed") {
			t.Errorf("qemu-io read -P %s of zqimg's pattern:\n%s", p, r)
		}
	}
	qemuCheckClean(t, img)
}
