package bench

import (
	"testing"

	"github.com/zqimg/zqimg/internal/testimg"

	"github.com/zqimg/zqimg/pkg/image"
)

// Regression: a fresh slot (zone index 0 by default) gave up zone 0 when it
// took its first zone, so two slots could write zone 0 at once ("write at
// offset 0x0 is not at the write pointer"). Depth 8 over 3 slots, writeback,
// many runs: the race showed in about one run in ten.
func TestZonedWriteSlotsNeverShareAZone(t *testing.T) {
	for i := 0; i < 60; i++ {
		p := testimg.Zoned(t, "8M", "zone.size=1M,zone.max_open_zones=3,zone.max_active_zones=4,zone.max_append_bytes=64k")
		d, err := Open(p, Options{Zoned: ZonedWrite, Count: 300, Size: 64 << 10, Depth: 8, Pattern: 0xcd}, image.CacheWriteBack, false)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Run(d, Options{Zoned: ZonedWrite, Count: 300, Size: 64 << 10, Depth: 8, Pattern: 0xcd})
		if err != nil {
			zs, _ := d.Report(0, 8)
			t.Fatalf("run %d: %v\n%+v", i, err, zs)
		}
		d.Close()
	}
}
