package ioshell

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/zqimg/zqimg/pkg/units"

	"github.com/zqimg/zqimg/pkg/blockdev"
	"github.com/zqimg/zqimg/pkg/image"
)

// OpenRequest says how to open an image: what the open command, qemu-io's
// command line and reopen ask for.
type OpenRequest struct {
	Path       string
	ReadOnly   bool
	ForceShare bool // -U: no locks, reading only
	// Snapshot (-s) sends writes to a temporary overlay, which is
	// discarded when the image is closed: the image itself is opened
	// read-only and never written.
	Snapshot bool
	Cache    string // cache mode; "" means the session's
	// Nested: the image at Path holds, as its guest data, the qcow2 image
	// to open (-o driver=qcow2,file.driver=qcow2,file.file.filename=PATH).
	Nested bool
	// Format is the image format: "" (qcow2) or "raw" (-f raw, -o
	// driver=raw, and the protocol drivers file, host_device and
	// host_cdrom, which open a file as raw data).
	Format string
	// Inject holds the blkdebug rules to carry out (see EventFunc).
	Inject []InjectRule
	// Compress puts qemu's compress filter over the qcow2 image: every
	// write is stored as compressed clusters.
	Compress bool
	// NoBacking opens a qcow2 image without its backing file (backing=null):
	// unallocated clusters read as zeroes, and writes that would need the
	// backing file's data are refused.
	NoBacking bool
	// NoLock: no image locks (-o locking=off, raw files only).
	NoLock bool
	// CacheSizes holds qcow2's cache options in bytes (cache-size,
	// l2-cache-size, refcount-cache-size, l2-cache-entry-size), as given;
	// see L2CacheBytes and CheckCacheEntrySize.
	CacheSizes map[string]uint64
	// NullSize and NullReadZeroes describe a null-co device (Format
	// "null-co": no file, writes discarded).
	NullSize       int64
	NullReadZeroes bool
	// BackingFormat, when not empty, overrides the format of the backing
	// file the image names (-o backing.driver=raw|qcow2).
	BackingFormat string
	// NodeNames holds the node names given to open ("node-name",
	// "file.node-name", "backing.node-name"), which reopen may repeat but
	// not change.
	NodeNames map[string]string
}

// optPair is one key=value of a qemu option list.
type optPair struct{ key, val string }

// parseOptList splits a qemu option list ("a=1,b=x,,y": ",," is a comma in
// a value); a key without "=" means key=on.
func parseOptList(s string) []optPair {
	var out []optPair
	var cur strings.Builder
	var parts []string
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	parts = append(parts, cur.String())
	for _, p := range parts {
		if p == "" {
			continue
		}
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			v = "on"
		}
		out = append(out, optPair{k, v})
	}
	return out
}

// parseBool parses a qemu boolean option value.
func parseBool(key, v string) (bool, error) {
	switch v {
	case "on", "yes", "true", "y":
		return true, nil
	case "off", "no", "false", "n":
		return false, nil
	}
	//lint:ignore ST1005 qemu's message
	return false, fmt.Errorf("Parameter '%s' expects 'on' or 'off'", key)
}

// errUnsupported is an option zqimg does not implement.
func errUnsupported(kv optPair) error {
	return fmt.Errorf("option '%s=%s' is not supported by zqimg", kv.key, kv.val)
}

// protocolCheck opens path as QEMU's protocol driver drv (file,
// host_device, host_cdrom) does before it would use it, and returns its
// error: a file that cannot be opened, a file driver on something that is
// not a regular file, a device driver on something that is not a device.
func protocolCheck(drv, path string, readOnly bool) error {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		var en syscall.Errno
		if errors.As(err, &en) {
			//lint:ignore ST1005 qemu's message
			return fmt.Errorf("Could not open '%s': %s", path, image.Strerror(en))
		}
		return fmt.Errorf("Could not open '%s': %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("Could not stat '%s': %w", path, err)
	}
	mode := st.Mode()
	switch drv {
	case "file":
		if !mode.IsRegular() {
			return fmt.Errorf("'file' driver requires '%s' to be a regular file", path)
		}
	default:
		if mode&fs.ModeDevice == 0 {
			return fmt.Errorf("'%s' driver requires '%s' to be either a character or block device", drv, path)
		}
	}
	return nil
}

// openRequest builds the request of the open command from its flags, its
// -o options and its file operand (path, "" when options name the file).
// It returns an error worded as qemu's when the options ask for something
// zqimg cannot open.
func (s *Shell) openRequest(p *parsedArgs, path string) (OpenRequest, error) {
	r := OpenRequest{Path: path, ReadOnly: p.has('r'), ForceShare: p.has('U'), Snapshot: p.has('s'), Cache: p.flags['t']}
	if p.has('n') {
		r.Cache = "none"
	}
	opts := parseOptList(p.flags['o'])
	if strings.HasPrefix(path, "json:") {
		jopts, err := parseJSONFilename(path)
		if err != nil {
			return r, err
		}
		r.Path = ""
		opts = append(jopts, opts...)
	}
	return requestFromOptions(r, opts)
}

// RequestFromJSON returns base with the options of a json: file name
// ("json:{'driver': 'qcow2', 'file': {'driver': 'file', 'filename': 'X'}}")
// applied, as qemu opens such a name.
func RequestFromJSON(base OpenRequest, name string) (OpenRequest, error) {
	opts, err := parseJSONFilename(name)
	if err != nil {
		return base, err
	}
	base.Path = ""
	return requestFromOptions(base, opts)
}

// RequestForPath returns base for the file name path, which may be a
// json: name or a blkdebug: name, as qemu reads them.
func RequestForPath(base OpenRequest, path string) (OpenRequest, error) {
	if strings.HasPrefix(path, "json:") {
		return RequestFromJSON(base, path)
	}
	base.Path = path
	return requestFromOptions(base, nil)
}

// OpenOperand opens an image operand of qemu-img as qemu-img does: a path,
// or a blkdebug: or json: name whose error injection (blkdebug's
// [inject-error] rules) zqimg carries out, or, with null, a json: name of
// the null-co driver ('driver': 'null-co', 'size': N, 'read-zeroes':
// true). Messages give the name as written.
func OpenOperand(name string, opts blockdev.Options, null bool) (*blockdev.Disk, error) {
	if !strings.HasPrefix(name, "blkdebug:") && !strings.HasPrefix(name, "json:") {
		return blockdev.Open(name, opts)
	}
	r, err := RequestForPath(OpenRequest{}, name)
	if err != nil {
		return nil, err
	}
	if r.Format == "null-co" && null {
		return blockdev.OpenNull(name, r.NullSize, r.NullReadZeroes), nil
	}
	if r.Path == "" || r.Nested || r.Compress || r.NoBacking || r.Format == "null-co" {
		return nil, fmt.Errorf("the block options of '%s' are not supported by zqimg", name)
	}
	opts.Event, opts.Name = r.EventFunc(), name
	if r.Format == "raw" {
		opts.Format = "raw"
	}
	return blockdev.Open(r.Path, opts)
}

// RequestFromOptions returns base with the block layer options of an
// option list ("driver=qcow2,file.filename=X": qemu-io --image-opts)
// applied.
func RequestFromOptions(base OpenRequest, list string) (OpenRequest, error) {
	base.Path = ""
	return requestFromOptions(base, parseOptList(list))
}

// requestFromOptions applies block layer options to r.
func requestFromOptions(r OpenRequest, opts []optPair) (OpenRequest, error) {
	for _, kv := range opts {
		if kv.key == "driver" && kv.val == "blkdebug" {
			// blkdebug over the node of its image.* options.
			var inner []optPair
			image := r.Path
			for _, o := range opts {
				k, isImage := strings.CutPrefix(o.key, "image.")
				switch {
				case isImage:
					inner = append(inner, optPair{k, o.val})
				case o.key == "image" || o.key == "x-image":
					image = o.val
				case o.key == "driver" || o.key == "node-name":
				default:
					rules, err := blkdebugOption(o)
					if err != nil {
						return r, err
					}
					if len(rules) > 0 {
						return r, errTopRules
					}
				}
			}
			if rest, ok := strings.CutPrefix(image, "blkdebug:"); ok {
				var err error
				var rules []InjectRule
				if image, rules, err = blkdebugFilename(rest); err != nil {
					return r, err
				}
				if len(rules) > 0 {
					return r, errTopRules
				}
			}
			r.Path = image
			return requestFromOptions(r, inner)
		}
	}
	for _, kv := range opts {
		if kv.key == "driver" && kv.val == "compress" {
			// The compress filter over the node of its file.* options.
			var inner []optPair
			for _, o := range opts {
				if k, ok := strings.CutPrefix(o.key, "file."); ok {
					inner = append(inner, optPair{k, o.val})
				} else if o.key != "driver" && o.key != "node-name" {
					return r, errUnsupported(o)
				}
			}
			r, err := requestFromOptions(r, inner)
			if err == nil && (r.Format != "" || r.Nested) {
				err = errors.New("the compress filter is only supported by zqimg over a qcow2 image")
			}
			r.Compress = true
			return r, err
		}
	}
	drv, fileDrv := "qcow2", ""
	if r.Format != "" {
		drv = r.Format
	}
	var filename, fileFilename, fileFileFilename string
	var direct, noFlush *bool
	var nullSize, nullZeroes string
	var fileLimits []optPair // blkdebug options of the file node
	for _, kv := range opts {
		if strings.HasPrefix(kv.key, "file.image.") {
			continue // blkdebug's image: see file.driver=blkdebug below
		}
		switch kv.key {
		case "size":
			nullSize = kv.val
		case "cache-size", "l2-cache-size", "refcount-cache-size", "l2-cache-entry-size":
			v, err := units.ParseSize(kv.val)
			if err != nil {
				//lint:ignore ST1005 qemu's message
				return r, fmt.Errorf("Parameter '%s' expects a non-negative number below 2^64", kv.key)
			}
			if r.CacheSizes == nil {
				r.CacheSizes = map[string]uint64{}
			}
			r.CacheSizes[kv.key] = v
		case "cache-clean-interval":
			// zqimg's caches hold no memory worth giving back: accepted.
			if _, err := strconv.ParseUint(kv.val, 10, 32); err != nil {
				//lint:ignore ST1005 qemu's message
				return r, fmt.Errorf("Parameter '%s' expects a non-negative number", kv.key)
			}
		case "read-zeroes":
			if _, err := parseBool(kv.key, kv.val); err != nil {
				return r, err
			}
			nullZeroes = kv.val
		case "driver":
			drv = kv.val
		case "file.driver":
			fileDrv = kv.val
		case "file.align", "file.max-transfer", "file.opt-write-zero", "file.max-write-zero",
			"file.opt-discard", "file.max-discard", "file.config", "file.inject-error", "file.set-state":
			fileLimits = append(fileLimits, optPair{strings.TrimPrefix(kv.key, "file."), kv.val})
		case "filename":
			filename = kv.val
		case "file.filename":
			fileFilename = kv.val
		case "file.file.filename":
			fileFileFilename = kv.val
		case "backing":
			// backing=null (json:{..., 'backing': null}): no backing file;
			// unallocated clusters read as zeroes.
			if kv.val != "null" {
				return r, errUnsupported(kv)
			}
			r.NoBacking = true
		case "backing.driver":
			if kv.val != "qcow2" && kv.val != "raw" {
				return r, errUnsupported(kv)
			}
			r.BackingFormat = kv.val
		case "file.file.driver":
			if kv.val != "file" {
				return r, errUnsupported(kv)
			}
		case "node-name", "file.node-name", "backing.node-name":
			if r.NodeNames == nil {
				r.NodeNames = map[string]string{}
			}
			r.NodeNames[kv.key] = kv.val
		case "read-only":
			b, err := parseBool(kv.key, kv.val)
			if err != nil {
				return r, err
			}
			r.ReadOnly = b
		case "cache.direct", "cache.no-flush":
			b, err := parseBool(kv.key, kv.val)
			if err != nil {
				return r, err
			}
			if kv.key == "cache.direct" {
				direct = &b
			} else {
				noFlush = &b
			}
		case "auto-read-only":
			if _, err := parseBool(kv.key, kv.val); err != nil {
				return r, err
			}
		case "locking", "file.locking":
			switch {
			case kv.val == "on" || kv.val == "auto":
			case kv.val == "off" && (kv.key == "locking" && drv != "qcow2" || kv.key == "file.locking" && drv == "raw"):
				// Only a raw file may be opened without locks (a qcow2
				// image is always locked while it is written).
				r.NoLock = true
			default:
				return r, errUnsupported(kv)
			}
		default:
			return r, errUnsupported(kv)
		}
	}
	if drv != "null-co" && (nullSize != "" || nullZeroes != "") {
		k := "size"
		if nullSize == "" {
			k = "read-zeroes"
		}
		return r, errUnsupported(optPair{k, nullSize + nullZeroes})
	}
	switch drv {
	case "qcow2":
		r.Format = ""
	case "null-co":
		r.Format = "null-co"
		r.NullSize = 1 << 30
		if nullSize != "" {
			n, err := parseOffset(nullSize)
			if err != nil {
				//lint:ignore ST1005 qemu's message
				return r, fmt.Errorf("Parameter 'size' expects a non-negative number below 2^64")
			}
			r.NullSize = n
		}
		r.NullReadZeroes, _ = parseBool("read-zeroes", nullZeroes)
		return r, r.setCacheOptions(direct, noFlush)
	case "raw":
		r.Format = "raw"
	case "file", "host_device", "host_cdrom":
		r.Format = "raw"
		if r.Path == "" {
			r.Path = filename
		}
		if r.Path == "" {
			//lint:ignore ST1005 qemu's message
			return r, fmt.Errorf("The '%s' block driver requires a file name", drv)
		}
		if err := protocolCheck(drv, r.Path, r.ReadOnly); err != nil {
			return r, err
		}
		return r, r.setCacheOptions(direct, noFlush)
	default:
		return r, errUnsupported(optPair{"driver", drv})
	}
	if fileDrv != "blkdebug" {
		for _, kv := range opts {
			if strings.HasPrefix(kv.key, "file.image.") {
				return r, errUnsupported(kv)
			}
		}
	} else {
		// blkdebug between the image and its file: file.image.filename.
		fileDrv = ""
		for _, kv := range opts {
			if k, ok := strings.CutPrefix(kv.key, "file.image."); ok {
				switch k {
				case "filename":
					fileFilename = kv.val
				case "driver":
					if kv.val != "file" {
						return r, errUnsupported(kv)
					}
				default:
					return r, errUnsupported(kv)
				}
			}
		}
	}
	switch fileDrv {
	case "", "file":
		if fileFileFilename != "" {
			return r, errUnsupported(optPair{"file.file.filename", fileFileFilename})
		}
	case "qcow2":
		// A qcow2 image stored in a qcow2 image.
		if r.Format == "raw" {
			return r, errUnsupported(optPair{"file.driver", fileDrv})
		}
		r.Nested = true
		if fileFileFilename == "" {
			return r, errors.New("file.file.filename is needed with file.driver=qcow2")
		}
		fileFilename = fileFileFilename
	default:
		return r, errUnsupported(optPair{"file.driver", fileDrv})
	}
	for _, n := range []string{filename, fileFilename} {
		if n == "" {
			continue
		}
		if r.Path != "" && r.Path != n {
			return r, fmt.Errorf("the file is named twice: '%s' and '%s'", r.Path, n)
		}
		r.Path = n
	}
	blk := false
	if rest, ok := strings.CutPrefix(r.Path, "blkdebug:"); ok {
		p, rules, err := blkdebugFilename(rest)
		if err != nil {
			return r, err
		}
		r.Path, blk = p, true
		r.Inject = append(r.Inject, rules...)
	}
	for _, kv := range opts {
		if strings.HasPrefix(kv.key, "file.image.") {
			blk = true
		}
	}
	for _, kv := range fileLimits {
		if !blk {
			return r, errUnsupported(optPair{"file." + kv.key, kv.val})
		}
		rules, err := blkdebugOption(kv)
		if err != nil {
			return r, err
		}
		r.Inject = append(r.Inject, rules...)
	}
	if r.Path == "" {
		//lint:ignore ST1005 qemu's message
		return r, errors.New("The 'file' block driver requires a file name")
	}
	return r, r.setCacheOptions(direct, noFlush)
}

// errTopRules refuses blkdebug rules above the qcow2 driver: the events
// are raised by the qcow2 driver on its file, which such a blkdebug never
// sees.
var errTopRules = errors.New("blkdebug rules above the qcow2 driver are not supported by zqimg (put blkdebug under it: blkdebug:CONFIG:FILE)")

// InjectRule is a blkdebug [inject-error] rule zqimg carries out: when
// the image reaches Event, the work fails with Errno (once: the first
// time only).
type InjectRule struct {
	Event string
	Errno syscall.Errno
	Once  bool
}

// EventFunc returns the image's event hook (image.Options.Event) that
// carries out the rules of r, or nil when it has none.
func (r *OpenRequest) EventFunc() func(string) error {
	if len(r.Inject) == 0 {
		return nil
	}
	rules := append([]InjectRule(nil), r.Inject...)
	spent := make([]bool, len(rules))
	return func(ev string) error {
		for i, rule := range rules {
			if rule.Event != ev || spent[i] {
				continue
			}
			if rule.Once {
				spent[i] = true
			}
			return fmt.Errorf("blkdebug: injected error on event %s: %w", ev, rule.Errno)
		}
		return nil
	}
}

// blkdebugFilename returns the image of a "blkdebug:CONFIG:FILE" name
// (rest is what follows "blkdebug:") and the rules of its configuration.
func blkdebugFilename(rest string) (string, []InjectRule, error) {
	cfg, file, ok := strings.Cut(rest, ":")
	if !ok {
		//lint:ignore ST1005 qemu's message
		return "", nil, errors.New("blkdebug requires both config file and image path")
	}
	var rules []InjectRule
	if cfg != "" {
		var err error
		if rules, err = blkdebugOption(optPair{"config", cfg}); err != nil {
			return "", nil, err
		}
	}
	return file, rules, nil
}

// blkdebugOption checks an option of qemu's blkdebug driver and returns
// the rules of a configuration file. The request limits (align,
// max-transfer, opt-/max-write-zero, opt-/max-discard) only change how
// qemu splits requests, not what they do, and are accepted (as sizes).
// Of the rules, zqimg carries out [inject-error] on the events l2_update
// (an L2 table written back) and read_aio (guest data read from the file), with errno and once; other events, sectors,
// states and [set-state] are refused.
func blkdebugOption(kv optPair) ([]InjectRule, error) {
	switch kv.key {
	case "align", "max-transfer", "opt-write-zero", "max-write-zero", "opt-discard", "max-discard":
		if _, err := units.ParseSize(kv.val); err != nil {
			//lint:ignore ST1005 qemu's message
			return nil, fmt.Errorf("Parameter '%s' expects a non-negative number below 2^64", kv.key)
		}
		return nil, nil
	case "config":
		b, err := os.ReadFile(kv.val)
		if err != nil {
			//lint:ignore ST1005 qemu's message
			return nil, fmt.Errorf("Could not read blkdebug config file: %w", err)
		}
		return parseBlkdebugConfig(string(b), kv.val)
	}
	return nil, fmt.Errorf("blkdebug option '%s=%s' is not supported by zqimg", kv.key, kv.val)
}

// parseBlkdebugConfig parses a blkdebug configuration file (name is for
// messages).
func parseBlkdebugConfig(text, name string) ([]InjectRule, error) {
	var rules []InjectRule
	var cur *InjectRule
	var event bool
	finish := func() error {
		if cur != nil && !event {
			return fmt.Errorf("blkdebug config %s: an [inject-error] rule needs an event", name)
		}
		return nil
	}
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' {
			continue
		}
		if strings.HasPrefix(l, "[") {
			if err := finish(); err != nil {
				return nil, err
			}
			if l != "[inject-error]" {
				return nil, fmt.Errorf("blkdebug rule %s in %s: not supported by zqimg (only [inject-error])", l, name)
			}
			rules = append(rules, InjectRule{Errno: syscall.EIO})
			cur, event = &rules[len(rules)-1], false
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok || cur == nil {
			return nil, fmt.Errorf("blkdebug config %s: cannot parse %q", name, l)
		}
		k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"`)
		switch k {
		case "event":
			if v != image.EventL2Update && v != image.EventReadAIO {
				return nil, fmt.Errorf("blkdebug event '%s' in %s: not supported by zqimg (only %s and %s)", v, name, image.EventL2Update, image.EventReadAIO)
			}
			cur.Event, event = v, true
		case "errno":
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("blkdebug config %s: errno %q is not a positive number", name, v)
			}
			cur.Errno = syscall.Errno(n)
		case "once":
			b, err := parseBool(k, v)
			if err != nil {
				return nil, err
			}
			cur.Once = b
		case "immediately":
			// Whether qemu fails the request at once or when it completes:
			// zqimg's requests are synchronous, the same thing.
			if _, err := parseBool(k, v); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("blkdebug config %s: '%s' is not supported by zqimg", name, k)
		}
	}
	if err := finish(); err != nil {
		return nil, err
	}
	return rules, nil
}

// L2CacheBytes returns the L2 table cache budget the qcow2 cache options
// ask for (0: the default), or their error, worded as qemu's: cache-size
// is the total of the L2 and refcount caches.
func (r *OpenRequest) L2CacheBytes() (int, error) {
	c := r.CacheSizes
	combined, combinedSet := c["cache-size"]
	l2, l2Set := c["l2-cache-size"]
	rc, rcSet := c["refcount-cache-size"]
	switch {
	case combinedSet && l2Set && rcSet:
		return 0, errors.New("cache-size, l2-cache-size and refcount-cache-size may not be set at the same time")
	case combinedSet && l2Set && l2 > combined:
		return 0, errors.New("l2-cache-size may not exceed cache-size")
	case combinedSet && rcSet && rc > combined:
		return 0, errors.New("refcount-cache-size may not exceed cache-size")
	case combinedSet && !l2Set:
		l2 = combined - rc
	case !combinedSet && !l2Set:
		return 0, nil
	}
	// At least one byte: the image keeps its minimum of tables.
	return int(max(min(l2, 1<<40), 1)), nil
}

// CheckCacheEntrySize checks l2-cache-entry-size against the cluster size
// of the image, as qemu does.
func (r *OpenRequest) CheckCacheEntrySize(clusterSize int64) error {
	e, ok := r.CacheSizes["l2-cache-entry-size"]
	if !ok {
		return nil
	}
	if e < 512 || e > uint64(clusterSize) || e&(e-1) != 0 {
		return fmt.Errorf("L2 cache entry size must be a power of two between 512 and the cluster size (%d)", clusterSize)
	}
	return nil
}

// setCacheOptions changes the cache mode by the options cache.direct and
// cache.no-flush (nil: not given).
func (r *OpenRequest) setCacheOptions(direct, noFlush *bool) error {
	if direct == nil && noFlush == nil {
		return nil
	}
	mode, err := image.ParseCacheMode(r.Cache)
	if r.Cache == "" {
		mode, err = image.CacheWriteThrough, nil
	}
	if err != nil {
		return err
	}
	r.Cache = withCacheOptions(mode, direct, noFlush).String()
	return nil
}

// withCacheOptions changes mode by the options cache.direct and
// cache.no-flush (nil: unchanged), keeping whether it is writethrough.
func withCacheOptions(mode image.CacheMode, direct, noFlush *bool) image.CacheMode {
	d, nf, wt := mode.Direct(), mode.NoFlush(), mode.WriteThrough()
	if direct != nil {
		d = *direct
	}
	if noFlush != nil {
		nf = *noFlush
	}
	switch {
	case nf:
		return image.CacheUnsafe
	case d && wt:
		return image.CacheDirectSync
	case d:
		return image.CacheNone
	case wt:
		return image.CacheWriteThrough
	}
	return image.CacheWriteBack
}

// open opens an image when none is open (qemu-io's open): the file named
// by the operand or by the -o options (filename, file.filename), with
// qemu-io's flags. Of the block layer's options, zqimg takes the qcow2
// driver (and a qcow2 image stored in a qcow2 image), node names,
// read-only, the cache options; other drivers are checked as QEMU does
// (file, host_device, host_cdrom) and then refused.
func (s *Shell) open(p *parsedArgs) error {
	if p.nargs == 0 {
		s.Out.Flush()
		fmt.Fprintf(s.Err, "bad argument count 0 to open, expected at least 1 arguments\n")
		return errCommandFailed
	}
	if s.Dev != nil {
		s.Out.Flush()
		fmt.Fprintf(s.Err, "%s: file open already, try 'help close'\n", s.Prog)
		return errCommandFailed
	}
	if len(p.operands) > 1 || s.Open == nil {
		s.usage(lookup("open"))
		return errCommandFailed
	}
	var path string
	if len(p.operands) == 1 {
		path = p.operands[0]
	}
	cant := func(err error) error {
		s.Out.Flush()
		if path != "" {
			fmt.Fprintf(s.Err, "%s: can't open device %s: %v\n", s.Prog, path, err)
		} else {
			fmt.Fprintf(s.Err, "%s: can't open: %v\n", s.Prog, err)
		}
		return errCommandFailed
	}
	if t, ok := p.flags['t']; ok {
		if _, err := image.ParseCacheMode(t); err != nil {
			return s.reportError(err)
		}
	}
	r, err := s.openRequest(p, path)
	if err != nil {
		return cant(err)
	}
	d, err := s.Open(r)
	if err != nil {
		return cant(err)
	}
	s.Dev = d
	s.Current = r
	s.ForceShare = s.ForceShare || r.ForceShare
	return nil
}

// reopen reopens the image with other flags or options (qemu-io's
// reopen): -r or -w, -c cache mode, -o options. The image is flushed and
// closed, then opened again; if that fails, it is opened as it was. Node
// names and drivers cannot change; options zqimg does not implement are
// refused.
func (s *Shell) reopen(p *parsedArgs) error {
	if s.Open == nil || len(p.operands) > 0 {
		s.usage(lookup("reopen"))
		return errCommandFailed
	}
	if p.has('r') && p.has('w') {
		//lint:ignore ST1005 qemu's message
		return s.reportError(errors.New("Only one -r/-w option may be given"))
	}
	r := s.Current
	mode, err := image.ParseCacheMode(r.Cache)
	if r.Cache == "" {
		mode, err = image.CacheWriteThrough, nil
	}
	if err != nil {
		return s.reportError(err)
	}
	if c, ok := p.flags['c']; ok {
		if mode, err = image.ParseCacheMode(c); err != nil {
			return s.reportError(err)
		}
	}
	hasRW := p.has('r') || p.has('w')
	ro := r.ReadOnly
	if hasRW {
		ro = p.has('r')
	}
	opts := parseOptList(p.flags['o'])
	var direct, noFlush *bool
	for _, kv := range opts {
		switch kv.key {
		case "read-only":
			if hasRW {
				//lint:ignore ST1005 qemu's message
				return s.reportError(errors.New("Cannot set both -r/-w and 'read-only'"))
			}
		case "cache.direct", "cache.no-flush":
			if p.has('c') {
				//lint:ignore ST1005 qemu's message
				return s.reportError(errors.New("Cannot set both -c and the cache options"))
			}
		}
	}
	for _, kv := range opts {
		switch kv.key {
		case "read-only":
			b, err := parseBool(kv.key, kv.val)
			if err != nil {
				return s.reportError(err)
			}
			if b && !r.ReadOnly {
				// qemu-io's users of the image keep writing: only -r drops them.
				return s.reportError(fmt.Errorf("Read-only block node '%s' cannot support read-write users", s.nodeName("node-name")))
			}
			ro = b
		case "cache.direct", "cache.no-flush", "auto-read-only":
			b, err := parseBool(kv.key, kv.val)
			if err != nil {
				return s.reportError(err)
			}
			switch kv.key {
			case "cache.direct":
				direct = &b
			case "cache.no-flush":
				noFlush = &b
			}
		case "node-name", "file.node-name", "backing.node-name":
			if r.NodeNames[kv.key] != kv.val {
				//lint:ignore ST1005 qemu's message
				return s.reportError(errors.New("Cannot change the option 'node-name'"))
			}
		case "driver", "file.driver", "backing.driver":
			if kv.val != s.driverOf(kv.key) {
				//lint:ignore ST1005 qemu's message
				return s.reportError(errors.New("Cannot change the option 'driver'"))
			}
		case "lazy-refcounts", "cache-size", "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size",
			"cache-clean-interval", "overlap-check", "pass-discard-request", "pass-discard-snapshot",
			"pass-discard-other", "discard-no-unref", "discard", "detect-zeroes":
			return s.reportError(errUnsupported(kv))
		default:
			name := kv.key
			if i := strings.LastIndexByte(name, '.'); i >= 0 {
				name = name[i+1:]
			}
			//lint:ignore ST1005 qemu's message
			return s.reportError(fmt.Errorf("Cannot change the option '%s'", name))
		}
	}
	mode = withCacheOptions(mode, direct, noFlush)
	if ro == r.ReadOnly && mode.String() == r.Cache {
		return nil
	}
	if r.Snapshot || r.Nested {
		return s.reportError(errors.New("reopening an image opened with -s or inside another image is not supported by zqimg"))
	}
	next := r
	next.ReadOnly, next.Cache = ro, mode.String()
	old := s.Dev
	s.Dev = nil
	if err := old.Close(); err != nil {
		return s.reportError(fmt.Errorf("flushing before the reopen: %w", err))
	}
	d, err := s.Open(next)
	if err != nil {
		// Back to the image as it was.
		if d2, err2 := s.Open(r); err2 == nil {
			s.Dev = d2
		}
		return s.reportError(err)
	}
	s.Dev, s.Current = d, next
	return nil
}

// nodeName returns the node name given for key at open, or the one QEMU
// would have generated.
func (s *Shell) nodeName(key string) string {
	if n, ok := s.Current.NodeNames[key]; ok {
		return n
	}
	return "#block000"
}

// driverOf returns the driver of the open image's node named by an option
// key: driver (qcow2), file.driver (file), backing.driver (the backing
// file's format, "" when there is none).
func (s *Shell) driverOf(key string) string {
	switch key {
	case "driver":
		if s.Current.Format == "raw" {
			return "raw"
		}
		return "qcow2"
	case "file.driver":
		if s.Current.Nested {
			return "qcow2"
		}
		return "file"
	}
	d, ok := asQcow2(s.Dev)
	if !ok {
		return ""
	}
	bq, braw := d.Image().Backing()
	switch {
	case bq != nil:
		return "qcow2"
	case braw != nil:
		return "raw"
	}
	return ""
}

// PlainImage resolves a qemu-img file operand as qemu would open it: an
// option list (--image-opts: "driver=qcow2,file.filename=X"), a json:
// name, or a path. It returns the path and format ("" to probe) when the
// result is a plain qcow2 or raw image (blkdebug without rules passes
// through, as qemu's does); anything else (error injection, filters,
// nested images, null devices) is refused.
func PlainImage(arg string, imageOpts bool) (path, format string, err error) {
	var r OpenRequest
	switch {
	case imageOpts:
		r, err = RequestFromOptions(r, arg)
	case strings.HasPrefix(arg, "json:") || strings.HasPrefix(arg, "blkdebug:"):
		r, err = RequestForPath(r, arg)
	default:
		return arg, "", nil
	}
	if err != nil {
		return "", "", err
	}
	plain := r.Path != "" && (r.Format == "" || r.Format == "raw" || r.Format == "qcow2") &&
		!r.Nested && len(r.Inject) == 0 && !r.Compress && !r.NoBacking && !r.Snapshot && r.BackingFormat == ""
	if !plain {
		return "", "", fmt.Errorf("the block options of '%s' are not supported by zqimg (a plain qcow2 or raw image only)", arg)
	}
	if r.Format == "" && imageOpts {
		r.Format = "qcow2"
	}
	return r.Path, r.Format, nil
}
