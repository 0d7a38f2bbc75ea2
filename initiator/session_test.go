package initiator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func fakeConfig(t testing.TB) Config {
	return Config{
		InitiatorName: "iqn.2026-11.test:unit",
		Logger:        slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		LoginTimeout:  5 * time.Second,
		KeepAlive:     -1,
	}
}

// checkNoLeak fails when goroutines started by the test outlive it.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("%d goroutines leaked:\n%s", n-before, buf)
		}
	})
}

func fakeSession(t *testing.T, ft *fakeTarget, cfg Config) (*Session, *LUN) {
	t.Helper()
	portal := ft.start()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Login(ctx, portal, "iqn.2026-11.test:fake", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	l, err := s.OpenLUN(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	return s, l
}

func TestSessionDataPaths(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(ft *fakeTarget)
		force16 bool
	}{
		{"defaults", func(*fakeTarget) {}, false},
		{"16-byte CDBs", func(*fakeTarget) {}, true},
		{"small data-in segments", func(ft *fakeTarget) { ft.splitDataIn = 4096 }, false},
		{"separate scsi response", func(ft *fakeTarget) { ft.separateRsp = true }, false},
		{"initial r2t, no immediate data", func(ft *fakeTarget) {
			ft.keys["InitialR2T"] = "Yes"
			ft.keys["ImmediateData"] = "No"
		}, false},
		{"unsolicited data", func(ft *fakeTarget) {
			ft.keys["InitialR2T"] = "No"
			ft.keys["FirstBurstLength"] = "16384"
		}, false},
		{"target mrdsl 512", func(ft *fakeTarget) { ft.keys["MaxRecvDataSegmentLength"] = "512" }, false},
		{"window of 1", func(ft *fakeTarget) { ft.window = 1 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			ft := newFakeTarget(t, 8<<20)
			tt.setup(ft)
			s, l := fakeSession(t, ft, fakeConfig(t))
			l.force16.Store(tt.force16)
			ctx := context.Background()
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for w := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					off := int64(w) * 512 * 1024
					data := bytes.Repeat([]byte{byte(w + 1)}, 300*1024+7)
					if _, err := l.WriteAtContext(ctx, data, off+3); err != nil {
						errs <- err
						return
					}
					got := make([]byte, len(data))
					if _, err := l.ReadAtContext(ctx, got, off+3); err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(got, data) {
						errs <- errors.New("read back differs")
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			ft.mu.Lock()
			used16 := ft.cdbOps[0x88] > 0 && ft.cdbOps[0x8a] > 0
			used10 := ft.cdbOps[0x28] > 0 && ft.cdbOps[0x2a] > 0
			ft.mu.Unlock()
			if used16 != tt.force16 || used10 == tt.force16 {
				t.Errorf("READ/WRITE(16) used %v, (10) used %v, force16 %v", used16, used10, tt.force16)
			}
			if n := ft.overruns.Load(); n > 0 {
				t.Errorf("%d commands sent beyond MaxCmdSN", n)
			}
			if ft.window > 1 && s.PeakInFlight() < 2 {
				t.Errorf("peak in flight %d, want > 1", s.PeakInFlight())
			}
			if err := s.Close(ctx); err != nil {
				t.Errorf("logout: %v", err)
			}
		})
	}
}

func TestSessionAnswersTargetPing(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	ft.pingEvery = 20 * time.Millisecond
	fakeSession(t, ft, fakeConfig(t))
	deadline := time.Now().Add(3 * time.Second)
	for ft.pings.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := ft.pings.Load(); n < 3 {
		t.Fatalf("%d pings answered, want >= 3", n)
	}
}

func TestSessionCancelledRead(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	_, l := fakeSession(t, ft, fakeConfig(t))
	ft.delay.Store(int64(300 * time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	buf := make([]byte, 4096)
	start := time.Now()
	_, err := l.ReadAtContext(ctx, buf, 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("cancelled read returned after %v", d)
	}
	// The buffer is not written after the call returned.
	for i := range buf {
		buf[i] = 0xee
	}
	time.Sleep(400 * time.Millisecond)
	for _, b := range buf {
		if b != 0xee {
			t.Fatal("the reader wrote into the buffer of a cancelled read")
		}
	}
	ft.delay.Store(0)
	if _, err := l.ReadAtContext(context.Background(), buf, 0); err != nil {
		t.Fatalf("read after a cancelled one: %v", err)
	}
}

func TestSessionConnectionLoss(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	s, l := fakeSession(t, ft, fakeConfig(t))
	ft.delay.Store(int64(200 * time.Millisecond))
	done := make(chan error, 1)
	buf := make([]byte, 4096)
	go func() {
		_, err := l.ReadAtContext(context.Background(), buf, 4096)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	ft.dropAll()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read across a connection loss: %v", err)
		}
		if !bytes.Equal(buf, ft.disk[4096:8192]) {
			t.Fatal("read across a connection loss returned wrong data")
		}
		if n := s.Reconnects(); n != 1 {
			t.Errorf("%d reconnects, want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read hung after the connection dropped")
	}
}

func TestSessionReplacementTimeout(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	cfg := fakeConfig(t)
	cfg.ReplacementTimeout = 300 * time.Millisecond
	s, l := fakeSession(t, ft, cfg)
	addr := ft.ln.Addr().String()
	ft.ln.Close() // the target is gone: reconnects are refused
	ft.dropAll()
	start := time.Now()
	buf := make([]byte, 512)
	_, err := l.ReadAtContext(context.Background(), buf, 0)
	var ue *SessionUnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("got %v, want SessionUnavailableError", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("failing took %v with a 300ms replacement timeout", d)
	}
	if s.State() != StateUnavailable {
		t.Errorf("state %q", s.State())
	}
	// The target comes back on the same address: I/O works again without a
	// new session.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	ft.ln = ln
	ft.start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = l.ReadAtContext(context.Background(), buf, 0)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("I/O after the target came back: %v", err)
	}
	if s.State() != StateLoggedIn || s.Reconnects() != 1 {
		t.Errorf("state %q, %d reconnects", s.State(), s.Reconnects())
	}
}

func TestDiscoveryContinuation(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	var text strings.Builder
	for _, name := range []string{"iqn.2026-11.a:one", "iqn.2026-11.a:two", "iqn.2026-11.a:three"} {
		text.WriteString("TargetName=" + name + "\x00")
		text.WriteString("TargetAddress=127.0.0.1:3260,1\x00")
		text.WriteString("TargetAddress=[::1]:3261,2\x00")
	}
	ft.sendTargets = text.String()
	ft.textChunk = 37 // cut inside key=value pairs, as tgt does
	portal := ft.start()
	got, err := Discover(context.Background(), portal, fakeConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[2].Name != "iqn.2026-11.a:three" || len(got[1].Portals) != 2 ||
		got[1].Portals[1] != (Portal{Address: "[::1]:3261", Group: 2}) {
		t.Fatalf("discovered %+v", got)
	}
}

func TestParseTargetAddress(t *testing.T) {
	tests := []struct {
		in       string
		hostPort string
		tpgt     int
		bad      bool
	}{
		{"127.0.0.1:3260,1", "127.0.0.1:3260", 1, false},
		{"127.0.0.1,1", "127.0.0.1:3260", 1, false},
		{"127.0.0.1", "127.0.0.1:3260", -1, false},
		{"[fe80::1]:3261,12", "[fe80::1]:3261", 12, false},
		{"[::1]", "[::1]:3260", -1, false},
		{"storage.example:3260", "storage.example:3260", -1, false},
		{"", "", 0, true},
		{"host:99999", "", 0, true},
		{"host:3260,x", "", 0, true},
	}
	for _, tt := range tests {
		hp, tpgt, err := parseTargetAddress(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("%q: no error", tt.in)
			}
			continue
		}
		if err != nil || hp != tt.hostPort || tpgt != tt.tpgt {
			t.Errorf("%q: got %q %d %v, want %q %d", tt.in, hp, tpgt, err, tt.hostPort, tt.tpgt)
		}
	}
}

func TestSessionStats(t *testing.T) {
	ft := newFakeTarget(t, 1<<20)
	s, l := fakeSession(t, ft, fakeConfig(t))
	before := s.Stats()
	buf := make([]byte, 64<<10)
	for range 10 {
		if _, err := l.ReadAtContext(context.Background(), buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.WriteAtContext(context.Background(), buf, 0); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Commands-before.Commands != 11 || st.ReadBytes-before.ReadBytes != 10*64<<10 || st.WriteBytes-before.WriteBytes != 64<<10 {
		t.Errorf("stats %+v (before %+v)", st, before)
	}
	if st.LatencyP50 <= 0 || st.LatencyP99 < st.LatencyP50 || st.LatencyP999 < st.LatencyP99 || st.State != StateLoggedIn {
		t.Errorf("latency %v %v %v, state %q", st.LatencyP50, st.LatencyP99, st.LatencyP999, st.State)
	}
	if sum := st.LatencySum - before.LatencySum; sum <= 0 || sum > time.Duration(st.Commands-before.Commands)*st.LatencyP999 {
		t.Errorf("latency sum %v for %d commands (p99.9 %v)", sum, st.Commands-before.Commands, st.LatencyP999)
	}
}

func TestPercentile(t *testing.T) {
	b := make([]uint64, latencyBuckets)
	b[3], b[10] = 99, 1 // 99 under 8 µs, one under 1024 µs
	tests := []struct {
		q    float64
		want time.Duration
	}{{0.5, 8 * time.Microsecond}, {0.99, 8 * time.Microsecond}, {0.999, 1024 * time.Microsecond}}
	for _, tt := range tests {
		if got := percentile(b, 100, tt.q); got != tt.want {
			t.Errorf("p%v = %v, want %v", tt.q, got, tt.want)
		}
	}
	if percentile(b, 0, 0.5) != 0 {
		t.Error("empty histogram")
	}
}

// TestSessionStateText: every state's JSON form is its String, and reads back.
func TestSessionStateText(t *testing.T) {
	for _, tc := range []struct {
		st   SessionState
		text string
	}{
		{StateLoggedIn, "logged-in"},
		{StateRecovering, "recovering"},
		{StateUnavailable, "unavailable"},
		{StateClosed, "closed"},
	} {
		b, err := json.Marshal(Stats{State: tc.st})
		if err != nil || !strings.Contains(string(b), `"state":"`+tc.text+`"`) {
			t.Errorf("%v: %s %v", tc.st, b, err)
		}
		var back Stats
		if err := json.Unmarshal(b, &back); err != nil || back.State != tc.st {
			t.Errorf("%s read back as %v: %v", b, back.State, err)
		}
	}
	var st SessionState
	if err := st.UnmarshalText([]byte("dancing")); err == nil {
		t.Error("an unknown state was accepted")
	}
}
