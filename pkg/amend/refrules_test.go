package amend_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zqimg/zqimg/internal/refrules"
	"github.com/zqimg/zqimg/pkg/amend"
	pcreate "github.com/zqimg/zqimg/pkg/create"
)

// TestZoneLimitsReferenceOpens: every zoned image zqimg creates, and every
// image it amends (limits, and size by whole zones), passes the
// reference's open-time checks (internal/refrules): in particular an open
// limit without an active limit, which the reference refuses ("exceeds
// max_active_zones 0"), is never written.
func TestZoneLimitsReferenceOpens(t *testing.T) {
	dir := t.TempDir()
	limits := []string{"", "0", "1", "4", "100"}
	n := 0
	for _, geo := range []struct{ size, opts string }{
		{"256M", "zone.size=64M"},                        // the README's example geometry
		{"100M", "zone.size=32M"},                        // short last zone
		{"8M", "zone.size=1M,zone.conventional_zones=3"}, // conventional zones
		{"8M", "zone.size=1M,zone.conventional_zones=7"}, // one sequential zone
		{"16M", "zone.size=1M,zone.capacity=768k,zone.max_append_bytes=4k"},
	} {
		for _, open := range limits {
			for _, active := range limits {
				opts := "zone.mode=host-managed," + geo.opts
				if open != "" {
					opts += ",zone.max_open_zones=" + open
				}
				if active != "" {
					opts += ",zone.max_active_zones=" + active
				}
				path := filepath.Join(dir, fmt.Sprintf("z%d.qcow2", n))
				n++
				o, err := pcreate.ParseOptions([]string{opts}, geo.size, true)
				if err != nil {
					t.Fatal(err)
				}
				s, err := pcreate.Resolve(o)
				if err != nil {
					t.Fatalf("%s: %v", opts, err)
				}
				if err := pcreate.Create(path, s); err != nil {
					t.Fatal(err)
				}
				if err := refrules.CheckFile(path); err != nil {
					t.Errorf("create -o %s %s: %v", opts, geo.size, err)
					continue
				}
				for _, a := range []string{"zone.max_open_zones=2", "zone.max_active_zones=0", "zone.max_open_zones=0",
					"zone.max_active_zones=3", "zone.max_open_zones=1,zone.max_active_zones=0", "zone.max_open_zones=5",
					"size=64M", "size=8M"} {
					ao, err := amend.ParseOptions([]string{a})
					if err != nil {
						t.Fatal(err)
					}
					if _, err := amend.Amend(path, ao); err != nil {
						if strings.HasPrefix(a, "size=") {
							continue // a shrink may be refused
						}
						t.Fatalf("%s, amend %s: %v", opts, a, err)
					}
					if err := refrules.CheckFile(path); err != nil {
						t.Errorf("create -o %s %s, then amend -o %s: %v", opts, geo.size, a, err)
					}
				}
			}
		}
	}
}
