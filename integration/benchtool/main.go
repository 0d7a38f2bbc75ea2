// Command benchtool is the engine of `make bench` (integration/bench.sh): it
// starts its own tgtd on 127.0.0.1, measures iscsifs against the tools people
// would use instead on the same LUNs, alternating runs and taking medians,
// and prints one table that it also writes as JSON.
//
// Every process it starts (tgtd, FUSE daemons, peers) gets its own process
// group and is stopped, and every mount unmounted, when it ends, fails or is
// interrupted; their ids are listed in DIR/pids so that bench.sh can clean up
// after a benchtool that was killed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/iscsifs/iscsifs/integration"
)

const (
	diskIQN = "iqn.2026-11.io.iscsifs:bench-disk"
	nullIQN = "iqn.2026-11.io.iscsifs:bench-null"
	gib     = int64(1) << 30
	mib     = int64(1) << 20
)

type config struct {
	iscsifs  string
	dir      string
	diskDir  string
	out      string
	runs     int
	seconds  int
	cacheMiB int64
	only     string
	tree     string
	maxSteal float64
}

func main() {
	var cfg config
	flag.StringVar(&cfg.iscsifs, "iscsifs", "", "the iscsifs binary")
	flag.StringVar(&cfg.dir, "dir", "", "an empty work directory (backing files, outputs, mount points)")
	flag.StringVar(&cfg.diskDir, "disk-dir", "/var/tmp", "a directory on a local disk file system (not tmpfs) for figure 3b's image")
	flag.StringVar(&cfg.out, "json", "bin/bench-results.json", "where to write the results")
	flag.IntVar(&cfg.runs, "runs", 5, "runs per contestant and figure (the median is reported)")
	flag.IntVar(&cfg.seconds, "seconds", 5, "length of each timed run (figures 1, 2, 6, 10 to 15)")
	flag.Int64Var(&cfg.cacheMiB, "cache-mib", 256, "iscsifs mount --cache-size in MiB")
	flag.StringVar(&cfg.only, "only", "", "run only these figures (e.g. 125, or 9,10,11, or 3b)")
	flag.Float64Var(&cfg.maxSteal, "max-steal", 10, "repeat a run (up to twice) when the host stole more than this percent of the CPU time during it (0: never)")
	flag.StringVar(&cfg.tree, "tree", "", "the directory tree figure 9 copies onto ext4 (the Go source tree)")
	flag.Parse()
	if cfg.iscsifs == "" || cfg.dir == "" || cfg.runs < 1 || cfg.seconds < 1 {
		fmt.Fprintln(os.Stderr, "usage: benchtool -iscsifs BIN -dir DIR [-disk-dir DIR] [-json FILE] [-runs N] [-seconds S] [-only FIGS] [-tree DIR]")
		os.Exit(2)
	}
	os.Exit(run(cfg))
}

func run(cfg config) int {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	reg := newRegistry(filepath.Join(cfg.dir, "pids"))

	logf("starting tgtd with a 1 GiB LUN of random data, two 1 GiB LUNs to write to and a null LUN")
	tg, err := integration.NewTGT(cfg.dir,
		integration.TargetSpec{Name: diskIQN, LUNs: []integration.LUNSpec{
			{LUN: 1, Size: gib, Fill: "random"},
			{LUN: 2, Size: gib, Fill: "random"},     // written to: allocated before the first run
			{LUN: fsLUN, Size: gib, Fill: "random"}, // ext4 on it (figures 9 to 11)
		}},
		integration.TargetSpec{Name: nullIQN, LUNs: []integration.LUNSpec{{LUN: 1, BSType: "null"}}},
	)
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchtool: %v\n", err)
		return 1
	}
	reg.addPID(tg.PID())
	defer func() {
		reg.cleanup() // mounts first: they flush to the target
		if err := tg.Close(); err != nil {
			logf("stopping tgtd: %v", err)
		}
	}()

	b := &bench{cfg: cfg, tg: tg, reg: reg, ctx: ctx, start: time.Now(),
		cpu: func() cpuSample { return sampleCPU(tg.PID()) }}
	rows := b.all()
	printTable(os.Stdout, b, rows)
	if ctx.Err() != nil {
		logf("interrupted: %s not written", cfg.out)
		return 130
	}
	if err := writeJSON(cfg.out, b, rows); err != nil {
		fmt.Fprintf(os.Stderr, "benchtool: %v\n", err)
		return 1
	}
	logf("results written to %s (%.0f s in all)", cfg.out, time.Since(b.start).Seconds())
	for _, r := range rows {
		if r.Error != "" {
			return 1
		}
	}
	return 0
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
