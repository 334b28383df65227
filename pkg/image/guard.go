package image

import "fmt"

// guardedFile is the image's only way to change its file: every write,
// truncation and sync passes through it and is refused once the image is
// read-only, closed, or marked corrupt. Reads go straight through.
// (The one exception is signalCorruption, which sets the corrupt bit
// through the raw file after the guard has closed.)
type guardedFile struct {
	File
	img *Image
}

// writable reports why the image may not be written, or nil.
func (img *Image) writable() error {
	switch {
	case img.closed:
		return ErrClosed
	case img.ro:
		return ErrReadOnly
	case img.corrupt:
		return fmt.Errorf("%w: writes are refused until it is repaired", ErrCorrupt)
	}
	return nil
}

func (g guardedFile) WriteAt(p []byte, off int64) (int, error) {
	if err := g.img.writable(); err != nil {
		return 0, err
	}
	g.img.unsynced = true
	return g.File.WriteAt(p, off)
}

// Sync syncs the file, unless nothing was written since the last sync.
func (g guardedFile) Sync() error {
	if err := g.img.writable(); err != nil {
		return err
	}
	if !g.img.unsynced {
		return nil
	}
	if err := g.File.Sync(); err != nil {
		return err
	}
	g.img.unsynced = false
	return nil
}

func (g guardedFile) Truncate(size int64) error {
	if err := g.img.writable(); err != nil {
		return err
	}
	g.img.unsynced = true
	g.img.fileEnd.Store(0) // re-read by beyondEOF
	return g.File.Truncate(size)
}

func (g guardedFile) ZeroRange(off, n int64) error {
	if err := g.img.writable(); err != nil {
		return err
	}
	g.img.unsynced = true
	return g.File.ZeroRange(off, n)
}

// Corrupt reports whether the image was marked corrupt while open (a
// metadata inconsistency was found): nothing more is written to it, and
// there is nothing left to flush.
func (img *Image) Corrupt() bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.corrupt
}
