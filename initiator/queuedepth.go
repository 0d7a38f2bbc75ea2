package initiator

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// When to raise a lowered queue depth again by one: after this many GOOD
// completions and at least this long since the last change.
const (
	rampUpGood = 256
	rampUpWait = time.Second
)

// queueLimit bounds the commands in flight (Config.QueueDepth) and lowers the
// bound when the target answers TASK SET FULL: its task set holds fewer
// commands than we send, and every refused command costs a round trip and a
// back-off. The new depth is what was in flight when the target refused, less
// the refused command; it comes back up one at a time while commands succeed.
// Linux's SCSI midlayer does the same for iscsi_tcp (track_queue_depth).
//
// The bound is a channel of tokens; lowering it parks tokens that
// completing commands hand in instead of returning (debt), so no command
// waits for the change.
type queueLimit struct {
	slots   chan struct{}
	debt    atomic.Int32 // tokens still to park; read lock-free on every release
	lowered atomic.Bool  // parked + debt > 0; read lock-free on every completion

	mu      sync.Mutex
	parked  int // tokens held back: the depth is cap(slots) - parked - debt
	good    int // GOOD completions since the last change
	changed time.Time
	warned  time.Time // last time a lowering was logged as a warning
}

func newQueueLimit(depth int) *queueLimit {
	return &queueLimit{slots: make(chan struct{}, depth)}
}

// acquire takes a slot for one command.
func (q *queueLimit) acquire(ctx context.Context) error {
	select {
	case q.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// release gives a command's slot back, or parks it while the depth is being
// lowered.
func (q *queueLimit) release() {
	if q.debt.Load() > 0 {
		q.mu.Lock()
		if q.debt.Load() > 0 {
			q.debt.Add(-1)
			q.parked++
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
	}
	<-q.slots
}

// warnNow reports whether a lowering should be a warning rather than a debug
// message: at most one warning every 10 s, so that a target that stays
// overloaded does not flood the log.
func (q *queueLimit) warnNow() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if time.Since(q.warned) < 10*time.Second {
		return false
	}
	q.warned = time.Now()
	return true
}

// depth is the current bound.
func (q *queueLimit) depth() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.depthLocked()
}

func (q *queueLimit) depthLocked() int {
	return cap(q.slots) - q.parked - int(q.debt.Load())
}

// taskSetFull lowers the depth below what is in flight now, the refused
// command's slot included (it is called before that slot is released), and
// returns the new depth, or 0 when it was already that low.
func (q *queueLimit) taskSetFull() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	cur := q.depthLocked()
	inFlight := len(q.slots) - q.parked
	// Not simply cur-1: the refusals of one burst arrive together, and each
	// would take one more off.
	want := max(1, inFlight-1)
	if want >= cur {
		return 0
	}
	q.debt.Add(int32(cur - want))
	q.lowered.Store(true)
	q.good, q.changed = 0, time.Now()
	return want
}

// succeeded counts a GOOD completion and raises a lowered depth by one when
// enough went by; it returns the new depth, or 0 when nothing changed.
func (q *queueLimit) succeeded() int {
	if !q.lowered.Load() {
		return 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.good++
	if q.good < rampUpGood || time.Since(q.changed) < rampUpWait {
		return 0
	}
	switch {
	case q.debt.Load() > 0:
		q.debt.Add(-1)
	case q.parked > 0:
		q.parked--
		<-q.slots // a parked token leaves: one more command may enter
	default:
		return 0
	}
	q.good, q.changed = 0, time.Now()
	q.lowered.Store(q.parked > 0 || q.debt.Load() > 0)
	return q.depthLocked()
}
