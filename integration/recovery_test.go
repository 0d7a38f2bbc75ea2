package integration

// Recovery against a real tgtd: the daemon is killed (SIGKILL) and
// restarted, or frozen (SIGSTOP), under I/O through a FUSE mount made by the
// iscsifs binary and through the library. The mount must finish what it was
// doing with the right bytes, fail in bounded time when the target stays
// away, and serve again when it is back, without remounting.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iscsifs/iscsifs/initiator"
)

const recovIQN = "iqn.2026-11.lab:recovery"

// recovTarget starts tgtd with one random-filled data LUN (LUN 1).
func recovTarget(t *testing.T, size int64) *Target {
	t.Helper()
	return StartTGT(t, TargetSpec{Name: recovIQN, LUNs: []LUNSpec{{LUN: 1, Size: size, Fill: "random"}}})
}

// recovMount is one `iscsifs mount` process of these tests.
type recovMount struct {
	dir  string
	cmd  *exec.Cmd
	log  *mntSyncBuffer
	done chan struct{}
	err  error // Wait's result, valid after done
}

// startRecovMount mounts url (built with -race when the tests are) on a new
// directory and waits until its LUN file is there. When the test ends the
// mount is stopped with SIGTERM (SIGKILL and a lazy unmount if that does not
// work) and its log is checked for races and panics.
func startRecovMount(t *testing.T, url string, flags ...string) *recovMount {
	t.Helper()
	RequireFUSE(t)
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"mount", "--log-format", "json", "--log-level", "info"}, flags...)
	m := &recovMount{dir: dir, log: &mntSyncBuffer{}, done: make(chan struct{})}
	m.cmd = exec.Command(iscsifsBinary(t), append(args, url, dir)...)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.err = m.cmd.Wait(); close(m.done) }()
	t.Cleanup(func() { m.stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(m.path("lun1")); err == nil {
			return m
		}
		select {
		case <-m.done:
			t.Fatalf("iscsifs mount exited before serving (%v):\n%s", m.err, m.log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("iscsifs mount: no lun1 after 30 s:\n%s", m.log)
		}
	}
}

func (m *recovMount) path(name string) string { return filepath.Join(m.dir, name) }

// stop unmounts with SIGTERM and checks the log.
func (m *recovMount) stop(t *testing.T) {
	t.Helper()
	select {
	case <-m.done:
	default:
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
			if m.err != nil {
				t.Errorf("iscsifs mount after SIGTERM: %v", m.err)
			}
		case <-time.After(time.Minute):
			t.Errorf("iscsifs mount did not stop within a minute of SIGTERM")
			_ = m.cmd.Process.Kill()
			<-m.done
		}
	}
	_ = exec.Command("fusermount3", "-u", "-z", m.dir).Run() // in case it is still mounted
	out := m.log.String()
	if strings.Contains(out, "WARNING: DATA RACE") || strings.Contains(out, "panic:") {
		t.Errorf("iscsifs mount reported a race or a panic:\n%s", out)
	} else if t.Failed() {
		t.Logf("iscsifs mount log (tail):\n%s", mntTail(out, 8<<10))
	}
}

// state is the session state the mount reports in .iscsifs/status.json.
func (m *recovMount) state(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(m.path(".iscsifs/status.json"))
	if err != nil {
		t.Fatalf("status.json: %v", err)
	}
	var st struct {
		Targets []struct {
			State string `json:"state"`
		} `json:"targets"`
	}
	if err := json.Unmarshal(b, &st); err != nil || len(st.Targets) != 1 {
		t.Fatalf("status.json: %v\n%s", err, b)
	}
	return st.Targets[0].State
}

// fileSize returns the size of path, 0 if it does not exist yet.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// pollUntil polls cond every 10 ms for up to d.
func pollUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// TestRecoveryMountReadKill: tgtd is killed while dd reads a 256 MiB LUN
// through the mount and restarted 3 s later with the same backing files:
// dd completes and what it read is the backing file.
func TestRecoveryMountReadKill(t *testing.T) {
	const size = 256 << 20
	tg := recovTarget(t, size)
	m := startRecovMount(t, tg.URL(recovIQN, 1), "--cache-size", "32MiB")
	out := filepath.Join(t.TempDir(), "out")
	dd := exec.Command("dd", "if="+m.path("lun1"), "of="+out, "bs=1M")
	var ddErr bytes.Buffer
	dd.Stderr = &ddErr
	if err := dd.Start(); err != nil {
		t.Fatal(err)
	}
	ddDone := make(chan error, 1)
	go func() { ddDone <- dd.Wait() }()

	if !pollUntil(60*time.Second, func() bool { return fileSize(out) >= 48<<20 }) {
		t.Fatalf("dd did not get to 48 MiB: %s", ddErr.String())
	}
	tg.Kill()
	at := fileSize(out)
	select {
	case err := <-ddDone:
		t.Fatalf("dd ended (%v) before the target was killed: the test did not kill it mid-read", err)
	default:
	}
	time.Sleep(3 * time.Second)
	tg.Restart()
	t.Logf("killed at %d MiB, restarted 3 s later", at>>20)

	select {
	case err := <-ddDone:
		if err != nil {
			t.Fatalf("dd: %v\n%s", err, ddErr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("dd hangs after the restart (%d MiB read)", fileSize(out)>>20)
	}
	if fileSize(out) != size {
		t.Fatalf("dd read %d bytes, want %d", fileSize(out), size)
	}
	if mntFileSHA256(t, out) != mntFileSHA256(t, tg.BackingFile(recovIQN, 1)) {
		t.Fatal("what dd read differs from the backing file")
	}
	if !strings.Contains(m.log.String(), "session re-established") {
		t.Errorf("the mount log does not show a reconnect:\n%s", mntTail(m.log.String(), 4<<10))
	}
}

// TestRecoveryMountWriteKill: tgtd is killed during a stream of writes and
// restarted 3 s later; once fsync has returned the backing file holds every
// byte written, each in its place, and nothing else changed.
func TestRecoveryMountWriteKill(t *testing.T) {
	const size, from, total, chunk = 128 << 20, 8 << 20, 96 << 20, 1 << 20
	tg := recovTarget(t, size)
	want, err := os.ReadFile(tg.BackingFile(recovIQN, 1))
	if err != nil {
		t.Fatal(err)
	}
	// A small cache so that write-back runs all the time, not only at fsync.
	m := startRecovMount(t, tg.URL(recovIQN, 1), "--cache-size", "16MiB", "--flush-interval", "200ms")
	args := streamArgs{File: m.path("lun1"), Seed: 11, From: from, Total: total, Chunk: chunk}
	w := startWorker(t, "stream", args)
	bounced := false
	for {
		line, ok := w.line(3 * time.Minute)
		if !ok {
			t.Fatalf("the writer stopped without fsync (exit %v):\n%s", w.wait(), w.stderr)
		}
		var n int64
		if _, err := fmt.Sscanf(line, "wrote %d", &n); err == nil {
			if n >= 32<<20 && !bounced {
				bounced = true
				tg.Kill()
				time.Sleep(3 * time.Second)
				tg.Restart()
				t.Logf("killed tgtd after %d MiB written, restarted 3 s later", n>>20)
			}
			continue
		}
		if line != "fsync ok" {
			t.Fatalf("writer: %s\n%s", line, w.stderr)
		}
		break
	}
	if !bounced {
		t.Fatal("the stream ended before the target was killed")
	}
	// fsync has returned; the writer still holds the file open.
	got, err := os.ReadFile(tg.BackingFile(recovIQN, 1))
	if err != nil {
		t.Fatal(err)
	}
	args.fill(want)
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("after fsync the backing file differs from what was written, first at byte %d (MiB %d)", i, i>>20)
	}
	w.finish(t)
	if !strings.Contains(m.log.String(), "session re-established") {
		t.Errorf("the mount log does not show a reconnect")
	}
}

// streamArgs describe a stream of writes: Total bytes from offset From in
// Chunk pieces, the data drawn from Seed.
type streamArgs struct {
	File               string
	Seed               uint64
	From, Total, Chunk int64
}

// chunkData is the data of the chunk at off.
func (a streamArgs) chunkData(off int64) []byte {
	rng := rand.New(rand.NewPCG(a.Seed, uint64(off)))
	b := make([]byte, a.Chunk)
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// fill writes the stream's data into a copy of the LUN.
func (a streamArgs) fill(lun []byte) {
	for off := a.From; off < a.From+a.Total; off += a.Chunk {
		copy(lun[off:], a.chunkData(off))
	}
}

// streamWorker writes the stream, saying "wrote N" after each chunk, then
// fsyncs ("fsync ok") and keeps the file open until stdin closes.
func streamWorker(raw []byte) error {
	var a streamArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return err
	}
	f, err := os.OpenFile(a.File, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	for off := a.From; off < a.From+a.Total; off += a.Chunk {
		if _, err := f.WriteAt(a.chunkData(off), off); err != nil {
			return fmt.Errorf("write at %d: %w", off, err)
		}
		fmt.Printf("wrote %d\n", off+a.Chunk-a.From)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync: %w", err)
	}
	fmt.Println("fsync ok")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

func firstDiff(a, b []byte) int {
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	for i := 0; i < len(a); i += 4096 {
		end := min(i+4096, len(a))
		if !bytes.Equal(a[i:end], b[i:end]) {
			for j := i; j < end; j++ {
				if a[j] != b[j] {
					return j
				}
			}
		}
	}
	return -1
}

// TestRecoveryMountStopped: tgtd frozen (SIGSTOP) for longer than the
// replacement timeout: reads fail with EIO within the replacement timeout +
// 5 s and nothing hangs; after SIGCONT the same mount serves reads again.
func TestRecoveryMountStopped(t *testing.T) {
	const size = 64 << 20
	tg := recovTarget(t, size)
	backing, err := os.ReadFile(tg.BackingFile(recovIQN, 1))
	if err != nil {
		t.Fatal(err)
	}
	m := startRecovMount(t, tg.URL(recovIQN, 1), "--replacement-timeout", "3s", "--timeout", "2s",
		"--cache-size", "4MiB", "--readahead", "0")
	f, err := os.Open(m.path("lun1"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Each read goes to a block not read before, so the cache cannot answer.
	next := int64(0)
	read := func() error {
		buf := make([]byte, 64<<10)
		off := next
		next += 1 << 20
		if _, err := f.ReadAt(buf, off); err != nil {
			return err
		}
		if !bytes.Equal(buf, backing[off:off+int64(len(buf))]) {
			return fmt.Errorf("read at %d returned wrong data", off)
		}
		return nil
	}
	if err := read(); err != nil {
		t.Fatal(err)
	}

	tg.Pause()
	start := time.Now()
	var failed error
	for failed == nil && time.Since(start) < 30*time.Second {
		failed = read()
	}
	took := time.Since(start)
	if !errors.Is(failed, syscall.EIO) {
		t.Fatalf("read during the outage: %v after %v, want EIO", failed, took)
	}
	t.Logf("EIO after %v", took.Round(time.Millisecond))
	if limit := 3*time.Second + 5*time.Second; took > limit {
		t.Errorf("reads failed after %v, want within %v", took, limit)
	}
	// While the target stays away, reads fail at once.
	for range 3 {
		s := time.Now()
		if err := read(); !errors.Is(err, syscall.EIO) || time.Since(s) > 2*time.Second {
			t.Errorf("read while unavailable: %v after %v, want a prompt EIO", err, time.Since(s))
		}
	}
	if st := m.state(t); st != "unavailable" {
		t.Errorf("status.json state %q, want unavailable", st)
	}

	tg.Resume()
	if !pollUntil(30*time.Second, func() bool { return read() == nil }) {
		t.Fatalf("the mount does not serve reads 30 s after SIGCONT (state %q)", m.state(t))
	}
	if err := read(); err != nil {
		t.Fatal(err)
	}
	if st := m.state(t); st != "logged-in" {
		t.Errorf("status.json state %q after the target came back", st)
	}
}

// TestRecoveryKeepAlive: a silent target (SIGSTOP, no I/O in flight) is
// noticed by the NOP-Out keep-alive within its window, through the library
// and through the mount's --keepalive flag; after SIGCONT the session is
// re-established.
func TestRecoveryKeepAlive(t *testing.T) {
	tg := recovTarget(t, 16<<20)

	t.Run("library", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.KeepAlive = 500 * time.Millisecond
		cfg.KeepAliveWait = time.Second
		s := login(t, tg, recovIQN, cfg)
		l, err := s.OpenLUN(ctxFor(t, 10*time.Second), 1)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * cfg.KeepAlive) // answered pings change nothing
		if s.State() != initiator.StateLoggedIn || s.Reconnects() != 0 {
			t.Fatalf("state %q, %d reconnects with a live target", s.State(), s.Reconnects())
		}
		tg.Pause()
		start := time.Now()
		noticed := pollUntil(10*time.Second, func() bool { return s.State() != initiator.StateLoggedIn })
		took := time.Since(start)
		tg.Resume()
		if !noticed {
			t.Fatal("the silent target was not noticed in 10 s")
		}
		window := cfg.KeepAlive + cfg.KeepAlive/2 + cfg.KeepAliveWait
		t.Logf("noticed after %v (window %v)", took.Round(time.Millisecond), window)
		if took > window+time.Second {
			t.Errorf("noticed after %v, want within %v", took, window)
		}
		if !pollUntil(20*time.Second, func() bool { return s.State() == initiator.StateLoggedIn && s.Reconnects() > 0 }) {
			t.Fatalf("not re-established after SIGCONT: %q, %d reconnects", s.State(), s.Reconnects())
		}
		buf := make([]byte, 4096)
		if _, err := l.ReadAtContext(ctxFor(t, 10*time.Second), buf, 0); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("mount --keepalive", func(t *testing.T) {
		m := startRecovMount(t, tg.URL(recovIQN, 1), "--keepalive", "500ms")
		time.Sleep(time.Second)
		if st := m.state(t); st != "logged-in" {
			t.Fatalf("state %q before the outage", st)
		}
		tg.Pause()
		start := time.Now()
		noticed := pollUntil(10*time.Second, func() bool { return m.state(t) != "logged-in" })
		took := time.Since(start)
		tg.Resume()
		// --keepalive 500ms: a ping after 0.5 s idle (checked every 0.25 s),
		// unanswered for 1 s.
		if !noticed || took > 2750*time.Millisecond {
			t.Fatalf("noticed %v after %v, want within 1.75 s (+1 s)", noticed, took)
		}
		if !strings.Contains(m.log.String(), "keep-alive") {
			t.Errorf("the mount log does not name the keep-alive:\n%s", mntTail(m.log.String(), 4<<10))
		}
		if !pollUntil(20*time.Second, func() bool { return m.state(t) == "logged-in" }) {
			t.Fatalf("not re-established after SIGCONT: %q", m.state(t))
		}
	})
}

// TestRecoveryLUNKillRestart: the library's LUN.ReadAt and WriteAt from
// several goroutines across a tgtd kill and restart: every call succeeds,
// every read matches the model, and the backing file equals it at the end.
func TestRecoveryLUNKillRestart(t *testing.T) {
	const size = 32 << 20
	tg := recovTarget(t, size)
	model, err := os.ReadFile(tg.BackingFile(recovIQN, 1))
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.CommandTimeout = 10 * time.Second
	s := login(t, tg, recovIQN, cfg)
	l, err := s.OpenLUN(ctxFor(t, 10*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	const workers = 8
	region := size / workers
	ctx := ctxFor(t, 2*time.Minute)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var calls [workers]int
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			base := w * region
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := 512 * (1 + rng.IntN(256))
				off := base + 512*rng.IntN((region-n)/512)
				buf := make([]byte, n)
				if rng.IntN(2) == 0 {
					for i := range buf {
						buf[i] = byte(rng.Uint32())
					}
					if _, err := l.WriteAtContext(ctx, buf, int64(off)); err != nil {
						errs <- fmt.Errorf("worker %d write: %w", w, err)
						return
					}
					copy(model[off:], buf)
				} else {
					if _, err := l.ReadAtContext(ctx, buf, int64(off)); err != nil {
						errs <- fmt.Errorf("worker %d read: %w", w, err)
						return
					}
					if !bytes.Equal(buf, model[off:off+n]) {
						errs <- fmt.Errorf("worker %d: read at %d differs from the model", w, off)
						return
					}
				}
				calls[w]++
			}
		}()
	}
	time.Sleep(time.Second)
	tg.Kill()
	time.Sleep(3 * time.Second)
	tg.Restart()
	if !pollUntil(30*time.Second, func() bool { return s.Reconnects() > 0 && s.State() == initiator.StateLoggedIn }) {
		t.Errorf("not reconnected: %q", s.State())
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0
	for _, n := range calls {
		total += n
	}
	t.Logf("%d calls, %d reconnects", total, s.Reconnects())
	if err := l.SyncContext(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(tg.BackingFile(recovIQN, 1))
	if err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(got, model); i >= 0 {
		t.Fatalf("backing file differs from the model at byte %d", i)
	}
}

// TestRecoveryMountResize: the LUN grows, then shrinks, while the target is
// down (tgtd killed, its backing file extended or truncated, tgtd restarted,
// as an administrator resizing a volume would). tgt never reports a capacity change itself, and the
// reconnect's power-on UNIT ATTENTION would hide one anyway, so the mount
// re-reads the capacity after reconnecting: the file takes the new size
// without remounting, and the new range reads as the backing file; after
// the shrink the rest still does.
func TestRecoveryMountResize(t *testing.T) {
	const size, grown = 8 << 20, 24 << 20
	tg := recovTarget(t, size)
	m := startRecovMount(t, tg.URL(recovIQN, 1), "--cache-size", "16MiB")
	lun := m.path("lun1")
	if got := fileSize(lun); got != size {
		t.Fatalf("size before: %d, want %d", got, size)
	}
	// Cache the short tail so a stale cached length would show.
	if _, err := os.ReadFile(lun); err != nil {
		t.Fatal(err)
	}
	tg.Kill()
	backing := tg.BackingFile(recovIQN, 1)
	extra := make([]byte, grown-size)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range extra {
		extra[i] = byte(rng.Uint32())
	}
	f, err := os.OpenFile(backing, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(extra, size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	tg.Restart()
	// Touch the LUN so the mount notices the dropped connection.
	_, _ = os.ReadFile(m.path(".iscsifs/status.json"))
	if _, err := exec.Command("dd", "if="+lun, "of=/dev/null", "bs=4k", "count=1", "skip=100", "iflag=direct").CombinedOutput(); err != nil {
		t.Logf("read during reconnect: %v", err)
	}
	if !pollUntil(30*time.Second, func() bool { return fileSize(lun) == grown }) {
		t.Fatalf("file size %d after the LUN grew to %d:\n%s", fileSize(lun), grown, mntTail(m.log.String(), 4<<10))
	}
	got, err := os.ReadFile(lun)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != grown || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes after growing, differ from the backing file at %d", len(got), firstDiff(got, want))
	}
	// The new range takes writes, and they reach the backing file.
	w := bytes.Repeat([]byte{0xa5}, 64<<10)
	f, err = os.OpenFile(lun, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(w, grown-int64(len(w))); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want, _ = os.ReadFile(backing)
	if !bytes.Equal(want[grown-len(w):], w) {
		t.Error("a write at the end of the grown LUN did not reach the backing file")
	}
	if !strings.Contains(m.log.String(), "file resized") {
		t.Errorf("the mount log does not show the resize:\n%s", mntTail(m.log.String(), 4<<10))
	}

	// Shrink it back: the file follows, and what is left still reads as
	// the backing file (cached blocks past the new end are forgotten).
	tg.Kill()
	if err := os.Truncate(backing, size); err != nil {
		t.Fatal(err)
	}
	tg.Restart()
	_, _ = exec.Command("dd", "if="+lun, "of=/dev/null", "bs=4k", "count=1", "iflag=direct").CombinedOutput()
	if !pollUntil(30*time.Second, func() bool { return fileSize(lun) == size }) {
		t.Fatalf("file size %d after the LUN shrank to %d:\n%s", fileSize(lun), size, mntTail(m.log.String(), 4<<10))
	}
	got, err = os.ReadFile(lun)
	if err != nil {
		t.Fatal(err)
	}
	want, _ = os.ReadFile(backing)
	if len(got) != size || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes after shrinking, differ from the backing file at %d", len(got), firstDiff(got, want))
	}
}

// preadHelperEnv makes the test binary a helper (TestMain): it prints its
// thread id, does one 4 KiB pread at the offset the variable gives on the
// file named last on its command line, on that thread, and prints the
// result ("errno N" or "n N"). SIGUSR1 is handled, so a signal interrupts
// the read instead of killing the helper.
const preadHelperEnv = "ISCSIFS_INTEGRATION_PREAD_HELPER"

func preadHelper(offset, path string) int {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGUSR1)
	runtime.LockOSThread()
	off, err := strconv.ParseInt(offset, 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fd, err := syscall.Open(path, syscall.O_RDONLY, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Printf("tid %d\n", syscall.Gettid())
	n, err := syscall.Pread(fd, make([]byte, 4096), off)
	if errno, ok := err.(syscall.Errno); ok {
		fmt.Printf("errno %d\n", int(errno))
	} else {
		fmt.Printf("n %d\n", n)
	}
	return 0
}

// TestMountReadInterrupted: a read through the mount waits for a frozen
// tgtd (timeouts far away); a signal to the reading thread makes the kernel
// send INTERRUPT, and the read fails with EINTR at once, its context
// cancelled down to the session. After SIGCONT the mount reads correctly.
func TestMountReadInterrupted(t *testing.T) {
	const size = 16 << 20
	tg := recovTarget(t, size)
	backing, err := os.ReadFile(tg.BackingFile(recovIQN, 1))
	if err != nil {
		t.Fatal(err)
	}
	m := startRecovMount(t, tg.URL(recovIQN, 1), "--replacement-timeout", "60s", "--timeout", "60s",
		"--cache-size", "4MiB", "--readahead", "0", "--keepalive", "0")
	tg.Pause()
	resumed := false
	defer func() {
		if !resumed {
			tg.Resume()
		}
	}()
	helper := exec.Command(os.Args[0], "-test.run=^$", m.path("lun1"))
	helper.Env = append(os.Environ(), preadHelperEnv+"="+strconv.Itoa(5<<20))
	helper.Stderr = os.Stderr
	stdout, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { helper.Process.Kill(); helper.Wait() }()
	out := bufio.NewScanner(stdout)
	if !out.Scan() {
		t.Fatalf("helper printed nothing: %v", out.Err())
	}
	tid, err := strconv.Atoi(strings.TrimPrefix(out.Text(), "tid "))
	if err != nil {
		t.Fatalf("helper printed %q", out.Text())
	}
	time.Sleep(500 * time.Millisecond) // the pread is now waiting for tgtd
	lines := make(chan string, 1)
	go func() {
		out.Scan()
		lines <- out.Text()
	}()
	select {
	case l := <-lines:
		t.Fatalf("the read ended before the signal, with the target frozen: %q", l)
	default:
	}
	start := time.Now()
	if err := syscall.Tgkill(helper.Process.Pid, tid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-lines:
		if want := fmt.Sprintf("errno %d", int(syscall.EINTR)); l != want {
			t.Errorf("the interrupted read: %q, want %q", l, want)
		}
		t.Logf("interrupted after %v", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("the read was not interrupted within 10 s")
	}
	tg.Resume()
	resumed = true
	f, err := os.Open(m.path("lun1"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 5<<20); err != nil || !bytes.Equal(buf, backing[5<<20:5<<20+4096]) {
		t.Errorf("read after SIGCONT: %v (or wrong data)", err)
	}
}
