package interop

import (
	"strings"
	"testing"
)

// TestImageOptsMatchesQemu: info and map take --image-opts option lists
// and json: names that name a plain qcow2 image as qemu-img takes them,
// and print what qemu-img prints (the image under its file name; qemu
// iotest 279); block options zqimg has no driver for are refused.
func TestImageOptsMatchesQemu(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "4M")
	mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "t.qcow2")
	mustRun(t, dir, "qemu-io", "-c", "write -P 1 1M 64k", "t.qcow2")
	for _, args := range [][]string{
		{"info", "--image-opts", "driver=qcow2,file.driver=file,file.filename=t.qcow2"},
		{"info", "--backing-chain", "--image-opts", "driver=qcow2,file.filename=t.qcow2"},
		{"info", "json:{'driver':'qcow2','file':{'driver':'file','filename':'t.qcow2'}}"},
		{"map", "--image-opts", "driver=qcow2,file.driver=file,file.filename=t.qcow2"},
		{"map", "--output=json", "--image-opts", "driver=qcow2,file.filename=t.qcow2"},
	} {
		q := mustRun(t, dir, "qemu-img", args...)
		z := mustRun(t, dir, zqimgBin, args...)
		// disk size and the feature table aside, info is compared line
		// by line on what qemu-img prints first.
		ql, zl := strings.Split(q.stdout, "\n"), strings.Split(z.stdout, "\n")
		for i := 0; i < len(ql) && i < len(zl); i++ {
			if strings.HasPrefix(ql[i], "disk size:") || strings.HasPrefix(ql[i], "Format specific") {
				break
			}
			if ql[i] != zl[i] {
				t.Errorf("%v: line %d: zqimg %q, qemu-img %q", args, i+1, zl[i], ql[i])
				break
			}
		}
	}
	z := run(t, dir, zqimgBin, "info", "--image-opts", "driver=qcow2,file.driver=blkdebug,file.image.filename=t.qcow2,file.inject-error.0.event=l1_update")
	if z.code == 0 {
		t.Errorf("error injection accepted by info: %s", z)
	}
}

// TestFileProtocolPrefixMatchesQemu: a "file:" prefix names the file after
// it, for create and info; a relative name with a colon is shown as
// "./NAME" and its backing file resolved against it, as qemu-img does
// (qemu iotest 126).
func TestFileProtocolPrefixMatchesQemu(t *testing.T) {
	requireQemu(t)
	for _, tool := range []string{"qemu-img", zqimgBin} {
		dir := t.TempDir()
		c := mustRun(t, dir, tool, "create", "-f", "qcow2", "file:a:b.qcow2", "1M")
		if !strings.Contains(c.stdout, "Formatting 'file:a:b.qcow2'") {
			t.Errorf("%s create: %q", tool, c.stdout)
		}
		mustRun(t, dir, "qemu-img", "info", dir+"/a:b.qcow2")
		mustRun(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "1M")
		mustRun(t, dir, tool, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "file:image:top.qcow2")
		i := mustRun(t, dir, tool, "info", "file:image:top.qcow2")
		for _, want := range []string{"image: ./image:top.qcow2\n", "backing file: base.qcow2 (actual path: ./base.qcow2)\n"} {
			if !strings.Contains(i.stdout, want) {
				t.Errorf("%s info: no %q in\n%s", tool, want, i.stdout)
			}
		}
	}
}
