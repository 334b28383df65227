package create

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func resolve(t *testing.T, size string, opts ...string) (*Spec, error) {
	t.Helper()
	o, err := ParseOptions(opts, size, size != "")
	if err != nil {
		return nil, err
	}
	return Resolve(o)
}

func TestFormattingLine(t *testing.T) {
	for _, c := range []struct {
		opts []string
		size string
		want string
	}{
		// qemu-img 7.2 and the reference print these lines for the same options.
		{nil, "1G", "Formatting 'f', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=1073741824 lazy_refcounts=off refcount_bits=16"},
		{[]string{"compat=0.10"}, "1G", "Formatting 'f', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=1073741824 compat=0.10 lazy_refcounts=off refcount_bits=16"},
		{[]string{"cluster_size=64k,cluster_size=128k"}, "1G", "Formatting 'f', fmt=qcow2 cluster_size=131072 extended_l2=off compression_type=zlib size=1073741824 lazy_refcounts=off refcount_bits=16"},
		{[]string{"refcount_bits=0x10", "lazy_refcounts"}, "1M", "Formatting 'f', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=1048576 lazy_refcounts=on refcount_bits=16"},
		{[]string{"size=768M", "zone.size=64M", "zone.capacity=64M", "zone.conventional_zones=0", "zone.max_append_bytes=32M", "zone.max_open_zones=6", "zone.max_active_zones=8", "zone.mode=host-managed"}, "",
			"Formatting 'f', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib zone.mode=host-managed zone.size=67108864 zone.capacity=67108864 zone.conventional_zones=0 zone.max_append_bytes=33554432 zone.max_active_zones=8 zone.max_open_zones=6 size=805306368 lazy_refcounts=off refcount_bits=16"},
		{[]string{"zone.mode=host-managed,zone.max-open-zones=2"}, "1G", "Formatting 'f', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib zone.mode=host-managed zone.max_open_zones=2 size=1073741824 lazy_refcounts=off refcount_bits=16"},
		{[]string{"compat=0.10,,x"}, "1M", "Formatting 'f', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=1048576 compat=0.10,,x lazy_refcounts=off refcount_bits=16"},
	} {
		o, err := ParseOptions(c.opts, c.size, c.size != "")
		if err != nil {
			t.Fatalf("%v: %v", c.opts, err)
		}
		if got := o.Formatting("f"); got != c.want {
			t.Errorf("%v:\n got  %s\n want %s", c.opts, got, c.want)
		}
	}
}

func TestParseOptionErrors(t *testing.T) {
	for _, c := range []struct {
		opts []string
		size string
		want string
	}{
		{[]string{"foo=bar"}, "1G", "Invalid parameter 'foo'"},
		{[]string{"backing_file=x"}, "1G", "Parameter 'backing_file' is not supported by zqimg"},
		{[]string{"lazy_refcounts=maybe"}, "1G", "Parameter 'lazy_refcounts' expects 'on' or 'off'"},
		{[]string{"refcount_bits=16k"}, "1G", "Parameter 'refcount_bits' expects a number"},
		{[]string{"cluster_size="}, "1G", "Parameter 'cluster_size' expects a non-negative number below 2^64"},
		{[]string{"size=1G"}, "2G", "The image size must be specified only once"},
		{nil, "", "Image creation needs a size parameter"},
		{[]string{""}, "1G", "Invalid option list: "},
		{[]string{",size=1G"}, "", "Invalid option list: ,size=1G"},
		{[]string{"size=1G,"}, "", "Invalid option list: size=1G,"},
		{nil, "1Q", "Invalid image size specified. You may use k, M, G, T, P or E suffixes for"},
		{nil, "9E", "Invalid image size specified. Must be between 0 and 9223372036854775807."},
	} {
		_, err := ParseOptions(c.opts, c.size, c.size != "")
		var oe *OptionError
		if !errors.As(err, &oe) || oe.Msg != c.want {
			t.Errorf("%v %q: got %v, want %q", c.opts, c.size, err, c.want)
		}
	}
	if _, err := ParseOptions([]string{"cluster_size=4k,help"}, "1G", true); !errors.Is(err, ErrHelp) {
		t.Errorf("help: %v", err)
	}
}

func TestResolveDefaultsAndRules(t *testing.T) {
	s, err := resolve(t, "1G")
	if err != nil {
		t.Fatal(err)
	}
	if s.Image.Version != 3 || s.Image.ClusterBits != 16 || s.Image.RefcountOrder != 4 || s.Zone != nil || s.Image.Size != 1<<30 {
		t.Fatalf("defaults: %+v", s.Image)
	}
	s, err = resolve(t, "64M", "zone.mode=host-managed,zone.size=1M,zone.max_active_zones=16", "cluster_size=4k")
	if err != nil {
		t.Fatal(err)
	}
	// max_open_zones defaults to max_active_zones (the reference's rule,
	// golden image cluster4k).
	if z := s.Zone; z.NrZones != 64 || z.MaxActiveZones != 16 || z.MaxOpenZones != 16 || z.MaxAppendBytes != 64<<10 || z.ZoneCapacity != 1<<20 {
		t.Fatalf("zone defaults: %+v", z)
	}
	// max_open_zones alone is honoured (unlike the reference).
	s, err = resolve(t, "1G", "zone.mode=host-managed,zone.size=64M,zone.max_open_zones=3")
	if err != nil || s.Zone.MaxOpenZones != 3 || s.Zone.MaxActiveZones != 0 || len(s.Warnings) != 0 {
		t.Fatalf("max_open alone: %+v %v %v", s.Zone, s.Warnings, err)
	}
	for _, c := range []struct {
		opts   []string
		option string
		values []string
	}{
		{[]string{"cluster_size=3000"}, "cluster_size", []string{"3000"}},
		{[]string{"refcount_bits=3"}, "refcount_bits", []string{"3"}},
		{[]string{"compat=0.10,refcount_bits=1"}, "refcount_bits", nil},
		{[]string{"compat=0.10,lazy_refcounts=on"}, "lazy_refcounts", nil},
		{[]string{"extended_l2=on,cluster_size=8k"}, "extended_l2", []string{"8192"}},
		{[]string{"compression_type=lz4"}, "compression_type", []string{"lz4"}},
		{[]string{"compat=2"}, "compat", []string{"2"}},
		{[]string{"zone.size=64M"}, "zone.size", []string{"zone.mode"}},
		{[]string{"zone.mode=host-aware"}, "zone.mode", []string{"host-aware"}},
		{[]string{"zone.mode=host-managed,compat=0.10"}, "zone.mode", []string{"compat=1.1"}},
		{[]string{"zone.mode=host-managed,zone.size=0"}, "zone.size", []string{"0"}},
		{[]string{"zone.mode=host-managed,zone.size=3M"}, "zone.size", []string{"3145728"}},
		{[]string{"zone.mode=host-managed,zone.size=64M,zone.capacity=128M"}, "zone.capacity", []string{"134217728", "67108864"}},
		{[]string{"zone.mode=host-managed,zone.size=64M,zone.capacity=1000"}, "zone.capacity", []string{"1000"}},
		{[]string{"zone.mode=host-managed,zone.size=64M,zone.conventional_zones=16"}, "zone.conventional_zones", []string{"16"}},
		{[]string{"zone.mode=host-managed,zone.size=64M,zone.max_append_bytes=64M"}, "zone.max_append_bytes", []string{"67108864"}},
		{[]string{"zone.mode=host-managed,zone.size=64M,zone.max_append_bytes=1000"}, "zone.max_append_bytes", []string{"1000"}},
	} {
		_, err := resolve(t, "1G", c.opts...)
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Option != c.option {
			t.Errorf("%v: got %v, want an error about %s", c.opts, err, c.option)
			continue
		}
		for _, v := range c.values {
			if !strings.Contains(ve.Msg, v) {
				t.Errorf("%v: message %q does not name %q", c.opts, ve.Msg, v)
			}
		}
	}
}

func TestResolveClamps(t *testing.T) {
	// 12 zones of 64M, 10 conventional: 2 sequential zones.
	s, err := resolve(t, "768M", "zone.mode=host-managed,zone.size=64M,zone.conventional_zones=10,zone.max_active_zones=2,zone.max_open_zones=4")
	if err != nil {
		t.Fatal(err)
	}
	if s.Zone.MaxOpenZones != 2 || len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "zone.max_open_zones 4") {
		t.Fatalf("clamp-open: %+v %q", s.Zone, s.Warnings)
	}
	s, err = resolve(t, "768M", "zone.mode=host-managed,zone.size=64M,zone.max_active_zones=20")
	if err != nil {
		t.Fatal(err)
	}
	if s.Zone.MaxActiveZones != 12 || s.Zone.MaxOpenZones != 12 || len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "zone.max_active_zones 20") {
		t.Fatalf("clamp-active: %+v %q", s.Zone, s.Warnings)
	}
	s, err = resolve(t, "1G", "zone.mode=host-managed,zone.size=64M,zone.max_active_zones=4,zone.max_open_zones=6")
	if err != nil || s.Zone.MaxOpenZones != 4 || len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "zone.max_active_zones 4") {
		t.Fatalf("max_open above max_active: %+v %q %v", s.Zone, s.Warnings, err)
	}
}

func TestCreateLeavesNothingOnFailure(t *testing.T) {
	dir := t.TempDir()
	s, err := resolve(t, "1M")
	if err != nil {
		t.Fatal(err)
	}
	if err := Create(filepath.Join(dir, "missing", "x.qcow2"), s); err == nil {
		t.Fatal("create in a missing directory succeeded")
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	if err := Create(sub, s); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("create over a directory: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("files left behind: %v", entries)
	}
	// A successful create replaces an existing file atomically.
	p := filepath.Join(dir, "x.qcow2")
	os.WriteFile(p, []byte("old"), 0o644)
	if err := Create(p, s); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if len(b) < 4 || string(b[:4]) != "QFI\xfb" {
		t.Fatal("existing file not replaced by an image")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("temporary files left: %v", entries)
	}
}
