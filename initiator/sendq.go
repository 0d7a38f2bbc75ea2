package initiator

import (
	"net"
	"runtime"
	"time"
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
	sendMaxBatch = 4 << 20  // a sender waits for the writer beyond this
)

// Write queues p (called with the send lock held).
func (q *sendQueue) Write(p []byte) (int, error) {
	q.size += len(p)
	if len(p) > sendCopyMax {
		q.segs = append(q.segs, p)
		q.tailArena = false
		return len(p), nil
	}
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

// reset empties the queue, keeping its arena.
func (q *sendQueue) reset() {
	clear(q.segs) // drop references to callers' buffers
	q.segs = q.segs[:0]
	q.cur, q.used, q.size, q.tailArena = 0, 0, 0, false
}

// queueWriter lets the pdu.Writer write into whichever queue is current.
type queueWriter struct{ c *conn }

func (w queueWriter) Write(p []byte) (int, error) { return w.c.sq.Write(p) }

// writeLoop is the connection's only writer of the socket.
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
		q := c.sq
		if q.size == 0 {
			c.sendMu.Unlock()
			continue
		}
		c.sq, c.spare = c.spare, q
		c.sendMu.Unlock()

		segs := q.segs // WriteTo consumes its receiver
		_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := segs.WriteTo(c.nc)
		q.reset()
		c.sendMu.Lock()
		c.spare = q
		c.flushed.Broadcast()
		c.sendMu.Unlock()
		if err != nil {
			if c.hooks != nil && c.hooks.writerFailing != nil {
				c.hooks.writerFailing()
			}
			c.fail(err)
			return
		}
	}
}
