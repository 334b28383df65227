package units

import (
	"errors"
	"testing"
)

// Expected values follow QEMU's qemu_strtosz (util/cutils.c) semantics as
// documented in qemu-img's manual and observed with qemu-img/qemu-io.
func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
		err  error
	}{
		{"0", 0, nil},
		{"512", 512, nil},
		{"1b", 1, nil}, {"1B", 1, nil},
		{"1k", 1024, nil}, {"1K", 1024, nil},
		{"64M", 64 << 20, nil}, {"64m", 64 << 20, nil},
		{"1G", 1 << 30, nil}, {"2T", 2 << 40, nil}, {"1P", 1 << 50, nil}, {"1E", 1 << 60, nil},
		{"1.5k", 1536, nil}, {"1.5M", 3 << 19, nil}, {"0.5k", 512, nil}, {"1.k", 1024, nil},
		{"1.0", 1, nil},     // a zero fraction needs no suffix
		{"0.0001k", 0, nil}, // 0.1024 bytes rounds down
		{"0.0005k", 1, nil}, // 0.512 bytes rounds up
		{"0x10", 16, nil}, {"0X1f", 31, nil}, {"0x4000000", 64 << 20, nil},
		{"0xab", 0xab, nil}, // 'b' is a hex digit here, not a suffix
		{" 12", 12, nil},    // leading white space
		{"18446744073709551615", 1<<64 - 1, nil},
		{"18446744073709551616", 0, ErrRange},
		{"16E", 0, ErrRange},
		{"1.5", 0, ErrSyntax}, // a fraction of a byte
		{"0x10k", 0, ErrSyntax}, {"0x1.5", 0, ErrSyntax}, {"0x", 0, ErrSyntax},
		{"", 0, ErrSyntax}, {"k", 0, ErrSyntax}, {"-1", 0, ErrSyntax}, {"1Q", 0, ErrSyntax},
		{"12kB", 0, ErrSyntax}, {"1 k", 0, ErrSyntax}, {"1e3", 0, ErrSyntax}, {"1.5e3k", 0, ErrSyntax},
	} {
		got, err := ParseSize(c.in)
		if !errors.Is(err, c.err) || (c.err == nil && got != c.want) {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, %v", c.in, got, err, c.want, c.err)
		}
	}
}

func TestParseOffset(t *testing.T) {
	if v, err := ParseOffset("8E"); err == nil || v != 0 {
		t.Errorf("8E does not fit in int64: got %d, %v", v, err)
	}
	if v, err := ParseOffset("7E"); err != nil || v != 7<<60 {
		t.Errorf("7E: %d, %v", v, err)
	}
}

// Human follows QEMU's size_to_str ("%0.3g" with binary units, switching
// unit at 1000).
func TestHuman(t *testing.T) {
	for _, c := range []struct {
		v    uint64
		want string
	}{
		{0, "0 B"}, {512, "512 B"}, {999, "999 B"}, {1000, "0.977 KiB"}, {1023, "0.999 KiB"},
		{1024, "1 KiB"}, {1536, "1.5 KiB"}, {200704, "196 KiB"}, {1 << 30, "1 GiB"},
		{768 << 20, "768 MiB"}, {1000 << 20, "0.977 GiB"}, {10 << 30, "10 GiB"}, {4 << 40, "4 TiB"},
	} {
		if got := Human(c.v); got != c.want {
			t.Errorf("Human(%d) = %q, want %q", c.v, got, c.want)
		}
	}
}
