package progress

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func strconvParse(s string) (float64, error) { return strconv.ParseFloat(s, 64) }

func TestFrame(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		want        string
	}{
		{0, 100, "    (0.00/100%)"},
		{1234, 10000, "    (12.34/100%)"},
		{1, 3, "    (33.33/100%)"},
		{10, 10, "    (100.00/100%)"},
		{0, 0, "    (100.00/100%)"},
		{5, -1, "    (0.00/100%)"},
	} {
		if got := Frame(tc.done, tc.total); got != tc.want {
			t.Errorf("Frame(%d, %d) = %q, want %q", tc.done, tc.total, got, tc.want)
		}
	}
}

var frameRE = regexp.MustCompile(`^    \(\d{1,3}\.\d\d/100%\)$`)

// The output is qemu-img's: frames ended by carriage returns, from 0% to
// 100%, never going back, a newline at the end, each frame at least one
// percent after the previous one.
func TestBarOutput(t *testing.T) {
	var out bytes.Buffer
	const total = 1 << 20
	b := New(&out, total)
	for done := int64(0); done <= total; done += 4096 {
		b.Update(done, total)
	}
	b.Finish()
	s := out.String()
	if !strings.HasSuffix(s, "\r\n") {
		t.Fatalf("output does not end with \\r\\n: %q", s)
	}
	frames := strings.Split(strings.TrimSuffix(s, "\r\n"), "\r")
	if frames[0] != "    (0.00/100%)" || frames[len(frames)-1] != "    (100.00/100%)" {
		t.Errorf("first %q, last %q", frames[0], frames[len(frames)-1])
	}
	if len(frames) < 50 || len(frames) > 102 {
		t.Errorf("%d frames for 256 updates", len(frames))
	}
	prev := -1.0
	for _, f := range frames {
		if !frameRE.MatchString(f) {
			t.Fatalf("frame %q", f)
		}
		var pct float64
		if _, err := fmtSscan(f, &pct); err != nil {
			t.Fatal(err)
		}
		if pct < prev+1 && pct != 100 {
			t.Errorf("frame %v after %v", pct, prev)
		}
		prev = pct
	}
}

// Stopped early, the bar keeps its last frame and ends the line.
func TestBarStoppedEarly(t *testing.T) {
	var out bytes.Buffer
	b := New(&out, 1000)
	b.Update(500, 1000)
	b.Finish()
	if got := out.String(); got != "    (0.00/100%)\r    (50.00/100%)\r\n" {
		t.Errorf("output %q", got)
	}
}

func fmtSscan(frame string, pct *float64) (int, error) {
	s := strings.TrimSuffix(strings.TrimPrefix(frame, "    ("), "/100%)")
	var err error
	*pct, err = strconvParse(s)
	return 1, err
}

// Complete ends at 100% and draws that frame again after a 100% frame
// (qemu-img convert: the last data chunk, then the final print), once
// when nothing was reported.
func TestBarComplete(t *testing.T) {
	for _, c := range []struct {
		name    string
		updates [][2]int64
		want    string
	}{
		{"nothing", nil, "    (0.00/100%)\r    (100.00/100%)\r\n"},
		{"data", [][2]int64{{0, 4}, {2, 4}, {4, 4}}, "    (0.00/100%)\r    (50.00/100%)\r    (100.00/100%)\r    (100.00/100%)\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			b := New(&out, 1000)
			for _, u := range c.updates {
				b.Update(u[0], u[1])
			}
			b.Complete()
			if got := out.String(); got != c.want {
				t.Errorf("output %q, want %q", got, c.want)
			}
		})
	}
}

// Repeat draws the frame shown again: qemu-img amend -p's 0% report after
// the initial 0% (an upgrade's first step).
func TestBarRepeat(t *testing.T) {
	var out bytes.Buffer
	b := New(&out, 100)
	b.Repeat()
	b.Update(1, 2)
	b.Update(2, 2)
	b.Complete()
	want := "    (0.00/100%)\r    (0.00/100%)\r    (50.00/100%)\r    (100.00/100%)\r    (100.00/100%)\r\n"
	if got := out.String(); got != want {
		t.Errorf("output %q, want %q", got, want)
	}
}
