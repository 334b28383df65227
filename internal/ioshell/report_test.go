package ioshell

import (
	"testing"
	"time"
)

func TestParsePattern(t *testing.T) {
	for _, c := range []struct {
		in   string
		want byte
		ok   bool
	}{
		{"0", 0, true}, {"255", 255, true}, {"0xab", 0xab, true}, {"0xBE", 0xbe, true}, {"0xb", 0xb, true},
		{"017", 15, true}, // octal, as strtol base 0
		{"256", 0, false}, {"-1", 0, false}, {"0x", 0, false}, {"12k", 0, false}, {"", 0, false},
		{"0b1", 0, false}, {"0o7", 0, false}, {"1_0", 0, false}, {"08", 0, false},
	} {
		got, ok := parsePattern(c.in)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("parsePattern(%q) = %#x, %v; want %#x, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestCvtstr(t *testing.T) {
	// qemu-io's cvtstr: three decimals, trailing ".000" dropped.
	for _, c := range []struct {
		v    float64
		want string
	}{
		{0, "0 bytes"}, {20, "20 bytes"}, {1023, "1023 bytes"}, {1024, "1 KiB"}, {1536, "1.500 KiB"},
		{65536, "64 KiB"}, {1 << 20, "1 MiB"}, {1.5 * (1 << 30), "1.500 GiB"}, {1 << 40, "1 TiB"},
	} {
		if got := cvtstr(c.v); got != c.want {
			t.Errorf("cvtstr(%v) = %q, want %q", c.v, got, c.want)
		}
	}
}

func TestTimestr(t *testing.T) {
	for _, c := range []struct {
		d       time.Duration
		verbose bool
		want    string
	}{
		{1234567 * time.Microsecond / 1000, false, "00.00 sec"},
		{250 * time.Millisecond, false, "00.25 sec"},
		{61*time.Second + 500*time.Millisecond, false, "0:01:01.50"},
		{3*time.Hour + 2*time.Minute + 3*time.Second, false, "3:02:03.00"},
		{250 * time.Millisecond, true, "0:00:00.25"},
	} {
		if got := timestr(c.d, c.verbose); got != c.want {
			t.Errorf("timestr(%v, %v) = %q, want %q", c.d, c.verbose, got, c.want)
		}
	}
}
