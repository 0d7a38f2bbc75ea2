package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// registry knows every process, mount and loop device the bench has made,
// so that they are all undone at the end, and lists them in a file for
// bench.sh.
type registry struct {
	mu     sync.Mutex
	path   string
	pids   map[int]bool
	mounts map[string]bool   // FUSE mounts
	fs     map[string]bool   // file systems on loop devices (ext4), by mount point
	loops  map[string]string // loop devices: what each was attached to (loopID)
	live   map[*proc]bool
}

func newRegistry(path string) *registry {
	return &registry{path: path, pids: map[int]bool{}, mounts: map[string]bool{},
		fs: map[string]bool{}, loops: map[string]string{}, live: map[*proc]bool{}}
}

// save rewrites the list: "pid N", "mount PATH", "fs PATH" and
// "loop DEV INODE MAJ:MIN" lines. mu must be held.
func (r *registry) save() {
	var b strings.Builder
	for pid := range r.pids {
		fmt.Fprintf(&b, "pid %d\n", pid)
	}
	for m := range r.mounts {
		fmt.Fprintf(&b, "mount %s\n", m)
	}
	for m := range r.fs {
		fmt.Fprintf(&b, "fs %s\n", m)
	}
	for dev, id := range r.loops {
		fmt.Fprintf(&b, "loop %s %s\n", dev, id)
	}
	_ = os.WriteFile(r.path, []byte(b.String()), 0o644)
}

func (r *registry) addPID(pid int) {
	if pid <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pids[pid] = true
	r.save()
}

func (r *registry) dropPID(pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.pids, pid)
	r.save()
}

func (r *registry) addMount(path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mounts[path] = true
	r.save()
}

func (r *registry) dropMount(path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.mounts, path)
	r.save()
}

// cleanup unmounts the file systems on loop devices and detaches the loop
// devices, stops what is still running (the process groups of the bench's
// children; tgtd is left to its Close) and detaches what is still mounted.
func (r *registry) cleanup() {
	r.mu.Lock()
	fs := slices.Collect(maps.Keys(r.fs))
	loops := slices.Collect(maps.Keys(r.loops))
	r.mu.Unlock()
	for _, dir := range fs {
		if err := r.umountFS(dir); err != nil {
			logf("cleanup: %v", err)
		}
	}
	for _, dev := range loops {
		if err := r.detachLoop(dev); err != nil {
			logf("cleanup: %v", err)
		}
	}
	r.mu.Lock()
	live := make([]*proc, 0, len(r.live))
	for p := range r.live {
		live = append(live, p)
	}
	r.mu.Unlock()
	for _, p := range live {
		p.stop(syscall.SIGTERM, 10*time.Second)
	}
	r.mu.Lock()
	mounts := make([]string, 0, len(r.mounts))
	for m := range r.mounts {
		mounts = append(mounts, m)
	}
	r.mu.Unlock()
	for _, m := range mounts {
		if mounted(m) {
			_ = exec.Command("fusermount3", "-u", "-z", m).Run()
		}
		r.dropMount(m)
	}
}

// mounted reports whether path is a mount point: it lies on another device
// than its parent, or its FUSE daemon is gone (ENOTCONN).
func mounted(path string) bool {
	var st, parent syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return errors.Is(err, syscall.ENOTCONN)
	}
	if err := syscall.Stat(filepath.Dir(path), &parent); err != nil {
		return false
	}
	return st.Dev != parent.Dev
}

// proc is a started child in its own process group.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr lockedBuffer
	done           chan struct{}
	err            error
}

// startProc starts argv in its own process group with its output captured.
func (r *registry) startProc(argv ...string) (*proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	p := &proc{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.stdout, &p.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	r.addPID(cmd.Process.Pid)
	r.mu.Lock()
	r.live[p] = true
	r.mu.Unlock()
	go func() {
		p.err = cmd.Wait()
		r.mu.Lock()
		delete(r.live, p)
		r.mu.Unlock()
		r.dropPID(cmd.Process.Pid)
		close(p.done)
	}()
	return p, nil
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(b)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// output is what the process printed, stderr first.
func (p *proc) output() string {
	return strings.TrimSpace(p.stderr.String() + "\n" + p.stdout.String())
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to d for the process to end.
func (p *proc) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// signal sends sig to the process group.
func (p *proc) signal(sig syscall.Signal) {
	if !p.exited() {
		_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	}
}

// stop sends sig, and SIGKILL to the group after grace.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	p.signal(sig)
	if !p.wait(grace) {
		p.signal(syscall.SIGKILL)
		p.wait(5 * time.Second)
	}
}

// run runs argv to completion (killed with its group when ctx ends or after
// timeout) and returns it with its output.
func (r *registry) run(ctx context.Context, timeout time.Duration, argv ...string) (*proc, error) {
	p, err := r.startProc(argv...)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		p.stop(syscall.SIGKILL, time.Second)
		return p, ctx.Err()
	case <-time.After(timeout):
		p.stop(syscall.SIGKILL, time.Second)
		return p, fmt.Errorf("%s: no result after %v", filepath.Base(argv[0]), timeout)
	}
	if p.err != nil {
		return p, fmt.Errorf("%s: %v: %s", filepath.Base(argv[0]), p.err, lastLine(p.output()))
	}
	return p, nil
}

// timed runs argv and returns how long it took.
func (r *registry) timed(ctx context.Context, timeout time.Duration, argv ...string) (time.Duration, error) {
	start := time.Now()
	_, err := r.run(ctx, timeout, argv...)
	return time.Since(start), err
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

// fuseMount is a LUN served as a file by a FUSE daemon.
type fuseMount struct {
	file       string // the LUN as a file
	mountpoint string
	daemon     *proc // the process whose memory is the FUSE daemon's
	reg        *registry
	stopSig    syscall.Signal // how the daemon is asked to unmount and exit
	unmountCmd []string       // or the command that unmounts (nbdfuse)
}

// waitMounted waits until mountpoint is mounted and file is readable.
func (r *registry) waitMounted(ctx context.Context, p *proc, mountpoint, file string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if mounted(mountpoint) {
			if _, err := os.Stat(file); err == nil {
				r.addMount(mountpoint)
				return nil
			}
		}
		if p.exited() {
			return fmt.Errorf("%s exited before mounting: %s", filepath.Base(p.cmd.Path), lastLine(p.output()))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not mount %s within 60 s", filepath.Base(p.cmd.Path), mountpoint)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// close unmounts and stops the daemon; its error says whether it went
// cleanly.
func (m *fuseMount) close() error {
	var errs []error
	if m.unmountCmd != nil {
		if out, err := exec.Command(m.unmountCmd[0], m.unmountCmd[1:]...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v: %s", strings.Join(m.unmountCmd, " "), err, bytes.TrimSpace(out)))
		}
	} else {
		m.daemon.signal(m.stopSig)
	}
	if !m.daemon.wait(120 * time.Second) {
		errs = append(errs, fmt.Errorf("%s did not exit within 120 s", filepath.Base(m.daemon.cmd.Path)))
		m.daemon.stop(syscall.SIGKILL, time.Second)
	}
	if mounted(m.mountpoint) {
		_ = exec.Command("fusermount3", "-u", "-z", m.mountpoint).Run()
		errs = append(errs, fmt.Errorf("%s was still mounted", m.mountpoint))
	}
	m.reg.dropMount(m.mountpoint)
	return errors.Join(errs...)
}

// peakRSS returns the daemon's peak resident set size (VmHWM) in bytes.
func (m *fuseMount) peakRSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.daemon.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, errors.New("no VmHWM in /proc/PID/status")
}
