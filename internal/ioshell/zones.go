package ioshell

import (
	"fmt"
	"math"
	"strconv"

	"github.com/zqimg/zqimg/pkg/zone"
)

func (s *Shell) zoneReport(p *parsedArgs) error {
	format := "human"
	if v, ok := p.long["output"]; ok {
		format = v
	}
	if format != "human" && format != "json" && format != "table" {
		fmt.Fprintf(s.Out, "--output must be human, json or table, not '%s'\n", format)
		return errCommandFailed
	}
	offset, err := s.parseNum(p.operands[0])
	if err != nil {
		return err
	}
	// Without a number, every zone to the end of the device (as blkzone
	// report does).
	nr := uint64(math.MaxUint64)
	if len(p.operands) > 1 {
		n, err := s.parseNum(p.operands[1])
		if err != nil {
			return err
		}
		nr = uint64(n)
	}
	dev, err := s.qcow2("zone report")
	if err != nil {
		return s.fail("zone report", err)
	}
	zones, err := dev.Zones(offset, nr)
	if err != nil {
		return s.fail("zone report", err)
	}
	switch format {
	case "json":
		s.Out.WriteString("[")
		sep := "\n"
		var line []byte
		for z, err := range zones {
			if err != nil {
				s.Out.WriteString("\n]\n")
				return s.fail("zone report", err)
			}
			line = append(line[:0], sep...)
			line = appendZoneJSON(line, z)
			s.Out.Write(line)
			sep = ",\n"
		}
		s.Out.WriteString("\n]\n")
	case "table":
		h := dev.Header()
		first := uint64(offset) / h.ZoneSize
		t := newZoneTable(h, first, min(nr, uint64(h.NrZones)-first))
		if err := t.write(s, zones, h.ZoneSize); err != nil {
			return s.fail("zone report", err)
		}
	default:
		var line []byte
		for z, err := range zones {
			if err != nil {
				return s.fail("zone report", err)
			}
			line = appendZoneHuman(line[:0], z)
			s.Out.Write(line)
		}
	}
	return nil
}

// appendZoneHuman formats a zone as qemu-io's zone report does, in sectors.
func appendZoneHuman(b []byte, z zone.Zone) []byte {
	b = append(b, "start: 0x"...)
	b = strconv.AppendUint(b, z.Start/512, 16)
	b = append(b, ", len 0x"...)
	b = strconv.AppendUint(b, z.Len/512, 16)
	b = append(b, ", cap 0x"...)
	b = strconv.AppendUint(b, z.Cap/512, 16)
	b = append(b, ", wptr 0x"...)
	b = strconv.AppendUint(b, z.WP/512, 16)
	b = append(b, ", zcond:"...)
	b = strconv.AppendUint(b, uint64(z.Cond), 10)
	b = append(b, ", [type: "...)
	b = strconv.AppendUint(b, uint64(z.Type), 10)
	return append(b, "]\n"...)
}

// appendZoneJSON formats a zone as a JSON object; offsets are in bytes.
func appendZoneJSON(b []byte, z zone.Zone) []byte {
	b = append(b, `  {"start": `...)
	b = strconv.AppendUint(b, z.Start, 10)
	b = append(b, `, "length": `...)
	b = strconv.AppendUint(b, z.Len, 10)
	b = append(b, `, "capacity": `...)
	b = strconv.AppendUint(b, z.Cap, 10)
	b = append(b, `, "write-pointer": `...)
	b = strconv.AppendUint(b, z.WP, 10)
	b = append(b, `, "condition": `...)
	b = strconv.AppendUint(b, uint64(z.Cond), 10)
	b = append(b, `, "condition-name": "`...)
	b = append(b, z.Cond.String()...)
	b = append(b, `", "type": `...)
	b = strconv.AppendUint(b, uint64(z.Type), 10)
	b = append(b, `, "type-name": "`...)
	b = append(b, z.Type.String()...)
	return append(b, `"}`...)
}

func zoneMgmt(op zone.Op) func(*Shell, *parsedArgs) error {
	return func(s *Shell, p *parsedArgs) error {
		offset, err := s.parseNum(p.operands[0])
		if err != nil {
			return err
		}
		length, err := s.parseNum(p.operands[1])
		if err != nil {
			return err
		}
		dev, err := s.qcow2("zone " + op.String())
		if err == nil {
			err = dev.Manage(op, offset, length)
		}
		if err != nil {
			return s.fail("zone "+op.String(), err)
		}
		return nil
	}
}

func (s *Shell) zoneAppend(p *parsedArgs) error {
	if len(p.operands) < 2 {
		s.usage(lookup("zone_append"))
		return errCommandFailed
	}
	offset, err := s.parseNum(p.operands[0])
	if err != nil {
		return err
	}
	var bufs [][]byte
	var total int64
	for _, a := range p.operands[1:] {
		n, err := s.parseNum(a)
		if err != nil {
			return err
		}
		if n > maxRequest {
			fmt.Fprintf(s.Out, "Argument '%s' exceeds maximum size %d\n", a, maxRequest)
			return errCommandFailed
		}
		if total > maxRequest-n {
			fmt.Fprintf(s.Out, "The total number of bytes exceed the maximum size %d\n", maxRequest)
			return errCommandFailed
		}
		total += n
		bufs = append(bufs, s.patternBuf(n, 0xcd))
	}
	dev, err := s.qcow2("zone append")
	if err != nil {
		return s.fail("zone append", err)
	}
	pos, err := dev.Append(bufs, offset)
	if err != nil {
		return s.fail("zone append", err)
	}
	if p.has('p') {
		fmt.Fprintf(s.Out, "After zap done, the append sector is 0x%x\n", pos/512)
	}
	return nil
}
