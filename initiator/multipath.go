package initiator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iscsifs/iscsifs/initiator/scsi"
)

// PathSelector chooses the path of each command of a MultipathLUN.
type PathSelector int

const (
	// SelectQueueLength sends each command down the path with the fewest
	// commands outstanding (dm-multipath's queue-length).
	SelectQueueLength PathSelector = iota
	// SelectRoundRobin takes the paths in turn.
	SelectRoundRobin
	// SelectServiceTime weighs the commands outstanding on a path by its
	// recent latency (dm-multipath's service-time).
	SelectServiceTime
)

// ParsePathSelector reads "queue-length", "round-robin" or "service-time".
func ParsePathSelector(s string) (PathSelector, error) {
	switch s {
	case "queue-length", "":
		return SelectQueueLength, nil
	case "round-robin":
		return SelectRoundRobin, nil
	case "service-time":
		return SelectServiceTime, nil
	}
	return 0, fmt.Errorf("path selector %q: want queue-length, round-robin or service-time", s)
}

// MultipathLUN is one logical unit reached through several portals at once
// (active-active): a session per portal, each with its own ISID, every one
// checked to reach the same LU. Commands are spread over the logged-in
// paths by a PathSelector; a command that fails because its path failed is
// sent again down another one, and a failed path's session keeps logging in
// again in the background and is used again once it is back. Like LUN, it
// is safe for concurrent use, and its ReadAt/WriteAt make it an
// io.ReaderAt/io.WriterAt.
//
// As with dm-multipath, a write re-sent down another path after its path
// failed may also have reached the LU through the failed one; both carry
// the same data.
type MultipathLUN struct {
	// paths are the paths that logged in once, in the order they did; the
	// slice is replaced, never changed, when a left-out path joins.
	paths     atomic.Pointer[[]*mpPath]
	sel       PathSelector
	next      atomic.Uint64 // round-robin cursor
	wait      time.Duration // how long a command waits for a path: Config.ReplacementTimeout
	sizeNow   atomic.Int64  // capacity in bytes, as the paths last read it
	blockSize int
	closeOnce sync.Once

	// Paths that could not be opened: tried again every pathProbeInterval
	// by joinLoop (except wrong-LU ones), and then added to paths.
	target   string
	lun      uint64
	pathCfg  Config
	log      *slog.Logger
	mu       sync.Mutex
	missing  []*mpMissing
	onResize func(int64) // OnResize's f, for paths that join later
	resizeMu sync.Mutex  // one resize report at a time
	stopJoin context.CancelFunc
	bg       sync.WaitGroup // joinLoop

	// writesDone and syncedWrites are LUN's counters (see LUN.SyncContext)
	// for the LU as a whole: a write down any path counts, and a
	// SYNCHRONIZE CACHE down any path covers them all, since it acts on
	// the LU. A path's own counters see only its own writes.
	writesDone, syncedWrites atomic.Uint64
}

// mpMissing is a portal that has no working session yet.
type mpMissing struct {
	portal   string
	state    PathState // PathFailed, or PathWrongLU (never tried again)
	failures int
	err      error
}

type mpPath struct {
	portal   string
	s        *Session
	l        *LUN
	inflight atomic.Int32
	ewma     atomic.Int64 // recent command latency, ns (service-time)
}

// OpenMultipath logs in to target through each portal with its own session
// and opens LUN lun on each. A portal that fails to log in is left out with
// a warning and tried again every 5 s in the background, joining once it
// works; one that leads to another logical unit (VPD 0x83 designator, else
// 0x80 serial, differing from the first path's) is left out for good. At
// least one must work. Each path's session fails its commands at once when
// its connection is lost (Config.ReplacementTimeout applies to the whole
// LUN: a command waits that long for any path) and Config.Portals is
// ignored.
func OpenMultipath(ctx context.Context, target string, portals []string, lun uint64, cfg Config, sel PathSelector) (*MultipathLUN, error) {
	if len(portals) == 0 {
		return nil, errors.New("multipath: no portal given")
	}
	full := cfg.withDefaults()
	m := &MultipathLUN{sel: sel, wait: max(full.ReplacementTimeout, 0), target: target, lun: lun, log: full.Logger, stopJoin: func() {}}
	m.pathCfg = cfg
	m.pathCfg.Portals, m.pathCfg.DiscoverPortals = nil, false
	m.pathCfg.ReplacementTimeout = -1
	var paths []*mpPath
	var firstErr error
	for _, portal := range portals {
		portal = withDefaultPort(portal)
		var first *LUN
		if len(paths) > 0 {
			first = paths[0].l
		}
		p, err := m.openPath(ctx, portal, first)
		if err == nil {
			paths = append(paths, p)
			continue
		}
		m.log.Warn("multipath: path left out", "path", portal, "err", err)
		if firstErr == nil {
			firstErr = err
		}
		mm := &mpMissing{portal: portal, state: PathFailed, failures: 1, err: err}
		if errors.Is(err, ErrDeviceChanged) {
			mm.state = PathWrongLU
		}
		m.missing = append(m.missing, mm)
	}
	if len(paths) == 0 {
		return nil, firstErr
	}
	m.paths.Store(&paths)
	for _, p := range paths {
		p.s.setALUAShare(m.shareALUA)
	}
	m.sizeNow.Store(paths[0].l.Size())
	m.blockSize = paths[0].l.BlockSize()
	if slices.ContainsFunc(m.missing, func(mm *mpMissing) bool { return mm.state == PathFailed }) {
		var joinCtx context.Context
		joinCtx, m.stopJoin = context.WithCancel(context.Background())
		m.bg.Go(func() { m.joinLoop(joinCtx) })
	}
	return m, nil
}

// openPath logs in through portal and opens the LUN; first, when not nil,
// is the LUN of the first path, which this one must be the same LU as.
func (m *MultipathLUN) openPath(ctx context.Context, portal string, first *LUN) (*mpPath, error) {
	s, err := Login(ctx, portal, m.target, m.pathCfg)
	if err != nil {
		return nil, err
	}
	s.alua.failFast.Store(true) // ALUA NOT READY: the LUN tries another path
	l, err := s.OpenLUN(ctx, m.lun)
	if err == nil && first != nil && !sameIdentity(first, l) {
		err = fmt.Errorf("%w: %s LUN %d at %s is not the LU of the first path", ErrDeviceChanged, m.target, m.lun, portal)
	}
	if err != nil {
		_ = s.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return &mpPath{portal: portal, s: s, l: l}, nil
}

// joinLoop tries the paths left out at open again every pathProbeInterval
// and adds those that log in and reach the same LU, until none is left or
// Close cancels ctx.
func (m *MultipathLUN) joinLoop(ctx context.Context) {
	probeEvery(ctx, func() bool {
		m.mu.Lock()
		todo := slices.DeleteFunc(slices.Clone(m.missing), func(mm *mpMissing) bool { return mm.state != PathFailed })
		m.mu.Unlock()
		for _, mm := range todo {
			p, err := m.openPath(ctx, mm.portal, m.Primary())
			if ctx.Err() != nil {
				if p != nil {
					_ = p.s.Close(context.Background())
				}
				return false
			}
			if err != nil {
				m.mu.Lock()
				mm.failures++
				mm.err = err
				if errors.Is(err, ErrDeviceChanged) {
					mm.state = PathWrongLU
					m.log.Warn("multipath: path leads to another logical unit; never using it", "path", mm.portal)
				}
				m.mu.Unlock()
				continue
			}
			m.join(p, mm)
		}
		return len(todo) > 0
	})
}

// join adds p (which was mm) to the paths in use.
func (m *MultipathLUN) join(p *mpPath, mm *mpMissing) {
	p.s.setALUAShare(m.shareALUA)
	m.mu.Lock()
	m.missing = slices.DeleteFunc(m.missing, func(x *mpMissing) bool { return x == mm })
	paths := append(slices.Clone(m.list()), p)
	m.paths.Store(&paths)
	f := m.onResize
	m.mu.Unlock()
	if f != nil {
		m.watchResize(p, f)
	}
	m.log.Info("multipath: path joined", "path", p.portal)
}

// list is the paths in use now.
func (m *MultipathLUN) list() []*mpPath { return *m.paths.Load() }

// shareALUA hands every group's state, as one path's session read it, to
// the other paths: a path without commands sees no UNIT ATTENTION 2A/06,
// and its group's state changes with the others'.
func (m *MultipathLUN) shareALUA(groups []scsi.TargetPortGroup) {
	for _, p := range m.list() {
		p.s.applyGroups(groups)
	}
}

// sameIdentity reports whether two LUNs name the same logical unit.
func sameIdentity(a, b *LUN) bool {
	if a.Identifier != "" || b.Identifier != "" {
		return a.Identifier == b.Identifier
	}
	return a.Serial == b.Serial
}

// Size is the capacity in bytes (as the paths last read it).
func (m *MultipathLUN) Size() int64 { return m.sizeNow.Load() }

// BlockSize is the logical block size.
func (m *MultipathLUN) BlockSize() int { return m.blockSize }

// ReadOnly reports a write-protected LU.
func (m *MultipathLUN) ReadOnly() bool { return m.Primary().ReadOnly() }

// Paths returns each path with its state and counters: those in use, then
// those left out at open (failed, or leading to another LU).
func (m *MultipathLUN) Paths() []PathStatus {
	var out []PathStatus
	for _, p := range m.list() {
		ps := PathStatus{Portal: p.portal, State: PathFailed, Logins: p.s.Reconnects() + 1, Commands: p.s.Stats().Commands}
		if p.s.State() == StateLoggedIn {
			ps.State = PathActive
		}
		if sp := p.s.Paths(); len(sp) > 0 {
			ps.ALUA, ps.TPG = sp[0].ALUA, sp[0].TPG
		}
		out = append(out, ps)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, mm := range m.missing {
		out = append(out, PathStatus{Portal: mm.portal, State: mm.state, Failures: mm.failures, LastError: mm.err.Error()})
	}
	return out
}

// Sessions returns the session of each path in use, in the order of Paths.
func (m *MultipathLUN) Sessions() []*Session {
	paths := m.list()
	out := make([]*Session, len(paths))
	for i, p := range paths {
		out[i] = p.s
	}
	return out
}

func (m *MultipathLUN) ReadAt(p []byte, off int64) (int, error) {
	return m.ReadAtContext(context.Background(), p, off)
}

func (m *MultipathLUN) WriteAt(p []byte, off int64) (int, error) {
	return m.WriteAtContext(context.Background(), p, off)
}

// Sync is SyncContext without a deadline.
func (m *MultipathLUN) Sync() error { return m.SyncContext(context.Background()) }

// ReadAtContext is LUN.ReadAtContext down one of the paths.
func (m *MultipathLUN) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return m.do(ctx, func(l *LUN) (int, error) { return l.ReadAtContext(ctx, p, off) })
}

// WriteAtContext is LUN.WriteAtContext down one of the paths.
func (m *MultipathLUN) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	defer m.writesDone.Add(1)
	return m.do(ctx, func(l *LUN) (int, error) { return l.WriteAtContext(ctx, p, off) })
}

// WriteDurableAtContext is LUN.WriteDurableAtContext for the LU: WRITEs with
// FUA when nothing written down any path awaits SYNCHRONIZE CACHE.
func (m *MultipathLUN) WriteDurableAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if m.writesDone.Load() != m.syncedWrites.Load() {
		return m.WriteAtContext(ctx, p, off)
	}
	var durable bool
	n, err := m.do(ctx, func(l *LUN) (int, error) {
		n, fua, err := l.writeFUA(ctx, p, off)
		durable = fua // of the try that counts: the last one
		return n, err
	})
	if !durable || err != nil {
		m.writesDone.Add(1)
	}
	return n, err
}

// SyncContext makes what was written durable: SYNCHRONIZE CACHE, when a
// write since the last one may sit in the LU's write cache. It acts on the
// LU, whichever path it comes down, so one path suffices.
func (m *MultipathLUN) SyncContext(ctx context.Context) error {
	done := m.writesDone.Load() // before sending, as LUN.SyncContext
	if done == m.syncedWrites.Load() {
		m.Primary().s.stats.syncsSkipped.Add(1)
		return nil
	}
	_, err := m.do(ctx, func(l *LUN) (int, error) {
		// A LUN only syncs after writes it sent itself: force it.
		l.wrote()
		return 0, l.SyncContext(ctx)
	})
	if err != nil {
		return err
	}
	raiseTo(&m.syncedWrites, done)
	return nil
}

// Close stops trying the paths left out and logs out of every path.
func (m *MultipathLUN) Close() error {
	var err error
	m.closeOnce.Do(func() {
		m.stopJoin()
		m.bg.Wait() // no path joins after this
		for _, p := range m.list() {
			err = errors.Join(err, p.s.Close(context.Background()))
		}
	})
	return err
}

// do runs op down a path the selector picks, and again down another when
// the path fails under it; while no path is logged in it waits, as long as
// ctx and the replacement timeout allow. A command a port refuses with an
// ALUA NOT READY (standby, unavailable, transitioning) goes down another
// path, or waits for a state change when none is better, up to
// maxNotReadyWait.
func (m *MultipathLUN) do(ctx context.Context, op func(*LUN) (int, error)) (int, error) {
	var waitedSince, aluaSince time.Time
	var lastErr error
	var refusedBy *mpPath // the path whose port last refused the command (ALUA)
	aluaBackoff := 10 * time.Millisecond
	for failures := 0; ; {
		p := m.pick()
		if p == nil {
			if waitedSince.IsZero() {
				waitedSince = time.Now()
			}
			if time.Since(waitedSince) >= m.wait {
				if lastErr == nil {
					lastErr = errors.New("multipath: no path is logged in")
				}
				return 0, lastErr
			}
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			continue
		}
		waitedSince = time.Time{}
		if p == refusedBy || refusedBy != nil && p.s.currentALUA().rank() >= ALUAStandby.rank() {
			// A port refused the command and no path that serves I/O is
			// left: give the ports time to change state.
			select {
			case <-time.After(aluaBackoff):
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			aluaBackoff = min(2*aluaBackoff, 500*time.Millisecond)
		}
		p.inflight.Add(1)
		start := time.Now()
		n, err := op(p.l)
		p.inflight.Add(-1)
		if err == nil {
			lat := int64(time.Since(start))
			old := p.ewma.Load()
			p.ewma.Store(old + (lat-old)/8)
			return n, nil
		}
		if ctx.Err() != nil {
			return n, err
		}
		if aluaNotReady(err) != ALUAUnknown {
			// The port is standby, unavailable or in transition: its
			// session noted that, so pick now prefers the other paths.
			if aluaSince.IsZero() {
				aluaSince = time.Now()
			}
			refusedBy = p
			if time.Since(aluaSince) < maxNotReadyWait {
				continue
			}
			return n, err
		}
		failures++
		if !pathFailure(err) || failures > 4*len(m.list()) {
			return n, err
		}
		lastErr = err
	}
}

// pathFailure reports an error that says nothing of the command, only that
// its path failed: worth sending the command down another path.
func pathFailure(err error) bool {
	var ue *SessionUnavailableError
	return isConnectionError(err) || errors.As(err, &ue)
}

// pick returns a logged-in path by the selector, nil if none is. With ALUA
// it picks among the logged-in paths of the best state only (ALUAState.rank:
// active/optimized if any, else active/non-optimized, standby only when no
// active path is left); without, all paths rank the same.
func (m *MultipathLUN) pick() *mpPath {
	var best *mpPath
	var bestScore int64
	bestRank := 0
	paths := m.list()
	n := uint64(len(paths))
	// Every selector starts at a rotating path, so that ties (idle paths,
	// equal queues) are spread instead of always going to the first.
	start := m.next.Add(1)
	for i := range n {
		p := paths[(start+i)%n]
		if p.s.State() != StateLoggedIn {
			continue
		}
		rank := p.s.currentALUA().rank()
		var score int64
		switch m.sel {
		case SelectRoundRobin:
			// The first in turn of the best rank.
		case SelectServiceTime:
			score = (int64(p.inflight.Load()) + 1) * max(p.ewma.Load(), 1)
		default:
			score = int64(p.inflight.Load())
		}
		if best == nil || rank < bestRank || rank == bestRank && score < bestScore {
			best, bestScore, bestRank = p, score, rank
		}
	}
	return best
}
