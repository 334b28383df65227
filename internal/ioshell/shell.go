// Package ioshell runs qemu-io style command lines (read, write, flush,
// discard and the zone commands) against an open device, printing what
// qemu-io prints. It is the presentation layer of `zqimg io` and of the
// single-shot commands; the work itself is done by pkg/zone.
package ioshell

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// Prompt is printed before each command read from standard input.
const Prompt = "zqimg> "

// Device is what a shell runs commands on: a qcow2 image, zoned or not
// (*zone.Device), or a raw file (RawDevice). Zone commands, compressed
// writes and allocation status beyond "everything is allocated" need a
// *zone.Device.
type Device interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	WriteZeroes(off, n int64) error
	WriteZeroesUnmap(off, n int64) error
	Discard(off, n int64) error
	Flush() error
	Size() int64
	Resize(size uint64, shrink bool) error
	ReadOnly() bool
	Close() error
}

// Shell executes commands on one device.
type Shell struct {
	Dev  Device
	Out  *bufio.Writer
	Err  io.Writer
	Prog string // program name for messages on Err ("zqimg")
	// Terse leaves out zqimg's explanation of a failed request on Err
	// (after qemu-io's "write failed: ..." line), so that the output is
	// qemu-io's exactly: set when zqimg runs as qemu-io.
	Terse bool
	// Open opens an image for the open and reopen commands (nil: they
	// are refused); see OpenRequest.
	Open func(r OpenRequest) (Device, error)
	// Current is how the open image was opened (set by the session for
	// the image of its command line, and by open and reopen): what reopen
	// starts from.
	Current OpenRequest
	// Prompt is printed before each command read by Loop (default Prompt;
	// "qemu-io> " when zqimg runs as qemu-io).
	Prompt string
	quit   bool
	failed bool
	now    func() time.Time
	// AdvisoryDiscard takes discard requests as qemu's qcow2 driver takes
	// them, as hints (set when zqimg runs as qemu-io): only whole clusters
	// are discarded, parts of clusters are left as they are, and a version
	// 2 image with a backing file is not changed. Otherwise a discarded
	// range always reads as zeroes afterwards.
	AdvisoryDiscard bool
	// ForceShare refuses every command that writes, with qemu's message:
	// the image was opened without locks (-U), which is for reading only.
	ForceShare bool

	pbuf    []byte // reusable pattern buffer for write
	pbufPat byte
	rbuf    []byte // reusable read buffer
}

// New returns a shell writing command output to out and diagnostics to
// errOut; dev may be nil (no image open).
func New(dev Device, out, errOut io.Writer) *Shell {
	if d, ok := dev.(*zone.Device); ok && d == nil {
		dev = nil
	}
	return &Shell{Dev: dev, Out: bufio.NewWriterSize(out, 64<<10), Err: errOut, Prog: "zqimg", Prompt: Prompt, now: time.Now}
}

// asQcow2 returns the qcow2 device d is, or is a filter over.
func asQcow2(d Device) (*zone.Device, bool) {
	switch d := d.(type) {
	case *zone.Device:
		return d, true
	case *CompressDevice:
		return d.Device, true
	}
	return nil, false
}

// qcow2 returns the open image as a qcow2 device, or an error (ENOTSUP)
// naming the request what when it is a raw file.
func (s *Shell) qcow2(what string) (*zone.Device, error) {
	if d, ok := asQcow2(s.Dev); ok {
		return d, nil
	}
	return nil, fmt.Errorf("%s: a raw image has no qcow2 features (zones, compressed clusters): %w", what, syscall.ENOTSUP)
}

// Failed reports whether any command failed.
func (s *Shell) Failed() bool { return s.failed }

// Quit reports whether a quit command was executed.
func (s *Shell) Quit() bool { return s.quit }

// errCommandFailed marks a command whose failure was already reported.
var errCommandFailed = errors.New("command failed")

// errRequestFailed marks a command whose request to the device failed
// (after its arguments were accepted); the failure was already reported.
var errRequestFailed = fmt.Errorf("%w: request", errCommandFailed)

// MsgForceShare is qemu's refusal of force-share (-U) for an image opened
// for writing.
const MsgForceShare = "force-share=on can only be used with read-only images"

// Call is a parsed command line, ready to run on a device.
type Call struct {
	cmd  *command
	name string // the name as typed (an alias, perhaps)
	args *parsedArgs
}

// Name returns the command's name as it was typed.
func (c *Call) Name() string { return c.name }

// Writes reports whether the command needs the image opened for writing.
func (c *Call) Writes() bool { return c.cmd.writes }

// Run executes one command line and reports whether it succeeded.
func (s *Shell) Run(line string) bool {
	c, ok := s.Parse(line)
	if ok && c != nil {
		ok = s.Exec(c)
	}
	if !ok {
		s.failed = true
	}
	return ok
}

// Parse parses a command line without touching the device: the command
// name, its options and its operand count. On failure it prints qemu-io's
// message and returns false; an empty line returns (nil, true).
func (s *Shell) Parse(line string) (*Call, bool) {
	words := strings.Fields(line)
	if len(words) == 0 {
		return nil, true
	}
	c := lookup(words[0])
	if c == nil {
		s.Out.Flush()
		fmt.Fprintf(s.Err, "command \"%s\" not found\n", words[0])
		return nil, false
	}
	p, err := getopt(words[1:], c.opts, c.long)
	if err != nil {
		s.Out.Flush()
		fmt.Fprintf(s.Err, "%s: %v\n", words[0], err)
		s.usage(c)
		return nil, false
	}
	if !s.checkCount(c, words[0], len(p.operands)) {
		return nil, false
	}
	return &Call{cmd: c, name: words[0], args: p}, true
}

// checkCount checks the operand count of a command as qemu-io does.
func (s *Shell) checkCount(c *command, name string, n int) bool {
	if n >= c.argmin && (c.argmax == -1 || n <= c.argmax) {
		if c.exact != 0 && n != c.exact {
			s.usage(c)
			return false
		}
		return true
	}
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

// Exec runs a parsed command on the shell's device and reports whether it
// succeeded. Commands that write are refused before they run when the
// shell was opened with force-share (-U) or read-only (-r).
func (s *Shell) Exec(c *Call) bool {
	if s.Dev == nil && !c.cmd.noDev {
		s.Out.Flush()
		fmt.Fprintf(s.Err, "no file open, try 'help open'\n")
		return false
	}
	if c.cmd.writes && s.ForceShare {
		s.Out.Flush()
		fmt.Fprintf(s.Err, "%s: %s: %s\n", s.Prog, c.name, MsgForceShare)
		return false
	}
	if c.cmd.writes && s.Dev.ReadOnly() {
		// qemu-io refuses such a command before running it.
		s.Out.Flush()
		if s.Terse {
			fmt.Fprintf(s.Err, "%s: Block node is read-only\n", s.Prog)
		} else {
			fmt.Fprintf(s.Err, "%s: %s: the image is opened read-only (-r)\n", s.Prog, c.name)
		}
		return false
	}
	if err := c.cmd.run(s, c.args); err != nil {
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
// the output and zqimg's explanation on the error stream. As qemu-io
// (Terse), the explanation is qemu-io's line for a request that found
// the image corrupt and marked it so, when QEMU has words for it.
func (s *Shell) fail(what string, err error) error {
	var ce *image.CorruptionError
	if s.Terse && errors.As(err, &ce) && ce.First && ce.QEMU != "" {
		s.Out.Flush()
		fmt.Fprintf(s.Err, "qcow2: Marking image as corrupt: %s; further corruption events will be suppressed\n", ce.QEMU)
	}
	fmt.Fprintf(s.Out, "%s failed: %s\n", what, image.Strerror(image.Errno(err)))
	s.Out.Flush()
	if !s.Terse {
		fmt.Fprintf(s.Err, "%s: %v\n", s.Prog, err)
	}
	return errRequestFailed
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
		if c.help != "" {
			fmt.Fprintf(s.Out, "\n%s\n", c.help)
		}
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

// close closes the device; the shell has none afterwards (Dev is nil).
func (s *Shell) close(_ *parsedArgs) error {
	dev := s.Dev
	s.Dev = nil
	if err := dev.Close(); err != nil {
		return s.fail("close", err)
	}
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

// Flush writes the buffered command output.
func (s *Shell) Flush() error { return s.Out.Flush() }

// Loop reads commands from in, printing Prompt before each, until end of
// input or quit. Output is flushed whenever the next command is not
// already buffered (before the shell would wait for input), so that a
// program driving the session sees every command's output before it
// sends the next command, while a piped script is not slowed down by a
// flush per command. Output is flushed at the end.
func (s *Shell) Loop(in io.Reader) {
	r := bufio.NewReaderSize(in, 64<<10)
	defer s.Out.Flush()
	for !s.quit {
		fmt.Fprint(s.Out, s.Prompt)
		if !lineBuffered(r) {
			s.Out.Flush()
		}
		line, err := r.ReadString('\n')
		if line == "" && err != nil {
			return
		}
		s.Run(strings.TrimRight(line, "\r\n"))
	}
}

// lineBuffered reports whether r holds a complete line that can be read
// without waiting for input.
func lineBuffered(r *bufio.Reader) bool {
	b, _ := r.Peek(r.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}
