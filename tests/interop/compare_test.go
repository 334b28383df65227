package interop

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// zqimg compare gives qemu-img compare's message and exit status for
// identical images, images differing at random places (in data, in
// zeroes, in unallocated space, in compressed clusters), images of
// different sizes (with and without -s, equal or not in the excess),
// block status differences in strict mode, qcow2 against raw, and -q.
func TestCompareMatchesQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	imgs := plainImages()
	var paths []string
	for _, p := range imgs {
		paths = append(paths, filepath.Base(p.build(t, dir)))
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for i, p := range imgs {
		a := paths[i]
		fa := formatOf(p)
		// The raw version of the image, made by qemu-img.
		raw := p.name + ".flat.raw"
		mustRun(t, dir, "qemu-img", "convert", "-f", fa, "-O", "raw", a, raw)
		// A qcow2 copy with one difference.
		for k := 0; k < 4; k++ {
			b := fmt.Sprintf("%s.diff%d.qcow2", p.name, k)
			mustRun(t, dir, "qemu-img", "convert", "-f", fa, "-O", "qcow2", a, b)
			size := int64(len(readFile(t, filepath.Join(dir, raw))))
			off := rng.Int64N(size - 1)
			n := 1 + rng.Int64N(min(size-off, 3000))
			cmd := fmt.Sprintf("write -P 0x%02x %d %d", 0xa0+k, off, n)
			if k == 3 {
				cmd = fmt.Sprintf("write -z %d %d", off/65536*65536, min(65536, size-off/65536*65536))
			}
			mustRun(t, dir, "qemu-io", "-f", "qcow2", "-c", cmd, b)
			sameRun(t, dir, "compare", "-f", fa, "-F", "qcow2", a, b)
			sameRun(t, dir, "compare", "-f", "qcow2", "-F", fa, b, a)
			sameRun(t, dir, "compare", "-q", a, b)
			sameRun(t, dir, "compare", "-s", a, b)
			removeAll(t, filepath.Join(dir, b))
		}
		sameRun(t, dir, "compare", "-f", fa, "-F", "raw", a, raw)
		sameRun(t, dir, "compare", "-s", "-f", fa, "-F", "raw", a, raw)
		sameRun(t, dir, "compare", a, a)
		// A larger image: zeroes in the excess, then data there.
		big := p.name + ".big.qcow2"
		mustRun(t, dir, "qemu-img", "convert", "-f", fa, "-O", "qcow2", a, big)
		mustRun(t, dir, "qemu-img", "resize", "-q", "-f", "qcow2", big, "+1M")
		sameRun(t, dir, "compare", a, big)
		sameRun(t, dir, "compare", big, a)
		sameRun(t, dir, "compare", "-s", a, big)
		mustRun(t, dir, "qemu-io", "-f", "qcow2", "-c", "write -z -u 0 64k", big)
		sameRun(t, dir, "compare", "-s", a, big)
		sameRun(t, dir, "compare", a, big)
		size := int64(len(readFile(t, filepath.Join(dir, raw))))
		mustRun(t, dir, "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -P 0x5a %d 512", size+300*1024), big)
		sameRun(t, dir, "compare", a, big)
		sameRun(t, dir, "compare", big, a)
		removeAll(t, filepath.Join(dir, big), filepath.Join(dir, raw))
	}
}

// Failures: a missing file, a bad format name, a file of the wrong format,
// one file name, give qemu-img's exit status.
func TestCompareErrorsMatchQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "junk"), []byte("not an image\n"))
	a := filepath.Base(plainImages()[0].build(t, dir))
	for _, args := range [][]string{
		{"compare", a, "missing.qcow2"},
		{"compare", "missing.qcow2", a},
		{"compare", "-f", "qcow2", "junk", a},
		{"compare", "-F", "nosuchformat", a, a},
		{"compare", a},
		{"compare", "-f", "raw", a, a},
	} {
		q := runQemu(t, dir, "qemu-img", args...)
		z := zq(t, dir, args...)
		if q.code != z.code || q.stdout != z.stdout {
			t.Errorf("qemu-img and zqimg differ:\n%s\n%s", q, z)
		}
	}
}
