package ioshell

import (
	"errors"
	"strconv"
)

// vectored turns read or write into qemu-io's readv/writev/aio_read/
// aio_write: the operands are an offset and one or more lengths (the
// buffers of an I/O vector, placed one after the other), done as one
// request of their total length, which is what the statistics report.
// zqimg's I/O is synchronous, so an aio_ request has completed, and its
// output is printed, when the command returns.
//
// name is the command's name, which its failure line names. For an aio_
// command (async) a failed request is reported but does not fail the
// command, as in qemu-io, where the request completes after the command
// has returned.
func vectored(name string, async bool, run func(*Shell, *parsedArgs) error) func(*Shell, *parsedArgs) error {
	return func(s *Shell, p *parsedArgs) error {
		var total int64
		for _, a := range p.operands[1:] {
			n, err := s.parseNum(a)
			if err != nil {
				return err
			}
			total += n
		}
		q := *p
		q.operands = []string{p.operands[0], strconv.FormatInt(total, 10)}
		q.verb = name
		err := run(s, &q)
		if async && errors.Is(err, errRequestFailed) {
			return nil
		}
		return err
	}
}
