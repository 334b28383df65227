// Package ioshell runs qemu-io style command lines (read, write, flush,
// discard and the zone commands) against an open device, printing what
// qemu-io prints. It is the presentation layer of `zqimg io` and of the
// single-shot commands; the work itself is done by pkg/zone.
package ioshell

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
	"golang.org/x/sys/unix"
)

// Prompt is printed before each command read from standard input.
const Prompt = "zqimg> "

// Shell executes commands on one device.
type Shell struct {
	Dev    *zone.Device
	Out    *bufio.Writer
	Err    io.Writer
	Prog   string // program name for messages on Err ("zqimg")
	quit   bool
	failed bool
	now    func() time.Time

	pbuf    []byte // reusable pattern buffer for write
	pbufPat byte
	rbuf    []byte // reusable read buffer
}

// New returns a shell writing command output to out and diagnostics to errOut.
func New(dev *zone.Device, out, errOut io.Writer) *Shell {
	return &Shell{Dev: dev, Out: bufio.NewWriterSize(out, 64<<10), Err: errOut, Prog: "zqimg", now: time.Now}
}

// Failed reports whether any command failed.
func (s *Shell) Failed() bool { return s.failed }

// Quit reports whether a quit command was executed.
func (s *Shell) Quit() bool { return s.quit }

// errCommandFailed marks a command whose failure was already reported.
var errCommandFailed = errors.New("command failed")

// command describes one qemu-io command.
type command struct {
	name, alt      string
	argmin, argmax int // operand counts after the name; argmax -1: no limit
	opts           string
	long           []string
	args, oneline  string
	writes         bool
	run            func(s *Shell, p *parsedArgs) error
}

var commands []*command

func init() {
	commands = []*command{
		{name: "read", alt: "r", argmin: 2, argmax: -1, opts: "bCl:pP:qs:v", args: "[-abCqv] [-P pattern [-s off] [-l len]] off len", oneline: "reads a number of bytes at a specified offset", run: (*Shell).read},
		{name: "write", alt: "w", argmin: 2, argmax: -1, opts: "bcCfnpP:quzs:", args: "[-bcCfnquz] [-P pattern] off len", oneline: "writes a number of bytes at a specified offset", writes: true, run: (*Shell).write},
		{name: "discard", alt: "d", argmin: 2, argmax: -1, opts: "Cq", args: "[-Cq] off len", oneline: "discards a number of bytes at a specified offset", writes: true, run: (*Shell).discard},
		{name: "flush", alt: "f", argmin: 0, argmax: 0, args: "", oneline: "flush all in-core file state to disk", run: (*Shell).flush},
		{name: "length", alt: "l", argmin: 0, argmax: 0, args: "", oneline: "gets the length of the current file", run: (*Shell).length},
		{name: "zone_report", alt: "zrp", argmin: 2, argmax: 2, long: []string{"output"}, args: "[--output=human|json|table] offset number", oneline: "report zone information", run: (*Shell).zoneReport},
		{name: "zone_open", alt: "zo", argmin: 2, argmax: 2, args: "offset len", oneline: "explicit open a range of zones in zone block device", writes: true, run: zoneMgmt(zone.OpOpen)},
		{name: "zone_close", alt: "zc", argmin: 2, argmax: 2, args: "offset len", oneline: "close a range of zones in zone block device", writes: true, run: zoneMgmt(zone.OpClose)},
		{name: "zone_finish", alt: "zf", argmin: 2, argmax: 2, args: "offset len", oneline: "finish a range of zones in zone block device", writes: true, run: zoneMgmt(zone.OpFinish)},
		{name: "zone_reset", alt: "zrs", argmin: 2, argmax: 2, args: "offset len", oneline: "reset a zone write pointer in zone block device", writes: true, run: zoneMgmt(zone.OpReset)},
		{name: "zone_append", alt: "zap", argmin: 2, argmax: -1, opts: "p", args: "[-p] offset len [len..]", oneline: "append write a number of bytes at a specified offset", writes: true, run: (*Shell).zoneAppend},
		{name: "help", alt: "?", argmin: 0, argmax: 1, args: "[command]", oneline: "help for one or all commands", run: (*Shell).help},
		{name: "quit", alt: "q", argmin: 0, argmax: 0, args: "", oneline: "exit the program", run: func(s *Shell, _ *parsedArgs) error { s.quit = true; return nil }},
	}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name || c.alt == name {
			return c
		}
	}
	return nil
}

// Known reports whether name is a command (or its short name).
func Known(name string) bool { return lookup(name) != nil }

// Writes reports whether the named command needs the image opened for writing.
func Writes(name string) bool {
	c := lookup(name)
	return c != nil && c.writes
}

// Run executes one command line and reports whether it failed.
func (s *Shell) Run(line string) bool {
	defer s.Out.Flush()
	words := strings.Fields(line)
	if len(words) == 0 {
		return true
	}
	c := lookup(words[0])
	if c == nil {
		s.Out.Flush()
		fmt.Fprintf(s.Err, "command \"%s\" not found\n", words[0])
		s.failed = true
		return false
	}
	ok := s.exec(c, words[0], words[1:])
	if !ok {
		s.failed = true
	}
	return ok
}

func (s *Shell) exec(c *command, name string, args []string) bool {
	p, err := getopt(args, c.opts, c.long)
	if err != nil {
		s.Out.Flush()
		fmt.Fprintf(s.Err, "%s: %v\n", name, err)
		s.usage(c)
		return false
	}
	n := len(p.operands)
	if n < c.argmin || (c.argmax != -1 && n > c.argmax) {
		s.Out.Flush()
		switch {
		case c.argmin == c.argmax:
			fmt.Fprintf(s.Err, "bad argument count %d to %s, expected %d arguments\n", n, name, c.argmin)
		case c.argmax == -1:
			fmt.Fprintf(s.Err, "bad argument count %d to %s, expected at least %d arguments\n", n, name, c.argmin)
		default:
			fmt.Fprintf(s.Err, "bad argument count %d to %s, expected between %d and %d arguments\n", n, name, c.argmin, c.argmax)
		}
		return false
	}
	if c.writes && s.Dev.Image().ReadOnly() {
		// qemu-io refuses such a command before running it.
		s.Out.Flush()
		fmt.Fprintf(s.Err, "%s: %s: the image is opened read-only (-r)\n", s.Prog, name)
		return false
	}
	if err := c.run(s, p); err != nil {
		if !errors.Is(err, errCommandFailed) {
			s.Out.Flush()
			fmt.Fprintf(s.Err, "%s: %v\n", s.Prog, err)
		}
		return false
	}
	return true
}

func (s *Shell) usage(c *command) {
	fmt.Fprintf(s.Out, "%s -- %s\n", strings.TrimSpace(c.name+" "+c.args), c.oneline)
}

// fail prints qemu-io's failure line ("write failed: Invalid argument") on
// the output and zqimg's explanation on the error stream.
func (s *Shell) fail(what string, err error) error {
	fmt.Fprintf(s.Out, "%s failed: %s\n", what, strerror(image.Errno(err)))
	s.Out.Flush()
	fmt.Fprintf(s.Err, "%s: %v\n", s.Prog, err)
	return errCommandFailed
}

// strerror returns glibc's message for an errno ("Invalid argument").
func strerror(e syscall.Errno) string {
	m := []rune(e.Error())
	if len(m) > 0 {
		m[0] = unicode.ToUpper(m[0])
	}
	return string(m)
}

// parseNum parses an offset or length as qemu-io's cvtnum, printing
// qemu-io's message on failure.
func (s *Shell) parseNum(arg string) (int64, error) {
	v, err := parseOffset(arg)
	if err != nil {
		if errors.Is(err, errRange) {
			fmt.Fprintf(s.Out, "Parsing error: argument too large -- %s\n", arg)
		} else {
			fmt.Fprintf(s.Out, "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- %s\n", arg)
		}
		return 0, errCommandFailed
	}
	return v, nil
}

func (s *Shell) help(p *parsedArgs) error {
	if len(p.operands) == 1 {
		c := lookup(p.operands[0])
		if c == nil {
			fmt.Fprintf(s.Out, "command %s not found\n", p.operands[0])
			return errCommandFailed
		}
		s.usage(c)
		return nil
	}
	cs := append([]*command(nil), commands...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	for _, c := range cs {
		name := c.name
		if c.alt != "" {
			name += " (or " + c.alt + ")"
		}
		fmt.Fprintf(s.Out, "%s -- %s\n", strings.TrimSpace(name+" "+c.args), c.oneline)
	}
	fmt.Fprintf(s.Out, "\nUse 'help commandname' for extended help.\n")
	return nil
}

func (s *Shell) flush(_ *parsedArgs) error {
	if err := s.Dev.Flush(); err != nil {
		return s.fail("flush", err)
	}
	return nil
}

func (s *Shell) length(_ *parsedArgs) error {
	fmt.Fprintf(s.Out, "%s\n", humanSize(uint64(s.Dev.Size())))
	return nil
}

// Loop reads commands from in, printing Prompt before each, until end of
// input or quit.
func (s *Shell) Loop(in io.Reader) {
	r := bufio.NewReaderSize(in, 64<<10)
	tty := isTerminal(in)
	for !s.quit {
		fmt.Fprint(s.Out, Prompt)
		if tty {
			s.Out.Flush() // otherwise the prompt goes out with the command's output
		}
		line, err := r.ReadString('\n')
		if line == "" && err != nil {
			s.Out.Flush()
			return
		}
		s.Run(strings.TrimRight(line, "\r\n"))
	}
}

// isTerminal reports whether r is a terminal.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
