// Package units parses and formats byte counts the way QEMU does: sizes
// with k, M, G, T, P, E suffixes (base 1024) as in qemu_strtosz, and human
// sizes as in size_to_str.
package units

import (
	"errors"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// Errors returned by ParseSize.
var (
	ErrSyntax = errors.New("non-numeric argument, or extraneous/unrecognized suffix")
	ErrRange  = errors.New("argument too large")
)

func suffixMul(c byte) uint64 {
	switch c {
	case 'B', 'b':
		return 1
	case 'K', 'k':
		return 1 << 10
	case 'M', 'm':
		return 1 << 20
	case 'G', 'g':
		return 1 << 30
	case 'T', 't':
		return 1 << 40
	case 'P', 'p':
		return 1 << 50
	case 'E', 'e':
		return 1 << 60
	}
	return 0
}

// ParseSize parses s as qemu_strtosz does: a decimal number with an
// optional fraction and an optional suffix B, K, M, G, T, P or E (either
// case, powers of 1024; a fraction needs a suffix other than B), or a hex
// number 0x... with neither fraction nor suffix.
func ParseSize(s string) (uint64, error) {
	p := strings.TrimLeft(s, " \t\n\v\f\r")
	i := 0
	for i < len(p) && p[i] >= '0' && p[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, ErrSyntax
	}
	val, err := strconv.ParseUint(p[:i], 10, 64)
	if err != nil {
		return 0, ErrRange
	}
	rest := p[i:]
	if val == 0 && len(rest) > 0 && (rest[0] == 'x' || rest[0] == 'X') && i == 1 {
		j := 1
		for j < len(rest) && isHex(rest[j]) {
			j++
		}
		if j == 1 {
			return 0, ErrSyntax
		}
		v, err := strconv.ParseUint(rest[1:j], 16, 64)
		if err != nil {
			return 0, ErrRange
		}
		if j != len(rest) {
			return 0, ErrSyntax
		}
		return v, nil
	}
	var frac float64
	if len(rest) > 0 && rest[0] == '.' {
		j := 1
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if j > 1 {
			f, err := strconv.ParseFloat("0"+rest[:j], 64)
			if err != nil {
				return 0, ErrSyntax
			}
			frac = f
		}
		rest = rest[j:]
	}
	mul := uint64(1)
	if len(rest) > 0 {
		mul = suffixMul(rest[0])
		if mul == 0 {
			return 0, ErrSyntax
		}
		rest = rest[1:]
	}
	if rest != "" {
		return 0, ErrSyntax
	}
	valf := uint64(frac * 0x1p64)
	if frac >= 1 {
		valf = math.MaxUint64
	}
	if mul == 1 {
		if valf != 0 {
			return 0, ErrSyntax
		}
		return val, nil
	}
	hi, lo := bits.Mul64(val, mul)
	fhi, flo := bits.Mul64(valf, mul)
	var c uint64
	lo, c = bits.Add64(lo, fhi, 0)
	hi += c
	lo, c = bits.Add64(lo, flo>>63, 0) // round 0.5 up
	hi += c
	if hi != 0 {
		return 0, ErrRange
	}
	return lo, nil
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// ParseOffset parses an offset or length as qemu-io's cvtnum: a size that
// must also fit in an int64.
func ParseOffset(s string) (int64, error) {
	v, err := ParseSize(s)
	if err != nil {
		return 0, err
	}
	if v > math.MaxInt64 {
		return 0, ErrRange
	}
	return int64(v), nil
}

// Human formats a byte count as QEMU's size_to_str: three significant
// digits and a binary unit, switching unit at 1000 ("196 KiB", "1 GiB").
func Human(v uint64) string {
	suffixes := []string{"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	_, e := math.Frexp(float64(v) / (1000.0 / 1024.0))
	i := (e - 1) / 10
	if i < 0 {
		i = 0
	}
	if i >= len(suffixes) {
		i = len(suffixes) - 1
	}
	div := float64(uint64(1) << (10 * i))
	return formatG3(float64(v)/div) + " " + suffixes[i] + "B"
}

// formatG3 formats like C's "%0.3g".
func formatG3(f float64) string {
	return strconv.FormatFloat(f, 'g', 3, 64)
}
