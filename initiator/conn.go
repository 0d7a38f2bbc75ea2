package initiator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/iscsifs/iscsifs/initiator/pdu"
	"github.com/iscsifs/iscsifs/initiator/scsi"
)

// conn is one TCP connection in Full Feature Phase. One goroutine at a time
// reads it, the holder of the read role (a waiting caller or readLoop, see
// await), and matches every PDU to its task by ITT; senders serialise on
// sendMu, which also makes CmdSN assignment and the order of commands on
// the wire the same.
type conn struct {
	portal    string
	nc        net.Conn
	r         *pdu.Reader
	w         *pdu.Writer
	params    Params
	discovery bool
	log       *slog.Logger

	sendMu  sync.Mutex      // held while assigning CmdSN and queueing one PDU
	sq      *sendQueue      // PDUs waiting to be written, guarded by sendMu
	spare   *sendQueue      // the queue being written, or free; guarded by sendMu
	flushCh chan struct{}   // hands the socket to the writer goroutine
	flushed *sync.Cond      // on sendMu: a batch was written
	wraw    pdu.Raw         // encode scratch, guarded by sendMu
	cmdPDU  pdu.SCSICommand // execSCSI's PDU while it is encoded, guarded by sendMu
	// taskData is set while a PDU carrying a command's own data (SCSI
	// Command with immediate data, Data-Out) is queued: see
	// queueWriter.WriteSegments. Guarded by sendMu.
	taskData bool
	// writing is set while one goroutine owns the sending side of the
	// socket: a sender writing inline, or the writer goroutine. Its owner
	// writes what is queued until the queue is empty and only then clears
	// it, so a sender that finds it set just queues. Guarded by sendMu.
	writing bool
	inWrite bool // a write system call of a batch is running; guarded by sendMu
	// corked is set while the role holder busy-polls an empty socket
	// (pollReader): senders then only queue, and the holder writes what
	// they queued each time it has let them run. Set by the role holder
	// only; cleared (and the queue written) under sendMu.
	corked atomic.Bool
	// rest is what an inline write left for the writer goroutine when the
	// socket buffer was full (restQ holds its memory). Guarded by sendMu.
	rest  net.Buffers
	restQ *sendQueue
	// Batches are numbered: sqGen is the number of the batch sq fills,
	// sentGen the highest whose write finished (written or failed), restGen
	// the number of rest. A write command waits until the batches holding
	// its data are done (waitSent): the queue references large buffers
	// instead of copying them. Guarded by sendMu.
	sqGen, sentGen, restGen uint64
	// raw is the socket for non-blocking inline writes; nil when the
	// connection is no TCP socket (every batch then goes to the writer).
	raw syscall.RawConn
	nbw nonBlockingWrite // writeNonBlocking's state; its owner's (writing)

	mu        sync.Mutex
	cmdSN     uint32 // next CmdSN to assign
	expCmdSN  uint32
	maxCmdSN  uint32
	expStatSN uint32 // last StatSN received + 1
	// windowCh is closed when the window moves, if windowWaited: a sender
	// waits on it (a fresh one per wait, not per response).
	windowCh     chan struct{}
	windowWaited bool
	tasks        map[uint32]*task
	nextITT      uint32
	// state: connOpen, then connDraining when the target asks for a logout
	// (Asynchronous Message event 1: from then on no numbered command is
	// sent on the connection), and connFailed for good, with err as the
	// cause and dead closed. drainCh is closed on entering connDraining;
	// drainCause is how the connection ends after the logout.
	state      connState
	err        error
	dead       chan struct{}
	drainCh    chan struct{}
	drainCause error

	logoutOnce sync.Once // one Logout Request per connection (see sendLogout)
	logoutTask *task
	logoutErr  error

	// received counts the PDUs read: keepAliveLoop looks for it standing
	// still (a counter, not a time, keeps the clock off the read path).
	received atomic.Uint64
	inflight atomic.Int32 // SCSI commands outstanding (observability, tests)
	peak     atomic.Int32 // most SCSI commands outstanding at once

	// g starts every goroutine of the connection: reader, writer,
	// keep-alive, sweeper, and the helpers they and the senders start.
	g owner

	// onDead is called once when the connection fails, from the goroutine
	// that failed it; it must not block. onSense gets the sense data of an
	// Asynchronous Message (event 0), from the reader; it must not block
	// either. Both are set before start.
	onDead  func(*conn, error)
	onSense func(lun uint64, sense []byte)

	hooks *testHooks    // nil outside tests
	stats *sessionStats // the session's PDU counters; nil: none

	// The read role (see await): its token is in rdRole while free and in
	// rdHand while handed to readLoop; rdRaw is its holder's scratch; rdGen
	// counts hand-backs.
	rdRole chan struct{}
	rdHand chan struct{}
	rdRaw  pdu.Raw
	rdGen  atomic.Uint64
}

// testHooks stop a session's goroutines at chosen points so that tests can
// produce interleavings that are otherwise a matter of luck. Every field
// may be nil; the whole struct is nil outside tests (Config.hooks).
type testHooks struct {
	queued        func()      // a SCSI command was queued; its helper goroutines have not started
	flushWait     func(*conn) // a sender found the send queue full and is about to wait (sendMu held)
	writerFailing func()      // the writer's write failed; it is about to fail the connection
	inlineRest    func()      // an inline write left the rest of its batch to the writer
	recovered     func()      // recovery logged in again and is about to install the connection
}

// connState is where a connection is in Full Feature Phase.
type connState uint8

const (
	connOpen     connState = iota // commands go out
	connDraining                  // only immediate PDUs: a logout is coming
	connFailed                    // the socket is closed; err says why
)

// loginState is what the login phase hands to Full Feature Phase.
type loginState struct {
	cmdSN, expCmdSN, maxCmdSN uint32
	expStatSN                 uint32
	tsih                      uint16
	params                    Params
}

// keepAlive configures initiator NOP-Out pings (RFC 7143 §11.18).
type keepAlive struct {
	interval time.Duration // idle time before a ping; 0 disables
	timeout  time.Duration // time to wait for the NOP-In
	command  time.Duration // SCSI command timeout (sweepLoop); 0 disables
}

func newConn(portal string, nc net.Conn, r *pdu.Reader, st loginState, discovery bool, log *slog.Logger) *conn {
	c := &conn{
		portal:    portal,
		nc:        nc,
		r:         r,
		sq:        &sendQueue{},
		spare:     &sendQueue{},
		sqGen:     1,
		flushCh:   make(chan struct{}, 1),
		params:    st.params,
		discovery: discovery,
		log:       log,
		cmdSN:     st.cmdSN,
		expCmdSN:  st.expCmdSN,
		maxCmdSN:  st.maxCmdSN,
		expStatSN: st.expStatSN,
		windowCh:  make(chan struct{}),
		tasks:     make(map[uint32]*task),
		nextITT:   1,
		dead:      make(chan struct{}),
		drainCh:   make(chan struct{}),
	}
	c.w = pdu.NewWriter(queueWriter{c})
	c.nbw.init(c)
	if tc, ok := nc.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			c.raw = raw
		}
	}
	c.flushed = sync.NewCond(&c.sendMu)
	r.SetDigests(st.params.HeaderDigest, st.params.DataDigest)
	c.w.SetDigests(st.params.HeaderDigest, st.params.DataDigest)
	r.SetMaxDataSegmentLength(st.params.MaxRecvDataSegmentLength)
	c.rdRole = make(chan struct{}, 1)
	c.rdHand = make(chan struct{}, 1)
	c.rdRole <- struct{}{}
	return c
}

func (c *conn) start(ka keepAlive) {
	c.goroutine(c.readLoop)
	c.goroutine(c.writeLoop)
	if ka.interval > 0 {
		c.goroutine(func() { c.keepAliveLoop(ka) })
	}
	if ka.command > 0 {
		c.goroutine(func() { c.sweepLoop(ka.command) })
	}
}

// goroutine runs f in a goroutine that close waits for. Once close has
// begun it runs nothing and returns false: the connection is dead, so
// whatever f was for (sending data, aborting a task, answering a ping) has
// no use, and a goroutine started then could outlive close.
func (c *conn) goroutine(f func()) bool { return c.g.goroutine(f) }

// fail marks the connection dead, closes the socket and completes every
// outstanding task with the error. Only the first call has an effect.
func (c *conn) fail(err error) {
	c.mu.Lock()
	if c.state == connFailed {
		c.mu.Unlock()
		return
	}
	if !isConnectionError(err) {
		err = &ConnectionError{Portal: c.portal, Err: err}
	}
	c.state = connFailed
	c.err = err
	close(c.dead)
	tasks := c.tasks
	c.tasks = map[uint32]*task{}
	c.mu.Unlock()
	_ = c.nc.Close()
	for _, t := range tasks {
		// Wait until the reader is out of the task's buffer (the closed
		// socket ends any read in progress): the command may be re-issued
		// on a new connection into the same buffer.
		t.detach()
		c.finish(t, taskResult{err: err})
	}
	// Senders waiting for the writer see the error. The broadcast holds the
	// lock their wait is guarded by: a sender between its check of the
	// error and its Wait would otherwise miss it and wait for ever.
	c.sendMu.Lock()
	c.flushed.Broadcast()
	c.sendMu.Unlock()
	if c.onDead != nil {
		c.onDead(c, err)
	}
}

// deadErr returns the error the connection died with, or nil.
func (c *conn) deadErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// close shuts the socket down and waits for the connection's goroutines.
func (c *conn) close(err error) {
	_ = c.closeWait(context.Background(), err)
}

// closeWait is close, waiting no longer than ctx allows. The goroutines
// end promptly once the connection has failed (its socket is closed, and
// every wait of theirs also ends when the connection dies).
func (c *conn) closeWait(ctx context.Context, err error) error {
	c.g.stop()
	c.fail(err)
	return c.g.wait(ctx)
}

// finish completes a task once; the task must already be out of c.tasks.
func (c *conn) finish(t *task, res taskResult) {
	select {
	case <-t.done:
		return
	default:
	}
	if t.kind == taskSCSI {
		c.inflight.Add(-1)
	}
	t.result = res
	close(t.done)
}

// take removes a task from the table (nil if unknown).
func (c *conn) take(itt uint32) *task {
	c.mu.Lock()
	t := c.tasks[itt]
	delete(c.tasks, itt)
	c.mu.Unlock()
	return t
}

func (c *conn) lookup(itt uint32) *task {
	c.mu.Lock()
	t := c.tasks[itt]
	c.mu.Unlock()
	return t
}

// allocITT returns a tag not in use; c.mu must be held.
func (c *conn) allocITT() uint32 {
	for {
		itt := c.nextITT
		c.nextITT++
		if itt == pdu.ReservedTag {
			continue
		}
		if _, busy := c.tasks[itt]; !busy {
			return itt
		}
	}
}

// sendOpts says how a PDU takes part in command numbering.
type sendOpts struct {
	immediate bool // carries CmdSN without advancing it
	gated     bool // must wait for CmdSN <= MaxCmdSN
}

// send registers t (if not nil) under a fresh ITT and writes the PDU that
// build returns for the assigned numbers. Registration happens before the
// write so that a fast reply always finds its task. Once the target asked
// for a logout, numbered commands are refused with errLogoutPending;
// immediate ones (the Logout itself, pings, task management for the
// commands in flight) still go out. An error means t was not registered;
// once it is, the outcome is how t ends.
func (c *conn) send(ctx context.Context, t *task, o sendOpts, build func(itt, cmdSN, expStatSN uint32) pdu.Message) error {
	for {
		c.lockSend()
		c.mu.Lock()
		if c.state == connFailed {
			err := c.err
			c.mu.Unlock()
			c.unlockSend(false)
			return err
		}
		if c.state == connDraining && !o.immediate {
			c.mu.Unlock()
			c.unlockSend(false)
			return errLogoutPending
		}
		if o.immediate || !o.gated || serialLessEq(c.cmdSN, c.maxCmdSN) {
			cmdSN := c.cmdSN
			if !o.immediate {
				c.cmdSN++
			}
			itt := pdu.ReservedTag
			if t != nil {
				if t.keepITT {
					itt = t.itt
				} else {
					itt = c.allocITT()
				}
				t.itt, t.cmdSN = itt, cmdSN
				c.tasks[itt] = t
				if t.kind == taskSCSI {
					if n := c.inflight.Add(1); n > c.peak.Load() {
						c.peak.Store(n)
					}
				}
			}
			expStatSN := c.expStatSN
			c.mu.Unlock()
			err := c.writeAndUnlock(build(itt, cmdSN, expStatSN), !o.immediate)
			if t != nil {
				// t is registered, so how it ends (its response, or the
				// failure of the connection, which ends every registered
				// task) is the outcome. The connection may have died just
				// after the target answered: no error of this PDU.
				return nil
			}
			return err
		}
		wait := c.windowCh
		c.windowWaited = true
		c.mu.Unlock()
		c.unlockSend(false)
		select {
		case <-wait:
		case <-c.dead:
		case <-c.drainCh:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// usable reports whether new commands may be sent on the connection.
func (c *conn) usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == connOpen
}

// sendUnnumbered writes a PDU outside command numbering (Data-Out, NOP-Out
// replies); build gets the current ExpStatSN.
func (c *conn) sendUnnumbered(build func(expStatSN uint32) pdu.Message) error {
	expStatSN, cmdSN, err := c.lockSendLive()
	if err != nil {
		return err
	}
	msg := build(expStatSN)
	if nop, ok := msg.(*pdu.NOPOut); ok {
		nop.CmdSN = cmdSN
	}
	return c.writeAndUnlock(msg, true)
}

// lockSend takes the send lock.
func (c *conn) lockSend() { c.sendMu.Lock() }

// lockSendLive takes the send lock and returns ExpStatSN and CmdSN for
// PDUs queued under it, or the connection's error (lock not held) once it
// has failed.
func (c *conn) lockSendLive() (expStatSN, cmdSN uint32, err error) {
	c.lockSend()
	c.mu.Lock()
	failed, err := c.state == connFailed, c.err
	expStatSN, cmdSN = c.expStatSN, c.cmdSN
	c.mu.Unlock()
	if failed {
		c.unlockSend(false)
		return 0, 0, err
	}
	return expStatSN, cmdSN, nil
}

// unlockSend wakes the writer for what was queued and releases the send
// lock. With wait, a sender that finds too much queued waits for the writer
// first (bounded memory); senders of immediate PDUs (a logout, an abort, a
// ping: a few bytes each) do not, so that they are not held up by the bulk
// data of a target that stopped reading.
func (c *conn) unlockSend(wait bool) {
	if !c.corked.Load() || c.sq.size >= corkMaxBytes {
		c.flushLocked()
	}
	for wait && c.sq.size > sendMaxBatch && c.deadErr() == nil {
		if c.hooks != nil && c.hooks.flushWait != nil {
			c.hooks.flushWait(c)
		}
		c.flushed.Wait()
	}
	c.sendMu.Unlock()
}

// writeAndUnlock encodes and queues one PDU and releases the send lock
// (waiting for the writer as unlockSend says).
func (c *conn) writeAndUnlock(msg pdu.Message, wait bool) error {
	err := c.queueLocked(msg)
	c.unlockSend(wait)
	if err != nil {
		c.fail(err)
	}
	return c.deadErr()
}

// queueLocked encodes and queues one PDU; sendMu is held.
func (c *conn) queueLocked(msg pdu.Message) error {
	c.wraw.AHS = c.wraw.AHS[:0]
	c.wraw.Data = nil
	err := msg.Encode(&c.wraw)
	if err == nil {
		switch msg.(type) {
		case *pdu.DataOut, *pdu.SCSICommand:
			c.taskData = true
		}
		err = c.w.Write(&c.wraw)
		c.taskData = false
	}
	if err == nil && c.stats != nil {
		c.stats.pdusSent.Add(1)
	}
	c.wraw.Data = nil
	return err
}

// writeTimeout bounds one write so a target that stops reading cannot block
// senders forever.
const writeTimeout = 60 * time.Second

// updateWindow applies ExpCmdSN/MaxCmdSN from a target PDU (RFC 7143
// §4.2.2.1): only when MaxCmdSN >= ExpCmdSN-1 and the values move forward.
func (c *conn) updateWindow(exp, max uint32) {
	if !serialLessEq(exp-1, max) {
		return
	}
	c.mu.Lock()
	changed := false
	if serialLess(c.expCmdSN, exp) {
		c.expCmdSN = exp
		changed = true
	}
	if serialLess(c.maxCmdSN, max) {
		c.maxCmdSN = max
		changed = true
	}
	// A target may acknowledge commands we consider not yet numbered (istgt
	// advances ExpCmdSN for immediate Text): resynchronise rather than send
	// CmdSNs the target will drop as duplicates.
	if serialLess(c.cmdSN, c.expCmdSN) {
		c.cmdSN = c.expCmdSN
	}
	if changed && c.windowWaited {
		close(c.windowCh)
		c.windowCh = make(chan struct{})
		c.windowWaited = false
	}
	c.mu.Unlock()
}

// checkStatSN accepts the StatSN of a status-carrying PDU. At ERL 0 a gap is
// a connection failure (RFC 7143 §4.2.2.2).
func (c *conn) checkStatSN(statSN uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case statSN == c.expStatSN:
		c.expStatSN++
	case serialLess(statSN, c.expStatSN):
		// A retransmitted or stale status: already acknowledged.
	default:
		return &ProtocolViolation{Reason: fmt.Sprintf("StatSN %d received, expected %d", statSN, c.expStatSN)}
	}
	return nil
}

// Receiving. One goroutine at a time reads the socket: the one holding the
// read role. A goroutine waiting for its own task takes the role when it is
// free and reads until its task is done (await), so the answer to a lone
// command is read by the goroutine that waits for it: no hand-off between
// goroutines, no second thread woken to run the waiter (readying a parked
// goroutine while a P is idle wakes one), and with Config.BusyPoll the
// waiter itself polls the socket. Waiters that find the role taken wait for
// their task; the holder's reads complete it. A holder whose task is done
// while other tasks are outstanding hands the role to readLoop, which keeps
// it while tasks are outstanding: with many commands in flight it is the
// one reader, as if there were no roles. readLoop also reads what no waiter
// does (target pings and asynchronous messages, the end of the socket): it
// takes the free role once nobody has taken it for readerIdle.
//
// The token is in exactly one place: rdRole (free), rdHand (handed to
// readLoop), or with its holder.
const (
	readerIdle = 10 * time.Millisecond
	// waitSlice bounds how long a waiter holding the role sleeps in the
	// socket before it looks at its context and its task again: a task is
	// also ended by the sweeper, an abort or a logout, and a context by
	// its owner, none of which touch the socket.
	waitSlice = 10 * time.Millisecond
)

// await waits until t is done or ctx ends, reading the connection while
// nobody else does.
func (c *conn) await(ctx context.Context, t *task) error {
	return c.awaitEither(ctx, t.done, nil)
}

// awaitEither is await for two channels: it returns nil once done or also
// (nil: never) is closed.
func (c *conn) awaitEither(ctx context.Context, done, also <-chan struct{}) error {
	for {
		select {
		case <-done:
		case <-also:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.rdRole:
			err := c.readFor(ctx, done, also)
			c.releaseRead()
			if err != nil {
				return err
			}
			continue
		}
		return nil
	}
}

// releaseRead hands the read role on: to readLoop while tasks are
// outstanding (their waiters may all be asleep), else back to the pool.
func (c *conn) releaseRead() {
	c.rdGen.Add(1)
	if c.outstanding() > 0 {
		c.rdHand <- struct{}{}
		return
	}
	c.rdRole <- struct{}{}
}

// readFor reads PDUs, holding the read role, until done or also is closed,
// ctx ends (looked at between PDUs only: a PDU is always read whole) or the
// connection fails, which also ends every task.
func (c *conn) readFor(ctx context.Context, done, also <-chan struct{}) error {
	for {
		if isClosed(done) || isClosed(also) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !c.r.Buffered() {
			_ = c.nc.SetReadDeadline(time.Now().Add(waitSlice))
			err := c.r.WaitHeader()
			_ = c.nc.SetReadDeadline(time.Time{})
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if err != nil {
				c.fail(err)
				return nil
			}
		}
		if err := c.readPDU(true); err != nil {
			c.fail(err)
			return nil
		}
	}
}

// isClosed reports whether ch is closed (a nil channel never is).
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// readLoop reads while no waiter does (see await).
func (c *conn) readLoop() {
	idle := time.NewTimer(readerIdle)
	defer idle.Stop()
	quiet := true // at the start: take the free role at once
	for {
		held := false
		if quiet {
			select {
			case <-c.rdRole:
				held = true
			default: // a waiter holds it
			}
		}
		if !held {
			gen := c.rdGen.Load()
			idle.Reset(readerIdle)
			select {
			case <-c.dead:
				return
			case <-c.rdHand:
			case <-idle.C:
				quiet = c.rdGen.Load() == gen
				continue
			}
		}
		if !c.readWhileOutstanding() {
			return
		}
		quiet = false
	}
}

// readWhileOutstanding reads PDUs, holding the read role, until one leaves
// no task outstanding, and then frees the role; false when the connection
// failed.
func (c *conn) readWhileOutstanding() bool {
	for {
		err := c.r.WaitHeader()
		if err == nil {
			err = c.readPDU(false)
		}
		if err != nil {
			c.fail(err)
		}
		if err != nil || c.outstanding() == 0 {
			c.rdGen.Add(1)
			c.rdRole <- struct{}{}
			return err == nil
		}
	}
}

// readPDU reads one PDU and acts on it; the caller holds the read role.
func (c *conn) readPDU(byWaiter bool) error {
	raw := &c.rdRaw
	ahs, err := c.r.ReadHeader(&raw.BHS)
	if err != nil {
		return err
	}
	if c.stats != nil {
		c.stats.pdus.Add(1)
		if byWaiter {
			c.stats.pdusByCaller.Add(1)
		}
	}
	c.received.Add(1)
	raw.AHS = ahs
	return c.dispatch(raw)
}

// corkMaxBytes: a sender writes itself, cork or not, once this much is
// queued.
const corkMaxBytes = 64 << 10

// setCork sets or clears the cork (see corked); clearing it writes what
// senders queued meanwhile. Called by the role holder; a nil c does nothing.
func (c *conn) setCork(on bool) {
	if c == nil || c.corked.Load() == on {
		return
	}
	if on {
		// No lock: a sender that still sees the cork off writes itself.
		c.corked.Store(true)
		return
	}
	c.sendMu.Lock()
	c.corked.Store(false)
	c.flushLocked()
	c.sendMu.Unlock()
}

// flushCorked writes what senders queued under the cork. Called by the
// role holder; a nil c does nothing.
func (c *conn) flushCorked() {
	if c == nil || !c.corked.Load() {
		return
	}
	c.sendMu.Lock()
	c.flushLocked()
	c.sendMu.Unlock()
}

// readWhole reads the data segment of the current PDU into raw.Data.
func (c *conn) readWhole(raw *pdu.Raw) error {
	n := raw.BHS.DataSegmentLength()
	if cap(raw.Data) < n {
		raw.Data = make([]byte, n)
	}
	raw.Data = raw.Data[:n]
	return c.r.ReadData(raw.Data)
}

func (c *conn) dispatch(raw *pdu.Raw) error {
	switch raw.BHS.Opcode() {
	case pdu.OpDataIn:
		return c.onDataIn(raw)
	case pdu.OpR2T:
		return c.onR2T(raw)
	}
	// Every other target PDU is small: read it whole (bounded by our
	// MaxRecvDataSegmentLength in the Reader).
	if err := c.readWhole(raw); err != nil {
		return err
	}
	msg, err := pdu.Decode(raw)
	if err != nil {
		return err
	}
	switch m := msg.(type) {
	case *pdu.SCSIResponse:
		return c.onSCSIResponse(m)
	case *pdu.NOPIn:
		return c.onNOPIn(m)
	case *pdu.TextResp:
		c.updateWindow(m.ExpCmdSN, m.MaxCmdSN)
		if err := c.checkStatSN(m.StatSN); err != nil {
			return err
		}
		return c.complete(m.ITT, taskText, taskResult{msg: cloneMsg(m)})
	case *pdu.LogoutResp:
		c.updateWindow(m.ExpCmdSN, m.MaxCmdSN)
		if err := c.checkStatSN(m.StatSN); err != nil {
			return err
		}
		if err := c.complete(m.ITT, taskLogout, taskResult{response: m.Response, msg: m}); err != nil {
			return err
		}
		// Nothing but the target closing the connection follows: end it
		// here, for the reason of the logout, not with the EOF that comes
		// next.
		return c.loggedOut()
	case *pdu.TaskMgmtResp:
		c.updateWindow(m.ExpCmdSN, m.MaxCmdSN)
		if err := c.checkStatSN(m.StatSN); err != nil {
			return err
		}
		return c.complete(m.ITT, taskTMF, taskResult{response: m.Response, msg: m})
	case *pdu.AsyncMsg:
		c.updateWindow(m.ExpCmdSN, m.MaxCmdSN)
		if err := c.checkStatSN(m.StatSN); err != nil {
			return err
		}
		return c.onAsync(m)
	case *pdu.Reject:
		c.updateWindow(m.ExpCmdSN, m.MaxCmdSN)
		if err := c.checkStatSN(m.StatSN); err != nil {
			return err
		}
		return c.onReject(m)
	default:
		return &ProtocolViolation{Reason: fmt.Sprintf("unexpected opcode 0x%02x in full feature phase", uint8(raw.BHS.Opcode()))}
	}
}

// cloneMsg copies a Text Response whose Data aliases the read scratch buffer.
func cloneMsg(m *pdu.TextResp) *pdu.TextResp {
	cp := *m
	cp.Data = append([]byte(nil), m.Data...)
	return &cp
}

// complete ends the task with the ITT, checking it waits for this kind of
// response.
func (c *conn) complete(itt uint32, kind taskKind, res taskResult) error {
	t := c.take(itt)
	if t == nil {
		return &ProtocolViolation{Reason: fmt.Sprintf("response for unknown ITT 0x%08x", itt)}
	}
	if t.kind != kind {
		return &ProtocolViolation{Reason: fmt.Sprintf("response of the wrong type for ITT 0x%08x", itt)}
	}
	c.finish(t, res)
	return nil
}

func (c *conn) onDataIn(raw *pdu.Raw) error {
	var d pdu.DataIn
	if err := d.Decode(&pdu.Raw{BHS: raw.BHS}); err != nil {
		return err
	}
	c.updateWindow(d.ExpCmdSN, d.MaxCmdSN)
	n := raw.BHS.DataSegmentLength()
	t := c.lookup(d.ITT)
	if t == nil || t.kind != taskSCSI {
		return &ProtocolViolation{Reason: fmt.Sprintf("Data-In for unknown ITT 0x%08x", d.ITT)}
	}
	t.mu.Lock()
	if d.DataSN != t.expDataSN {
		t.mu.Unlock()
		return &ProtocolViolation{Reason: fmt.Sprintf("Data-In DataSN %d, expected %d (ITT 0x%08x)", d.DataSN, t.expDataSN, d.ITT)}
	}
	t.expDataSN++
	end := uint64(d.BufferOffset) + uint64(n)
	if t.detached {
		t.mu.Unlock()
		if err := c.r.DiscardData(); err != nil {
			return err
		}
	} else {
		if end > uint64(len(t.readBuf)) {
			t.mu.Unlock()
			return &ProtocolViolation{Reason: fmt.Sprintf("Data-In [%d,%d) beyond the %d-byte buffer (ITT 0x%08x)", d.BufferOffset, end, len(t.readBuf), d.ITT)}
		}
		err := c.r.ReadData(t.readBuf[d.BufferOffset:end])
		t.received += n
		t.mu.Unlock()
		if err != nil {
			return err
		}
	}
	if !d.StatusPresent {
		return nil
	}
	if err := c.checkStatSN(d.StatSN); err != nil {
		return err
	}
	return c.complete(d.ITT, taskSCSI, taskResult{
		status:   d.Status,
		residual: d.ResidualCount,
		under:    d.Underflow,
		over:     d.Overflow,
	})
}

func (c *conn) onSCSIResponse(m *pdu.SCSIResponse) error {
	c.updateWindow(m.ExpCmdSN, m.MaxCmdSN)
	if err := c.checkStatSN(m.StatSN); err != nil {
		return err
	}
	res := taskResult{
		status:   m.Status,
		response: m.Response,
		residual: m.ResidualCount,
		under:    m.Underflow,
		over:     m.Overflow,
	}
	if sense, err := m.SenseData(); err == nil && len(sense) > 0 {
		res.sense = append([]byte(nil), sense...)
	}
	return c.complete(m.ITT, taskSCSI, res)
}

func (c *conn) onR2T(raw *pdu.Raw) error {
	if raw.BHS.DataSegmentLength() != 0 {
		return &ProtocolViolation{Reason: "R2T with a data segment"}
	}
	r2t := new(pdu.R2T)
	if err := r2t.Decode(&pdu.Raw{BHS: raw.BHS}); err != nil {
		return err
	}
	c.updateWindow(r2t.ExpCmdSN, r2t.MaxCmdSN)
	t := c.lookup(r2t.ITT)
	if t == nil || t.kind != taskSCSI || t.r2ts == nil {
		return &ProtocolViolation{Reason: fmt.Sprintf("R2T for unknown or non-write ITT 0x%08x", r2t.ITT)}
	}
	end := uint64(r2t.BufferOffset) + uint64(r2t.DesiredDataTransferLength)
	if r2t.DesiredDataTransferLength == 0 || end > uint64(len(t.writeBuf)) {
		return &ProtocolViolation{Reason: fmt.Sprintf("R2T for [%d,%d) outside the %d-byte write", r2t.BufferOffset, end, len(t.writeBuf))}
	}
	if c.params.MaxBurstLength > 0 && r2t.DesiredDataTransferLength > uint32(c.params.MaxBurstLength) {
		return &ProtocolViolation{Reason: fmt.Sprintf("R2T of %d bytes exceeds MaxBurstLength %d", r2t.DesiredDataTransferLength, c.params.MaxBurstLength)}
	}
	select {
	case t.r2ts <- r2t:
		return nil
	default:
		return &ProtocolViolation{Reason: "more outstanding R2Ts than MaxOutstandingR2T"}
	}
}

func (c *conn) onNOPIn(m *pdu.NOPIn) error {
	c.updateWindow(m.ExpCmdSN, m.MaxCmdSN)
	if m.ITT != pdu.ReservedTag {
		// The answer to our ping; it carries a real StatSN.
		if err := c.checkStatSN(m.StatSN); err != nil {
			return err
		}
		return c.complete(m.ITT, taskNOP, taskResult{})
	}
	if m.TTT == pdu.ReservedTag {
		return nil // unsolicited, no answer wanted (istgt)
	}
	// A ping from the target: answer from another goroutine, the reader
	// never writes (a write could wait for the target, which waits for us).
	ttt, lun := m.TTT, m.LUN
	data := append([]byte(nil), m.Data...)
	c.goroutine(func() {
		_ = c.sendUnnumbered(func(expStatSN uint32) pdu.Message {
			return &pdu.NOPOut{Immediate: true, LUN: lun, ITT: pdu.ReservedTag, TTT: ttt, ExpStatSN: expStatSN, Data: data}
		})
	})
	return nil
}

func (c *conn) onAsync(m *pdu.AsyncMsg) error {
	switch m.AsyncEvent {
	case pdu.AsyncEventLogoutRequest:
		c.logoutRequested(m.Parameter3)
		return nil
	case pdu.AsyncEventConnectionDrop, pdu.AsyncEventSessionDrop:
		// The target is about to drop this connection (event 2) or all of
		// the session's, which is this one (3). Treat it as gone now; the
		// session logs in again no earlier than Time2Wait (Parameter2).
		// Time2Retain (Parameter3) bounds reassigning the tasks, which is
		// for ERL 2: at ERL 0 they are re-issued after the new login.
		e := &asyncDropError{event: m.AsyncEvent, at: time.Now(), time2Wait: min(seconds(m.Parameter2), maxTime2Wait)}
		c.log.Warn("target will drop the connection; logging in again after Time2Wait", "event", m.AsyncEvent, "cid", m.Parameter1, "time2wait", m.Parameter2, "time2retain", m.Parameter3)
		return e
	}
	c.log.Warn("asynchronous message from target", "event", m.AsyncEvent, "param1", m.Parameter1, "param2", m.Parameter2, "param3", m.Parameter3)
	switch m.AsyncEvent {
	case pdu.AsyncEventSCSI:
		// Sense data for the LU, as a UNIT ATTENTION without a command.
		sense, err := (&pdu.SCSIResponse{Data: m.Data}).SenseData()
		if err == nil && len(sense) > 0 && c.onSense != nil {
			c.onSense(scsi.DecodeLUN(m.LUN), append([]byte(nil), sense...))
		}
	case pdu.AsyncEventTasksTerminated:
		// No answer will come for the LU's tasks: end them so that they
		// are re-issued now rather than after the command timeout.
		c.mu.Lock()
		var gone []*task
		for itt, t := range c.tasks {
			if t.kind == taskSCSI && t.lun == m.LUN {
				delete(c.tasks, itt)
				gone = append(gone, t)
			}
		}
		c.mu.Unlock()
		for _, t := range gone {
			t.detach()
			c.finish(t, taskResult{err: errTasksTerminated})
		}
	}
	return nil
}

func (c *conn) onReject(m *pdu.Reject) error {
	h, err := m.RejectedHeader()
	if err != nil {
		return &ProtocolViolation{Reason: "Reject without the rejected header"}
	}
	rej := &RejectError{Reason: m.Reason}
	switch m.Reason {
	case pdu.RejectDataDigest: // ERL 0 recovers the session
		return rej
	case pdu.RejectWaitingForLogout:
		if !c.isDraining() {
			return rej // the target wants this connection gone
		}
		// A command sent before the logout request reached us: re-issue it
		// after the new login.
		if t := c.take(h.ITT()); t != nil {
			t.detach()
			c.finish(t, taskResult{err: errLogoutPending})
		}
		return nil
	}
	itt := h.ITT()
	if itt == pdu.ReservedTag {
		return nil
	}
	t := c.take(itt)
	if t == nil {
		return nil
	}
	c.finish(t, taskResult{err: rej})
	return nil
}

// RejectError is a PDU the target rejected (RFC 7143 §11.17).
type RejectError struct{ Reason uint8 }

func (e *RejectError) Error() string {
	return "target rejected the PDU: " + pdu.RejectReasonText(e.Reason)
}

// Temporary reports a Reject that asks to retry later: too many immediate
// commands, or no resources for a long operation (RFC 7143 §11.17.1).
func (e *RejectError) Temporary() bool {
	return e.Reason == pdu.RejectImmediate || e.Reason == pdu.RejectLongOp
}

// keepAliveLoop pings an idle connection and fails it when the target does
// not answer in time (RFC 7143 §11.18).
func (c *conn) keepAliveLoop(ka keepAlive) {
	tick := time.NewTicker(ka.interval / 2)
	defer tick.Stop()
	// quietSince is when a tick last saw received move: the connection has
	// been idle at least since then (a PDU arriving between two ticks is
	// seen at the second, so pings come after interval to 1.5 intervals of
	// silence, as they would with the time of each PDU).
	seen, quietSince := c.received.Load(), time.Now()
	for {
		select {
		case <-c.dead:
			return
		case <-tick.C:
		}
		if n := c.received.Load(); n != seen {
			seen, quietSince = n, time.Now()
			continue
		}
		if time.Since(quietSince) < ka.interval {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), ka.timeout)
		err := c.ping(ctx)
		cancel()
		if err != nil && c.deadErr() == nil {
			c.fail(fmt.Errorf("keep-alive: no NOP-In within %v", ka.timeout))
			return
		}
	}
}

// ping sends a NOP-Out that needs an answer and waits for it.
func (c *conn) ping(ctx context.Context) error {
	t := newTask(taskNOP)
	err := c.send(ctx, t, sendOpts{immediate: true}, func(itt, cmdSN, expStatSN uint32) pdu.Message {
		return &pdu.NOPOut{Immediate: true, ITT: itt, TTT: pdu.ReservedTag, CmdSN: cmdSN, ExpStatSN: expStatSN}
	})
	if err != nil {
		return err
	}
	if err := c.await(ctx, t); err != nil {
		c.take(t.itt)
		return err
	}
	return t.result.err
}
