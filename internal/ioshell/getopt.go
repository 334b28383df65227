package ioshell

import (
	"fmt"
	"slices"
	"strings"
)

// parsedArgs holds the options and operands of one command line.
type parsedArgs struct {
	flags    map[byte]string // short options; "" for those without argument
	long     map[string]string
	operands []string
}

func (p *parsedArgs) has(c byte) bool { _, ok := p.flags[c]; return ok }

// getopt parses args as GNU getopt does for qemu-io's commands: options may
// come before or after operands, "--" ends them, spec lists the letters
// ("P:" takes an argument), and long names ("output") take "=value" or the
// next argument.
func getopt(args []string, spec string, long []string) (*parsedArgs, error) {
	p := &parsedArgs{flags: map[byte]string{}, long: map[string]string{}}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			p.operands = append(p.operands, args[i+1:]...)
			return p, nil
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			known := false
			for _, l := range long {
				known = known || l == name
			}
			if !known {
				return nil, fmt.Errorf("unrecognized option '%s'", a)
			}
			if !hasVal {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("option '--%s' requires an argument", name)
				}
				i++
				val = args[i]
			}
			p.long[name] = val
		case len(a) > 1 && a[0] == '-':
			for j := 1; j < len(a); j++ {
				c := a[j]
				k := strings.IndexByte(spec, c)
				if k < 0 || c == ':' {
					return nil, fmt.Errorf("invalid option -- '%c'", c)
				}
				if k+1 < len(spec) && spec[k+1] == ':' {
					if j+1 < len(a) {
						p.flags[c] = a[j+1:]
					} else if i+1 < len(args) {
						i++
						p.flags[c] = args[i]
					} else {
						return nil, fmt.Errorf("option requires an argument -- '%c'", c)
					}
					break
				}
				p.flags[c] = ""
			}
		default:
			p.operands = append(p.operands, a)
		}
	}
	return p, nil
}

// FindFile returns the index in args of the first operand of a command
// named name (the image file of a single-shot command), or -1. Option
// arguments are skipped according to the command's option letters.
func FindFile(name string, args []string) int {
	c := lookup(name)
	if c == nil {
		return -1
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			if i+1 < len(args) {
				return i + 1
			}
			return -1
		case strings.HasPrefix(a, "--"):
			// Only a known long option without "=" takes the next argument.
			if name := a[2:]; !strings.Contains(name, "=") && slices.Contains(c.long, name) {
				i++
			}
		case len(a) > 1 && a[0] == '-':
			for j := 1; j < len(a); j++ {
				k := strings.IndexByte(c.opts, a[j])
				if k >= 0 && k+1 < len(c.opts) && c.opts[k+1] == ':' {
					if j == len(a)-1 {
						i++
					}
					break
				}
			}
		default:
			return i
		}
	}
	return -1
}
