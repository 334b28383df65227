// Package info describes an image the way `qemu-img info` does, plus the
// zoned configuration and zone conditions of zoned images.
package info

import (
	"fmt"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// ImageInfo mirrors qemu-img's ImageInfo JSON object; field order is the
// order qemu-img prints the keys in.
type ImageInfo struct {
	BackingFormat       string         `json:"backing-filename-format,omitempty"`
	Snapshots           []SnapshotInfo `json:"snapshots,omitempty"`
	VirtualSize         int64          `json:"virtual-size"`
	Filename            string         `json:"filename"`
	ClusterSize         int64          `json:"cluster-size"`
	Format              string         `json:"format"`
	ActualSize          int64          `json:"actual-size"`
	FormatSpecific      FormatSpecific `json:"format-specific"`
	FullBackingFilename string         `json:"full-backing-filename,omitempty"`
	BackingFilename     string         `json:"backing-filename,omitempty"`
	DirtyFlag           bool           `json:"dirty-flag"`
}

// FormatSpecific is qemu-img's format-specific object.
type FormatSpecific struct {
	Type string    `json:"type"`
	Data QCow2Info `json:"data"`
}

// QCow2Info holds the qcow2 details; version 2 images omit the fields
// that only exist in version 3, as qemu-img does.
type QCow2Info struct {
	Compat          string     `json:"compat"`
	CompressionType string     `json:"compression-type"`
	LazyRefcounts   *bool      `json:"lazy-refcounts,omitempty"`
	RefcountBits    int        `json:"refcount-bits"`
	Corrupt         *bool      `json:"corrupt,omitempty"`
	ExtendedL2      *bool      `json:"extended-l2,omitempty"`
	Zoned           *ZonedInfo `json:"zoned,omitempty"`
}

// ZonedInfo describes a zoned image. Sizes are bytes.
//
// A zoned image whose zoned metadata is damaged is still described, as
// qemu-img info describes a corrupt image: the configuration as stored,
// Corrupt set and the problems listed (zqimg check -r all repairs what can
// be repaired). The fields of a missing or undecodable extension are zero
// and its model "unknown"; Conditions is nil when the write pointers
// cannot be judged.
type ZonedInfo struct {
	Model             string      `json:"model"`
	ZoneSize          uint64      `json:"zone-size"`
	ZoneCapacity      uint64      `json:"zone-capacity"`
	NrZones           uint32      `json:"nr-zones"`
	ConventionalZones uint32      `json:"conventional-zones"`
	MaxOpenZones      uint32      `json:"max-open-zones"`
	MaxActiveZones    uint32      `json:"max-active-zones"`
	MaxAppendBytes    uint32      `json:"max-append-bytes"`
	TableOffset       uint64      `json:"write-pointer-table-offset"`
	TableSize         uint64      `json:"write-pointer-table-size"`
	Conditions        *Conditions `json:"conditions,omitempty"`
	Corrupt           bool        `json:"corrupt,omitempty"`
	Problems          []string    `json:"problems,omitempty"`
}

// Conditions counts the zones in each condition (open states do not
// survive closing the image, so a freshly opened image has none).
// Invalid counts zones whose write pointer is impossible.
type Conditions struct {
	NotWP    uint32 `json:"not-write-pointer"`
	Empty    uint32 `json:"empty"`
	ImpOpen  uint32 `json:"implicitly-open"`
	ExpOpen  uint32 `json:"explicitly-open"`
	Closed   uint32 `json:"closed"`
	Full     uint32 `json:"full"`
	Active   uint32 `json:"active"`
	Sequence uint32 `json:"sequential"`
	Invalid  uint32 `json:"invalid,omitempty"`
	// ReadOnly and Offline count the zones with an injected fault.
	ReadOnly uint32 `json:"read-only,omitempty"`
	Offline  uint32 `json:"offline,omitempty"`
}

// Describe opens path read-only (without its backing file) and describes
// it. The zoned metadata is read leniently (zone.Inspect): a damaged
// write-pointer table or zoned extension is reported in the zoned
// section, not refused.
func Describe(path string, forceShare bool) (*ImageInfo, error) {
	img, err := image.Open(path, image.Options{ReadOnly: true, NoBacking: true, NoLock: forceShare, Features: image.IncompatZoned})
	if err != nil {
		return nil, err
	}
	defer img.Close()
	return FromImage(img)
}

// FromImage describes an open image, reading its zoned metadata
// leniently.
func FromImage(img *image.Image) (*ImageInfo, error) {
	inf, err := describe(img)
	if err != nil {
		return nil, err
	}
	in, err := zone.Inspect(img)
	if err != nil {
		return nil, err
	}
	if in != nil {
		inf.FormatSpecific.Data.Zoned = zonedInfo(in)
	}
	return inf, nil
}

// zonedInfo turns an inspection into the zoned section.
func zonedInfo(in *zone.Inspection) *ZonedInfo {
	z := &ZonedInfo{Model: "unknown", Corrupt: in.Corrupt(), Problems: in.Problems}
	zh := in.Header
	if zh == nil {
		return z
	}
	z.Model = modelName(zh.Model)
	z.ZoneSize, z.ZoneCapacity = zh.ZoneSize, zh.ZoneCapacity
	z.NrZones, z.ConventionalZones = zh.NrZones, zh.ConventionalZones
	z.MaxOpenZones, z.MaxActiveZones, z.MaxAppendBytes = zh.MaxOpenZones, zh.MaxActiveZones, zh.MaxAppendBytes
	z.TableOffset, z.TableSize = zh.MetaOffset, zh.MetaSize
	if c := in.Conditions; c != nil {
		z.Conditions = &Conditions{
			NotWP: c[zone.CondNotWP], Empty: c[zone.CondEmpty], Closed: c[zone.CondClosed], Full: c[zone.CondFull],
			Active:   c[zone.CondClosed],
			Sequence: zh.NrZones - min(zh.ConventionalZones, zh.NrZones),
			Invalid:  in.Invalid,
			ReadOnly: c[zone.CondReadOnly], Offline: c[zone.CondOffline],
		}
	}
	return z
}

// modelName names the zone model byte of the extension.
func modelName(m uint8) string {
	switch m {
	case zone.ModelHostManaged:
		return "host-managed"
	case 0:
		return "none (0)"
	}
	return fmt.Sprintf("unknown (%d)", m)
}

// FromDevice describes an open device (with its open zones).
func FromDevice(dev *zone.Device) (*ImageInfo, error) {
	inf, err := describe(dev.Image())
	if err != nil {
		return nil, err
	}
	if zh := dev.Header(); zh != nil {
		c, err := dev.Counts()
		if err != nil {
			return nil, err
		}
		inf.FormatSpecific.Data.Zoned = &ZonedInfo{
			Model:             "host-managed",
			ZoneSize:          zh.ZoneSize,
			ZoneCapacity:      zh.ZoneCapacity,
			NrZones:           zh.NrZones,
			ConventionalZones: zh.ConventionalZones,
			MaxOpenZones:      zh.MaxOpenZones,
			MaxActiveZones:    zh.MaxActiveZones,
			MaxAppendBytes:    zh.MaxAppendBytes,
			TableOffset:       zh.MetaOffset,
			TableSize:         zh.MetaSize,
			Conditions: &Conditions{
				NotWP: c[zone.CondNotWP], Empty: c[zone.CondEmpty], ImpOpen: c[zone.CondImpOpen],
				ExpOpen: c[zone.CondExpOpen], Closed: c[zone.CondClosed], Full: c[zone.CondFull],
				Active:   c[zone.CondImpOpen] + c[zone.CondExpOpen] + c[zone.CondClosed],
				Sequence: zh.NrZones - zh.ConventionalZones,
				ReadOnly: c[zone.CondReadOnly], Offline: c[zone.CondOffline],
			},
		}
	}
	return inf, nil
}

// describe returns what qemu-img info says about img, without the zoned
// section.
func describe(img *image.Image) (*ImageInfo, error) {
	h := img.Header()
	inf := &ImageInfo{
		VirtualSize: img.Size(),
		Filename:    img.Name(),
		ClusterSize: img.ClusterSize(),
		Format:      "qcow2",
		DirtyFlag:   h.IncompatibleFeatures&image.IncompatDirty != 0,
	}
	if n, ok := img.AllocatedBytes(); ok {
		inf.ActualSize = n
	}
	if name, format := img.BackingFile(); name != "" {
		inf.BackingFilename = name
		inf.BackingFormat = format
		inf.FullBackingFilename = image.CombinePath(img.Name(), name)
	}
	d := QCow2Info{Compat: "0.10", CompressionType: "zlib", RefcountBits: 1 << h.RefcountOrder}
	if h.CompressionType == image.CompressionZstd {
		d.CompressionType = "zstd"
	}
	if h.Version >= 3 {
		d.Compat = "1.1"
		lazy := h.CompatibleFeatures&image.CompatLazyRefcounts != 0
		corrupt := h.IncompatibleFeatures&image.IncompatCorrupt != 0
		ext := h.ExtendedL2()
		d.LazyRefcounts, d.Corrupt, d.ExtendedL2 = &lazy, &corrupt, &ext
	}
	inf.FormatSpecific = FormatSpecific{Type: "qcow2", Data: d}
	snaps, err := img.Snapshots()
	if err != nil {
		return nil, err
	}
	inf.Snapshots = SnapshotInfos(snaps)
	return inf, nil
}
