package convert_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/zqimg/zqimg/pkg/blockdev"
	"github.com/zqimg/zqimg/pkg/convert"
	"github.com/zqimg/zqimg/pkg/create"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// plainSource makes a plain 4 MiB image with some data.
func plainSource(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "plain.qcow2")
	createImage(t, path, nil, "4M")
	img, err := image.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 1 << 20, 2<<20 + 600<<10, 3<<20 + 4096} {
		if _, err := img.WriteAt(bytes.Repeat([]byte("zqimg"), 20000), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// noLeftovers fails if dir holds anything but the named files.
func noLeftovers(t *testing.T, dir string, keep ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		found := false
		for _, k := range keep {
			found = found || e.Name() == k
		}
		if !found {
			t.Errorf("unexpected file %s left in the directory", e.Name())
		}
	}
}

// A conversion stopped half-way (here by its context, after the first
// chunk) leaves neither the destination nor a temporary file, and an
// existing destination is left as it was.
func TestConvertInterruptedLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	src := openDisk(t, plainSource(t, dir), "")
	defer src.Close()
	for _, format := range []string{"qcow2", "raw"} {
		for _, existing := range []bool{false, true} {
			dst := filepath.Join(dir, "out."+format)
			if existing {
				if err := os.WriteFile(dst, []byte("old content"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			calls := 0
			_, err := convert.Convert(convert.Request{Source: src, Dest: dst, Format: format, Ctx: ctx,
				Progress: func(done, total int64) {
					calls++
					cancel()
				}})
			cancel()
			if !errors.Is(err, context.Canceled) || calls == 0 {
				t.Fatalf("%s: interrupted conversion: %v (%d progress calls)", format, err, calls)
			}
			if existing {
				b, err := os.ReadFile(dst)
				if err != nil || string(b) != "old content" {
					t.Errorf("%s: the existing destination changed: %q, %v", format, b, err)
				}
				noLeftovers(t, dir, "plain.qcow2", filepath.Base(dst))
				os.Remove(dst)
			} else {
				noLeftovers(t, dir, "plain.qcow2")
			}
		}
	}
}

// Requests that cannot be carried out fail before anything is written.
func TestConvertRefusals(t *testing.T) {
	dir := t.TempDir()
	srcPath := plainSource(t, dir)
	src := openDisk(t, srcPath, "")
	defer src.Close()
	zpath := filepath.Join(dir, "z.qcow2")
	createImage(t, zpath, []string{"zone.mode=host-managed,zone.size=1M,zone.max_active_zones=3"}, "8M")
	d, err := zone.Open(zpath, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 3; i++ {
		if _, err := d.WriteAt(make([]byte, 4096), i<<20); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	zsrc := openDisk(t, zpath, "")
	defer zsrc.Close()
	dst := filepath.Join(dir, "out.qcow2")
	for _, tc := range []struct {
		name string
		req  convert.Request
		want string
	}{
		{"unknown format", convert.Request{Source: src, Format: "vmdk"}, "Unknown file format 'vmdk'"},
		{"compressed raw", convert.Request{Source: src, Format: "raw", Compress: true}, "Compression not supported"},
		{"raw options", convert.Request{Source: src, Format: "raw", Options: []string{"cluster_size=4k"}}, "raw images take no options"},
		{"bad option", convert.Request{Source: src, Format: "qcow2", Options: []string{"cluster_size=3k"}}, "Cluster size must be a power of two"},
		{"unknown option", convert.Request{Source: src, Format: "qcow2", Options: []string{"foo=1"}}, "Invalid parameter 'foo'"},
		{"zone geometry", convert.Request{Source: zsrc, Format: "qcow2", Options: []string{"zone.size=2M"}}, "zone.size 2097152 differs from the source's 1048576"},
		{"zone capacity", convert.Request{Source: zsrc, Format: "qcow2", Options: []string{"zone.capacity=512k"}}, "zone.capacity"},
		{"active limit", convert.Request{Source: zsrc, Format: "qcow2", Options: []string{"zone.max_active_zones=2"}}, "3 zones would be partially written (active), more than zone.max_active_zones 2"},
		{"zoned v2", convert.Request{Source: zsrc, Format: "qcow2", Options: []string{"compat=0.10"}}, "requires compat=1.1"},
		{"data beyond capacity", convert.Request{Source: src, Format: "qcow2", Options: []string{"zone.mode=host-managed,zone.size=1M,zone.capacity=512k"}}, "beyond its capacity"},
		{"directory missing", convert.Request{Source: src, Format: "qcow2", Dest: filepath.Join(dir, "nodir", "x.qcow2")}, "error while converting qcow2: Could not create '" + filepath.Join(dir, "nodir", "x.qcow2") + "': No such file or directory"},
	} {
		if tc.req.Dest == "" {
			tc.req.Dest = dst
		}
		_, err := convert.Convert(tc.req)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
		noLeftovers(t, dir, "plain.qcow2", "z.qcow2")
	}
}

// A destination another process uses is not replaced.
func TestConvertDestinationInUse(t *testing.T) {
	dir := t.TempDir()
	src := openDisk(t, plainSource(t, dir), "")
	defer src.Close()
	dst := filepath.Join(dir, "busy.qcow2")
	createImage(t, dst, nil, "1M")
	before, _ := os.ReadFile(dst)
	busy, err := blockdev.Open(dst, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, err = convert.Convert(convert.Request{Source: src, Dest: dst, Format: "qcow2"})
	var le *image.LockError
	if !errors.As(err, &le) {
		t.Fatalf("converting over an image in use: %v", err)
	}
	after, _ := os.ReadFile(dst)
	if !bytes.Equal(before, after) {
		t.Error("the image in use was changed")
	}
	noLeftovers(t, dir, "plain.qcow2", "busy.qcow2")
}

// The -o options of a zoned source's conversion: the source's zoned
// configuration, overridden by the user's options, with the source's size
// whatever -o says; limits may change, geometry may not.
func TestSpec(t *testing.T) {
	dir := t.TempDir()
	zpath := filepath.Join(dir, "z.qcow2")
	createImage(t, zpath, []string{"zone.mode=host-managed,zone.size=1M,zone.capacity=768k,zone.conventional_zones=2,zone.max_open_zones=3,zone.max_active_zones=5,zone.max_append_bytes=128k"}, "16M")
	src := openDisk(t, zpath, "")
	defer src.Close()
	spec, err := convert.Spec(src, []string{"cluster_size=4k,size=1G", "zone.max_open_zones=1,zone.max_append_bytes=8k"})
	if err != nil {
		t.Fatal(err)
	}
	h := spec.Zone
	if spec.Image.Size != 16<<20 || spec.Image.ClusterBits != 12 || h == nil ||
		h.ZoneSize != 1<<20 || h.ZoneCapacity != 768<<10 || h.ConventionalZones != 2 || h.NrZones != 16 ||
		h.MaxOpenZones != 1 || h.MaxActiveZones != 5 || h.MaxAppendBytes != 8<<10 {
		t.Errorf("spec: size %d, cluster bits %d, zone %+v", spec.Image.Size, spec.Image.ClusterBits, h)
	}
	// Create's validation applies.
	if _, err := convert.Spec(src, []string{"zone.max_append_bytes=1M"}); err == nil {
		t.Error("max_append_bytes above the capacity accepted")
	}
	var ve *create.ValidationError
	if _, err := convert.Spec(src, []string{"zone.conventional_zones=3"}); !errors.As(err, &ve) || ve.Option != "zone.conventional_zones" {
		t.Errorf("changed conventional zones: %v", err)
	}
}

// Outputs get a new file's permissions (0666 less the umask), not those
// of the private temporary file they are built in.
func TestConvertOutputMode(t *testing.T) {
	dir := t.TempDir()
	src := openDisk(t, plainSource(t, dir), "")
	defer src.Close()
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	for _, format := range []string{"qcow2", "raw"} {
		dst := filepath.Join(dir, "out."+format)
		if _, err := convert.Convert(convert.Request{Source: src, Dest: dst, Format: format}); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(dst)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o644 {
			t.Errorf("%s output has mode %v, want 0644", format, st.Mode().Perm())
		}
	}
}

// faultFile fails the failAt-th change (write, truncation or sync) counted
// over every file Install writes.
type faultFile struct {
	image.File
	count  *int
	failAt int
}

var errFault = errors.New("injected fault")

func (f faultFile) change() error {
	if *f.count++; *f.count == f.failAt {
		return fmt.Errorf("%w: %w", errFault, syscall.EIO)
	}
	return nil
}

func (f faultFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.change(); err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

func (f faultFile) Truncate(n int64) error {
	if err := f.change(); err != nil {
		return err
	}
	return f.File.Truncate(n)
}

func (f faultFile) Sync() error {
	if err := f.change(); err != nil {
		return err
	}
	return f.File.Sync()
}

// TestConvertRawReplaceAtomic: a conversion to raw over an existing raw
// file that fails at any write, truncation or sync leaves the old file
// exactly as it was (and nothing else); once it succeeds the file is the
// new content, with the old file's permissions.
func TestConvertRawReplaceAtomic(t *testing.T) {
	dir := t.TempDir()
	srcPath := plainSource(t, dir)
	src := openDisk(t, srcPath, "")
	defer src.Close()
	want := readDisk(t, src)
	dst := filepath.Join(dir, "out.raw")
	old := bytes.Repeat([]byte("old raw content "), 300000) // 4.8 MB
	for failAt := 1; ; failAt++ {
		if err := os.WriteFile(dst, old, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dst, 0o640); err != nil {
			t.Fatal(err)
		}
		count := 0
		wrap := create.WithFileWrapper(func(_ create.Role, f image.File) image.File {
			return faultFile{File: f, count: &count, failAt: failAt}
		})
		_, err := convert.Convert(convert.Request{Source: src, Dest: dst, Format: "raw", InstallOptions: []create.Option{wrap}})
		got, rerr := os.ReadFile(dst)
		if rerr != nil {
			t.Fatal(rerr)
		}
		noLeftovers(t, dir, "plain.qcow2", "out.raw")
		if err != nil {
			if !errors.Is(err, errFault) {
				t.Fatalf("fault %d: %v", failAt, err)
			}
			if !bytes.Equal(got, old) {
				t.Fatalf("fault %d (%v): the old file was changed (%d bytes)", failAt, err, len(got))
			}
			continue
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("after %d changes: the new file differs from the source", count)
		}
		if st, _ := os.Stat(dst); st.Mode().Perm() != 0o640 {
			t.Fatalf("mode %v, want the old file's 0640", st.Mode())
		}
		if failAt < 3 {
			t.Fatalf("only %d faults tried", failAt)
		}
		break
	}
}

// TestConvertRawDirSyncError: a failing directory sync after the rename
// is returned, not ignored.
func TestConvertRawDirSyncError(t *testing.T) {
	dir := t.TempDir()
	src := openDisk(t, plainSource(t, dir), "")
	defer src.Close()
	dst := filepath.Join(dir, "out.raw")
	for _, existing := range []bool{true, false} {
		os.Remove(dst)
		if existing {
			if err := os.WriteFile(dst, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		synced := 0
		fail := create.WithDirSync(func(d string) error {
			synced++
			return &os.PathError{Op: "fsync", Path: d, Err: syscall.EIO}
		})
		_, err := convert.Convert(convert.Request{Source: src, Dest: dst, Format: "raw", InstallOptions: []create.Option{fail}})
		if !errors.Is(err, syscall.EIO) || synced != 1 {
			t.Fatalf("existing %v: err %v after %d directory syncs, want EIO", existing, err, synced)
		}
	}
}

// Progress counts the data to copy only, as qemu-img convert's: the total
// is the allocated bytes of the source (whole 64 KiB clusters here), not
// its virtual size, and the last call reports all of it done.
func TestConvertProgressCountsData(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "src.qcow2")
	createImage(t, path, nil, "128M")
	img, err := image.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 2 << 20, 32 << 20} {
		if _, err := img.WriteAt(bytes.Repeat([]byte{1}, 1<<20), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	src := openDisk(t, path, "")
	defer src.Close()
	var last [2]int64
	calls := 0
	_, err = convert.Convert(convert.Request{Source: src, Dest: filepath.Join(dir, "out.qcow2"), Format: "qcow2",
		Progress: func(done, total int64) { calls, last = calls+1, [2]int64{done, total} }})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(3 << 20); last != [2]int64{want, want} || calls < 3 {
		t.Errorf("last progress %v after %d calls, want [%d %d]", last, calls, want, want)
	}
}
