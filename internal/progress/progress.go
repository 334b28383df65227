// Package progress shows the progress of a long command the way qemu-img
// -p does: a line "    (12.34/100%)" rewritten in place with a carriage
// return, and a newline at the end. The bar is an mpb progress bar (its
// decorator renders qemu-img's text; a console writer of this package
// writes each frame with "\r" instead of mpb's cursor movements, so the
// output is the same on a terminal, a pipe or a file, as qemu-img's is).
// A frame is drawn when the progress has moved by at least one percent.
package progress

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// minStep is the progress, in percent, between two frames (qemu-img's).
const minStep = 1.0

// Bar is a qemu-img style progress indicator.
type Bar struct {
	mu      sync.Mutex
	out     io.Writer
	p       *mpb.Progress
	bar     *mpb.Bar
	refresh chan any
	lw      *lineWriter
	total   int64
	shown   float64 // percentage of the last frame requested
	done    bool
	// finished is set before the last frame: an empty job then shows
	// 100% (read by the decorator, in mpb's goroutine).
	finished atomic.Bool
}

// New starts a progress indicator for total bytes writing to out; it
// draws 0.00 at once.
func New(out io.Writer, total int64) *Bar {
	b := &Bar{out: out, refresh: make(chan any), shown: -1, total: total}
	b.lw = &lineWriter{out: out, drawn: make(chan struct{}, 1)}
	b.p = mpb.New(
		mpb.WithConsoleWriter(b.lw),
		mpb.WithManualRefresh(b.refresh),
		mpb.WithWidth(80),
	)
	b.bar = b.p.New(total, mpb.NopStyle(),
		mpb.PrependDecorators(decor.Any(func(s decor.Statistics) string {
			if s.Total <= 0 && !b.finished.Load() {
				return Frame(0, -1) // nothing to do yet: 0%
			}
			return Frame(s.Current, s.Total)
		})),
	)
	b.request(0)
	return b
}

// Frame returns qemu-img's progress text for done of total bytes (an
// unknown total, < 0, shows 0%; nothing to do, 0, shows 100%).
func Frame(done, total int64) string {
	pct := 100.0
	switch {
	case total < 0:
		pct = 0
	case total > 0:
		pct = float64(done) * 100 / float64(total)
	}
	return fmt.Sprintf("    (%3.2f/100%%)", min(pct, 100))
}

// request draws a frame showing pct percent and waits until it is
// written, so that frames and the command's own output stay in order.
func (b *Bar) request(pct float64) {
	b.shown = pct
	select {
	case <-b.lw.drawn:
	default:
	}
	b.refresh <- struct{}{}
	select {
	case <-b.lw.drawn:
	case <-time.After(time.Second):
	}
}

// Update records that done of total bytes are processed, drawing a frame
// when the progress moved by at least one percent since the last one.
// It is safe for concurrent use.
func (b *Bar) Update(done, total int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	if total != b.total {
		b.total = total
		b.bar.SetTotal(total, false)
	}
	b.bar.SetCurrent(min(done, total))
	pct := 100.0
	if total > 0 {
		pct = float64(done) * 100 / float64(total)
	}
	if pct-b.shown >= minStep || (pct >= 100 && b.shown < 100) {
		b.request(pct)
	}
}

// Repeat draws the last frame again, as qemu-img's progress does for a
// report of 0% (qemu_progress_print prints 0 and 100 whatever was shown
// before).
func (b *Bar) Repeat() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.lw.again.Store(true)
	b.request(b.shown)
}

// Finish draws the final frame (100% unless the work stopped early) and
// ends the line. It waits until everything is written.
func (b *Bar) Finish() { b.end(false) }

// Complete ends the bar at 100% whatever was reported, and draws that
// frame even when the last one showed 100% already: qemu-img convert's
// final print, after its copy loop printed 100% on the last data chunk.
// It waits until everything is written.
func (b *Bar) Complete() { b.end(true) }

func (b *Bar) end(complete bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	b.finished.Store(true)
	if complete {
		b.lw.again.Store(true)
	}
	if complete || b.bar.Current() >= b.total {
		b.bar.SetTotal(-1, true) // complete: mpb draws the last frame
	} else {
		b.bar.Abort(true) // stopped early: the last frame stays as it is
	}
	b.p.Wait()
	io.WriteString(b.out, "\n")
}

// lineWriter is the mpb console writer that draws each frame on the same
// line with a carriage return, like qemu-img. A frame identical to the
// previous one is not drawn again.
type lineWriter struct {
	out   io.Writer
	buf   bytes.Buffer
	last  []byte
	drawn chan struct{} // signalled after every flush
	again atomic.Bool   // draw the next frame even if identical (Complete, Repeat)
}

func (w *lineWriter) Write(p []byte) (int, error) { return w.buf.Write(p) }

func (w *lineWriter) ReadFrom(r io.Reader) (int64, error) { return w.buf.ReadFrom(r) }

func (w *lineWriter) IsTerminal() bool { return false }

func (w *lineWriter) GetTermSize() (int, int, error) { return 80, 24, nil }

// Flush writes the buffered frame: its text without the newline mpb ends
// it with, followed by a carriage return.
func (w *lineWriter) Flush(lines int) error {
	defer func() {
		select {
		case w.drawn <- struct{}{}:
		default:
		}
	}()
	frame := bytes.TrimRight(w.buf.Bytes(), " \n")
	w.buf.Reset()
	if len(frame) == 0 || bytes.Equal(frame, w.last) && !w.again.Swap(false) {
		return nil
	}
	w.last = append(w.last[:0], frame...)
	_, err := w.out.Write(append(frame, '\r'))
	return err
}
