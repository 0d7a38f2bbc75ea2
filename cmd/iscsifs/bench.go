package main

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/iscsifs/iscsifs/initiator"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure a LUN: sequential or random reads and writes at a queue depth",
		ArgsUsage: "URL   (iscsi://host[:port]/iqn/lun)\n\n" +
			"Prints MB/s (10^6 bytes per second), IOPS and completion latency percentiles.\n" +
			"--rw write and mix overwrite the LUN's data and need --write.",
		Flags: append(append(commonFlags(), multipathFlags()...), busyPollFlag(200*time.Microsecond),
			&cli.StringFlag{Name: "pattern", Usage: "seq or rand", Value: "seq"},
			&cli.StringFlag{Name: "rw", Usage: "read, write or mix", Value: "read"},
			&cli.IntFlag{Name: "rwmix-read", Usage: "percentage of reads with --rw mix", Value: 50},
			&cli.StringFlag{Name: "bs", Usage: "bytes per request (default 128KiB for seq, 4KiB for rand)"},
			&cli.IntFlag{Name: "qd", Usage: "requests in flight", Value: 32},
			&cli.DurationFlag{Name: "time", Usage: "how long to run", Value: 10 * time.Second},
			&cli.StringFlag{Name: "size", Usage: "use only the first SIZE bytes of the LUN (default: all of it)"},
			&cli.BoolFlag{Name: "write", Usage: "allow --rw write or mix: destroys the data on the LUN"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile to this file", Hidden: true},
		),
		Action: benchAction,
	}
}

type benchSpec struct {
	pattern  string
	rw       string
	readPct  int
	bs       int64
	qd       int
	duration time.Duration
	region   int64 // bytes of the LUN used, a multiple of bs
}

// benchResult is what `bench --json` prints.
type benchResult struct {
	URL        string  `json:"url"`
	Pattern    string  `json:"pattern"`
	RW         string  `json:"rw"`
	BlockSize  int64   `json:"block_size"`
	QueueDepth int     `json:"queue_depth"`
	Seconds    float64 `json:"seconds"`
	Bytes      int64   `json:"bytes"`
	IOs        int64   `json:"ios"`
	Reads      int64   `json:"reads"`
	Writes     int64   `json:"writes"`
	MBps       float64 `json:"mb_per_s"`
	IOPS       float64 `json:"iops"`
	Latency    struct {
		P50  float64 `json:"p50"`
		P99  float64 `json:"p99"`
		P999 float64 `json:"p99_9"`
		Mean float64 `json:"mean"`
		Max  float64 `json:"max"`
	} `json:"latency_us"`
}

func benchFlags(c *cli.Context) (benchSpec, error) {
	b := benchSpec{pattern: c.String("pattern"), rw: c.String("rw"), readPct: c.Int("rwmix-read"),
		qd: c.Int("qd"), duration: c.Duration("time")}
	switch b.pattern {
	case "seq", "rand":
	default:
		return b, fmt.Errorf("--pattern %q: want seq or rand", b.pattern)
	}
	switch b.rw {
	case "read":
	case "write", "mix":
		if !c.Bool("write") {
			return b, fmt.Errorf("bench: --rw %s overwrites the data on the LUN; add --write to confirm", b.rw)
		}
	default:
		return b, fmt.Errorf("--rw %q: want read, write or mix", b.rw)
	}
	if b.readPct < 0 || b.readPct > 100 {
		return b, fmt.Errorf("--rwmix-read %d: want 0 to 100", b.readPct)
	}
	if b.qd < 1 || b.qd > 1024 {
		return b, fmt.Errorf("--qd %d: want 1 to 1024", b.qd)
	}
	if b.duration <= 0 {
		return b, fmt.Errorf("--time %v: want a positive duration", b.duration)
	}
	b.bs = 128 << 10
	if b.pattern == "rand" {
		b.bs = 4 << 10
	}
	if c.IsSet("bs") {
		var err error
		if b.bs, err = parseSize(c.String("bs")); err != nil {
			return b, fmt.Errorf("--bs: %w", err)
		}
	}
	if b.bs < 512 || b.bs > 64<<20 {
		return b, fmt.Errorf("--bs %d: want 512 bytes to 64MiB", b.bs)
	}
	if c.IsSet("size") {
		var err error
		if b.region, err = parseSize(c.String("size")); err != nil {
			return b, fmt.Errorf("--size: %w", err)
		}
	}
	return b, nil
}

func benchAction(c *cli.Context) error {
	u, err := parseURLArg(c, "the URL of a LUN")
	if err != nil {
		return err
	}
	if u.Target == "" || u.LUN < 0 {
		return fmt.Errorf("bench: %s names no LUN: want iscsi://host[:port]/iqn/lun", u)
	}
	spec, err := benchFlags(c)
	if err != nil {
		return err
	}
	_, cfg, err := prepare(c, u)
	if err != nil {
		return err
	}
	cfg.QueueDepth = queueDepthFor(spec.qd, spec.bs)
	ctx, cancel := signalContext()
	defer cancel()
	lun, closeLUN, err := openBenchLUN(ctx, c, u, cfg)
	if err != nil {
		return err
	}
	defer closeLUN()
	if spec.bs%int64(lun.BlockSize()) != 0 {
		return fmt.Errorf("--bs %d is not a multiple of the %d-byte blocks of %s", spec.bs, lun.BlockSize(), u)
	}
	if spec.rw != "read" && lun.ReadOnly() {
		return fmt.Errorf("bench: %s is read-only (write-protected)", u)
	}
	if spec.region == 0 || spec.region > lun.Size() {
		spec.region = lun.Size()
	}
	spec.region = spec.region / spec.bs * spec.bs
	if spec.region == 0 {
		return fmt.Errorf("bench: %s is smaller than one %d-byte request", u, spec.bs)
	}
	stopProfile, err := startCPUProfile(c.String("cpuprofile"))
	if err != nil {
		return err
	}
	defer stopProfile()

	res, err := runBench(ctx, lun, spec)
	if err != nil {
		return fmt.Errorf("bench %s: %w", u, err)
	}
	res.URL = u.String()
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(c.App.Writer, "%s %s, bs %d, qd %d, %.2f s: %.1f MB/s, %.0f IOPS, latency p50 %s, p99 %s, p99.9 %s\n",
		res.Pattern, res.RW, res.BlockSize, res.QueueDepth, res.Seconds, res.MBps, res.IOPS,
		usText(res.Latency.P50), usText(res.Latency.P99), usText(res.Latency.P999))
	if res.RW == "mix" {
		fmt.Fprintf(c.App.Writer, "reads %d, writes %d\n", res.Reads, res.Writes)
	}
	return nil
}

func usText(us float64) string {
	if us >= 1000 {
		return fmt.Sprintf("%.2f ms", us/1000)
	}
	return fmt.Sprintf("%.0f µs", us)
}

// startCPUProfile writes a CPU profile to path ("" for none) until the
// returned function is called.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// benchLUN is what bench measures: a LUN, or a multipath LUN.
type benchLUN interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
	WriteAtContext(ctx context.Context, p []byte, off int64) (int, error)
	Size() int64
	BlockSize() int
	ReadOnly() bool
}

// openBenchLUN opens the URL's LUN, through every portal at once with
// --multipath.
func openBenchLUN(ctx context.Context, c *cli.Context, u *initiator.URL, cfg initiator.Config) (benchLUN, func(), error) {
	if !c.Bool("multipath") {
		lun, sess, err := openOneLUN(ctx, u, cfg)
		if err != nil {
			return nil, nil, err
		}
		return lun, func() { _ = sess.Close(context.WithoutCancel(ctx)) }, nil
	}
	mp, err := multipathPlan(c, u, cfg)
	if err != nil {
		return nil, nil, err
	}
	m, err := initiator.OpenMultipath(ctx, u.Target, mp.portals, uint64(u.LUN), cfg, mp.selector)
	if err != nil {
		return nil, nil, err
	}
	return m, func() { _ = m.Close() }, nil
}

// runBench keeps spec.qd requests in flight for spec.duration (or until ctx
// ends) and measures each request's completion latency.
func runBench(ctx context.Context, lun benchLUN, spec benchSpec) (*benchResult, error) {
	var (
		halt   atomic.Bool
		seqPos atomic.Int64
		wg     sync.WaitGroup
		mu     sync.Mutex
		total  latHist
		reads  int64
		writes int64
		first  error
	)
	blocks := spec.region / spec.bs
	ioCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	timer := time.AfterFunc(spec.duration, func() { halt.Store(true) })
	defer timer.Stop()
	stopOnSignal := context.AfterFunc(ctx, func() { halt.Store(true) })
	defer stopOnSignal()

	start := time.Now()
	for w := range spec.qd {
		var seed [16]byte
		_, _ = crand.Read(seed[:])
		rng := rand.New(rand.NewPCG(uint64(seed[0])<<56|uint64(w), uint64(seed[8])<<56|uint64(time.Now().UnixNano())))
		buf := make([]byte, spec.bs)
		if spec.rw != "read" {
			_, _ = crand.Read(buf)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var h latHist
			var r, wr int64
			var err error
			for !halt.Load() {
				var blk int64
				if spec.pattern == "seq" {
					blk = (seqPos.Add(1) - 1) % blocks
				} else {
					blk = rng.Int64N(blocks)
				}
				write := spec.rw == "write" || spec.rw == "mix" && rng.IntN(100) >= spec.readPct
				t0 := time.Now()
				if write {
					_, err = lun.WriteAtContext(ioCtx, buf, blk*spec.bs)
					wr++
				} else {
					_, err = lun.ReadAtContext(ioCtx, buf, blk*spec.bs)
					r++
				}
				if err != nil {
					break
				}
				h.add(time.Since(t0))
			}
			mu.Lock()
			defer mu.Unlock()
			total.merge(&h)
			reads += r
			writes += wr
			if err != nil && first == nil {
				first = err
				halt.Store(true)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		return nil, first
	}
	if total.n == 0 {
		return nil, errors.New("no request completed")
	}
	res := &benchResult{Pattern: spec.pattern, RW: spec.rw, BlockSize: spec.bs, QueueDepth: spec.qd,
		Seconds: elapsed.Seconds(), IOs: int64(total.n), Reads: reads, Writes: writes}
	res.Bytes = res.IOs * spec.bs
	res.MBps = float64(res.Bytes) / elapsed.Seconds() / 1e6
	res.IOPS = float64(res.IOs) / elapsed.Seconds()
	res.Latency.P50 = total.quantile(0.50)
	res.Latency.P99 = total.quantile(0.99)
	res.Latency.P999 = total.quantile(0.999)
	res.Latency.Mean = float64(total.sum) / float64(total.n) / 1e3
	res.Latency.Max = float64(total.max) / 1e3
	return res, nil
}
