package initiator

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/iscsifs/iscsifs/initiator/pdu"
	"github.com/iscsifs/iscsifs/initiator/scsi"
)

// Session recovery at ErrorRecoveryLevel 0 (RFC 7143 §7.1.4, §6.3.5): when
// the connection fails, log in again with the same ISID and TSIH 0 (the
// target then drops the old session and its tasks), check that the LUNs are
// the same devices, and let waiting commands re-issue themselves. Commands
// wait up to the replacement timeout; after it they fail with a
// *SessionUnavailableError while reconnection goes on in the background.

// Reconnect back-off: the first attempt at once, then growing to a cap.
const (
	reconnectFirstDelay = 250 * time.Millisecond
	reconnectMaxDelay   = 5 * time.Second
)

// SessionUnavailableError is returned for I/O while the session has been
// without a connection for longer than the replacement timeout.
type SessionUnavailableError struct {
	Target string
	Portal string
	Since  time.Time
	Cause  error // why the connection was lost
	Last   error // the last reconnect attempt's error
}

func (e *SessionUnavailableError) Error() string {
	msg := fmt.Sprintf("session to %s at %s unavailable for %s: %v", e.Target, e.Portal, time.Since(e.Since).Round(time.Second), e.Cause)
	if e.Last != nil {
		msg += fmt.Sprintf(" (reconnect: %v)", e.Last)
	}
	return msg
}

func (e *SessionUnavailableError) Unwrap() error { return e.Cause }

// ErrDeviceChanged means that after a reconnect a LUN reports another
// identity (serial number or designator): I/O to it would go to another disk.
var ErrDeviceChanged = errors.New("LUN identity changed after reconnect")

// install makes c the session's connection (its failure starts recovery:
// see connectOnce).
func (s *Session) install(c *conn) {
	s.mu.Lock()
	s.installLocked(c)
	s.mu.Unlock()
}

func (s *Session) installLocked(c *conn) {
	s.conn = c
	s.state = StateLoggedIn
	s.unavailable = nil
	s.broadcastLocked()
}

// installRecovered installs the connection recovery opened, unless the
// session was closed meanwhile: the check and the install are one step, so
// a Close cannot come in between and miss the new connection.
func (s *Session) installRecovered(c *conn, p *sessionPath) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == StateClosed {
		return false
	}
	s.usePathLocked(p)
	s.reconnects++
	s.installLocked(c)
	return true
}

// broadcastLocked wakes everyone waiting in connFor; s.mu must be held.
func (s *Session) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Reconnects returns how many times the session was re-established.
func (s *Session) Reconnects() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reconnects
}

// SessionState is where a session is in its life.
type SessionState int

const (
	// StateLoggedIn: a connection is in Full Feature Phase.
	StateLoggedIn SessionState = iota
	// StateRecovering: the connection failed; commands wait while a new
	// one logs in (up to the replacement timeout).
	StateRecovering
	// StateUnavailable: the replacement timeout passed without a
	// connection; commands fail until recovery succeeds.
	StateUnavailable
	// StateClosed: Close was called.
	StateClosed
)

var sessionStateNames = []string{"logged-in", "recovering", "unavailable", "closed"}

// String is the state's name in status output: "logged-in", "recovering",
// "unavailable" or "closed".
func (st SessionState) String() string { return enumName(st, sessionStateNames, "SessionState") }

// MarshalText writes the state as its String (JSON status files).
func (st SessionState) MarshalText() ([]byte, error) { return []byte(st.String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (st *SessionState) UnmarshalText(b []byte) error {
	return parseEnum(st, b, sessionStateNames, "session state")
}

// enumName and parseEnum are the text forms of the state enums (status
// files, logs): names[v], or TYPE(v) for a value without a name.
func enumName[T ~int](v T, names []string, typ string) string {
	if v >= 0 && int(v) < len(names) {
		return names[v]
	}
	return typ + "(" + strconv.Itoa(int(v)) + ")"
}

func parseEnum[T ~int](v *T, b []byte, names []string, what string) error {
	i := slices.Index(names, string(b))
	if i < 0 {
		return fmt.Errorf("unknown %s %q", what, b)
	}
	*v = T(i)
	return nil
}

// State returns where the session is in its life.
func (s *Session) State() SessionState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// connFor returns a live connection, waiting while the session recovers
// and while the connection drains for a logout the target asked for.
func (s *Session) connFor(ctx context.Context) (*conn, error) {
	for {
		s.mu.Lock()
		switch s.state {
		case StateClosed:
			s.mu.Unlock()
			return nil, ErrSessionClosed
		case StateUnavailable:
			err := s.unavailable
			s.mu.Unlock()
			return nil, err
		}
		c := s.conn
		if c != nil && c.usable() {
			s.mu.Unlock()
			return c, nil
		}
		if s.discovery {
			s.mu.Unlock()
			if c == nil {
				return nil, ErrSessionClosed
			}
			if err := c.deadErr(); err != nil {
				return nil, err
			}
			return nil, errLogoutPending
		}
		wait := s.changed
		s.mu.Unlock()
		if c != nil {
			if err := c.deadErr(); err != nil {
				s.connDead(c, err) // idempotent: starts recovery if needed
			}
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// connDead starts recovery for c unless it already runs or c was replaced.
// It does not block: the connection calls it when it fails.
func (s *Session) connDead(c *conn, cause error) {
	s.mu.Lock()
	// Only a failure of the connection in use starts recovery, once.
	if s.state != StateLoggedIn || s.conn != c {
		s.mu.Unlock()
		return
	}
	s.state = StateRecovering
	s.mu.Unlock()
	var planned *asyncDropError
	if errors.As(cause, &planned) {
		s.logger().Info("connection ended on an asynchronous message from the target; logging in again", "err", cause)
	} else {
		s.logger().Warn("connection lost; reconnecting", "err", cause)
	}
	// Refused only when Close came in between: then nothing is to recover.
	s.goroutine(func(ctx context.Context) { s.recoverLoop(ctx, c, cause) })
}

// recoverLoop logs in again until it succeeds, the device changed, or ctx
// (the session's) ends with Close.
func (s *Session) recoverLoop(ctx context.Context, dead *conn, cause error) {
	dead.close(cause) // wait for its goroutines
	since := time.Now()
	// The first attempt at once, unless the target announced the drop with
	// a Time2Wait (async events 2 and 3); then the back-off.
	delay, backoff := time.Duration(0), time.Duration(0)
	var planned *asyncDropError
	if errors.As(cause, &planned) && planned.time2Wait > 0 {
		delay = time.Until(planned.at.Add(planned.time2Wait))
		s.logger().Info("waiting Time2Wait before logging in again, as the target asked", "time2wait", planned.time2Wait)
	}
	// The replacement timeout runs in a goroutine of its own, so that it
	// also expires while a login attempt hangs on a silent portal, not only
	// between attempts.
	var lastMu sync.Mutex
	var last error
	if s.cfg.ReplacementTimeout > 0 {
		ended := make(chan struct{})
		defer close(ended)
		s.goroutine(func(ctx context.Context) {
			t := time.NewTimer(s.cfg.ReplacementTimeout)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ended:
				return
			case <-ctx.Done():
				return
			}
			lastMu.Lock()
			l := last
			lastMu.Unlock()
			s.markUnavailable(since, cause, l)
		})
	} else {
		s.markUnavailable(since, cause, nil)
	}
	newISID := false
	for attempt := 1; ; attempt++ {
		if delay > 0 {
			timer := time.NewTimer(delay)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return
			}
		}
		backoff = min(max(backoff*2, reconnectFirstDelay), reconnectMaxDelay)
		delay = backoff
		if ctx.Err() != nil {
			return
		}
		c, p, err := s.connectAnyPath(ctx, true)
		if err == nil {
			if h := s.cfg.hooks; h != nil && h.recovered != nil {
				h.recovered()
			}
			if !s.installRecovered(c, p) {
				c.close(ErrSessionClosed)
				return
			}
			s.logger().Info("session re-established", "attempt", attempt, "after", time.Since(since).Round(time.Millisecond))
			s.recheckLUNs()
			return
		}
		lastMu.Lock()
		last = err
		lastMu.Unlock()
		s.logger().Warn("reconnect failed", "err", err, "attempt", attempt)
		if refusesReinstatement(err) && !newISID {
			// The target will not reinstate this session: start a new one.
			newISID = true
			s.freshISID()
			s.logger().Info("target refused to reinstate the session; logging in with a new ISID")
			delay, backoff = 0, 0
		}
		if errors.Is(err, ErrDeviceChanged) {
			// Never write to another disk: the session stays unavailable.
			s.markUnavailable(since, err, nil)
			return
		}
		s.mu.Lock()
		if s.state == StateUnavailable {
			s.unavailable = &SessionUnavailableError{Target: s.target, Portal: s.portal, Since: since, Cause: cause, Last: last}
		}
		s.mu.Unlock()
	}
}

func (s *Session) markUnavailable(since time.Time, cause, last error) {
	s.mu.Lock()
	if s.state != StateRecovering && s.state != StateUnavailable {
		// The timer fired as the recovery ended: nothing is unavailable.
		s.mu.Unlock()
		return
	}
	s.state = StateUnavailable
	s.unavailable = &SessionUnavailableError{Target: s.target, Portal: s.portal, Since: since, Cause: cause, Last: last}
	s.broadcastLocked()
	s.mu.Unlock()
	s.logger().Error("session unavailable: replacement timeout passed; I/O fails until the target is back", "err", cause)
}

// revalidate runs on a fresh connection before it is installed: it absorbs
// the UNIT ATTENTIONs every new I_T nexus gets and checks each opened LUN
// still has its identity (RFC 7143 §7.1.4; SPC-4 29/xx).
func (s *Session) revalidate(ctx context.Context, c *conn) error {
	s.mu.Lock()
	luns := make(map[uint64]*LUN, len(s.luns))
	for n, l := range s.luns {
		luns[n] = l
	}
	s.mu.Unlock()
	exec := func(ctx context.Context, cmd *Command) (*Response, error) {
		return c.execSCSI(ctx, cmd, s.cfg.CommandTimeout)
	}
	for n, l := range luns {
		// A port in ALUA standby or unavailable state refuses TEST UNIT
		// READY, yet leads to the LU: a path for when nothing better is left.
		if _, err := s.do(ctx, exec, n, scsi.TestUnitReady(), nil, nil); err != nil && aluaNotReady(err) == ALUAUnknown {
			return err
		}
		if err := s.sameLU(ctx, exec, l); err != nil {
			return err
		}
	}
	return nil
}

// sameLU checks that LUN l still names the logical unit it did when opened:
// the same LU designator (VPD 0x83) if it had one, else the same unit serial
// (VPD 0x80). A reconnect, possibly through another portal, must never lead
// writes to another disk.
func (s *Session) sameLU(ctx context.Context, exec func(context.Context, *Command) (*Response, error), l *LUN) error {
	switch {
	case l.Identifier != "":
		page, err := s.vpdWith(ctx, exec, l.lun, scsi.VPDDeviceIdentification)
		if err != nil {
			return err
		}
		id := ""
		if ds, err := scsi.ParseDeviceIdentification(page); err == nil {
			id = scsi.LUIdentifier(ds)
		}
		if id != l.Identifier {
			return fmt.Errorf("%w: LUN %d designator %q, was %q", ErrDeviceChanged, l.lun, id, l.Identifier)
		}
	case l.Serial != "":
		page, err := s.vpdWith(ctx, exec, l.lun, scsi.VPDUnitSerial)
		if err != nil {
			return err
		}
		serial, err := scsi.ParseUnitSerial(page)
		if err != nil || serial != l.Serial {
			return fmt.Errorf("%w: LUN %d serial %q, was %q", ErrDeviceChanged, l.lun, serial, l.Serial)
		}
	}
	return nil
}

// rememberLUN records an opened LUN for revalidation after a reconnect and
// for capacity changes.
func (s *Session) rememberLUN(l *LUN) {
	s.mu.Lock()
	s.luns[l.lun] = l
	s.mu.Unlock()
}

// asyncSense acts on sense data the target sent in an Asynchronous Message
// as on the same UNIT ATTENTION for a command. It runs in the connection's
// reader and does not block (the refreshes run in their own goroutines).
func (s *Session) asyncSense(lun uint64, b []byte) {
	sense, err := scsi.ParseSense(b)
	if err != nil {
		return
	}
	s.logger().Info("asynchronous event", "lun", lun, "sense", sense.String())
	ua := &scsi.StatusError{Status: scsi.StatusCheckCondition, Sense: &sense}
	if errors.Is(ua, scsi.ErrCapacityChanged) {
		s.capacityChanged(lun)
	}
	if errors.Is(ua, scsi.ErrModeChanged) {
		s.modeChanged(lun)
	}
	if errors.Is(ua, scsi.ErrAccessChanged) {
		s.aluaChanged()
	}
}

// recheckLUNs re-reads the capacity and mode parameters of every opened LUN
// after a reconnect: the power-on or nexus-loss UNIT ATTENTION a new
// connection gets outranks (and so hides) a capacity-changed or
// mode-parameters-changed one, e.g. when the target was restarted with a
// larger backing store or another cache setting.
func (s *Session) recheckLUNs() {
	s.mu.Lock()
	luns := make([]*LUN, 0, len(s.luns))
	for _, l := range s.luns {
		luns = append(luns, l)
	}
	s.mu.Unlock()
	for _, l := range luns {
		s.goroutine(func(ctx context.Context) {
			l.refreshCapacity(ctx)
			l.refreshMode(ctx)
		})
	}
	// The new connection may run through another port: learn its state.
	s.aluaChanged()
}

// capacityChanged re-reads the capacity of an opened LUN in the background
// (it runs commands itself, so not from inside the command that saw the UA).
func (s *Session) capacityChanged(lun uint64) {
	if l := s.openedLUN(lun); l != nil {
		s.goroutine(l.refreshCapacity)
	}
}

// modeChanged re-reads the mode parameters (write protection, write cache)
// of an opened LUN in the background.
func (s *Session) modeChanged(lun uint64) {
	if l := s.openedLUN(lun); l != nil {
		s.goroutine(l.refreshMode)
	}
}

func (s *Session) openedLUN(lun uint64) *LUN {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.luns[lun]
}

// refusesReinstatement reports a login refused for reasons of session
// state (initiator error class, not authentication, authorization or a
// missing target): logging in with the same ISID will keep failing.
func refusesReinstatement(err error) bool {
	var le *LoginError
	if !errors.As(err, &le) || le.Class != pdu.LoginStatusInitiatorError || le.auth {
		return false
	}
	switch le.Detail {
	case 0x06, 0x08, 0x0a, 0x0b: // too many connections, can't include, no such session, invalid during login
		return true
	}
	return false
}

// freshISID gives the session a new random ISID (T=10b).
func (s *Session) freshISID() {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _ = rand.Read(s.isid[1:4])
}
