// Package golden holds the CLI golden tests of zqimg: testscript scenarios
// (*.txtar in this directory) run against the real command, and Go tests
// that compare zqimg with the reference data in testdata/reference.
//
// In the scripts, `zqimg ARGS...` runs the command (the test binary
// re-executed as zqimg). Extra commands:
//
//	exitcode N            the last zqimg exited with status N
//	cmpbin FILE1 FILE2    the files are byte-identical (! : they differ)
//	noglob PATTERN...     no file in the work directory matches a pattern
//	samesize FILE1 FILE2  the files have the same length (! : they differ)
//	echo [WORD...]        print the words (used to build collected output)
//	appendout FILE        append the last command's stdout to FILE
//	refout NAME FILE      write the reference file testdata/reference/NAME
//	                      to FILE with qemu-img/qemu-io renamed to zqimg
//	cmpnorm [-n] FILE WANT
//	                      compare FILE (or stdout, stderr) with WANT after
//	                      replacing what varies from run to run with
//	                      placeholders: the timings of qemu-io's statistics
//	                      lines ("; TIME", "BYTES,OPS,TIME") and the disk
//	                      usage of info ("disk size: SIZE", "actual-size":
//	                      SIZE); a field that is not well-formed stays as
//	                      it is, so the comparison fails. With -n, the
//	                      final newline of WANT is not part of the text
//	                      (a session's output ends with a prompt).
//	exact [-n] FILE LINE...
//	                      FILE (or stdout, stderr), normalized as by
//	                      cmpnorm, consists of exactly these lines; with
//	                      -n the last one has no newline
//	chomp FILE            remove the final newline of FILE (txtar files
//	                      always end with one)
//
// $REFDIR is the absolute path of testdata/reference.
package golden

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/zqimg/zqimg/internal/cmd/root"
)

// exitFileVar names the environment variable holding the file where the
// zqimg command of the scripts records its exit status.
const exitFileVar = "ZQIMG_TEST_EXIT_FILE"

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"zqimg": zqimgMain,
	})
}

// zqimgMain is the zqimg command of the scripts: root.Main on the
// process's arguments and streams, its status also written to the file
// named by $ZQIMG_TEST_EXIT_FILE for the exitcode command.
func zqimgMain() {
	code := root.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	if f := os.Getenv(exitFileVar); f != "" {
		if err := os.WriteFile(f, []byte(strconv.Itoa(code)), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "golden harness: %v\n", err)
			os.Exit(125)
		}
	}
	os.Exit(code)
}

// refDir returns the absolute path of testdata/reference.
func refDir(t testing.TB) string {
	t.Helper()
	d, err := filepath.Abs(filepath.Join("..", "..", "testdata", "reference"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d, "README.md")); err != nil {
		t.Fatalf("reference data not found: %v", err)
	}
	return d
}

func TestGolden(t *testing.T) {
	ref := refDir(t)
	testscript.Run(t, testscript.Params{
		Dir:                ".",
		RequireUniqueNames: true,
		// ZQIMG_UPDATE_GOLDEN=1 rewrites the files compared by "cmp stdout
		// FILE" from what the command printed (review the diff!).
		UpdateScripts: os.Getenv("ZQIMG_UPDATE_GOLDEN") == "1",
		// Report every failing assertion of a script, not only the first.
		ContinueOnError: true,
		Setup: func(e *testscript.Env) error {
			e.Setenv("REFDIR", ref)
			e.Setenv(exitFileVar, filepath.Join(e.WorkDir, ".tmp", "zqimg.exit"))
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode":  cmdExitcode,
			"cmpbin":    cmdCmpbin,
			"noglob":    cmdNoglob,
			"samesize":  cmdSamesize,
			"echo":      cmdEcho,
			"appendout": cmdAppendout,
			"refout":    cmdRefout,
			"cmpnorm":   cmdCmpnorm,
			"exact":     cmdExact,
			"chomp":     cmdChomp,
		},
	})
}

// cmdExitcode checks the exit status of the last zqimg command.
func cmdExitcode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: exitcode N")
	}
	f := ts.Getenv(exitFileVar)
	b, err := os.ReadFile(f)
	if err != nil {
		ts.Fatalf("no exit status recorded (did zqimg run to completion?): %v", err)
	}
	ts.Check(os.Remove(f))
	if got := string(b); got != args[0] {
		ts.Fatalf("zqimg exited with status %s, want %s", got, args[0])
	}
}

// cmdCmpbin compares two files byte for byte.
func cmdCmpbin(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: cmpbin file1 file2")
	}
	a, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	b, err := os.ReadFile(ts.MkAbs(args[1]))
	ts.Check(err)
	eq := bytes.Equal(a, b)
	switch {
	case neg && eq:
		ts.Fatalf("%s and %s are identical", args[0], args[1])
	case !neg && !eq:
		ts.Fatalf("%s and %s differ: %s", args[0], args[1], firstDiff(a, b))
	}
}

// firstDiff describes where two byte slices first differ.
func firstDiff(a, b []byte) string {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %d (0x%x): 0x%02x != 0x%02x", i, i, a[i], b[i])
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(a), len(b))
}

// cmdNoglob fails if a file of the work directory matches one of the
// patterns (filepath.Match syntax, relative to the current directory).
func cmdNoglob(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: noglob pattern...")
	}
	for _, p := range args {
		m, err := filepath.Glob(ts.MkAbs(p))
		ts.Check(err)
		if len(m) > 0 {
			ts.Fatalf("unexpected files matching %q: %v", p, m)
		}
	}
}

// cmdSamesize compares the lengths of two files.
func cmdSamesize(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: samesize file1 file2")
	}
	a, err := os.Stat(ts.MkAbs(args[0]))
	ts.Check(err)
	b, err := os.Stat(ts.MkAbs(args[1]))
	ts.Check(err)
	eq := a.Size() == b.Size()
	switch {
	case neg && eq:
		ts.Fatalf("%s and %s both have %d bytes", args[0], args[1], a.Size())
	case !neg && !eq:
		ts.Fatalf("%s has %d bytes, %s has %d", args[0], a.Size(), args[1], b.Size())
	}
}

// cmdEcho prints its arguments separated by spaces, like sh's echo.
func cmdEcho(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! echo")
	}
	fmt.Fprintln(ts.Stdout(), strings.Join(args, " "))
}

// cmdAppendout appends the standard output of the previous command to a file.
func cmdAppendout(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: appendout file")
	}
	out := ts.ReadFile("stdout")
	f, err := os.OpenFile(ts.MkAbs(args[0]), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	ts.Check(err)
	_, err = f.WriteString(out)
	ts.Check(err)
	ts.Check(f.Close())
}

// refToZqimg rewrites reference output as zqimg prints it: the program
// names and the qemu-io prompt become zqimg's.
func refToZqimg(s string) string {
	return strings.NewReplacer("qemu-io> ", "zqimg> ", "qemu-img", "zqimg", "qemu-io", "zqimg").Replace(s)
}

// cmdRefout writes a reference file, renamed for zqimg, into the work
// directory.
func cmdRefout(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: refout name file")
	}
	b, err := os.ReadFile(filepath.Join(ts.Getenv("REFDIR"), filepath.FromSlash(args[0])))
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(refToZqimg(string(b))), 0o644))
}

// normalizers replace the parts of zqimg's output that vary between runs.
var normalizers = []struct {
	re   *regexp.Regexp
	repl string
}{
	// read/write/discard statistics: "4 KiB, 1 ops; 00.00 sec (1.2 MiB/sec and 300.1 ops/sec)"
	{regexp.MustCompile(`(?m)^(.*, [0-9]+ ops; )(?:[0-9]{2}\.[0-9]{2} sec|[0-9]+:[0-9]{2}:[0-9]{2}\.[0-9]{2}) \((?:\+Inf|[0-9]+\.[0-9]+|[0-9]+) (?:bytes|KiB|MiB|GiB|TiB|PiB|EiB)/sec and (?:\+Inf|[0-9]+\.[0-9]{4}) ops/sec\)$`), "${1}TIME"},
	// -C: "4096,1,0:00:00.00,88142887.885,21519.260"
	{regexp.MustCompile(`(?m)^((?:zqimg> )*[0-9]+,[0-9]+,)[0-9]+:[0-9]{2}:[0-9]{2}\.[0-9]{2},(?:\+Inf|[0-9]+\.[0-9]{3}),(?:\+Inf|[0-9]+\.[0-9]{3})$`), "${1}TIME"},
	{regexp.MustCompile(`(?m)^disk size: [0-9.]+ (?:B|KiB|MiB|GiB|TiB)$`), "disk size: SIZE"},
	{regexp.MustCompile(`(?m)^(\s*"actual-size": )[0-9]+,$`), "${1}SIZE,"},
}

func normalize(s string) string {
	for _, n := range normalizers {
		s = n.re.ReplaceAllString(s, n.repl)
	}
	return s
}

// noNewline removes a leading -n flag from args and reports whether it was
// there.
func noNewline(args []string) ([]string, bool) {
	if len(args) > 0 && args[0] == "-n" {
		return args[1:], true
	}
	return args, false
}

// cmdCmpnorm compares a file (or stdout, stderr) with a wanted file after
// normalize.
func cmdCmpnorm(ts *testscript.TestScript, neg bool, args []string) {
	args, nonl := noNewline(args)
	if neg || len(args) != 2 {
		ts.Fatalf("usage: cmpnorm [-n] file want")
	}
	got := normalize(ts.ReadFile(args[0]))
	want := ts.ReadFile(args[1])
	if nonl {
		if !strings.HasSuffix(want, "\n") {
			ts.Fatalf("%s does not end with a newline", args[1])
		}
		want = strings.TrimSuffix(want, "\n")
	}
	if got != want {
		ts.Logf("--- %s (normalized)\n%s\n--- %s\n%s", args[0], got, args[1], want)
		ts.Fatalf("%s and %s differ", args[0], args[1])
	}
}

// cmdExact checks that a file (or stdout, stderr), normalized, consists of
// exactly the given lines.
func cmdExact(ts *testscript.TestScript, neg bool, args []string) {
	args, nonl := noNewline(args)
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exact [-n] file line...")
	}
	got := normalize(ts.ReadFile(args[0]))
	want := strings.Join(args[1:], "\n")
	if !nonl {
		want += "\n"
	}
	if got != want {
		ts.Fatalf("%s (normalized) is\n%q\nwant\n%q", args[0], got, want)
	}
}

// cmdChomp removes the final newline of a file.
func cmdChomp(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: chomp file")
	}
	name := ts.MkAbs(args[0])
	b, err := os.ReadFile(name)
	ts.Check(err)
	ts.Check(os.WriteFile(name, bytes.TrimSuffix(b, []byte("\n")), 0o644))
}
