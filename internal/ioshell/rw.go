package ioshell

import (
	"bytes"
	"fmt"
	"syscall"

	"github.com/zqimg/zqimg/pkg/zone"
)

// patternBuf returns n bytes of pattern, reusing the shell's buffer.
func (s *Shell) patternBuf(n int64, pattern byte) []byte {
	if int64(len(s.pbuf)) < n || s.pbufPat != pattern {
		s.pbuf = bytes.Repeat([]byte{pattern}, int(max(n, 64<<10)))
		s.pbufPat = pattern
	}
	return s.pbuf[:n]
}

// vmState is a device with a VM state area (qcow2: past the virtual
// disk), which read -b and write -b address.
type vmState interface {
	ReadVMState(p []byte, pos int64) (int, error)
	WriteVMState(p []byte, pos int64) (int, error)
}

// errNoVMState fails -b on a device without a VM state area (raw), as
// qemu's block layer does.
var errNoVMState = fmt.Errorf("this device has no VM state area: %w", syscall.ENOTSUP)

// sectorAligned checks -b and -c requests as qemu-io does.
func (s *Shell) sectorAligned(offset, count int64) error {
	if offset%512 != 0 {
		fmt.Fprintf(s.Out, "%d is not a sector-aligned value for 'offset'\n", offset)
		return errCommandFailed
	}
	if count%512 != 0 {
		fmt.Fprintf(s.Out, "%d is not a sector-aligned value for 'count'\n", count)
		return errCommandFailed
	}
	return nil
}

func (s *Shell) read(p *parsedArgs) error {
	var pattern byte
	pflag := p.has('P')
	if pflag {
		v, ok := parsePattern(p.flags['P'])
		if !ok {
			fmt.Fprintf(s.Out, "%s is not a valid pattern byte\n", p.flags['P'])
			return errCommandFailed
		}
		pattern = v
	}
	var patOff, patCount int64
	lflag, sflag := p.has('l'), p.has('s')
	var err error
	if lflag {
		if patCount, err = s.parseNum(p.flags['l']); err != nil {
			return err
		}
	}
	if sflag {
		if patOff, err = s.parseNum(p.flags['s']); err != nil {
			return err
		}
	}
	offset, err := s.parseNum(p.operands[0])
	if err != nil {
		return err
	}
	count, err := s.parseNum(p.operands[1])
	if err != nil {
		return err
	}
	if count > maxRequest {
		fmt.Fprintf(s.Out, "length cannot exceed %d, given %s\n", maxRequest, p.operands[1])
		return errCommandFailed
	}
	if !pflag && (lflag || sflag) {
		s.usage(lookup("read"))
		return errCommandFailed
	}
	if !lflag {
		patCount = count - patOff
	}
	if patCount < 0 || patCount+patOff > count {
		fmt.Fprintf(s.Out, "pattern verification range exceeds end of read data\n")
		return errCommandFailed
	}
	bflag := p.has('b')
	if bflag {
		if err := s.sectorAligned(offset, count); err != nil {
			return err
		}
	}
	if int64(cap(s.rbuf)) < count {
		s.rbuf = make([]byte, count)
	}
	buf := s.rbuf[:count]
	t1 := s.now()
	if vm, ok := s.Dev.(vmState); bflag && ok {
		_, err = vm.ReadVMState(buf, offset)
	} else if bflag {
		err = errNoVMState
	} else {
		_, err = s.Dev.ReadAt(buf, offset)
	}
	d := s.now().Sub(t1)
	if err != nil {
		return s.fail(p.verbOr("read"), err)
	}
	var ret error
	if pflag && !bytes.Equal(buf[patOff:patOff+patCount], s.patternBuf(patCount, pattern)) {
		fmt.Fprintf(s.Out, "Pattern verification failed at offset %d, %d bytes\n", offset+patOff, patCount)
		ret = errCommandFailed
	}
	if p.has('q') {
		return ret
	}
	if p.has('v') {
		s.dump(buf, offset)
	}
	s.report("read", d, offset, count, count, 1, p.has('C'))
	return ret
}

func (s *Shell) write(p *parsedArgs) error {
	bflag := p.has('b')
	switch {
	case p.has('s'):
		return s.fail("write", fmt.Errorf("pattern files (-s) are not supported: %w", syscall.ENOTSUP))
	}
	zflag, pflag := p.has('z'), p.has('P')
	if p.has('u') && !zflag {
		fmt.Fprintf(s.Out, "-u requires -z to be specified\n")
		return errCommandFailed
	}
	if p.has('n') && !zflag {
		fmt.Fprintf(s.Out, "-n requires -z to be specified\n")
		return errCommandFailed
	}
	if bflag && zflag {
		fmt.Fprintf(s.Out, "-b and -z cannot be specified at the same time\n")
		return errCommandFailed
	}
	if zflag && pflag {
		fmt.Fprintf(s.Out, "Only one of -z, -P, and -s can be specified at the same time\n")
		return errCommandFailed
	}
	cflag := p.has('c') && !zflag
	if p.has('f') && (p.has('c') || bflag) {
		fmt.Fprintf(s.Out, "-f and -b or -c cannot be specified at the same time\n")
		return errCommandFailed
	}
	pattern := byte(0xcd)
	if pflag {
		v, ok := parsePattern(p.flags['P'])
		if !ok {
			fmt.Fprintf(s.Out, "%s is not a valid pattern byte\n", p.flags['P'])
			return errCommandFailed
		}
		pattern = v
	}
	offset, err := s.parseNum(p.operands[0])
	if err != nil {
		return err
	}
	count, err := s.parseNum(p.operands[1])
	if err != nil {
		return err
	}
	if count > maxRequest && !p.has('n') {
		fmt.Fprintf(s.Out, "length cannot exceed %d, given %s\n", maxRequest, p.operands[1])
		return errCommandFailed
	}
	if cflag || bflag {
		if err := s.sectorAligned(offset, count); err != nil {
			return err
		}
	}
	t1 := s.now()
	vm, isVM := s.Dev.(vmState)
	switch {
	case bflag && isVM:
		_, err = vm.WriteVMState(s.patternBuf(count, pattern), offset)
	case bflag:
		err = errNoVMState
	case zflag && p.has('u'):
		err = s.Dev.WriteZeroesUnmap(offset, count)
	case zflag:
		err = s.Dev.WriteZeroes(offset, count)
	case cflag:
		err = s.writeCompressed(s.patternBuf(count, pattern), offset)
	default:
		_, err = s.Dev.WriteAt(s.patternBuf(count, pattern), offset)
	}
	if err == nil && p.has('f') {
		err = s.Dev.Flush()
	}
	d := s.now().Sub(t1)
	if err != nil {
		return s.fail(p.verbOr("write"), err)
	}
	if !p.has('q') {
		s.report("wrote", d, offset, count, count, 1, p.has('C'))
	}
	return nil
}

func (s *Shell) discard(p *parsedArgs) error {
	offset, err := s.parseNum(p.operands[0])
	if err != nil {
		return err
	}
	count, err := s.parseNum(p.operands[1])
	if err != nil {
		return err
	}
	t1 := s.now()
	if off, n, ok := s.advisoryRange(offset, count); ok {
		if n > 0 {
			err = s.Dev.Discard(off, n)
		}
	} else {
		err = s.Dev.Discard(offset, count)
	}
	d := s.now().Sub(t1)
	if err != nil {
		return s.fail("discard", err)
	}
	if !p.has('q') {
		s.report("discard", d, offset, count, count, 1, p.has('C'))
	}
	return nil
}

// advisoryRange returns the part of a discard request that qemu's qcow2
// driver acts on, when the shell takes discards as hints
// (AdvisoryDiscard) on a plain qcow2 image and the request lies within
// it: the whole clusters of the range (and a partial last cluster of the
// image when the range reaches the end); nothing on a version 2 image
// with a backing file, which cannot hide the backing file's data. ok is
// false when the request is to be passed on as it is.
func (s *Shell) advisoryRange(off, n int64) (int64, int64, bool) {
	if !s.AdvisoryDiscard {
		return 0, 0, false
	}
	dev, ok := s.Dev.(*zone.Device)
	if !ok || dev.Zoned() {
		return 0, 0, false
	}
	size := dev.Size()
	if off < 0 || n < 0 || off > size || n > size-off {
		return 0, 0, false // refused as it is
	}
	img := dev.Image()
	if _, hasBacking := img.BackingSize(); hasBacking && img.Header().Version < 3 {
		return 0, 0, true
	}
	cs := img.ClusterSize()
	start := (off + cs - 1) / cs * cs
	end := (off + n) / cs * cs
	if off+n == size {
		end = size
	}
	if end <= start {
		return start, 0, true
	}
	return start, end - start, true
}

// writeCompressed writes p at off as compressed clusters (qemu-io's write
// -c): off must be a cluster start and p whole clusters, or end at the end
// of the image; a cluster that does not compress is stored as data.
func (s *Shell) writeCompressed(p []byte, off int64) error {
	dev, err := s.qcow2("compressed write")
	if err != nil {
		return err
	}
	cs := dev.Image().ClusterSize()
	if off%cs != 0 || (int64(len(p))%cs != 0 && off+int64(len(p)) != s.Dev.Size()) {
		return fmt.Errorf("%w: a compressed write covers whole clusters of %d bytes (or ends at the end of the image), not %d bytes at offset %d",
			syscall.EINVAL, cs, len(p), off)
	}
	for len(p) > 0 {
		n := min(int64(len(p)), cs)
		c, err := dev.Image().CompressCluster(p[:n])
		if err != nil {
			return err
		}
		if _, err := dev.WriteCompressed(c, off); err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}
