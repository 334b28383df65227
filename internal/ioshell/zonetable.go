package ioshell

import (
	"bytes"
	"iter"
	"strconv"

	"github.com/zqimg/zqimg/pkg/zone"
)

// zoneTable writes a zone report as an ASCII table, one row per zone as
// the zones are read: the column widths follow from the geometry of the
// reported range (the widest value any zone of it can have), so that no
// row has to be seen before the first is written, and memory does not
// grow with the number of zones. Numbers are as in the human report:
// start, length, capacity and write pointer in 512-byte sectors (hex).
type zoneTable struct {
	w      []int // column widths
	border []byte
	line   []byte
}

var zoneTableHeader = []string{"ZONE", "START", "LEN", "CAP", "WPTR", "COND", "TYPE"}

// newZoneTable sizes the table for zones [first, first+n) of a device
// whose zoned header is h.
func newZoneTable(h *zone.Header, first, n uint64) *zoneTable {
	last := first + max(n, 1) - 1
	hexw := func(v uint64) int { return len("0x") + len(strconv.FormatUint(v, 16)) }
	zs := h.ZoneSize / 512
	typeW := len("1(CONVENTIONAL)")
	if last >= uint64(h.ConventionalZones) {
		typeW = len("2(SEQ_WRITE_REQUIRED)")
	}
	vals := []int{
		len(strconv.FormatUint(last, 10)),
		hexw(last * zs),
		hexw(zs),
		hexw(zs),
		hexw((last + 1) * zs), // a finished short last zone: start + zone size
		len("14(fu)"),
		typeW,
	}
	t := &zoneTable{}
	for i, v := range vals {
		t.w = append(t.w, max(v, len(zoneTableHeader[i])))
	}
	t.border = append(t.border, '+')
	for _, w := range t.w {
		t.border = append(t.border, bytes.Repeat([]byte{'-'}, w+2)...)
		t.border = append(t.border, '+')
	}
	t.border = append(t.border, '\n')
	return t
}

// row formats cells, centred (header) or right-aligned (data).
func (t *zoneTable) row(cells []string, centre bool) []byte {
	b := append(t.line[:0], '|')
	for i, c := range cells {
		pad := t.w[i] - len(c)
		left := pad
		if centre {
			left = pad / 2
		}
		b = append(b, ' ')
		b = appendSpaces(b, left)
		b = append(b, c...)
		b = appendSpaces(b, pad-left)
		b = append(b, ' ', '|')
	}
	t.line = append(b, '\n')
	return t.line
}

const spaces = "                                        "

func appendSpaces(b []byte, n int) []byte {
	for n > len(spaces) {
		b, n = append(b, spaces...), n-len(spaces)
	}
	return append(b, spaces[:max(n, 0)]...)
}

// write streams the table of zones to s.Out; an error ends it (the rows
// written so far stay, as with the other formats).
func (t *zoneTable) write(s *Shell, zones iter.Seq2[zone.Zone, error], zoneSize uint64) error {
	s.Out.Write(t.border)
	s.Out.Write(t.row(zoneTableHeader, true))
	s.Out.Write(t.border)
	var cell [7][]byte
	for z, err := range zones {
		if err != nil {
			s.Out.Write(t.border)
			return err
		}
		cell[0] = strconv.AppendUint(cell[0][:0], z.Start/zoneSize, 10)
		for i, v := range [4]uint64{z.Start, z.Len, z.Cap, z.WP} {
			cell[1+i] = strconv.AppendUint(append(cell[1+i][:0], "0x"...), v/512, 16)
		}
		cell[5] = append(append(append(strconv.AppendUint(cell[5][:0], uint64(z.Cond), 10), '('), z.Cond.Short()...), ')')
		cell[6] = append(append(append(strconv.AppendUint(cell[6][:0], uint64(z.Type), 10), '('), z.Type.String()...), ')')
		b := append(t.line[:0], '|')
		for i, c := range cell {
			b = appendSpaces(append(b, ' '), t.w[i]-len(c))
			b = append(append(b, c...), ' ', '|')
		}
		t.line = append(b, '\n')
		s.Out.Write(t.line)
	}
	s.Out.Write(t.border)
	return nil
}
