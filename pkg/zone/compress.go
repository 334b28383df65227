package zone

import (
	"errors"

	"github.com/zqimg/zqimg/pkg/image"
)

// WriteCompressed writes one cluster prepared by image.CompressCluster at
// off (the cluster's start) under the same zone rules as WriteAt: in a
// sequential zone off must be the write pointer and the cluster must lie
// within the zone's capacity; the write pointer then advances over the
// whole cluster. It reports whether the cluster was stored compressed
// (clusters that do not compress are written as ordinary data).
func (d *Device) WriteCompressed(c *image.Cluster, off int64) (bool, error) {
	if c == nil {
		return false, errors.New("zone: no cluster to write")
	}
	d.lock()
	defer d.unlock()
	var compressed bool
	write := func() error {
		var err error
		compressed, err = d.img.WriteCompressed(c, off)
		return err
	}
	if d.h == nil {
		return compressed, d.done(write())
	}
	_, err := d.zonedIO(off, int64(c.Len()), write)
	return compressed, d.done(err)
}
