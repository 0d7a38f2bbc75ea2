package initiator

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iscsifs/iscsifs/initiator/scsi"
)

// Asymmetric logical unit access (ALUA, SPC-4 5.16). A logical unit whose
// INQUIRY data has TPGS != 0 puts its target ports in target port groups,
// each in an access state: active/optimized ports serve it best,
// active/non-optimized ones more slowly, and standby, unavailable, offline
// or transitioning ports refuse I/O with NOT READY 04/0B, 04/0C or 04/0A.
// A session learns the state of its path through the path itself: VPD 0x83
// names the port's group and REPORT TARGET PORT GROUPS gives every group's
// state, so paths whose group is known learn theirs at the same time. It
// does so when a LUN is opened, after each login of recovery, on UNIT
// ATTENTION 2A/06 and when a command fails with one of those NOT READY
// codes (which also set the path's state at once). Path choice follows the
// states (see ALUAState.rank); targets without ALUA (tgt, istgt) leave
// every path ALUAUnknown, and all paths stay equal.

// ALUAState is the asymmetric access state of a path's target port group.
type ALUAState int

const (
	// ALUAUnknown: the target has no ALUA, or the state was not learned.
	ALUAUnknown ALUAState = iota
	ALUAActiveOptimized
	ALUAActiveNonOptimized
	ALUAStandby
	ALUAUnavailable
	ALUAOffline
	ALUATransitioning
	// ALUALBADependent: the port serves some blocks and not others.
	ALUALBADependent
)

var aluaStateNames = []string{"unknown", "active-optimized", "active-non-optimized", "standby", "unavailable", "offline", "transitioning", "lba-dependent"}

func (st ALUAState) String() string { return enumName(st, aluaStateNames, "ALUAState") }

// MarshalText writes the state as its String (JSON status files).
func (st ALUAState) MarshalText() ([]byte, error) { return []byte(st.String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (st *ALUAState) UnmarshalText(b []byte) error {
	return parseEnum(st, b, aluaStateNames, "ALUA state")
}

// rank orders paths by state, lower first: active/optimized, then
// active/non-optimized, then unknown (no ALUA: every path of a target
// without it ranks the same) and LBA-dependent, then standby and
// transitioning (no I/O now, maybe soon), and unavailable and offline last.
func (st ALUAState) rank() int {
	switch st {
	case ALUAActiveOptimized:
		return 0
	case ALUAActiveNonOptimized:
		return 1
	case ALUAStandby, ALUATransitioning:
		return 3
	case ALUAUnavailable, ALUAOffline:
		return 4
	}
	return 2
}

// idle reports a state in which the port refuses I/O until the target
// changes it: a session moves off such a path when another may do better.
// Transitioning is not idle: the state is about to change, so commands
// wait (NOT READY 04/0A is retried).
func (st ALUAState) idle() bool {
	return st == ALUAStandby || st == ALUAUnavailable || st == ALUAOffline
}

// aluaFromAccess maps an ASYMMETRIC ACCESS STATE to an ALUAState.
func aluaFromAccess(state uint8) ALUAState {
	switch state {
	case scsi.AccessActiveOptimized:
		return ALUAActiveOptimized
	case scsi.AccessActiveNonOptimized:
		return ALUAActiveNonOptimized
	case scsi.AccessStandby:
		return ALUAStandby
	case scsi.AccessUnavailable:
		return ALUAUnavailable
	case scsi.AccessLBADependent:
		return ALUALBADependent
	case scsi.AccessOffline:
		return ALUAOffline
	case scsi.AccessTransitioning:
		return ALUATransitioning
	}
	return ALUAUnknown
}

// aluaNotReady returns the state a NOT READY 04/0A (transitioning), 04/0B
// (standby) or 04/0C (unavailable) in err names, ALUAUnknown for any other
// error. Those say "this port, not now": another path or a later retry
// may work.
func aluaNotReady(err error) ALUAState {
	var serr *scsi.StatusError
	if !errors.As(err, &serr) || serr.Sense == nil || serr.Sense.Key != scsi.SenseNotReady || serr.Sense.ASC != 0x04 {
		return ALUAUnknown
	}
	switch serr.Sense.ASCQ {
	case 0x0a:
		return ALUATransitioning
	case 0x0b:
		return ALUAStandby
	case 0x0c:
		return ALUAUnavailable
	}
	return ALUAUnknown
}

// sessionALUA is a session's ALUA bookkeeping (Session.alua).
type sessionALUA struct {
	cur      atomic.Int32 // ALUAState of the path in use (MultipathLUN.pick reads it per command)
	failFast atomic.Bool  // a path of a MultipathLUN: ALUA NOT READY fails at once, the LUN tries another path

	mu      sync.Mutex
	running bool                         // a refresh goroutine runs
	again   bool                         // ... and must run once more when done
	share   func([]scsi.TargetPortGroup) // MultipathLUN: hands every group's state to its other paths
}

// currentALUA is the ALUA state of the path in use.
func (s *Session) currentALUA() ALUAState { return ALUAState(s.alua.cur.Load()) }

// setPathALUALocked records p's state (s.mu held).
func (s *Session) setPathALUALocked(p *sessionPath, st ALUAState) {
	if p.alua != st {
		s.logger().Info("path ALUA state", "path", p.portal, "from", p.alua, "to", st)
		p.alua = st
	}
	if p.portal == s.portal {
		s.alua.cur.Store(int32(st))
	}
}

// noteALUA records the state a NOT READY answer through portal named, and
// re-reads every group's state in the background, unless cdb is one of the
// refresh's own commands (INQUIRY, REPORT TARGET PORT GROUPS): a port that
// refuses those must not keep the refresh running.
func (s *Session) noteALUA(portal string, st ALUAState, cdb []byte) {
	s.mu.Lock()
	for _, p := range s.paths {
		if p.portal == portal {
			s.setPathALUALocked(p, st)
		}
	}
	s.mu.Unlock()
	if op := cdb[0]; op != scsi.OpInquiry && op != scsi.OpMaintenanceIn {
		s.aluaChanged()
	}
}

// aluaLUN is the opened LUN whose ALUA states the session follows: the
// lowest-numbered one with TPGS != 0; nil when none has ALUA.
func (s *Session) aluaLUN() *LUN {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best *LUN
	for _, l := range s.luns {
		if l.Inquiry.TPGS != scsi.TPGSNone && (best == nil || l.lun < best.lun) {
			best = l
		}
	}
	return best
}

// aluaChanged re-reads the ALUA states in the background. Calls while a
// refresh runs make it run once more, not once each.
func (s *Session) aluaChanged() {
	if s.aluaLUN() == nil {
		return // no LUN with ALUA (tgt, istgt): nothing to learn
	}
	a := &s.alua
	a.mu.Lock()
	if a.running {
		a.again = true
		a.mu.Unlock()
		return
	}
	a.running = true
	a.mu.Unlock()
	started := s.goroutine(func(ctx context.Context) {
		for {
			s.learnALUA(ctx)
			a.mu.Lock()
			if !a.again || ctx.Err() != nil {
				a.running = false
				a.mu.Unlock()
				return
			}
			a.again = false
			a.mu.Unlock()
		}
	})
	if !started {
		a.mu.Lock()
		a.running = false
		a.mu.Unlock()
	}
}

// learnALUA reads, through the connection in use, which target port group
// its path's port belongs to (VPD 0x83) and every group's state (REPORT
// TARGET PORT GROUPS), and records the state of each path whose group is
// known. A failure leaves the states as they were. Then it moves the
// session off an idle path (leaveIdlePath).
func (s *Session) learnALUA(ctx context.Context) {
	l, c := s.aluaLUN(), s.current()
	if l == nil || c == nil || c.deadErr() != nil {
		return
	}
	// On c itself, so that what is learned belongs to c's path even when
	// a failover comes in between.
	exec := func(ctx context.Context, cmd *Command) (*Response, error) {
		return c.execSCSI(ctx, cmd, s.cfg.CommandTimeout)
	}
	var port scsi.TargetPort
	if page, err := s.vpdWith(ctx, exec, l.lun, scsi.VPDDeviceIdentification); err == nil {
		if ds, err := scsi.ParseDeviceIdentification(page); err == nil {
			port = scsi.TargetPortIdentity(ds)
		}
	}
	groups, err := s.reportTPGs(ctx, exec, l.lun)
	if err != nil {
		s.logger().Debug("REPORT TARGET PORT GROUPS failed; ALUA states unchanged", "path", c.portal, "err", err)
		return
	}
	if !port.HasGroup && port.HasRelativePort {
		// No group designator: the group that lists the port.
		for _, g := range groups {
			if slices.Contains(g.Ports, port.RelativePort) {
				port.Group, port.HasGroup = g.ID, true
			}
		}
	}
	if port.HasGroup {
		s.mu.Lock()
		for _, p := range s.paths {
			if p.portal == c.portal {
				p.tpg, p.hasTPG = int(port.Group), true
			}
		}
		s.mu.Unlock()
	}
	s.applyGroups(groups)
	s.alua.mu.Lock()
	share := s.alua.share
	s.alua.mu.Unlock()
	if share != nil {
		share(groups)
	}
	s.leaveIdlePath(c)
}

// reportTPGs runs REPORT TARGET PORT GROUPS, again with the full length
// when the answer was cut.
func (s *Session) reportTPGs(ctx context.Context, exec func(context.Context, *Command) (*Response, error), lun uint64) ([]scsi.TargetPortGroup, error) {
	alloc := int64(1024)
	for try := 0; ; try++ {
		buf := make([]byte, alloc)
		n, err := s.do(ctx, exec, lun, scsi.ReportTargetPortGroups(uint32(alloc)), buf, nil)
		if err != nil {
			return nil, err
		}
		buf = buf[:n]
		if full := scsi.RTPGLength(buf); full > alloc && try == 0 {
			alloc = min(full, 1<<16)
			continue
		}
		return scsi.ParseReportTargetPortGroups(buf)
	}
}

// applyGroups sets the state of every path whose target port group is
// known and listed in groups.
func (s *Session) applyGroups(groups []scsi.TargetPortGroup) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.paths {
		if !p.hasTPG {
			continue
		}
		for _, g := range groups {
			if int(g.ID) == p.tpg {
				s.setPathALUALocked(p, aluaFromAccess(g.State))
			}
		}
	}
}

// errALUAMove ends a connection whose path does not serve I/O in its ALUA
// state, so that recovery logs in through a better one.
var errALUAMove = errors.New("the path's port does not serve I/O in its ALUA state: moving to another path")

// leaveIdlePath moves a session with several paths off c's path when its
// port is idle (standby, unavailable, offline) and another path may do
// better: a better state, or an unknown one (learned once logged in there;
// a path whose login failed is not tried until it answers again). The
// connection is dropped: recovery logs in through the paths in ALUA order
// and re-issues the commands, which the idle port refused anyway. A path
// that is merely active/non-optimized is kept, as there is no failback.
func (s *Session) leaveIdlePath(c *conn) {
	s.mu.Lock()
	var cur *sessionPath
	for _, p := range s.paths {
		if p.portal == c.portal {
			cur = p
		}
	}
	to := ""
	var st ALUAState
	if cur != nil && s.conn == c && cur.alua.idle() {
		st = cur.alua
		for _, p := range s.paths {
			if p != cur && p.state == PathStandby && p.alua.rank() < st.rank() {
				to = p.portal
				break
			}
		}
	}
	s.mu.Unlock()
	if to != "" {
		s.logger().Info("path does not serve I/O in its ALUA state; moving to another path", "path", c.portal, "alua", st, "to", to)
		c.fail(errALUAMove)
	}
}

// aluaCanMove reports whether a command refused by an idle port of this
// session is worth retrying: the session has other paths and follows ALUA
// states, so the refresh the refusal started may move it to a better path.
func (s *Session) aluaCanMove() bool {
	return !s.alua.failFast.Load() && s.pathCount() > 1 && s.aluaLUN() != nil
}

// doALUA is Session.Do: on a session that may move (aluaCanMove), a
// command its port refused with an ALUA NOT READY is retried with back-off
// (on the path the session moves to, or the same one once its state
// changes), up to maxNotReadyWait.
func (s *Session) doALUA(ctx context.Context, lun uint64, cdb, read, write []byte) (int, error) {
	var start time.Time // of the first refusal: no clock read on the usual path
	backoff := 10 * time.Millisecond
	for {
		n, err := s.do(ctx, s.Execute, lun, cdb, read, write)
		if err == nil || aluaNotReady(err) == ALUAUnknown || !s.aluaCanMove() {
			return n, err
		}
		if start.IsZero() {
			start = time.Now()
		} else if time.Since(start) > maxNotReadyWait {
			return n, err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		backoff = min(2*backoff, time.Second)
	}
}

// setALUAShare makes the session hand every REPORT TARGET PORT GROUPS
// answer to share (MultipathLUN).
func (s *Session) setALUAShare(share func([]scsi.TargetPortGroup)) {
	s.alua.mu.Lock()
	s.alua.share = share
	s.alua.mu.Unlock()
}
