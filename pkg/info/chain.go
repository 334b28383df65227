package info

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/zqimg/zqimg/pkg/image"
)

// RawInfo mirrors qemu-img's ImageInfo for a raw image (a backing file).
type RawInfo struct {
	VirtualSize int64  `json:"virtual-size"`
	Filename    string `json:"filename"`
	Format      string `json:"format"`
	ActualSize  int64  `json:"actual-size"`
	DirtyFlag   bool   `json:"dirty-flag"`
}

// ChainEntry is one image of a backing chain: a qcow2 image or a raw one.
type ChainEntry struct {
	QCow2 *ImageInfo
	Raw   *RawInfo
}

// MarshalJSON encodes the entry as qemu-img does.
func (e ChainEntry) MarshalJSON() ([]byte, error) {
	if e.Raw != nil {
		return json.Marshal(e.Raw)
	}
	return json.Marshal(e.QCow2)
}

// ChainError reports a backing chain that loops or is too deep, in
// qemu-img's words.
type ChainError struct {
	Backing string // the backing file name as the overlay stores it
	Loop    bool
}

func (e *ChainError) Error() string {
	if e.Loop {
		return fmt.Sprintf("Backing file '%s' creates an infinite loop.", e.Backing)
	}
	return fmt.Sprintf("Backing chain is deeper than %d images (at backing file '%s')", image.MaxBackingDepth, e.Backing)
}

// DescribeChain describes path and every image of its backing chain, top
// first (qemu-img info --backing-chain). Each backing file is named as
// qemu-img names it: relative to its overlay's directory. A chain that
// comes back to an image already in it, or longer than
// image.MaxBackingDepth, is refused with a *ChainError before anything is
// described.
func DescribeChain(path string, forceShare bool) ([]ChainEntry, error) {
	type link struct{ path, format string }
	var chain []link
	seen := map[[2]uint64]bool{}
	cur := link{path, "qcow2"}
	for {
		if id, ok := fileID(cur.path); ok {
			seen[id] = true
		}
		chain = append(chain, cur)
		if cur.format != "qcow2" {
			break
		}
		name, format, err := backingOf(cur.path, forceShare)
		if err != nil {
			return nil, err
		}
		if name == "" {
			break
		}
		next := image.CombinePath(cur.path, name)
		if id, ok := fileID(next); ok && seen[id] {
			return nil, &ChainError{Backing: name, Loop: true}
		}
		if len(chain) > image.MaxBackingDepth {
			return nil, &ChainError{Backing: name}
		}
		if format == "" {
			format = probeFormat(next)
		}
		cur = link{next, format}
	}
	out := make([]ChainEntry, 0, len(chain))
	for _, l := range chain {
		switch l.format {
		case "qcow2":
			inf, err := Describe(l.path, forceShare)
			if err != nil {
				return nil, fmt.Errorf("Could not open '%s': %w", l.path, err)
			}
			out = append(out, ChainEntry{QCow2: inf})
		case "raw":
			r, err := describeRaw(l.path)
			if err != nil {
				return nil, fmt.Errorf("Could not open '%s': %w", l.path, err)
			}
			out = append(out, ChainEntry{Raw: r})
		default:
			return nil, fmt.Errorf("Could not open '%s': backing file format '%s' is not supported (only qcow2 and raw)", l.path, l.format)
		}
	}
	return out, nil
}

// backingOf returns the backing file name and format stored in a qcow2 image.
func backingOf(path string, forceShare bool) (name, format string, err error) {
	img, err := image.Open(path, image.Options{ReadOnly: true, NoBacking: true, NoLock: forceShare, Features: image.IncompatZoned})
	if err != nil {
		return "", "", fmt.Errorf("Could not open '%s': %w", path, err)
	}
	defer img.Close()
	name, format = img.BackingFile()
	return name, format, nil
}

func fileID(path string) ([2]uint64, bool) {
	st, err := os.Stat(path)
	if err != nil {
		return [2]uint64{}, false
	}
	s, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return [2]uint64{}, false
	}
	return [2]uint64{uint64(s.Dev), s.Ino}, true
}

// probeFormat tells qcow2 from raw by the magic.
func probeFormat(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "qcow2" // the open reports the error
	}
	defer f.Close()
	var m [4]byte
	if _, err := f.ReadAt(m[:], 0); err == nil && binary.BigEndian.Uint32(m[:]) == image.Magic {
		return "qcow2"
	}
	return "raw"
}

func describeRaw(path string) (*RawInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, errors.New("is a directory")
	}
	r := &RawInfo{VirtualSize: st.Size(), Filename: path, Format: "raw"}
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		r.ActualSize = s.Blocks * 512
	}
	return r, nil
}
