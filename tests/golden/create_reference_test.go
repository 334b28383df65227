package golden

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/internal/cmd/root"
)

// refCase is one case of testdata/reference/create.
type refCase struct {
	name       string
	args       []string // zqimg arguments: "create" and the reference's options
	formatting string   // first line of NAME.out
	status     string   // the reference's exit status ("exit=N" line)
	image      string   // path of NAME.qcow2, "" when the reference made none
}

func loadCreateCases(t *testing.T) []refCase {
	t.Helper()
	dir := filepath.Join(refDir(t), "create")
	cmds, err := filepath.Glob(filepath.Join(dir, "*.cmd"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cmds) == 0 {
		t.Fatal("no reference create cases")
	}
	var cases []refCase
	for _, c := range cmds {
		name := strings.TrimSuffix(filepath.Base(c), ".cmd")
		b, err := os.ReadFile(c)
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(b))
		if len(f) < 3 || f[0] != "qemu-img" || f[1] != "create" {
			t.Fatalf("%s: unexpected command %q", c, b)
		}
		out, err := os.ReadFile(filepath.Join(dir, name+".out"))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
		rc := refCase{name: name, args: f[1:], formatting: lines[0], status: lines[len(lines)-1]}
		if !strings.HasPrefix(rc.formatting, "Formatting '") || !strings.HasPrefix(rc.status, "exit=") {
			t.Fatalf("%s.out: unexpected content %q", name, out)
		}
		if img := filepath.Join(dir, name+".qcow2"); fileExists(img) {
			rc.image = img
		}
		cases = append(cases, rc)
	}
	return cases
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// run runs zqimg in-process in the current directory.
func run(args []string, stdin string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = root.Main(args, strings.NewReader(stdin), &o, &e)
	return code, o.String(), e.String()
}

// dirNames lists the entries of the current directory.
func dirNames(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// zonedJSON is the zoned part of `zqimg info --output=json`.
type zonedJSON struct {
	ZoneSize          uint64 `json:"zone-size"`
	ZoneCapacity      uint64 `json:"zone-capacity"`
	NrZones           uint32 `json:"nr-zones"`
	ConventionalZones uint32 `json:"conventional-zones"`
	MaxOpenZones      uint32 `json:"max-open-zones"`
	MaxActiveZones    uint32 `json:"max-active-zones"`
	MaxAppendBytes    uint32 `json:"max-append-bytes"`
}

func infoZoned(t *testing.T, file string) zonedJSON {
	t.Helper()
	code, out, errOut := run([]string{"info", "--output=json", file}, "")
	if code != 0 || errOut != "" {
		t.Fatalf("zqimg info %s: exit %d, stderr %q", file, code, errOut)
	}
	var v struct {
		FormatSpecific struct {
			Data struct {
				Zoned *zonedJSON `json:"zoned"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("zqimg info %s: %v\n%s", file, err, out)
	}
	if v.FormatSpecific.Data.Zoned == nil {
		t.Fatalf("zqimg info %s: no zoned section\n%s", file, out)
	}
	return *v.FormatSpecific.Data.Zoned
}

// createErrors says, for each failing reference case, what zqimg's error
// must name: the option at fault and the values involved.
var createErrors = map[string][]string{
	"bad-append":      {"zone.max_append_bytes", "67108864", "zone.capacity"},
	"bad-cap-gt-size": {"zone.capacity", "134217728", "zone.size", "67108864"},
	"bad-conv":        {"zone.conventional_zones", "12"},
	"bad-mode":        {"zone.mode", "host-aware"},
	"bad-zonesize-0":  {"zone.size", "0"},
}

// createClamps describes the cases where the reference fails but zqimg
// clamps: what each warning must name, the values the image ends up with,
// and the -o option giving those values directly (the clamped image must
// be byte-identical to one created with it).
var createClamps = map[string]struct {
	warnings [][]string
	want     zonedJSON
	direct   string
}{
	"clamp-active": {
		warnings: [][]string{{"zone.max_active_zones", "20", "12"}},
		want:     zonedJSON{ZoneSize: 64 << 20, ZoneCapacity: 64 << 20, NrZones: 12, MaxActiveZones: 12, MaxOpenZones: 12, MaxAppendBytes: 64 << 10},
		direct:   "zone.mode=host-managed,zone.size=64M,zone.max_active_zones=12",
	},
	"clamp-open": {
		warnings: [][]string{{"zone.max_open_zones", "4", "2"}},
		want:     zonedJSON{ZoneSize: 64 << 20, ZoneCapacity: 64 << 20, NrZones: 12, ConventionalZones: 10, MaxActiveZones: 2, MaxOpenZones: 2, MaxAppendBytes: 64 << 10},
		direct:   "zone.mode=host-managed,zone.size=64M,zone.conventional_zones=10,zone.max_active_zones=2,zone.max_open_zones=2",
	},
}

// mentions reports whether s contains word as a whole word.
func mentions(s, word string) bool {
	return regexp.MustCompile(`(^|[^0-9A-Za-z_.])` + regexp.QuoteMeta(word) + `($|[^0-9A-Za-z_])`).MatchString(s)
}

func TestCreateReference(t *testing.T) {
	cases := loadCreateCases(t)
	seen := map[string]bool{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Chdir(t.TempDir())
			file := c.args[len(c.args)-1]
			code, out, errOut := run(c.args, "")
			if out != c.formatting+"\n" {
				t.Errorf("stdout:\n got %q\nwant %q", out, c.formatting+"\n")
			}
			switch {
			case c.image != "":
				seen[c.name] = true
				if c.status != "exit=0" {
					t.Fatalf("reference %s made an image but says %s", c.name, c.status)
				}
				if code != 0 || errOut != "" {
					t.Fatalf("exit %d, stderr %q; want 0 and nothing", code, errOut)
				}
				got, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				want, err := os.ReadFile(c.image)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s is not byte-identical to the reference: %s", file, firstDiff(got, want))
				}
				if names := dirNames(t); !slices.Equal(names, []string{file}) {
					t.Errorf("directory holds %q, want only %s", names, file)
				}
			case createErrors[c.name] != nil:
				seen[c.name] = true
				if code != 1 {
					t.Errorf("exit status %d, want 1", code)
				}
				lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
				prefix := "zqimg: " + file + ": "
				if len(lines) != 1 || !strings.HasPrefix(lines[0], prefix) {
					t.Errorf("stderr %q: want one line starting %q", errOut, prefix)
				}
				for _, w := range createErrors[c.name] {
					if !mentions(strings.TrimPrefix(errOut, prefix), w) {
						t.Errorf("error %q does not name %q", errOut, w)
					}
				}
				if names := dirNames(t); len(names) != 0 {
					t.Errorf("failed create left %q behind", names)
				}
			case createClamps[c.name].direct != "":
				seen[c.name] = true
				cl := createClamps[c.name]
				if code != 0 {
					t.Fatalf("exit status %d (stderr %q), want 0: zqimg clamps", code, errOut)
				}
				lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
				if len(lines) != len(cl.warnings) {
					t.Fatalf("stderr %q: want %d warning line(s)", errOut, len(cl.warnings))
				}
				for i, words := range cl.warnings {
					if !strings.HasPrefix(lines[i], "zqimg: warning: ") {
						t.Errorf("stderr line %q is not a warning", lines[i])
					}
					for _, w := range words {
						if !mentions(lines[i], w) {
							t.Errorf("warning %q does not name %q", lines[i], w)
						}
					}
				}
				if got := infoZoned(t, file); got != cl.want {
					t.Errorf("zoned configuration after clamping:\n got %+v\nwant %+v", got, cl.want)
				}
				size := ""
				for i, a := range c.args {
					if a == "-o" && strings.HasPrefix(c.args[i+1], "size=") {
						size = c.args[i+1]
					}
				}
				if code, _, errOut := run([]string{"create", "-q", "-o", size, "-o", cl.direct, "direct.qcow2"}, ""); code != 0 {
					t.Fatalf("create with %s: exit %d, %s", cl.direct, code, errOut)
				}
				a, _ := os.ReadFile(file)
				b, _ := os.ReadFile("direct.qcow2")
				if !bytes.Equal(a, b) {
					t.Errorf("clamped image differs from one created with %s: %s", cl.direct, firstDiff(a, b))
				}
			default:
				t.Fatalf("reference case %s (%s) is not covered by this test", c.name, c.status)
			}
		})
	}
	for name := range createErrors {
		if !seen[name] {
			t.Errorf("expected reference case %s was not found", name)
		}
	}
	for name := range createClamps {
		if !seen[name] {
			t.Errorf("expected reference case %s was not found", name)
		}
	}
}
