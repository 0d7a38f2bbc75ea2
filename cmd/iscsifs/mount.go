package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/iscsifs/iscsifs/cache"
	"github.com/iscsifs/iscsifs/fusefs"
	"github.com/iscsifs/iscsifs/initiator"
	"github.com/iscsifs/iscsifs/initiator/scsi"
	"github.com/iscsifs/iscsifs/loopdev"
)

func mountCommand() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "mount LUNs as files (foreground unless -d; SIGINT/SIGTERM flush and unmount)",
		ArgsUsage: "URL MOUNTPOINT",
		Flags: append(append(commonFlags(), multipathFlags()...), busyPollFlag(0),
			&cli.BoolFlag{Name: "read-only", Usage: "refuse every write (EROFS)"},
			&cli.StringFlag{Name: "cache-size", Usage: "block cache size per LUN", Value: "256MiB"},
			&cli.StringFlag{Name: "readahead", Usage: "largest read-ahead window (0 disables)", Value: "8MiB"},
			&cli.BoolFlag{Name: "write-through", Usage: "make every write durable before it returns"},
			&cli.DurationFlag{Name: "flush-interval", Usage: "write dirty data back after this long", Value: 5 * time.Second},
			&cli.IntFlag{Name: "queue-depth", Usage: "SCSI commands in flight per session", Value: 64},
			&cli.DurationFlag{Name: "poll-after-write", Value: 100 * time.Microsecond,
				Usage: "after answering a write or fsync with nothing else in flight, poll for the next request this long before sleeping (0 = never; trades CPU for the latency of write-and-fsync chains)"},
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users access the mount"},
			&cli.BoolFlag{Name: "attach", Usage: "give each LUN and partition file a loop device (root); prints one line per device"},
			&cli.BoolFlag{Name: "daemon", Aliases: []string{"d"}, Usage: "return once the mount is ready and serve it in the background (its log goes to --log-file, or to " + defaultLogFile() + ")"},
			&cli.StringFlag{Name: "log-file", Usage: "append the log to this file instead of standard error"},
			&cli.StringFlag{Name: "memory-limit", Usage: "soft limit for the process's memory (Go GC target); default: cache sizes + 256MiB, 0 = none"},
			&cli.StringFlag{Name: "metrics-addr", Usage: "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9420)"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile of the mount's life to this file", Hidden: true},
		),
		Action: mountAction,
	}
}

// lunDevice is what a mounted file needs of its LUN: an *initiator.LUN, or
// with --multipath an *initiator.MultipathLUN.
type lunDevice interface {
	cache.Device
	ReadOnly() bool
	Discard(ctx context.Context, off, length int64) error
	LBAStatus(ctx context.Context, off int64) ([]initiator.Extent, error)
	OnResize(func(newSize int64))
}

// lunFile is a cached LUN as the FUSE tree sees it.
type lunFile struct {
	*cache.Cache
	// io carries the file's I/O; lun names the logical unit (identity, the
	// session it is listed under): the same LUN on one path, the first
	// path's with --multipath.
	io       lunDevice
	mp       *initiator.MultipathLUN // with --multipath, else nil
	lun      *initiator.LUN
	path     string // in the mount: "lun1", or "IQN/lun1" for a portal mount
	readOnly bool
	m        *mounted
	disk     diskState
	dev      atomic.Pointer[loopdev.Device] // with --attach
}

// Size is the cache's idea of the size: it follows the LUN's capacity once
// resized has run, so the file never offers a range the cache would refuse.
func (f *lunFile) Size() int64    { return f.Cache.Size() }
func (f *lunFile) ReadOnly() bool { return f.readOnly || f.io.ReadOnly() }

var (
	_ fusefs.File      = (*lunFile)(nil)
	_ fusefs.Discarder = (*lunFile)(nil)
	_ fusefs.Seeker    = (*lunFile)(nil)
)

// Discard punches a hole (fallocate PUNCH_HOLE): dirty data is written back
// first so that a later write-back cannot resurrect the range, the LUN
// unmaps or zeroes it, and the cache forgets what it held.
func (f *lunFile) Discard(ctx context.Context, off, length int64) error {
	if err := f.Cache.Flush(ctx); err != nil {
		return err
	}
	err := f.io.Discard(ctx, off, length)
	f.Cache.Invalidate()
	if errors.Is(err, initiator.ErrDiscardNotSupported) {
		return syscall.EOPNOTSUPP
	}
	return err
}

// Seek finds data or holes from the LUN's allocation map (GET LBA STATUS),
// after writing back dirty data so the map includes it. A LUN without the
// map is all data.
func (f *lunFile) Seek(ctx context.Context, off int64, hole bool) (int64, error) {
	size := f.io.Size()
	if err := f.Cache.Flush(ctx); err != nil {
		return 0, err
	}
	for pos := off; pos < size; {
		exts, err := f.io.LBAStatus(ctx, pos)
		if errors.Is(err, initiator.ErrNoLBAStatus) {
			if hole {
				return size, nil
			}
			return pos, nil
		}
		if err != nil {
			return 0, err
		}
		for _, e := range exts {
			if e.Mapped != hole {
				return max(e.Off, off), nil
			}
			pos = e.Off + e.Len
		}
	}
	return size, nil
}

// sizeNotifier is the part of the mount that learns about size changes.
type sizeNotifier interface {
	NotifySize(path string) error
}

// resized follows a capacity change of the LUN: the cache takes the new size
// (a shrink drops cached and dirty data past the new end, which the target no
// longer has) and the kernel forgets the file's old size.
func (f *lunFile) resized(size int64, srv sizeNotifier, log zerolog.Logger) {
	defer f.m.rescan(context.Background(), f, "capacity changed")
	path := f.path
	old := f.Cache.Size()
	dropped, err := f.Cache.Resize(size)
	if err != nil {
		log.Error().Err(err).Str("file", path).Msg("resize")
		return
	}
	ev := log.Info()
	if dropped > 0 {
		ev = log.Warn().Int64("dirty_bytes_dropped", dropped)
	}
	ev.Str("file", path).Int64("from", old).Int64("to", size).Msg("LUN capacity changed; file resized")
	if srv == nil {
		return // not mounted yet: the kernel has no size to forget
	}
	if err := srv.NotifySize(path); err != nil {
		log.Warn().Err(err).Str("file", path).Msg("telling the kernel the new size")
	}
}

// mounted is everything a mount holds open, closed in reverse order. A
// portal mount logs in to each target on first use of its directory, so the
// lists grow while the mount serves; mu guards them.
type mounted struct {
	url       *initiator.URL
	cfg       initiator.Config
	multipath *multipathSpec // --multipath, else nil
	copts     cache.Options  // for stats.json
	readOnly  bool           // --read-only
	memLimit  int64          // --memory-limit: -1 automatic, 0 none
	log       zerolog.Logger
	srv       atomic.Pointer[fusefs.Server] // set once mounted, for size changes
	devs      *devices                      // with --attach, else nil
	rates     rateTracker                   // for the rates in stats.json

	mu       sync.Mutex
	sessions []*initiator.Session
	files    []*lunFile
	pending  []string // portal mount targets not logged in yet
	closed   bool
}

// snapshot returns the sessions, the files and the targets not logged in yet.
func (m *mounted) snapshot() ([]*initiator.Session, []*lunFile, []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.sessions), slices.Clone(m.files), slices.Clone(m.pending)
}

func mountAction(c *cli.Context) (err error) {
	ready := newReadiness(zerolog.Nop())
	defer func() {
		if err != nil {
			ready.failed(err)
		}
	}()
	if c.Bool("daemon") && !isDaemonChild() {
		if c.NArg() != 2 {
			return fmt.Errorf("mount: want two arguments, URL and MOUNTPOINT")
		}
		logPath := c.String("log-file")
		if logPath == "" {
			logPath = defaultLogFile()
		}
		return startDaemon(runArgs, logPath, c.App.Writer)
	}
	if path := c.String("log-file"); path != "" && !isDaemonChild() {
		f, err := openLogFile(path)
		if err != nil {
			return err
		}
		defer f.Close()
		c.App.ErrWriter = f
	}
	plan, err := planMount(c)
	if err != nil {
		return err
	}
	ready.log = plan.log
	if ready.pipe != nil {
		plan.out = ready // with -d the waiting parent prints the devices
	}
	return plan.execute(ready)
}

// mountPlan is what a mount is asked to do, checked before any login.
type mountPlan struct {
	url        *initiator.URL
	mountpoint string
	log        zerolog.Logger
	cfg        initiator.Config
	copts      cache.Options
	memLimit   int64
	multipath  *multipathSpec
	readOnly   bool
	allowOther bool
	attach     bool
	metrics    string        // --metrics-addr
	cpuprofile string        // --cpuprofile
	out        io.Writer     // the device lines of --attach
	pollWrites time.Duration // --poll-after-write
}

// planMount reads the arguments and flags and checks what can be checked
// without the target: a busy or missing mountpoint, a log on a file system
// we would serve, --attach without loop devices, bad sizes.
func planMount(c *cli.Context) (*mountPlan, error) {
	if c.NArg() != 2 {
		return nil, fmt.Errorf("mount: want two arguments, URL and MOUNTPOINT")
	}
	u, err := initiator.ParseURL(c.Args().Get(0))
	if err != nil {
		return nil, err
	}
	// Check the mountpoint before logging in: a busy or missing mountpoint
	// then fails at once, and with its own error rather than a login's.
	p := &mountPlan{url: u, mountpoint: c.Args().Get(1), readOnly: c.Bool("read-only"), allowOther: c.Bool("allow-other"),
		attach: c.Bool("attach"), metrics: c.String("metrics-addr"), cpuprofile: c.String("cpuprofile"), out: c.App.Writer,
		pollWrites: c.Duration("poll-after-write")}
	if _, err := fusefs.CheckMountpoint(p.mountpoint); err != nil {
		return nil, err
	}
	for fd, what := range map[int]string{1: "standard output", 2: "the log (standard error)"} {
		if err := checkLogTarget(fd, what); err != nil {
			return nil, err
		}
	}
	if p.attach {
		if err := loopdev.Available(); err != nil {
			return nil, fmt.Errorf("--attach: %w", err)
		}
	}
	if p.log, p.cfg, err = prepare(c, u); err != nil {
		return nil, err
	}
	p.cfg.QueueDepth = c.Int("queue-depth")
	if p.copts, err = cacheOptions(c, p.log); err != nil {
		return nil, err
	}
	if p.memLimit, err = memoryLimitFlag(c); err != nil {
		return nil, err
	}
	if p.multipath, err = multipathPlan(c, u, p.cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// execute logs in, mounts, attaches and serves until a signal or an
// unmount from outside; its error is the report: what failed to set up, or
// what could not be flushed at the end.
func (p *mountPlan) execute(ready *readiness) error {
	becomeIOFlusher(p.log)
	signals := subscribeSignals()
	defer signals.stop()
	stopProfile, err := startCPUProfile(p.cpuprofile)
	if err != nil {
		return err
	}
	defer stopProfile()
	m := &mounted{url: p.url, cfg: p.cfg, multipath: p.multipath, copts: p.copts, readOnly: p.readOnly, memLimit: p.memLimit, log: p.log}
	defer m.close()
	srv, err := p.setUp(signals.ctx, m)
	if err != nil {
		return err
	}
	mctx, stopMetrics := context.WithCancel(context.Background())
	defer stopMetrics()
	if p.metrics != "" {
		if err := serveMetrics(mctx, p.metrics, m, p.log); err != nil {
			p.log.Error().Err(err).Msg("metrics server")
			_ = srv.Unmount()
			return fmt.Errorf("--metrics-addr %s: %w", p.metrics, err)
		}
	}
	held := p.serve(signals, m, srv, ready)
	err = m.close()
	switch {
	case held != nil && err != nil:
		return fmt.Errorf("%w; %w", held, err) // one line, both causes
	case held != nil:
		return held
	}
	return err
}

// setUp opens the LUNs, mounts the file tree and attaches the devices.
func (p *mountPlan) setUp(ctx context.Context, m *mounted) (*fusefs.Server, error) {
	entries, lazy, err := m.open(ctx)
	if err != nil {
		if ctx.Err() != nil {
			// A signal, not the target: say so rather than "timed out".
			return nil, fmt.Errorf("mount: stopped by %v while logging in to %s", context.Cause(ctx), p.url)
		}
		return nil, err
	}
	if len(entries) == 0 && len(lazy) == 0 {
		return nil, fmt.Errorf("mount: %s has no direct-access (disk) LUNs", p.url)
	}
	srv, err := fusefs.Mount(p.mountpoint, entries, fusefs.Options{
		AllowOther:   p.allowOther,
		ReadOnly:     p.readOnly,
		Logger:       slogTo(p.log),
		FSName:       "iscsifs",
		ErrnoMappers: errnoMappers,
		StatusFiles:  m.statusFiles(),
		LazyDirs:     lazy,
		// Polling after writes pays off only when the daemon's thread would
		// otherwise sleep between the requests of a chain (see fusefs).
		PollAfterWrite: p.pollWrites,
	})
	if err != nil {
		return nil, err // names the mountpoint
	}
	serveOnOneProc()
	if p.attach {
		m.devs = newDevices(srv.Dir(), p.readOnly, p.log, p.out)
	}
	m.srv.Store(srv)
	p.log.Info().Str("mountpoint", srv.Dir()).Int("files", len(entries)).Int("targets_on_first_use", len(lazy)).Msg("serving")
	if m.devs != nil {
		if err := m.attachAll(lazy); err != nil {
			m.flush()
			if uerr := unmountRetry(srv); uerr != nil { // the detached devices let go of their files asynchronously
				lazyUnmount(p.mountpoint)
			}
			return nil, err
		}
	}
	go m.rates.run(ctx, m)
	return srv, nil
}

// serve reports readiness and serves until a signal (flush, detach,
// unmount) or an unmount from outside; it returns once the file system is
// unmounted, with an error when the FUSE connection was cut off while a
// device of ours was in use (see releaseDeadDevices).
func (p *mountPlan) serve(signals *mountSignals, m *mounted, srv *fusefs.Server, ready *readiness) error {
	log := p.log
	ctx := signals.ctx
	sigs := signals.serve()
	ready.ready()
	defer ready.stopping()
	unmounted := make(chan struct{})
	go func() { srv.Wait(); close(unmounted) }()
	detached := make(chan struct{})
	if m.devs != nil {
		// Our loop devices hold files of the mount open, so a lazy unmount
		// from outside leaves it served until they are detached.
		go watchDetached(ctx, srv, detached)
	}
	select {
	case sig := <-sigs:
		log.Info().Str("signal", sig.String()).Msg("flushing and unmounting")
		ready.stopping()
		m.releaseDevices()
		// Flush first: unmounting waits for no one, and dirty data must reach
		// the target whatever happens to the mount.
		m.flush()
		if err := unmountRetry(srv); err != nil {
			log.Warn().Err(err).Msg("unmount (retrying lazily)")
			lazyUnmount(p.mountpoint)
		}
		<-unmounted
	case <-detached:
		log.Info().Msg("unmounted lazily from outside; releasing the devices")
		m.releaseDevices()
		m.flush()
		<-unmounted
	case <-unmounted:
		log.Info().Msg("unmounted from outside; flushing")
		// The connection is gone (aborted through fusectl, or unmounted by
		// force): our devices can only fail from now on. Detaching them
		// frees the mount's files, so the unmount below is not refused.
		held := m.releaseDeadDevices()
		// An aborted connection leaves the mount in place, dead: take it
		// away rather than leave "transport endpoint is not connected"
		// behind. Unmount does nothing when it is gone already.
		if err := srv.Unmount(); err != nil {
			log.Warn().Err(err).Msg("unmount of the dead mount (retrying lazily)")
			lazyUnmount(p.mountpoint)
		}
		return held
	}
	return nil
}

// errDeviceInUse: the FUSE connection ended while a file system (or another
// holder) still used one of our loop devices, whose I/O now fails.
var errDeviceInUse = errors.New("the FUSE connection ended while a device was in use")

// releaseDeadDevices detaches every device once the connection is gone,
// without waiting for file systems on them to be unmounted (nothing can
// serve them any more). A held device cannot be detached now: autoclear
// removes it when its holder lets go. Each one is logged, and the error
// names them: whatever the file system on it had not written is lost, so
// the daemon must not exit as if all were well.
func (m *mounted) releaseDeadDevices() error {
	if m.devs == nil {
		return nil
	}
	held := m.devs.busy()
	if err := m.devs.detachAll(); err != nil && len(held) == 0 {
		m.log.Error().Err(err).Msg("detaching devices")
	}
	if len(held) == 0 {
		return nil
	}
	slices.Sort(held)
	for _, h := range held {
		m.log.Error().Str("device", h).Msg("device in use when the FUSE connection ended: every I/O to it fails; it detaches once its holder lets go")
	}
	return fmt.Errorf("%w: %s fails every I/O until unmounted", errDeviceInUse, strings.Join(held, ", "))
}

// releaseDevices waits until no file system uses our devices (the daemon
// keeps serving them meanwhile), then detaches them.
func (m *mounted) releaseDevices() {
	if m.devs == nil {
		return
	}
	m.flush()
	m.devs.waitFree(nil)
	if err := m.devs.detachAll(); err != nil {
		m.log.Error().Err(err).Msg("detaching devices")
	}
}

// watchDetached closes detached when the mount has been lazily unmounted.
func watchDetached(ctx context.Context, srv *fusefs.Server, detached chan<- struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		if !srv.Mounted() {
			close(detached)
			return
		}
	}
}

// unmountRetry unmounts, retrying for a few seconds while the mount is busy:
// a detached loop device lets go of its file asynchronously.
func unmountRetry(srv *fusefs.Server) error {
	var err error
	for range 50 {
		if err = srv.Unmount(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// attachAll attaches every file of the mount (--attach). A portal mount's
// target directories are loaded first, from this goroutine: a load runs in
// a LOOKUP, and attaching opens files in the mount.
func (m *mounted) attachAll(lazy []fusefs.LazyDir) error {
	srv := m.srv.Load()
	for _, ld := range lazy {
		if _, err := os.ReadDir(filepath.Join(srv.Dir(), ld.Path)); err != nil {
			m.log.Warn().Err(err).Str("target", ld.Path).Msg("not attaching the LUNs of a target that cannot be opened")
		}
	}
	_, files, _ := m.snapshot()
	return m.devs.attachFiles(files)
}

// lazyUnmount detaches a busy mount; open files keep working until closed.
func lazyUnmount(dir string) {
	_ = syscall.Unmount(dir, syscall.MNT_DETACH)
}

func cacheOptions(c *cli.Context, log zerolog.Logger) (cache.Options, error) {
	size, err := parseSize(c.String("cache-size"))
	if err != nil {
		return cache.Options{}, fmt.Errorf("--cache-size: %w", err)
	}
	ra, err := parseSize(c.String("readahead"))
	if err != nil {
		return cache.Options{}, fmt.Errorf("--readahead: %w", err)
	}
	return cache.Options{
		Size:          size,
		ReadAhead:     ra,
		WriteThrough:  c.Bool("write-through"),
		FlushInterval: c.Duration("flush-interval"),
		Parallel:      c.Int("queue-depth"),
		Logger:        slogTo(log),
	}, nil
}

// open logs in and opens what the URL names: one LUN or every disk LUN of a
// target, at once (so a wrong secret or a missing LUN fails the mount); for a
// portal, one directory per discovered target, logged in to on first use.
func (m *mounted) open(ctx context.Context) ([]fusefs.Entry, []fusefs.LazyDir, error) {
	if m.url.Target != "" {
		entries, err := m.openTarget(ctx, m.url.Target, "")
		return entries, nil, err
	}
	targets, err := targetsOf(ctx, m.url, m.cfg)
	if err != nil {
		return nil, nil, err
	}
	lazy := make([]fusefs.LazyDir, 0, len(targets))
	m.mu.Lock()
	m.pending = slices.Clone(targets)
	m.mu.Unlock()
	for _, target := range targets {
		lazy = append(lazy, fusefs.LazyDir{Path: target, Load: func(ctx context.Context) ([]fusefs.Entry, error) {
			return m.openTarget(ctx, target, target+"/")
		}})
	}
	return nil, lazy, nil
}

// openTarget logs in to target and opens the LUN the URL names, or every disk
// LUN, each behind its own cache. Entry paths are relative ("lun1"); dir is
// what the mount puts before them. On failure nothing stays open.
func (m *mounted) openTarget(ctx context.Context, target, dir string) ([]fusefs.Entry, error) {
	var files []*lunFile
	var s *initiator.Session
	fail := func(err error) ([]fusefs.Entry, error) {
		for _, f := range files {
			_ = f.Close(context.WithoutCancel(ctx))
			if f.mp != nil {
				_ = f.mp.Close()
			}
		}
		if s != nil {
			_ = s.Close(context.WithoutCancel(ctx))
		}
		return nil, err
	}
	// --multipath names one LUN (multipathPlan), opened below with a
	// session per path.
	luns := []targetLUN{{n: uint64(m.url.LUN)}}
	if m.multipath == nil {
		var err error
		if s, luns, err = loginAndOpen(ctx, m.url, target, m.cfg); err != nil {
			return nil, err
		}
	}
	var entries []fusefs.Entry
	var sessions []*initiator.Session
	for _, tl := range luns {
		n := tl.n
		f := &lunFile{readOnly: m.readOnly, m: m}
		err := tl.err
		if m.multipath != nil {
			if f.mp, err = initiator.OpenMultipath(ctx, target, m.multipath.portals, n, m.cfg, m.multipath.selector); err == nil {
				f.io, f.lun = f.mp, f.mp.Primary()
				sessions = append(sessions, f.lun.Session())
			}
		} else if err == nil {
			f.lun, f.io = tl.lun, tl.lun
		}
		if errors.Is(err, initiator.ErrNotBlockDevice) && (m.url.LUN < 0 || m.url.Target == "") {
			continue // e.g. tgt's controller at LUN 0
		}
		if err != nil {
			return fail(err)
		}
		if f.Cache, err = cache.New(f.io, m.copts); err != nil {
			if f.mp != nil {
				_ = f.mp.Close()
			}
			return fail(err)
		}
		name := fmt.Sprintf("lun%d", n)
		f.path = dir + name
		files = append(files, f)
		entries = append(entries, fusefs.Entry{Path: name, File: f})
		entries = append(entries, m.initParts(ctx, f, name)...)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return fail(errors.New("mount: shutting down"))
	}
	if s != nil {
		sessions = append(sessions, s)
	}
	m.sessions = append(m.sessions, sessions...)
	m.files = append(m.files, files...)
	m.pending = slices.DeleteFunc(m.pending, func(t string) bool { return t == target })
	nfiles := len(m.files)
	m.mu.Unlock()
	for _, f := range files {
		f.io.OnResize(func(size int64) { f.resized(size, m.srv.Load(), m.log) })
		m.log.Info().Str("file", f.path).Int64("size", f.Size()).Bool("read_only", f.ReadOnly()).Msg("LUN opened")
	}
	m.applyMemoryLimit(nfiles)
	return entries, nil
}

// flush writes back every LUN's dirty data and makes it durable.
func (m *mounted) flush() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, files, _ := m.snapshot()
	var wg sync.WaitGroup
	errs := make([]error, len(files))
	for i, f := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f.SyncContext(ctx)
			if errs[i] != nil {
				m.log.Error().Err(errs[i]).Str("file", f.path).Msg("flush failed")
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// close flushes and closes the caches, then logs out of every session. Loads
// of lazy directories after it fail.
func (m *mounted) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m.mu.Lock()
	m.closed = true
	files, sessions := m.files, m.sessions
	m.files, m.sessions = nil, nil
	m.mu.Unlock()
	var errs []error
	for _, f := range files {
		if err := f.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.path, err))
		}
		if err := f.io.SyncContext(ctx); err != nil && !f.ReadOnly() {
			errs = append(errs, fmt.Errorf("%s: %w", f.path, err))
		}
		if f.mp != nil {
			_ = f.mp.Close() // the other paths' sessions; the first is in sessions
		}
	}
	for _, s := range sessions {
		if err := s.Close(ctx); err != nil {
			m.log.Debug().Err(err).Str("target", s.Target()).Msg("logout")
		}
	}
	return errors.Join(errs...)
}

// mountSignals is the mount's one subscription to SIGINT and SIGTERM.
// Until serve is called a signal cancels ctx, so that logins, opening and
// attaching give up at once; every signal is also passed on to the channel
// serve returns, so that one arriving as serving begins is not lost.
type mountSignals struct {
	ctx     context.Context
	cancel  context.CancelCauseFunc
	raw     chan os.Signal
	out     chan os.Signal
	serving atomic.Bool
	done    chan struct{}
}

func subscribeSignals() *mountSignals {
	ms := &mountSignals{raw: make(chan os.Signal, 2), out: make(chan os.Signal, 2), done: make(chan struct{})}
	ms.ctx, ms.cancel = context.WithCancelCause(context.Background())
	signal.Notify(ms.raw, os.Interrupt, syscall.SIGTERM)
	go func() {
		for {
			select {
			case s := <-ms.raw:
				if !ms.serving.Load() {
					ms.cancel(fmt.Errorf("%v", s))
				}
				select {
				case ms.out <- s:
				default: // the serve loop has one already
				}
			case <-ms.done:
				return
			}
		}
	}()
	return ms
}

// serve marks the end of setup: from now on signals only come on the
// returned channel.
func (ms *mountSignals) serve() <-chan os.Signal {
	ms.serving.Store(true)
	return ms.out
}

func (ms *mountSignals) stop() {
	signal.Stop(ms.raw)
	close(ms.done)
	ms.cancel(nil)
}

// errnoMappers turn the initiator's errors into errnos for fusefs.
var errnoMappers = []fusefs.ErrnoMapper{
	func(err error) (syscall.Errno, bool) {
		return syscall.EROFS, errors.Is(err, scsi.ErrWriteProtected)
	},
	func(err error) (syscall.Errno, bool) {
		var re *initiator.RangeError
		return syscall.ENOSPC, errors.As(err, &re)
	},
	func(err error) (syscall.Errno, bool) {
		return syscall.EINVAL, errors.Is(err, scsi.ErrLBAOutOfRange) || errors.Is(err, scsi.ErrInvalidField)
	},
	func(err error) (syscall.Errno, bool) {
		return syscall.EOPNOTSUPP, errors.Is(err, scsi.ErrInvalidOpcode)
	},
	// A portal mount's target directory logs in on first use.
	func(err error) (syscall.Errno, bool) {
		var le *initiator.LoginError
		return syscall.EACCES, errors.As(err, &le) && le.IsAuthFailure()
	},
	func(err error) (syscall.Errno, bool) {
		var le *initiator.LoginError
		return syscall.ENOENT, errors.As(err, &le) && le.IsTargetNotFound()
	},
}

// parseSize reads "256MiB", "8M", "1g", "4096" (binary units).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToLower(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40}, {"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30}, {"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40}, {"b", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	var n int64
	if _, err := fmt.Sscan(t, &n); err != nil || n < 0 || fmt.Sprint(n) != t {
		return 0, fmt.Errorf("%q is not a size (e.g. 256MiB)", s)
	}
	return n * mult, nil
}

// memoryHeadroom is what the mount needs beside its caches: FUSE request
// buffers (go-fuse pools one per request size), in-flight I/O, the runtime.
const memoryHeadroom = 256 << 20

// memoryLimitFlag reads --memory-limit: -1 when not given (automatic), 0 for none.
func memoryLimitFlag(c *cli.Context) (int64, error) {
	if !c.IsSet("memory-limit") {
		return -1, nil
	}
	n, err := parseSize(c.String("memory-limit"))
	if err != nil {
		return 0, fmt.Errorf("--memory-limit: %w", err)
	}
	return n, nil
}

// applyMemoryLimit bounds the heap so that buffers freed by go-fuse and the
// cache are collected before the process grows far past its caches (without
// it the Go GC lets the heap reach twice the live size, and pooled FUSE
// buffers count as live): memory stays near cache size + headroom whatever
// the workload. The limit is soft; GC works harder only close to it. It is
// applied again as lazily opened LUNs add caches.
func (m *mounted) applyMemoryLimit(files int) {
	limit := m.memLimit
	switch limit {
	case 0:
		return
	case -1:
		limit = int64(files)*m.copts.Size + memoryHeadroom
	}
	debug.SetMemoryLimit(limit)
	m.log.Debug().Int64("bytes", limit).Msg("memory limit")
}
