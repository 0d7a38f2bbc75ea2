package initiator

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iscsifs/iscsifs/initiator/pdu"
)

// TestQueueLimit: TASK SET FULL lowers the depth below what was in flight,
// completing commands hand their slots in until it holds, and GOOD
// completions raise it again one at a time, no faster than rampUpWait.
func TestQueueLimit(t *testing.T) {
	q := newQueueLimit(8)
	ctx := context.Background()
	for range 6 {
		if err := q.acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// 6 in flight, one of them refused: 5 fit.
	if d := q.taskSetFull(); d != 5 {
		t.Fatalf("depth after TASK SET FULL with 6 in flight = %d, want 5", d)
	}
	if d := q.taskSetFull(); d != 0 {
		t.Fatalf("a second refusal of the same burst lowered the depth to %d", d)
	}
	q.release() // 5 in flight now; refused again: 4 fit
	if d := q.taskSetFull(); d != 4 {
		t.Fatalf("a refusal with 5 in flight = %d, want 4", d)
	}
	for range 5 {
		q.release()
	}
	for range 4 {
		if err := q.acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := q.acquire(short); err == nil {
		t.Fatal("a fifth command entered at depth 4")
	}
	for range rampUpGood {
		if d := q.succeeded(); d != 0 {
			t.Fatalf("raised to %d before rampUpWait", d)
		}
	}
	q.mu.Lock()
	q.changed = time.Now().Add(-2 * rampUpWait)
	q.mu.Unlock()
	if d := q.succeeded(); d != 5 {
		t.Fatalf("after rampUpWait and %d GOOD completions the depth is %d, want 5", rampUpGood, d)
	}
	if err := q.acquire(ctx); err != nil { // the fifth fits now
		t.Fatal(err)
	}
	for range 5 {
		q.release()
	}
	for range 3 {
		q.mu.Lock()
		q.changed = time.Now().Add(-2 * rampUpWait)
		q.good = rampUpGood
		q.mu.Unlock()
		q.succeeded()
	}
	if d := q.depth(); d != 8 || q.lowered.Load() || len(q.slots) != 0 {
		t.Errorf("back up: depth %d, lowered %v, %d tokens held; want 8, false, 0", d, q.lowered.Load(), len(q.slots))
	}
	if d := q.succeeded(); d != 0 {
		t.Errorf("raised past the configured depth to %d", d)
	}
}

// TestTaskSetFullLowersQueueDepth: a target whose task set holds 4 commands
// refuses the rest with TASK SET FULL; the session settles at about 4 in
// flight instead of retrying 28 commands with back-off over and over, and
// every read succeeds.
func TestTaskSetFullLowersQueueDepth(t *testing.T) {
	checkNoLeak(t)
	const taskSet, workers, reads = 4, 32, 20
	ft := newFakeTarget(t, 1<<20)
	ft.delay.Store(int64(2 * time.Millisecond))
	var armed atomic.Bool
	var refused atomic.Int32
	ft.onSCSI = func(c *fakeConn, m *pdu.SCSICommand) bool {
		if !armed.Load() {
			return false
		}
		ft.mu.Lock()
		full := ft.running > taskSet
		ft.mu.Unlock()
		if !full {
			return false
		}
		refused.Add(1)
		c.respond(m, 0x28, nil)
		return true
	}
	cfg := hostileConfig(t, nil)
	cfg.QueueDepth = workers
	s, l := fakeSession(t, ft, cfg)
	armed.Store(true)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range reads {
				if err := readBlock(t, ft, l, int64((w*reads+i)%256)*4096); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	bounded(t, 60*time.Second, func() struct{} { wg.Wait(); return struct{}{} })
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if d := s.QueueDepth(); d > taskSet+1 || d < 1 {
		t.Errorf("queue depth %d after the target refused beyond %d", d, taskSet)
	}
	// Without the lower depth every round of 32 commands has 28 refused.
	if n := refused.Load(); n > workers*reads/4 {
		t.Errorf("the target refused %d of %d reads", n, workers*reads)
	}
	t.Logf("queue depth %d, %d refusals for %d reads", s.QueueDepth(), refused.Load(), workers*reads)
}
