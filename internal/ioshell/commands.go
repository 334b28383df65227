package ioshell

import "github.com/zqimg/zqimg/pkg/zone"

// command describes one qemu-io command.
type command struct {
	name, alt string
	// argmin and argmax bound the operand count after the name (argmax -1:
	// no limit); a count outside them is reported as qemu-io's dispatcher
	// does ("bad argument count ..."). exact, when not 0, is the operand
	// count the command itself requires: another count within the bounds
	// prints the usage line, as qemu-io's read, write and discard do.
	argmin, argmax int
	exact          int
	opts           string   // getopt letters ("P:" takes an argument)
	long           []string // long options ("output:" takes an argument)
	args, oneline  string
	// help is the extended help printed by "help NAME" after the usage
	// line and a blank line: lines starting with a space, as qemu-io's.
	help   string
	writes bool // needs the image opened for writing
	noDev  bool // runs without an open image (help, quit)
	run    func(s *Shell, p *parsedArgs) error
}

var commands []*command

func init() {
	commands = []*command{
		{name: "read", alt: "r", argmin: 2, argmax: -1, exact: 2, opts: "bCl:pP:qs:v",
			args: "[-Cqv] [-P pattern [-s off] [-l len]] off len", oneline: "reads a number of bytes at a specified offset",
			help: ` reads a range of bytes at the given offset

 Example:
 'read -v 512 1k' - reads 1 KiB at offset 512 and dumps it in hexadecimal
 'read -P 0x5a 0 64k' - reads 64 KiB at offset 0 and checks that every byte is 0x5a

 Reads from the image (bytes never written read as zeroes) and prints how
 much was read and how fast, unless -q is given.
 -C, -- print the statistics in a machine parsable form
 -l, -- length of the range checked against the pattern (only with -P)
 -p, -- ignored, accepted for backwards compatibility
 -P, -- check that every byte read is the given pattern byte
 -q, -- quiet: do not print the statistics
 -s, -- offset in the data read where the pattern check starts (only with -P)
 -v, -- dump the data read in hexadecimal on standard output
`, run: (*Shell).read},
		{name: "write", alt: "w", argmin: 2, argmax: -1, exact: 2, opts: "bcCfnpP:quzs:",
			args: "[-cCfnquz] [-P pattern] off len", oneline: "writes a number of bytes at a specified offset",
			help: ` writes a range of bytes at the given offset

 Example:
 'write 512 1k' - writes 1 KiB of 0xcd bytes at offset 512
 'write -P 0x5a -f 1M 64k' - writes 64 KiB of 0x5a bytes at 1 MiB, then flushes
 'write -z 0 1M' - writes 1 MiB of zeroes at offset 0

 Writes a buffer of one repeated byte, 0xcd unless -P gives another. In a
 sequential zone the offset must be the zone's write pointer, offset and
 length multiples of 512, and the write must stay within the zone's
 capacity. With the default cache mode the data is durable when "wrote" is
 printed.
 -c, -- write compressed clusters (the offset a cluster start, the length
        whole clusters or up to the end of the image)
 -C, -- print the statistics in a machine parsable form
 -f, -- flush the image once the write is done (force unit access)
 -n, -- with -z: never fall back to writing a buffer of zeroes (zqimg never
        does), and lengths above 2 GiB - 512 are allowed
 -p, -- ignored, accepted for backwards compatibility
 -P, -- fill the buffer with the given pattern byte instead of 0xcd
 -q, -- quiet: do not print the statistics
 -u, -- with -z: the range may be deallocated
 -z, -- write zeroes (no data buffer)
`, writes: true, run: (*Shell).write},
		{name: "discard", alt: "d", argmin: 2, argmax: -1, exact: 2, opts: "Cq",
			args: "[-Cq] off len", oneline: "discards a number of bytes at a specified offset",
			help: ` discards a range of bytes at the given offset

 Example:
 'discard 1M 64k' - discards 64 KiB at 1 MiB

 Deallocates the range: it reads as zeroes afterwards, and the clusters it
 covers entirely are given back. Run as qemu-io, discard is a hint, as in
 QEMU's qcow2 driver: only the clusters it covers entirely are discarded,
 parts of clusters keep their data. In a zoned image only conventional
 zones can be discarded; a sequential zone is emptied with zone_reset.
 -C, -- print the statistics in a machine parsable form
 -q, -- quiet: do not print the statistics
`, writes: true, run: (*Shell).discard},
		{name: "readv", argmin: 2, argmax: -1, opts: "CP:qv",
			args: "[-Cqv] [-P pattern] off len [len..]", oneline: "reads a number of bytes at a specified offset",
			help: ` reads a range of bytes at the given offset into several buffers

 Example:
 'readv -v 512 1k 1k' - reads 2 KiB at offset 512 and dumps it in hexadecimal

 The buffers are read one after the other from the offset, as one request.
 -C, -- print the statistics in a machine parsable form
 -P, -- check that every byte read is the given pattern byte
 -q, -- quiet: do not print the statistics
 -v, -- dump the data read in hexadecimal on standard output
`, run: vectored("readv", false, (*Shell).read)},
		{name: "writev", argmin: 2, argmax: -1, opts: "CfqP:",
			args: "[-Cfq] [-P pattern] off len [len..]", oneline: "writes a number of bytes at a specified offset",
			help: ` writes a range of bytes at the given offset from several buffers

 Example:
 'writev 512 1k 1k' - writes 2 KiB of 0xcd bytes at offset 512

 The buffers are written one after the other from the offset, as one request.
 -C, -- print the statistics in a machine parsable form
 -f, -- flush the image once the write is done (force unit access)
 -P, -- fill the buffers with the given pattern byte instead of 0xcd
 -q, -- quiet: do not print the statistics
`, writes: true, run: vectored("writev", false, (*Shell).write)},
		{name: "aio_read", argmin: 2, argmax: -1, opts: "CiP:qv",
			args: "[-Ciqv] [-P pattern] off len [len..]", oneline: "asynchronously reads a number of bytes",
			help: ` reads a range of bytes at the given offset into several buffers

 Example:
 'aio_read -P 0x5a 0 64k' - reads 64 KiB at offset 0 and checks the pattern

 zqimg's requests are synchronous: the read has completed, and its result
 is printed, when the command returns.
 -C, -- print the statistics in a machine parsable form
 -P, -- check that every byte read is the given pattern byte
 -q, -- quiet: do not print the statistics
 -v, -- dump the data read in hexadecimal on standard output
 -i, -- ignored (qemu-io's io_uring/native flag)
`, run: vectored("aio_read", true, (*Shell).read)},
		{name: "aio_write", argmin: 2, argmax: -1, opts: "CfiqP:uz",
			args: "[-Cfiquz] [-P pattern] off len [len..]", oneline: "asynchronously writes a number of bytes",
			help: ` writes a range of bytes at the given offset from several buffers

 Example:
 'aio_write -P 0x5a 0 64k' - writes 64 KiB of 0x5a at offset 0

 zqimg's requests are synchronous: the write has completed, and its result
 is printed, when the command returns.
 -C, -- print the statistics in a machine parsable form
 -f, -- flush the image once the write is done (force unit access)
 -P, -- fill the buffers with the given pattern byte instead of 0xcd
 -q, -- quiet: do not print the statistics
 -i, -- ignored (qemu-io's io_uring/native flag)
 -u, -- with -z: the range may be deallocated
 -z, -- write zeroes (no data buffer)
`, writes: true, run: vectored("aio_write", true, (*Shell).write)},
		{name: "aio_flush", argmin: 0, argmax: 0, args: "", oneline: "completes all outstanding aio requests",
			help: ` waits for every outstanding aio request

 Example:
 'aio_flush' - returns when every aio_read and aio_write has completed

 zqimg's requests complete before their command returns: this does nothing.
`, run: func(*Shell, *parsedArgs) error { return nil }},
		{name: "flush", alt: "f", argmin: 0, argmax: 0, args: "", oneline: "flush all in-core file state to disk",
			help: ` makes everything written so far durable

 Example:
 'flush' - writes cached metadata and write pointers back and syncs the file

 Writes the cached qcow2 metadata and the changed write pointers back to the
 image file, in crash-safe order, and syncs the file. With the default cache
 mode (writethrough) every write is durable when it completes already; flush
 matters with -t writeback or -t none. A session also flushes when it ends.
`, run: (*Shell).flush},
		{name: "length", alt: "l", argmin: 0, argmax: 0, args: "", oneline: "gets the length of the current file",
			help: ` prints the virtual size of the image

 Example:
 'length' - prints "1 GiB" for an image of 1073741824 bytes
`, run: (*Shell).length},
		{name: "truncate", alt: "t", argmin: 1, argmax: 3, opts: "m:", args: "[-m prealloc_mode] off", oneline: "truncates the current file at the given offset",
			help: ` changes the virtual size of the image

 Example:
 'truncate 384M' - grows (or shrinks) the image to 384 MiB

 Grows or shrinks the image to the given size, a multiple of 512, as
 qemu-img resize does (no --shrink is needed). Clusters beyond a smaller
 size are dropped; a larger size reads as zeroes, also where a backing
 file would show through (the new area is then written with zeroes). A
 zoned image grows and shrinks by whole zones, and only trailing EMPTY
 sequential zones can be removed; other sizes are refused.
 -m, -- preallocation mode: only off (zqimg's images are sparse)
`, writes: true, run: (*Shell).truncate},
		{name: "alloc", alt: "a", argmin: 1, argmax: 2, args: "offset [count]", oneline: "checks if offset is allocated in the file",
			help: ` counts the allocated bytes of a range

 Example:
 'alloc 1M 64k' - prints "65536/65536 bytes allocated at offset 1 MiB" if
                  the image stores all of them

 Counts the bytes from offset (count bytes, 512 by default) that this image
 stores, as data or as zero clusters, and not its backing file; bytes
 beyond the end of the image are left out of the count. In a sequential
 zone, bytes at or beyond the write pointer are not allocated.
`, run: (*Shell).alloc},
		{name: "info", alt: "i", argmin: 0, argmax: 0, args: "", oneline: "prints information about the current file",
			help: ` prints what the image is

 Example:
 'info' - prints "format name: qcow2", the cluster size, the VM state
          offset and the qcow2 details

 For a qcow2 image: its cluster size, where its VM state would start (the
 virtual size rounded up to what one L2 table maps) and the qcow2 details
 that qemu-img info prints under "Format specific information" (a zoned
 image's zone details are left out: see zqimg info). A raw file has a
 cluster size and VM state offset of 0; for a null-co device only the
 format name is printed, and the command fails, as qemu-io's does.
`, run: (*Shell).info},
		{name: "map", argmin: 0, argmax: 0, args: "", oneline: "prints the allocated areas of a file",
			help: ` prints the allocated areas of the image

 Example:
 'map' - prints "2 MiB (0x200000) bytes     allocated at offset 0 bytes (0x0)"
         and the other runs, to the end of the image

 Prints one line per run of bytes that this image stores (as data or as
 zero clusters: "allocated") or does not store (they read from the backing
 file, or as zeroes: "not allocated"), with qemu-io's sizes. In a
 sequential zone, bytes at or beyond the write pointer are not allocated.
`, run: (*Shell).mapCmd},
		{name: "zone_report", alt: "zrp", argmin: 1, argmax: 2, long: []string{"output:"},
			args: "[--output=human|json|table] offset [number]", oneline: "report zone information",
			help: ` reports zones, from the zone that contains the given offset

 Example:
 'zrp 0 4' - reports the first four zones
 'zrp 64M' - reports every zone from the one containing offset 64 MiB to the end
 'zrp --output=json 0 1' - reports the first zone as JSON

 Prints one line per zone: its start, length, capacity and write pointer in
 512-byte sectors, its condition (0 not write pointer, 1 empty, 2 implicitly
 open, 3 explicitly open, 4 closed, 14 full) and its type (1 conventional,
 2 sequential write required). Without a number, every zone up to the end
 of the device is reported, as blkzone report does.
 --output=human, -- the lines above (the default)
 --output=json, -- a JSON array, offsets and lengths in bytes
 --output=table, -- a table, offsets and lengths in sectors
`, run: (*Shell).zoneReport},
		{name: "zone_open", alt: "zo", argmin: 2, argmax: 2, args: "offset len", oneline: "explicit open a range of zones in zone block device",
			help: ` explicitly opens every zone of a range

 Example:
 'zo 64M 64M' - opens the zone at 64 MiB (zones of 64 MiB)
 'zo 0 256M' - opens the first four zones (zones of 64 MiB)

 The offset must be a zone start and the length a multiple of the zone size
 or reach the end of the device. An empty or closed zone needs an open slot
 (zone.max_open_zones; an implicitly open zone is closed to make room if
 needed) and, if empty, an active slot (zone.max_active_zones). A full zone
 stays full. Conventional zones cannot be opened.
`, writes: true, run: zoneMgmt(zone.OpOpen)},
		{name: "zone_close", alt: "zc", argmin: 2, argmax: 2, args: "offset len", oneline: "close a range of zones in zone block device",
			help: ` closes every zone of a range

 Example:
 'zc 0 64M' - closes the first zone (zones of 64 MiB)

 An open zone becomes closed, or empty if nothing was written to it; other
 zones do not change. The range rules are those of zone_open.
`, writes: true, run: zoneMgmt(zone.OpClose)},
		{name: "zone_finish", alt: "zf", argmin: 2, argmax: 2, args: "offset len", oneline: "finish a range of zones in zone block device",
			help: ` finishes every zone of a range

 Example:
 'zf 64M 64M' - finishes the zone at 64 MiB (zones of 64 MiB)

 Moves each zone's write pointer to the zone start plus the zone size: the
 zone becomes full, and its unwritten part reads as zeroes. An empty or
 closed zone needs open and active slots as for zone_open. The range rules
 are those of zone_open.
`, writes: true, run: zoneMgmt(zone.OpFinish)},
		{name: "zone_reset", alt: "zrs", argmin: 2, argmax: 2, args: "offset len", oneline: "reset a zone write pointer in zone block device",
			help: ` resets every zone of a range

 Example:
 'zrs 0 64M' - resets the first zone (zones of 64 MiB)
 'zrs 0 1G' - resets every zone of a 1 GiB device, skipping conventional zones

 Moves each zone's write pointer back to the zone start: the zone becomes
 empty, and its data is discarded and reads as zeroes. Conventional zones
 refuse it, except in a reset of the whole device, which skips them.
`, writes: true, run: zoneMgmt(zone.OpReset)},
		{name: "zone_append", alt: "zap", argmin: 2, argmax: -1, opts: "p", args: "[-p] offset len [len..]", oneline: "append write a number of bytes at a specified offset",
			help: ` appends buffers at the write pointer of a zone

 Example:
 'zap -p 0 4k' - appends 4 KiB to the first zone and prints where it landed
 'zap 64M 4k 8k' - appends 4 KiB, then 8 KiB, to the zone at 64 MiB

 The offset must be the start of a sequential zone. Each buffer holds 0xcd
 bytes and its length is a multiple of 512; together they hold at most
 zone.max_append_bytes. The data lands at the zone's write pointer, which
 moves past it.
 -p, -- print the sector where the data landed
`, writes: true, run: (*Shell).zoneAppend},
		{name: "open", alt: "o", noDev: true, argmin: 0, argmax: -1, opts: "rsnkUt:d:i:o:",
			args: "[-rsnkU] [-t cache] [-d discard] [-i aio] [-o options] [path]", oneline: "open the file specified by path",
			help: ` opens a new file when none is open

 Example:
 'open -r /tmp/data' - opens /tmp/data read-only
 'open -n -o driver=qcow2 /tmp/data' - opens /tmp/data with the host page cache bypassed
 'open -o driver=qcow2,file.filename=/tmp/data' - opens /tmp/data, named by the options

 -r, -- open read-only
 -s, -- snapshot mode: writes go to a temporary overlay, discarded at close
 -n, -- bypass the host page cache (-t none)
 -k, -- accepted (native AIO); zqimg's I/O is synchronous
 -U, -- force share: no locks, reading only
 -t, -- cache mode, as the session's -t
 -d, -- accepted (discard mode)
 -i, -- accepted (AIO mode)
 -o, -- block layer options: driver=qcow2, filename or file.filename (the
        file, instead of path), file.driver=file, file.driver=qcow2 with
        file.file.filename (a qcow2 image stored in a qcow2 image),
        backing.driver=qcow2|raw (the backing file's format), cache-size,
        l2-cache-size, refcount-cache-size, l2-cache-entry-size,
        cache-clean-interval (qcow2's caches), node-name, file.node-name, backing.node-name, read-only,
        cache.direct, cache.no-flush, auto-read-only; driver=raw, and
        driver=file, host_device and host_cdrom (checked as QEMU does),
        open the file as raw data (locking=off: without locks);
        driver=blkdebug (image.*) and blkdebug:CONFIG:FILE names are
        passed through (request limits accepted; of the error rules,
        [inject-error] on l2_update is carried out, others refused);
        other options are refused
`, run: (*Shell).open},
		{name: "reopen", argmin: 0, argmax: -1, opts: "c:o:rw",
			args: "[(-r|-w)] [-c cache] [-o options]", oneline: "reopens an image with new options",
			help: ` changes the open options of the image

 Example:
 'reopen -r' - reopens the image read-only
 'reopen -w -c writeback' - reopens it read-write, with the writeback cache mode

 The image is flushed and closed, then opened again with the new flags; if
 that fails, it is opened again as it was. Node names and drivers cannot
 change (giving the same ones is accepted); qcow2 run-time options zqimg
 does not implement (lazy-refcounts, cache sizes, ...) are refused.
 -r, -- reopen the image read-only
 -w, -- reopen the image read-write
 -c, -- change the cache mode to the given value
 -o, -- options: read-only, cache.direct, cache.no-flush, auto-read-only,
        node-name, driver (and their file. and backing. forms, unchanged)
`, run: (*Shell).reopen},
		{name: "close", alt: "c", argmin: 0, argmax: 0, args: "", oneline: "close the current open file",
			help: ` closes the image

 Example:
 'close' - flushes and closes the image; later commands find no image open

 The image is flushed and closed, and its locks released, before the next
 command runs; a failure to flush is reported as close's failure.
`, run: (*Shell).close},
		{name: "help", alt: "?", noDev: true, argmin: 0, argmax: 1, args: "[command]", oneline: "help for one or all commands",
			help: ` prints help for one command, or lists every command

 Example:
 'help' - lists every command with a one-line description
 'help zrp' - describes zone_report, with examples and its options
`, run: (*Shell).help},
		{name: "quit", alt: "q", noDev: true, argmin: 0, argmax: 0, args: "", oneline: "exit the program",
			help: ` ends the session

 Example:
 'quit' - flushes and closes the image, and exits

 Commands after quit are not run. The end of the input or of the -c
 commands ends the session the same way. The exit status is 1 if any
 command of the session failed.
`, run: func(s *Shell, _ *parsedArgs) error { s.quit = true; return nil }},
	}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name || c.alt == name {
			return c
		}
	}
	return nil
}

// Known reports whether name is a command (or its short name).
func Known(name string) bool { return lookup(name) != nil }

// Writes reports whether the named command needs the image opened for writing.
func Writes(name string) bool {
	c := lookup(name)
	return c != nil && c.writes
}

// maxOperands returns the largest operand count the command accepts, or -1.
func (c *command) maxOperands() int {
	if c.exact != 0 {
		return c.exact
	}
	return c.argmax
}
