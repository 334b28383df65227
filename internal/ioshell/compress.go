package ioshell

import (
	"fmt"
	"syscall"

	"github.com/zqimg/zqimg/pkg/zone"
)

// CompressDevice is qemu's compress filter over a qcow2 image: every
// write is stored as compressed clusters. A write that does not cover
// whole clusters is widened to them, the bytes around it read from the
// image first (as qemu's block layer aligns requests to the filter's
// cluster-sized alignment). As in qemu, compressed clusters can only be
// written where nothing is allocated.
type CompressDevice struct {
	*zone.Device
}

// NewCompress returns the compress filter over d.
func NewCompress(d *zone.Device) *CompressDevice { return &CompressDevice{Device: d} }

// WriteAt writes p at off as compressed clusters.
func (c *CompressDevice) WriteAt(p []byte, off int64) (int, error) {
	img := c.Image()
	cs, size := img.ClusterSize(), c.Size()
	end := off + int64(len(p))
	if off < 0 || end > size {
		return 0, fmt.Errorf("%d bytes at offset %d: beyond the end of the image (%d bytes): %w", len(p), off, size, syscall.EIO)
	}
	start := off - off%cs
	stop := min((end+cs-1)/cs*cs, size)
	buf := p
	if start != off || stop != end {
		buf = make([]byte, stop-start)
		if _, err := c.Device.ReadAt(buf, start); err != nil {
			return 0, err
		}
		copy(buf[off-start:], p)
	}
	for o := start; o < stop; o += cs {
		chunk := buf[o-start : min(o+cs, stop)-start]
		z, err := img.CompressCluster(chunk)
		if err != nil {
			return 0, err
		}
		if _, err := c.Device.WriteCompressed(z, o); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}
