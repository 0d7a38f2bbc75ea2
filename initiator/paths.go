package initiator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"
)

// A session reaches its target through one of its paths: the portal it was
// opened with, then Config.Portals, then (with Config.DiscoverPortals) the
// other portals the target lists for itself, its own portal group first. When the connection fails, recovery
// logs in again through the path it used, then through the others in their
// order (failover); a path that leads to another logical unit is never used
// again. There is no failback: the session stays on a working path, and a
// path that came back is used at the next failure. With a target that
// reports ALUA (alua.go), logins try active/optimized paths first, and a
// session whose path's port turns standby or unavailable moves to a path
// that may serve I/O.

// PathState is what a session knows of one of its paths.
type PathState int

const (
	// PathActive: the session's connection runs over it.
	PathActive PathState = iota
	// PathStandby: not in use; tried when the active path fails.
	PathStandby
	// PathFailed: the last login through it failed, and it has not
	// answered since (a session with several paths checks every 5 s).
	PathFailed
	// PathWrongLU: it leads to another logical unit (VPD 0x83 or 0x80
	// differ): it is never used.
	PathWrongLU
)

var pathStateNames = []string{"active", "standby", "failed", "wrong-lu"}

func (st PathState) String() string { return enumName(st, pathStateNames, "PathState") }

// MarshalText writes the state as its String (JSON status files).
func (st PathState) MarshalText() ([]byte, error) { return []byte(st.String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (st *PathState) UnmarshalText(b []byte) error {
	return parseEnum(st, b, pathStateNames, "path state")
}

// PathStatus is one path of a session (Session.Paths).
type PathStatus struct {
	Portal    string    `json:"portal"`
	State     PathState `json:"state"`
	Logins    int       `json:"logins"`   // logins through it that succeeded
	Failures  int       `json:"failures"` // logins through it that failed
	LastError string    `json:"last_error,omitempty"`
	// Commands is how many SCSI commands went down the path (paths of a
	// MultipathLUN; a failover session counts per session, in Stats).
	Commands uint64 `json:"commands,omitempty"`
	// ALUA is the asymmetric access state of the path's target port group
	// (alua.go); ALUAUnknown, left out of JSON, for targets without ALUA.
	ALUA ALUAState `json:"alua,omitempty"`
	// TPG is the path's target port group; meaningful only when ALUA is
	// known (0 is a valid group, LIO's default one).
	TPG int `json:"tpg,omitempty"`
}

type sessionPath struct {
	portal   string
	state    PathState
	logins   int
	failures int
	lastErr  error
	alua     ALUAState // learned through the path, or from another with hasTPG
	tpg      int       // target port group, when hasTPG
	hasTPG   bool
}

// newPaths is the path list of a session opened at portal: portal first,
// then the others, without duplicates. A portal without a port gets 3260.
func newPaths(portal string, others []string) []*sessionPath {
	var paths []*sessionPath
	seen := map[string]bool{}
	for i, p := range append([]string{portal}, others...) {
		if i > 0 {
			p = withDefaultPort(p)
		}
		if p == "" || seen[p] {
			continue
		}
		seen[p] = true
		paths = append(paths, &sessionPath{portal: p, state: PathStandby})
	}
	return paths
}

// withDefaultPort adds the iSCSI port to a portal given without one.
func withDefaultPort(p string) string {
	if _, _, err := net.SplitHostPort(p); err == nil {
		return p
	}
	return net.JoinHostPort(p, strconv.Itoa(DefaultPort))
}

// pathCount is the number of paths.
func (s *Session) pathCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.paths)
}

// Paths returns the session's paths, the active one marked.
func (s *Session) Paths() []PathStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PathStatus, len(s.paths))
	for i, p := range s.paths {
		out[i] = PathStatus{Portal: p.portal, State: p.state, Logins: p.logins, Failures: p.failures, ALUA: p.alua}
		if p.lastErr != nil {
			out[i].LastError = p.lastErr.Error()
		}
		if p.hasTPG {
			out[i].TPG = p.tpg
		}
	}
	return out
}

// pathOrder is the order in which a login tries the paths: the one in use
// (or last used) first, then the others in their configured order; paths to
// another logical unit are left out.
func (s *Session) pathOrder() []*sessionPath {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first, rest []*sessionPath
	for _, p := range s.paths {
		switch {
		case p.state == PathWrongLU:
		case p.portal == s.portal:
			first = append(first, p)
		default:
			rest = append(rest, p)
		}
	}
	// ALUA: active/optimized paths first, then active/non-optimized,
	// unknown, standby; unavailable and offline ones last. Without ALUA
	// every path ranks the same and the order stays.
	order := append(first, rest...)
	slices.SortStableFunc(order, func(a, b *sessionPath) int { return a.alua.rank() - b.alua.rank() })
	return order
}

// connectAnyPath logs in through the first path that works, in pathOrder.
// With check (recovery), the new connection must reach the logical units
// the session has open (revalidate); a path that leads elsewhere is marked
// PathWrongLU with a warning and the next one is tried. The error is the
// first path's, or ErrDeviceChanged when no path to the same units is left.
func (s *Session) connectAnyPath(ctx context.Context, check bool) (*conn, *sessionPath, error) {
	var firstErr, wrongLU error
	for _, p := range s.pathOrder() {
		c, err := s.connect(ctx, p.portal)
		if err == nil && check {
			if err = s.revalidate(ctx, c); err != nil {
				c.close(err)
			}
		}
		s.mu.Lock()
		if err == nil {
			p.logins++
			p.lastErr = nil
		} else {
			p.failures++
			p.lastErr = err
			p.state = PathFailed
			if errors.Is(err, ErrDeviceChanged) {
				p.state = PathWrongLU
			}
		}
		s.mu.Unlock()
		if err == nil {
			return c, p, nil
		}
		if errors.Is(err, ErrDeviceChanged) {
			s.logger().Warn("path leads to another logical unit; never using it", "path", p.portal, "err", err)
			wrongLU = err
			continue
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if firstErr == nil {
		firstErr = wrongLU
	}
	if firstErr == nil {
		firstErr = fmt.Errorf("%w: no path to %s leads to the same logical units", ErrDeviceChanged, s.target)
	}
	return nil, nil, firstErr
}

// usePathLocked makes p the active path (s.mu held).
func (s *Session) usePathLocked(p *sessionPath) {
	for _, q := range s.paths {
		if q.state == PathActive {
			q.state = PathStandby
		}
	}
	p.state = PathActive
	if p.portal != s.portal {
		s.logger().Warn("failed over to another path", "from", s.portal, "to", p.portal)
		s.portal = p.portal
	}
	s.logPortal.Store(&p.portal)
	s.alua.cur.Store(int32(p.alua))
}

// discoverPaths learns the target's portals at login: from the portal in
// use before Login returns, then from every other known portal in the
// background (one that does not answer must not hold up the login).
func (s *Session) discoverPaths(ctx context.Context) {
	s.mu.Lock()
	var others []string
	for _, p := range s.paths {
		if p.portal != s.portal {
			others = append(others, p.portal)
		}
	}
	s.mu.Unlock()
	s.learnPaths(ctx, []string{s.Portal()})
	if len(others) > 0 {
		s.goroutine(func(ctx context.Context) { s.learnPaths(ctx, others) })
	}
}

// learnPaths asks the target for its portals through each of known
// (SendTargets in a discovery session each, at once: tgt resets a Normal
// session that asks, and lists only the address asked, while istgt lists
// its whole portal group) and adds those the session does not have yet as
// paths, its own portal group first. A portal that does not answer, or a
// target that refuses discovery, changes nothing.
func (s *Session) learnPaths(ctx context.Context, known []string) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LoginTimeout)
	defer cancel()
	cfg := s.cfg
	cfg.hooks = nil
	answers := make([][]Portal, len(known))
	var wg sync.WaitGroup
	for i, portal := range known {
		wg.Go(func() {
			targets, err := Discover(ctx, portal, cfg)
			if err != nil {
				s.logger().Debug("discovery of the target's portals failed", "path", portal, "err", err)
				return
			}
			for _, t := range targets {
				if t.Name == s.target {
					answers[i] = append(answers[i], t.Portals...)
				}
			}
		})
	}
	wg.Wait()
	learned := slices.Concat(answers...)
	s.mu.Lock()
	defer s.mu.Unlock()
	own := s.tpgt
	slices.SortStableFunc(learned, func(a, b Portal) int {
		return boolInt(a.Group != own) - boolInt(b.Group != own)
	})
	for _, p := range learned {
		addr := withDefaultPort(p.Address)
		if slices.ContainsFunc(s.paths, func(q *sessionPath) bool { return q.portal == addr }) {
			continue
		}
		s.paths = append(s.paths, &sessionPath{portal: addr, state: PathStandby})
		s.logger().Info("target lists another portal; using it for failover", "path", addr, "portal_group", p.Group)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// probeEvery calls probe every pathProbeInterval until ctx ends or probe
// returns false (nothing left to probe).
func probeEvery(ctx context.Context, probe func() bool) {
	t := time.NewTicker(pathProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		if !probe() {
			return
		}
	}
}

// pathProbeInterval is how often a session with several paths checks that
// its failed paths answer again (a variable for tests).
var pathProbeInterval = 5 * time.Second

// probePaths runs for the life of a session with more than one path: every
// pathProbeInterval it opens a TCP connection to each failed path and, when
// that works, marks the path standby again (usable at the next failover).
// It does not log in: a login would reinstate the session's ISID there.
func (s *Session) probePaths(ctx context.Context) {
	probeEvery(ctx, func() bool {
		s.mu.Lock()
		failed := slices.DeleteFunc(slices.Clone(s.paths), func(p *sessionPath) bool { return p.state != PathFailed })
		s.mu.Unlock()
		for _, p := range failed {
			dctx, cancel := context.WithTimeout(ctx, s.cfg.LoginTimeout)
			nc, err := s.cfg.Dial(dctx, "tcp", p.portal)
			cancel()
			if err != nil {
				continue
			}
			_ = nc.Close()
			s.mu.Lock()
			if p.state == PathFailed {
				p.state = PathStandby
				s.logger().Info("path answers again; standby for failover", "path", p.portal)
			}
			s.mu.Unlock()
		}
		return true
	})
}
