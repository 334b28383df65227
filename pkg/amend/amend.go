// Package amend changes options of an existing image, as qemu-img amend
// does: compat (the qcow2 version, up or down), lazy_refcounts, size, and
// the zone limits of zoned images.
package amend

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/zqimg/zqimg/pkg/create"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/units"
	"github.com/zqimg/zqimg/pkg/zone"
)

// ErrHelp is returned by ParseOptions when the options ask for help.
var ErrHelp = errors.New("help requested")

// OptionError is an option that cannot be amended or is malformed. Hint,
// when set, is printed on the next line as qemu-img does.
type OptionError struct {
	Msg  string
	Hint string
}

func (e *OptionError) Error() string {
	if e.Hint != "" {
		return e.Msg + "\n" + e.Hint
	}
	return e.Msg
}

// Options are the parsed -o options; nil fields are not changed.
type Options struct {
	LazyRefcounts *bool
	Size          *uint64
	Limits        zone.Limits
	// Compat ("0.10"/"v2" or "1.1"/"v3") changes the version;
	// RefcountBits is the new refcount width (a power of two up to 64;
	// not 16 needs version 3): the refcount structure is rewritten.
	Compat       string
	RefcountBits *uint64
	// BackingFile and BackingFmt are accepted only when they name the
	// current backing file and format (qemu-img amend cannot change
	// them either: that is rebase's job).
	BackingFile, BackingFmt *string
	// DataFile and DataFileRaw are refused with qemu-img's words: zqimg
	// opens no image with an external data file, and qemu-img sets
	// neither on an image without one.
	DataFile    *string
	DataFileRaw *bool

	// Progress, when set, receives qemu-img amend -p's progress: the work
	// done of the total (a version change reports its steps).
	Progress func(done, total int64)
}

// Def is an option amend takes.
type Def struct{ Name, Type, Help string }

// defs lists the options zqimg amend supports, as -o help prints them.
var defs = []Def{
	{"backing_file", "str", "File name of a base image; only the current one"},
	{"backing_fmt", "str", "Image format of the base image; only the current one"},
	{"compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"},
	{"data_file", "str", "File name of an external data file; refused (no image here has one)"},
	{"data_file_raw", "bool (on/off)", "The external data file must stay valid as a raw image; only off"},
	{"lazy_refcounts", "bool (on/off)", "Postpone refcount updates"},
	{"refcount_bits", "num", "Width of a reference count entry in bits"},
	{"size", "size", "Virtual disk size"},
	{"zone.max_active_zones", "num", "max active zones (0: no limit)"},
	{"zone.max_append_bytes", "size", "max append bytes"},
	{"zone.max_open_zones", "num", "max open zones (0: no limit)"},
}

// createOnly are options that only qemu-img create takes.
var createOnly = []string{"cluster_size", "extended_l2", "preallocation", "compression_type", "encryption",
	"zone.mode", "zone.size", "zone.capacity", "zone.conventional_zones",
	"encrypt.format", "encrypt.cipher-alg", "encrypt.cipher-mode", "encrypt.ivgen-alg", "encrypt.ivgen-hash-alg", "encrypt.hash-alg"}

// qemuAmend are options qemu-img amend takes that zqimg does not.
var qemuAmend = []string{
	"encrypt.iter-time", "encrypt.keyslot", "encrypt.new-secret", "encrypt.old-secret", "encrypt.state", "encrypt.key-secret"}

// Help returns the -o help text.
func Help() string {
	var b strings.Builder
	b.WriteString("Amend options for 'qcow2':\n")
	for _, d := range defs {
		fmt.Fprintf(&b, "  %-22s - %s\n", d.Name+"=<"+d.Type+">", d.Help)
	}
	return b.String()
}

func canonical(name string) string {
	if strings.HasPrefix(name, "zone.") {
		return strings.ReplaceAll(name, "-", "_")
	}
	return name
}

// ParseOptions parses the -o arguments (later values win).
func ParseOptions(lists []string) (*Options, error) {
	if len(lists) == 0 {
		return nil, &OptionError{Msg: "Must specify options (-o)"}
	}
	for _, l := range lists {
		for _, item := range create.SplitOptions(l) {
			if item == "help" || item == "?" {
				return nil, ErrHelp
			}
		}
	}
	o := &Options{}
	for _, l := range lists {
		if l == "" || l[0] == ',' {
			return nil, &OptionError{Msg: "Invalid option list: " + l}
		}
		for _, item := range create.SplitOptions(l) {
			if item == "" {
				continue
			}
			name, val, hasVal := strings.Cut(item, "=")
			name = canonical(name)
			switch {
			case slices.Contains(createOnly, name):
				return nil, &OptionError{Msg: fmt.Sprintf("Invalid parameter '%s'", name), Hint: "This option is only supported for image creation"}
			case slices.Contains(qemuAmend, name):
				return nil, &OptionError{Msg: fmt.Sprintf("Parameter '%s' is not supported by zqimg amend", name)}
			}
			if !hasVal && name != "lazy_refcounts" {
				if !slices.ContainsFunc(defs, func(d Def) bool { return d.Name == name }) {
					return nil, &OptionError{Msg: fmt.Sprintf("Invalid parameter '%s'", name)}
				}
				return nil, &OptionError{Msg: fmt.Sprintf("Parameter '%s' expects a value", name)}
			}
			if err := o.set(name, val, hasVal); err != nil {
				return nil, err
			}
		}
	}
	return o, nil
}

func (o *Options) set(name, val string, hasVal bool) error {
	size := func() (*uint64, error) {
		n, err := units.ParseSize(val)
		if err != nil {
			return nil, &OptionError{Msg: fmt.Sprintf("Parameter '%s' expects a non-negative number below 2^64", name),
				Hint: "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively."}
		}
		return &n, nil
	}
	num := func() (*uint64, error) {
		n, err := strconv.ParseUint(val, 0, 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return nil, &OptionError{Msg: fmt.Sprintf("Value '%s' is too large for parameter '%s'", val, name)}
			}
			return nil, &OptionError{Msg: fmt.Sprintf("Parameter '%s' expects a number", name)}
		}
		return &n, nil
	}
	var err error
	switch name {
	case "lazy_refcounts":
		var on bool
		switch val {
		case "on", "yes", "true", "y":
			on = true
		case "off", "no", "false", "n":
		default:
			if hasVal {
				return &OptionError{Msg: "Parameter 'lazy_refcounts' expects 'on' or 'off'"}
			}
			on = true
		}
		o.LazyRefcounts = &on
	case "size":
		o.Size, err = size()
	case "compat":
		o.Compat = val
	case "backing_file":
		o.BackingFile = &val
	case "backing_fmt":
		o.BackingFmt = &val
	case "data_file":
		o.DataFile = &val
	case "data_file_raw":
		var on bool
		switch val {
		case "on", "yes", "true", "y":
			on = true
		case "off", "no", "false", "n":
		default:
			return &OptionError{Msg: "Parameter 'data_file_raw' expects 'on' or 'off'"}
		}
		o.DataFileRaw = &on
	case "refcount_bits":
		o.RefcountBits, err = num()
	case "zone.max_open_zones":
		o.Limits.MaxOpenZones, err = num()
	case "zone.max_active_zones":
		o.Limits.MaxActiveZones, err = num()
	case "zone.max_append_bytes":
		o.Limits.MaxAppendBytes, err = size()
	default:
		return &OptionError{Msg: fmt.Sprintf("Invalid parameter '%s'", name)}
	}
	return err
}

// Amend opens the image at path and applies o, in QEMU's order: an
// upgrade to version 3 (image.Upgrade), a new refcount width
// (image.ChangeRefcountWidth), the zone limits and lazy
// refcounts in one atomic header write, a size change (a resize, growing
// or shrinking as qemu-img amend does), a downgrade to version 2
// (image.Downgrade). Each is crash-safe on its own. What would be refused
// (an unknown compat, lazy refcounts on version 2, a downgrade the image
// does not allow at its final size) is refused before anything is
// written.
// It returns the warnings of values clamped as create clamps them.
func Amend(path string, o *Options) (warnings []string, err error) {
	// The backing file is opened for a size change: a growth over a
	// longer backing file zeroes the added area (image.Resize).
	d, err := zone.Open(path, image.Options{NoBacking: o.Size == nil, Cache: image.CacheWriteBack})
	if err != nil {
		return nil, &OpenError{Path: path, Err: err}
	}
	defer func() {
		if cerr := d.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	img := d.Image()
	h := img.Header()
	cur := h.Version
	want := cur
	if o.Compat != "" {
		switch o.Compat {
		case "0.10", "v2":
			want = 2
		case "1.1", "v3":
			want = 3
		default:
			return nil, &OptionError{Msg: fmt.Sprintf("Unknown compatibility level %s", o.Compat)}
		}
	}
	// A new refcount width (0: unchanged): refused before anything is
	// written when it is not a width, needs version 3, or cannot hold a
	// refcount.
	rcBits := 0
	if o.RefcountBits != nil && *o.RefcountBits != 1<<h.RefcountOrder {
		rcBits = int(min(*o.RefcountBits, 128))
		if err := image.ValidRefcountWidth(rcBits); err != nil {
			return nil, &OptionError{Msg: err.Error()}
		}
		if want < 3 && rcBits != 16 {
			return nil, &OptionError{Msg: "Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)"}
		}
		if err := img.CheckRefcountWidth(rcBits); err != nil {
			var we *image.RefcountWidthError
			if errors.As(err, &we) {
				return nil, &OptionError{Msg: err.Error()}
			}
			return nil, err
		}
	}
	if o.BackingFile != nil || o.BackingFmt != nil {
		// As QEMU compares them: an option not given is no name.
		name, format := img.BackingFile()
		if deref(o.BackingFile) != name || deref(o.BackingFmt) != format {
			return nil, &OptionError{Msg: "Cannot amend the backing file", Hint: "You can use 'qemu-img rebase' instead."}
		}
	}
	if o.DataFile != nil {
		return nil, &OptionError{Msg: "data-file can only be set for images that use an external data file"}
	}
	if o.DataFileRaw != nil && *o.DataFileRaw {
		return nil, &OptionError{Msg: "data-file-raw cannot be set on existing images"}
	}
	lazy := o.LazyRefcounts
	if lazy != nil && *lazy == (h.CompatibleFeatures&image.CompatLazyRefcounts != 0) {
		lazy = nil // unchanged (QEMU changes only what differs)
	}
	if lazy != nil && *lazy && want < 3 {
		return nil, &OptionError{Msg: "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)"}
	}
	if want < cur {
		// Refused before anything is written (QEMU downgrades last,
		// after a resize; the checks use the size the image will have).
		size := uint64(d.Size())
		if o.Size != nil {
			size = *o.Size
		}
		if err := img.CheckDowngrade(size, rcBits); err != nil {
			return nil, err
		}
	}
	if o.Limits != (zone.Limits{}) && !d.Zoned() {
		name := "zone.max_open_zones"
		switch {
		case o.Limits.MaxActiveZones != nil:
			name = "zone.max_active_zones"
		case o.Limits.MaxAppendBytes != nil:
			name = "zone.max_append_bytes"
		}
		return nil, &OptionError{Msg: fmt.Sprintf("Invalid parameter '%s'", name), Hint: "The image is not zoned: zone options apply to zoned images only"}
	}
	// QEMU's order: upgrade first, then the refcount width, the header
	// options and the size, downgrade last.
	if want > cur {
		if err := img.Upgrade(image.VersionOptions{Progress: o.Progress}); err != nil {
			return nil, err
		}
	}
	if rcBits != 0 {
		if err := img.ChangeRefcountWidth(rcBits); err != nil {
			return nil, err
		}
	}
	if lazy != nil || o.Limits != (zone.Limits{}) {
		if warnings, err = d.Amend(o.Limits, lazy); err != nil {
			return nil, err
		}
	}
	if o.Size != nil && *o.Size != uint64(d.Size()) {
		if err := d.Resize(*o.Size, true); err != nil {
			return warnings, err
		}
	}
	if want < cur {
		if err := img.Downgrade(image.VersionOptions{Progress: o.Progress}); err != nil {
			return warnings, err
		}
	}
	return warnings, nil
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// OpenError reports an image that could not be opened.
type OpenError struct {
	Path string
	Err  error
}

func (e *OpenError) Error() string { return fmt.Sprintf("Could not open '%s': %v", e.Path, e.Err) }
func (e *OpenError) Unwrap() error { return e.Err }
