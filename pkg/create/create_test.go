package create

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/pkg/image"
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
		{[]string{"data_file=x"}, "1G", "Parameter 'data_file' is not supported by zqimg"},
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
	// max_open_zones alone is honoured (unlike the reference's create,
	// which drops it), with the active limit "every sequential zone" (no
	// limit in effect), which the reference's open requires.
	s, err = resolve(t, "1G", "zone.mode=host-managed,zone.size=64M,zone.max_open_zones=3")
	if err != nil || s.Zone.MaxOpenZones != 3 || s.Zone.MaxActiveZones != 16 || len(s.Warnings) != 0 {
		t.Fatalf("max_open alone: %+v %v %v", s.Zone, s.Warnings, err)
	}
	for _, c := range []struct {
		opts   []string
		option string
		values []string
	}{
		// qemu-img's words exactly (iotests 049, 079, 112): no value named.
		{[]string{"cluster_size=3000"}, "cluster_size", []string{"Cluster size must be a power of two between 512 and 2048k"}},
		{[]string{"refcount_bits=3"}, "refcount_bits", []string{"Refcount width must be a power of two and may not exceed 64 bits"}},
		{[]string{"refcount_bits=-1"}, "refcount_bits", []string{"Refcount width"}},
		{[]string{"preallocation=1234"}, "preallocation", []string{"Parameter 'preallocation' does not accept value '1234'"}},
		{[]string{"compat=0.42"}, "compat", []string{"Parameter 'version' does not accept value '0.42'"}},
		{[]string{"zone.mode=host-managed,preallocation=metadata"}, "preallocation", []string{"preallocation=metadata"}},
		{[]string{"preallocation=full,backing_file=b.qcow2,backing_fmt=qcow2"}, "preallocation", []string{"extended_l2 is on"}},
		{[]string{"compat=0.10,refcount_bits=1"}, "refcount_bits", nil},
		{[]string{"compat=0.10,lazy_refcounts=on"}, "lazy_refcounts", nil},
		{[]string{"extended_l2=on,cluster_size=8k"}, "extended_l2", []string{"16384"}},
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

// TestResolveMaxAppendBytes: zone.max_append_bytes=0 is refused; without
// the option, a capacity too small for the 64 KiB default gets the largest
// valid value (multiple of 512, plus 512 less than the capacity) with a
// warning; a capacity that admits no value is refused naming the smallest
// that works.
func TestResolveMaxAppendBytes(t *testing.T) {
	_, err := resolve(t, "1G", "zone.mode=host-managed,zone.size=64M,zone.max_append_bytes=0")
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Option != "zone.max_append_bytes" || !strings.Contains(ve.Msg, "must not be 0") {
		t.Fatalf("max_append_bytes=0: %v", err)
	}
	for _, c := range []struct {
		opts string
		want uint32
	}{
		{"zone.size=64k", 64<<10 - 1024},
		{"zone.size=2k", 1024},
		{"zone.size=64M,zone.capacity=1536", 512},
		{"zone.size=64M,zone.capacity=65k", 64 << 10},
		{"zone.size=128k", 64 << 10}, // the default fits: no warning
	} {
		s, err := resolve(t, "1M", "zone.mode=host-managed,"+c.opts)
		if err != nil {
			t.Fatalf("%s: %v", c.opts, err)
		}
		if s.Zone.MaxAppendBytes != c.want {
			t.Errorf("%s: max_append_bytes %d, want %d", c.opts, s.Zone.MaxAppendBytes, c.want)
		}
		warned := len(s.Warnings) == 1 && strings.Contains(s.Warnings[0], "zone.max_append_bytes") && strings.Contains(s.Warnings[0], fmt.Sprint(c.want))
		if wantWarn := c.want != 64<<10; warned != wantWarn {
			t.Errorf("%s: warnings %q (want one naming the value: %v)", c.opts, s.Warnings, wantWarn)
		}
		if err := s.Zone.Validate(s.Image.Size); err != nil {
			t.Errorf("%s: the zoned header is invalid: %v", c.opts, err)
		}
	}
	for _, opts := range []string{"zone.size=1k", "zone.size=512", "zone.size=64M,zone.capacity=1k"} {
		_, err := resolve(t, "1M", "zone.mode=host-managed,"+opts)
		if !errors.As(err, &ve) || ve.Option != "zone.capacity" || !strings.Contains(ve.Msg, "at least 1536") {
			t.Errorf("%s: got %v, want a refusal naming the smallest capacity 1536", opts, err)
		}
	}
	// An explicit value is never changed.
	if _, err := resolve(t, "1M", "zone.mode=host-managed,zone.size=64k,zone.max_append_bytes=64k"); !errors.As(err, &ve) || ve.Option != "zone.max_append_bytes" {
		t.Errorf("explicit max_append_bytes too large: %v", err)
	}
}

// TestResolveZoned59Bits: zone starts and write pointers must stay below
// 2^59 (bit 59 of a write-pointer entry marks a conventional zone): the
// end of the last zone, start + zone.size, may be at most 2^59 - 1.
func TestResolveZoned59Bits(t *testing.T) {
	for _, c := range []struct {
		size, opts string
		ok         bool
	}{
		{"511P", "zone.size=1P", true},                   // 511 zones end at 2^59 - 2^50
		{"512P", "zone.size=1P", false},                  // the last zone's end is 2^59
		{"513P", "zone.size=1P", false},                  // the last zone starts at 2^59
		{"768P", "zone.size=256P", false},                // starts reach 2^59
		{"4E", "zone.size=2E,cluster_size=2M", false},    // far beyond
		{"1P", "zone.size=1P", true},                     // one zone
		{"1000P", "zone.size=1G,cluster_size=2M", false}, // reached by many small zones
	} {
		opts := []string{"zone.mode=host-managed," + c.opts}
		if !strings.Contains(c.opts, "cluster_size") {
			opts = append(opts, "cluster_size=2M")
		}
		_, err := resolve(t, c.size, opts...)
		var ve *ValidationError
		switch {
		case c.ok && err != nil:
			t.Errorf("%s %s: %v", c.size, c.opts, err)
		case !c.ok && (!errors.As(err, &ve) || ve.Option != "size" && ve.Option != "zone.size"):
			t.Errorf("%s %s: got %v, want a refusal", c.size, c.opts, err)
		case !c.ok && ve.Option == "size" && !strings.Contains(ve.Msg, "2^59") && !strings.Contains(ve.Msg, "too large"):
			t.Errorf("%s %s: message %q does not name the 2^59 limit", c.size, c.opts, ve.Msg)
		}
	}
	_, err := resolve(t, "512P", "zone.mode=host-managed,zone.size=1P", "cluster_size=2M")
	if err == nil || !strings.Contains(err.Error(), "576460752303423488") || !strings.Contains(err.Error(), "size 576460752303423488") {
		t.Errorf("the message names neither the size nor the limit: %v", err)
	}
}

// TestEncryptionAES: encryption=on (legacy AES) needs encrypt.key-secret
// naming a secret of --object, and sets only the header's crypt_method;
// --object takes secrets only.
func TestEncryptionAES(t *testing.T) {
	ids, err := SecretIDs([]string{"secret,id=sec0,data=123456", "qom-type=secret,id=s1,file=/dev/null"})
	if err != nil || !slices.Equal(ids, []string{"sec0", "s1"}) {
		t.Fatalf("SecretIDs: %v, %v", ids, err)
	}
	for _, bad := range []string{"iothread,id=x", "secret,data=1"} {
		if _, err := SecretIDs([]string{bad}); err == nil {
			t.Errorf("SecretIDs(%q) accepted", bad)
		}
	}
	for _, c := range []struct {
		opts    string
		secrets []string
		want    string // error text; "" for success
	}{
		{"encryption=on", nil, "Parameter 'encrypt.key-secret' is required for cipher"},
		{"encryption=on,encrypt.key-secret=sec0", nil, "No secret with id 'sec0'"},
		{"encryption=on,encrypt.key_secret=sec0", []string{"sec0"}, ""},
		{"encryption=on,encrypt.key-secret=sec0,preallocation=metadata", []string{"sec0"}, "preallocate"},
		{"encryption=off", nil, ""},
	} {
		o, err := ParseOptions([]string{c.opts}, "1M", true)
		if err != nil {
			t.Fatalf("%s: %v", c.opts, err)
		}
		o.SetSecrets(c.secrets)
		s, err := Resolve(o)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.opts, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want %q", c.opts, err, c.want)
		case c.want == "" && strings.HasPrefix(c.opts, "encryption=on") && s.Image.CryptMethod != image.CryptAES:
			t.Errorf("%s: crypt method %d", c.opts, s.Image.CryptMethod)
		}
	}
}
