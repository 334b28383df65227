package ioshell

import "strconv"

// vectored turns read or write into qemu-io's readv/writev/aio_read/
// aio_write: the operands are an offset and one or more lengths (the
// buffers of an I/O vector, placed one after the other), done as one
// request of their total length, which is what the statistics report.
// zqimg's I/O is synchronous, so an aio_ request has completed, and its
// output is printed, when the command returns.
func vectored(run func(*Shell, *parsedArgs) error) func(*Shell, *parsedArgs) error {
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
		return run(s, &q)
	}
}
