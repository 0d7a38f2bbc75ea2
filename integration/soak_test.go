package integration

// TestSoak: mixed random I/O through a mount for a while (ISCSIFS_SOAK, one
// minute by default; `make soak` runs ten) while tgtd is bounced (killed and
// restarted, then frozen and thawed), checked read by read against a model
// and at the end against the backing file.
//
// The I/O on the mount runs in child processes (this test binary started
// again with ISCSIFS_TEST_WORKER set, see init): the test process must not
// hold a file of the mount open when it forks, and restarting tgtd forks.
// A forked child's execve closes the inherited descriptor, FUSE sends FLUSH,
// and the mount's flush waits for the target that is down.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	workerEnv     = "ISCSIFS_TEST_WORKER"      // the worker to run instead of the tests
	workerArgsEnv = "ISCSIFS_TEST_WORKER_ARGS" // its arguments, JSON
)

func init() {
	mode := os.Getenv(workerEnv)
	if mode == "" {
		return
	}
	raw := []byte(os.Getenv(workerArgsEnv))
	var err error
	switch mode {
	case "stream":
		err = streamWorker(raw)
	case "soak":
		err = soakWorker(raw)
	default:
		err = fmt.Errorf("unknown worker %q", mode)
	}
	if err != nil {
		fmt.Printf("error: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// worker is a child process running one of the workers.
type worker struct {
	cmd    *exec.Cmd
	lines  chan string // its stdout, line by line; closed at EOF
	stdin  io.WriteCloser
	stderr *mntSyncBuffer
	done   chan struct{}
	err    error // Wait's result, valid after done
}

func startWorker(t *testing.T, mode string, args any) *worker {
	t.Helper()
	raw, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	w := &worker{lines: make(chan string, 64), stderr: &mntSyncBuffer{}, done: make(chan struct{})}
	w.cmd = exec.Command(os.Args[0], "-test.run=^$")
	w.cmd.Env = append(os.Environ(), workerEnv+"="+mode, workerArgsEnv+"="+string(raw))
	w.cmd.Stderr = w.stderr
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		close(w.lines)
		w.err = w.cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() {
		w.stdin.Close()
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			_ = w.cmd.Process.Kill()
			<-w.done
		}
	})
	return w
}

// line returns the worker's next line; false at its end or after timeout.
func (w *worker) line(timeout time.Duration) (string, bool) {
	select {
	case l, ok := <-w.lines:
		return l, ok
	case <-time.After(timeout):
		return "", false
	}
}

// wait waits for the worker to exit.
func (w *worker) wait() error {
	for range w.lines {
	}
	<-w.done
	return w.err
}

// finish closes the worker's stdin and expects a clean exit.
func (w *worker) finish(t *testing.T) {
	t.Helper()
	w.stdin.Close()
	if err := w.wait(); err != nil {
		t.Fatalf("worker: %v\n%s", err, w.stderr)
	}
}

// soakArgs configure the soak worker.
type soakArgs struct {
	File     string        // the LUN file in the mount
	Backing  string        // its backing file: the initial contents
	Model    string        // where to write the expected contents at the end
	Seed     uint64        //
	Duration time.Duration // how long to run
	Workers  int           // goroutines, each on its own region of the LUN
}

// soakWorker runs random reads (each checked against the model), writes of
// any size and alignment, and fsyncs from several goroutines, then fsyncs
// and writes the model. It prints a progress line every 5 s.
func soakWorker(raw []byte) error {
	var a soakArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return err
	}
	model, err := os.ReadFile(a.Backing)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(a.File, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	region := len(model) / a.Workers / 4096 * 4096
	deadline := time.Now().Add(a.Duration)
	var reads, writes, syncs, bytes atomic.Int64
	stop := make(chan struct{})
	go func() {
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				fmt.Printf("progress reads=%d writes=%d syncs=%d bytes=%d\n", reads.Load(), writes.Load(), syncs.Load(), bytes.Load())
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, a.Workers)
	for w := range a.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(a.Seed, uint64(w)))
			base := w * region
			for time.Now().Before(deadline) {
				n := 1 + rng.IntN(128<<10)
				if rng.IntN(4) == 0 {
					n = 4096 * (1 + rng.IntN(64)) // aligned, the cache's fast path
				}
				off := base + rng.IntN(region-n)
				if rng.IntN(4) == 0 {
					off = off / 4096 * 4096
				}
				buf := make([]byte, n)
				switch r := rng.IntN(100); {
				case r < 45:
					for i := range buf {
						buf[i] = byte(rng.Uint32())
					}
					if _, err := f.WriteAt(buf, int64(off)); err != nil {
						errs <- fmt.Errorf("write %d at %d: %w", n, off, err)
						return
					}
					copy(model[off:], buf)
					writes.Add(1)
				case r < 97:
					if _, err := f.ReadAt(buf, int64(off)); err != nil {
						errs <- fmt.Errorf("read %d at %d: %w", n, off, err)
						return
					}
					if i := firstDiff(buf, model[off:off+n]); i >= 0 {
						errs <- fmt.Errorf("read %d at %d: byte %d differs from what was written", n, off, off+i)
						return
					}
					reads.Add(1)
				default:
					if err := f.Sync(); err != nil {
						errs <- fmt.Errorf("fsync: %w", err)
						return
					}
					syncs.Add(1)
				}
				bytes.Add(int64(n))
			}
		}()
	}
	wg.Wait()
	close(stop)
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("final fsync: %w", err)
	}
	if err := os.WriteFile(a.Model, model, 0o644); err != nil {
		return err
	}
	fmt.Printf("done reads=%d writes=%d syncs=%d bytes=%d\n", reads.Load(), writes.Load(), syncs.Load(), bytes.Load())
	return nil
}

// soakPlan reads ISCSIFS_SOAK (a duration, default 1m) and
// ISCSIFS_SOAK_BOUNCES (default 1 below 5 minutes, else 2).
func soakPlan(t *testing.T) (time.Duration, int) {
	d := time.Minute
	if v := os.Getenv("ISCSIFS_SOAK"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d < 10*time.Second {
			t.Fatalf("ISCSIFS_SOAK=%q: want a duration of at least 10s", v)
		}
	}
	bounces := 1
	if d >= 5*time.Minute {
		bounces = 2
	}
	if v := os.Getenv("ISCSIFS_SOAK_BOUNCES"); v != "" {
		if _, err := fmt.Sscanf(v, "%d", &bounces); err != nil || bounces < 0 {
			t.Fatalf("ISCSIFS_SOAK_BOUNCES=%q", v)
		}
	}
	return d, bounces
}

func TestSoak(t *testing.T) {
	d, bounces := soakPlan(t)
	const size = 64 << 20
	tg := recovTarget(t, size)
	m := startRecovMount(t, tg.URL(recovIQN, 1), "--cache-size", "8MiB", "--flush-interval", "1s")
	args := soakArgs{
		File: m.path("lun1"), Backing: tg.BackingFile(recovIQN, 1), Model: filepath.Join(t.TempDir(), "model"),
		Seed: uint64(time.Now().UnixNano()), Duration: d, Workers: 8,
	}
	t.Logf("soak for %v with %d bounce(s), seed %d", d, bounces, args.Seed)
	w := startWorker(t, "soak", args)
	start := time.Now()

	// Bounce the target at even intervals: a crash (SIGKILL, restart 3 s
	// later with the same backing files), then a freeze (SIGSTOP for 3 s).
	bounced := make(chan struct{})
	go func() {
		defer close(bounced)
		for i := range bounces {
			time.Sleep(time.Until(start.Add(d * time.Duration(i+1) / time.Duration(bounces+1))))
			if i%2 == 0 {
				tg.Kill()
				time.Sleep(3 * time.Second)
				tg.Restart()
				t.Logf("%v: killed and restarted tgtd", time.Since(start).Round(time.Second))
			} else {
				tg.Pause()
				time.Sleep(3 * time.Second)
				tg.Resume()
				t.Logf("%v: froze tgtd for 3 s", time.Since(start).Round(time.Second))
			}
		}
	}()
	var last string
	for {
		l, ok := w.line(d + 3*time.Minute)
		if !ok {
			break
		}
		last = l
		if strings.HasPrefix(l, "progress") && testing.Verbose() {
			t.Logf("%v: %s", time.Since(start).Round(time.Second), l)
		}
	}
	<-bounced
	if err := w.wait(); err != nil || !strings.HasPrefix(last, "done") {
		t.Fatalf("soak worker: %v: %s\n%s", err, last, w.stderr)
	}
	t.Log(last)
	model, err := os.ReadFile(args.Model)
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		got, err := os.ReadFile(args.Backing)
		if err != nil {
			t.Fatal(err)
		}
		if i := firstDiff(got, model); i >= 0 {
			t.Fatalf("%s: the backing file differs from the model at byte %d", when, i)
		}
	}
	check("after the final fsync")
	m.stop(t)
	check("after unmounting")
	if kills := (bounces + 1) / 2; strings.Count(m.log.String(), "session re-established") < kills {
		t.Errorf("the mount log shows fewer reconnects than the %d kill(s)", kills)
	}
}
