// Package zonefs serves a zoned qcow2 image (a *zone.Device) as a FUSE file
// system with the layout and semantics of Linux's zonefs: one file per zone,
// the size of a sequential zone's file is its write pointer, writes append,
// truncation resets or finishes the zone.
//
// # Layout
//
//	/            dr-xr-xr-x  size = number of sub-directories
//	/cnv/0..N-1  -rw-r-----  the N conventional zones (only if N > 0)
//	/seq/0..M-1  -rw-r-----  the M sequential zones
//
// Files are numbered in zone order within their directory. Unlike zonefs on
// a block device, no zone holds a super block: zone 0 is cnv/0 (or seq/0).
// Directories cannot be changed (EPERM; creating a file: EACCES). A
// directory's size is the number of its entries. Inode numbers: root 1,
// zone i has i+2, cnv nr_zones+2, seq nr_zones+3 (zonefs numbers zone files
// by zone index; 0 is not a usable inode number here).
//
// # Files
//
// Every file has st_blocks = its maximum size / 512 (the zone capacity; the
// zone length for conventional zones), st_blksize = 512, mode 0640 and the
// mounting user as owner. Reads and writes at or beyond the maximum size:
// reads return nothing, writes fail with EFBIG; a write that starts below
// it and runs past it is cut short there.
//
// Conventional zone files have a fixed size (the zone length), accept random
// reads and writes at any byte offset, and cannot be truncated (EPERM);
// O_APPEND writes fail with EINVAL.
//
// Sequential zone files have the size write pointer − zone start (capacity
// when FULL). Reads beyond the size return nothing. A write must start at
// the end of the file (EINVAL otherwise) and have offset and length
// multiples of 512 bytes (EINVAL otherwise); an O_APPEND write goes to the
// end of the file whatever the offset. truncate(0) resets the zone,
// truncate(capacity) finishes it (the file size becomes the capacity);
// truncating to the current size does nothing; any other size fails with
// EINVAL (kernel zonefs says EPERM; EFBIG beyond the largest file size). They are
// opened with FOPEN_DIRECT_IO: the kernel hands every write over unchanged
// and in order, so buffered writes (plain write(2), dd without
// oflag=direct, cat >>) are accepted — zonefs takes only O_DIRECT writes.
//
// Zone resources: a write into an EMPTY zone when max_active_zones zones
// are active fails with EOVERFLOW, and a write that needs an open zone when
// every open zone is explicitly open fails with ETOOMANYREFS (the errnos
// Linux's block layer returns for a device's "active zones exceeded" and
// "open zones exceeded"); otherwise the least recently written implicitly
// open zone is closed, as zone.Device does. With Options.ExplicitOpen (the
// explicit-open mount option), opening a sequential file for writing
// explicitly opens its zone (unless it is FULL) and the last close of such
// a file closes it; opening more sequential files for writing than
// max_open_zones fails with EBUSY (after waiting up to half a second for
// a slot: FUSE releases closed files asynchronously, so a program that
// closes one file and opens another must not lose the race against its own
// close). Without max_open_zones the option is ignored, as zonefs ignores
// it.
//
// # Durability
//
// fsync (and fdatasync, and syncfs through fsync of a directory) calls
// zone.Device.Flush: data, then qcow2 metadata, then the write pointers,
// each synced before the next. With a writethrough cache mode every write
// is durable when it returns. A reset is durable when truncate returns, and
// so is a finish (the mount flushes after it). O_SYNC and O_DSYNC writes
// are flushed before they return.
//
// # Zone conditions
//
// Options.Condition reports a zone's health: Good, ReadOnly (the file
// loses its write permissions; writes, truncation and attribute changes fail
// with EPERM; data stays readable) or Offline (mode 0, size 0, reads and
// writes fail with EPERM), as zonefs handles zones the device reports
// READ ONLY or OFFLINE.
//
// Package zonefs never prints; go-fuse's diagnostics go to
// MountOptions.Logger.
package zonefs
