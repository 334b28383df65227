package image_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/image/imagetest"
)

type backingRef struct{ name, format string }

// setBackingCases are header switches whose crash safety is tested: both
// headers in the first sector, and headers whose feature name table
// reaches into the second sector, with the backing file added, renamed,
// re-formatted and removed, and names long enough to cross sectors.
func setBackingCases() []struct {
	name  string
	opts  []string
	from  backingRef
	to    backingRef
	extra bool // add an unknown compatible extension (kept in place)
} {
	long := strings.Repeat("d/", 150) + "base.qcow2"
	type c = struct {
		name  string
		opts  []string
		from  backingRef
		to    backingRef
		extra bool
	}
	var cs []c
	for _, o := range []struct {
		name string
		opts []string
	}{
		{"64k", nil},
		{"4k", []string{"cluster_size=4k"}},
		{"512", []string{"cluster_size=512"}},
		{"v2", []string{"compat=0.10"}},
		{"8k-extl2", []string{"cluster_size=16k", "extended_l2=on"}},
	} {
		for _, sw := range []struct {
			name     string
			from, to backingRef
		}{
			{"rename", backingRef{"a.qcow2", "qcow2"}, backingRef{"other-base.qcow2", "qcow2"}},
			{"reformat", backingRef{"a.qcow2", "qcow2"}, backingRef{"a.raw", "raw"}},
			{"add", backingRef{}, backingRef{"new.qcow2", "qcow2"}},
			{"remove", backingRef{"a.qcow2", "qcow2"}, backingRef{}},
			{"drop-format", backingRef{"a.qcow2", "qcow2"}, backingRef{"a.qcow2", ""}},
			{"long", backingRef{"a.qcow2", "qcow2"}, backingRef{long, "qcow2"}},
			{"from-long", backingRef{long, "qcow2"}, backingRef{"b.qcow2", "qcow2"}},
		} {
			if o.name == "512" && (sw.name == "long" || sw.name == "from-long") {
				continue // a 300-byte name does not fit a 512-byte header cluster
			}
			cs = append(cs, c{name: o.name + "-" + sw.name, opts: o.opts, from: sw.from, to: sw.to})
		}
	}
	cs = append(cs, c{name: "64k-unknown-ext", to: backingRef{"bb.qcow2", "qcow2"}, extra: true},
		c{name: "4k-unknown-ext", opts: []string{"cluster_size=4k"}, to: backingRef{"bb.qcow2", "qcow2"}, extra: true})
	return cs
}

func overlayBytes(t *testing.T, opts []string, b backingRef, extra bool) []byte {
	t.Helper()
	if b.name != "" {
		opts = append(append([]string(nil), opts...), "backing_file="+b.name)
		if b.format != "" {
			opts = append(opts, "backing_fmt="+b.format)
		}
	}
	raw := testimg.Bytes(t, "4M", opts...)
	f := imagetest.NewMemFile(raw)
	img, err := image.OpenFile(f, "mem.qcow2", image.Options{NoLock: true, NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{0x5a}, 70000), 4096); err != nil {
		t.Fatal(err)
	}
	if extra {
		if err := img.AppendExtension(0x12345678, []byte("kept")); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Bytes()
}

// headerView is what a header says: the backing file and format and the
// extensions other than the backing format and the feature name table.
func headerView(t *testing.T, where string, b []byte) (backingRef, string) {
	t.Helper()
	img, err := image.OpenFile(imagetest.NewMemFile(b), "mem.qcow2", image.Options{ReadOnly: true, NoLock: true, NoBacking: true})
	if err != nil {
		t.Fatalf("%s: the image does not open: %v", where, err)
	}
	defer img.Close()
	name, format := img.BackingFile()
	var exts []string
	for _, e := range img.Extensions() {
		if e.Magic != image.ExtBackingFormat && e.Magic != image.ExtFeatureTable {
			exts = append(exts, fmt.Sprintf("%08x:%x", e.Magic, e.Data))
		}
	}
	data := make([]byte, 80000)
	if _, err := img.ReadAt(data, 0); err != nil {
		t.Fatalf("%s: read: %v", where, err)
	}
	if !bytes.Equal(data[4096:74096], bytes.Repeat([]byte{0x5a}, 70000)) {
		t.Fatalf("%s: the data changed", where)
	}
	return backingRef{name, format}, strings.Join(exts, " ")
}

// TestSetBackingCrash cuts the power at every write and sync of
// SetBacking and tears the unsynced writes in random ways: the crashed
// image always opens, keeps its data and other extensions, checks clean,
// and names the old backing file (and format) or the new one. Without a
// crash the header cluster is the canonical one: extensions, end marker,
// the name right after it, zeroes.
func TestSetBackingCrash(t *testing.T) {
	for _, c := range setBackingCases() {
		t.Run(c.name, func(t *testing.T) {
			base := overlayBytes(t, c.opts, c.from, c.extra)
			_, exts0 := headerView(t, "base", base)
			want := c.to
			if want.name == "" {
				want.format = ""
			}
			rng := rand.New(rand.NewSource(int64(len(c.name))))
			for cut := 0; ; cut++ {
				f := imagetest.NewFaultFile(base)
				img, err := image.OpenFile(f, "mem.qcow2", image.Options{NoLock: true, NoBacking: true})
				if err != nil {
					t.Fatal(err)
				}
				f.PowerFailAfter(f.Ops() + cut)
				err = img.SetBacking(c.to.name, c.to.format)
				if !f.PowerLost() {
					if err != nil {
						t.Fatalf("SetBacking: %v", err)
					}
					if err := img.Close(); err != nil {
						t.Fatal(err)
					}
					b := f.Current()
					got, exts := headerView(t, "final", b)
					if got != want || exts != exts0 {
						t.Fatalf("final: backing %+v exts %s, want %+v %s", got, exts, want, exts0)
					}
					checkCanonicalHeader(t, b)
					if cut < 2 && !(c.from == c.to) {
						t.Fatalf("test premise: SetBacking made %d writes and syncs", cut)
					}
					return
				}
				img.Close()
				for k := 0; k < 8; k++ {
					b := f.Crash(rng)
					where := fmt.Sprintf("cut %d, crash %d", cut, k)
					got, exts := headerView(t, where, b)
					if got != c.from && got != want {
						t.Fatalf("%s: backing %+v, want %+v or %+v", where, got, c.from, want)
					}
					if exts != exts0 {
						t.Fatalf("%s: extensions %s, want %s", where, exts, exts0)
					}
					mustClean(t, where, imagetest.NewMemFile(b))
				}
			}
		})
	}
}

// checkCanonicalHeader checks that the backing file name follows the end
// marker directly and that the rest of the header cluster is zero.
func checkCanonicalHeader(t *testing.T, b []byte) {
	t.Helper()
	h, err := image.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	cs := int(h.ClusterSize())
	off := int(h.HeaderLength)
	for {
		magic, n := binary.BigEndian.Uint32(b[off:]), int(binary.BigEndian.Uint32(b[off+4:]))
		off += 8
		if magic == 0 {
			break
		}
		off += (n + 7) &^ 7
	}
	if h.BackingFileOffset != 0 {
		if int(h.BackingFileOffset) != off {
			t.Fatalf("backing file name at %d, the extensions end at %d", h.BackingFileOffset, off)
		}
		off += int(h.BackingFileSize)
	}
	if i := bytes.IndexFunc(b[off:cs], func(r rune) bool { return r != 0 }); i >= 0 {
		t.Fatalf("header cluster has garbage at %d after its end %d", off+i, off)
	}
}
