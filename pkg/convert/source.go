package convert

import (
	"fmt"
	"sort"

	"github.com/zqimg/zqimg/pkg/blockdev"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
)

// sources is what a conversion reads: one disk, or several disks end to
// end (qemu-img convert SRC1 SRC2 ... DST). Offsets are guest bytes of
// the concatenation. Every disk but the last takes its size rounded up to
// 512 bytes, as qemu-img counts sources in sectors; the padding reads as
// zeroes.
type sources struct {
	disks  []*blockdev.Disk
	starts []int64 // starts[i]: offset of disks[i]; starts[len(disks)]: the total size
}

func newSources(first *blockdev.Disk, more []*blockdev.Disk) *sources {
	s := &sources{disks: append([]*blockdev.Disk{first}, more...)}
	var off int64
	for i, d := range s.disks {
		s.starts = append(s.starts, off)
		n := d.Size()
		if i < len(s.disks)-1 {
			n = (n + 511) / 512 * 512
		}
		off += n
	}
	s.starts = append(s.starts, off)
	return s
}

// Size is the size of the concatenation in bytes.
func (s *sources) Size() int64 { return s.starts[len(s.disks)] }

// single returns the disk when there is only one, else nil.
func (s *sources) single() *blockdev.Disk {
	if len(s.disks) == 1 {
		return s.disks[0]
	}
	return nil
}

// zoneHeader returns the zoned configuration of a single zoned disk
// (concatenations hold plain disks only).
func (s *sources) zoneHeader() *zone.Header {
	if d := s.single(); d != nil {
		return d.ZoneHeader()
	}
	return nil
}

// zones returns the zones of a single zoned disk, else nil.
func (s *sources) zones() []zone.Zone {
	if d := s.single(); d != nil && d.Zoned() {
		return d.Zones()
	}
	return nil
}

// at returns the index of the disk holding byte off (< Size).
func (s *sources) at(off int64) int {
	return sort.Search(len(s.disks), func(i int) bool { return s.starts[i+1] > off })
}

// alignAt returns the start of the disk holding byte off and that disk's
// cluster size (512 for raw disks): qemu-img ends status runs on cluster
// boundaries of the source they come from.
func (s *sources) alignAt(off int64) (start, align int64) {
	i := s.at(off)
	align = 512
	if img := s.disks[i].Image(); img != nil {
		align = img.ClusterSize()
	}
	return s.starts[i], align
}

// Status returns the block status of the run at off (at most n bytes, cut
// at the end of the disk holding off); LayerStatus the same for that
// disk's top layer.
func (s *sources) Status(off, n int64) (blockdev.Status, error) {
	return s.status(off, n, (*blockdev.Disk).Status)
}

// LayerStatus: see Status.
func (s *sources) LayerStatus(off, n int64) (blockdev.Status, error) {
	return s.status(off, n, (*blockdev.Disk).LayerStatus)
}

func (s *sources) status(off, n int64, f func(*blockdev.Disk, int64, int64) (blockdev.Status, error)) (blockdev.Status, error) {
	if off < 0 || n <= 0 || off >= s.Size() {
		return blockdev.Status{}, fmt.Errorf("%w: block status of %d bytes at offset %d, size %d", image.ErrOutOfRange, n, off, s.Size())
	}
	i := s.at(off)
	d, local := s.disks[i], off-s.starts[i]
	n = min(n, s.starts[i+1]-off)
	if local >= d.Size() {
		// The padding of a disk to whole sectors.
		return blockdev.Status{Len: n, Zero: true}, nil
	}
	st, err := f(d, local, min(n, d.Size()-local))
	if err != nil && len(s.disks) > 1 {
		err = fmt.Errorf("%s: %w", d.Path(), err)
	}
	return st, err
}

// ReadAt reads the concatenation's bytes [off, off+len(p)).
func (s *sources) ReadAt(p []byte, off int64) (int, error) {
	if d := s.single(); d != nil {
		return d.ReadAt(p, off)
	}
	if off < 0 || int64(len(p)) > s.Size()-off {
		return 0, fmt.Errorf("%w: %d bytes at offset 0x%x, size 0x%x", image.ErrOutOfRange, len(p), off, s.Size())
	}
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		i := s.at(pos)
		d, local := s.disks[i], pos-s.starts[i]
		q := p[done:min(len(p), done+int(s.starts[i+1]-pos))]
		k := 0
		if local < d.Size() {
			k = int(min(int64(len(q)), d.Size()-local))
			if _, err := d.ReadAt(q[:k], local); err != nil {
				return done, fmt.Errorf("%s: %w", d.Path(), err)
			}
		}
		clear(q[k:])
		done += len(q)
	}
	return done, nil
}
