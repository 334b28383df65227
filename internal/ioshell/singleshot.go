package ioshell

import (
	"errors"
	"fmt"
	"strings"
)

// SingleShot is the parsed command line of a single-shot command, `zqimg
// NAME [options] FILE OPERANDS...`: the command's own options (qemu-io's)
// and, besides them, the options every single-shot command takes.
type SingleShot struct {
	Call       *Call
	File       string
	ForceShare bool   // -U, --force-share: no locks, reading only
	Cache      string // -t MODE, --cache=MODE; "" when not given
}

// singleShotOpts are the options every single-shot command takes besides
// its own (none of qemu-io's commands uses these letters).
const singleShotOpts = "Ut:"

// ErrNoFile is returned by ParseSingleShot when no image file is named; its
// text is qemu-img's.
//
//lint:ignore ST1005 qemu-img's message
var ErrNoFile = errors.New("Expecting image file name")

// ParseSingleShot parses the arguments of the single-shot command name
// without opening anything. Options may come before or after the file
// name and the operands; "--" ends them. The first operand is the image
// file. Errors carry qemu-img's wording for argument counts ("Expecting
// image file name", "Not enough arguments", "Unexpected argument: X").
func ParseSingleShot(name string, args []string) (*SingleShot, error) {
	c := lookup(name)
	if c == nil {
		return nil, fmt.Errorf("unknown command %q", name)
	}
	p, err := getopt(shortAliases(args), c.opts+singleShotOpts, c.long)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	ss := &SingleShot{}
	if _, ok := p.flags['U']; ok {
		ss.ForceShare = true
		delete(p.flags, 'U')
	}
	if v, ok := p.flags['t']; ok {
		ss.Cache = v
		delete(p.flags, 't')
	}
	if len(p.operands) == 0 {
		return nil, ErrNoFile
	}
	ss.File, p.operands = p.operands[0], p.operands[1:]
	n := len(p.operands)
	if n < c.argmin {
		//lint:ignore ST1005 qemu-img's message
		return nil, errors.New("Not enough arguments")
	}
	if m := c.maxOperands(); m != -1 && n > m {
		//lint:ignore ST1005 qemu-img's message
		return nil, fmt.Errorf("Unexpected argument: %s", p.operands[m])
	}
	ss.Call = &Call{cmd: c, name: name, args: p}
	return ss, nil
}

// shortAliases rewrites the long forms of the single-shot options into
// their letters (--force-share: -U, --cache=MODE and --cache MODE: -t), up
// to "--".
func shortAliases(args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		switch {
		case a == "--":
			return append(out, args[i:]...)
		case a == "--force-share":
			out = append(out, "-U")
		case a == "--cache":
			out = append(out, "-t")
		case strings.HasPrefix(a, "--cache="):
			out = append(out, "-t", strings.TrimPrefix(a, "--cache="))
		default:
			out = append(out, a)
		}
	}
	return out
}
