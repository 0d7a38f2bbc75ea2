package initiator

import (
	"errors"
	"net"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// sendQueue collects the bytes of PDUs written under the send lock; the
// connection's writer goroutine hands them to the kernel in batches with one
// writev, so concurrent commands share system calls and senders never wait
// for the socket. Small pieces (headers, digests, small data) are copied;
// large data segments are referenced, which is safe because a task's buffer
// stays untouched until the target has answered, and the target can only
// answer after the data was written.
type sendQueue struct {
	segs      net.Buffers
	chunks    [][]byte // arena chunks for copied pieces
	cur       int      // chunk being filled
	used      int      // bytes used in chunks[cur]
	tailArena bool     // the last segment is arena memory ending at used
	tailStart int
	size      int // bytes queued
}

const (
	sendChunk    = 64 << 10 // arena chunk size
	sendCopyMax  = 16 << 10 // pieces up to this size are copied
	sendRefMin   = 1 << 10  // a command's data from this size on is referenced
	sendMaxBatch = 4 << 20  // a sender waits for the writer beyond this
)

// Write queues p (called with the send lock held).
func (q *sendQueue) Write(p []byte) (int, error) {
	if len(p) > sendCopyMax {
		q.ref(p)
		return len(p), nil
	}
	q.size += len(p)
	if q.cur == len(q.chunks) {
		q.chunks = append(q.chunks, make([]byte, sendChunk))
	}
	if sendChunk-q.used < len(p) {
		q.cur++
		q.used = 0
		q.tailArena = false
		if q.cur == len(q.chunks) {
			q.chunks = append(q.chunks, make([]byte, sendChunk))
		}
	}
	chunk := q.chunks[q.cur]
	start := q.used
	q.used += copy(chunk[start:], p)
	if q.tailArena {
		q.segs[len(q.segs)-1] = chunk[q.tailStart:q.used]
	} else {
		q.segs = append(q.segs, chunk[start:q.used])
		q.tailStart, q.tailArena = start, true
	}
	return len(p), nil
}

// ref queues p without copying it: p must stay unchanged until the batch
// is written (see waitSent).
func (q *sendQueue) ref(p []byte) {
	q.size += len(p)
	q.segs = append(q.segs, p)
	q.tailArena = false
}

// reset empties the queue, keeping its arena.
func (q *sendQueue) reset() {
	clear(q.segs) // drop references to callers' buffers
	q.segs = q.segs[:0]
	q.cur, q.used, q.size, q.tailArena = 0, 0, 0, false
}

// queueWriter lets the pdu.Writer write into whichever queue is current.
type queueWriter struct{ c *conn }

func (w queueWriter) Write(p []byte) (int, error) { return w.c.sq.Write(p) }

// WriteSegments queues one PDU. The data segment of a command's own data
// (c.taskData) is referenced from sendRefMin bytes on: the task's buffer
// stays untouched until the command has finished and its batches are
// written (waitSent), and copying it would cost a pass over every byte
// written (tgt takes 8 KiB per Data-Out PDU). Other data, such as a NOP-Out
// echoing the target's ping from the read buffer, is copied up to
// sendCopyMax.
func (w queueWriter) WriteSegments(head, data, trailer []byte) error {
	q := w.c.sq
	q.Write(head)
	if w.c.taskData && len(data) >= sendRefMin {
		q.ref(data)
	} else if len(data) > 0 {
		q.Write(data)
	}
	if len(trailer) > 0 {
		q.Write(trailer)
	}
	return nil
}

// maxInlineRounds bounds how many batches a sender writes inline (its own
// PDUs, then what others queued meanwhile) before it hands the socket to the
// writer goroutine and returns to its own command.
const maxInlineRounds = 4

// writeInline writes the queue from the sender's goroutine, called with
// sendMu held and c.writing just set by the caller. An idle connection then
// costs no goroutine hand-off per command: that is most of the latency of a
// command at queue depth 1. The writes never block: what the socket does not
// take at once, or what keeps coming after maxInlineRounds batches, goes to
// the writer goroutine, which alone waits for the socket (a target that
// stopped reading holds up only the writer, never a sender). Returns with
// sendMu held; c.writing is cleared or owned by the writer.
func (c *conn) writeInline() {
	if c.raw == nil {
		c.handToWriter()
		return
	}
	for round := 0; ; round++ {
		q, gen := c.takeBatchLocked()
		c.inWrite = true
		c.sendMu.Unlock()
		rest, err := c.writeNonBlocking(q.segs)
		c.sendMu.Lock()
		c.inWrite = false
		if err != nil {
			c.writing = false
			c.batchDoneLocked(q, gen)
			c.sendMu.Unlock()
			c.fail(err)
			c.sendMu.Lock()
			return
		}
		if len(rest) > 0 {
			if c.hooks != nil && c.hooks.inlineRest != nil {
				c.hooks.inlineRest()
			}
			c.rest, c.restQ, c.restGen = rest, q, gen
			c.handToWriter()
			return
		}
		c.batchDoneLocked(q, gen)
		if c.sq.size == 0 {
			c.writing = false
			return
		}
		if round+1 >= maxInlineRounds {
			c.handToWriter()
			return
		}
	}
}

// flushLocked writes what is queued, inline, unless a write is in progress
// (its owner writes the queue too). Called with sendMu held.
func (c *conn) flushLocked() {
	if c.sq.size > 0 && !c.writing {
		c.writing = true
		c.writeInline()
	}
}

// takeBatchLocked takes the queue for writing and returns it with its number.
func (c *conn) takeBatchLocked() (*sendQueue, uint64) {
	q, gen := c.sq, c.sqGen
	c.sq, c.spare = c.spare, q
	c.sqGen++
	return q, gen
}

// batchDoneLocked records that the write of batch gen ended (its buffers are
// no longer in use) and wakes who waits for it.
func (c *conn) batchDoneLocked(q *sendQueue, gen uint64) {
	q.reset()
	c.sentGen = max(c.sentGen, gen)
	c.flushed.Broadcast()
}

// waitSent returns once no write of what is queued now is in progress: the
// batches queued so far are written, or the connection failed and no write
// system call is running any more. A write command calls it before it
// returns, because the queue references its buffer (sendQueue).
func (c *conn) waitSent() {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.flushLocked() // what the cork holds back
	target := c.sqGen - 1
	if c.sq.size > 0 {
		target = c.sqGen
	}
	// fail broadcasts flushed after the connection is marked dead.
	for c.sentGen < target && (c.inWrite || c.writing && c.deadErr() == nil) {
		c.flushed.Wait()
	}
}

// handToWriter makes the writer goroutine the owner of c.writing.
func (c *conn) handToWriter() {
	select {
	case c.flushCh <- struct{}{}:
	default:
	}
}

// errWouldBlock: the socket was not ready for the write at all (its write
// deadline has passed); the writer goroutine takes the batch.
var errWouldBlock = errors.New("socket not writable now")

// writeNonBlocking writes segs with writev until the socket buffer is full
// and returns what is left. Errors are those of the socket. Only the owner
// of c.writing calls it.
func (c *conn) writeNonBlocking(segs net.Buffers) (net.Buffers, error) {
	w := &c.nbw
	w.segs, w.err, w.called = segs, nil, false
	err := c.raw.Write(w.fn)
	segs, werr, called := w.segs, w.err, w.called
	w.segs, w.err = nil, nil
	if !called {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return segs, nil
		}
		return segs, err
	}
	return segs, werr
}

// nonBlockingWrite is writeNonBlocking's state and the callback it gives
// raw.Write, built once per connection: a closure over the function's
// locals would be allocated on every write.
type nonBlockingWrite struct {
	c      *conn
	segs   net.Buffers
	err    error
	called bool
	fn     func(fd uintptr) bool
}

func (w *nonBlockingWrite) init(c *conn) {
	w.c = c
	w.fn = w.writeFD
}

// writeFD writes w.segs until done or the socket buffer is full.
func (w *nonBlockingWrite) writeFD(fd uintptr) bool {
	w.called = true
	for len(w.segs) > 0 {
		iov := w.segs
		if len(iov) > maxIOV {
			iov = iov[:maxIOV]
		}
		n, err := rawWritev(int(fd), iov)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return true
		case err != nil:
			w.err = err
			return true
		}
		if w.c.stats != nil {
			w.c.stats.sendWrites.Add(1)
		}
		w.segs = consumed(w.segs, n)
	}
	return true
}

// consumed drops the first n bytes of segs.
func consumed(segs net.Buffers, n int) net.Buffers {
	for len(segs) > 0 && n >= len(segs[0]) {
		n -= len(segs[0])
		segs = segs[1:]
	}
	if len(segs) > 0 && n > 0 {
		segs[0] = segs[0][n:]
	}
	return segs
}

// maxIOV is the kernel's limit on iovecs per writev (UIO_MAXIOV).
const maxIOV = 1024

// writeLoop is the connection's writer goroutine: it owns the socket while
// it is handed a batch that could not be written inline, waits for the
// socket as long as writeTimeout allows, and writes what is queued until
// the queue is empty.
func (c *conn) writeLoop() {
	for {
		select {
		case <-c.flushCh:
		case <-c.dead:
			return
		}
		// Let senders that are ready to run queue their PDUs first: one
		// write for many commands.
		runtime.Gosched()
		c.sendMu.Lock()
		for {
			var segs net.Buffers
			q, gen := c.restQ, c.restGen
			if q != nil {
				segs = c.rest
				c.rest, c.restQ = nil, nil
			} else if c.sq.size > 0 {
				q, gen = c.takeBatchLocked()
				segs = q.segs
			} else {
				c.writing = false
				c.flushed.Broadcast()
				break
			}
			c.inWrite = true
			c.sendMu.Unlock()
			_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
			n, err := segs.WriteTo(c.nc)
			if n > 0 && c.stats != nil { // as writeNonBlocking: only writes that sent bytes
				c.stats.sendWrites.Add(1)
			}
			if err == nil {
				// No stale deadline for the inline writes that follow.
				_ = c.nc.SetWriteDeadline(time.Time{})
			}
			c.sendMu.Lock()
			c.inWrite = false
			c.batchDoneLocked(q, gen)
			if err != nil {
				c.writing = false
				c.sendMu.Unlock()
				if c.hooks != nil && c.hooks.writerFailing != nil {
					c.hooks.writerFailing()
				}
				c.fail(err)
				return
			}
		}
		c.sendMu.Unlock()
	}
}
