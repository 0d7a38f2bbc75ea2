package initiator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/iscsifs/iscsifs/initiator/pdu"
	"github.com/iscsifs/iscsifs/initiator/scsi"
)

// Command is one SCSI command. At most one of Read and Write is set: Read is
// the Data-In buffer (its length is the expected transfer length), Write the
// data to send.
type Command struct {
	LUN   uint64
	CDB   []byte
	Read  []byte
	Write []byte
}

// Response is how a SCSI command ended at the target.
type Response struct {
	Status      scsi.Status
	Sense       []byte // raw sense data, nil if none was sent
	Transferred int    // Data-In bytes received
	Residual    uint32
	Underflow   bool
	Overflow    bool

	portal string // of the connection that carried it: ALUA sense belongs to that path
}

// abortTimeout bounds ABORT TASK; past it the connection is dropped.
const abortTimeout = 10 * time.Second

// errTaskAborted ends a task that ABORT TASK removed at the target.
var errTaskAborted = errors.New("command aborted after a timeout")

// errTasksTerminated ends a task the target terminated without an answer
// (Asynchronous Message event 5): it is re-issued.
var errTasksTerminated = errors.New("the target terminated the command")

// ErrCommandTimeout is a command that got no answer within the command
// timeout on every step of the escalation (abort and re-issue, then a new
// connection): the target does not serve it.
var ErrCommandTimeout = errors.New("command timed out")

// Bounds on re-issuing one command (Session.Execute).
const (
	maxCommandTimeouts  = 3 // abort and re-issue, new connection, then ErrCommandTimeout
	maxConnectionLosses = 5 // connections lost under one command before it fails
	maxRejectRetries    = 5 // "retry later" Rejects (immediate command, long op)
)

// abortWait bounds ABORT TASK for a command with the given timeout: half
// the command timeout (a target that takes longer to answer an immediate
// task management request is taken for dead), at most abortTimeout. A
// frozen target thus costs 1.75 command timeouts (with the sweep) before
// the connection is dropped and the replacement timeout starts.
func abortWait(timeout time.Duration) time.Duration {
	if timeout > 0 && timeout/2 < abortTimeout {
		return timeout / 2
	}
	return abortTimeout
}

func opName(cdb []byte) string { return scsi.OpName(cdb) }

// closedChan is closed: receiving from it never waits.
var closedChan = func() <-chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// execSCSI runs one command on the connection. It returns only when the
// target no longer uses cmd's buffers: for reads the task is detached, for
// writes the Data-Out sender has stopped.
func (c *conn) execSCSI(ctx context.Context, cmd *Command, timeout time.Duration) (*Response, error) {
	if cmd.Read != nil && cmd.Write != nil {
		return nil, fmt.Errorf("bidirectional commands are not supported")
	}
	t := newTask(taskSCSI)
	t.lun = scsi.EncodeLUN(cmd.LUN)
	if timeout > 0 {
		t.timeout = timeout
		t.deadline = time.Now().Add(timeout).UnixNano()
	}
	t.readBuf = cmd.Read
	var imm []byte
	unsolicitedEnd := 0
	expected := len(cmd.Read)
	if cmd.Write != nil {
		expected = len(cmd.Write)
		t.writeBuf = cmd.Write
		p := c.params
		firstBurst := min(p.FirstBurstLength, len(cmd.Write))
		if p.ImmediateData {
			imm = cmd.Write[:min(firstBurst, p.TargetMaxRecvDataSegmentLength)]
		}
		unsolicitedEnd = len(imm)
		if !p.InitialR2T {
			unsolicitedEnd = firstBurst
		}
		if unsolicitedEnd < len(cmd.Write) {
			t.r2ts = make(chan *pdu.R2T, max(1, p.MaxOutstandingR2T))
		}
	}
	final := unsolicitedEnd <= len(imm)
	err := c.send(ctx, t, sendOpts{gated: true}, func(itt, cmdSN, expStatSN uint32) pdu.Message {
		// send calls build with sendMu held and encodes the PDU before it
		// lets go: the connection's scratch PDU serves, not one per command.
		c.cmdPDU = pdu.SCSICommand{
			Final: final, Read: cmd.Read != nil, Write: cmd.Write != nil, Attr: 1,
			LUN: t.lun, ITT: itt, ExpectedDataTransferLength: uint32(expected),
			CmdSN: cmdSN, ExpStatSN: expStatSN, CDB: cmd.CDB, Data: imm,
		}
		return &c.cmdPDU
	})
	if err != nil {
		return nil, err
	}
	if cmd.Write != nil {
		// The send queue references the data (sendQueue): it must not
		// go back to the caller while a write of it may be in progress,
		// even if the target answered early.
		defer c.waitSent()
	}
	if c.hooks != nil && c.hooks.queued != nil {
		c.hooks.queued()
	}
	// dataOutDone stays closed when there is nothing to send, or the
	// connection is closing (it has failed the task, or is about to).
	dataOutDone := closedChan
	if cmd.Write != nil && (unsolicitedEnd > len(imm) || t.r2ts != nil) {
		sending := make(chan struct{})
		if c.goroutine(func() {
			defer close(sending)
			c.dataOut(t, len(imm), unsolicitedEnd)
		}) {
			dataOutDone = sending
		}
	}

	// The connection's sweeper aborts the task once its deadline passes
	// (see sweepLoop): no timer per command on the hot path.
	if err := c.await(ctx, t); err != nil {
		if cmd.Write == nil {
			// Reads return as soon as the reader is out of the buffer; it
			// discards further data. The abort runs first so that a reader
			// stuck in a stalled Data-In is freed in bounded time.
			c.goroutine(func() { c.abort(t, abortWait(timeout)) })
			t.detach()
			return nil, ctx.Err()
		}
		// A write must not return while its data may still be sent.
		c.abort(t, abortWait(timeout))
		<-dataOutDone
		select {
		case <-t.done:
		default:
			return nil, ctx.Err()
		}
	}
	<-dataOutDone
	res := t.result
	if res.err != nil {
		return nil, res.err
	}
	if res.response != 0 {
		return nil, fmt.Errorf("target failure (iSCSI response 0x%02x)", res.response)
	}
	t.mu.Lock()
	received := t.received
	t.mu.Unlock()
	return &Response{
		Status:      scsi.Status(res.status),
		Sense:       res.sense,
		Transferred: received,
		Residual:    res.residual,
		Underflow:   res.under,
		Overflow:    res.over,
		portal:      c.portal,
	}, nil
}

// dataOut sends the unsolicited data [from, unsolicitedEnd) and then answers
// R2Ts until the task completes.
func (c *conn) dataOut(t *task, from, unsolicitedEnd int) {
	if unsolicitedEnd > from {
		if err := c.sendDataOutSeq(t, pdu.ReservedTag, uint32(from), uint32(unsolicitedEnd-from)); err != nil {
			return
		}
	}
	if t.r2ts == nil {
		return
	}
	for {
		select {
		case r2t := <-t.r2ts:
			if err := c.sendDataOutSeq(t, r2t.TTT, r2t.BufferOffset, r2t.DesiredDataTransferLength); err != nil {
				return
			}
		case <-t.done:
			return
		case <-c.dead:
			return
		}
	}
}

// sendDataOutSeq sends one Data-Out sequence: PDUs no larger than the
// target's MaxRecvDataSegmentLength, DataSN from 0, F on the last. The PDUs
// are queued dataOutBatch bytes at a time under one hold of the send lock,
// so that they leave in one write system call instead of one each.
func (c *conn) sendDataOutSeq(t *task, ttt, off, length uint32) error {
	seg := uint32(c.params.TargetMaxRecvDataSegmentLength)
	var d pdu.DataOut
	var dataSN uint32
	for sent := uint32(0); sent < length; {
		expStatSN, _, err := c.lockSendLive()
		if err != nil {
			return err
		}
		for batch := uint32(0); sent < length && batch < dataOutBatch && err == nil; {
			n := min(seg, length-sent)
			d = pdu.DataOut{
				Final: sent+n == length, LUN: t.lun, ITT: t.itt, TTT: ttt,
				ExpStatSN: expStatSN, DataSN: dataSN, BufferOffset: off + sent,
				Data: t.writeBuf[off+sent : off+sent+n],
			}
			err = c.queueLocked(&d)
			dataSN++
			sent += n
			batch += n
		}
		c.unlockSend(true)
		if err != nil {
			c.fail(err)
		}
		if err := c.deadErr(); err != nil {
			return err
		}
	}
	return nil
}

// dataOutBatch is how many bytes of Data-Out PDUs a sender queues before it
// lets the queue be written and other senders in.
const dataOutBatch = 256 << 10

// abort sends ABORT TASK for t and waits for the outcome; if the target does
// not answer in time the connection is dropped (the escalation continues in
// session recovery).
func (c *conn) abort(t *task, wait time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp, err := c.taskManagement(ctx, t, pdu.TMFAbortTask, t)
	switch {
	case err == nil && (resp == pdu.TMFRespComplete || resp == pdu.TMFRespNoTask):
		if gone := c.take(t.itt); gone != nil {
			c.finish(gone, taskResult{err: errTaskAborted})
		}
		return
	case errors.Is(err, errTaskDone):
		return // the command finished first; the TMF answer will still come
	case err == nil:
		// ABORT TASK refused: escalate to LOGICAL UNIT RESET, which ends
		// every task of the LU (RFC 7143 §11.5.1); they are re-issued.
		c.log.Warn("ABORT TASK refused; resetting the logical unit", "response", resp)
		resp, err = c.taskManagement(ctx, t, pdu.TMFLogicalUnitReset, nil)
		if err == nil && resp == pdu.TMFRespComplete {
			c.endLUNTasks(t.lun)
			return
		}
		c.log.Warn("LUN RESET failed; dropping the connection", "response", resp, "error", err)
	default:
		c.log.Warn("ABORT TASK failed; dropping the connection", "err", err)
	}
	c.fail(fmt.Errorf("task 0x%08x could not be aborted", t.itt))
}

// errTaskDone: the referenced task completed while its TMF was pending.
var errTaskDone = errors.New("task completed")

// taskManagement sends a TMF request for t's LUN (ref: the task it refers
// to, for ABORT TASK) and waits for the response.
func (c *conn) taskManagement(ctx context.Context, t *task, fn uint8, ref *task) (uint8, error) {
	tmf := newTask(taskTMF)
	err := c.send(ctx, tmf, sendOpts{immediate: true}, func(itt, cmdSN, expStatSN uint32) pdu.Message {
		req := &pdu.TaskMgmtReq{
			Immediate: true, Function: fn, LUN: t.lun, ITT: itt,
			ReferencedTaskTag: pdu.ReservedTag, CmdSN: cmdSN, ExpStatSN: expStatSN,
		}
		if ref != nil {
			req.ReferencedTaskTag, req.RefCmdSN = ref.itt, ref.cmdSN
		}
		return req
	})
	if err != nil {
		return 0, err
	}
	var refDone <-chan struct{}
	if ref != nil {
		refDone = ref.done
	}
	if err := c.awaitEither(ctx, tmf.done, refDone); err != nil {
		return 0, err
	}
	select {
	case <-tmf.done:
		return tmf.result.response, tmf.result.err
	default:
		return 0, errTaskDone
	}
}

// endLUNTasks finishes every SCSI task of a LU after a LUN RESET: the target
// ended them without a response; they are re-issued by the session.
func (c *conn) endLUNTasks(lun [8]byte) {
	c.mu.Lock()
	var ended []*task
	for itt, t := range c.tasks {
		if t.kind == taskSCSI && t.lun == lun {
			ended = append(ended, t)
			delete(c.tasks, itt)
		}
	}
	c.mu.Unlock()
	for _, t := range ended {
		t.detach()
		c.finish(t, taskResult{err: errTaskAborted})
	}
}

// sweepLoop aborts SCSI tasks past their deadline. One ticker per
// connection instead of a timer per command: a deadline is checked within a
// quarter of the timeout (at most a second) of passing.
func (c *conn) sweepLoop(timeout time.Duration) {
	period := min(max(timeout/4, 50*time.Millisecond), time.Second)
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-c.dead:
			return
		case <-tick.C:
		}
		now := time.Now().UnixNano()
		var expired []*task
		c.mu.Lock()
		for _, t := range c.tasks {
			if t.kind == taskSCSI && t.deadline != 0 && now > t.deadline && !t.expired {
				t.expired = true
				expired = append(expired, t)
			}
		}
		c.mu.Unlock()
		for _, t := range expired {
			c.goroutine(func() { c.expire(t) })
		}
	}
}

// expire aborts a task the target sits on (the abort drops the connection if
// the target does not answer); the waiting caller then sees errTaskAborted
// and the session decides whether to re-issue.
func (c *conn) expire(t *task) {
	c.log.Warn("command timed out; aborting it", "itt", t.itt, "timeout", t.timeout)
	// Abort before detaching: the reader may be stuck inside one of the
	// task's Data-In PDUs (holding the task) until the abort gives up and
	// drops the connection.
	c.abort(t, abortWait(t.timeout))
	t.detach()
}
