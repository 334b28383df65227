package image

import "fmt"

// CacheMode is a qemu-io cache mode (-t): whether writes are durable when
// they complete (writethrough), whether the host page cache is bypassed
// (O_DIRECT), and whether flushes reach the disk at all (unsafe).
//
// The zero value is CacheWriteBack, the library default; the zqimg
// commands default to CacheWriteThrough, as qemu-io does.
type CacheMode int

// Cache modes, with qemu-io's names and meanings.
const (
	CacheWriteBack    CacheMode = iota // host page cache; durable at Flush
	CacheWriteThrough                  // host page cache; every write is flushed before it completes
	CacheUnsafe                        // host page cache; flushes are ignored
	CacheNone                          // O_DIRECT; durable at Flush
	CacheDirectSync                    // O_DIRECT; every write is flushed before it completes
)

var cacheModeNames = [...]string{"writeback", "writethrough", "unsafe", "none", "directsync"}

// String returns qemu-io's name of the mode.
func (c CacheMode) String() string {
	if c < 0 || int(c) >= len(cacheModeNames) {
		return fmt.Sprintf("CacheMode(%d)", int(c))
	}
	return cacheModeNames[c]
}

// ParseCacheMode parses a qemu-io cache mode name ("writethrough",
// "writeback", "unsafe", "none", "directsync"; "off" is "none").
func ParseCacheMode(s string) (CacheMode, error) {
	if s == "off" {
		return CacheNone, nil
	}
	for i, n := range cacheModeNames {
		if s == n {
			return CacheMode(i), nil
		}
	}
	//lint:ignore ST1005 qemu-io's message
	return 0, fmt.Errorf("Invalid cache option: %s", s)
}

// WriteThrough reports whether every write must be durable when it completes.
func (c CacheMode) WriteThrough() bool { return c == CacheWriteThrough || c == CacheDirectSync }

// Direct reports whether the image file is opened with O_DIRECT.
func (c CacheMode) Direct() bool { return c == CacheNone || c == CacheDirectSync }

// NoFlush reports whether flushes are skipped (unsafe).
func (c CacheMode) NoFlush() bool { return c == CacheUnsafe }
