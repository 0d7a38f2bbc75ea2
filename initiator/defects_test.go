package initiator

// Tests of defects found in the session core (issue 15), each of which
// failed before its fix.

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iscsifs/iscsifs/initiator/pdu"
)

// TestVPDLongPage: a VPD page longer than 255 bytes is read whole (its
// length is 4 + the 16-bit PAGE LENGTH), at open and when a reconnect
// checks the LUN's identity.
func TestVPDLongPage(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	serial := strings.Repeat("0123456789", 30) // PAGE LENGTH 0x012c
	ft.setSerial(serial)
	s, l := fakeSession(t, ft, hostileConfig(t, nil))
	if l.Serial != serial {
		t.Fatalf("serial of %d bytes read as %d bytes", len(serial), len(l.Serial))
	}
	ft.dropAll()
	// The reconnection reads the serial again and finds the same one.
	if !waitFor(10*time.Second, func() bool { return s.Reconnects() == 1 && s.State() == StateLoggedIn }) {
		t.Fatalf("state %q after %d reconnects", s.State(), s.Reconnects())
	}
	if err := readBlock(t, ft, l, 0); err != nil {
		t.Fatal(err)
	}
}

// TestCloseWhileRecoveryInstalls: a Close that comes while recovery holds a
// new connection, logged in and checked but not yet installed, ends that
// connection too: none outlives Close.
func TestCloseWhileRecoveryInstalls(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	cfg := hostileConfig(t, nil)
	var session atomic.Pointer[Session]
	closed := make(chan error, 1)
	cfg.hooks = &testHooks{recovered: func() {
		s := session.Load()
		go func() { closed <- s.Close(context.Background()) }()
		waitFor(5*time.Second, func() bool { return s.State() == StateClosed })
	}}
	s, _ := fakeSession(t, ft, cfg)
	session.Store(s)
	ft.dropAll()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if waitFor(time.Second, func() bool { c := s.current(); return c != nil && c.deadErr() == nil }) {
		t.Fatal("a connection of the closed session is alive")
	}
}

// TestCloseWhileWriteIsQueued: Close while a write that needs a Data-Out
// goroutine has just been queued. The goroutine must not be started after
// Close waited for the connection's goroutines (a WaitGroup Add racing its
// Wait, which the race detector reports); the write fails with
// ErrSessionClosed.
func TestCloseWhileWriteIsQueued(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	ft.keys["InitialR2T"] = "Yes"
	ft.keys["ImmediateData"] = "No"
	cfg := fakeConfig(t)
	var session atomic.Pointer[Session]
	var once sync.Once
	cfg.hooks = &testHooks{queued: func() {
		s := session.Load()
		if s == nil {
			return
		}
		once.Do(func() {
			go s.Close(context.Background())
			// No synchronisation with Close on purpose: the write goes on
			// as a caller's goroutine would, some time later.
			time.Sleep(300 * time.Millisecond)
		})
	}}
	s, l := fakeSession(t, ft, cfg)
	session.Store(s)
	_, err := boundedCall(t, 10*time.Second, func() (int, error) {
		return l.WriteAtContext(context.Background(), make([]byte, 4096), 0)
	})
	if !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("write: %v, want ErrSessionClosed", err)
	}
}

// stalledWrites starts a session whose target stops reading (and so its
// TCP window closes) and writes that pile up beyond the send queue's
// bound: some writers wait for the writer goroutine, which waits for the
// socket. It returns the session, the connection and the writes' results.
func stalledWrites(t *testing.T, cfg Config) (*fakeTarget, *Session, *conn, chan error, func()) {
	t.Helper()
	const writes, size = 256, 256 << 10
	ft := newFakeTarget(t, writes*size)
	ft.window = 2 * writes
	var stalled atomic.Bool
	stall := make(chan struct{})
	var unstallOnce sync.Once
	unstall := func() {
		unstallOnce.Do(func() {
			stalled.Store(false)
			close(stall)
		})
	}
	ft.onPDU = func(c *fakeConn, raw *pdu.Raw) bool {
		if stalled.Load() {
			<-stall
		}
		return false
	}
	t.Cleanup(unstall) // before the fake target closes (cleanups run last first)
	cfg.QueueDepth = writes
	s, l := fakeSession(t, ft, cfg)
	c := s.current()
	stalled.Store(true)
	errs := make(chan error, writes)
	data := bytes.Repeat([]byte{0x5a}, size)
	for i := range writes {
		if i == writes/2 {
			// The first half stalls the writer (all of it may be in the
			// batch it writes); the second half stays in the queue.
			time.Sleep(200 * time.Millisecond)
		}
		go func() {
			_, err := l.WriteAtContext(context.Background(), data, int64(i)*size)
			errs <- err
		}()
	}
	if !waitFor(10*time.Second, func() bool {
		c.sendMu.Lock()
		defer c.sendMu.Unlock()
		return c.sq.size > sendMaxBatch
	}) {
		t.Fatal("the send queue did not fill up")
	}
	return ft, s, c, errs, unstall
}

// TestSenderWaitingForWriterSeesFailure: a sender that found the send queue
// full checks that the connection is alive and then waits for the writer;
// when the connection fails in between (here: the writer's own write
// fails), the failure must still wake it. Before the fix the broadcast came
// without the lock the wait is guarded by and was lost: the write hung.
func TestSenderWaitingForWriterSeesFailure(t *testing.T) {
	checkNoLeak(t)
	var armed, writerFailed, hit atomic.Bool
	inWindow := make(chan struct{})
	var windowOnce sync.Once
	cfg := fakeConfig(t)
	cfg.hooks = &testHooks{
		writerFailing: func() {
			if !armed.Load() {
				return
			}
			writerFailed.Store(true)
			select {
			case <-inWindow: // a sender is between its check and its wait
			case <-time.After(5 * time.Second):
			}
		},
		flushWait: func(c *conn) {
			if !writerFailed.Load() {
				return
			}
			windowOnce.Do(func() {
				hit.Store(true)
				close(inWindow)
				// Let the writer fail the connection (and, before the fix,
				// broadcast) before this sender waits.
				waitFor(5*time.Second, func() bool { return c.deadErr() != nil })
				time.Sleep(50 * time.Millisecond)
			})
		},
	}
	_, s, c, errs, unstall := stalledWrites(t, cfg)
	armed.Store(true)
	_ = c.nc.SetWriteDeadline(time.Now()) // the writer's write fails
	if !waitFor(5*time.Second, writerFailed.Load) {
		t.Fatal("the writer's write did not fail")
	}
	unstall() // the next connection is served
	for range cap(errs) {
		if err := bounded(t, 15*time.Second, func() error { return <-errs }); err != nil {
			t.Errorf("write: %v", err)
		}
	}
	if !hit.Load() {
		t.Error("no sender waited after the writer failed: the test did not test")
	}
	if s.Reconnects() != 1 {
		t.Errorf("%d reconnects, want 1", s.Reconnects())
	}
}

// TestCloseDuringStalledWrite: Close while the target has stopped reading
// and writers wait for the send queue returns within its context (its
// Logout does not queue behind the data), the writes fail with
// ErrSessionClosed, and no goroutine is left.
func TestCloseDuringStalledWrite(t *testing.T) {
	checkNoLeak(t)
	_, s, _, errs, _ := stalledWrites(t, fakeConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	err := bounded(t, 10*time.Second, func() error { return s.Close(ctx) })
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close took %v with a 2 s context", d)
	}
	t.Logf("Close: %v after %v", err, time.Since(start).Round(time.Millisecond))
	for range cap(errs) {
		if err := bounded(t, 5*time.Second, func() error { return <-errs }); !errors.Is(err, ErrSessionClosed) {
			t.Fatalf("write: %v, want ErrSessionClosed", err)
		}
	}
}

// TestCloseWaitsForRecovery: Close during a reconnection whose login hangs
// cancels the login and returns only when the reconnection has ended.
func TestCloseWaitsForRecovery(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	var hang atomic.Bool
	var inDial atomic.Int32
	var dialDone atomic.Bool
	cfg := hostileConfig(t, nil)
	cfg.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		if !hang.Load() {
			var d net.Dialer
			return d.DialContext(ctx, network, address)
		}
		inDial.Add(1)
		<-ctx.Done()
		time.Sleep(200 * time.Millisecond) // a slow teardown
		dialDone.Store(true)
		return nil, ctx.Err()
	}
	s, _ := fakeSession(t, ft, cfg)
	hang.Store(true)
	ft.dropAll()
	if !waitFor(5*time.Second, func() bool { return inDial.Load() > 0 }) {
		t.Fatal("no reconnection attempt")
	}
	closePromptly(t, s, 2*time.Second)
	if !dialDone.Load() {
		t.Error("Close returned while the reconnection was still running")
	}
}

// closePromptly closes s and fails the test unless Close succeeds within d.
func closePromptly(t *testing.T, s *Session, d time.Duration) {
	t.Helper()
	start := time.Now()
	if err := bounded(t, d+5*time.Second, func() error { return s.Close(context.Background()) }); err != nil {
		t.Errorf("Close: %v", err)
	}
	if took := time.Since(start); took > d {
		t.Errorf("Close took %v, want at most %v", took, d)
	}
}

// TestCloseWaitsForRefresh: Close waits for a capacity refresh in progress
// (here: in the OnResize callback), and bounds the wait by its context.
func TestCloseWaitsForRefresh(t *testing.T) {
	checkNoLeak(t)
	// refreshing returns a session whose LUN's OnResize callback has just
	// started and takes 300 ms, and whether the callback has returned.
	refreshing := func() (*Session, *atomic.Bool) {
		ft := newFakeTarget(t, 1<<20)
		s, l := fakeSession(t, ft, hostileConfig(t, nil))
		entered := make(chan struct{})
		left := new(atomic.Bool)
		l.OnResize(func(int64) {
			close(entered)
			time.Sleep(300 * time.Millisecond)
			left.Store(true)
		})
		ft.growAnnounced(1 << 20)
		select {
		case <-entered:
		case <-time.After(5 * time.Second):
			t.Fatal("no resize")
		}
		return s, left
	}

	s, left := refreshing()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with a context shorter than the refresh: %v, want DeadlineExceeded", err)
	}
	if left.Load() {
		t.Error("the refresh ended before the context did")
	}

	s, left = refreshing()
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("Close: %v", err)
	}
	if !left.Load() {
		t.Error("Close returned while a refresh was running")
	}
}

// TestForce16LargeLUN: a LUN of 2^32 blocks or more is read and written
// with READ/WRITE(16) only, as Linux's sd does, also where the LBA would fit
// the 10-byte commands.
func TestForce16LargeLUN(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	ft.lastLBA16.Store(1 << 32) // 2^32+1 blocks
	_, l := fakeSession(t, ft, fakeConfig(t))
	if l.Size() != (1<<32+1)*512 {
		t.Fatalf("size %d", l.Size())
	}
	if _, err := l.WriteAtContext(context.Background(), make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := readBlock(t, ft, l, 0); err != nil {
		t.Fatal(err)
	}
	ft.mu.Lock()
	ops := maps.Clone(ft.cdbOps)
	ft.mu.Unlock()
	if ops[0x28] != 0 || ops[0x2a] != 0 || ops[0x88] == 0 || ops[0x8a] == 0 {
		t.Errorf("READ(10) %d, WRITE(10) %d, READ(16) %d, WRITE(16) %d; want only the 16-byte commands",
			ops[0x28], ops[0x2a], ops[0x88], ops[0x8a])
	}
}

// TestCloseDuringRecoveryLogin: Close while a reconnection's login waits
// for a target that accepted the connection but never answers returns at
// once and leaves nothing running.
func TestCloseDuringRecoveryLogin(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	var silent atomic.Bool
	var logins atomic.Int32
	ft.onLogin = func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
		if !silent.Load() {
			return loginDefault
		}
		logins.Add(1)
		return loginHandled // no answer: the initiator waits
	}
	cfg := hostileConfig(t, nil)
	cfg.LoginTimeout = time.Minute
	s, _ := fakeSession(t, ft, cfg)
	silent.Store(true)
	ft.dropAll()
	if !waitFor(5*time.Second, func() bool { return logins.Load() > 0 }) {
		t.Fatal("no login attempt")
	}
	closePromptly(t, s, time.Second)
}
