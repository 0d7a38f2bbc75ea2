package main

import (
	"os"
	"runtime"
)

// serveOnOneProc runs the mount daemon's goroutines on one P (GOMAXPROCS 1)
// unless GOMAXPROCS is set in the environment.
//
// Why: fusefs reads /dev/fuse through the netpoller and the initiator
// reads and writes its sockets without blocking, so nothing in the daemon
// sleeps in a system call, and one P is an event loop: a FUSE request, its
// iSCSI command, the answer and the reply run goroutine to goroutine on one
// thread. With more Ps, every goroutine readied while a P is idle wakes
// another thread, and on a small virtual machine those wake-ups cost more
// than the requests. Measured (fio O_DIRECT through the mount, tgtd on the
// same 2-CPU host; README, "The serving loop"): 4 KiB random reads at queue
// depth 32 and 8 synchronous jobs gain, queue depth 1 and 1 MiB sequential
// reads do not lose, and GOMAXPROCS 2 measured worse than 1 at queue depth 1.
func serveOnOneProc() {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	runtime.GOMAXPROCS(1)
}
