// Package create turns qemu-img style "-o key=value" options into a
// validated image specification (ParseOptions, Resolve) and writes the new
// image file (Create), preallocated as the preallocation option says; raw
// images have their own options (ParseRawOptions, ResolveRaw, CreateRaw).
//
// # Writing the file
//
// Create behaves like qemu-img create on an existing path, and never
// leaves a half-made image or a temporary file behind:
//
//   - An existing file is opened first and QEMU's write lock (OFD locks,
//     see image.Lock) is taken on it and held for the whole create. If
//     another process holds the image, Create fails with the
//     *image.LockError ("Failed to get "write" lock", "Is another process
//     using the image [PATH]?") before anything is written.
//   - The complete new image is built first in an anonymous file opened
//     with O_TMPFILE in the target's directory: it has no name, so a
//     failure or a kill -9 at any moment leaves nothing behind.
//   - A new file is then given its name with linkat(/proc/self/fd/N,
//     target, AT_SYMLINK_FOLLOW), which fails (ErrAppeared) if a file of
//     that name appeared meanwhile. Its mode is 0666 minus the umask, as
//     the kernel applies it; the process umask is not touched.
//   - An existing file keeps its inode, permissions and hard links: under
//     the lock held since the start, its content is replaced in place. It
//     is truncated to 0 and to the new length, everything of the built
//     image but its first 512 bytes (the sector holding the qcow2 magic
//     and header) is copied, holes skipped (SEEK_DATA/SEEK_HOLE), the file
//     is synced (fdatasync), then the first sector is written and the file
//     synced again.
//   - A symbolic link stays a link: the file it points to gets the image
//     (a dangling link's target is created).
//   - Where the file system has no O_TMPFILE, the image is built in memory
//     and a new file is created exclusively (O_EXCL) and filled like an
//     existing one, magic last; it is removed if the create fails.
//
// So at every moment the target is the old file, a file without a qcow2
// header, or the complete new image. A file without a header is left only
// if the create is interrupted (or fails) while an existing file's content
// is being replaced, or while a new file is filled without O_TMPFILE.
package create
