package initiator

import (
	"context"
	"errors"
	"fmt"
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
	paths     []*mpPath
	sel       PathSelector
	next      atomic.Uint64 // round-robin cursor
	wait      time.Duration // how long a command waits for a path: Config.ReplacementTimeout
	sizeNow   atomic.Int64  // capacity in bytes, as the paths last read it
	blockSize int
	closeOnce sync.Once
}

type mpPath struct {
	portal   string
	s        *Session
	l        *LUN
	inflight atomic.Int32
	ewma     atomic.Int64 // recent command latency, ns (service-time)
}

// OpenMultipath logs in to target through each portal with its own session
// and opens LUN lun on each. A portal that fails to log in, or that leads
// to another logical unit (VPD 0x83 designator, else 0x80 serial, differing
// from the first path's), is left out with a warning; at least one must
// work. Each path's session fails its commands at once when its connection
// is lost (Config.ReplacementTimeout applies to the whole LUN: a command
// waits that long for any path) and Config.Portals is ignored.
func OpenMultipath(ctx context.Context, target string, portals []string, lun uint64, cfg Config, sel PathSelector) (*MultipathLUN, error) {
	if len(portals) == 0 {
		return nil, errors.New("multipath: no portal given")
	}
	full := cfg.withDefaults()
	m := &MultipathLUN{sel: sel, wait: max(full.ReplacementTimeout, 0)}
	pathCfg := cfg
	pathCfg.Portals, pathCfg.DiscoverPortals = nil, false
	pathCfg.ReplacementTimeout = -1
	var firstErr error
	for _, portal := range portals {
		portal = withDefaultPort(portal)
		s, err := Login(ctx, portal, target, pathCfg)
		if err == nil {
			s.alua.failFast.Store(true) // ALUA NOT READY: the LUN tries another path
			var l *LUN
			if l, err = s.OpenLUN(ctx, lun); err == nil {
				if len(m.paths) > 0 && !sameIdentity(m.paths[0].l, l) {
					err = fmt.Errorf("%w: %s LUN %d at %s is not the LU at %s", ErrDeviceChanged, target, lun, portal, m.paths[0].portal)
				} else {
					m.paths = append(m.paths, &mpPath{portal: portal, s: s, l: l})
					continue
				}
			}
			_ = s.Close(context.WithoutCancel(ctx))
		}
		full.Logger.Warn("multipath: path left out", "path", portal, "err", err)
		if firstErr == nil {
			firstErr = err
		}
	}
	if len(m.paths) == 0 {
		return nil, firstErr
	}
	for _, p := range m.paths {
		p.s.setALUAShare(m.shareALUA)
	}
	m.sizeNow.Store(m.paths[0].l.Size())
	m.blockSize = m.paths[0].l.BlockSize()
	return m, nil
}

// shareALUA hands every group's state, as one path's session read it, to
// the other paths: a path without commands sees no UNIT ATTENTION 2A/06,
// and its group's state changes with the others'.
func (m *MultipathLUN) shareALUA(groups []scsi.TargetPortGroup) {
	for _, p := range m.paths {
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
func (m *MultipathLUN) ReadOnly() bool { return m.paths[0].l.ReadOnly() }

// Paths returns each path with its state and counters.
func (m *MultipathLUN) Paths() []PathStatus {
	out := make([]PathStatus, len(m.paths))
	for i, p := range m.paths {
		out[i] = PathStatus{Portal: p.portal, State: PathStandby, Logins: p.s.Reconnects() + 1, Commands: p.s.Stats().Commands}
		switch p.s.State() {
		case StateLoggedIn:
			out[i].State = PathActive
		default:
			out[i].State = PathFailed
		}
		if sp := p.s.Paths(); len(sp) > 0 {
			out[i].ALUA, out[i].TPG = sp[0].ALUA, sp[0].TPG
		}
	}
	return out
}

// Sessions returns the session of each path, in the order of Paths.
func (m *MultipathLUN) Sessions() []*Session {
	out := make([]*Session, len(m.paths))
	for i, p := range m.paths {
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
	return m.do(ctx, func(l *LUN) (int, error) { return l.WriteAtContext(ctx, p, off) })
}

// SyncContext makes what was written durable. SYNCHRONIZE CACHE acts on the
// LU, whichever path it comes down, so one path suffices.
func (m *MultipathLUN) SyncContext(ctx context.Context) error {
	_, err := m.do(ctx, func(l *LUN) (int, error) {
		// A LUN only syncs after writes it sent itself: force it.
		l.wrote()
		return 0, l.SyncContext(ctx)
	})
	return err
}

// Close logs out of every path.
func (m *MultipathLUN) Close() error {
	var err error
	m.closeOnce.Do(func() {
		for _, p := range m.paths {
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
		if !pathFailure(err) || failures > 4*len(m.paths) {
			return n, err
		}
		lastErr = err
	}
}

// pathFailure reports an error that says nothing of the command, only that
// its path failed: worth sending the command down another path.
func pathFailure(err error) bool {
	var ce *ConnectionError
	var ue *SessionUnavailableError
	return errors.As(err, &ce) || errors.As(err, &ue)
}

// pick returns a logged-in path by the selector, nil if none is. With ALUA
// it picks among the logged-in paths of the best state only (ALUAState.rank:
// active/optimized if any, else active/non-optimized, standby only when no
// active path is left); without, all paths rank the same.
func (m *MultipathLUN) pick() *mpPath {
	var best *mpPath
	var bestScore int64
	bestRank := 0
	n := uint64(len(m.paths))
	// Every selector starts at a rotating path, so that ties (idle paths,
	// equal queues) are spread instead of always going to the first.
	start := m.next.Add(1)
	for i := range n {
		p := m.paths[(start+i)%n]
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
