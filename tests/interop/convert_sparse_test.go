package interop

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestConvertSparseSizeMatchesQemu: convert -S SIZE (0: fully allocated)
// writes what qemu-img convert -S writes: raw outputs byte-identical with
// the same allocated blocks, qcow2 outputs identical after the header
// cluster (which differs only in the feature name table). Invalid sizes
// are refused by both.
func TestConvertSparseSizeMatchesQemu(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "src.qcow2", "4M")
	mustRun(t, dir, "qemu-io", "-c", "write -P 1 0 8k", "-c", "write -P 2 1M 64k", "-c", "write -z 2M 128k",
		"-c", "write -P 3 3M 512", "-c", "write -P 0 3200k 64k", "src.qcow2")
	mustRun(t, dir, "qemu-io", "-c", "write -z 1M 16k", "src.qcow2")
	for _, s := range []string{"0", "512", "4k", "64k", "1M", "16M"} {
		for _, o := range []string{"qcow2", "raw"} {
			t.Run(s+"-"+o, func(t *testing.T) {
				q, z := filepath.Join(dir, "q-"+s+"."+o), filepath.Join(dir, "z-"+s+"."+o)
				mustRun(t, dir, "qemu-img", "convert", "-S", s, "-O", o, "src.qcow2", q)
				if r := zq(t, dir, "convert", "-S", s, "-O", o, "src.qcow2", z); r.code != 0 {
					t.Fatalf("zqimg failed:\n%s", r)
				}
				qb, zb := readFile(t, q), readFile(t, z)
				if len(qb) != len(zb) {
					t.Fatalf("length: zqimg %d, qemu-img %d", len(zb), len(qb))
				}
				from := 0
				if o == "qcow2" {
					from = 65536
					mustRun(t, "", "qemu-img", "compare", q, z)
				}
				if d := firstDiff(zb[from:], qb[from:]); d != "" {
					t.Errorf("outputs differ (from byte %d): %s", from, d)
				}
				if o == "raw" && blocks(t, q) != blocks(t, z) {
					t.Errorf("allocated 512-byte blocks: zqimg %d, qemu-img %d", blocks(t, z), blocks(t, q))
				}
			})
		}
	}
	// Compressed: with -S 0 zeroes are compressed clusters too (the map
	// says data everywhere), as qemu-img writes them; else skipped.
	for _, s := range []string{"0", "4k"} {
		q, z := filepath.Join(dir, "qc-"+s+".qcow2"), filepath.Join(dir, "zc-"+s+".qcow2")
		mustRun(t, dir, "qemu-img", "convert", "-c", "-S", s, "-O", "qcow2", "src.qcow2", q)
		if r := zq(t, dir, "convert", "-c", "-S", s, "-O", "qcow2", "src.qcow2", z); r.code != 0 {
			t.Fatalf("zqimg failed:\n%s", r)
		}
		mustRun(t, "", "qemu-img", "compare", q, z)
		qm := mustRun(t, "", "qemu-img", "map", "--output=json", q).stdout
		zm := mustRun(t, "", "qemu-img", "map", "--output=json", z).stdout
		if qm != zm {
			t.Errorf("-c -S %s: map: zqimg\n%s\nqemu-img\n%s", s, zm, qm)
		}
	}
	for _, bad := range []string{"1000", "32M", "x"} {
		qr := run(t, dir, "qemu-img", "convert", "-S", bad, "-O", "raw", "src.qcow2", "bad.raw")
		zr := zq(t, dir, "convert", "-S", bad, "-O", "raw", "src.qcow2", "bad.raw")
		if qr.code == 0 || zr.code == 0 {
			t.Errorf("-S %s: qemu-img exit %d, zqimg exit %d; want both refused", bad, qr.code, zr.code)
		}
		if !bytes.Contains([]byte(zr.stderr), []byte("Invalid buffer size for sparse output specified")) {
			t.Errorf("-S %s: zqimg says %q", bad, zr.stderr)
		}
	}
}

func blocks(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Blocks
}
