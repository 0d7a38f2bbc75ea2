package initiator

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iscsifs/iscsifs/initiator/pdu"
	"github.com/iscsifs/iscsifs/initiator/scsi"
)

// DefaultInitiatorName is used when Config.InitiatorName is empty.
const DefaultInitiatorName = "iqn.2026-11.io.iscsifs:initiator"

// Config is what a session needs beyond the portal and target name.
type Config struct {
	InitiatorName  string
	InitiatorAlias string
	Credentials    Credentials
	CHAPAlgorithms []CHAPAlgorithm // preference order; empty = MD5 only
	Negotiation    NegotiationConfig
	QueueDepth     int           // commands in flight per session (default 64)
	LoginTimeout   time.Duration // one login attempt (default 15 s)
	KeepAlive      time.Duration // idle time before a NOP-Out ping (default 5 s; <0 disables)
	KeepAliveWait  time.Duration // wait for the NOP-In (default 10 s)
	// CommandTimeout bounds one SCSI command; on expiry it is aborted and
	// re-issued, a second expiry drops the connection (default 30 s; <0 none).
	CommandTimeout time.Duration
	// ReplacementTimeout is how long commands wait for a lost connection to
	// be re-established before failing (default 120 s, as open-iscsi; <0 =
	// fail at once). Reconnection goes on in the background after it.
	ReplacementTimeout time.Duration
	// BusyPoll is how long the connection's reader keeps polling the socket
	// (yielding to other goroutines in between) before it sleeps, while
	// commands are outstanding (0: never). The reader is the caller waiting
	// for a lone command, so at queue depth 1 the answer is read without
	// any thread waking. It trades CPU for latency: it pays when the
	// process has a core to itself and its goroutines do the work (cp,
	// bench: +30 % IOPS at queue depth 32 and twice the IOPS at depth 1
	// against a target on the same 2 cores), and costs when the CPU is
	// shared with work outside the process (a FUSE mount, where the kernel
	// and the application need it). Waits longer than BusyPoll turn it off
	// until waits are short again.
	BusyPoll time.Duration
	// Logger receives the library's log records; nil discards them, so a
	// program that configures nothing sees no output. Secrets are never
	// logged, at any level.
	Logger *slog.Logger
	// Portals are other portals ("host:port", port 3260 if left out) of
	// the same target: when the connection is lost, recovery logs in
	// through them, in order, if the portal in use does not answer
	// (failover). Each must lead to the same logical units (VPD 0x83, or
	// 0x80); one that does not is never used.
	Portals []string
	// DiscoverPortals adds the portals the target lists for itself
	// (SendTargets in a discovery session at login) to the paths, after
	// Portals.
	DiscoverPortals bool
	// Dial opens the TCP connection (default: net.Dialer with TCP keep-alive).
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	hooks *testHooks // tests only
}

func (c *Config) withDefaults() Config {
	out := *c
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	if out.InitiatorName == "" {
		out.InitiatorName = DefaultInitiatorName
	}
	if len(out.CHAPAlgorithms) == 0 {
		out.CHAPAlgorithms = []CHAPAlgorithm{CHAPMD5}
	}
	if out.QueueDepth <= 0 {
		out.QueueDepth = 64
	}
	if out.LoginTimeout <= 0 {
		out.LoginTimeout = 15 * time.Second
	}
	if out.KeepAlive == 0 {
		out.KeepAlive = 5 * time.Second
	}
	if out.KeepAliveWait <= 0 {
		out.KeepAliveWait = 10 * time.Second
	}
	if out.CommandTimeout == 0 {
		out.CommandTimeout = 30 * time.Second
	}
	if out.ReplacementTimeout == 0 {
		out.ReplacementTimeout = 120 * time.Second
	}
	if out.Dial == nil {
		d := &net.Dialer{KeepAlive: 15 * time.Second}
		out.Dial = d.DialContext
	}
	return out
}

// Session is a logged-in iSCSI session with one connection (MaxConnections=1,
// ErrorRecoveryLevel=0). It is safe for concurrent use: up to QueueDepth
// commands are in flight at once, further ones wait.
type Session struct {
	cfg       Config
	target    string
	discovery bool
	isid      [6]byte
	log       *slog.Logger // with the target; logger adds the portal in use
	logPortal atomic.Pointer[string]
	queue     *queueLimit

	// g starts the session's own goroutines (recovery, LUN refreshes); bg
	// is their context. Close cancels it with stopBg and waits for them.
	g      owner
	bg     context.Context
	stopBg context.CancelFunc

	alua sessionALUA // ALUA path states (alua.go); its own lock

	mu     sync.Mutex
	portal string         // of the connection in use (or last used)
	paths  []*sessionPath // portal first, then Config.Portals
	conn   *conn
	tsih   uint16
	tpgt   int
	alias  string
	// state moves logged-in → recovering (the connection failed) →
	// unavailable (the replacement timeout passed) → logged-in again, and
	// to closed from any of them, for good.
	state   SessionState
	changed chan struct{} // closed and replaced when conn or state change
	// unavailable is what commands fail with in StateUnavailable, until
	// recovery succeeds.
	unavailable *SessionUnavailableError
	reconnects  int
	luns        map[uint64]*LUN // opened LUNs, re-checked after a reconnect
	stats       sessionStats
}

// Login opens a Normal session to target at portal ("host:port").
func Login(ctx context.Context, portal, target string, cfg Config) (*Session, error) {
	if target == "" {
		return nil, errors.New("login: no target name given")
	}
	return open(ctx, portal, target, false, cfg)
}

func open(ctx context.Context, portal, target string, discovery bool, cfg Config) (*Session, error) {
	cfg = cfg.withDefaults()
	s := &Session{
		cfg:       cfg,
		target:    target,
		discovery: discovery,
		portal:    portal,
		log:       cfg.Logger.With("target", target),
		queue:     newQueueLimit(cfg.QueueDepth),
		tpgt:      -1,
		changed:   make(chan struct{}),
		luns:      map[uint64]*LUN{},
		paths:     newPaths(portal, cfg.Portals),
	}
	if discovery {
		s.paths = s.paths[:1]
	}
	s.bg, s.stopBg = context.WithCancel(context.Background())
	// Random-format ISID (T=10b, RFC 7143 §10.1.1), kept for the life of the
	// session so that a reconnect reinstates it.
	if _, err := rand.Read(s.isid[1:4]); err != nil {
		s.stopBg()
		return nil, err
	}
	s.isid[0] = 0x80
	c, p, err := s.connectAnyPath(ctx, false)
	if err != nil {
		s.stopBg()
		return nil, err
	}
	s.mu.Lock()
	s.usePathLocked(p)
	s.mu.Unlock()
	s.install(c)
	if !discovery && cfg.DiscoverPortals {
		s.discoverPaths(ctx)
	}
	if s.pathCount() > 1 {
		s.goroutine(s.probePaths)
	}
	return s, nil
}

// logger is the session's logger with the portal in use now, which
// changes on failover (a logger made once would name the first portal).
func (s *Session) logger() *slog.Logger {
	if p := s.logPortal.Load(); p != nil {
		return s.log.With("portal", *p)
	}
	return s.log
}

// goroutine runs f in a goroutine that Close cancels (through ctx) and
// waits for. Once the session is closed it runs nothing and returns false.
func (s *Session) goroutine(f func(ctx context.Context)) bool {
	return s.g.goroutine(func() { f(s.bg) })
}

// connect dials and logs in, following redirects and falling back to MD5
// CHAP once when a stronger algorithm is refused.
func (s *Session) connect(ctx context.Context, portal string) (*conn, error) {
	algs := s.cfg.CHAPAlgorithms
	start := portal
	redirects := 0
	fellBack := false
	for {
		c, err := s.connectOnce(ctx, portal, algs)
		var rd *redirectError
		var le *LoginError
		switch {
		case err == nil:
			if portal != start {
				s.logger().Info("login redirected", "from", start, "to", portal)
			}
			return c, nil
		case errors.As(err, &rd):
			redirects++
			if redirects > 4 {
				return nil, &LoginError{Target: s.target, Portal: portal, Reason: "too many login redirects"}
			}
			if rd.permanent {
				// The target moved: the path is its new address.
				s.mu.Lock()
				for _, p := range s.paths {
					if p.portal == portal {
						p.portal = rd.address
					}
				}
				if s.portal == portal {
					s.portal = rd.address
				}
				s.mu.Unlock()
			}
			portal = rd.address
		case !fellBack && errors.As(err, &le) && le.Class == pdu.LoginStatusInitiatorError && !slices.Equal(algs, []CHAPAlgorithm{CHAPMD5}) && slices.Contains(algs, CHAPMD5) && s.cfg.Credentials.User != "":
			// Targets that number CHAP_A differently (tgt: 7 = SHA-1) or that
			// reject any list but "5" fail here; MD5 alone is understood by all.
			s.logger().Info("CHAP login failed with the preferred algorithms; retrying with MD5 alone", "err", err)
			algs = []CHAPAlgorithm{CHAPMD5}
			fellBack = true
		default:
			return nil, err
		}
	}
}

func (s *Session) connectOnce(ctx context.Context, portal string, algs []CHAPAlgorithm) (*conn, error) {
	lctx, cancel := context.WithTimeout(ctx, s.cfg.LoginTimeout)
	defer cancel()
	s.logger().Debug("connecting", "to", portal, "discovery", s.discovery)
	nc, err := s.cfg.Dial(lctx, "tcp", portal)
	if err != nil {
		what := "login to " + s.target
		if s.discovery {
			what = "discovery"
		}
		return nil, fmt.Errorf("%s at %s: %w", what, portal, unwrapDial(err))
	}
	tuneTCP(nc)
	pr := newPollReader(nc, s.cfg.BusyPoll)
	r := pdu.NewReader(pr)
	w := pdu.NewWriter(nc)
	s.mu.Lock()
	isid := s.isid
	s.mu.Unlock()
	res, err := login(lctx, nc, r, w, loginParams{
		portal:     portal,
		target:     s.target,
		discovery:  s.discovery,
		isid:       isid,
		tsih:       0, // with the same ISID: reinstates the old session (RFC 7143 §6.3.5)
		cid:        1,
		cmdSN:      1,
		name:       s.cfg.InitiatorName,
		alias:      s.cfg.InitiatorAlias,
		creds:      s.cfg.Credentials,
		algorithms: algs,
		neg:        s.cfg.Negotiation,
		log:        s.log.With("portal", portal),
	})
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	st := res.state
	st.cmdSN = st.expCmdSN
	s.mu.Lock()
	s.tsih = st.tsih
	s.tpgt = res.tpgt
	s.alias = res.alias
	s.mu.Unlock()
	c := newConn(portal, nc, r, st, s.discovery, s.log.With("portal", portal))
	if !s.discovery {
		c.onDead = s.connDead
		c.onSense = s.asyncSense
	}
	c.hooks = s.cfg.hooks
	c.stats = &s.stats
	pr.sender.Store(c)
	pr.busy.Store(&c.inflight)
	ka := keepAlive{interval: s.cfg.KeepAlive, timeout: s.cfg.KeepAliveWait, command: max(s.cfg.CommandTimeout, 0)}
	if ka.interval < 0 {
		ka.interval = 0
	}
	c.start(ka)
	s.logger().Debug("logged in", "max_recv_data_segment", st.params.MaxRecvDataSegmentLength, "target_max_recv_data_segment", st.params.TargetMaxRecvDataSegmentLength, "max_burst", st.params.MaxBurstLength, "first_burst", st.params.FirstBurstLength, "initial_r2t", st.params.InitialR2T, "immediate_data", st.params.ImmediateData, "header_digest", st.params.HeaderDigest, "data_digest", st.params.DataDigest)
	return c, nil
}

// unwrapDial keeps the useful part of a dial error ("connection refused").
func unwrapDial(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

// tuneTCP sets options that matter for a storage connection.
func tuneTCP(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		setUserTimeout(tc, 30*time.Second)
	}
}

// Target returns the target name.
func (s *Session) Target() string { return s.target }

// Portal returns the portal the session is connected to.
func (s *Session) Portal() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.portal
}

// Params returns the negotiated operational parameters.
func (s *Session) Params() Params {
	c := s.current()
	if c == nil {
		return Params{}
	}
	return c.params
}

// PeakInFlight returns the most SCSI commands this session had outstanding
// at once on its current connection.
func (s *Session) PeakInFlight() int {
	if c := s.current(); c != nil {
		return int(c.peak.Load())
	}
	return 0
}

// InFlight returns the SCSI commands outstanding now.
func (s *Session) InFlight() int {
	if c := s.current(); c != nil {
		return int(c.inflight.Load())
	}
	return 0
}

func (s *Session) current() *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

// Execute runs one SCSI command and returns how it ended. A non-GOOD status
// is not an error here (see Do); errors are transport failures. A command
// caught by a connection failure or a timeout is re-issued once the session
// is re-established (block commands are idempotent), within the replacement
// timeout.
func (s *Session) Execute(ctx context.Context, cmd *Command) (*Response, error) {
	if err := s.queue.acquire(ctx); err != nil {
		return nil, err
	}
	defer s.queue.release()
	start := time.Now()
	resp, err := s.execute(ctx, cmd)
	s.stats.record(cmd, time.Since(start), err)
	if err == nil {
		switch resp.Status {
		case scsi.StatusTaskSetFull:
			if d := s.queue.taskSetFull(); d > 0 {
				level := slog.LevelDebug
				if s.queue.warnNow() {
					level = slog.LevelWarn
				}
				s.logger().Log(context.Background(), level, "the target's task set is full: fewer commands in flight", "queue_depth", d)
			}
		case scsi.StatusGood, scsi.StatusConditionMet:
			if d := s.queue.succeeded(); d > 0 {
				s.logger().Debug("queue depth raised", "queue_depth", d)
			}
		}
	}
	return resp, err
}

// QueueDepth is how many commands may be in flight now: Config.QueueDepth,
// or less after the target answered TASK SET FULL.
func (s *Session) QueueDepth() int { return s.queue.depth() }

// execute is Execute's retry loop, with a queue slot held.
func (s *Session) execute(ctx context.Context, cmd *Command) (*Response, error) {
	timeouts, lost, rejects := 0, 0, 0
	for {
		c, err := s.connFor(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := c.execSCSI(ctx, cmd, s.cfg.CommandTimeout)
		if err == nil {
			return resp, nil
		}
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(err, errTaskAborted):
			timeouts++
			if timeouts >= maxCommandTimeouts {
				// Not even a new connection helped: the target does not
				// serve this command.
				return nil, fmt.Errorf("%w: no answer to %s within %v, %d times", ErrCommandTimeout, opName(cmd.CDB), s.cfg.CommandTimeout, timeouts)
			}
			if timeouts >= 2 {
				// Aborting did not help: start over on a new connection.
				c.fail(fmt.Errorf("%s timed out twice", opName(cmd.CDB)))
			}
		case isTemporaryReject(err):
			rejects++
			if rejects > maxRejectRetries {
				return nil, err
			}
			select {
			case <-time.After(time.Duration(rejects*rejects) * 10 * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case errors.Is(err, errLogoutPending):
			// Not carried out because the target asked for a logout:
			// connFor waits for the connection that replaces this one.
			// Not a loss: the command did not break anything.
		case isConnectionError(err) || errors.Is(err, errTasksTerminated):
			if s.isClosed() {
				return nil, ErrSessionClosed
			}
			if s.discovery {
				return nil, err
			}
			// Re-issue on the next connection, but not forever: a command
			// that breaks every connection it is sent on (a target that
			// crashes on it, a digest error that repeats) fails.
			lost++
			if lost >= maxConnectionLosses {
				return nil, fmt.Errorf("%s failed on %d connections in a row: %w", opName(cmd.CDB), lost, err)
			}
		default:
			return nil, err
		}
	}
}

// isTemporaryReject and isConnectionError are the errors.As tests of
// execute (and, for isConnectionError, of conn.fail and pathFailure). In
// functions of their own, the targets errors.As needs are allocated only
// when a command failed, not on every command.
func isTemporaryReject(err error) bool {
	var rej *RejectError
	return errors.As(err, &rej) && rej.Temporary()
}

func isConnectionError(err error) bool {
	var ce *ConnectionError
	return errors.As(err, &ce)
}

func (s *Session) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state == StateClosed
}

// Close logs out (reason: close the session) and closes the connection.
// Commands still waiting fail with ErrSessionClosed. It stops every
// goroutine of the session (the connection's, a reconnection in progress,
// LUN refreshes) and waits for them, and for the Logout Response (at most
// 5 s), no longer than ctx allows: when ctx ends first it returns ctx's
// error, and the goroutines end on their own shortly after. An OnResize
// callback must not call Close (Close would wait for it).
func (s *Session) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.state == StateClosed {
		s.mu.Unlock()
		return nil
	}
	s.state = StateClosed
	s.g.stop()
	s.stopBg()
	s.broadcastLocked()
	c := s.conn
	s.mu.Unlock()
	var err error
	if c != nil {
		err = c.logout(ctx, closeLogoutWait)
		if werr := c.closeWait(ctx, ErrSessionClosed); err == nil {
			err = werr
		}
	}
	// A recovery in progress closes the connection it may have opened
	// (see installRecovered) before it ends.
	if werr := s.g.wait(ctx); err == nil {
		err = werr
	}
	return err
}

// logout sends Logout (close session) and waits for the response, no
// longer than wait (RFC 7143 §11.14). After it nothing else is sent on the
// connection.
func (c *conn) logout(ctx context.Context, wait time.Duration) error {
	if err := c.deadErr(); err != nil {
		return nil // nothing to log out of
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	t, err := c.sendLogout(ctx)
	if err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	if err := c.await(ctx, t); err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	if errors.Is(t.result.err, io.EOF) {
		// The target closed the connection instead of answering (istgt
		// does now and then): the session is gone, as asked.
		c.log.Debug("target closed the connection on logout without a response")
		return nil
	}
	if t.result.err != nil {
		return fmt.Errorf("logout: %w", t.result.err)
	}
	if t.result.response != 0 {
		return fmt.Errorf("logout: target answered response %d", t.result.response)
	}
	return nil
}

// sendLogout sends the connection's Logout Request once: Close while a
// logout the target asked for is under way waits for the same answer.
func (c *conn) sendLogout(ctx context.Context) (*task, error) {
	c.logoutOnce.Do(func() {
		t := newTask(taskLogout)
		c.logoutErr = c.send(ctx, t, sendOpts{immediate: true}, func(itt, cmdSN, expStatSN uint32) pdu.Message {
			return &pdu.LogoutReq{Immediate: true, Reason: pdu.LogoutCloseSession, ITT: itt, CID: 1, CmdSN: cmdSN, ExpStatSN: expStatSN}
		})
		c.logoutTask = t
	})
	return c.logoutTask, c.logoutErr
}
