package interop

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// zonedOps drives a zoned image through the Go API (writes at the write
// pointer, appends, finish, reset, close, open; random writes, zero writes
// and discards in conventional zones), mirroring the data in model.
type zonedOps struct {
	t     *testing.T
	path  string
	model []byte
	rng   *rand.Rand
	dev   *zone.Device
	h     *zone.Header
	log   []string
	// explicitOpen allows explicit opens (configurations without an open
	// limit, where they cannot fail).
	explicitOpen bool
}

func (z *zonedOps) logf(format string, args ...any) {
	z.log = append(z.log, fmt.Sprintf(format, args...))
}

func (z *zonedOps) open() {
	z.t.Helper()
	z.logf("open")
	err := retryLocked(func() (err error) {
		d, err := zone.Open(z.path, image.Options{})
		if err == nil {
			z.dev = d
		}
		return err
	})
	if err != nil {
		z.t.Fatalf("opening %s: %v", z.path, err)
	}
	z.h = z.dev.Header()
	if z.h == nil {
		z.t.Fatalf("%s is not zoned", z.path)
	}
}

func (z *zonedOps) close() {
	z.t.Helper()
	z.logf("close")
	err := z.dev.Close()
	z.dev = nil
	if err != nil {
		z.t.Fatalf("closing %s: %v", z.path, err)
	}
}

func (z *zonedOps) data(n int64) []byte {
	b := make([]byte, n)
	p := byte(z.rng.Uint32())
	for i := range b {
		if i%512 == 0 && z.rng.IntN(2) == 0 {
			p = byte(z.rng.Uint32())
		}
		b[i] = p ^ byte(i>>9)
	}
	return b
}

func (z *zonedOps) zoneInfo(i int) zone.Zone {
	z.t.Helper()
	zs, err := z.dev.Report(int64(uint64(i)*z.h.ZoneSize), 1)
	if err != nil || len(zs) != 1 {
		z.t.Fatalf("report of zone %d: %v", i, err)
	}
	return zs[0]
}

func (z *zonedOps) must(err error, format string, args ...any) {
	z.t.Helper()
	if err != nil {
		z.t.Fatalf("%s: %v", fmt.Sprintf(format, args...), err)
	}
}

func (z *zonedOps) run(nops int) {
	z.t.Helper()
	z.open()
	conv := int(z.h.ConventionalZones)
	nr := int(z.h.NrZones)
	zs := int64(z.h.ZoneSize)
	for range nops {
		if z.t.Failed() {
			return
		}
		k := z.rng.IntN(100)
		switch {
		case k < 4:
			z.logf("flush")
			z.must(z.dev.Flush(), "flush")
			continue
		case k < 8:
			z.close()
			z.open()
			continue
		}
		i := z.rng.IntN(nr)
		if i < conv {
			// Conventional zones: random writes, zero writes, discards.
			end := int64(conv) * zs
			n := 1 + z.rng.Int64N(min(end, 192<<10))
			off := z.rng.Int64N(end - n + 1)
			switch z.rng.IntN(4) {
			case 0, 1:
				z.logf("write %d %d (conventional)", off, n)
				d := z.data(n)
				_, err := z.dev.WriteAt(d, off)
				z.must(err, "write %d bytes at %d", n, off)
				copy(z.model[off:], d)
			case 2:
				z.logf("write_zeroes %d %d (conventional)", off, n)
				z.must(z.dev.WriteZeroes(off, n), "write zeroes %d at %d", n, off)
				clear(z.model[off : off+n])
			default:
				z.logf("discard %d %d (conventional)", off, n)
				z.must(z.dev.Discard(off, n), "discard %d at %d", n, off)
				clear(z.model[off : off+n])
			}
			continue
		}
		zi := z.zoneInfo(i)
		start := int64(zi.Start)
		room := int64(zi.Start+zi.Cap) - int64(zi.WP)
		switch a := z.rng.IntN(100); {
		case a < 45 && room > 0: // write at the write pointer
			n := 512 * (1 + z.rng.Int64N(min(room, 160<<10)/512))
			if z.rng.IntN(4) == 0 {
				n = room // fill the zone
			}
			wp := int64(zi.WP)
			z.logf("write %d %d (zone %d)", wp, n, i)
			d := z.data(n)
			_, err := z.dev.WriteAt(d, wp)
			z.must(err, "write %d bytes at the write pointer %d of zone %d", n, wp, i)
			copy(z.model[wp:], d)
		case a < 70 && room >= 512: // append, one or two buffers
			total := 512 * (1 + z.rng.Int64N(min(room, int64(z.h.MaxAppendBytes))/512))
			first := 512 * z.rng.Int64N(total/512+1)
			var bufs [][]byte
			if first > 0 {
				bufs = append(bufs, z.data(first))
			}
			if total-first > 0 {
				bufs = append(bufs, z.data(total-first))
			}
			z.logf("append %d bytes in %d buffers (zone %d, wp %d)", total, len(bufs), i, zi.WP)
			pos, err := z.dev.Append(bufs, start)
			z.must(err, "append %d bytes to zone %d", total, i)
			if uint64(pos) != zi.WP {
				z.t.Fatalf("append to zone %d landed at %d, want the write pointer %d", i, pos, zi.WP)
			}
			for _, b := range bufs {
				copy(z.model[pos:], b)
				pos += int64(len(b))
			}
		case a < 80:
			z.logf("finish zone %d", i)
			z.must(z.dev.Manage(zone.OpFinish, start, int64(zi.Len)), "finish zone %d", i)
		case a < 90:
			z.logf("reset zone %d", i)
			z.must(z.dev.Manage(zone.OpReset, start, int64(zi.Len)), "reset zone %d", i)
			clear(z.model[start : start+int64(zi.Len)])
		case a < 95:
			z.logf("close zone %d", i)
			z.must(z.dev.Manage(zone.OpClose, start, int64(zi.Len)), "close zone %d", i)
		default:
			if z.explicitOpen {
				z.logf("open zone %d", i)
				z.must(z.dev.Manage(zone.OpOpen, start, int64(zi.Len)), "open zone %d", i)
			}
		}
	}
	z.close()
}

// zonedMetaClusters returns the host clusters of the write-pointer table,
// read from the zoned header extension (big-endian size at bytes 40-47
// and offset at 48-55 of its 56 bytes).
func zonedMetaClusters(t *testing.T, h *qcowHeader) []int64 {
	t.Helper()
	ext, ok := h.ext(extZoned)
	if !ok || len(ext) != 56 {
		t.Fatalf("no 56-byte zoned extension (found %v, %d bytes)", ok, len(ext))
	}
	size, off := int64(be64(ext, 40)), int64(be64(ext, 48))
	cs := int64(1) << h.clusterBits
	if size == 0 || off == 0 || off%cs != 0 {
		t.Fatalf("zoned extension: write-pointer table of %d bytes at %d", size, off)
	}
	var cl []int64
	for c := off / cs; c <= (off+size-1)/cs; c++ {
		cl = append(cl, c)
	}
	return cl
}

// TestZonedInterop: stock qemu-img refuses zqimg's zoned images naming the
// "zoned format" feature; with incompatible bit 5 cleared, it sees a plain
// qcow2 image whose only defect is the write-pointer table, reported as
// leaked clusters, and whose data is what zqimg reads.
func TestZonedInterop(t *testing.T) {
	requireQemu(t)
	type tc struct {
		name, opts, size string
		explicitOpen     bool
	}
	cases := []tc{
		{"c4k-conv2", "cluster_size=4k,zone.mode=host-managed,zone.size=1M,zone.conventional_zones=2", "16M", true},
		{"c64k-cap-open3", "zone.mode=host-managed,zone.size=4M,zone.capacity=3M,zone.conventional_zones=1,zone.max_open_zones=3,zone.max_append_bytes=128k", "100M", false},
		{"c2M-rb64-conv3", "cluster_size=2M,refcount_bits=64,zone.mode=host-managed,zone.size=4M,zone.conventional_zones=3", "64M", true},
		{"c512-rb1-200zones", "cluster_size=512,refcount_bits=1,zone.mode=host-managed,zone.size=64k,zone.conventional_zones=4,zone.max_append_bytes=16k", "12800k", true},
		{"c4k-1025zones-short-last", "cluster_size=4k,zone.mode=host-managed,zone.size=64k,zone.max_append_bytes=32k", "65576k", true},
		{"c8k-lazy", "cluster_size=8k,lazy_refcounts=on,zone.mode=host-managed,zone.size=2M,zone.conventional_zones=1", "31M", true},
	}
	for ci, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := filepath.Join(dir, "zoned.qcow2")
			mustRun(t, "", zqimgBin, "create", "-q", "-f", "qcow2", "-o", c.opts, img, c.size)
			size := int64(readHeader(t, img).size)
			model := make([]byte, size)
			z := &zonedOps{t: t, path: img, model: model, rng: rand.New(rand.NewPCG(uint64(700+ci), 0x7a6f6e65)), explicitOpen: c.explicitOpen}
			t.Cleanup(func() {
				if z.dev != nil {
					z.dev.Close()
				}
				if t.Failed() {
					t.Logf("zone operations (most recent last):\n%s", strings.Join(z.log, "\n"))
				}
			})
			z.run(160)
			if t.Failed() {
				return
			}

			// Stock qemu-img refuses the image, naming the feature from
			// the feature name table. Like qemu-img, zqimg writes that
			// table only with clusters larger than 4 KiB; without it
			// QEMU can only name the bit.
			want := "Unsupported qcow2 feature(s): zoned format"
			_, hasTable := readHeader(t, img).ext(extFeatureTable)
			if cs := readHeader(t, img).clusterBits; hasTable != (cs > 12) {
				t.Errorf("feature name table present=%v with %d-byte clusters; qemu-img writes one exactly when clusters are larger than 4 KiB", hasTable, 1<<cs)
			}
			if !hasTable {
				want = "Unsupported qcow2 feature(s): Unknown incompatible feature: 20"
			}
			for _, sub := range []string{"info", "check"} {
				if r := runQemu(t, "", "qemu-img", sub, img); r.code == 0 || !strings.Contains(r.stderr, want) {
					t.Errorf("stock qemu-img %s on a zoned image: want a failure saying %q:\n%s", sub, want, r)
				}
			}

			// zqimg reads the model back.
			var dev *zone.Device
			err := retryLocked(func() (err error) {
				dev, err = zone.Open(img, image.Options{ReadOnly: true})
				return err
			})
			if err != nil {
				t.Fatalf("zone.Open read-only: %v", err)
			}
			got := make([]byte, size)
			_, err = dev.ReadAt(got, 0)
			dev.Close()
			if err != nil {
				t.Fatal(err)
			}
			if d := firstDiff(got, model); d != "" {
				t.Fatalf("zqimg reads the zoned image differently from the model: %s", d)
			}

			// A copy with incompatible bit 5 cleared is a plain image to
			// stock qemu-img.
			plain := filepath.Join(dir, "plain.qcow2")
			b := readFile(t, img)
			if b[79]&0x20 == 0 {
				t.Fatalf("incompatible feature bit 5 is not set in byte 79 (%#02x)", b[79])
			}
			b[79] &^= 0x20
			writeFile(t, plain, b)
			h := parseQcowHeader(t, b)
			wantLeaks := zonedMetaClusters(t, h)

			r := runQemu(t, "", "qemu-img", "check", plain)
			out := r.stdout + r.stderr
			var leaked []int64
			for _, m := range leakRE.FindAllStringSubmatch(out, -1) {
				n, _ := strconv.ParseInt(m[1], 10, 64)
				if m[2] != "1" || m[3] != "0" {
					t.Errorf("leaked cluster %d with refcount=%s reference=%s; want refcount=1 reference=0", n, m[2], m[3])
				}
				leaked = append(leaked, n)
			}
			sort.Slice(leaked, func(i, j int) bool { return leaked[i] < leaked[j] })
			if fmt.Sprint(leaked) != fmt.Sprint(wantLeaks) {
				t.Errorf("qemu-img check reports leaked clusters %v; want exactly the write-pointer table's clusters %v:\n%s", leaked, wantLeaks, r)
			}
			if r.code != 3 || strings.Contains(out, "ERROR") || strings.Contains(out, "corruption") ||
				!strings.Contains(r.stdout, fmt.Sprintf("%d leaked clusters were found on the image.", len(wantLeaks))) {
				t.Errorf("qemu-img check of the copy: want exit 3 and only %d leaked clusters:\n%s", len(wantLeaks), r)
			}

			cond := map[zone.Cond]uint32{}
			if dev, err := zone.Open(img, image.Options{ReadOnly: true}); err == nil {
				cond, _ = dev.Counts()
				dev.Close()
			}
			t.Logf("%d operations; zone conditions %v; write-pointer table clusters %v", len(z.log), cond, wantLeaks)

			qemuCompareModel(t, plain, model)
		})
	}
}

// TestZonedReferenceLeaks checks this test's premise on images made by the
// reference implementation: with bit 5 cleared, stock qemu-img check
// reports exactly the write-pointer table's clusters as leaked (the
// reference's own check reports the same), and zqimg creates the same
// image byte for byte.
func TestZonedReferenceLeaks(t *testing.T) {
	requireQemu(t)
	refDir := filepath.Join("..", "..", "testdata", "reference", "create")
	for _, name := range []string{"defaults", "cluster4k", "cluster2m-rc64", "conv-cap", "small-last-zone"} {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(refDir, name+".qcow2"))
			if err != nil {
				t.Fatal(err)
			}
			b[79] &^= 0x20
			p := filepath.Join(t.TempDir(), "plain.qcow2")
			writeFile(t, p, b)
			want := zonedMetaClusters(t, parseQcowHeader(t, b))
			r := run(t, "", "qemu-img", "check", p)
			var leaked []int64
			for _, m := range leakRE.FindAllStringSubmatch(r.stdout+r.stderr, -1) {
				n, _ := strconv.ParseInt(m[1], 10, 64)
				leaked = append(leaked, n)
			}
			if r.code != 3 || fmt.Sprint(leaked) != fmt.Sprint(want) {
				t.Errorf("reference image %s: leaked %v, want %v:\n%s", name, leaked, want, r)
			}
		})
	}
}
