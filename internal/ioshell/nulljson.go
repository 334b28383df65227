package ioshell

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"
)

// parseJSONFilename parses a json: file name into block layer options,
// nested objects flattened to dotted keys ({"file": {"filename": "x"}}:
// file.filename=x), as qemu does. Strings may be single-quoted, as qemu's
// JSON parser allows.
func parseJSONFilename(name string) ([]optPair, error) {
	text, ok := strings.CutPrefix(name, "json:")
	if !ok {
		return nil, fmt.Errorf("%s is not a json: file name", name)
	}
	d := json.NewDecoder(bytes.NewReader(singleToDouble(text)))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		//lint:ignore ST1005 qemu's message
		return nil, fmt.Errorf("Could not parse the JSON options: %w", err)
	}
	var out []optPair
	if err := flatten("", m, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// flatten appends the options of m, their keys prefixed, in key order.
func flatten(prefix string, m map[string]any, out *[]optPair) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch v := m[k].(type) {
		case map[string]any:
			if err := flatten(prefix+k+".", v, out); err != nil {
				return err
			}
		case string:
			*out = append(*out, optPair{prefix + k, v})
		case json.Number:
			*out = append(*out, optPair{prefix + k, v.String()})
		case nil:
			// null: no node ('backing': null opens without a backing file).
			*out = append(*out, optPair{prefix + k, "null"})
		case bool:
			b := "off"
			if v {
				b = "on"
			}
			*out = append(*out, optPair{prefix + k, b})
		default:
			return fmt.Errorf("option '%s%s': lists are not supported by zqimg", prefix, k)
		}
	}
	return nil
}

// singleToDouble rewrites single-quoted JSON strings as double-quoted ones.
func singleToDouble(s string) []byte {
	var b bytes.Buffer
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == 0 && (c == '\'' || c == '"'):
			quote = c
			b.WriteByte('"')
		case quote != 0 && c == '\\' && i+1 < len(s):
			if s[i+1] == '\'' {
				b.WriteByte('\'')
			} else {
				b.WriteByte(c)
				b.WriteByte(s[i+1])
			}
			i++
		case quote != 0 && c == quote:
			quote = 0
			b.WriteByte('"')
		case quote == '\'' && c == '"':
			b.WriteString(`\"`)
		default:
			b.WriteByte(c)
		}
	}
	return b.Bytes()
}

// NullDevice is qemu's null-co driver: a device of a given size with no
// storage: writes are accepted and dropped, reads return zeroes (with
// read-zeroes=on; otherwise the buffer is left as it is).
type NullDevice struct {
	size       int64
	readZeroes bool
	ro         bool
}

// NewNull returns a null-co device.
func NewNull(size int64, readZeroes, readOnly bool) *NullDevice {
	return &NullDevice{size: size, readZeroes: readZeroes, ro: readOnly}
}

var errNullRange = errors.New("request beyond the end of the device")

func (n *NullDevice) check(off, l int64) error {
	if off < 0 || l < 0 || off > n.size || l > n.size-off {
		return fmt.Errorf("%w: %d bytes at offset 0x%x, size 0x%x: %w", errNullRange, l, off, n.size, syscall.EIO)
	}
	return nil
}

// ReadAt reads zeroes (with read-zeroes), or nothing.
func (n *NullDevice) ReadAt(p []byte, off int64) (int, error) {
	if err := n.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	if n.readZeroes {
		clear(p)
	}
	return len(p), nil
}

// WriteAt drops p.
func (n *NullDevice) WriteAt(p []byte, off int64) (int, error) {
	if err := n.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteZeroes does nothing.
func (n *NullDevice) WriteZeroes(off, l int64) error { return n.check(off, l) }

// WriteZeroesUnmap does nothing.
func (n *NullDevice) WriteZeroesUnmap(off, l int64) error { return n.check(off, l) }

// Discard does nothing.
func (n *NullDevice) Discard(off, l int64) error { return n.check(off, l) }

// Flush does nothing.
func (n *NullDevice) Flush() error { return nil }

// Size returns the device size.
func (n *NullDevice) Size() int64 { return n.size }

// Resize is not supported by null-co.
func (n *NullDevice) Resize(uint64, bool) error {
	return fmt.Errorf("null-co: resizing is not supported: %w", syscall.ENOTSUP)
}

// ReadOnly reports whether the device was opened read-only.
func (n *NullDevice) ReadOnly() bool { return n.ro }

// Close does nothing.
func (n *NullDevice) Close() error { return nil }
