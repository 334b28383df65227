// Package refrules encodes the checks the reference (QEMU with the zoned
// qcow2 patch series v10, /work/shared/seeds) makes on a zoned extension
// when it opens an image (qcow2_read_extensions, then
// qcow2_check_zone_options). An image that fails one of them cannot be
// opened by the reference, so every image zqimg writes must pass them
// (tests check this; zqimg's own reader, zone.Header.Validate, is more
// lenient where older zqimg images need it).
//
// Only the reference's behaviour is encoded here, in zqimg's own code;
// the messages are the reference's, to name which check failed.
package refrules

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// Refusal is a check of the reference that an extension fails; Msg is
// the reference's message.
type Refusal struct{ Msg string }

func (r *Refusal) Error() string { return "the reference refuses to open the image: " + r.Msg }

func refuse(format string, args ...any) error {
	return &Refusal{Msg: fmt.Sprintf(format, args...)}
}

// Check returns the first of the reference's open-time checks that the
// zoned extension h (extLen bytes long) of an image of virtualSize bytes
// fails, or nil when the reference opens it. The checks, in its order:
//
//   - the extension is at least as long as the reference's structure;
//   - nr_zones = ceil(virtual size in whole 512-byte sectors / zone_size)
//     (a zone_size of 0 makes the reference divide by zero: refused here);
//   - zone_size is not 0, zone_capacity <= zone_size;
//   - max_append_bytes + 512 < zone_capacity;
//   - conventional_zones < nr_zones;
//   - max_active_zones <= nr_zones;
//   - max_open_zones <= nr_zones - conventional_zones (sequential zones);
//   - max_open_zones <= max_active_zones: a 0 active limit is NOT "no
//     limit" here, so an open limit without an active limit is refused.
//
// The reference's messages for the last three say "Set it to ...", but
// at open they are errors all the same.
func Check(extLen int, h *zone.Header, virtualSize uint64) error {
	if extLen < zone.ExtSize {
		return refuse("zoned_ext: len=%d too small (<%d)", extLen, zone.ExtSize)
	}
	if h.ZoneSize == 0 {
		return refuse("zone_size 0: division by zero computing nr_zones")
	}
	sectors := virtualSize / 512
	if uint64(h.NrZones) != (sectors*512+h.ZoneSize-1)/h.ZoneSize {
		return refuse("Zoned extension header nr_zones field is wrong")
	}
	if h.ZoneCapacity > h.ZoneSize {
		return refuse("zone capacity %dB exceeds zone size %dB", h.ZoneCapacity, h.ZoneSize)
	}
	if uint64(h.MaxAppendBytes)+512 >= h.ZoneCapacity {
		return refuse("max append bytes %dB exceeds zone capacity %dB by more than block size", h.MaxAppendBytes, h.ZoneCapacity)
	}
	if h.ConventionalZones >= h.NrZones {
		return refuse("Conventional_zones %d exceeds nr_zones %d.", h.ConventionalZones, h.NrZones)
	}
	if h.MaxActiveZones > h.NrZones {
		return refuse("Max_active_zones %d exceeds nr_zones %d. Set it to nr_zones.", h.MaxActiveZones, h.NrZones)
	}
	if seq := h.NrZones - h.ConventionalZones; h.MaxOpenZones > seq {
		return refuse("Max_open_zones field can not be larger thanthe number of SWR zones. Set it to number of SWRzones %d.", seq)
	}
	if h.MaxOpenZones > h.MaxActiveZones {
		return refuse("Max_open_zones %d exceeds max_active_zones %d. Set it to max_active_zones.", h.MaxOpenZones, h.MaxActiveZones)
	}
	return nil
}

// CheckFile applies Check to the zoned extension of the qcow2 image at
// path. A plain image passes (nil); an image whose header cannot be read
// is an error.
func CheckFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 2<<20) // the header cluster, at most 2 MiB
	n, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	b = b[:n]
	hdr, err := image.ParseHeader(b)
	if err != nil {
		return err
	}
	exts, err := image.ParseExtensions(b, int(hdr.HeaderLength), int(hdr.ClusterSize()))
	if err != nil {
		return err
	}
	for _, e := range exts {
		if e.Magic != zone.ExtMagic {
			continue
		}
		if len(e.Data) < zone.ExtSize {
			return refuse("zoned_ext: len=%d too small (<%d)", len(e.Data), zone.ExtSize)
		}
		h, err := zone.ParseHeader(e.Data[:zone.ExtSize])
		if err != nil {
			return err
		}
		return Check(len(e.Data), h, hdr.Size)
	}
	return nil
}
