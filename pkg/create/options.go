package create

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/zqimg/zqimg/pkg/units"
)

// kind is the value type of an option, as in QEMU's QemuOptType.
type kind int

const (
	kindString kind = iota
	kindBool
	kindNumber
	kindSize
)

func (k kind) String() string {
	return [...]string{"str", "bool (on/off)", "num", "size"}[k]
}

// OptionDef describes one -o option.
type OptionDef struct {
	Name string
	kind kind
	Help string
	Def  string // value printed in the Formatting line when unset; "" for none
}

// Type names the option's value type as qemu-img's help does.
func (d OptionDef) Type() string { return d.kind.String() }

// defs lists the supported options in the order qemu-img prints them in
// its "Formatting ..." line.
var defs = []OptionDef{
	{"encryption", kindBool, "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)", ""},
	{"encrypt.key-secret", kindString, "ID of secret providing qcow AES key or LUKS passphrase", ""},
	{"cluster_size", kindSize, "qcow2 cluster size", "65536"},
	{"extended_l2", kindBool, "Extended L2 tables", "off"},
	{"preallocation", kindString, "Preallocation mode (allowed values: off, metadata, falloc, full)", ""},
	{"compression_type", kindString, "Compression method used for image cluster compression (zlib or zstd)", "zlib"},
	{"zone.mode", kindString, "zone model modes, mode choice: host-managed", ""},
	{"zone.size", kindSize, "zone size (power of two, default 256 MiB)", ""},
	{"zone.capacity", kindSize, "zone capacity (default: the zone size)", ""},
	{"zone.conventional_zones", kindNumber, "numbers of conventional zones (default 0)", ""},
	{"zone.max_append_bytes", kindSize, "max append bytes (default 64 KiB)", ""},
	{"zone.max_active_zones", kindNumber, "max active zones (default 0: no limit)", ""},
	{"zone.max_open_zones", kindNumber, "max open zones (default: max active zones, or 0: no limit)", ""},
	{"size", kindSize, "Virtual disk size", ""},
	{"compat", kindString, "Compatibility level (v2 [0.10] or v3 [1.1])", ""},
	{"backing_file", kindString, "File name of a base image", ""},
	{"backing_fmt", kindString, "Image format of the base image (qcow2 or raw)", ""},
	{"lazy_refcounts", kindBool, "Postpone refcount updates", "off"},
	{"refcount_bits", kindNumber, "Width of a reference count entry in bits", "16"},
	// A hint of the protocol layer (file-posix) that qemu-img accepts for
	// qcow2 too; zqimg accepts and ignores it.
	{"extent_size_hint", kindSize, "Extent size hint for the image file, 0 to disable", ""},
}

// qemuOnly are qemu-img qcow2 options that zqimg does not implement.
var qemuOnly = []string{"data_file", "data_file_raw",
	"encrypt.format", "encrypt.cipher-alg", "encrypt.cipher-mode",
	"encrypt.ivgen-alg", "encrypt.ivgen-hash-alg", "encrypt.hash-alg", "encrypt.iter-time"}

// ErrHelp is returned by ParseOptions when the options ask for help.
var ErrHelp = errors.New("help requested")

// OptionError is a malformed or unknown option. Hint, when set, is printed
// on the following lines as QEMU does. Global errors concern the command
// line rather than the image (qemu-img prints them without the file name).
type OptionError struct {
	Msg    string
	Hint   string
	Global bool
}

// validOptionList applies qemu-img's syntax check to one -o argument: not
// empty, no leading comma, and no unpaired trailing comma (",," is an
// escaped comma).
func validOptionList(s string) bool {
	if s == "" || s[0] == ',' {
		return false
	}
	n := 0
	for i := len(s); i > 0 && s[i-1] == ','; i-- {
		n++
	}
	return n%2 == 0
}

func (e *OptionError) Error() string {
	if e.Hint != "" {
		return e.Msg + "\n" + e.Hint
	}
	return e.Msg
}

// value is a parsed option: its canonical text for the Formatting line and
// its typed value.
type value struct {
	text string
	num  uint64
	on   bool
}

// Options holds the options given with -o (and the size argument), parsed
// and typed but not yet checked against each other.
type Options struct {
	secrets []string // ids of the secrets given (--object secret,id=ID,...)
	set     map[string]value
	format  string      // "qcow2" or "raw"
	defs    []OptionDef // the options of the format
}

// rawDefs are the options of a raw image (file-posix's), in qemu-img's
// order.
var rawDefs = []OptionDef{
	{"size", kindSize, "Virtual disk size", ""},
	{"preallocation", kindString, "Preallocation mode (allowed values: off, falloc, full)", ""},
	{"extent_size_hint", kindSize, "Extent size hint for the image file, 0 to disable", ""},
}

func (o *Options) lookup(name string) (OptionDef, bool) {
	for _, d := range o.defs {
		if d.Name == name {
			return d, true
		}
	}
	return OptionDef{}, false
}

// canonicalName accepts both '_' and '-' spellings of option names.
// The encrypt.* options are QEMU's QAPI names, spelt with '-'.
func canonicalName(name string) string {
	if strings.HasPrefix(name, "encrypt.") {
		return strings.ReplaceAll(name, "_", "-")
	}
	return strings.ReplaceAll(name, "-", "_")
}

// SplitOptions splits a -o list at single commas; ",," stands for a comma
// (QEMU's option syntax; amend parses its lists with it too).
func SplitOptions(s string) []string {
	var items []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			items = append(items, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	return append(items, cur.String())
}

// ParseOptions parses the -o arguments in order (later values win) and the
// optional size argument. It returns ErrHelp when one of them is "help" or "?".
func ParseOptions(lists []string, sizeArg string, haveSize bool) (*Options, error) {
	return parseOptions("qcow2", defs, lists, sizeArg, haveSize)
}

// ParseRawOptions is ParseOptions for a raw image: size, preallocation
// and extent_size_hint.
func ParseRawOptions(lists []string, sizeArg string, haveSize bool) (*Options, error) {
	return parseOptions("raw", rawDefs, lists, sizeArg, haveSize)
}

func parseOptions(format string, table []OptionDef, lists []string, sizeArg string, haveSize bool) (*Options, error) {
	o := &Options{set: map[string]value{}, format: format, defs: table}
	for _, l := range lists {
		if !validOptionList(l) {
			return nil, &OptionError{Msg: "Invalid option list: " + l, Global: true}
		}
		for _, item := range SplitOptions(l) {
			if item == "help" || item == "?" {
				return nil, ErrHelp
			}
		}
	}
	for _, l := range lists {
		for _, item := range SplitOptions(l) {
			if item == "" {
				continue
			}
			name, val, hasVal := strings.Cut(item, "=")
			name = canonicalName(name)
			def, ok := o.lookup(name)
			if !ok {
				if format == "qcow2" && slices.Contains(qemuOnly, name) {
					return nil, &OptionError{Msg: fmt.Sprintf("Parameter '%s' is not supported by zqimg", name)}
				}
				return nil, &OptionError{Msg: fmt.Sprintf("Invalid parameter '%s'", name)}
			}
			if !hasVal {
				if def.kind != kindBool {
					return nil, &OptionError{Msg: fmt.Sprintf("Parameter '%s' expects a value", name)}
				}
				val = "on"
			}
			v, err := parseValue(def, val)
			if err != nil {
				return nil, err
			}
			o.set[name] = v
		}
	}
	if haveSize {
		if _, dup := o.set["size"]; dup {
			return nil, &OptionError{Msg: "The image size must be specified only once"}
		}
		n, err := units.ParseSize(sizeArg)
		if err != nil && !errors.Is(err, units.ErrRange) {
			return nil, &OptionError{Msg: "Invalid image size specified. You may use k, M, G, T, P or E suffixes for",
				Hint: "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.", Global: true}
		}
		if err != nil || n > 1<<63-1 {
			return nil, &OptionError{Msg: fmt.Sprintf("Invalid image size specified. Must be between 0 and %d.", int64(1<<63-1)), Global: true}
		}
		o.set["size"] = value{text: strconv.FormatUint(n, 10), num: n}
	}
	if _, ok := o.set["size"]; !ok && !o.has("backing_file") {
		return nil, ErrNoSize
	}
	return o, nil
}

// ErrNoSize is the error of options that give no size and no backing file
// to take it from.
var ErrNoSize error = &OptionError{Msg: "Image creation needs a size parameter"}

func parseValue(def OptionDef, s string) (value, error) {
	switch def.kind {
	case kindSize:
		n, err := units.ParseSize(s)
		if err != nil {
			return value{}, &OptionError{
				Msg:  fmt.Sprintf("Parameter '%s' expects a non-negative number below 2^64", def.Name),
				Hint: "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.",
			}
		}
		return value{text: strconv.FormatUint(n, 10), num: n}, nil
	case kindNumber:
		// As qemu_strtou64: a leading '-' negates (modulo 2^64), so
		// "-1" is 2^64-1, and the value is printed as given.
		digits, neg := strings.CutPrefix(s, "-")
		n, err := strconv.ParseUint(digits, 0, 64)
		if err == nil && neg {
			return value{text: s, num: -n}, nil
		}
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return value{}, &OptionError{Msg: fmt.Sprintf("Value '%s' is too large for parameter '%s'", s, def.Name)}
			}
			return value{}, &OptionError{Msg: fmt.Sprintf("Parameter '%s' expects a number", def.Name)}
		}
		return value{text: strconv.FormatUint(n, 10), num: n}, nil
	case kindBool:
		switch s {
		case "on", "yes", "true", "y":
			return value{text: s, on: true}, nil
		case "off", "no", "false", "n":
			return value{text: s}, nil
		}
		return value{}, &OptionError{Msg: fmt.Sprintf("Parameter '%s' expects 'on' or 'off'", def.Name)}
	}
	return value{text: s}, nil
}

// Formatting returns qemu-img's "Formatting 'FILE', fmt=qcow2 ..." line
// (without newline): every option that is set or has a default, in
// qemu-img's order, sizes and numbers in decimal bytes.
func (o *Options) Formatting(filename string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Formatting '%s', fmt=%s", filename, o.format)
	for _, d := range o.defs {
		v, ok := o.set[d.Name]
		text := v.text
		if !ok {
			text = d.Def
		}
		if text == "" && !ok {
			continue
		}
		if d.kind == kindString {
			text = strings.ReplaceAll(text, ",", ",,")
		}
		fmt.Fprintf(&b, " %s=%s", d.Name, text)
	}
	return b.String()
}

// Help returns the option list printed for "-o help".
func Help() string { return help("qcow2", defs) }

// RawHelp returns the option list printed for "-f raw -o help".
func RawHelp() string { return help("raw", rawDefs) }

func help(format string, table []OptionDef) string {
	defs := slices.Clone(table)
	slices.SortFunc(defs, func(a, b OptionDef) int { return strings.Compare(a.Name, b.Name) })
	var b strings.Builder
	fmt.Fprintf(&b, "Supported %s options:\n", format)
	for _, d := range defs {
		left := fmt.Sprintf("%s=<%s>", d.Name, d.Type())
		fmt.Fprintf(&b, "  %-22s - %s\n", left, d.Help)
	}
	if format == "qcow2" {
		b.WriteString("\nBoth '_' and '-' are accepted in option names (zone.max-open-zones).\n")
	}
	return b.String()
}

// SetSecrets names the secrets the command line provides (qemu-img's
// --object secret,id=ID,...): encryption=on needs encrypt.key-secret to
// name one of them.
func (o *Options) SetSecrets(ids []string) { o.secrets = ids }

func (o *Options) has(name string) bool { _, ok := o.set[name]; return ok }

func (o *Options) num(name string, def uint64) uint64 {
	if v, ok := o.set[name]; ok {
		return v.num
	}
	return def
}

func (o *Options) str(name, def string) string {
	if v, ok := o.set[name]; ok {
		return v.text
	}
	return def
}

func (o *Options) on(name string) bool { return o.set[name].on }

// SecretIDs returns the ids of the secrets among qemu-img --object
// definitions ("secret,id=ID,data=DATA" or "...,file=FILE"); any other
// object type is refused.
func SecretIDs(objects []string) ([]string, error) {
	var ids []string
	for _, obj := range objects {
		items := SplitOptions(obj)
		typ := items[0]
		if t, ok := strings.CutPrefix(typ, "qom-type="); ok {
			typ = t
		}
		if typ != "secret" {
			return nil, &OptionError{Msg: fmt.Sprintf("Object type '%s' is not supported by zqimg (only secret)", typ), Global: true}
		}
		id := ""
		for _, it := range items[1:] {
			if v, ok := strings.CutPrefix(it, "id="); ok {
				id = v
			}
		}
		if id == "" {
			return nil, &OptionError{Msg: "Parameter 'id' is missing", Global: true}
		}
		ids = append(ids, id)
	}
	return ids, nil
}
