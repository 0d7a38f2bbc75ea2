package initiator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// readRoleSession opens a session on a fake target that counts who reads
// the connection's PDUs (see await).
func readRoleSession(t *testing.T, ft *fakeTarget) (s *Session, l *LUN, byWaiter, byLoop *atomic.Int64) {
	t.Helper()
	byWaiter, byLoop = new(atomic.Int64), new(atomic.Int64)
	cfg := fakeConfig(t)
	cfg.hooks = &testHooks{pduRead: func(w bool) {
		if w {
			byWaiter.Add(1)
		} else {
			byLoop.Add(1)
		}
	}}
	s, l = fakeSession(t, ft, cfg)
	return s, l, byWaiter, byLoop
}

// TestWaiterReadsItsAnswer: a command alone on the connection has its
// answer read by the goroutine that waits for it, not handed over by
// readLoop; with many in flight the waiters and readLoop share the reading
// and every command still gets its own data.
func TestWaiterReadsItsAnswer(t *testing.T) {
	tests := []struct {
		name    string
		workers int
		reads   int
		check   func(t *testing.T, byWaiter, byLoop int64)
	}{
		{"one at a time", 1, 200, func(t *testing.T, byWaiter, byLoop int64) {
			// readLoop may take one answer after the idle start of the
			// connection, and then gives the role back.
			if byWaiter < 190 {
				t.Errorf("%d of %d PDUs read by their waiter, want nearly all", byWaiter, byWaiter+byLoop)
			}
		}},
		{"many in flight", 16, 50, func(t *testing.T, byWaiter, byLoop int64) {
			if byWaiter+byLoop < 16*50 {
				t.Errorf("%d PDUs read for %d reads", byWaiter+byLoop, 16*50)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			ft := newFakeTarget(t, 4<<20)
			_, l, byWaiter, byLoop := readRoleSession(t, ft)
			byWaiter.Store(0)
			byLoop.Store(0)
			errs := make(chan error, tt.workers)
			var wg sync.WaitGroup
			for w := range tt.workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 4096)
					for i := range tt.reads {
						off := int64((w*tt.reads+i)*4096) % int64(len(ft.disk))
						if _, err := l.ReadAtContext(context.Background(), buf, off); err != nil {
							errs <- err
							return
						}
						if !bytes.Equal(buf, ft.disk[off:off+4096]) {
							errs <- fmt.Errorf("read at %d returned other data", off)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			tt.check(t, byWaiter.Load(), byLoop.Load())
		})
	}
}

// TestReadRoleIdleConnection: once nobody waits, readLoop reads what comes:
// an answer to a command whose caller gave up, and the target's pings.
func TestReadRoleIdleConnection(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	ft.pingEvery = 30 * time.Millisecond
	s, l, _, byLoop := readRoleSession(t, ft)
	ft.delay.Store(int64(100 * time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	_, err := l.ReadAtContext(ctx, make([]byte, 4096), 0)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	byLoop.Store(0)
	deadline := time.Now().Add(5 * time.Second)
	for (ft.pings.Load() < 3 || byLoop.Load() == 0) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := ft.pings.Load(); n < 3 {
		t.Errorf("%d target pings answered on an idle connection, want >= 3", n)
	}
	if byLoop.Load() == 0 {
		t.Error("readLoop read nothing on an idle connection")
	}
	// The abandoned command left nothing behind.
	for s.Stats().InFlight > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.Stats().InFlight; n != 0 {
		t.Errorf("%d commands still outstanding", n)
	}
}

// TestReadRoleCancelKeepsConnection: a waiter holding the read role while
// it waits for a late answer returns promptly when its context ends, and
// leaves the stream framed: the late answer is read by someone else and
// the connection goes on, with no reconnect.
func TestReadRoleCancelKeepsConnection(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	s, l, _, _ := readRoleSession(t, ft)
	ft.delay.Store(int64(200 * time.Millisecond))
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		start := time.Now()
		_, err := l.ReadAtContext(ctx, make([]byte, 4096), 0)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 150*time.Millisecond {
			t.Errorf("cancelled read returned after %v", d)
		}
	}
	ft.delay.Store(0)
	buf := make([]byte, 4096)
	if _, err := l.ReadAtContext(context.Background(), buf, 8192); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, ft.disk[8192:8192+4096]) {
		t.Fatal("read after cancelled ones returned other data")
	}
	if n := s.Reconnects(); n != 0 {
		t.Errorf("%d reconnects: cancelling a waiter broke the connection", n)
	}
}
