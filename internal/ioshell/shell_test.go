package ioshell

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zqimg/zqimg/internal/testimg"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// newDevice creates an image with the given -o options and opens it.
func newDevice(t *testing.T, size string, o image.Options, opts ...string) *zone.Device {
	t.Helper()
	p := filepath.Join(t.TempDir(), "t.qcow2")
	testimg.File(t, p, size, opts...)
	d, err := zone.Open(p, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestGetoptLong(t *testing.T) {
	long := []string{"output:", "force-share"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--output=json", "0"}, "output=json operands=[0]"},
		{[]string{"--output", "json", "0"}, "output=json operands=[0]"},
		{[]string{"0", "--force-share"}, "force-share= operands=[0]"},
		{[]string{"--force-share=x"}, "error: option '--force-share' doesn't allow an argument"},
		{[]string{"--output"}, "error: option '--output' requires an argument"},
		{[]string{"--bogus"}, "error: unrecognized option '--bogus'"},
		{[]string{"--", "--output=x"}, "operands=[--output=x]"},
	} {
		p, err := getopt(c.args, "", long)
		var got string
		if err != nil {
			got = "error: " + err.Error()
		} else {
			for k, v := range p.long {
				got += k + "=" + v + " "
			}
			got += fmt.Sprint("operands=", p.operands)
		}
		if got != c.want {
			t.Errorf("%q: got %q, want %q", c.args, got, c.want)
		}
	}
}

// TestParseSingleShot: the image file is the first operand; -U and -t (and
// their long forms) are taken besides the command's options; argument
// counts are checked before anything is opened, with qemu-img's wording.
func TestParseSingleShot(t *testing.T) {
	for _, c := range []struct {
		name string
		args string
		want string
	}{
		{"read", "-Q nosuch 0 4k", "error: read: invalid option -- 'Q'"},
		{"read", "img 0 4k 5", "error: Unexpected argument: 5"},
		{"write", "img 0 4k extra", "error: Unexpected argument: extra"},
		{"discard", "img 0 4k 1 2", "error: Unexpected argument: 1"},
		{"read", "", "error: Expecting image file name"},
		{"read", "-P 0x5a", "error: Expecting image file name"},
		{"read", "img 0", "error: Not enough arguments"},
		{"zrp", "img", "error: Not enough arguments"},
		{"zrp", "img 0", "file=img U=false t= ops=[0]"},
		{"zrp", "img 0 1 2", "error: Unexpected argument: 2"},
		{"zo", "img 0 1M 1M", "error: Unexpected argument: 1M"},
		{"zap", "-p img 0 4k 4k 4k", "file=img U=false t= ops=[0 4k 4k 4k]"},
		{"zap", "-p -- img 1M 4k", "file=img U=false t= ops=[1M 4k]"},
		{"read", "-U img 0 4k", "file=img U=true t= ops=[0 4k]"},
		{"read", "img --force-share 0 4k", "file=img U=true t= ops=[0 4k]"},
		{"write", "-t none img 0 4k", "file=img U=false t=none ops=[0 4k]"},
		{"write", "-tunsafe img 0 4k", "file=img U=false t=unsafe ops=[0 4k]"},
		{"write", "--cache=directsync img 0 4k", "file=img U=false t=directsync ops=[0 4k]"},
		{"write", "--cache writeback img 0 4k", "file=img U=false t=writeback ops=[0 4k]"},
		{"write", "-t none img 0 4k --cache=unsafe", "file=img U=false t=unsafe ops=[0 4k]"},
		{"write", "--cache=unsafe -t none img 0 4k", "file=img U=false t=none ops=[0 4k]"},
		{"write", "-n -z img 0 4k", "file=img U=false t= ops=[0 4k]"}, // write's own -n
		{"read", "-t", "error: read: option requires an argument -- 't'"},
		{"write", "img -- -1 4k", "file=img U=false t= ops=[-1 4k]"},
	} {
		ss, err := ParseSingleShot(c.name, strings.Fields(c.args))
		var got string
		if err != nil {
			got = "error: " + err.Error()
		} else {
			got = fmt.Sprintf("file=%s U=%v t=%s ops=%v", ss.File, ss.ForceShare, ss.Cache, ss.Call.args.operands)
		}
		if got != c.want {
			t.Errorf("%s %s: got %q, want %q", c.name, c.args, got, c.want)
		}
	}
}

// countingWriter counts the writes that reach it.
type countingWriter struct {
	mu sync.Mutex
	n  int
	b  bytes.Buffer
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	return w.b.Write(p)
}

// TestLoopFlushesOnlyBeforeWaiting: a piped script is not flushed command
// by command: its output reaches the writer in a few large writes.
func TestLoopFlushesOnlyBeforeWaiting(t *testing.T) {
	d := newDevice(t, "1M", image.Options{})
	var out countingWriter
	sh := New(d, &out, io.Discard)
	script := strings.Repeat("length\nwrite -q 0 512\n", 1000)
	sh.Loop(strings.NewReader(script))
	if sh.Failed() {
		t.Fatal("a command failed")
	}
	if got := strings.Count(out.b.String(), "1 MiB\n"); got != 1000 {
		t.Fatalf("%d outputs of length, want 1000", got)
	}
	if out.n > 5 {
		t.Errorf("2000 piped commands reached the output in %d writes; want a few", out.n)
	}
}

// TestLoopFlushesBeforeWaiting: a program driving a session sees each
// command's output before it sends the next command.
func TestLoopFlushesBeforeWaiting(t *testing.T) {
	d := newDevice(t, "1M", image.Options{})
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	sh := New(d, outW, io.Discard)
	done := make(chan struct{})
	go func() {
		sh.Loop(inR)
		outW.Close()
		close(done)
	}()
	lines := make(chan string, 100)
	go func() {
		r := bufio.NewReader(outR)
		for {
			s, err := r.ReadString('\n')
			if s != "" {
				lines <- s
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	expect := func(re string) {
		t.Helper()
		select {
		case l := <-lines:
			if !regexp.MustCompile(re).MatchString(l) {
				t.Fatalf("got %q, want %s", l, re)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no output matching %s after the command was sent", re)
		}
	}
	for i := range 20 {
		fmt.Fprintf(inW, "write -P %d %d 512\n", i, i*512)
		expect(fmt.Sprintf(`^(zqimg> )+wrote 512/512 bytes at offset %d\n$`, i*512))
		expect(`^512 bytes, 1 ops; `)
		fmt.Fprintf(inW, "read -q -P %d %d 512\nlength\n", i, i*512)
		expect(`^(zqimg> )+1 MiB\n$`)
	}
	inW.Close()
	<-done
	if sh.Failed() {
		t.Fatal("a command failed")
	}
}

// TestForceShareRefusesWrites: with force-share every command that writes
// is refused with qemu's message before it runs; reads work.
func TestForceShareRefusesWrites(t *testing.T) {
	d := newDevice(t, "4M", image.Options{ReadOnly: true, NoLock: true}, "zone.mode=host-managed", "zone.size=1M")
	var out, errb bytes.Buffer
	sh := New(d, &out, &errb)
	sh.ForceShare = true
	for _, c := range []string{"write 0 512", "w -z 0 512", "discard 0 512", "zo 0 1M", "zc 0 1M", "zf 0 1M", "zrs 0 1M", "zap 0 512"} {
		errb.Reset()
		if sh.Run(c) {
			t.Errorf("%s succeeded", c)
		}
		name := strings.Fields(c)[0]
		if want := "zqimg: " + name + ": force-share=on can only be used with read-only images\n"; errb.String() != want {
			t.Errorf("%s: stderr %q, want %q", c, errb.String(), want)
		}
	}
	for _, c := range []string{"read -q 0 512", "zrp 0", "length", "flush", "help write"} {
		if !sh.Run(c) {
			t.Errorf("%s failed: %s", c, errb.String())
		}
	}
	sh.Flush()
	if n := strings.Count(out.String(), "start: "); n != 4 {
		t.Errorf("zrp 0 reported %d zones, want all 4:\n%s", n, out.String())
	}
}

// TestHelpListsWorkingFlags: every command has extended help in qemu-io's
// layout; every flag it lists is accepted, and every flag the command
// accepts is listed, except those that are always refused.
func TestHelpListsWorkingFlags(t *testing.T) {
	refused := map[string]string{"read": "b", "write": "bs"}
	flagRE := regexp.MustCompile(`(?m)^ -([A-Za-z]), -- `)
	for _, c := range commands {
		if c.help == "" || !strings.HasPrefix(c.help, " ") || !strings.Contains(c.help, "\n Example:\n '") {
			t.Errorf("%s: no qemu-io style extended help", c.name)
			continue
		}
		listed := map[string]bool{}
		for _, m := range flagRE.FindAllStringSubmatch(c.help, -1) {
			listed[m[1]] = true
			if !strings.Contains(c.opts, m[1]) || strings.Contains(refused[c.name], m[1]) {
				t.Errorf("%s: help lists -%s, which the command does not take", c.name, m[1])
			}
			if !strings.Contains(c.args, m[1]) && m[1] != "p" && m[1] != "l" && m[1] != "s" {
				t.Errorf("%s: -%s is not in the usage line %q", c.name, m[1], c.args)
			}
		}
		for _, f := range strings.ReplaceAll(c.opts, ":", "") {
			if !listed[string(f)] && !strings.ContainsRune(refused[c.name], f) {
				t.Errorf("%s: -%c is accepted but not in the help", c.name, f)
			}
		}
		for _, f := range refused[c.name] {
			if strings.ContainsRune(c.args, f) {
				t.Errorf("%s: usage %q lists the refused -%c", c.name, c.args, f)
			}
		}
	}
}
