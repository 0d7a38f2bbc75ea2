package initiator

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFailover: when the portal in use goes away (listener closed,
// connections dropped), reads in flight and new ones go on through the
// other portal of the same target, without an error; the paths show it.
func TestFailover(t *testing.T) {
	checkNoLeak(t)
	fastProbes(t)
	ft, p1, p2 := twoPortalTarget(t, 4<<20, "lu-1")
	ctx := context.Background()
	s, l := twoPathSession(t, p1, p2)
	if got := s.Paths(); len(got) != 2 || got[0].State != PathActive || got[1].State != PathStandby {
		t.Fatalf("paths before the failure: %+v", got)
	}

	// Readers keep reading while the first portal goes away.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				off := int64((i*16+n)%60) * int64(len(buf))
				if _, err := l.ReadAtContext(ctx, buf, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf, ft.disk[off:off+int64(len(buf))]) {
					errs <- errors.New("read returned other data")
					return
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	ft.ln.Close()
	ft.dropAll()
	if !waitFor(10*time.Second, func() bool { return s.Reconnects() > 0 && s.State() == StateLoggedIn }) {
		t.Fatalf("no failover: state %v, paths %+v", s.State(), s.Paths())
	}
	time.Sleep(100 * time.Millisecond) // reads on the new path
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("I/O during the failover: %v", err)
	}
	if s.Portal() != p2 {
		t.Errorf("portal %s after the failover, want %s", s.Portal(), p2)
	}
	got := s.Paths()
	if got[0].State != PathFailed || got[0].LastError == "" || got[1].State != PathActive || got[1].Logins != 1 {
		t.Errorf("paths after the failover: %+v", got)
	}
	// The first portal comes back: standby again, the session stays put.
	if _, _, err := ft.listenAlso(p1); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool { return s.Paths()[0].State == PathStandby }) {
		t.Errorf("the first path did not come back: %+v", s.Paths())
	}
	if s.Portal() != p2 {
		t.Errorf("portal %s after the first came back, want %s (no failback)", s.Portal(), p2)
	}
}

// TestFailoverRefusesAnotherLU: a path that leads to another logical unit
// (another serial behind the same target name) is never used; the session
// waits for its own path, and comes back through it.
func TestFailoverRefusesAnotherLU(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	ft.setSerial("lu-1")
	p1 := ft.start()
	other := newFakeTarget(t, 1<<20)
	other.setSerial("lu-2")
	p2 := other.start()
	ctx := context.Background()
	s, l := twoPathSession(t, p1, p2)
	ft.ln.Close()
	ft.dropAll()
	if !waitFor(10*time.Second, func() bool { return s.Paths()[1].State == PathWrongLU }) {
		t.Fatalf("the path to another LU was not refused: %+v", s.Paths())
	}
	if s.Reconnects() != 0 || s.State() == StateLoggedIn {
		t.Fatalf("the session used the path to another LU: state %v, %d reconnects", s.State(), s.Reconnects())
	}
	// The first portal comes back.
	if _, _, err := ft.listenAlso(p1); err != nil {
		t.Fatal(err)
	}
	if !waitFor(15*time.Second, func() bool { return s.State() == StateLoggedIn && s.Reconnects() == 1 }) {
		t.Fatalf("not back on the first path: state %v, paths %+v", s.State(), s.Paths())
	}
	buf := make([]byte, 4096)
	if _, err := l.ReadAtContext(ctx, buf, 0); err != nil || !bytes.Equal(buf, ft.disk[:4096]) {
		t.Fatalf("read after coming back: %v", err)
	}
	if s.Portal() != p1 {
		t.Errorf("portal %s, want %s", s.Portal(), p1)
	}
}

// TestPathList: the URL's portal first, the others after it, without
// duplicates; a portal without a port gets 3260.
func TestPathList(t *testing.T) {
	paths := newPaths("10.0.0.1:3260", []string{"10.0.0.2", "10.0.0.1:3260", "[fd00::1]:3261", "10.0.0.2:3260"})
	var got []string
	for _, p := range paths {
		got = append(got, p.portal)
	}
	want := []string{"10.0.0.1:3260", "10.0.0.2:3260", "[fd00::1]:3261"}
	if len(got) != len(want) {
		t.Fatalf("paths %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("paths %q, want %q", got, want)
		}
	}
}

// twoPathSession logs in at p1 with p2 as the other path and opens LUN 0.
func twoPathSession(t *testing.T, p1, p2 string) (*Session, *LUN) {
	t.Helper()
	return twoPathSessionWith(t, p1, p2, fakeConfig(t))
}

// twoPathSessionWith is twoPathSession with cfg as the base configuration.
func twoPathSessionWith(t *testing.T, p1, p2 string, cfg Config) (*Session, *LUN) {
	t.Helper()
	cfg.Portals = []string{p2}
	cfg.ReplacementTimeout = 20 * time.Second
	ctx := context.Background()
	s, err := Login(ctx, p1, "iqn.2026-11.test:fake", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(ctx) })
	l, err := s.OpenLUN(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	return s, l
}

// TestPathsFromSendTargets: with DiscoverPortals, the portals the target
// lists for itself become paths (after the configured ones), and failover
// uses them; without it they stay out.
func TestPathsFromSendTargets(t *testing.T) {
	checkNoLeak(t)
	ft, p1, p2 := twoPortalTarget(t, 1<<20, "")
	ft.sendTargets = "TargetName=iqn.2026-11.test:fake\x00TargetAddress=" + p1 + ",1\x00TargetAddress=" + p2 + ",1\x00" +
		"TargetName=iqn.2026-11.test:other\x00TargetAddress=127.0.0.1:9,1\x00"
	ctx := context.Background()
	cfg := fakeConfig(t)
	s, err := Login(ctx, p1, "iqn.2026-11.test:fake", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Paths(); len(got) != 1 {
		t.Errorf("paths without DiscoverPortals: %+v", got)
	}
	s.Close(ctx)

	cfg = fakeConfig(t)
	cfg.DiscoverPortals = true
	cfg.ReplacementTimeout = 20 * time.Second
	s, err = Login(ctx, p1, "iqn.2026-11.test:fake", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	got := s.Paths()
	if len(got) != 2 || got[0].Portal != p1 || got[1].Portal != p2 {
		t.Fatalf("paths: %+v, want %s then %s", got, p1, p2)
	}
	l, err := s.OpenLUN(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	ft.ln.Close()
	ft.dropAll()
	buf := make([]byte, 4096)
	if _, err := l.ReadAtContext(ctx, buf, 8192); err != nil || !bytes.Equal(buf, ft.disk[8192:8192+4096]) {
		t.Fatalf("read after the first portal went: %v", err)
	}
	if s.Portal() != p2 {
		t.Errorf("portal %s, want %s", s.Portal(), p2)
	}
}

// TestPathsFromEveryPortal: with DiscoverPortals, every known portal is
// asked for the target's portals, as tgt lists only the one asked: a
// portal only the second path's answer names becomes a third path.
func TestPathsFromEveryPortal(t *testing.T) {
	checkNoLeak(t)
	ft, p1, p2 := twoPortalTarget(t, 1<<20, "")
	p3, _, err := ft.listenAlso("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ft.sendTargetsAt = func(portal string) string {
		text := "TargetName=iqn.2026-11.test:fake\x00TargetAddress=" + portal + ",1\x00"
		if portal == p2 {
			text += "TargetAddress=" + p3 + ",2\x00"
		}
		return text
	}
	cfg := fakeConfig(t)
	cfg.DiscoverPortals = true
	cfg.Portals = []string{p2}
	ctx := context.Background()
	s, err := Login(ctx, p1, "iqn.2026-11.test:fake", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := s.Paths()
		if len(got) == 3 && got[2].Portal == p3 && got[2].State == PathStandby {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("paths: %+v, want %s, %s, %s", got, p1, p2, p3)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMultipathPathJoins: a portal that does not answer when the
// multipath LUN opens is tried again in the background; once it answers it
// joins and carries commands, and a portal to another LU never joins.
func TestMultipathPathJoins(t *testing.T) {
	fastProbes(t)
	checkNoLeak(t)
	ft, p1, p2 := targetAndDeadPortal(t)
	ctx := context.Background()
	m, err := OpenMultipath(ctx, "iqn.2026-11.test:fake", []string{p1, p2}, 0, fakeConfig(t), SelectRoundRobin)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := m.Paths(); len(got) != 2 || got[1].State != PathFailed || got[1].Failures < 1 || got[1].LastError == "" {
		t.Fatalf("paths at open: %+v", got)
	}
	if _, _, err := ft.listenAlso(p2); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(m.Sessions()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the second path did not join: %+v", m.Paths())
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 512)
	for range 8 {
		if _, err := m.ReadAtContext(ctx, buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	got := m.Paths()
	if len(got) != 2 || got[1].Portal != p2 || got[1].State != PathActive || got[1].Commands == 0 {
		t.Errorf("paths after the join: %+v", got)
	}
}

// TestFailoverLogNamesNewPortal: once the session has failed over, its log
// lines name the portal now in use, not the one it was opened with.
func TestFailoverLogNamesNewPortal(t *testing.T) {
	checkNoLeak(t)
	ft, p1, p2 := twoPortalTarget(t, 1<<20, "lu-1")
	logs := &logBuffer{}
	cfg := fakeConfig(t)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	_, l := twoPathSessionWith(t, p1, p2, cfg)
	ctx := context.Background()
	ft.ln.Close()
	ft.dropPortal(p1)
	if _, err := l.ReadAtContext(ctx, make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	// Recovery logs the line after it has installed the connection, which
	// may be after the re-issued read completed.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), "session re-established") && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	var found bool
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(line, "session re-established") {
			found = true
			if !strings.Contains(line, "portal="+p2) || strings.Contains(line, "portal="+p1) {
				t.Errorf("after failover to %s: %s", p2, line)
			}
		}
	}
	if !found {
		t.Errorf("no re-established line in:\n%s", logs.String())
	}
}

// TestMultipathCloseDuringJoin: Close while a left-out path's login hangs
// (the portal, refusing at open, now accepts connections and never
// answers) returns at once and leaves no goroutine behind.
func TestMultipathCloseDuringJoin(t *testing.T) {
	fastProbes(t)
	checkNoLeak(t)
	_, p1, p2 := targetAndDeadPortal(t)
	cfg := fakeConfig(t)
	cfg.LoginTimeout = 30 * time.Second
	m, err := OpenMultipath(context.Background(), "iqn.2026-11.test:fake", []string{p1, p2}, 0, cfg, SelectQueueLength)
	if err != nil {
		t.Fatal(err)
	}
	silent, err := net.Listen("tcp", p2)
	if err != nil {
		m.Close()
		t.Skipf("port %s taken meanwhile: %v", p2, err)
	}
	defer silent.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := silent.Accept(); err == nil {
			accepted <- c // read nothing, answer nothing
		}
	}()
	select {
	case c := <-accepted: // the retry is in its login now
		defer c.Close()
	case <-time.After(5 * time.Second):
		m.Close()
		t.Fatal("the left-out path was not tried again")
	}
	start := time.Now()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v while a path's login hung", d)
	}
}

// targetAndDeadPortal starts a 1 MiB fake target and returns it, its
// portal, and an address where nothing listens (yet).
func targetAndDeadPortal(t *testing.T) (*fakeTarget, string, string) {
	t.Helper()
	ft := newFakeTarget(t, 1<<20)
	p1 := ft.start()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p2 := ln.Addr().String()
	ln.Close()
	return ft, p1, p2
}

// fastProbes makes failed paths be tried every 50 ms during the test.
func fastProbes(t *testing.T) {
	interval := pathProbeInterval
	pathProbeInterval = 50 * time.Millisecond
	t.Cleanup(func() { pathProbeInterval = interval })
}

// twoPortalTarget starts a fake target of size bytes (with serial, if not
// empty) listening on two portals.
func twoPortalTarget(t *testing.T, size int, serial string) (*fakeTarget, string, string) {
	t.Helper()
	ft := newFakeTarget(t, size)
	if serial != "" {
		ft.setSerial(serial)
	}
	p1 := ft.start()
	p2, _, err := ft.listenAlso("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ft, p1, p2
}

// TestMultipath: reads spread over both paths of a two-portal target; when
// one portal goes away they go on down the other, without an error; a
// portal that leads to another LU is left out.
func TestMultipath(t *testing.T) {
	checkNoLeak(t)
	ft, p1, p2 := twoPortalTarget(t, 4<<20, "lu-1")
	other := newFakeTarget(t, 4<<20)
	other.setSerial("lu-2")
	p3 := other.start()
	cfg := fakeConfig(t)
	cfg.ReplacementTimeout = 10 * time.Second
	ctx := context.Background()
	m, err := OpenMultipath(ctx, "iqn.2026-11.test:fake", []string{p1, p2, p3}, 0, cfg, SelectQueueLength)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := m.Paths(); len(got) != 3 || got[0].Portal != p1 || got[1].Portal != p2 || got[2].Portal != p3 || got[2].State != PathWrongLU {
		t.Fatalf("paths %+v: want %s and %s, the other LU left out", got, p1, p2)
	}
	if n := len(m.Sessions()); n != 2 {
		t.Fatalf("%d sessions, want 2", n)
	}

	ft.mu.Lock()
	disk := bytes.Clone(ft.disk)
	ft.mu.Unlock()
	read := func(rounds int) error {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 64<<10)
				for n := range rounds {
					off := int64((i*rounds+n)%64) * int64(len(buf))
					if _, err := m.ReadAtContext(ctx, buf, off); err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(buf, disk[off:off+int64(len(buf))]) {
						errs <- errors.New("read returned other data")
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
	if err := read(50); err != nil {
		t.Fatal(err)
	}
	ss := m.Sessions()
	c1, c2 := ss[0].Stats().Commands, ss[1].Stats().Commands
	if c1 == 0 || c2 == 0 {
		t.Errorf("commands per path %d and %d: not spread", c1, c2)
	}

	// The first portal goes away under the readers.
	done := make(chan error, 1)
	go func() { done <- read(200) }()
	time.Sleep(20 * time.Millisecond)
	ft.ln.Close()
	ft.dropAll()
	if err := <-done; err != nil {
		t.Fatalf("I/O while a path failed: %v", err)
	}
	if got := m.Paths(); got[0].State != PathFailed || got[1].State != PathActive {
		t.Errorf("paths after the failure: %+v", got)
	}
	// Writes and a sync go down the path left.
	if _, err := m.WriteAtContext(ctx, bytes.Repeat([]byte{9}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := m.SyncContext(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestPathSelectors: queue-length takes the least busy path, round-robin
// alternates, service-time weighs by latency; a path not logged in is never
// taken.
func TestPathSelectors(t *testing.T) {
	_, p1, p2 := twoPortalTarget(t, 1<<20, "")
	ctx := context.Background()
	for _, name := range []string{"queue-length", "round-robin", "service-time"} {
		sel, err := ParsePathSelector(name)
		if err != nil {
			t.Fatal(err)
		}
		m, err := OpenMultipath(ctx, "iqn.2026-11.test:fake", []string{p1, p2}, 0, fakeConfig(t), sel)
		if err != nil {
			t.Fatal(err)
		}
		a, b := m.list()[0], m.list()[1]
		switch sel {
		case SelectQueueLength:
			a.inflight.Store(3)
			if m.pick() != b {
				t.Errorf("%s: did not take the idle path", name)
			}
		case SelectRoundRobin:
			if first, second := m.pick(), m.pick(); first == second {
				t.Errorf("%s: the same path twice", name)
			}
		case SelectServiceTime:
			a.ewma.Store(int64(time.Millisecond))
			b.ewma.Store(int64(10 * time.Microsecond))
			b.inflight.Store(5)
			if m.pick() != b {
				t.Errorf("%s: did not take the fast path", name)
			}
		}
		a.s.Close(ctx)
		for range 4 {
			if m.pick() != b {
				t.Errorf("%s: took a closed path", name)
			}
		}
		m.Close()
	}
	if _, err := ParsePathSelector("fastest"); err == nil {
		t.Error("an unknown selector was accepted")
	}
}
