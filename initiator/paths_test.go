package initiator

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestFailover: when the portal in use goes away (listener closed,
// connections dropped), reads in flight and new ones go on through the
// other portal of the same target, without an error; the paths show it.
func TestFailover(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 4<<20)
	ft.setSerial("lu-1")
	p1 := ft.start()
	p2, _, err := ft.listenAlso("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
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
	cfg := fakeConfig(t)
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
	ft := newFakeTarget(t, 1<<20)
	p1 := ft.start()
	p2, _, err := ft.listenAlso("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
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
