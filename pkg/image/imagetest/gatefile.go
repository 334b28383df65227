package imagetest

import (
	"fmt"
	"sync"
	"time"
)

// File is the part of image.File that GateFile forwards (imagetest cannot
// import image: the image package's own tests use imagetest).
type File interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Sync() error
	Size() (int64, error)
	Truncate(size int64) error
	ZeroRange(off, n int64) error
	Close() error
}

// GateFile wraps a File to prove that transfers overlap: once armed with
// Arm(n), every ReadAt and WriteAt waits inside the file until n of them
// are inside at the same time, then all proceed. A caller that serialises
// its transfers never gets n inside at once, and each waiting transfer
// fails after the timeout with an error saying how many were in flight.
type GateFile struct {
	File

	mu      sync.Mutex
	want    int
	in      int
	open    chan struct{} // closed when want transfers are inside
	timeout time.Duration
}

// NewGateFile returns a disarmed GateFile over f.
func NewGateFile(f File) *GateFile { return &GateFile{File: f} }

// Arm makes the next n transfers wait for each other (up to timeout);
// after they pass, the gate is disarmed.
func (g *GateFile) Arm(n int, timeout time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.want, g.in, g.open, g.timeout = n, 0, make(chan struct{}), timeout
}

func (g *GateFile) pass() error {
	g.mu.Lock()
	if g.want == 0 {
		g.mu.Unlock()
		return nil
	}
	g.in++
	open, timeout := g.open, g.timeout
	if g.in == g.want {
		close(open)
		g.want = 0
	}
	g.mu.Unlock()
	select {
	case <-open:
		return nil
	case <-time.After(timeout):
		g.mu.Lock()
		in := g.in
		g.mu.Unlock()
		return fmt.Errorf("imagetest: only %d transfers were in flight at once after %v", in, timeout)
	}
}

// ReadAt passes the gate, then reads.
func (g *GateFile) ReadAt(p []byte, off int64) (int, error) {
	if err := g.pass(); err != nil {
		return 0, err
	}
	return g.File.ReadAt(p, off)
}

// WriteAt passes the gate, then writes.
func (g *GateFile) WriteAt(p []byte, off int64) (int, error) {
	if err := g.pass(); err != nil {
		return 0, err
	}
	return g.File.WriteAt(p, off)
}
