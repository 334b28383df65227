package interop

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// The zone fault plan lives in a compatible header extension of zqimg's
// own. QEMU must ignore it and keep it when it rewrites the header: stock
// qemu-img (which cannot open zoned images) shows that on a plain image
// carrying the same extension, through the operations that rewrite the
// header (snapshot, amend) and a check.
func TestQemuKeepsTheFaultExtension(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "plain.qcow2")
	mustRun(t, "", zqimgBin, "create", "-q", p, "16M")
	img, err := image.Open(p, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	plan := &zone.FaultPlan{Generation: 7, Ranges: []zone.FaultRange{{First: 1, Count: 2, Cond: zone.CondReadOnly}}}
	data := zone.NewFaultExtension(plan)
	if err := img.AppendExtension(zone.FaultExtMagic, data); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheckClean(t, p)
	mustRun(t, "", "qemu-io", "-c", "write -P 7 0 64k", p)
	mustRun(t, "", "qemu-img", "snapshot", "-c", "s1", p)
	mustRun(t, "", "qemu-img", "amend", "-f", "qcow2", "-o", "lazy_refcounts=on", p)
	mustRun(t, "", "qemu-img", "amend", "-f", "qcow2", "-o", "lazy_refcounts=off", p)
	qemuCheckClean(t, p)
	err = retryLocked(func() (err error) {
		img, err = image.Open(p, image.Options{ReadOnly: true})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	got, ok := img.Extension(zone.FaultExtMagic)
	if !ok || !bytes.Equal(got, data) {
		b, _ := os.ReadFile(p)
		t.Fatalf("qemu-img dropped or changed the fault extension (found %v); header cluster:\n%x", ok, b[:512])
	}
	if q, err := zone.ParseFaultExtension(got); err != nil || q.Generation != 7 {
		t.Fatalf("plan after qemu-img: %+v, %v", q, err)
	}
}
