package interop

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// zqimg map prints what qemu-img map prints, in both formats, for every
// image of the corpus (the human format stops at compressed clusters with
// qemu-img's error), also with a start offset and a maximum length.
func TestMapMatchesQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	for _, p := range plainImages() {
		t.Run(p.name, func(t *testing.T) {
			path := filepath.Base(p.build(t, dir))
			for _, args := range [][]string{
				{"map", path},
				{"map", "--output=json", path},
				{"map", "--output", "human", "-f", formatOf(p), path},
				{"map", "--output=json", "--start-offset=64k", "--max-length=1M", path},
				{"map", "--output=json", "--start-offset=1000000", path},
				{"map", "--output=json", "--max-length=0", path},
			} {
				q, _ := sameRun(t, dir, args...)
				if args[1] == "map" && p.compressed && q.code == 0 {
					t.Errorf("qemu-img map of %s did not stop at compressed clusters", p.name)
				}
			}
		})
	}
}

func formatOf(p plainImage) string {
	if p.fmt == "" {
		return "qcow2"
	}
	return p.fmt
}

// The JSON output is valid JSON whose entries tile the image.
func TestMapJSONTiles(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	for _, p := range plainImages() {
		path := p.build(t, dir)
		r := zq(t, dir, "map", "--output=json", path)
		var entries []struct {
			Start, Length int64
			Data, Zero    bool
			Offset        *int64
		}
		if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil {
			t.Fatalf("%s: %v\n%s", p.name, err, r.stdout)
		}
		st, _ := os.Stat(path)
		_ = st
		next := int64(0)
		for _, e := range entries {
			if e.Start != next || e.Length <= 0 {
				t.Fatalf("%s: entry %+v does not follow on %d", p.name, e, next)
			}
			next = e.Start + e.Length
		}
		if !strings.Contains(r.stdout, `"data": true`) && p.name != "empty" {
			t.Errorf("%s: no data reported", p.name)
		}
	}
}

// Error messages and exit statuses of bad invocations match qemu-img's.
func TestMapErrorsMatchQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "junk"), []byte("not an image at all, just text\n"))
	p := plainImages()[0]
	path := filepath.Base(p.build(t, dir))
	for _, args := range [][]string{
		{"map", "--output=yaml", path},
		{"map", "-f", "qcow2", "junk"},
		{"map"},
		{"map", path, path},
	} {
		q := runQemu(t, dir, "qemu-img", args...)
		z := zq(t, dir, args...)
		if q.code != z.code || q.stdout != z.stdout {
			t.Errorf("qemu-img and zqimg differ:\n%s\n%s", q, z)
		}
		if z.code != 0 && z.stderr == "" {
			t.Errorf("zqimg failed without a message:\n%s", z)
		}
	}
}
