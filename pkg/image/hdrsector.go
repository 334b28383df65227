package image

import (
	"bytes"
	"fmt"
)

// HeaderSectorSize is the unit a disk writes whole or not at all: header
// fields and extension data that change together in one atomic step must
// lie in the header's first HeaderSectorSize bytes.
const HeaderSectorSize = 512

// ExtensionInFirstSector reports whether the data of the header extension
// with the given magic lies in the header's first sector.
func (img *Image) ExtensionInFirstSector(magic uint32) bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	at, ok := img.extensionDataOffset(magic)
	if !ok {
		return false
	}
	d, _ := img.Extension(magic)
	return at+len(d) <= HeaderSectorSize
}

// MoveExtensionFirst makes the header extension with the given magic the
// first one after the fixed header, so that its data lies in the first
// sector together with the fields a snapshot apply or a resize switches
// (qemu-img places the zoned extension after the feature name table, in
// the second sector). The extensions keep their sizes, so the area and the
// backing file name stay where they are.
//
// The header is rewritten one sector at a time, first sector first, with a
// sync after each. Every state a crash can leave — the new first sectors
// followed by the old others — is checked beforehand to hold the same
// extensions with the same data, except the feature name table, which
// only names feature bits for error messages (its tail may be garbled in
// between). When that does not hold, nothing is written.
func (img *Image) MoveExtensionFirst(magic uint32) error {
	img.lock()
	defer img.unlock()
	if err := img.writable(); err != nil {
		return err
	}
	idx := -1
	for i, e := range img.exts {
		if e.Magic == magic {
			idx = i
			break
		}
	}
	if idx < 0 {
		return fmt.Errorf("header extension 0x%08x is missing", magic)
	}
	start := int(img.hdr.HeaderLength)
	if start+8+len(img.exts[idx].Data) > HeaderSectorSize {
		return fmt.Errorf("header extension 0x%08x (%d bytes) cannot lie in the first sector", magic, len(img.exts[idx].Data))
	}
	if idx == 0 {
		return nil
	}
	exts := make([]Extension, 0, len(img.exts))
	exts = append(exts, img.exts[idx])
	exts = append(exts, img.exts[:idx]...)
	exts = append(exts, img.exts[idx+1:]...)
	for i, off := 0, start; i < len(exts); i++ { // their new places
		exts[i].Off = off
		off += 8 + int(roundUp(uint64(len(exts[i].Data)), 8))
	}
	var oldArea, newArea []byte
	for _, e := range img.exts {
		oldArea = AppendExtension(oldArea, e)
	}
	for _, e := range exts {
		newArea = AppendExtension(newArea, e)
	}
	hc := make([]byte, img.cs)
	if err := readFull(img.f, hc, 0); err != nil {
		return err
	}
	if !bytes.Equal(hc[start:start+len(oldArea)], oldArea) {
		return fmt.Errorf("the header extensions on disk differ from those read at open; not rewriting them")
	}
	want := append([]byte(nil), hc...)
	copy(want[start:], newArea)
	areaEnd := start + len(newArea)
	nsec := (areaEnd + HeaderSectorSize - 1) / HeaderSectorSize
	extEnd := int(img.cs)
	if img.hdr.BackingFileOffset != 0 {
		extEnd = int(img.hdr.BackingFileOffset)
	}
	for k := 1; k <= nsec; k++ {
		state := append([]byte(nil), hc...)
		copy(state, want[:k*HeaderSectorSize])
		if err := sameExtensions(state, start, extEnd, img.exts); err != nil {
			return fmt.Errorf("moving header extension 0x%08x to the first sector is not crash-safe for this header (%v); not rewriting it", magic, err)
		}
	}
	for k := 0; k < nsec; k++ {
		lo, hi := k*HeaderSectorSize, (k+1)*HeaderSectorSize
		if bytes.Equal(hc[lo:hi], want[lo:hi]) {
			continue
		}
		if _, err := img.f.WriteAt(want[lo:hi], int64(lo)); err != nil {
			return err
		}
		if err := img.f.Sync(); err != nil {
			return err
		}
	}
	img.exts = exts
	return nil
}

// sameExtensions checks that the header cluster b holds the extensions in
// exts (in any order), each with the same data, except the feature name
// table, whose data may differ.
func sameExtensions(b []byte, start, end int, exts []Extension) error {
	got, err := ParseExtensions(b, start, end)
	if err != nil {
		return err
	}
	if len(got) != len(exts) {
		return fmt.Errorf("%d extensions instead of %d", len(got), len(exts))
	}
	used := make([]bool, len(exts))
	for _, g := range got {
		found := false
		for i, e := range exts {
			if used[i] || e.Magic != g.Magic || len(e.Data) != len(g.Data) {
				continue
			}
			if e.Magic != ExtFeatureTable && !bytes.Equal(e.Data, g.Data) {
				continue
			}
			used[i], found = true, true
			break
		}
		if !found {
			return fmt.Errorf("extension 0x%08x would be damaged", g.Magic)
		}
	}
	return nil
}
