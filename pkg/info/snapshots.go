package info

import (
	"fmt"
	"strings"
	"time"

	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/units"
)

// SnapshotInfo mirrors qemu-img's SnapshotInfo JSON object, keys in the
// order qemu-img 7.2 prints them. ICount is omitted when the snapshot
// records none.
type SnapshotInfo struct {
	ICount      *int64 `json:"icount,omitempty"`
	VMClockNsec int64  `json:"vm-clock-nsec"`
	Name        string `json:"name"`
	DateSec     int64  `json:"date-sec"`
	DateNsec    int64  `json:"date-nsec"`
	VMClockSec  int64  `json:"vm-clock-sec"`
	ID          string `json:"id"`
	VMStateSize uint64 `json:"vm-state-size"`
}

// SnapshotInfos describes the snapshot table entries.
func SnapshotInfos(entries []image.SnapshotEntry) []SnapshotInfo {
	out := make([]SnapshotInfo, 0, len(entries))
	for i := range entries {
		e := &entries[i]
		s := SnapshotInfo{
			VMClockNsec: int64(e.VMClockNsec % 1e9),
			VMClockSec:  int64(e.VMClockNsec / 1e9),
			Name:        cString(e.Name),
			DateSec:     int64(e.DateSec),
			DateNsec:    int64(e.DateNsec),
			ID:          cString(e.ID),
			VMStateSize: e.VMStateSize(),
		}
		if ic := e.ICount(); ic != -1 {
			s.ICount = &ic
		}
		out = append(out, s)
	}
	return out
}

// cString is s as QEMU reads an ID or a name of the snapshot table: a C
// string, which its first NUL byte ends.
func cString(s string) string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return s[:i]
	}
	return s
}

// SnapshotListHeader is the column header line of a snapshot list.
var SnapshotListHeader = fmt.Sprintf("%-10s%-17s%8s%20s%13s%11s", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT")

// SnapshotLine formats one snapshot as a line of qemu-img's snapshot list
// (without the newline): ID, tag, VM state size, date in local time,
// VM clock, icount (empty when not recorded).
func SnapshotLine(s SnapshotInfo) string {
	date := time.Unix(s.DateSec, 0).Local().Format("2006-01-02 15:04:05")
	secs := s.VMClockSec
	clock := fmt.Sprintf("%02d:%02d:%02d.%03d", secs/3600, (secs/60)%60, secs%60, s.VMClockNsec/1000000)
	icount := ""
	if s.ICount != nil {
		icount = fmt.Sprint(*s.ICount)
	}
	return fmt.Sprintf("%-9s %-16s %8s%20s%13s%11s", s.ID, s.Name, units.Human(s.VMStateSize), date, clock, icount)
}

// SnapshotList returns the "Snapshot list:" section as qemu-img prints it
// (empty when there are no snapshots).
func SnapshotList(snaps []SnapshotInfo) string {
	if len(snaps) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("Snapshot list:\n")
	b.WriteString(SnapshotListHeader + "\n")
	for _, s := range snaps {
		b.WriteString(SnapshotLine(s) + "\n")
	}
	return b.String()
}
