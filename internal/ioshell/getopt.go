package ioshell

import (
	"fmt"
	"strings"
)

// parsedArgs holds the options and operands of one command line.
type parsedArgs struct {
	flags    map[byte]string // short options; "" for those without argument
	long     map[string]string
	operands []string
	nargs    int // the words after the command name, options included
	// verb names the request in a failure line ("writev failed: ..."); ""
	// means the command's own (read or write).
	verb string
}

// verbOr returns p.verb, or def when it is not set.
func (p *parsedArgs) verbOr(def string) string {
	if p.verb != "" {
		return p.verb
	}
	return def
}

func (p *parsedArgs) has(c byte) bool { _, ok := p.flags[c]; return ok }

// longOpt finds name among long option specs ("output:" takes an argument,
// "force-share" does not).
func longOpt(long []string, name string) (known, takesArg bool) {
	for _, l := range long {
		n, arg := strings.CutSuffix(l, ":")
		if n == name {
			return true, arg
		}
	}
	return false, false
}

// getopt parses args as GNU getopt does for qemu-io's commands: options may
// come before or after operands, "--" ends them, spec lists the letters
// ("P:" takes an argument), and long names ("output:" takes "=value" or the
// next argument; a name without ':' takes none).
func getopt(args []string, spec string, long []string) (*parsedArgs, error) {
	p := &parsedArgs{flags: map[byte]string{}, long: map[string]string{}, nargs: len(args)}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			p.operands = append(p.operands, args[i+1:]...)
			return p, nil
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			known, takesArg := longOpt(long, name)
			if !known {
				return nil, fmt.Errorf("unrecognized option '%s'", a)
			}
			switch {
			case takesArg && !hasVal:
				if i+1 >= len(args) {
					return nil, fmt.Errorf("option '--%s' requires an argument", name)
				}
				i++
				val = args[i]
			case !takesArg && hasVal:
				return nil, fmt.Errorf("option '--%s' doesn't allow an argument", name)
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
