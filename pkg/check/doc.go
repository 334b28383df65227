// Package check checks and repairs the consistency of qcow2 images, like
// qemu-img check, including images with the zoned format extension.
//
// # What is checked
//
// A check rebuilds the reference count of every host cluster from every
// structure that refers to it: the header cluster, the active L1 table and
// its L2 tables and data clusters (normal, preallocated zero, compressed: a
// compressed cluster refers to every host cluster its byte range touches),
// the snapshot table and every snapshot's L1 and L2 tables and data, the
// refcount table and refcount blocks, the LUKS header area, the bitmap
// directory with its bitmap tables and data (when the bitmaps extension is
// present with its autoclear bit), and the zoned write-pointer table. The
// result is compared with the stored refcounts: a stored refcount above
// the references is a leak, one below is a corruption. The checks of the
// L1 and L2 entries, the OFLAG_COPIED flags and the statistics (allocated,
// fragmented, compressed clusters, image end offset) are those of QEMU 7.2,
// with its messages, so that the counts and the exit status agree with
// qemu-img check on every image qemu-img can open.
//
// For zoned images the zoned extension is validated against the image (see
// zone.Header.Validate); the write-pointer table must lie inside the file,
// cluster aligned, refcounted and overlapping nothing; every entry must be
// possible for its zone (zone.Header.EntryProblem); a table whose entries
// only make sense big-endian is reported as byte-swapped; and no allocated
// data cluster of the active L1 table may lie wholly at or beyond the write
// pointer of a sequential zone. Extension, table and write-pointer problems
// are corruptions; data beyond a write pointer is counted as a leak: it is
// data of a write that was never acknowledged, which a crash may
// legitimately leave behind.
//
// Allocated clusters that hold no data (the zero flag, or with extended
// L2 entries no allocated subcluster) beyond a write pointer are not
// damage: the reference implementation's zone reset zeroes a zone's
// clusters and keeps them allocated, and they read as zeroes. They are
// counted apart (ZonedResult.ZeroBeyondWP), as space a repair may reclaim,
// and change neither the counts nor the exit status. A write pointer at
// zone start + zone_size is a finished zone, also for a last zone shorter
// than zone_size (its write pointer then lies past the device end).
//
// When the zoned extension does not lead to the write-pointer table
// (missing, unusable, or zonedmeta_offset wrong: 0, unaligned, past the
// end of the file, over other metadata, or over something that is not a
// table), the check looks for the real table among the clusters that hold
// a refcount and that nothing refers to, trying first the place qemu-img
// create uses (right after the first refcount block): a run whose content
// is a plausible table for the image's zone layout. The table found is
// counted as used, so that no repair frees it as leaked.
//
// # Repairs
//
// RepairLeaks lowers stored refcounts that exceed the references, and
// reclaims the zero clusters beyond write pointers: their L2 entry becomes
// a plain zero entry (what reads return does not change), then the
// refcount is lowered. RepairAll also:
//
//   - raises refcounts that are too low, in place, or, when the refcount
//     structure itself is broken (a used cluster with refcount 0, a refcount
//     block unaligned, outside the file or shared), rebuilds the refcount
//     table and blocks from the computed references in free clusters, as
//     QEMU does, and switches the header to them;
//   - fixes OFLAG_COPIED flags, clears reserved bits of L1 and L2 entries
//     and OFLAG_COPIED on compressed entries, and repairs impossible
//     subcluster bitmaps;
//   - an L1 entry whose L2 table, or an L2 entry whose cluster, lies in a
//     metadata structure (the header, the active L1 table, the refcount
//     table or a refcount block, the snapshot table, the write-pointer
//     table) is cleared (the range reads as zeroes), where QEMU would
//     raise the refcount and let guest writes and metadata updates
//     overwrite each other. A refcount block counts as metadata only when
//     its content is plausible (most refcounts it holds agree with the
//     references): a refcount table entry pointing at a data cluster is
//     repaired by rebuilding the refcount structure instead;
//   - an L2 entry pointing to an unaligned cluster is realigned to the
//     cluster start when that cluster is allocated and referenced by nothing
//     else (a flipped low bit), otherwise it is made to read as zeroes; an
//     L1 entry pointing to an unaligned L2 table is realigned under the same
//     condition, otherwise cleared; entries pointing one cluster or more
//     beyond the end of the file are cleared (the data is gone);
//   - a table lying beyond the end of the file (a truncated file): the file
//     is extended with zeroes over an L1 table (it then reads as empty;
//     also for an active L1 table running past the end by less than a
//     cluster, which QEMU reads as zeroes but zqimg refuses to open); a
//     lost snapshot table is dropped from the header (its snapshots are
//     gone); a refcount block outside the file makes the refcount
//     structure be rebuilt (QEMU extends the file instead);
//   - clears the dirty and corrupt bits when no corruption is left;
//   - repairs the zoned extension where a field can be derived: reserved
//     bytes are zeroed, nr_zones and zonedmeta_size recomputed from the
//     virtual size (when the table's clusters can hold the result; a
//     zonedmeta_size of 0 or of 2^32-7 or more, which says nothing of
//     the table, becomes 8 × nr_zones), and
//     max_active_zones, max_open_zones and max_append_bytes clamped to
//     their limits; a missing zoned-format bit is set; zonedmeta_offset is
//     pointed to the write-pointer table found elsewhere (see above);
//   - clamps impossible write pointers to the nearest valid state: an
//     entry of a conventional zone becomes its start with the conventional
//     bit; the conventional bit is dropped from a sequential zone's entry; a
//     write pointer below its zone start becomes the start (EMPTY), one
//     above the zone end becomes start + zone_size (FULL, where a finish
//     puts it; past the device end for a short last zone); an unaligned
//     one is rounded down to 512 bytes; one between the capacity end and the
//     zone end becomes the capacity end (FULL). Clamping only ever moves a
//     write pointer back (or up to the zone start, below which there is no
//     data of the zone, or within the region past the device end, where
//     there is none either), so it never covers data that was not written;
//   - writes a byte-swapped write-pointer table back little-endian;
//   - discards allocated data beyond a write pointer: the L2 entry is
//     cleared, then the refcount lowered;
//   - completes version 3 snapshot table entries with less than the 16
//     bytes of extra data version 3 requires: once the refcounts agree
//     with the references, the table is rewritten with every entry's
//     extra data completed to QEMU's 24 bytes (qcow2_check_fix_snapshot_table)
//     — refcounts of free clusters raised (synced), the new table written
//     there (synced), the header's snapshot table offset switched in one
//     write (synced), the old table's refcounts lowered (synced).
//
// Problems without a safe repair (an invalid zone model, zone size or
// capacity, a missing zoned extension, a misplaced or overlapping
// write-pointer table whose real place is not found, an unreadable
// snapshot table, an invalid bitmap
// directory) are reported and left as they are. After a repair, the
// second check marks the problems the repair had found and could not
// repair (Finding.Unrepaired; the line ends with "(could not be
// repaired)") and the repairing passes' lines leave them out, so that
// they are not listed again as if they were new.
//
// A repair first runs a read-only pass, which tells which clusters are
// shared between structures. It never writes into an L1 or L2 table that is
// also something else (an "L2 table" that is really a refcount block), never
// trusts or rewrites a write-pointer table that overlaps other clusters, and
// never writes the header when another structure lies in its cluster. Some
// repairs make others possible (a table stops being shared once the refcount
// structure over it is rebuilt elsewhere): repairing rounds continue, up to
// four, while they change something and problems remain, or the file was
// extended over a table (whose part beyond the old end no pass knew as
// metadata); the result sums what they fixed.
//
// # Crash safety of repairs
//
// A repair never lets a reference exist without a refcount covering it, and
// never lets a write pointer get ahead of the data it covers. Writes happen
// in this order, each step made durable (File.Sync) before the next:
//
//  1. the write-pointer table, then the zoned extension (a write pointer is
//     only ever moved back, so it is written before the data beyond it is
//     discarded; a table that grows is written before the header claims it);
//  2. references are removed or rewritten in place (L1 and L2 entries
//     cleared, zeroed, realigned to clusters they already covered, reserved
//     bits cleared): removing a reference is always safe;
//  3. refcounts: either raised in place (synced) and only then lowered
//     (synced) — a refcount is lowered only once no durable reference needs
//     it — or, when the structure is rebuilt, new refcount blocks and a new
//     refcount table are written in clusters no reference uses, synced, and
//     the header switched to them in one sector write (synced); the clusters
//     of the old structure are then freed like leaks;
//  4. OFLAG_COPIED flags, which rely on the final refcounts (setting the
//     flag on a shared cluster would allow writes into it);
//  5. the dirty and corrupt bits are cleared last.
//
// A crash at any point leaves an image that is at worst leaking clusters or
// still carrying the problems not yet repaired; running the repair again
// completes it.
package check
