package check

import (
	"fmt"
	"strings"

	"github.com/zqimg/zqimg/pkg/zone"
)

// checkFaultPlan checks zqimg's zone fault extension (zone.FaultExtMagic)
// of a zoned image with nr zones: a plan that neither slot holds validly,
// or whose ranges do not fit the zones, is a corruption (zqimg refuses to
// open the image then); -r all replaces it in place with an empty plan
// (the extension keeps its size, so nothing else moves). A valid plan is
// listed as information.
func (c *checker) checkFaultPlan(nr uint32, repair bool) error {
	e := c.ext(zone.FaultExtMagic)
	if e == nil {
		return nil
	}
	p, err := zone.ParseFaultExtension(e.Data)
	if err == nil {
		err = p.Validate(nr)
	}
	if err == nil {
		if len(p.Ranges) > 0 {
			c.report(finding(KindInfo, ProblemNone, "Zone faults injected (zqimg zone-fault): %s", describeFaults(p)))
		}
		return nil
	}
	fixable := repair && len(e.Data) == zone.FaultExtSize
	f := finding(KindCorruption, ProblemZoneFaultPlan, "%s zoned: zone fault plan at offset 0x%x: %v", verb(fixable), e.Off, err).at(uint64(e.Off))
	c.zonedExtErr(f.repaired(fixable))
	if !fixable {
		return nil
	}
	empty := zone.NewFaultExtension(&zone.FaultPlan{Generation: 1})
	if err := c.write(empty, uint64(e.Off)+8); err != nil {
		return err
	}
	copy(e.Data, empty)
	return c.syncWrites()
}

// describeFaults lists the ranges of a plan ("zones 1-1 read-only, zones
// 2-3 offline").
func describeFaults(p *zone.FaultPlan) string {
	var parts []string
	for _, r := range p.Ranges {
		what := "read-only"
		if r.Cond == zone.CondOffline {
			what = "offline"
		}
		parts = append(parts, fmt.Sprintf("zones %d-%d %s", r.First, r.First+r.Count-1, what))
	}
	return strings.Join(parts, ", ")
}
