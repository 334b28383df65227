package ioshell

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/zqimg/zqimg/pkg/units"
)

// maxRequest is QEMU's BDRV_REQUEST_MAX_BYTES.
const maxRequest = 2147483136

var errRange = units.ErrRange

func parseOffset(s string) (int64, error) { return units.ParseOffset(s) }

// parsePattern parses a pattern byte as qemu-io does (strtol base 0:
// decimal, 0x hex or 0 octal).
func parsePattern(s string) (byte, bool) {
	lower := strings.ToLower(s)
	if strings.Contains(s, "_") || strings.HasPrefix(lower, "0b") || strings.HasPrefix(lower, "0o") {
		return 0, false // Go's base prefixes that strtol does not know
	}
	v, err := strconv.ParseInt(s, 0, 64)
	if err != nil || v < 0 || v > 255 {
		return 0, false
	}
	return byte(v), true
}

// cvtstr formats a byte count or rate as qemu-io's cvtstr ("4 KiB",
// "1.500 MiB", "100 bytes").
func cvtstr(v float64) string {
	units := []struct {
		min    float64
		suffix string
	}{{1 << 60, " EiB"}, {1 << 50, " PiB"}, {1 << 40, " TiB"}, {1 << 30, " GiB"}, {1 << 20, " MiB"}, {1 << 10, " KiB"}}
	var s, suffix string
	for _, u := range units {
		if v >= u.min {
			s, suffix = fmt.Sprintf("%.3f", v/u.min), u.suffix
			break
		}
	}
	if suffix == "" {
		s, suffix = fmt.Sprintf("%f", v), " bytes"
	}
	if i := strings.Index(s, ".000"); i >= 0 {
		return s[:i] + suffix
	}
	return s + suffix
}

func humanSize(v uint64) string { return cvtstr(float64(v)) }

// timestr formats an elapsed time as qemu-io does: "00.00 sec" below a
// second, else "h:mm:ss.ss"; verbose always uses the long form.
func timestr(d time.Duration, verbose bool) string {
	sec := int64(d / time.Second)
	frac := float64(d%time.Second) / 1e9
	if verbose || sec != 0 {
		return fmt.Sprintf("%d:%02d:%05.2f", sec/3600, sec/60%60, float64(sec%60)+frac)
	}
	return fmt.Sprintf("%05.2f sec", frac)
}

func tdiv(v float64, d time.Duration) float64 {
	s := d.Seconds()
	if s == 0 {
		return math.Inf(1)
	}
	return v / s
}

// report prints qemu-io's two statistics lines, or with terse the line
// "bytes,ops,time,bytes/sec,ops/sec".
func (s *Shell) report(op string, d time.Duration, offset, count, total int64, cnt int, terse bool) {
	if terse {
		fmt.Fprintf(s.Out, "%d,%d,%s,%.3f,%.3f\n", total, cnt, timestr(d, true), tdiv(float64(total), d), tdiv(float64(cnt), d))
		return
	}
	fmt.Fprintf(s.Out, "%s %d/%d bytes at offset %d\n", op, total, count, offset)
	fmt.Fprintf(s.Out, "%s, %d ops; %s (%s/sec and %.4f ops/sec)\n",
		cvtstr(float64(total)), cnt, timestr(d, false), cvtstr(tdiv(float64(total), d)), tdiv(float64(cnt), d))
}

// dump prints buf as qemu-io's read -v does: per 16 bytes, the offset
// (8 hex digits), the bytes in hex, and the printable ones (letters and
// digits; '.' for the others).
func (s *Shell) dump(buf []byte, offset int64) {
	const digits = "0123456789abcdef"
	line := make([]byte, 0, 80)
	for i := 0; i < len(buf); i += 16 {
		end := min(i+16, len(buf))
		line = appendHex8(line[:0], uint64(offset)+uint64(i))
		line = append(line, ':', ' ', ' ')
		for _, c := range buf[i:end] {
			line = append(line, digits[c>>4], digits[c&15], ' ')
		}
		line = append(line, ' ')
		for _, c := range buf[i:end] {
			if c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
				line = append(line, c)
			} else {
				line = append(line, '.')
			}
		}
		line = append(line, '\n')
		s.Out.Write(line)
	}
}

// appendHex8 appends v in lower-case hex, at least 8 digits (%08x).
func appendHex8(b []byte, v uint64) []byte {
	n := len(b)
	b = strconv.AppendUint(b, v, 16)
	if pad := 8 - (len(b) - n); pad > 0 {
		b = append(b, "00000000"[:pad]...)
		copy(b[n+pad:], b[n:len(b)-pad])
		copy(b[n:n+pad], "00000000")
	}
	return b
}
