package mount

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// record returns the rec-th record of writer w: a header naming both and
// a body that depends on both. size is a multiple of 512.
func record(w, rec, size int) []byte {
	b := make([]byte, size)
	copy(b, fmt.Sprintf("W%02d R%06d ", w, rec))
	for i := 16; i < size; i++ {
		b[i] = byte(w*31 + rec*7 + i)
	}
	return b
}

// appenderMain appends COUNT records of SIZE bytes of writer ID to FILE
// through an O_APPEND descriptor: appender FILE ID COUNT SIZE.
func appenderMain(args []string) int {
	if len(args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: appender FILE ID COUNT SIZE")
		return 2
	}
	id, _ := strconv.Atoi(args[1])
	count, _ := strconv.Atoi(args[2])
	size, _ := strconv.Atoi(args[3])
	f, err := os.OpenFile(args[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "appender:", err)
		return 1
	}
	defer f.Close()
	for r := 0; r < count; r++ {
		n, err := f.Write(record(id, r, size))
		if err != nil || n != size {
			fmt.Fprintf(os.Stderr, "appender %d record %d: wrote %d: %v\n", id, r, n, err)
			return 1
		}
	}
	return 0
}

// sector returns the content the streamer writes at sector s (file offset
// 512*s) of zone file z in run seed.
func sector(seed uint64, z, s int) []byte {
	b := make([]byte, 512)
	for i := 0; i < 512; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], seed<<40^uint64(z)<<32^uint64(s)<<8^uint64(i/8))
	}
	return b
}

// streamerMain appends to DIR/seq/0, then seq/1, ... (NZONES files), in
// chunks of 512 B to 64 KiB, and fsyncs every few chunks. After each
// write it prints "W zone size", after each fsync "S zone size" (sizes in
// bytes, printed only once the call returned). It exits quietly when the
// file system goes away: streamer DIR NZONES SEED.
func streamerMain(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: streamer DIR NZONES SEED")
		return 2
	}
	nz, _ := strconv.Atoi(args[1])
	seed, _ := strconv.ParseUint(args[2], 10, 64)
	rng := rand.New(rand.NewPCG(seed, 7))
	say := func(format string, a ...any) { _, _ = os.Stdout.WriteString(fmt.Sprintf(format, a...)) }
	gone := func(err error) bool {
		return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.EIO)
	}
	for z := 0; z < nz; z++ {
		fd, err := unix.Open(filepath.Join(args[0], "seq", strconv.Itoa(z)), unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
		if err != nil {
			if gone(err) {
				return 0
			}
			fmt.Fprintln(os.Stderr, "streamer:", err)
			return 1
		}
		size := 0
		untilSync := rng.IntN(8) + 1
		for {
			n := 512 * (rng.IntN(128) + 1)
			buf := make([]byte, 0, n)
			for s := size / 512; s < (size+n)/512; s++ {
				buf = append(buf, sector(seed, z, s)...)
			}
			w, err := unix.Write(fd, buf)
			if errors.Is(err, syscall.EFBIG) {
				break // zone full: next one
			}
			if err != nil {
				if gone(err) {
					return 0
				}
				fmt.Fprintf(os.Stderr, "streamer: zone %d at %d: %v\n", z, size, err)
				return 1
			}
			size += w
			say("W %d %d\n", z, size)
			if untilSync--; untilSync == 0 {
				if err := unix.Fsync(fd); err != nil {
					if gone(err) {
						return 0
					}
					fmt.Fprintf(os.Stderr, "streamer: fsync: %v\n", err)
					return 1
				}
				say("S %d %d\n", z, size)
				untilSync = rng.IntN(8) + 1
			}
		}
		unix.Close(fd)
	}
	for {
		time.Sleep(time.Hour)
	}
}
