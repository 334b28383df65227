package zonefs

import (
	"fmt"
	"io"
	"log"
	"os"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/zqimg/zqimg/pkg/zone"
	"golang.org/x/sys/unix"
)

// MountOptions are the FUSE side of a mount.
type MountOptions struct {
	Options
	// AllowOther lets other users than the mounting one in (FUSE's
	// allow_other); the file modes still apply (default_permissions).
	AllowOther bool
	// Source is the name shown as the mounted device (the image path).
	Source string
	// Logger receives go-fuse's diagnostics; nil discards them.
	Logger *log.Logger
	// Debug logs every FUSE request to Logger.
	Debug bool
}

// maxWrite is the largest FUSE read or write request (the kernel caps it
// at its max_pages_limit).
const maxWrite = 1 << 20

// Mount is a mounted file system, served until it is unmounted.
type Mount struct {
	FS  *FS
	srv *fuse.Server
	dir string
}

// NewMount mounts the file system of dev on dir and starts serving it.
// As root it calls mount(2) directly; otherwise it needs fusermount3 (or
// fusermount). The caller keeps dev and closes it after Wait returns.
func NewMount(dev *zone.Device, dir string, o MountOptions) (*Mount, error) {
	fs, err := New(dev, o.Options)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("FUSE is not available: %w (load the fuse module, or run where /dev/fuse exists)", err)
	}
	logger := o.Logger
	if logger == nil {
		logger = log.New(io.Discard, "", 0)
	}
	mo := &fuse.MountOptions{
		AllowOther:    o.AllowOther,
		Options:       []string{"default_permissions"},
		FsName:        o.Source,
		Name:          "zqimg",
		MaxWrite:      maxWrite,
		DirectMount:   true,
		DisableXAttrs: true,
		Logger:        logger,
		Debug:         o.Debug,
	}
	if o.ReadOnly {
		mo.Options = append(mo.Options, "ro")
		mo.DirectMountFlags = syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_RDONLY
	}
	if mo.FsName == "" {
		mo.FsName = "zqimg"
	}
	srv, err := fuse.NewServer(fs, dir, mo)
	if err != nil {
		return nil, err
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		_ = srv.Unmount()
		return nil, err
	}
	return &Mount{FS: fs, srv: srv, dir: dir}, nil
}

// Wait returns when the file system is unmounted (by Unmount, umount or
// fusermount -u) and the serving loops have stopped.
func (m *Mount) Wait() { m.srv.Wait() }

// Unmount unmounts the file system; it fails (EBUSY) while files are open.
func (m *Mount) Unmount() error { return m.srv.Unmount() }

// Detach unmounts lazily (MNT_DETACH): the mount disappears from the name
// space at once, and the connection stays until the last open file is
// closed or the serving process exits.
func (m *Mount) Detach() error {
	if err := unix.Unmount(m.dir, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("lazy unmount of %s: %w", m.dir, err)
	}
	return nil
}
