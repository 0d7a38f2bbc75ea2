package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFailoverSilentPath (issue #14): the path in use goes silent in the
// middle of a stream of writes ending in fsync: its link is set down, so no
// FIN or RST ever arrives, and only the keep-alive can tell. The writes go on
// and the fsync succeeds through the second path well inside the replacement
// timeout; the backing file then holds every byte written and nothing else
// changed; status.json shows the first path failed and the second active.
//
// Path 1 is a TCP forwarder listening in a network namespace of its own
// (10.213.N.2, across a veth pair from 10.213.N.1 in this namespace) that
// forwards to tgtd on 127.0.0.1; path 2 is tgtd's portal itself. Setting the
// veth end inside the namespace down makes path 1 silent: the initiator's
// segments vanish in the veth (no carrier), and nothing comes back.
func TestFailoverSilentPath(t *testing.T) {
	const (
		iqn      = "iqn.2026-12.lab:silent-path"
		lunSize  = 64 << 20
		slot     = 256 << 10 // the LUN is cut into slots; each write stays inside one
		nWrites  = 128       // slots written: 32 MiB of the 64
		nBefore  = 48        // written before the path goes silent
		nAround  = 32        // written while `ip link set down` runs
		nRewrite = 16        // slots written before the silence that are written again after it
	)
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root: network namespaces, veth pairs, FUSE")
	}
	if _, err := findTool("ip"); err != nil {
		skipOrFail(t, "ip not found: install the Debian package iproute2 (apt-get install iproute2)")
	}
	RequireFUSE(t)
	bin := iscsifsBinary(t)
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: lunSize, Fill: "random"}}})
	backing := tg.BackingFile(iqn, 1)
	initial, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}

	sn := newSilentNet(t)
	fwd := sn.forward(t, tg.Portal)
	first, second := fwd.addr(), tg.Portal

	const replacement = 40 * time.Second
	m := startMount(t, bin, "iscsi://"+first+"/"+iqn+"/1",
		"--portal", second,
		"--keepalive", "1s", // a ping after 1 s without a PDU, the connection fails 2 s later
		"--timeout", "5s", // bounds the login attempt through the silent path (a SYN into the void)
		"--replacement-timeout", replacement.String(),
		"--cache-size", "4MiB", // dirty data goes to the target while the writer writes
		"--flush-interval", "1s")
	g := newDiskGuard(t)
	g.fuse(m.dir)
	st := m.status(t).Targets[0]
	if st.Portal != first || len(st.Paths) != 2 || st.Paths[0].State != "active" {
		t.Fatalf("status.json before the writes: portal %s, paths %+v; want %s active", st.Portal, st.Paths, first)
	}
	if fwd.accepted.Load() == 0 {
		t.Fatalf("the mount logged in without going through the forwarder in the namespace")
	}

	// The writes: nWrites slots in random order, each at an odd offset in
	// its slot with an odd length; then nRewrite of the first ones again
	// with other data, after the silence.
	type write struct {
		off  int64
		data []byte
	}
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	slots := rng.Perm(lunSize / slot)[:nWrites]
	var writes []write
	for i, s := range slots {
		head := int64(rng.IntN(8192))
		n := slot - int(head) - rng.IntN(8192)
		if i%8 == 0 {
			head, n = 0, slot // some whole slots too
		}
		writes = append(writes, write{int64(s)*slot + head, mntRandomBytes(n)})
	}
	for i := range nRewrite {
		w := writes[i*nBefore/nRewrite]
		writes = append(writes, write{w.off + 512, mntRandomBytes(len(w.data) - 1024)})
	}
	model := bytes.Clone(initial)
	touched := make([]bool, lunSize/slot)
	for _, w := range writes {
		copy(model[w.off:], w.data)
		touched[w.off/slot] = true
	}

	f, err := os.OpenFile(m.path("lun1"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	silenceNow := make(chan struct{})
	silenced := make(chan struct{}) // closed when the link is down (or the test gave up)
	type result struct {
		err      error
		fsynced  time.Time
		afterRun int // writes done after the silence
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() { done <- r }()
		for i, w := range writes {
			switch i {
			case nBefore:
				close(silenceNow) // and go on writing while the path goes silent
			case nBefore + nAround:
				<-silenced
			}
			if n, err := f.WriteAt(w.data, w.off); err != nil {
				r.err = fmt.Errorf("write %d (%d bytes at %d): %d, %w", i, len(w.data), w.off, n, err)
				return
			}
			if i >= nBefore+nAround {
				r.afterRun++
			}
		}
		if err := f.Sync(); err != nil {
			r.err = fmt.Errorf("fsync: %w", err)
			return
		}
		r.fsynced = time.Now()
	}()

	<-silenceNow
	if dw := m.stats(t)["lun1"].DeviceWrites; dw == 0 {
		t.Errorf("no write reached the target before the silence (the cache held them all)")
	}
	var silentAt time.Time
	func() {
		defer close(silenced)
		silentAt = sn.silence(t)
	}()
	t.Logf("path %s silent (link %s down in %s)", first, sn.nsLink, sn.ns)
	var r result
	const guard = 30 * time.Second // well inside the replacement timeout
	select {
	case r = <-done:
	case <-time.After(guard):
		// Failover did not happen: show where the mount waits, release the writer.
		_ = m.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-m.done:
		case <-time.After(5 * time.Second):
		}
		t.Logf("iscsifs mount output (SIGQUIT goroutine dump at the end):\n%s", mntTail(m.output(), 256<<10))
		g.abortFUSE(m.dir)
		<-done
		t.Fatalf("writes and fsync not done %v after the path went silent (replacement timeout %v)", guard, replacement)
	}
	if r.err != nil {
		t.Fatalf("%v (%v after the path went silent)\n%s", r.err, time.Since(silentAt).Round(time.Millisecond), mntTail(m.output(), 8<<10))
	}
	took := r.fsynced.Sub(silentAt)
	t.Logf("%d writes (%d after the silence) and fsync done %v after the path went silent", len(writes), r.afterRun, took.Round(time.Millisecond))
	if r.afterRun == 0 {
		t.Errorf("no write after the silence")
	}
	if took > replacement/2 {
		t.Errorf("fsync returned %v after the path went silent: not well inside the replacement timeout %v", took, replacement)
	}

	// fsync returned: every byte is on the target.
	checkSilentBacking(t, "after fsync", backing, initial, model, touched, slot)

	st = m.status(t).Targets[0]
	var paths []string
	for _, p := range st.Paths {
		paths = append(paths, p.Portal+"="+p.State)
	}
	if got, want := strings.Join(paths, " "), first+"=failed "+second+"=active"; got != want {
		t.Errorf("status.json paths: %s, want %s", got, want)
	}
	if st.Portal != second || st.State != "logged-in" {
		t.Errorf("status.json: portal %s state %s, want %s logged-in", st.Portal, st.State, second)
	}
	out := m.output()
	if !strings.Contains(out, "failed over to another path") {
		t.Errorf("no failover in the log:\n%s", mntTail(out, 4<<10))
	}
	if !strings.Contains(out, "keep-alive") {
		t.Errorf("no keep-alive failure in the log: something else than the keep-alive noticed the silent path:\n%s", mntTail(out, 4<<10))
	}
	f.Close()
	m.term(t)
	checkSilentBacking(t, "after the unmount", backing, initial, model, touched, slot)
	if t.Failed() {
		t.Logf("iscsifs mount output:\n%s", mntTail(m.output(), 16<<10))
	}
}

// checkSilentBacking compares the backing file with the model (the initial
// content with the writes applied): first the slots no write touched, by
// sha256 against the initial content, then every byte.
func checkSilentBacking(t *testing.T, when, backing string, initial, model []byte, touched []bool, slot int) {
	t.Helper()
	got, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(model) {
		t.Fatalf("%s: backing file of %d bytes, want %d", when, len(got), len(model))
	}
	hg, hi := sha256.New(), sha256.New()
	for s, tt := range touched {
		if !tt {
			hg.Write(got[s*slot : (s+1)*slot])
			hi.Write(initial[s*slot : (s+1)*slot])
		}
	}
	if a, b := hex.EncodeToString(hg.Sum(nil)), hex.EncodeToString(hi.Sum(nil)); a != b {
		t.Errorf("%s: the untouched regions changed: sha256 %s, initially %s", when, a, b)
	}
	if !bytes.Equal(got, model) {
		i := mntFirstDiff(got, model)
		n := 0
		for j := range got {
			if got[j] != model[j] {
				n++
			}
		}
		t.Errorf("%s: the backing file differs from what was written: %d bytes, the first at %d (slot %d, touched %v)",
			when, n, i, i/slot, touched[i/slot])
	}
}

// silentNet is a network namespace joined to this one by a veth pair:
// 10.213.N.1/30 here (rootLink), 10.213.N.2/30 in the namespace (nsLink).
type silentNet struct {
	ns, rootLink, nsLink string
	subnet               byte // N
	fwds                 []*nsForwarder
}

var silentNetSeq atomic.Int32

// newSilentNet creates the namespace, the veth pair and a blackhole route
// for the /30 behind the veth's own route (so that nothing for 10.213.N.2
// ever takes the default route, whatever happens to the veth). The cleanup,
// registered before anything is created, removes them all.
func newSilentNet(t *testing.T) *silentNet {
	t.Helper()
	pid, k := os.Getpid(), silentNetSeq.Add(1)
	sn := &silentNet{
		ns:       fmt.Sprintf("iscsifs-silent-%d-%d", pid, k),
		rootLink: fmt.Sprintf("isp%dx%dr", pid, k),
		nsLink:   fmt.Sprintf("isp%dx%dn", pid, k),
	}
	// A /24 of 10.213 no interface here uses.
	addrs, _ := ipCmd("-4", "-o", "addr", "show")
	for i := range 254 {
		n := byte((pid+i)%254 + 1)
		if !strings.Contains(addrs, fmt.Sprintf(" 10.213.%d.", n)) {
			sn.subnet = n
			break
		}
	}
	if sn.subnet == 0 {
		t.Fatal("no free /24 in 10.213.0.0/16")
	}
	var created struct{ ns, link, route bool }
	t.Cleanup(func() {
		for _, f := range sn.fwds {
			f.close(t, sn)
		}
		if created.link {
			if out, err := ipCmd("link", "del", sn.rootLink); err != nil {
				t.Errorf("deleting veth %s: %v %s", sn.rootLink, err, out)
			}
		}
		if created.ns {
			if out, err := ipCmd("netns", "del", sn.ns); err != nil {
				t.Errorf("deleting netns %s: %v %s", sn.ns, err, out)
			}
		}
		if created.route {
			if out, err := ipCmd("route", "del", "blackhole", sn.prefix(), "metric", "4000"); err != nil {
				t.Errorf("deleting the blackhole route %s: %v %s", sn.prefix(), err, out)
			}
		}
	})
	run := func(args ...string) {
		t.Helper()
		if out, err := ipCmd(args...); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	run("route", "add", "blackhole", sn.prefix(), "metric", "4000")
	created.route = true
	run("netns", "add", sn.ns)
	created.ns = true
	run("link", "add", sn.rootLink, "type", "veth", "peer", "name", sn.nsLink, "netns", sn.ns)
	created.link = true
	run("addr", "add", sn.addr(1)+"/30", "dev", sn.rootLink)
	run("-n", sn.ns, "addr", "add", sn.addr(2)+"/30", "dev", sn.nsLink)
	run("-n", sn.ns, "link", "set", "lo", "up")
	run("-n", sn.ns, "link", "set", sn.nsLink, "up")
	run("link", "set", sn.rootLink, "up")
	return sn
}

func (sn *silentNet) addr(host int) string { return fmt.Sprintf("10.213.%d.%d", sn.subnet, host) }

func (sn *silentNet) prefix() string { return fmt.Sprintf("10.213.%d.0/30", sn.subnet) }

// silence sets the namespace's end of the veth down: from then on what this
// side sends into the veth is dropped, and the namespace sends nothing.
func (sn *silentNet) silence(t *testing.T) time.Time {
	t.Helper()
	if out, err := ipCmd("-n", sn.ns, "link", "set", sn.nsLink, "down"); err != nil {
		t.Fatalf("setting %s down: %v %s", sn.nsLink, err, out)
	}
	return time.Now()
}

func ipCmd(args ...string) (string, error) {
	path, err := findTool("ip")
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	return string(out), err
}

// nsForwarder listens in the namespace and forwards each connection to
// upstream from this namespace. A connection's end in the namespace is
// never closed before the cleanup (only shut down for writing when
// upstream ends), so that the cleanup can reset it with the link up again:
// the peer's socket here then dies at once instead of retransmitting into
// the void (or, once the veth is gone, along the default route).
type nsForwarder struct {
	ln       net.Listener
	upstream string
	accepted atomic.Int32
	mu       sync.Mutex
	inner    []*net.TCPConn // accepted in the namespace
	outer    []net.Conn     // to upstream
	wg       sync.WaitGroup
	closed   bool
}

func (sn *silentNet) forward(t *testing.T, upstream string) *nsForwarder {
	t.Helper()
	ln, err := listenInNetns("/var/run/netns/"+sn.ns, net.JoinHostPort(sn.addr(2), "0"))
	if err != nil {
		t.Fatalf("listening in netns %s: %v", sn.ns, err)
	}
	f := &nsForwarder{ln: ln, upstream: upstream}
	sn.fwds = append(sn.fwds, f)
	f.wg.Add(1)
	go f.serve()
	return f
}

func (f *nsForwarder) addr() string { return f.ln.Addr().String() }

func (f *nsForwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		in := c.(*net.TCPConn)
		f.accepted.Add(1)
		out, err := net.DialTimeout("tcp", f.upstream, 5*time.Second)
		f.mu.Lock()
		f.inner = append(f.inner, in)
		if err != nil || f.closed {
			f.mu.Unlock()
			if out != nil {
				out.Close()
			}
			_ = in.CloseWrite()
			continue
		}
		f.outer = append(f.outer, out)
		f.mu.Unlock()
		f.wg.Add(2)
		go func() {
			defer f.wg.Done()
			_, _ = io.Copy(out, in)
			out.Close()
		}()
		go func() {
			defer f.wg.Done()
			_, _ = io.Copy(in, out)
			_ = in.CloseWrite()
			out.Close()
		}()
	}
}

// close stops the forwarder: no more connections, upstream ones closed;
// the link up again; the namespace's ends reset; then it waits (a few
// seconds at most) until no connection here leads to the namespace.
func (f *nsForwarder) close(t *testing.T, sn *silentNet) {
	f.mu.Lock()
	f.closed = true
	f.ln.Close()
	for _, c := range f.outer {
		c.Close()
	}
	f.mu.Unlock()
	if out, err := ipCmd("-n", sn.ns, "link", "set", sn.nsLink, "up"); err != nil {
		t.Errorf("setting %s up again: %v %s", sn.nsLink, err, out)
	}
	f.mu.Lock()
	for _, c := range f.inner {
		_ = c.SetLinger(0) // close sends an RST
		c.Close()
	}
	f.mu.Unlock()
	waited := make(chan struct{})
	go func() { f.wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Errorf("forwarder goroutines still running 5 s after the close")
	}
	ip := net.ParseIP(sn.addr(2)).To4()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := tcpSocketsTo(ip)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Logf("sockets to %s left after the forwarder closed (they die with the veth): %s", ip, strings.Join(left, "; "))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// listenInNetns opens a TCP listener inside the network namespace at nsPath:
// a locked thread enters the namespace, creates the socket (which stays in
// it) and returns to this namespace; a thread that cannot return ends with
// its goroutine. Accepted connections belong to the namespace too.
func listenInNetns(nsPath, addr string) (net.Listener, error) {
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: err}
			return
		}
		defer home.Close()
		ns, err := os.Open(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: fmt.Errorf("setns %s: %w", nsPath, err)}
			return
		}
		ln, err := net.Listen("tcp", addr)
		if err2 := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err2 != nil {
			// Stays locked: the thread exits with this goroutine.
			if ln != nil {
				ln.Close()
			}
			ch <- res{err: fmt.Errorf("setns back: %w", err2)}
			return
		}
		runtime.UnlockOSThread()
		ch <- res{ln, err}
	}()
	r := <-ch
	return r.ln, r.err
}

// tcpSocketsTo lists the TCP sockets of this network namespace whose remote
// address is ip, but for TIME_WAIT (which sends nothing): "local state".
func tcpSocketsTo(ip net.IP) []string {
	want := fmt.Sprintf("%08X", binary.NativeEndian.Uint32(ip))
	fh, err := os.Open("/proc/net/tcp")
	if err != nil {
		return []string{err.Error()}
	}
	defer fh.Close()
	var out []string
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || !strings.HasPrefix(fields[2], want+":") || fields[3] == "06" {
			continue
		}
		out = append(out, fields[1]+"->"+fields[2]+" st "+fields[3])
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		out = append(out, err.Error())
	}
	return out
}
