package mount

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zqimg/zqimg/pkg/check"
	"github.com/zqimg/zqimg/pkg/image"
	"github.com/zqimg/zqimg/pkg/zone"
	"golang.org/x/sys/unix"
)

var killRounds = flag.Int("kill.rounds", 20, "rounds of TestKill9DuringAppends")

// TestKill9DuringAppends kills the mount process with SIGKILL while a
// process streams appends and fsyncs through it, then checks the image:
// every byte acknowledged by an fsync (with writethrough: by a write)
// reads back, nothing below a write pointer is wrong, and check finds no
// corruption (leaks, including data beyond a write pointer, are allowed).
func TestKill9DuringAppends(t *testing.T) {
	requireFUSE(t)
	const nz = 4
	for round := 0; round < *killRounds; round++ {
		cache := "writeback"
		if round%2 == 1 {
			cache = "writethrough"
		}
		seed := uint64(round + 1)
		t.Run(fmt.Sprintf("%d-%s", round, cache), func(t *testing.T) {
			killRound(t, seed, cache, nz)
		})
	}
}

func killRound(t *testing.T, seed uint64, cache string, nz int) {
	img, dir := newZoned(t, "64M", "zone.size=16M,zone.max_open_zones=2,cluster_size=64k")
	p := startMount(t, img, dir, "-t", cache)
	streamer := self(t, "streamer", dir, fmt.Sprint(nz), fmt.Sprint(seed))
	out, err := streamer.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var serr bytes.Buffer
	streamer.Stderr = &serr
	if err := streamer.Start(); err != nil {
		t.Fatal(err)
	}
	synced := make([]int64, nz) // bytes acknowledged by fsync
	acked := make([]int64, nz)  // bytes acknowledged by write
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	record := func(l string) {
		var kind string
		var z int
		var size int64
		if _, err := fmt.Sscanf(l, "%s %d %d", &kind, &z, &size); err != nil || z >= nz {
			t.Fatalf("streamer said %q", l)
		}
		acked[z] = max(acked[z], size)
		if kind == "S" {
			synced[z] = max(synced[z], size)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 3))
	kill := time.After(time.Duration(20+rng.IntN(300)) * time.Millisecond)
loop:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("streamer stopped before the kill: %v\n%s", streamer.Wait(), serr.String())
			}
			record(l)
		case <-kill:
			break loop
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait(20 * time.Second)
	// Lines printed before the kill are acknowledgements too.
	for l := range lines {
		record(l)
	}
	if err := streamer.Wait(); err != nil {
		t.Fatalf("streamer: %v\n%s", err, serr.String())
	}
	// The dead mount: clean it up as fusermount -u -z would.
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		t.Fatalf("lazy unmount of the dead mount: %v", err)
	}

	res, err := check.CheckPath(img, check.Options{})
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if res.Corruptions != 0 || res.CheckErrors != 0 {
		var b strings.Builder
		for _, f := range res.Findings {
			b.WriteString(f.Msg + "\n")
		}
		t.Fatalf("check after kill -9: %d corruptions, %d check errors\n%s", res.Corruptions, res.CheckErrors, b.String())
	}
	d, err := zone.Open(img, image.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("opening the image after kill -9: %v", err)
	}
	defer d.Close()
	zs, err := d.Report(0, uint64(nz))
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for z := 0; z < nz; z++ {
		wp := int64(zs[z].WP - zs[z].Start)
		want := synced[z]
		if cache == "writethrough" {
			want = acked[z]
		}
		if wp < want {
			t.Errorf("zone %d: write pointer at %d after kill -9, but %d bytes were acknowledged (synced %d, written %d)", z, wp, want, synced[z], acked[z])
		}
		if wp > acked[z]+64*1024 {
			t.Errorf("zone %d: write pointer at %d, beyond the last write that could have been under way (%d acknowledged)", z, wp, acked[z])
		}
		buf := make([]byte, wp)
		if _, err := d.ReadAt(buf, int64(zs[z].Start)); err != nil {
			t.Fatal(err)
		}
		for s := int64(0); s < wp/512; s++ {
			if !bytes.Equal(buf[s*512:(s+1)*512], sector(seed, z, int(s))) {
				t.Fatalf("zone %d: sector %d (byte %d) below the write pointer %d is not what was written (synced %d)", z, s, s*512, wp, synced[z])
			}
		}
		total += wp
	}
	t.Logf("%s: killed with %v bytes synced, %v written; write pointers hold %d bytes; %d leaks", cache, synced, acked, total, res.Leaks)
}
