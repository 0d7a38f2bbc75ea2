package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/iscsifs/iscsifs/cache"
	"github.com/iscsifs/iscsifs/fusefs"
	"github.com/iscsifs/iscsifs/initiator"
	"github.com/iscsifs/iscsifs/initiator/scsi"
)

func mountCommand() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "mount LUNs as files (foreground; SIGINT/SIGTERM flush and unmount)",
		ArgsUsage: "URL MOUNTPOINT",
		Flags: append(commonFlags(),
			&cli.BoolFlag{Name: "read-only", Usage: "refuse every write (EROFS)"},
			&cli.StringFlag{Name: "cache-size", Usage: "block cache size per LUN", Value: "256MiB"},
			&cli.StringFlag{Name: "readahead", Usage: "largest read-ahead window (0 disables)", Value: "8MiB"},
			&cli.BoolFlag{Name: "write-through", Usage: "make every write durable before it returns"},
			&cli.DurationFlag{Name: "flush-interval", Usage: "write dirty data back after this long", Value: 5 * time.Second},
			&cli.IntFlag{Name: "queue-depth", Usage: "SCSI commands in flight per session", Value: 64},
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users access the mount"},
			&cli.StringFlag{Name: "memory-limit", Usage: "soft limit for the process's memory (Go GC target); default: cache sizes + 256MiB, 0 = none"},
			&cli.StringFlag{Name: "metrics-addr", Usage: "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9420)"},
		),
		Action: mountAction,
	}
}

// lunFile is a cached LUN as the FUSE tree sees it.
type lunFile struct {
	*cache.Cache
	lun      *initiator.LUN
	readOnly bool
}

// Size is the cache's idea of the size: it follows the LUN's capacity once
// resized has run, so the file never offers a range the cache would refuse.
func (f *lunFile) Size() int64    { return f.Cache.Size() }
func (f *lunFile) ReadOnly() bool { return f.readOnly || f.lun.ReadOnly() }

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
	err := f.lun.Discard(ctx, off, length)
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
	size := f.lun.Size()
	if err := f.Cache.Flush(ctx); err != nil {
		return 0, err
	}
	for pos := off; pos < size; {
		exts, err := f.lun.LBAStatus(ctx, pos)
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
func (f *lunFile) resized(size int64, srv sizeNotifier, path string, log zerolog.Logger) {
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
	if err := srv.NotifySize(path); err != nil {
		log.Warn().Err(err).Str("file", path).Msg("telling the kernel the new size")
	}
}

// mounted is everything a mount holds open, closed in reverse order.
type mounted struct {
	sessions []*initiator.Session
	files    []*lunFile
	entries  []fusefs.Entry
	copts    cache.Options // for stats.json
	readOnly bool          // --read-only
}

func mountAction(c *cli.Context) error {
	if c.NArg() != 2 {
		return fmt.Errorf("mount: want two arguments, URL and MOUNTPOINT")
	}
	u, err := initiator.ParseURL(c.Args().Get(0))
	if err != nil {
		return err
	}
	// Check the mountpoint before logging in: a busy or missing mountpoint
	// then fails at once, and with its own error rather than a login's.
	mountpoint := c.Args().Get(1)
	if _, err := fusefs.CheckMountpoint(mountpoint); err != nil {
		return err
	}
	log, cfg, err := prepare(c, u)
	if err != nil {
		return err
	}
	cfg.QueueDepth = c.Int("queue-depth")
	copts, err := cacheOptions(c, log)
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()

	m, err := openLUNs(ctx, u, cfg, copts, c.Bool("read-only"), log)
	if m != nil {
		defer m.close(log)
	}
	if err != nil {
		return err
	}
	if len(m.entries) == 0 {
		return fmt.Errorf("mount: %s has no direct-access (disk) LUNs", u)
	}
	if err := setMemoryLimit(c, int64(len(m.files))*copts.Size, log); err != nil {
		return err
	}
	srv, err := fusefs.Mount(mountpoint, m.entries, fusefs.Options{
		AllowOther:   c.Bool("allow-other"),
		ReadOnly:     c.Bool("read-only"),
		Logger:       log,
		FSName:       "iscsifs",
		ErrnoMappers: errnoMappers,
		StatusFiles:  m.statusFiles(),
	})
	if err != nil {
		return err // names the mountpoint
	}
	for i, e := range m.entries {
		f := m.files[i]
		log.Info().Str("file", mountpoint+"/"+e.Path).Int64("size", f.Size()).
			Bool("read_only", f.ReadOnly()).Msg("mounted")
		f.lun.OnResize(func(size int64) { f.resized(size, srv, e.Path, log) })
	}
	if addr := c.String("metrics-addr"); addr != "" {
		mctx, stopMetrics := context.WithCancel(context.Background())
		defer stopMetrics()
		if err := serveMetrics(mctx, addr, m, log); err != nil {
			log.Error().Err(err).Msg("metrics server")
			_ = srv.Unmount()
			return fmt.Errorf("--metrics-addr %s: %w", addr, err)
		}
	}

	// Serve until a signal or an unmount from outside.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	unmounted := make(chan struct{})
	go func() { srv.Wait(); close(unmounted) }()
	select {
	case sig := <-sigs:
		log.Info().Str("signal", sig.String()).Msg("flushing and unmounting")
		// Flush first: unmounting waits for no one, and dirty data must reach
		// the target whatever happens to the mount.
		m.flush(log)
		if err := srv.Unmount(); err != nil {
			log.Warn().Err(err).Msg("unmount (retrying lazily)")
			lazyUnmount(mountpoint)
		}
		<-unmounted
	case <-unmounted:
		log.Info().Msg("unmounted from outside; flushing")
	}
	return m.close(log)
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
		Logger:        log,
	}, nil
}

// openLUNs logs in and opens the LUNs the URL names: one LUN, every disk LUN
// of a target, or every disk LUN of every target of a portal.
func openLUNs(ctx context.Context, u *initiator.URL, cfg initiator.Config, copts cache.Options, readOnly bool, log zerolog.Logger) (*mounted, error) {
	m := &mounted{copts: copts, readOnly: readOnly}
	targets, err := targetsOf(ctx, u, cfg)
	if err != nil {
		return m, err
	}
	for _, target := range targets {
		s, err := initiator.Login(ctx, u.Portal(), target, cfg)
		if err != nil {
			return m, err
		}
		m.sessions = append(m.sessions, s)
		luns := []uint64{uint64(u.LUN)}
		if u.LUN < 0 || u.Target == "" {
			if luns, err = s.ReportLUNs(ctx); err != nil {
				return m, err
			}
		}
		for _, n := range luns {
			l, err := s.OpenLUN(ctx, n)
			if errors.Is(err, initiator.ErrNotBlockDevice) && u.LUN < 0 {
				continue // e.g. tgt's controller at LUN 0
			}
			if err != nil {
				return m, err
			}
			cc, err := cache.New(l, copts)
			if err != nil {
				return m, err
			}
			f := &lunFile{Cache: cc, lun: l, readOnly: readOnly}
			path := fmt.Sprintf("lun%d", n)
			if u.Target == "" {
				path = target + "/" + path
			}
			m.files = append(m.files, f)
			m.entries = append(m.entries, fusefs.Entry{Path: path, File: f})
		}
	}
	return m, nil
}

// flush writes back every LUN's dirty data and makes it durable.
func (m *mounted) flush(log zerolog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(m.files))
	for i, f := range m.files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f.Sync(ctx)
			if errs[i] != nil {
				log.Error().Err(errs[i]).Str("file", m.entries[i].Path).Msg("flush failed")
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// close flushes and closes the caches, then logs out of every session.
func (m *mounted) close(log zerolog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var errs []error
	for i, f := range m.files {
		if err := f.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.entries[i].Path, err))
		}
		if err := f.lun.SyncContext(ctx); err != nil && !f.ReadOnly() {
			errs = append(errs, fmt.Errorf("%s: %w", m.entries[i].Path, err))
		}
	}
	m.files = nil
	for _, s := range m.sessions {
		if err := s.Close(ctx); err != nil {
			log.Debug().Err(err).Str("target", s.Target()).Msg("logout")
		}
	}
	m.sessions = nil
	return errors.Join(errs...)
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

// setMemoryLimit bounds the heap so that buffers freed by go-fuse and the
// cache are collected before the process grows far past its caches (without
// it the Go GC lets the heap reach twice the live size, and pooled FUSE
// buffers count as live): memory stays near cache size + headroom whatever
// the workload. The limit is soft; GC works harder only close to it.
func setMemoryLimit(c *cli.Context, caches int64, log zerolog.Logger) error {
	limit := caches + memoryHeadroom
	if c.IsSet("memory-limit") {
		n, err := parseSize(c.String("memory-limit"))
		if err != nil {
			return fmt.Errorf("--memory-limit: %w", err)
		}
		if n == 0 {
			return nil
		}
		limit = n
	}
	debug.SetMemoryLimit(limit)
	log.Debug().Int64("bytes", limit).Msg("memory limit")
	return nil
}
