// Package repo checks the promises the repository makes about itself: the
// test command CI runs and the README a new user reads first.
package repo

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func readRepoFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestFuzzTimeIsACount: scripts/test.sh gives every fuzz target a number
// of inputs, not a duration. A time budget under CPU load spends itself on
// start-up and the seed corpus, so its coverage (and, with the fuzzing
// engine's own deadlines, its outcome) depends on the machine's load.
func TestFuzzTimeIsACount(t *testing.T) {
	s := readRepoFile(t, "scripts/test.sh")
	m := regexp.MustCompile(`(?m)^fuzztime=\$\{FUZZTIME:-([^}]*)\}$`).FindStringSubmatch(s)
	if m == nil {
		t.Fatal("scripts/test.sh: no default fuzztime=${FUZZTIME:-...} line")
	}
	if !regexp.MustCompile(`^[1-9][0-9]*x$`).MatchString(m[1]) {
		t.Errorf("scripts/test.sh: default -fuzztime %q is not a count of inputs (like 2000x)", m[1])
	}
	if !strings.Contains(s, `-fuzztime="$fuzztime"`) {
		t.Error("scripts/test.sh: the fuzz loop does not pass -fuzztime=\"$fuzztime\"")
	}
}

// TestReadmeHasTheEssentials: the README is short and holds the set-up
// commands, the concepts (a zone-condition table and the units) and an
// overview of the commands; usage and performance live in docs/.
func TestReadmeHasTheEssentials(t *testing.T) {
	s := readRepoFile(t, "README.md")
	if n := strings.Count(s, "\n"); n > 250 {
		t.Errorf("README.md has %d lines; usage and performance belong in docs/", n)
	}
	for _, want := range []string{
		"## Set-up on a fresh machine",
		"go build -o zqimg ./cmd/zqimg",
		"./scripts/test.sh",
		"## Concepts",
		"| EMPTY | 1 |", "| IMP_OPEN | 2 |", "| EXP_OPEN | 3 |", "| CLOSED | 4 |",
		"| FULL | 14 |", "| NOT_WP | 0 |", "| READ ONLY | 13 |", "| OFFLINE | 15 |",
		"512-byte sectors", "bytes",
		"## Commands",
		"docs/usage.md", "docs/performance.md",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("README.md lacks %q", want)
		}
	}
	// The suite's duration is given for a loaded machine too.
	if !regexp.MustCompile(`(?i)under (cpu )?load`).MatchString(s) {
		t.Error("README.md does not give the test suite's duration under load")
	}
	for _, doc := range []string{"docs/usage.md", "docs/performance.md"} {
		if _, err := os.Stat(filepath.Join("..", "..", doc)); err != nil {
			t.Error(err)
		}
	}
}

// TestReadmeCommandsExist: every command the README's overview names is a
// zqimg command documented in docs/usage.md.
func TestReadmeCommandsExist(t *testing.T) {
	readme := readRepoFile(t, "README.md")
	usage := readRepoFile(t, "docs/usage.md")
	sec := readme[strings.Index(readme, "## Commands"):]
	sec = sec[:strings.Index(sec[3:], "\n## ")+3]
	re := regexp.MustCompile("(?m)^\\| ((?:`[a-z-]+`(?:, )?)+) \\|")
	n := 0
	for _, m := range re.FindAllStringSubmatch(sec, -1) {
		for _, c := range regexp.MustCompile("`([a-z-]+)`").FindAllStringSubmatch(m[1], -1) {
			n++
			if !strings.Contains(usage, "## "+c[1]) && !strings.Contains(usage, "`"+c[1]) {
				t.Errorf("README names command %s, docs/usage.md does not describe it", c[1])
			}
		}
	}
	if n < 10 {
		t.Errorf("README's command overview names %d commands", n)
	}
}
