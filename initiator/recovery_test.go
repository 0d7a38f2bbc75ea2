package initiator

// Session recovery at ERL 0 against the fake target: keep-alive, back-off,
// reinstatement with the same ISID, re-issue of reads and writes, device
// identity checks, the replacement timeout and Close during an outage.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iscsifs/iscsifs/initiator/pdu"
)

// switchDial is a Config.Dial that refuses connections while down is set
// (the portal is unreachable) and counts attempts.
type switchDial struct {
	down     atomic.Bool
	attempts atomic.Int32
	mu       sync.Mutex
	times    []time.Time
}

func (d *switchDial) dial(ctx context.Context, network, address string) (net.Conn, error) {
	d.attempts.Add(1)
	d.mu.Lock()
	d.times = append(d.times, time.Now())
	d.mu.Unlock()
	if d.down.Load() {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused (test)")}
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, address)
}

func (d *switchDial) attemptTimes() []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]time.Time(nil), d.times...)
}

// waitFor polls cond every 5 ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// TestRecoveryKeepAliveSilentTarget: a target that keeps the socket open but
// stops answering is noticed by the NOP-Out ping within KeepAlive +
// KeepAliveWait (plus the half-interval tick), and the session is
// reinstated.
func TestRecoveryKeepAliveSilentTarget(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	var silent atomic.Bool
	var pings atomic.Int32
	ft.onPDU = func(c *fakeConn, raw *pdu.Raw) bool {
		if raw.BHS.Opcode() == pdu.OpNOPOut && raw.BHS.ITT() != pdu.ReservedTag {
			pings.Add(1)
			return silent.Load() // swallowed: no NOP-In
		}
		return false
	}
	var logs logBuffer
	cfg := hostileConfig(t, &logs)
	cfg.KeepAlive = 200 * time.Millisecond
	cfg.KeepAliveWait = 300 * time.Millisecond
	s, l := fakeSession(t, ft, cfg)

	// Answered pings keep an idle session as it is.
	time.Sleep(4 * cfg.KeepAlive)
	if pings.Load() == 0 || s.Reconnects() != 0 {
		t.Fatalf("%d pings, %d reconnects while the target answered", pings.Load(), s.Reconnects())
	}

	silent.Store(true)
	start := time.Now()
	if !waitFor(5*time.Second, func() bool { return s.State() != StateLoggedIn || s.Reconnects() > 0 }) {
		t.Fatal("a silent target was not noticed")
	}
	window := cfg.KeepAlive + cfg.KeepAlive/2 + cfg.KeepAliveWait
	if d := time.Since(start); d > window+300*time.Millisecond {
		t.Errorf("noticed after %v, want within %v", d, window)
	}
	silent.Store(false)
	if !waitFor(5*time.Second, func() bool { return s.Reconnects() > 0 && s.State() == StateLoggedIn }) {
		t.Fatalf("not reconnected: state %s", s.State())
	}
	if err := readBlock(t, ft, l, 4096); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "keep-alive") {
		t.Errorf("the log does not say the keep-alive failed:\n%s", logs.String())
	}
}

// TestRecoveryReinstatesSameISID: every reconnect logs in with the ISID of
// the first login and TSIH 0, so the target replaces the old session
// (RFC 7143 §6.3.5) instead of keeping it next to a new one.
func TestRecoveryReinstatesSameISID(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	s, l := fakeSession(t, ft, hostileConfig(t, nil))
	for i := range 3 {
		ft.dropAll()
		if err := bounded(t, 10*time.Second, func() error { return readBlock(t, ft, l, 0) }); err != nil {
			t.Fatal(err)
		}
		if s.Reconnects() != i+1 {
			t.Fatalf("%d reconnects after %d drops", s.Reconnects(), i+1)
		}
	}
	recs := ft.loginRecords()
	if len(recs) < 4 {
		t.Fatalf("%d login requests", len(recs))
	}
	for i, r := range recs {
		if r.isid != recs[0].isid || r.tsih != 0 {
			t.Errorf("login request %d: ISID %x TSIH %d, want %x and 0", i, r.isid, r.tsih, recs[0].isid)
		}
	}
	if recs[0].isid[0]>>6 != 2 {
		t.Errorf("ISID %x is not of the random format (T=10b)", recs[0].isid)
	}
}

// TestRecoveryBackoff: while the portal refuses connections, reconnect
// attempts start at once and then back off (growing gaps, no busy loop); when
// it accepts again the session comes back by itself.
func TestRecoveryBackoff(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	var sd switchDial
	cfg := hostileConfig(t, nil)
	cfg.Dial = sd.dial
	cfg.ReplacementTimeout = time.Minute
	s, l := fakeSession(t, ft, cfg)
	base := sd.attempts.Load()

	sd.down.Store(true)
	lost := time.Now()
	ft.dropAll()
	time.Sleep(3 * time.Second)
	times := sd.attemptTimes()[base:]
	if len(times) < 3 || len(times) > 8 {
		t.Fatalf("%d reconnect attempts in 3 s, want a handful", len(times))
	}
	if first := times[0].Sub(lost); first > 500*time.Millisecond {
		t.Errorf("first reconnect attempt %v after the loss, want at once", first)
	}
	for i := 2; i < len(times); i++ {
		prev, gap := times[i-1].Sub(times[i-2]), times[i].Sub(times[i-1])
		if gap < prev-20*time.Millisecond || gap > reconnectMaxDelay+time.Second {
			t.Errorf("attempt gaps %v then %v: want growing, at most %v", prev, gap, reconnectMaxDelay)
		}
	}
	if s.State() != StateRecovering {
		t.Errorf("state %q during the outage", s.State())
	}

	sd.down.Store(false)
	back := time.Now()
	if err := bounded(t, 15*time.Second, func() error { return readBlock(t, ft, l, 4096) }); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(back); d > reconnectMaxDelay+2*time.Second {
		t.Errorf("back %v after the portal returned, want within the back-off cap %v", d, reconnectMaxDelay)
	}
	if s.Reconnects() != 1 {
		t.Errorf("%d reconnects", s.Reconnects())
	}
}

// TestRecoveryWritesAcrossLoss: writes in flight when the connection drops
// (twice) are re-issued; every byte ends up where it was written.
func TestRecoveryWritesAcrossLoss(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 8<<20)
	ft.delay.Store(int64(20 * time.Millisecond))
	s, l := fakeSession(t, ft, hostileConfig(t, nil))
	const workers, rounds = 8, 12
	region := int64(len(ft.disk)) / workers
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	want := make([][]byte, workers)
	for w := range workers {
		want[w] = make([]byte, region)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				chunk := region / rounds / 512 * 512
				data := bytes.Repeat([]byte{byte(w*rounds + r + 1)}, int(chunk))
				off := int64(w)*region + int64(r)*chunk
				if _, err := l.WriteAtContext(context.Background(), data, off); err != nil {
					errs <- fmt.Errorf("worker %d round %d: %w", w, r, err)
					return
				}
				copy(want[w][int64(r)*chunk:], data)
			}
		}()
	}
	for range 2 {
		time.Sleep(60 * time.Millisecond)
		ft.dropAll()
	}
	bounded(t, 30*time.Second, func() bool { wg.Wait(); return true })
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ft.mu.Lock()
	defer ft.mu.Unlock()
	for w := range workers {
		chunk := region / rounds / 512 * 512
		got := ft.disk[int64(w)*region : int64(w)*region+chunk*rounds]
		if !bytes.Equal(got, want[w][:chunk*rounds]) {
			t.Fatalf("worker %d: the disk differs from what was written", w)
		}
	}
	if s.Reconnects() < 1 {
		t.Errorf("%d reconnects", s.Reconnects())
	}
}

// TestRecoveryDeviceChanged: a LUN that reports another serial number after
// a reconnect is another disk: I/O fails with ErrDeviceChanged and the
// session stays unavailable rather than write to it.
func TestRecoveryDeviceChanged(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	ft.setSerial("SERIAL-A")
	s, l := fakeSession(t, ft, hostileConfig(t, nil))
	if l.Serial != "SERIAL-A" {
		t.Fatalf("serial %q", l.Serial)
	}
	ft.setSerial("SERIAL-B")
	ft.dropAll()
	_, err := boundedCall(t, 15*time.Second, func() (int, error) {
		return l.WriteAtContext(context.Background(), make([]byte, 512), 0)
	})
	var ue *SessionUnavailableError
	if !errors.Is(err, ErrDeviceChanged) || !errors.As(err, &ue) {
		t.Fatalf("got %v, want ErrDeviceChanged in a SessionUnavailableError", err)
	}
	if s.State() != StateUnavailable {
		t.Errorf("state %q", s.State())
	}
	ft.mu.Lock()
	zero := bytes.Count(ft.disk[:512], []byte{0})
	ft.mu.Unlock()
	if zero == 512 {
		t.Fatal("the write reached the changed device")
	}
}

// TestRecoveryUnavailableThenBack: a target that goes silent (socket open,
// no answers, logins hang) makes I/O fail with a SessionUnavailableError
// within command timeout + abort + replacement timeout; when it answers
// again the same session serves I/O without a new Login call.
func TestRecoveryUnavailableThenBack(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	var silent atomic.Bool
	ft.onPDU = func(c *fakeConn, raw *pdu.Raw) bool {
		if m := command(raw); m != nil && silent.Load() {
			c.accept(m)
		}
		return silent.Load()
	}
	ft.onLogin = func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
		if silent.Load() {
			return loginHandled // no answer
		}
		return loginDefault
	}
	cfg := hostileConfig(t, nil)
	cfg.CommandTimeout = 300 * time.Millisecond
	cfg.ReplacementTimeout = 700 * time.Millisecond
	// A login attempt that hangs longer than the replacement timeout must
	// not delay it.
	cfg.LoginTimeout = 3 * time.Second
	s, l := fakeSession(t, ft, cfg)

	silent.Store(true)
	start := time.Now()
	err := bounded(t, 20*time.Second, func() error { return readBlock(t, ft, l, 4096) })
	var ue *SessionUnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("got %v, want SessionUnavailableError", err)
	}
	// Timeout (+ the sweep), the abort's bound, then the replacement timeout.
	limit := 3*cfg.CommandTimeout + cfg.ReplacementTimeout + 500*time.Millisecond
	if d := time.Since(start); d > limit {
		t.Errorf("failed after %v, want within %v", d, limit)
	}
	// New I/O fails at once while the target is away.
	start = time.Now()
	if err := readBlock(t, ft, l, 0); !errors.As(err, &ue) || time.Since(start) > 100*time.Millisecond {
		t.Errorf("I/O during the outage: %v after %v, want a prompt SessionUnavailableError", err, time.Since(start))
	}

	silent.Store(false)
	if !waitFor(15*time.Second, func() bool { return s.State() == StateLoggedIn }) {
		t.Fatalf("not back: state %q", s.State())
	}
	if err := readBlock(t, ft, l, 4096); err != nil {
		t.Fatal(err)
	}
}

// outage starts a session whose portal then becomes unreachable (the
// connection is dropped and new ones are refused until sd.down is cleared).
func outage(t *testing.T, replacement time.Duration) (*fakeTarget, *switchDial, *Session, *LUN) {
	t.Helper()
	ft := newFakeTarget(t, 1<<20)
	sd := new(switchDial)
	cfg := hostileConfig(t, nil)
	cfg.Dial = sd.dial
	cfg.ReplacementTimeout = replacement
	s, l := fakeSession(t, ft, cfg)
	sd.down.Store(true)
	ft.dropAll()
	return ft, sd, s, l
}

// TestRecoveryFailFast: with the replacement timeout disabled (<0, the
// CLI's --replacement-timeout 0), I/O fails at once while the portal is
// gone and works again when it is back.
func TestRecoveryFailFast(t *testing.T) {
	checkNoLeak(t)
	ft, sd, s, l := outage(t, -1)
	start := time.Now()
	err := bounded(t, 10*time.Second, func() error { return readBlock(t, ft, l, 0) })
	var ue *SessionUnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("got %v, want SessionUnavailableError", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("failing fast took %v", d)
	}
	sd.down.Store(false)
	if !waitFor(10*time.Second, func() bool { return s.State() == StateLoggedIn }) {
		t.Fatalf("not back: %q", s.State())
	}
	if err := readBlock(t, ft, l, 0); err != nil {
		t.Fatal(err)
	}
}

// TestRecoveryCloseDuringOutage: Close while the session is reconnecting
// returns promptly, ends the reconnect loop, and fails waiting I/O with
// ErrSessionClosed; nothing is left running.
func TestRecoveryCloseDuringOutage(t *testing.T) {
	checkNoLeak(t)
	_, sd, s, l := outage(t, time.Minute)
	errc := make(chan error, 1)
	go func() {
		_, err := l.ReadAtContext(context.Background(), make([]byte, 512), 0)
		errc <- err
	}()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	bounded(t, 5*time.Second, func() error { return s.Close(context.Background()) })
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v during an outage", d)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrSessionClosed) {
			t.Errorf("waiting read: %v, want ErrSessionClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting read did not end with Close")
	}
	n := sd.attempts.Load()
	time.Sleep(2 * reconnectFirstDelay * 4)
	if sd.attempts.Load() != n {
		t.Error("reconnect attempts go on after Close")
	}
}

// TestRecoveryCancelDuringOutage: a caller's context bounds its wait for a
// reconnect.
func TestRecoveryCancelDuringOutage(t *testing.T) {
	checkNoLeak(t)
	_, sd, _, l := outage(t, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := boundedCall(t, 5*time.Second, func() (int, error) {
		return l.ReadAtContext(ctx, make([]byte, 512), 0)
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("cancelled wait returned after %v", d)
	}
	sd.down.Store(false)
}

// A target that refuses to reinstate the session (login with the old ISID
// answered "session does not exist") gets a new session with a new ISID.
func TestRecoveryNewSessionWhenReinstatementRefused(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	var first [6]byte
	var refused atomic.Int32
	ft.onLogin = func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
		if first == ([6]byte{}) {
			first = req.ISID
			return loginDefault
		}
		if req.ISID == first && refused.Load() < 1000 && c.ft.refuseOld.Load() {
			refused.Add(1)
			c.send(&pdu.LoginResp{CSG: req.CSG, NSG: req.NSG, ISID: req.ISID, ITT: req.ITT, StatSN: c.nextStat(), StatusClass: 2, StatusDetail: 0x0a})
			return loginClose
		}
		return loginDefault
	}
	s, l := fakeSession(t, ft, hostileConfig(t, nil))
	ft.refuseOld.Store(true)
	ft.dropAll()
	if err := bounded(t, 10*time.Second, func() error { return readBlock(t, ft, l, 0) }); err != nil {
		t.Fatal(err)
	}
	if refused.Load() != 1 || s.Reconnects() != 1 {
		t.Fatalf("refused %d logins, %d reconnects; want 1 and 1", refused.Load(), s.Reconnects())
	}
	recs := ft.loginRecords()
	last := recs[len(recs)-1]
	if last.isid == first || last.isid[0]>>6 != 2 {
		t.Errorf("new session ISID %x (first %x)", last.isid, first)
	}
}

// A timed-out command whose ABORT TASK the target refuses escalates to LUN
// RESET, and is then re-issued and completes, without dropping the
// connection.
func TestRecoveryLUNResetEscalation(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	ft.tmfResponse = func(fn uint8) uint8 {
		if fn == pdu.TMFAbortTask {
			return pdu.TMFRespNotSupported
		}
		return pdu.TMFRespComplete
	}
	var stalled atomic.Int32
	ft.onSCSI = func(c *fakeConn, m *pdu.SCSICommand) bool {
		// Sit on the first READ(10) of LBA 8 only.
		return m.CDB[0] == 0x28 && m.CDB[5] == 8 && stalled.Add(1) == 1
	}
	cfg := hostileConfig(t, nil)
	cfg.CommandTimeout = 300 * time.Millisecond
	s, l := fakeSession(t, ft, cfg)
	buf := make([]byte, 512)
	if err := bounded(t, 10*time.Second, func() error {
		_, err := l.ReadAtContext(context.Background(), buf, 8*512)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, ft.disk[8*512:9*512]) {
		t.Error("wrong data after the LUN reset")
	}
	ft.mu.Lock()
	seen := append([]uint8(nil), ft.tmfs...)
	ft.mu.Unlock()
	if !slices.Equal(seen, []uint8{pdu.TMFAbortTask, pdu.TMFLogicalUnitReset}) {
		t.Errorf("TMF functions %v, want ABORT TASK then LUN RESET", seen)
	}
	if s.Reconnects() != 0 {
		t.Errorf("%d reconnects, want the LUN reset to keep the connection", s.Reconnects())
	}
}
