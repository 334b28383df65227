package check_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
	"github.com/zqimg/zqimg/pkg/zone"
)

// newImage formats an image in memory with qemu-img create's -o options
// (e.g. "cluster_size=4k,zone.mode=host-managed,zone.size=1M").
func newImage(t testing.TB, opts, size string) *imagetest.MemFile {
	t.Helper()
	return imagetest.NewMemFile(testimg.Bytes(t, size, opts))
}

// write is one guest write: p (a pattern byte) repeated n times at off.
type write struct {
	off int64
	n   int
	p   byte
}

// writeImage writes through the zoned layer (a plain image passes through).
func writeImage(t testing.TB, f image.File, ws ...write) {
	t.Helper()
	img, err := image.OpenFile(f, "mem", image.Options{Features: image.IncompatZoned})
	if err != nil {
		t.Fatal(err)
	}
	d, err := zone.New(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if _, err := d.WriteAt(bytes.Repeat([]byte{w.p}, w.n), w.off); err != nil {
			t.Fatalf("write %d bytes at 0x%x: %v", w.n, w.off, err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// readImage reads n guest bytes at off with the engine.
func readImage(t testing.TB, f image.File, off int64, n int) []byte {
	t.Helper()
	img, err := image.OpenFile(f, "mem", image.Options{ReadOnly: true, Features: image.IncompatZoned})
	if err != nil {
		t.Fatalf("opening the image to read it: %v", err)
	}
	defer img.Close()
	p := make([]byte, n)
	if _, err := img.ReadAt(p, off); err != nil {
		t.Fatalf("read %d bytes at 0x%x: %v", n, off, err)
	}
	return p
}

// raw edits the bytes of an image.
type raw struct {
	b []byte
	h *image.Header
}

func rawOf(t testing.TB, b []byte) *raw {
	t.Helper()
	h, err := image.ParseHeaderForCheck(b) // a bad snapshot table is still raw bytes to patch
	if err != nil {
		t.Fatal(err)
	}
	return &raw{b: b, h: h}
}

func (r *raw) cs() uint64            { return r.h.ClusterSize() }
func (r *raw) u64(off uint64) uint64 { return binary.BigEndian.Uint64(r.b[off:]) }
func (r *raw) put64(off, v uint64)   { binary.BigEndian.PutUint64(r.b[off:], v) }
func (r *raw) put32(off uint64, v uint32) {
	binary.BigEndian.PutUint32(r.b[off:], v)
}

func (r *raw) l1Off(i uint64) uint64 { return r.h.L1TableOffset + 8*i }
func (r *raw) l1(i uint64) uint64    { return r.u64(r.l1Off(i)) }

// l2Off returns the file offset of the L2 entry of guest cluster gc.
func (r *raw) l2Off(gc uint64) uint64 {
	n := r.h.L2Entries()
	return r.l1(gc/n)&image.L1OffsetMask + (gc%n)*(r.cs()/n)
}
func (r *raw) l2(gc uint64) uint64          { return r.u64(r.l2Off(gc)) }
func (r *raw) setL2(gc, v uint64)           { r.put64(r.l2Off(gc), v) }
func (r *raw) host(gc uint64) uint64        { return r.l2(gc) & image.L2OffsetMask }
func (r *raw) hostCluster(gc uint64) uint64 { return r.host(gc) / r.cs() }

func (r *raw) rcLoc(ci uint64) (block, idx uint64) {
	per := r.cs() * 8 >> r.h.RefcountOrder
	return r.u64(r.h.RefcountTableOffset+8*(ci/per)) & image.RefTableOffMask, ci % per
}

func (r *raw) refcount(ci uint64) uint64 {
	b, i := r.rcLoc(ci)
	return image.GetRefcount(r.b[b:b+r.cs()], i, r.h.RefcountOrder)
}

func (r *raw) setRefcount(ci, v uint64) {
	b, i := r.rcLoc(ci)
	image.SetRefcount(r.b[b:b+r.cs()], i, r.h.RefcountOrder, v)
}

// zonedExt returns the file offset of the zoned extension's data.
func (r *raw) zonedExt(t testing.TB) uint64 {
	t.Helper()
	exts, err := image.ParseExtensions(r.b[:min(r.cs(), uint64(len(r.b)))], int(r.h.HeaderLength), int(r.cs()))
	for _, e := range exts {
		if e.Magic == image.ExtZoned {
			return uint64(e.Off) + 8 // past its magic and length
		}
	}
	t.Fatalf("no zoned extension (%v)", err)
	return 0
}

func (r *raw) zoned(t testing.TB) *zone.Header {
	t.Helper()
	e := r.zonedExt(t)
	h, err := zone.ParseHeader(r.b[e : e+zone.ExtSize])
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (r *raw) setZoned(t testing.TB, h *zone.Header) {
	t.Helper()
	copy(r.b[r.zonedExt(t):], h.Marshal())
}

func (r *raw) wp(t testing.TB, i uint64) uint64 {
	return binary.LittleEndian.Uint64(r.b[r.zoned(t).MetaOffset+8*i:])
}

func (r *raw) setWP(t testing.TB, i, v uint64) {
	binary.LittleEndian.PutUint64(r.b[r.zoned(t).MetaOffset+8*i:], v)
}

// run checks a copy of b (or b itself through the returned file).
func run(t testing.TB, f image.File, mode check.Mode) (*check.Result, error) {
	t.Helper()
	return check.Check(f, check.Options{Repair: mode})
}

// mustCheck checks f and fails on an error.
func mustCheck(t testing.TB, f image.File, mode check.Mode) *check.Result {
	t.Helper()
	res, err := run(t, f, mode)
	if err != nil || res == nil {
		t.Fatalf("check (repair %v): result %v, error %v", mode, res != nil, err)
	}
	return res
}

// report formats the findings, for failure messages.
func report(r *check.Result) string {
	if r == nil {
		return "<nil>"
	}
	var b strings.Builder
	if r.Repair != nil {
		b.WriteString("repair pass:\n")
		b.WriteString(report(r.Repair))
		b.WriteString("second pass:\n")
	}
	for _, f := range r.Findings {
		rep := ""
		if f.Repaired {
			rep = " repaired"
		}
		fmt.Fprintf(&b, "  [%v %v%s] %s\n", f.Kind, f.Problem, rep, f.Msg)
	}
	b.WriteString(fmtCounts(r))
	return b.String()
}

func fmtCounts(r *check.Result) string {
	return fmt.Sprintf("  corruptions=%d leaks=%d check-errors=%d fixed=%d/%d\n",
		r.Corruptions, r.Leaks, r.CheckErrors, r.CorruptionsFixed, r.LeaksFixed)
}

// field is a location field of a check.Finding.
type field int

const (
	fOffset field = iota
	fCluster
	fGuest
	fZone
	fWP
)

func (l field) of(f check.Finding) int64 {
	return [...]int64{f.Offset, f.Cluster, f.Guest, f.Zone, f.WP}[l]
}

func (l field) String() string { return [...]string{"offset", "cluster", "guest", "zone", "wp"}[l] }

// want describes a finding a test expects: its typed problem and kind,
// whether it is a repair, and the location fields the test cares about
// (the others are not compared).
type want struct {
	p        check.Problem
	k        check.Kind
	repaired bool
	locs     map[field]int64
}

// is expects a finding of problem p and kind k, not a repair.
func is(p check.Problem, k check.Kind) want { return want{p: p, k: k} }

// fixed expects the finding to be a repair ("Repairing ...").
func (w want) fixed() want { w.repaired = true; return w }

func (w want) with(l field, v int64) want {
	locs := map[field]int64{l: v}
	for k, v := range w.locs {
		locs[k] = v
	}
	w.locs = locs
	return w
}

// Location fields the finding must have.
func (w want) at(off uint64) want   { return w.with(fOffset, int64(off)) }
func (w want) cluster(k int64) want { return w.with(fCluster, k) }
func (w want) guest(g int64) want   { return w.with(fGuest, g) }
func (w want) zone(z int64) want    { return w.with(fZone, z) }
func (w want) wp(v int64) want      { return w.with(fWP, v) }

// matches reports whether f is the finding w describes.
func (w want) matches(f check.Finding) bool {
	if f.Problem != w.p || f.Kind != w.k || f.Repaired != w.repaired {
		return false
	}
	for l, v := range w.locs {
		if l.of(f) != v {
			return false
		}
	}
	return true
}

func (w want) String() string {
	s := fmt.Sprintf("%v %v", w.k, w.p)
	if w.repaired {
		s += " (repaired)"
	}
	for l := fOffset; l <= fWP; l++ {
		if v, ok := w.locs[l]; ok {
			s += fmt.Sprintf(" %v=%#x", l, v)
		}
	}
	return s
}

// has reports whether r has the finding w describes.
func has(r *check.Result, w want) bool {
	for _, f := range r.Findings {
		if w.matches(f) {
			return true
		}
	}
	return false
}
