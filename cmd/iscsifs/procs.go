package main

import (
	"os"
	"runtime"
)

// maxFUSEReaders is go-fuse's cap on its /dev/fuse readers (maxMaxReaders).
const maxFUSEReaders = 16

// addFUSEReaderProcs raises GOMAXPROCS by the number of goroutines go-fuse
// keeps in read(2) of /dev/fuse, once the server exists (go-fuse sizes that
// pool from GOMAXPROCS when it is created: between 2 and 16 readers, and one
// more while a request is being handled).
//
// Why: a read(2) of /dev/fuse is a blocking system call that holds its P
// until sysmon takes it back, which takes a sysmon tick (20 µs, longer with
// timer slack). With GOMAXPROCS equal to the CPU count, idle readers can hold
// every P; the goroutine that receives the iSCSI response then waits for
// sysmon before it can run, on every request. With the readers' Ps on top,
// the CPUs' worth of Ps stays free for the work. An explicit GOMAXPROCS in
// the environment is left as it is.
func addFUSEReaderProcs() {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	procs := runtime.GOMAXPROCS(0)
	readers := min(max(procs, 2), maxFUSEReaders) + 1
	runtime.GOMAXPROCS(procs + readers)
}
