package initiator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iscsifs/iscsifs/initiator/scsi"
)

// TestALUAStateText: names, JSON (unknown left out) and the order paths are
// tried in.
func TestALUAStateText(t *testing.T) {
	for st := ALUAUnknown; st <= ALUALBADependent; st++ {
		b, _ := st.MarshalText()
		var back ALUAState
		if err := back.UnmarshalText(b); err != nil || back != st {
			t.Errorf("%v does not round-trip: %q, %v", st, b, err)
		}
	}
	if err := new(ALUAState).UnmarshalText([]byte("active")); err == nil {
		t.Error("an unknown name was accepted")
	}
	b, _ := json.Marshal(PathStatus{Portal: "a:1", ALUA: ALUAActiveNonOptimized, TPG: 2})
	if !strings.Contains(string(b), `"alua":"active-non-optimized","tpg":2`) {
		t.Errorf("JSON %s", b)
	}
	if b, _ := json.Marshal(PathStatus{Portal: "a:1"}); strings.Contains(string(b), "alua") || strings.Contains(string(b), "tpg") {
		t.Errorf("JSON of a path without ALUA: %s", b)
	}
	order := []ALUAState{ALUAActiveOptimized, ALUAActiveNonOptimized, ALUAUnknown, ALUAStandby, ALUAUnavailable}
	for i := 1; i < len(order); i++ {
		if order[i-1].rank() >= order[i].rank() {
			t.Errorf("%v does not come before %v", order[i-1], order[i])
		}
	}
	if ALUAOffline.rank() != ALUAUnavailable.rank() || ALUATransitioning.rank() != ALUAStandby.rank() {
		t.Error("offline ranks apart from unavailable, or transitioning from standby")
	}
}

// TestALUANotReady: which sense data name a path's ALUA state.
func TestALUANotReady(t *testing.T) {
	for _, tt := range []struct {
		key, asc, ascq uint8
		want           ALUAState
	}{
		{0x02, 0x04, 0x0a, ALUATransitioning},
		{0x02, 0x04, 0x0b, ALUAStandby},
		{0x02, 0x04, 0x0c, ALUAUnavailable},
		{0x02, 0x04, 0x01, ALUAUnknown}, // becoming ready
		{0x02, 0x3a, 0x00, ALUAUnknown}, // medium not present
		{0x06, 0x2a, 0x06, ALUAUnknown}, // the UNIT ATTENTION, not a refusal
		{0x05, 0x04, 0x0b, ALUAUnknown}, // not NOT READY
	} {
		err := &CommandError{Err: scsi.CheckStatus(scsi.Read(0, 1, false, false), scsi.StatusCheckCondition, fixedSense(tt.key, tt.asc, tt.ascq))}
		if got := aluaNotReady(err); got != tt.want {
			t.Errorf("%02x/%02x/%02x: %v, want %v", tt.key, tt.asc, tt.ascq, got, tt.want)
		}
	}
	if aluaNotReady(errors.New("other")) != ALUAUnknown || aluaNotReady(nil) != ALUAUnknown {
		t.Error("a state from an error without sense")
	}
}

// TestPathOrderALUA: failover tries active/optimized paths first, then
// active/non-optimized, unknown, standby, and unavailable last; without
// ALUA the order is the configured one, the path in use first.
func TestPathOrderALUA(t *testing.T) {
	s := &Session{portal: "p1:3260", paths: newPaths("p1:3260", []string{"p2:3260", "p3:3260", "p4:3260", "p5:3260"})}
	order := func() string {
		var names []string
		for _, p := range s.pathOrder() {
			names = append(names, p.portal[:2])
		}
		return strings.Join(names, " ")
	}
	if got := order(); got != "p1 p2 p3 p4 p5" {
		t.Errorf("without ALUA: %s", got)
	}
	for i, st := range []ALUAState{ALUAUnavailable, ALUAStandby, ALUAUnknown, ALUAActiveNonOptimized, ALUAActiveOptimized} {
		s.paths[i].alua = st
	}
	if got := order(); got != "p5 p4 p3 p2 p1" {
		t.Errorf("with ALUA: %s", got)
	}
}

// TestALUANone: a target without TPGS (tgt, istgt) is never asked for
// REPORT TARGET PORT GROUPS and its paths stay ALUAUnknown, all equal.
func TestALUANone(t *testing.T) {
	checkNoLeak(t)
	ft, p1, p2 := twoPortalTarget(t, 1<<20, "lu-1")
	s, l := twoPathSession(t, p1, p2)
	buf := make([]byte, 4096)
	if _, err := l.ReadAtContext(context.Background(), buf, 0); err != nil {
		t.Fatal(err)
	}
	ft.mu.Lock()
	rtpg := ft.cdbOps[scsi.OpMaintenanceIn]
	ft.mu.Unlock()
	if rtpg != 0 || l.Inquiry.TPGS != scsi.TPGSNone {
		t.Errorf("TPGS %d, %d MAINTENANCE IN sent", l.Inquiry.TPGS, rtpg)
	}
	for _, p := range s.Paths() {
		if p.ALUA != ALUAUnknown || p.TPG != 0 {
			t.Errorf("path %+v", p)
		}
	}
	if s.Portal() != p1 {
		t.Errorf("portal %s, want %s", s.Portal(), p1)
	}
}

// aluaTarget is a two-portal fake target whose portals are target ports 1
// and 2 in target port groups 1 and 2, with the given states; with refuse,
// ports not active refuse I/O as SPC-4 says.
func aluaTarget(t *testing.T, size int, refuse bool, g1, g2 uint8) (*fakeTarget, string, string) {
	ft, p1, p2 := twoPortalTarget(t, size, "lu-1")
	ft.enableALUA(scsi.TPGSImplicit, refuse, map[string]fakePort{p1: {rel: 1, group: 1}, p2: {rel: 2, group: 2}},
		map[uint16]uint8{1: g1, 2: g2})
	return ft, p1, p2
}

// readCheck reads 64 KiB at off through read and compares it with ft's disk.
func readCheck(ft *fakeTarget, read func([]byte, int64) (int, error), off int64) error {
	buf := make([]byte, 64<<10)
	if _, err := read(buf, off); err != nil {
		return err
	}
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if !bytes.Equal(buf, ft.disk[off:off+int64(len(buf))]) {
		return errors.New("read returned other data")
	}
	return nil
}

// TestALUAFailover: a failover session logged in through a standby port
// learns it when it opens the LUN and moves to the path that may serve
// I/O before the first read: every READ goes over the active/optimized
// path. When the target swaps the states (UNIT ATTENTION 2A/06, then NOT
// READY 04/0B on the now standby port), the session moves back and reads go
// on without an error.
func TestALUAFailover(t *testing.T) {
	checkNoLeak(t)
	ft, p1, p2 := aluaTarget(t, 1<<20, true, scsi.AccessStandby, scsi.AccessActiveOptimized)
	s, l := twoPathSession(t, p1, p2)
	ctx := context.Background()
	read := func(b []byte, off int64) (int, error) { return l.ReadAtContext(ctx, b, off) }
	for i := range 8 {
		if err := readCheck(ft, read, int64(i)*64<<10); err != nil {
			t.Fatal(err)
		}
	}
	if s.Portal() != p2 || ft.ioAt(p1) != 0 || ft.ioAt(p2) == 0 {
		t.Fatalf("portal %s, READs through %s %d, through %s %d: want all through %s", s.Portal(), p1, ft.ioAt(p1), p2, ft.ioAt(p2), p2)
	}
	if !waitFor(5*time.Second, func() bool { return s.Paths()[1].ALUA == ALUAActiveOptimized }) {
		t.Fatalf("the new path's state was not learned: %+v", s.Paths())
	}
	got := s.Paths()
	if got[0].State != PathStandby || got[0].ALUA != ALUAStandby || got[0].TPG != 1 ||
		got[1].State != PathActive || got[1].TPG != 2 {
		t.Errorf("paths %+v", got)
	}

	// The target swaps the groups' states.
	ft.setALUAStates(map[uint16]uint8{1: scsi.AccessActiveOptimized, 2: scsi.AccessStandby})
	before := ft.ioAt(p1)
	for i := range 16 {
		if err := readCheck(ft, read, int64(i%16)*64<<10); err != nil {
			t.Fatalf("read %d after the states changed: %v", i, err)
		}
	}
	if s.Portal() != p1 || ft.ioAt(p1) == before {
		t.Errorf("portal %s after the swap, %d READs through %s: want the reads there", s.Portal(), ft.ioAt(p1)-before, p1)
	}
	if !waitFor(5*time.Second, func() bool {
		got := s.Paths()
		return got[0].ALUA == ALUAActiveOptimized && got[1].ALUA == ALUAStandby
	}) {
		t.Errorf("paths after the swap: %+v", s.Paths())
	}
}

// TestALUAMultipathOptimized: with one active/optimized and one
// active/non-optimized path, every command of a MultipathLUN goes down the
// optimized one, even with round-robin; when the target swaps the states
// (UNIT ATTENTION 2A/06) the commands move to the other path.
func TestALUAMultipathOptimized(t *testing.T) {
	checkNoLeak(t)
	ft, p1, p2 := aluaTarget(t, 4<<20, true, scsi.AccessActiveOptimized, scsi.AccessActiveNonOptimized)
	ctx := context.Background()
	m, err := OpenMultipath(ctx, "iqn.2026-11.test:fake", []string{p1, p2}, 0, fakeConfig(t), SelectRoundRobin)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got := m.Paths()
	if got[0].ALUA != ALUAActiveOptimized || got[0].TPG != 1 || got[1].ALUA != ALUAActiveNonOptimized || got[1].TPG != 2 {
		t.Fatalf("paths %+v", got)
	}
	read := func(b []byte, off int64) (int, error) { return m.ReadAtContext(ctx, b, off) }
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Go(func() {
			for i := range 20 {
				if err := readCheck(ft, read, int64((g*20+i)%64)*64<<10); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if ft.ioAt(p1) == 0 || ft.ioAt(p2) != 0 {
		t.Fatalf("READs through the optimized path %d, the non-optimized one %d", ft.ioAt(p1), ft.ioAt(p2))
	}

	ft.setALUAStates(map[uint16]uint8{1: scsi.AccessActiveNonOptimized, 2: scsi.AccessActiveOptimized})
	// The next command down the first path sees the UNIT ATTENTION; the
	// states it reads are handed to the other path too.
	if !waitFor(10*time.Second, func() bool {
		if err := readCheck(ft, read, 0); err != nil {
			t.Fatal(err)
		}
		got := m.Paths()
		return got[0].ALUA == ALUAActiveNonOptimized && got[1].ALUA == ALUAActiveOptimized
	}) {
		t.Fatalf("paths after the swap: %+v", m.Paths())
	}
	c1, c2 := ft.ioAt(p1), ft.ioAt(p2)
	for i := range 20 {
		if err := readCheck(ft, read, int64(i)*64<<10); err != nil {
			t.Fatal(err)
		}
	}
	if ft.ioAt(p1) != c1 || ft.ioAt(p2) == c2 {
		t.Errorf("after the swap: %d READs through the non-optimized path, %d through the optimized one", ft.ioAt(p1)-c1, ft.ioAt(p2)-c2)
	}
}

// TestALUAMultipathStandby: a standby path gets no command while an active
// one is logged in, even with queue-length and many readers. When the
// active path goes away, the standby one is used: its port refuses the
// reads (NOT READY 04/0B) until the target makes it active, and the reads
// wait for that instead of failing.
func TestALUAMultipathStandby(t *testing.T) {
	checkNoLeak(t)
	ft, p1, p2 := aluaTarget(t, 4<<20, true, scsi.AccessActiveOptimized, scsi.AccessStandby)
	ctx := context.Background()
	m := openTwoPaths(t, p1, p2)
	if got := m.Paths(); len(got) != 2 || got[1].ALUA != ALUAStandby {
		t.Fatalf("paths %+v: want both, the second standby", got)
	}
	read := func(b []byte, off int64) (int, error) { return m.ReadAtContext(ctx, b, off) }
	readers := func(rounds int) chan error {
		done := make(chan error, 1)
		go func() {
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for g := range 8 {
				wg.Go(func() {
					for i := range rounds {
						if err := readCheck(ft, read, int64((g*rounds+i)%64)*64<<10); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			done <- <-errs
		}()
		return done
	}
	if err := <-readers(20); err != nil {
		t.Fatal(err)
	}
	if ft.ioAt(p1) == 0 || ft.ioAt(p2) != 0 {
		t.Fatalf("READs through the active path %d, the standby one %d", ft.ioAt(p1), ft.ioAt(p2))
	}

	// The active path goes away; a moment later the target makes the
	// standby group active (an array failing over to its other controller).
	done := readers(40)
	ft.ln.Close()
	ft.dropPortal(p1)
	if !waitFor(5*time.Second, func() bool { return ft.ioAt(p2) > 0 }) {
		t.Fatal("the standby path was not used when the active one went away")
	}
	time.Sleep(100 * time.Millisecond)
	ft.setALUAStates(map[uint16]uint8{2: scsi.AccessActiveOptimized})
	if err := <-done; err != nil {
		t.Fatalf("reads while the only path left was standby: %v", err)
	}
	if got := m.Paths(); got[0].State != PathFailed || got[1].ALUA != ALUAActiveOptimized {
		t.Errorf("paths %+v", got)
	}
}

// TestFlappingPath: one path of a MultipathLUN loses its connections and
// refuses new ones every 50-100 ms for 2.5 s while readers run: no read
// fails, none takes a second, every one returns the disk's data; the path
// is back once the flapping stops.
func TestFlappingPath(t *testing.T) {
	checkNoLeak(t)
	ft, p1, p2 := twoPortalTarget(t, 4<<20, "lu-1")
	ctx := context.Background()
	m := openTwoPaths(t, p1, p2)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	var mu sync.Mutex
	var slowest time.Duration
	reads := 0
	read := func(b []byte, off int64) (int, error) { return m.ReadAtContext(ctx, b, off) }
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				err := readCheck(ft, read, int64((g*16+i)%64)*64<<10)
				took := time.Since(start)
				mu.Lock()
				slowest = max(slowest, took)
				reads++
				mu.Unlock()
				if err == nil && took > time.Second {
					err = errors.New("a read took " + took.String())
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}

	// Flap the first portal: down (connections dropped, new ones refused),
	// up, down ... every 50-100 ms.
	ln := net.Listener(ft.ln)
	ioBefore := ft.ioAt(p1)
	flaps := 0
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); flaps++ {
		ln.Close()
		ft.dropPortal(p1)
		time.Sleep(time.Duration(50+rand.IntN(50)) * time.Millisecond)
		var err error
		if _, ln, err = ft.listenAlso(p1); err != nil {
			close(stop)
			wg.Wait()
			t.Fatal(err)
		}
		time.Sleep(time.Duration(50+rand.IntN(50)) * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d flaps, %d reads, slowest %v, %d READs through the flapping path during it", flaps, reads, slowest, ft.ioAt(p1)-ioBefore)
	// The flapping path logs in again and serves reads.
	if !waitFor(10*time.Second, func() bool { return m.Paths()[0].State == PathActive }) {
		t.Fatalf("the flapping path did not come back: %+v", m.Paths())
	}
	ioBefore = ft.ioAt(p1)
	for i := range 16 {
		if err := readCheck(ft, read, int64(i)*64<<10); err != nil {
			t.Fatal(err)
		}
	}
	if ft.ioAt(p1) == ioBefore {
		t.Error("no read went down the path that came back")
	}
}

// openTwoPaths opens LUN 0 of the fake target over two portals
// (queue-length; commands wait up to 10 s for a path) and closes it when
// the test ends.
func openTwoPaths(t *testing.T, p1, p2 string) *MultipathLUN {
	t.Helper()
	cfg := fakeConfig(t)
	cfg.ReplacementTimeout = 10 * time.Second
	m, err := OpenMultipath(context.Background(), "iqn.2026-11.test:fake", []string{p1, p2}, 0, cfg, SelectQueueLength)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}
