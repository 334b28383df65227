package interop

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestRandomOpsSharedAndPreallocated drives random writes, zero writes and
// discards through zqimg over images stock qemu-img prepared in the two
// states no zqimg-made image is in:
//
//   - an internal snapshot (qemu-img snapshot -c): every L2 table and data
//     cluster is shared (refcount 2, OFLAG_COPIED clear), so zqimg must copy
//     L2 tables and clusters on write, and leave the snapshot intact;
//   - preallocation=metadata: every cluster allocated up front, reading as
//     zeroes, so writes land in preallocated clusters.
//
// qemu-img check must find the image clean, qemu-img compare must find it
// identical to the model, and, for the snapshot, applying the snapshot with
// qemu-img must bring back the data written before it.
func TestRandomOpsSharedAndPreallocated(t *testing.T) {
	requireQemu(t)
	for i, c := range []struct {
		name, opts string
		cs         int64
		snapshot   bool
		zeroAlloc  bool // qemu-io write -z over preallocated clusters (v3)
	}{
		{"snapshot-64k", "cluster_size=64k", 64 << 10, true, false},
		{"snapshot-4k-rb2", "cluster_size=4k,refcount_bits=2", 4 << 10, true, false},
		{"snapshot-512-v2", "cluster_size=512,compat=0.10", 512, true, false},
		{"snapshot-extl2", "cluster_size=64k,extended_l2=on", 64 << 10, true, false},
		{"prealloc-64k", "cluster_size=64k,preallocation=metadata", 64 << 10, false, true},
		{"prealloc-4k-v2", "cluster_size=4k,compat=0.10,preallocation=metadata", 4 << 10, false, false},
		{"prealloc-extl2", "cluster_size=32k,extended_l2=on,preallocation=metadata", 32 << 10, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := filepath.Join(dir, "img.qcow2")
			size := int64(24 << 20)
			mustRun(t, "", "qemu-img", "create", "-q", "-f", "qcow2", "-o", c.opts, img, fmt.Sprint(size))
			model := make([]byte, size)
			var before []byte
			if c.snapshot {
				// Data written by qemu-io, then the snapshot.
				for k := int64(0); k < 48; k++ {
					off := (k * 487 << 10) % (size - 64<<10)
					mustRun(t, "", "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -P 0x%x %d 40k", 0x10+k, off), img)
					for j := off; j < off+40<<10; j++ {
						model[j] = byte(0x10 + k)
					}
				}
				mustRun(t, "", "qemu-img", "snapshot", "-c", "s1", img)
				before = bytes.Clone(model)
			} else if c.zeroAlloc {
				// Zero writes that keep the allocation: half of the
				// preallocated clusters become "zero, allocated" (the zero
				// flag with a host offset).
				mustRun(t, "", "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -z 0 %d", size/2), img)
			}
			r := newRandomOps(t, img, model, c.cs, uint64(7000+i))
			r.run(160)
			if t.Failed() {
				return
			}
			r.verifyAll()
			qemuCheckClean(t, img)
			qemuCompareModel(t, img, model)
			if c.snapshot {
				// zqimg's writes must not have touched the snapshot.
				mustRun(t, "", "qemu-img", "snapshot", "-a", "s1", img)
				qemuCompareModel(t, img, before)
				qemuCheckClean(t, img)
			}
			if st, err := os.Stat(img); err == nil {
				t.Logf("file size %d", st.Size())
			}
		})
	}
}
