package interop

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
)

// TestSubclusterZeroWritesMatchQemu: writes of zeroes (write -z, write -z
// -u) on an image with extended L2 entries set the subcluster bitmaps as
// QEMU sets them, step by step: whole subclusters get their zero bit
// without data or allocation, a subcluster covered in part too when the
// rest of it reads as zeroes and holds no data (else it is written), a
// compressed cluster covered in part makes the whole request a write of
// zeroes, the image's end closes its last subcluster. With and without a
// backing file of 0xff; after every step the subcluster bitmaps, the
// guest content and the map are qemu-io's (qemu iotest 271).
func TestSubclusterZeroWritesMatchQemu(t *testing.T) {
	requireQemu(t)
	steps := []string{
		// unallocated clusters
		"write -z 0 192k", "write -z 224k 128k", "write -z 415k 128k",
		// allocated clusters
		"write -P 1 576k 576k", "write -z 576k 192k", "write -z 800k 128k", "write -z 991k 128k",
		// compressed clusters
		"write -c -P 2 1152k 64k", "write -c -P 3 1216k 64k", "write -c -P 4 1280k 64k",
		"write -c -P 5 1344k 64k", "write -c -P 6 1408k 64k", "write -c -P 7 1472k 64k",
		"write -c -P 8 1536k 64k", "write -c -P 9 1600k 64k", "write -c -P 10 1664k 64k",
		"write -c -P 11 1728k 64k",
		"write -z 1152k 192k", "write -z 1376k 128k", "write -z 1567k 129k", "write -z 1759k 64k",
		// inside one cluster, and up to the image's end
		"write -z 1951k 8k", "write -z 2048k 35k",
		// may unmap: half a cluster is not unmapped
		"write -P 12 0 64k", "write -z -u 0 32k", "write -z -u 0 64k", "write -P 13 3k 512",
	}
	for _, backing := range []bool{false, true} {
		t.Run(fmt.Sprintf("backing=%v", backing), func(t *testing.T) {
			t.Parallel()
			var paths [2]string
			for i := range paths {
				dir := t.TempDir()
				paths[i] = filepath.Join(dir, "t.qcow2")
				args := []string{"create", "-q", "-f", "qcow2", "-o", "extended_l2=on"}
				if backing {
					mustRun(t, dir, "qemu-img", "create", "-q", "-f", "raw", "base.raw", "2083k")
					mustRun(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0xff 0 2083k", "base.raw")
					args = append(args, "-F", "raw", "-b", "base.raw")
				}
				mustRun(t, dir, "qemu-img", append(args, "t.qcow2", "2083k")...)
			}
			for _, step := range steps {
				mustRun(t, "", "qemu-io", "-c", step, paths[0])
				zq(t, "", "io", "-c", step, paths[1])
				if qb, zb := l2Bitmaps(t, paths[0]), l2Bitmaps(t, paths[1]); qb != zb {
					t.Fatalf("after %q: subcluster bitmaps (cluster: bitmap)\nzqimg:    %s\nqemu-io:  %s", step, zb, qb)
				}
				mustRun(t, "", "qemu-img", "compare", paths[0], paths[1])
			}
			qemuCheckClean(t, paths[1])
		})
	}
}

// l2Bitmaps lists the subcluster bitmaps of the first L2 table of the
// image at path, "cluster:bitmap" for each non-zero one.
func l2Bitmaps(t *testing.T, path string) string {
	t.Helper()
	b := readFile(t, path)
	be := binary.BigEndian
	l1 := be.Uint64(b[40:])
	l2 := be.Uint64(b[l1:]) & 0x00fffffffffffe00
	if l2 == 0 {
		return ""
	}
	s := ""
	for i := uint64(0); i < 4096; i++ {
		if bm := be.Uint64(b[l2+16*i+8:]); bm != 0 {
			s += fmt.Sprintf("%d:%016x ", i, bm)
		}
	}
	return s
}
