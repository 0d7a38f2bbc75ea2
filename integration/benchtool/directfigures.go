package main

// Figures 12 to 14 (issue 13): fio with O_DIRECT on the LUN as a FUSE file,
// iscsifs mount against qemu-storage-daemon's FUSE export, a fresh mount for
// every run. Reads (12, 13) are of the 1 GiB LUN of random data, mounted
// read-only, iscsifs with a cache much smaller than the range read; writes
// (14) are of the second LUN, mounted writable, each made durable with
// fdatasync before the next.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

// directSize is the range of the LUN that figures 12 to 14 cover.
const directSize = "512m"

// directRun mounts the LUN with mount and runs fio rw ("randread" or
// "randwrite") on it for cfg.seconds: 4 KiB requests with O_DIRECT, psync,
// jobs jobs over the first directSize; a write is followed by fdatasync.
// It returns fio's report of the direction.
func (b *bench) directRun(ctx context.Context, mount mountFunc, rw string, jobs int) (fioSide, error) {
	lun, writable, dir := 1, false, "read"
	args := []string{"--size=" + directSize, "--direct=1", "--ioengine=psync", "--numjobs=" + strconv.Itoa(jobs)}
	if rw == "randwrite" {
		lun, writable, dir = 2, true, "write"
		args = append(args, "--fdatasync=1")
	}
	var side fioSide
	_, err := withMount(ctx, mount, lun, writable, func(m *fuseMount) (float64, error) {
		var err error
		side, err = b.fioReport(ctx, dir, fioArgs(rw, m.file, b.cfg.seconds, args...)...)
		return side.IOPS, err
	})
	return side, err
}

// directFio is figures 13 and 14: the IOPS of directRun.
func (b *bench) directFio(mount mountFunc, rw string, jobs int) func(context.Context) (float64, error) {
	return func(ctx context.Context) (float64, error) {
		side, err := b.directRun(ctx, mount, rw, jobs)
		return side.IOPS, err
	}
}

// directLatency is figure 12: directRun of random reads in one job; the
// mean and the 99th percentile of fio's completion latency, in µs.
func (b *bench) directLatency() []row {
	run := func(name string, mount mountFunc) contestant {
		return contestant{name, func(ctx context.Context) (float64, error) {
			side, err := b.directRun(ctx, mount, "randread", 1)
			if err != nil {
				return 0, err
			}
			p, ok := side.Clat.Percentile["99.000000"]
			if !ok || side.Clat.Mean <= 0 {
				return 0, errors.New("fio reported no completion latency")
			}
			logf("figure 12: %s p99 %.1f µs", name, p/1e3)
			b.note(p / 1e3)
			return side.Clat.Mean / 1e3, nil
		}}
	}
	r := b.contest("12", "µs mean", run("qemu-storage-daemon", b.mountQSD), run("iscsifs mount", b.mountOursCold))
	what := fmt.Sprintf("FUSE O_DIRECT rand read 4 KiB, psync, 1 job, %d s", b.cfg.seconds)
	rows := compareRows("12", what+": mean latency", "µs", r, 1.0, true)
	for i := range r {
		r[i].runs = r[i].noted
	}
	return append(rows, compareRows("12", what+": p99 latency", "µs", r, 1.0, true)...)
}
