package golden

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// ioStep is one command of a reference io scenario: a qemu-img create or a
// qemu-io session fed stdin.
type ioStep struct {
	args  []string // zqimg arguments
	stdin string
}

// parseIOScript turns a testdata/reference/io/NAME.sh script into zqimg
// invocations: "qemu-img create ..." becomes "zqimg create ...", and
// "qemu-io FILE <<CMDS ... CMDS" becomes "zqimg io FILE" with the here
// document on standard input.
func parseIOScript(t *testing.T, path string) []ioStep {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	var steps []ioStep
	for i := 0; i < len(lines); i++ {
		f := strings.Fields(lines[i])
		switch {
		case len(f) == 0:
		case f[0] == "qemu-img" && len(f) > 2 && f[1] == "create":
			steps = append(steps, ioStep{args: f[1:]})
		case f[0] == "qemu-io" && len(f) == 3 && strings.HasPrefix(f[2], "<<"):
			end := strings.TrimPrefix(f[2], "<<")
			var in strings.Builder
			for i++; i < len(lines) && lines[i] != end; i++ {
				in.WriteString(lines[i] + "\n")
			}
			if i == len(lines) {
				t.Fatalf("%s: here document %s not terminated", path, end)
			}
			steps = append(steps, ioStep{args: []string{"io", f[1]}, stdin: in.String()})
		default:
			t.Fatalf("%s:%d: cannot translate %q", path, i+1, lines[i])
		}
	}
	return steps
}

// failedReason matches qemu-io's failure line; the reason may be zqimg's
// own words.
var failedReason = regexp.MustCompile(`^((?:zqimg> )*[a-z ]+ failed: )(.*)$`)

// compareIOStdout compares zqimg's stdout with the reference's after the
// README's substitutions; the reasons after "failed: " are logged when
// they differ.
func compareIOStdout(t *testing.T, got, want string) {
	t.Helper()
	gl := strings.Split(got, "\n")
	wl := strings.Split(want, "\n")
	for i := 0; i < max(len(gl), len(wl)); i++ {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g == w {
			continue
		}
		gm, wm := failedReason.FindStringSubmatch(g), failedReason.FindStringSubmatch(w)
		if gm != nil && wm != nil && gm[1] == wm[1] {
			t.Logf("line %d: zqimg's reason %q, the reference's %q", i+1, gm[2], wm[2])
			continue
		}
		t.Errorf("stdout line %d:\n got %q\nwant %q\n--- got:\n%s\n--- want:\n%s", i+1, g, w, got, want)
		return
	}
}

// concepts maps each reference error message to what zqimg's message must
// talk about. Every reference stderr line must match one of them.
var concepts = []struct{ ref, ours *regexp.Regexp }{
	{regexp.MustCompile(`must be equal to the zone write pointer`), regexp.MustCompile(`not at the write pointer`)},
	{regexp.MustCompile(`exceeds zone capacity`), regexp.MustCompile(`exceeds the capacity`)},
	{regexp.MustCompile(`greater than max_append_sectors`), regexp.MustCompile(`exceeds max_append_bytes`)},
	{regexp.MustCompile(`^sector offset .* is not aligned to zone size`), regexp.MustCompile(`not the start of a zone`)},
	{regexp.MustCompile(`^number of sectors .* is not aligned to zone size`), regexp.MustCompile(`not a non-zero multiple of the zone size`)},
	{regexp.MustCompile(`equal to or greater than the device capacity`), regexp.MustCompile(`beyond the end|beyond the device`)},
	{regexp.MustCompile(`not allowed for conventional zones`), regexp.MustCompile(`conventional`)},
	{regexp.MustCompile(`no more open zones available`), regexp.MustCompile(`cannot be opened: .*(max_open_zones|max_active_zones)`)},
}

var numberRE = regexp.MustCompile(`0x[0-9a-fA-F]+|[0-9]+`)

// number is a number in a message: its value and whether it was written in
// hex.
type number struct {
	v   uint64
	hex bool
}

// numbers returns the numbers in s (hex with 0x, else decimal).
func numbers(s string) []number {
	var ns []number
	for _, m := range numberRE.FindAllString(s, -1) {
		n := number{hex: strings.HasPrefix(m, "0x")}
		if n.hex {
			n.v, _ = strconv.ParseUint(m[2:], 16, 64)
		} else {
			n.v, _ = strconv.ParseUint(m, 10, 64)
		}
		ns = append(ns, n)
	}
	return ns
}

// saysNumber reports whether a message whose numbers are ours states the
// reference number n: the same value, in hex where the reference writes
// hex (zqimg writes offsets, sectors and zone geometry in hex everywhere;
// where the reference writes decimal, either will do), possibly in the
// other unit (sectors or bytes); or an end offset given as an offset plus
// a length (two different numbers of ours).
func saysNumber(ours []number, n number) bool {
	for _, m := range ours {
		if (m.hex || !n.hex) && (m.v == n.v || m.v == n.v*512 || m.v*512 == n.v) {
			return true
		}
	}
	for i, a := range ours {
		for j, b := range ours {
			if i != j && (a.v+b.v == n.v || a.v+b.v == n.v*512) {
				return true
			}
		}
	}
	return false
}

// sameMeaning reports whether zqimg's stderr line says what the reference
// line says; it returns why not.
func sameMeaning(ref, ours string) (bool, string) {
	ref = strings.TrimPrefix(ref, "qemu-io: ")
	if !strings.HasPrefix(ours, "zqimg: ") {
		return false, "not a zqimg message"
	}
	for _, c := range concepts {
		if c.ref.MatchString(ref) {
			if !c.ours.MatchString(ours) {
				return false, fmt.Sprintf("does not match %q", c.ours)
			}
			on := numbers(ours)
			for _, n := range numbers(ref) {
				if !saysNumber(on, n) {
					return false, fmt.Sprintf("does not state %d (0x%x)", n.v, n.v)
				}
			}
			return true, ""
		}
	}
	return false, "reference message not in the concepts table"
}

// compareIOStderr checks that every reference stderr line has, in order, a
// zqimg stderr line that says the same thing. zqimg may say more (it
// explains every failure).
func compareIOStderr(t *testing.T, got, want string) {
	t.Helper()
	if strings.TrimSpace(want) == "" {
		if got != "" {
			t.Errorf("the reference printed nothing on stderr; zqimg printed:\n%s", got)
		}
		return
	}
	gl := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	j := 0
	for _, w := range strings.Split(strings.TrimSuffix(want, "\n"), "\n") {
		if w == "" {
			continue
		}
		var why []string
		found := false
		for ; j < len(gl); j++ {
			ok, reason := sameMeaning(w, gl[j])
			if ok {
				found = true
				j++
				break
			}
			why = append(why, fmt.Sprintf("  %q: %s", gl[j], reason))
		}
		if !found {
			t.Errorf("no zqimg stderr line says what %q says:\n%s\n--- zqimg stderr:\n%s", w, strings.Join(why, "\n"), got)
			return
		}
	}
}

func TestIOReference(t *testing.T) {
	dir := filepath.Join(refDir(t), "io")
	scripts, err := filepath.Glob(filepath.Join(dir, "*.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if len(scripts) == 0 {
		t.Fatal("no reference io scenarios")
	}
	for _, sh := range scripts {
		name := strings.TrimSuffix(filepath.Base(sh), ".sh")
		t.Run(name, func(t *testing.T) {
			steps := parseIOScript(t, sh)
			wantOut, err := os.ReadFile(filepath.Join(dir, name+".out"))
			if err != nil {
				t.Fatal(err)
			}
			wantErr, err := os.ReadFile(filepath.Join(dir, name+".err"))
			if err != nil {
				t.Fatal(err)
			}
			t.Chdir(t.TempDir())
			var stdout, stderr strings.Builder
			code := 0
			for _, s := range steps {
				c, o, e := run(s.args, s.stdin)
				stdout.WriteString(o)
				stderr.WriteString(e)
				if s.args[0] == "create" && c != 0 {
					t.Fatalf("zqimg %s: exit %d\n%s", strings.Join(s.args, " "), c, e)
				}
				code = c
			}
			fmt.Fprintf(&stdout, "exit=%d\n", code)
			want := strings.ReplaceAll(string(wantOut), "qemu-io> ", "zqimg> ")
			// The "exit=" line compares the last session's status: 1 when
			// any of its commands failed, else 0.
			compareIOStdout(t, stdout.String(), want)
			compareIOStderr(t, stderr.String(), string(wantErr))
		})
	}
}

// TestSameMeaning checks the stderr comparison itself: it must accept
// zqimg's wording of a reference message and reject a message about other
// offsets, write pointers or limits, or about something else.
func TestSameMeaning(t *testing.T) {
	for _, c := range []struct {
		ref, ours string
		want      bool
	}{
		{"qemu-io: Offset 0x1000 of regular writes must be equal to the zone write pointer 0x0",
			"zqimg: write at offset 0x1000 is not at the write pointer 0x0 of zone 0", true},
		{"qemu-io: Offset 0x1000 of regular writes must be equal to the zone write pointer 0x0",
			"zqimg: write at offset 0x2000 is not at the write pointer 0x0 of zone 0", false},
		{"qemu-io: Offset 0x1000 of regular writes must be equal to the zone write pointer 0x0",
			"zqimg: write at offset 0x1000 is not at the write pointer 0x800 of zone 0", false},
		{"qemu-io: Offset 0x1000 of regular writes must be equal to the zone write pointer 0x0",
			"zqimg: write of 4096 bytes at offset 0x1000 exceeds the capacity of zone 0, which ends at 0x0", false},
		{"qemu-io: write exceeds zone capacity with end_offset:0x10010, end_zone: 0x10000",
			"zqimg: write of 33554432 bytes at offset 0x2000 exceeds the capacity of zone 0, which ends at 0x2000000", true},
		{"qemu-io: write exceeds zone capacity with end_offset:0x10010, end_zone: 0x10000",
			"zqimg: write of 33554432 bytes at offset 0x4000 exceeds the capacity of zone 0, which ends at 0x2000000", false},
		{"qemu-io: len 0x100 in sectors is greater than max_append_sectors 0x80",
			"zqimg: zone append of 131072 bytes (0x100 sectors) exceeds max_append_bytes 65536 (0x80 sectors)", true},
		{"qemu-io: len 0x100 in sectors is greater than max_append_sectors 0x80",
			"zqimg: zone append of 131072 bytes exceeds max_append_bytes 32768", false},
		{"qemu-io: no more open zones available",
			"zqimg: zone 3 cannot be opened: 3 zones are already active (max_active_zones 3)", true},
		{"qemu-io: no more open zones available",
			"zqimg: write at offset 0x1000 is not at the write pointer 0x0 of zone 0", false},
		{"qemu-io: something the table does not know", "zqimg: something the table does not know", false},
	} {
		if got, why := sameMeaning(c.ref, c.ours); got != c.want {
			t.Errorf("sameMeaning(%q, %q) = %v (%s), want %v", c.ref, c.ours, got, why, c.want)
		}
	}
}
