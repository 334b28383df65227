package cmdutil

import "runtime"

// maxIOProcs bounds ProcsForIO.
const maxIOProcs = 256

// ProcsForIO lets n goroutines be inside blocking file I/O at once. A
// goroutine in a blocking system call keeps its P (GOMAXPROCS, by default
// the number of CPUs) until the runtime notices and hands the P on, so
// with few CPUs fewer than n requests reach the file system together; as
// QEMU's thread pool runs a thread per request in flight, bench -d n
// raises GOMAXPROCS to n, and mount to 16.
// Measured with bench -t none -d 32 of 4 KiB reads on a 2-CPU machine:
// 3.5 s at GOMAXPROCS 2, 1.1 s at 32 (docs/performance.md).
func ProcsForIO(n int) {
	n = min(n, maxIOProcs)
	if n > runtime.GOMAXPROCS(0) {
		runtime.GOMAXPROCS(n)
	}
}
