package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// daemon is one run of a target daemon process.
type daemon struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has been reaped
	err     error         // Wait's result, valid after done
	logPath string
	logFrom int64 // where this run's output starts in logPath
}

// spawn starts argv with stdout and stderr appended to logPath. The process gets its own
// process group (a Ctrl-C meant for `go test` does not reach it directly) and SIGKILL when
// the test process dies without running its cleanups (e.g. on a test timeout).
func spawn(logPath, dir string, argv ...string) (*daemon, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy
	st, err := logf.Stat()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "=== %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	// Line-buffered stdout (stdbuf execs the daemon, the pid stays the same), so that the
	// log is complete up to the moment a test looks at it.
	if stdbuf, err := exec.LookPath("stdbuf"); err == nil {
		argv = append([]string{stdbuf, "-oL", "-eL"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdin = nil
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	d := &daemon{cmd: cmd, done: make(chan struct{}), logPath: logPath, logFrom: st.Size()}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// output returns what this run of the daemon has logged so far (at most 64 KiB).
func (d *daemon) output() string {
	f, err := os.Open(d.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	n, _ := f.ReadAt(buf, d.logFrom)
	return string(buf[:n])
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// wait waits up to timeout for the process to exit.
func (d *daemon) wait(timeout time.Duration) bool {
	select {
	case <-d.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

func (d *daemon) signal(sig syscall.Signal) error {
	if d.exited() {
		return nil
	}
	err := d.cmd.Process.Signal(sig)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// kill sends SIGKILL and waits until the process has been reaped.
func (d *daemon) kill() error {
	if err := d.signal(syscall.SIGKILL); err != nil {
		return err
	}
	if !d.wait(reapTimeout) {
		return fmt.Errorf("pid %d still there %v after SIGKILL", d.pid(), reapTimeout)
	}
	return nil
}

// exitError describes how the process ended, for error messages.
func (d *daemon) exitError() error {
	if !d.exited() {
		return nil
	}
	if d.err == nil {
		return errors.New("daemon exited with status 0")
	}
	return fmt.Errorf("daemon exited: %w", d.err)
}

// waitUntil polls ready every interval until it succeeds, the daemon exits, or timeout.
// It returns the last error from ready when it gives up.
func (d *daemon) waitUntil(timeout, interval time.Duration, ready func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		if d.exited() {
			return d.exitError()
		}
		if last = ready(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready after %v: %w", timeout, last)
		case <-d.done:
		case <-time.After(interval):
		}
	}
}
