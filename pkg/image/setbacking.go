package image

import (
	"bytes"
	"fmt"
)

// BackingSize returns the virtual size in bytes of the attached backing
// file (ok false when none is attached).
func (img *Image) BackingSize() (n int64, ok bool) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if z, isZ := img.backing.(*zeroPastEnd); isZ {
		return z.size, true
	}
	return 0, false
}

// SetBacking stores a new backing file name and format in the header: ""
// removes the backing file (and the format); a name with format "" stores
// no backing format extension. The header cluster becomes what
// qcow2_update_header writes: the fixed header, the backing format
// extension, the feature name table (version 3 with clusters above 4
// KiB), the other extensions in their order, the end marker, then the
// name, and zeroes.
//
// The change is crash-safe: a crash leaves the old or the new backing
// file and format. When both headers lie in the first sector, the sector
// is written at once. Otherwise (the feature name table reaches into the
// second sector) the switch takes two atomic first-sector writes, with
// syncs between the steps:
//
//  1. the old name is copied to free space of the header cluster beyond
//     both headers, then the first sector is rewritten to an equivalent
//     header that lies in the first sector only — the old extensions
//     without the feature name table (which only names feature bits for
//     messages) and the old name at its copy;
//  2. the sectors after the first get the new header's bytes (the copy of
//     the old name kept);
//  3. the first sector gets the new header's;
//  4. the copy of the old name is zeroed (nothing refers to it).
//
// The attached backing file stays open as it was (reads still go to the
// old one); the data the new backing file needs must have been written and
// flushed before.
func (img *Image) SetBacking(name, format string) error {
	img.lock()
	defer img.unlock()
	if err := img.writable(); err != nil {
		return err
	}
	if name == "" {
		format = ""
	}
	old, oh, oexts, err := img.readHeaderState()
	if err != nil {
		return err
	}
	var exts []Extension
	if format != "" {
		exts = append(exts, Extension{Magic: ExtBackingFormat, Data: []byte(format)})
	}
	if oh.Version >= 3 && img.cs > 4096 {
		exts = append(exts, Extension{Magic: ExtFeatureTable, Data: MarshalFeatureTable(defaultFeatures)})
	}
	for _, e := range oexts {
		if e.Magic != ExtBackingFormat && e.Magic != ExtFeatureTable {
			exts = append(exts, e)
		}
	}
	nh := *oh
	if err := img.switchHeader(old, &nh, exts, name, "the new backing file name does not fit in the header cluster"); err != nil {
		return err
	}
	img.hdr.BackingFileOffset, img.hdr.BackingFileSize = nh.BackingFileOffset, nh.BackingFileSize
	img.setExtensions(&nh, exts)
	img.backingName, img.backingFormat = name, format
	return nil
}

// readHeaderState reads the header cluster as the file holds it, with its
// fixed header and extensions parsed: what a header switch starts from.
func (img *Image) readHeaderState() ([]byte, *Header, []Extension, error) {
	hc := make([]byte, img.cs)
	if err := readFull(img.f, hc, 0); err != nil {
		return nil, nil, nil, err
	}
	h, err := ParseHeader(hc)
	if err != nil {
		return nil, nil, nil, err
	}
	exts, err := headerClusterExtensions(hc, h)
	if err != nil {
		return nil, nil, nil, err
	}
	return hc, h, exts, nil
}

// headerClusterExtensions parses the header extensions of the header
// cluster hc whose fixed header is h.
func headerClusterExtensions(hc []byte, h *Header) ([]Extension, error) {
	extEnd := len(hc)
	if h.BackingFileOffset != 0 {
		extEnd = int(h.BackingFileOffset)
	}
	return ParseExtensions(hc, int(h.HeaderLength), extEnd)
}

// switchHeader makes the header cluster (old, as read from the file) what
// marshalHeaderCluster makes of nh, exts and the backing file name,
// crash-safely: one write of the first sector when both the old and the
// new header lie in it, otherwise the steps of switchHeaderInSteps. nh's
// backing file offset and size are set. Nothing is written when the new
// header does not fit (the error then starts with tooBig).
func (img *Image) switchHeader(old []byte, nh *Header, exts []Extension, name, tooBig string) error {
	oh, err := ParseHeader(old)
	if err != nil {
		return err
	}
	oexts, err := headerClusterExtensions(old, oh)
	if err != nil {
		return err
	}
	cs := img.cs
	oldAreaEnd := int(oh.HeaderLength) + 8
	for _, e := range oexts {
		oldAreaEnd = max(oldAreaEnd, e.Off+8+int(roundUp(uint64(len(e.Data)), 8))+8)
	}
	oldName := old[oh.BackingFileOffset : oh.BackingFileOffset+uint64(oh.BackingFileSize)]
	oldEnd := max(oldAreaEnd, int(oh.BackingFileOffset)+len(oldName))
	want, err := marshalHeaderCluster(nh, exts, name, cs)
	if err != nil {
		return fmt.Errorf("%s: %w", tooBig, err)
	}
	newEnd := int(nh.HeaderLength)
	for _, e := range exts {
		newEnd += 8 + int(roundUp(uint64(len(e.Data)), 8))
	}
	newEnd += 8 + len(name)
	const sec = HeaderSectorSize
	if cs == sec || (oldEnd <= sec && newEnd <= sec) {
		// Both headers in the first sector: one atomic write.
		return img.writeSync(want[:sec], 0)
	}
	return img.switchHeaderInSteps(old, oh, oexts, oldName, oldEnd, want, newEnd)
}

// setExtensions makes img's extensions exts, laid out after nh's fixed
// header.
func (img *Image) setExtensions(nh *Header, exts []Extension) {
	img.exts = img.exts[:0]
	for off, i := int(nh.HeaderLength), 0; i < len(exts); i++ {
		e := exts[i]
		e.Off = off
		e.Data = append([]byte(nil), e.Data...)
		img.exts = append(img.exts, e)
		off += 8 + int(roundUp(uint64(len(e.Data)), 8))
	}
	img.feats = FeatureTable(img.exts)
}

// switchHeaderInSteps carries out steps 1-4 of SetBacking.
func (img *Image) switchHeaderInSteps(old []byte, oh *Header, oexts []Extension, oldName []byte, oldEnd int, want []byte, newEnd int) error {
	const sec = HeaderSectorSize
	cs := int(img.cs)
	// The interim header: the old one in the first sector only, its name
	// at copyAt, beyond both headers.
	copyAt := 0
	if len(oldName) > 0 {
		copyAt = int(roundUp(uint64(max(oldEnd, newEnd, sec)), 8))
		if copyAt+len(oldName) > cs {
			return fmt.Errorf("the header cluster (%d bytes) has no room to switch the backing file crash-safely (%d bytes in use)", cs, max(oldEnd, newEnd))
		}
	}
	ih := *oh
	ih.BackingFileOffset, ih.BackingFileSize = 0, 0
	var iexts []Extension
	for _, e := range oexts {
		if e.Magic != ExtFeatureTable {
			iexts = append(iexts, e)
		}
	}
	interim, err := marshalHeaderCluster(&ih, iexts, "", uint64(cs))
	if err != nil {
		return err
	}
	iEnd := int(ih.HeaderLength) + 8
	for _, e := range iexts {
		iEnd += 8 + int(roundUp(uint64(len(e.Data)), 8))
	}
	if iEnd > sec {
		return fmt.Errorf("the header extensions (%d bytes) do not fit in the first sector; the backing file cannot be switched crash-safely", iEnd)
	}
	if len(oldName) > 0 {
		ih.BackingFileOffset, ih.BackingFileSize = uint64(copyAt), uint32(len(oldName))
		copy(interim, ih.Marshal())
		// Step 1: the copy of the old name, then the interim first sector.
		if err := img.writeSync(oldName, int64(copyAt)); err != nil {
			return err
		}
	}
	if err := img.writeSync(interim[:sec], 0); err != nil {
		return err
	}
	// Step 2: the new header's later sectors, the copy kept.
	staged := append([]byte(nil), want...)
	copy(staged[copyAt:], oldName)
	hi := int(roundUp(uint64(max(oldEnd, newEnd, copyAt+len(oldName))), sec))
	if !bytes.Equal(old[sec:hi], staged[sec:hi]) {
		if err := img.writeSync(staged[sec:hi], sec); err != nil {
			return err
		}
	}
	// Step 3: the switch.
	if err := img.writeSync(want[:sec], 0); err != nil {
		return err
	}
	// Step 4: the copy is garbage now.
	if len(oldName) > 0 {
		if err := img.writeSync(make([]byte, len(oldName)), int64(copyAt)); err != nil {
			return err
		}
	}
	return nil
}

// writeSync writes p at off and syncs.
func (img *Image) writeSync(p []byte, off int64) error {
	if _, err := img.f.WriteAt(p, off); err != nil {
		return err
	}
	return img.f.Sync()
}
