package image

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// HeaderUpdate lists header changes that UpdateHeader makes at once.
type HeaderUpdate struct {
	// CompatibleFeatures, when set, replaces the compatible feature bits
	// (lazy refcounts is bit 0).
	CompatibleFeatures *uint64
	// Extensions give new data for existing header extensions, of the
	// same length as the current data.
	Extensions []Extension
}

// UpdateHeader applies u with a single write of the bytes that change,
// which must lie in one 512-byte sector (written whole or not at all), and
// syncs. When the changes span sectors, the one extension changed is moved
// to the first sector first (MoveExtensionFirst). A crash leaves the header
// as it was or as it is to be.
func (img *Image) UpdateHeader(u HeaderUpdate) error {
	for attempt := 0; ; attempt++ {
		err := img.updateHeader(u)
		if err != errSpansSectors || attempt > 0 || len(u.Extensions) != 1 {
			if err == errSpansSectors {
				return fmt.Errorf("the header changes span more than one sector; they cannot be written atomically")
			}
			return err
		}
		if err := img.MoveExtensionFirst(u.Extensions[0].Magic); err != nil {
			return err
		}
	}
}

var errSpansSectors = fmt.Errorf("header changes span sectors")

func (img *Image) updateHeader(u HeaderUpdate) error {
	img.lock()
	defer img.unlock()
	if err := img.writable(); err != nil {
		return err
	}
	hc := make([]byte, img.cs)
	if err := readFull(img.f, hc, 0); err != nil {
		return err
	}
	want := append([]byte(nil), hc...)
	if u.CompatibleFeatures != nil {
		if img.hdr.Version < 3 {
			return fmt.Errorf("compatible feature bits need a version 3 image (compat=1.1)")
		}
		binary.BigEndian.PutUint64(want[80:], *u.CompatibleFeatures)
	}
	for _, e := range u.Extensions {
		at, ok := img.extensionDataOffset(e.Magic)
		if !ok {
			return fmt.Errorf("header extension 0x%08x is missing", e.Magic)
		}
		cur, _ := img.Extension(e.Magic)
		if len(cur) != len(e.Data) {
			return fmt.Errorf("header extension 0x%08x: new data of %d bytes, the current has %d", e.Magic, len(e.Data), len(cur))
		}
		if !bytes.Equal(hc[at:at+len(cur)], cur) {
			return fmt.Errorf("header extension 0x%08x on disk differs from the one read at open; not rewriting it", e.Magic)
		}
		copy(want[at:], e.Data)
	}
	lo, hi := -1, -1
	for i := range hc {
		if hc[i] != want[i] {
			if lo < 0 {
				lo = i
			}
			hi = i + 1
		}
	}
	if lo < 0 {
		return nil
	}
	if lo/HeaderSectorSize != (hi-1)/HeaderSectorSize {
		return errSpansSectors
	}
	if _, err := img.f.WriteAt(want[lo:hi], int64(lo)); err != nil {
		return err
	}
	if err := img.f.Sync(); err != nil {
		return err
	}
	if u.CompatibleFeatures != nil {
		img.hdr.CompatibleFeatures = *u.CompatibleFeatures
	}
	for _, e := range u.Extensions {
		for j := range img.exts {
			if img.exts[j].Magic == e.Magic {
				img.exts[j].Data = append([]byte(nil), e.Data...)
				break
			}
		}
	}
	return nil
}
