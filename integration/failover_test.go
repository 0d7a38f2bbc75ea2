package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iscsifs/iscsifs/initiator"
)

// TestFailover: a mount with a second portal of the same target (--portal;
// --discover-portals adds nothing, as tgt lists only the portal asked)
// reads a 256 MiB LUN while the first portal goes away (tgtadm deletes its
// listener and drops the connections): the read completes with the backing
// file's sha256 and no error, well inside the replacement timeout, and
// status.json shows the second path active; when the first portal is back,
// its path is up again (standby: no failback).
func TestFailover(t *testing.T) {
	const iqn = "iqn.2026-12.lab:failover"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 256 << 20, Fill: "random"}}})
	first, second := tg.Portal, addPortal(t, tg)
	metricsAddr := freeAddr(t)
	m := startMount(t, iscsifsBinary(t), "iscsi://"+first+"/"+iqn+"/1",
		"--portal", second, "--discover-portals", "--cache-size", "16MiB", "--replacement-timeout", "60s", "--metrics-addr", metricsAddr)
	want := mntFileSHA256(t, tg.BackingFile(iqn, 1))

	f, err := os.Open(m.path("lun1"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	start := time.Now()
	var failedAt time.Duration
	for n := 0; ; n++ {
		if n == 32 { // an eighth of the LUN read: the first path goes
			dropPortal(t, tg, iqn, first)
			failedAt = time.Since(start)
		}
		k, err := f.Read(buf)
		h.Write(buf[:k])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read after %d MiB: %v\n%s", n, err, mntTail(m.output(), 4<<10))
		}
		if n < 32 {
			time.Sleep(5 * time.Millisecond) // the failure lands mid-read
		}
	}
	took := time.Since(start) - failedAt
	f.Close() // before the unmount below
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		t.Fatalf("sha256 %s through the mount, %s in the backing file", got, want)
	}
	if took > 30*time.Second {
		t.Errorf("the rest of the read took %v after the path failed", took)
	}
	st := m.status(t)
	if len(st.Targets) != 1 {
		t.Fatalf("status.json: %d targets", len(st.Targets))
	}
	ts := st.Targets[0]
	if ts.Portal != second || ts.State != "logged-in" {
		t.Errorf("status.json: portal %s state %s, want %s logged-in", ts.Portal, ts.State, second)
	}
	var paths []string
	for _, p := range ts.Paths {
		paths = append(paths, p.Portal+"="+p.State)
	}
	if got := strings.Join(paths, " "); got != first+"=failed "+second+"=active" {
		t.Errorf("status.json paths: %s", got)
	}
	for portal, want := range map[string]float64{first: 0, second: 1} {
		if got := scrapeMetricLabels(t, metricsAddr, "iscsifs_path_active", fmt.Sprintf("portal=%q,target=%q", portal, iqn)); got != want {
			t.Errorf("iscsifs_path_active for %s = %v, want %v", portal, got, want)
		}
	}
	if got := scrapeMetricLabels(t, metricsAddr, "iscsifs_path_login_failures_total", fmt.Sprintf("portal=%q,target=%q", first, iqn)); got < 1 {
		t.Errorf("iscsifs_path_login_failures_total for %s = %v", first, got)
	}
	// Portal 1 comes back: its path is up (standby) again within the
	// 5 s probe interval, and the mount stays on path 2.
	if out, err := tg.TGTAdm("--lld", "iscsi", "--op", "new", "--mode", "portal", "--param", "portal="+first); err != nil {
		t.Fatalf("adding portal %s again: %v\n%s", first, err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := m.status(t).Targets[0]
		if len(st.Paths) == 2 && st.Paths[0].State == "standby" && st.Paths[1].State == "active" {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("path %s not up again: %+v", first, st.Paths)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Log lines after the failover name the portal in use.
	reestablished := 0
	for line := range strings.SplitSeq(m.output(), "\n") {
		if strings.Contains(line, "session re-established") {
			reestablished++
			if !strings.Contains(line, `"portal":"`+second+`"`) {
				t.Errorf("after the failover to %s: %s", second, line)
			}
		}
	}
	if reestablished == 0 {
		t.Errorf("no re-established session in the log:\n%s", mntTail(m.output(), 4<<10))
	}
	if !strings.Contains(m.output(), "failed over to another path") {
		t.Errorf("no failover in the log:\n%s", mntTail(m.output(), 4<<10))
	}
	m.term(t)
}

// addPortal makes tgtd listen on 127.0.0.2 too, at the same port, and
// returns that portal.
func addPortal(t *testing.T, tg *Target) string {
	t.Helper()
	portal := fmt.Sprintf("127.0.0.2:%d", tg.Port)
	if out, err := tg.TGTAdm("--lld", "iscsi", "--op", "new", "--mode", "portal", "--param", "portal="+portal); err != nil {
		t.Fatalf("adding portal %s: %v\n%s", portal, err, out)
	}
	return portal
}

// dropPortal deletes tgtd's listener on portal and drops every connection
// of target iqn (tgt closes only the listener: open connections stay until
// dropped, and it cannot tell which portal a connection came in on).
func dropPortal(t *testing.T, tg *Target, iqn, portal string) {
	t.Helper()
	if out, err := tg.TGTAdm("--lld", "iscsi", "--op", "delete", "--mode", "portal", "--param", "portal="+portal); err != nil {
		t.Fatalf("deleting portal %s: %v\n%s", portal, err, out)
	}
	tid := fmt.Sprint(tg.TID(iqn))
	out, err := tg.TGTAdm("--lld", "iscsi", "--op", "show", "--mode", "conn", "--tid", tid)
	if err != nil {
		t.Fatal(err)
	}
	conns := parseTGTConns(out)
	if len(conns) == 0 {
		t.Fatalf("no connection to drop:\n%s", out)
	}
	for _, c := range conns {
		if out, err := tg.TGTAdm("--lld", "iscsi", "--op", "delete", "--mode", "conn", "--tid", tid, "--sid", c[0], "--cid", c[1]); err != nil {
			t.Fatalf("dropping connection %v: %v\n%s", c, err, out)
		}
	}
}

// TestMultipathTGT: a MultipathLUN over two portals of tgtd spreads reads
// over both sessions (tgt keeps both, as each has its own ISID); when the
// first portal is deleted and the connections dropped, four readers of the
// whole LUN go on without an error and get the backing file's bytes.
func TestMultipathTGT(t *testing.T) {
	const iqn = "iqn.2026-12.lab:multipath"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 64 << 20, Fill: "random"}}})
	first, second := tg.Portal, addPortal(t, tg)
	cfg := testConfig(t)
	cfg.ReplacementTimeout = 60 * time.Second
	m, err := initiator.OpenMultipath(ctxFor(t, 30*time.Second), iqn, []string{first, second}, 1, cfg, initiator.SelectQueueLength)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := m.Paths(); len(got) != 2 {
		t.Fatalf("paths: %+v", got)
	}
	want, err := os.ReadFile(tg.BackingFile(iqn, 1))
	if err != nil {
		t.Fatal(err)
	}
	const readers, chunk = 4, 1 << 20
	part := int64(len(want) / readers)
	var progress atomic.Int64
	errs := make(chan error, readers)
	var wg sync.WaitGroup
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk)
			for off := int64(r) * part; off < int64(r+1)*part; off += chunk {
				if _, err := m.ReadAtContext(ctxFor(t, time.Minute), buf, off); err != nil {
					errs <- fmt.Errorf("read at %d: %w", off, err)
					return
				}
				if !bytes.Equal(buf, want[off:off+chunk]) {
					errs <- fmt.Errorf("read at %d: other bytes than the backing file", off)
					return
				}
				if progress.Add(1) < 16 {
					time.Sleep(10 * time.Millisecond) // the failure lands mid-read
				}
			}
		}()
	}
	for progress.Load() < 8 {
		time.Sleep(5 * time.Millisecond)
	}
	ss := m.Sessions()
	if ss[0].Stats().Commands == 0 || ss[1].Stats().Commands == 0 {
		t.Errorf("commands per path %d and %d: not spread", ss[0].Stats().Commands, ss[1].Stats().Commands)
	}
	dropPortal(t, tg, iqn, first)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := m.Paths(); got[0].State != initiator.PathFailed || got[1].State != initiator.PathActive {
		t.Errorf("paths after the first portal went: %+v", got)
	}
}

// TestMultipathJoinTGT: a portal of tgtd that does not exist yet when a
// multipath LUN opens is left out, and joins once tgtd listens on it
// (tried every 5 s); reads then go down both paths.
func TestMultipathJoinTGT(t *testing.T) {
	const iqn = "iqn.2026-12.lab:mpjoin"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 8 << 20, Fill: "random"}}})
	second := fmt.Sprintf("127.0.0.2:%d", tg.Port)
	m, err := initiator.OpenMultipath(ctxFor(t, 30*time.Second), iqn, []string{tg.Portal, second}, 1, testConfig(t), initiator.SelectRoundRobin)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := m.Paths(); len(got) != 2 || got[1].State != initiator.PathFailed {
		t.Fatalf("paths before the second portal exists: %+v", got)
	}
	addPortal(t, tg)
	deadline := time.Now().Add(20 * time.Second)
	for len(m.Sessions()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the second path did not join: %+v", m.Paths())
		}
		time.Sleep(100 * time.Millisecond)
	}
	want, err := os.ReadFile(tg.BackingFile(iqn, 1))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for off := int64(0); off < int64(len(want)); off += int64(len(buf)) {
		if _, err := m.ReadAtContext(ctxFor(t, 30*time.Second), buf, off); err != nil || !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
			t.Fatalf("read at %d: %v (or other bytes than the backing file)", off, err)
		}
	}
	for _, p := range m.Paths() {
		if p.State != initiator.PathActive || p.Commands == 0 {
			t.Errorf("path %s: %s, %d commands", p.Portal, p.State, p.Commands)
		}
	}
}

// tcpProxy forwards connections from a listener on 127.0.0.1 to target;
// cut closes the listener and every connection (a path that went away).
type tcpProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			for _, pair := range [][2]net.Conn{{in, out}, {out, in}} {
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					_, _ = io.Copy(pair[0], pair[1])
					pair[0].Close()
					pair[1].Close()
				}()
			}
		}
	}()
	t.Cleanup(p.cut)
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) cut() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestFailoverISTGT: istgt with two portals in its portal group, reached
// through a TCP proxy: with --discover-portals the mount learns both from
// SendTargets; when the proxy goes away mid-read, the read completes through
// a learned portal with the backing file's bytes.
func TestFailoverISTGT(t *testing.T) {
	const iqn = "iqn.2026-12.lab:failover-istgt"
	tg := StartISTGT(t, TargetSpec{Name: iqn, ExtraPortalHosts: []string{"127.0.0.2"},
		LUNs: []LUNSpec{{LUN: 0, Size: 64 << 20, Fill: "random"}}})
	proxy := startProxy(t, tg.Portal)
	second := fmt.Sprintf("127.0.0.2:%d", tg.Port)
	m := startMount(t, iscsifsBinary(t), "iscsi://"+proxy.addr()+"/"+iqn+"/0",
		"--discover-portals", "--cache-size", "16MiB", "--replacement-timeout", "60s")
	var paths []string
	for _, p := range m.status(t).Targets[0].Paths {
		paths = append(paths, p.Portal)
	}
	if got, want := strings.Join(paths, " "), proxy.addr()+" "+tg.Portal+" "+second; got != want {
		t.Fatalf("paths %s, want %s (the proxy, then both portals istgt lists)", got, want)
	}
	want := mntFileSHA256(t, tg.BackingFile(iqn, 0))
	f, err := os.Open(m.path("lun0"))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for n := 0; ; n++ {
		if n == 8 {
			proxy.cut()
		}
		k, err := f.Read(buf)
		h.Write(buf[:k])
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			t.Fatalf("read after %d MiB: %v\n%s", n, err, mntTail(m.output(), 4<<10))
		}
	}
	f.Close()
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		t.Fatalf("sha256 %s through the mount, %s in the backing file", got, want)
	}
	if st := m.status(t).Targets[0]; st.Portal != tg.Portal || st.State != "logged-in" {
		t.Errorf("status.json: portal %s state %s, want %s logged-in", st.Portal, st.State, tg.Portal)
	}
	m.term(t)
}

// TestBenchMultipath: `iscsifs bench --multipath` runs over two portals of
// tgtd; without a --portal it refuses with one line.
func TestBenchMultipath(t *testing.T) {
	const iqn = "iqn.2026-12.lab:bench-multipath"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 16 << 20, Fill: "random"}}})
	second := addPortal(t, tg)
	url := tg.URL(iqn, 1)
	r := runCLI(t, nil, "bench", "--multipath", "--portal", second, "--path-selector", "round-robin",
		"--json", "--pattern", "rand", "--qd", "8", "--time", "2s", url)
	var res struct {
		IOPS float64 `json:"iops"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil || res.IOPS <= 0 {
		t.Fatalf("bench --multipath: exit %d, stdout %s, stderr:\n%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, nil, "bench", "--multipath", "--time", "1s", url)
	if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); r.code == 0 || len(lines) != 1 || !strings.Contains(lines[0], "--portal") {
		t.Errorf("bench --multipath without --portal: exit %d, stderr:\n%s", r.code, r.stderr)
	}
}

// TestMultipathDurableTGT: a multipath LUN's syncs count the writes of
// both paths of tgtd (one LU, one write cache): a sync after a plain write
// down either path sends SYNCHRONIZE CACHE once, a small durable write after
// it goes with FUA (tgt reports DPOFUA) and the syncs after that send
// nothing; the backing file holds every synced byte.
func TestMultipathDurableTGT(t *testing.T) {
	const iqn = "iqn.2026-12.lab:mpdurable"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 8 << 20}}})
	m, err := initiator.OpenMultipath(ctxFor(t, 30*time.Second), iqn, []string{tg.Portal, addPortal(t, tg)}, 1, testConfig(t), initiator.SelectRoundRobin)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := ctxFor(t, time.Minute)
	counts := func() (fua, syncs uint64) {
		for _, s := range m.Sessions() {
			st := s.Stats()
			fua += st.FUAWrites
			syncs += st.SyncsSent
		}
		return fua, syncs
	}
	model := make([]byte, 8<<20)
	for i, step := range []struct {
		op         string // "write", "durable", "sync"
		off        int64
		fua, syncs uint64 // totals after the step
	}{
		{"write", 0, 0, 0},
		{"write", 4096, 0, 0}, // the other path (round robin)
		{"durable", 8192, 0, 0},
		{"sync", 0, 0, 1},
		{"durable", 12288, 1, 1},
		{"sync", 0, 1, 1},
		{"sync", 0, 1, 1},
	} {
		data := bytes.Repeat([]byte{byte(i + 1)}, 4096)
		switch step.op {
		case "write":
			_, err = m.WriteAtContext(ctx, data, step.off)
		case "durable":
			_, err = m.WriteDurableAtContext(ctx, data, step.off)
		default:
			err = m.SyncContext(ctx)
		}
		if err != nil {
			t.Fatalf("step %d (%s): %v", i, step.op, err)
		}
		if step.op != "sync" {
			copy(model[step.off:], data)
		} else if got, _ := os.ReadFile(tg.BackingFile(iqn, 1)); !bytes.Equal(got, model) {
			t.Fatalf("step %d: the backing file differs after the sync", i)
		}
		if fua, syncs := counts(); fua != step.fua || syncs != step.syncs {
			t.Errorf("after step %d (%s): %d WRITEs with FUA and %d SYNCHRONIZE CACHE, want %d and %d", i, step.op, fua, syncs, step.fua, step.syncs)
		}
	}
}
