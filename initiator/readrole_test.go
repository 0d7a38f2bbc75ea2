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

// pdusRead is how many PDUs the session's callers (await) and readLoop
// have read so far (Stats).
func pdusRead(s *Session) (byCaller, byLoop uint64) {
	st := s.Stats()
	return st.PDUsReadByCaller, st.PDUsReceived - st.PDUsReadByCaller
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
		check   func(t *testing.T, byWaiter, byLoop uint64)
	}{
		{"one at a time", 1, 200, func(t *testing.T, byWaiter, byLoop uint64) {
			// readLoop may take one answer after the idle start of the
			// connection, and then gives the role back.
			if byWaiter < 190 {
				t.Errorf("%d of %d PDUs read by their waiter, want nearly all", byWaiter, byWaiter+byLoop)
			}
		}},
		{"many in flight", 16, 50, func(t *testing.T, byWaiter, byLoop uint64) {
			if byWaiter+byLoop < 16*50 {
				t.Errorf("%d PDUs read for %d reads", byWaiter+byLoop, 16*50)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			ft := newFakeTarget(t, 4<<20)
			s, l := fakeSession(t, ft, fakeConfig(t))
			waiter0, loop0 := pdusRead(s)
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
			waiter, loop := pdusRead(s)
			tt.check(t, waiter-waiter0, loop-loop0)
		})
	}
}

// TestReadRoleIdleConnection: once nobody waits, readLoop reads what comes:
// an answer to a command whose caller gave up, and the target's pings.
func TestReadRoleIdleConnection(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	ft.pingEvery = 30 * time.Millisecond
	s, l := fakeSession(t, ft, fakeConfig(t))
	ft.delay.Store(int64(100 * time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	_, err := l.ReadAtContext(ctx, make([]byte, 4096), 0)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	_, loop0 := pdusRead(s)
	byLoop := func() uint64 { _, n := pdusRead(s); return n - loop0 }
	deadline := time.Now().Add(5 * time.Second)
	for (ft.pings.Load() < 3 || byLoop() == 0) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := ft.pings.Load(); n < 3 {
		t.Errorf("%d target pings answered on an idle connection, want >= 3", n)
	}
	if byLoop() == 0 {
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
	s, l := fakeSession(t, ft, fakeConfig(t))
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

// TestReadRoleStress mixes what moves the read role around: readers and
// writers in parallel, reads whose context ends while they wait (often
// while they hold the role), target pings, answers that come late, and
// connection losses with recovery. Every call must return, every read must
// see what its worker last wrote, and nothing may be left running. With
// busy polling the role holder also corks the connection while it polls.
func TestReadRoleStress(t *testing.T) {
	for _, busyPoll := range []time.Duration{0, 200 * time.Microsecond} {
		t.Run(fmt.Sprintf("busy poll %v", busyPoll), func(t *testing.T) { readRoleStress(t, busyPoll) })
	}
}

func readRoleStress(t *testing.T, busyPoll time.Duration) {
	checkNoLeak(t)
	const (
		workers = 8
		region  = 64 << 10
	)
	ft := newFakeTarget(t, workers*region)
	ft.pingEvery = 5 * time.Millisecond
	cfg := fakeConfig(t)
	cfg.BusyPoll = busyPoll
	s, l := fakeSession(t, ft, cfg)
	want := make([][]byte, workers)
	ft.mu.Lock()
	for w := range want {
		want[w] = bytes.Clone(ft.disk[w*region : (w+1)*region])
	}
	ft.mu.Unlock()
	stop := make(chan struct{})
	var chaos sync.WaitGroup
	chaos.Add(1)
	go func() { // late answers now and then, two connection losses, then stop
		defer chaos.Done()
		defer close(stop)
		for i := range 20 {
			time.Sleep(30 * time.Millisecond)
			ft.delay.Store(int64(time.Duration(i%3) * time.Millisecond))
			if i == 5 || i == 12 {
				ft.dropAll()
			}
		}
		ft.delay.Store(0)
	}()
	errs := make(chan error, workers)
	var cancelled atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := int64(w * region)
			buf := make([]byte, 4096)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				off := int64((i * 7 % (region / 4096)) * 4096)
				switch i % 3 {
				case 0: // a write, then it is what reads must see
					for j := range buf {
						buf[j] = byte(w*31 + i + j)
					}
					if _, err := l.WriteAtContext(context.Background(), buf, base+off); err != nil {
						errs <- fmt.Errorf("worker %d: write: %w", w, err)
						return
					}
					copy(want[w][off:], buf)
				case 1: // a read that may be cancelled while it waits
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%4)*500*time.Microsecond)
					_, err := l.ReadAtContext(ctx, buf, base+off)
					cancel()
					if errors.Is(err, context.DeadlineExceeded) {
						cancelled.Add(1)
					} else if err != nil {
						errs <- fmt.Errorf("worker %d: cancelled read: %w", w, err)
						return
					}
					if err == nil && !bytes.Equal(buf, want[w][off:off+4096]) {
						errs <- fmt.Errorf("worker %d: read at %d returned other data", w, base+off)
						return
					}
				default:
					if _, err := l.ReadAtContext(context.Background(), buf, base+off); err != nil {
						errs <- fmt.Errorf("worker %d: read: %w", w, err)
						return
					}
					if !bytes.Equal(buf, want[w][off:off+4096]) {
						errs <- fmt.Errorf("worker %d: read at %d returned other data", w, base+off)
						return
					}
				}
			}
		}()
	}
	bounded(t, 60*time.Second, func() struct{} { wg.Wait(); chaos.Wait(); return struct{}{} })
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s.Reconnects() < 2 {
		t.Errorf("%d reconnects during the run, want 2", s.Reconnects())
	}
	if cancelled.Load() == 0 {
		t.Error("no read was cancelled while it waited")
	}
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if !bytes.Equal(ft.disk, bytes.Join(want, nil)) {
		t.Error("the target's disk differs from what the workers wrote")
	}
}
