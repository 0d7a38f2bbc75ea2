package integration

// diskGuard and the helpers around it serve tests that stack file systems:
// ext4 on a loop device on a file of an iscsifs FUSE mount, written by
// programs in a small memory cgroup. Such a stack can hang (the callers of a
// FUSE request nobody answers wait in D state and cannot be killed), and a
// failed or hung test must not leave a wedged machine behind. A diskGuard
// undoes what is registered with it when the test ends, aborts FUSE
// connections where it must, and waits on nothing without a bound.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/iscsifs/iscsifs/fusefs"
	"golang.org/x/sys/unix"
)

const (
	guardTimeout  = 20 * time.Second // each command a cleanup runs (umount, losetup, fusermount3)
	guardGrace    = 5 * time.Second  // after the kill, before a command is left behind as unkillable
	guardStall    = time.Minute      // cleanups after the test blocked this long: abort FUSE
	fuseCtlDir    = "/sys/fs/fuse/connections"
	memCgroupRoot = "/sys/fs/cgroup/memory"
	cgroupPrefix  = "iscsifs-test-" // then the creating process's pid, "-" and random hex
)

// diskGuard undoes, when its test ends, what the test registered with it.
// Its cleanup runs in this order:
//
//  1. in a failed test, registered FUSE connections with requests that stay
//     waiting for a second are aborted and their mounts detached first, so
//     that the steps below fail fast instead of waiting on them;
//  2. file systems of mount are unmounted, last registered first: umount,
//     then umount -l if that fails;
//  3. loop devices of loop are detached (losetup -d) if still attached to
//     what they were attached to when registered;
//  4. FUSE mounts of fuse still mounted (in a failed test also those detached
//     but with requests waiting) get their connection aborted through
//     /sys/fs/fuse/connections/ID/abort and are detached (fusermount3 -u -z,
//     or umount -l);
//  5. memory cgroups of memCgroup are removed, tasks still in them moved back
//     to the test process's cgroup.
//
// Every command runs with a timeout and is left behind (and reported) if it
// cannot be killed, so the cleanup cannot hang. It logs only when it found
// something left over and fails the test when it could not clean up.
//
// Two timers abort every registered FUSE connection, and fail the test, on
// hangs the test cannot handle itself: one shortly before the test binary's
// -timeout, which panics without running cleanups; one when the cleanups that
// run before the guard's own, counted from that of the last fuse call, take
// guardStall (startMount's kill of a server with a thread stuck on its own
// mount, say).
//
// Cleanups run last registered first: a guard made after startMount unmounts
// the file systems over the mount while its server still runs. newDiskGuard
// calls t.TempDir, so the test's temporary directories are removed after the
// guard's cleanup, when nothing is mounted on them any more.
type diskGuard struct {
	t      testing.TB
	errorf func(format string, args ...any) // t.Errorf; the self-test records instead

	mu      sync.Mutex
	closed  bool   // the cleanup has started
	aborted string // why abortAll aborted the FUSE connections, "" if it did not
	stalled bool   // the stall timer is armed
	fuses   []guardFUSE
	mounts  []string
	loops   []guardLoop
	cgroups []guardCgroup
	stops   []func() // timers and watchers: stopped when the cleanup starts
}

// guardFUSE is a registered FUSE mount with the connection it had then.
type guardFUSE struct {
	dir  string
	conn uint64
}

// guardLoop is a registered loop device with what it was attached to: inode,
// device and offset of the backing file, as losetup lists them. (The path is
// no good: it changes when the FUSE mount holding the file is detached.)
type guardLoop struct{ dev, id string }

// guardCgroup is a cgroup of memCgroup and the test process's memory cgroup
// when it was made, where tasks left in it go back to.
type guardCgroup struct{ path, home string }

// guardRequireRoot skips the test unless it runs as root (fails it with CI=true).
func guardRequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root: loop devices, mounts, FUSE connections and memory cgroups")
	}
}

// newDiskGuard returns a guard whose cleanup undoes what is registered with
// it. It skips the test unless it runs as root (fails it with CI=true).
func newDiskGuard(t testing.TB) *diskGuard {
	t.Helper()
	guardRequireRoot(t)
	// The first TempDir of a test registers the removal of its temporary
	// directories: done here, that runs after the guard's cleanup.
	t.TempDir()
	g := &diskGuard{t: t, errorf: t.Errorf}
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if deadline, ok := d.Deadline(); ok {
			left := time.Until(deadline)
			early := min(time.Minute, left/4)
			g.after(left-early, fmt.Sprintf("the test binary's -timeout is %v away", early))
		}
	}
	t.Cleanup(g.cleanup)
	return g
}

// after calls abortAll(why) in d unless the cleanup starts first. The caller
// holds g.mu (or has not shared g yet).
func (g *diskGuard) after(d time.Duration, why string) {
	timer := time.AfterFunc(d, func() { g.abortAll(why) })
	g.stops = append(g.stops, func() { timer.Stop() })
}

// fuse registers the FUSE mount at dir and returns its connection number, the
// name of its directory in /sys/fs/fuse/connections (fusectl is mounted there
// if it is not).
func (g *diskGuard) fuse(dir string) uint64 {
	g.t.Helper()
	dir = guardPath(g.t, dir)
	e, ok := guardMountAt(dir)
	conn := mountConn(e)
	if !ok || !isFUSE(e.FSType) {
		g.t.Fatalf("%s is not a FUSE mount", dir)
	}
	if err := ensureFusectl(); err != nil {
		skipOrFail(g.t, fmt.Sprintf("%v: hung FUSE connections could not be aborted", err))
	}
	if _, err := os.Stat(fuseConnDir(conn)); err != nil {
		g.t.Fatalf("FUSE mount %s has no connection %d: %v", dir, conn, err)
	}
	guardAdd(&g.mu, &g.fuses, guardFUSE{dir, conn})
	g.t.Cleanup(g.armStall)
	return conn
}

// armStall, a cleanup, starts the timer that aborts the FUSE connections
// when the cleanups after it, up to the guard's own, take guardStall.
func (g *diskGuard) armStall() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.stalled && !g.closed {
		g.stalled = true
		g.after(guardStall, fmt.Sprintf("cleanups were blocked for %v after the test", guardStall))
	}
}

// mount registers the mountpoint of a file system (ext4 on a loop device, say)
// for the cleanup to unmount. It may come before the mount; twice is harmless.
func (g *diskGuard) mount(dir string) {
	g.t.Helper()
	guardAdd(&g.mu, &g.mounts, guardPath(g.t, dir))
}

// loop registers an attached loop device for the cleanup to detach, if it is
// still attached to the same file then. A device not attached now is ignored;
// registering one again is harmless.
func (g *diskGuard) loop(dev string) {
	g.t.Helper()
	id, err := guardLoopID(dev)
	if err != nil {
		g.t.Fatal(err)
	}
	if id != "" {
		guardAdd(&g.mu, &g.loops, guardLoop{dev, id})
	}
}

// guardAdd appends v to *list under mu unless it is there.
func guardAdd[T comparable](mu *sync.Mutex, list *[]T, v T) {
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(*list, v) {
		*list = append(*list, v)
	}
}

// abortFUSE aborts the FUSE connection of the mount at dir now (the one it
// has, and the one it had when registered) and detaches the mount: whatever
// waits on the connection fails with ECONNABORTED or ENOTCONN. Nothing left
// to abort is fine.
func (g *diskGuard) abortFUSE(dir string) {
	g.t.Helper()
	f := guardFUSE{dir: guardPath(g.t, dir)}
	g.mu.Lock()
	for _, r := range g.fuses {
		if r.dir == f.dir {
			f = r
		}
	}
	g.mu.Unlock()
	if _, err := f.abort(); err != nil {
		g.t.Fatal(err)
	}
}

// watch runs watchDState over pids() until the cleanup: when a task stays in
// D state for limit, the test fails and every registered FUSE connection is
// aborted, which releases the tasks that wait on one.
func (g *diskGuard) watch(pids func() []int, limit time.Duration) {
	stop := watchDState(context.Background(), pids, limit, func(desc string) {
		g.abortAll("tasks stuck in D state:\n" + desc)
	})
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stops = append(g.stops, stop)
}

// abortAll aborts every registered FUSE connection, detaches the mounts and
// fails the test saying why. Only the first call acts, and none once the
// cleanup has started. Any goroutine may call it.
func (g *diskGuard) abortAll(why string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.aborted != "" {
		return
	}
	g.aborted = why
	lines := []string{why}
	for _, f := range g.fuses {
		did, err := f.abort()
		lines = append(lines, did...)
		if err != nil {
			lines = append(lines, err.Error())
		}
	}
	g.errorf("diskGuard: %s", strings.Join(lines, "\n\t"))
}

func (g *diskGuard) cleanup() {
	g.mu.Lock()
	g.closed = true
	stops := g.stops
	g.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
	// No other goroutine uses g from here on.
	var did []string
	fail := func(err error) {
		if err != nil {
			g.errorf("diskGuard cleanup: %v", err)
		}
	}
	abort := func(f guardFUSE) {
		d, err := f.abort()
		did = append(did, d...)
		fail(err)
	}
	failed := g.t.Failed()

	// 1. Hung FUSE connections of a failed test.
	handled := make([]bool, len(g.fuses))
	if failed {
		var hung []int
		for i, f := range g.fuses {
			if f.waiting() > 0 {
				hung = append(hung, i)
			}
		}
		if len(hung) > 0 {
			time.Sleep(time.Second)
		}
		for _, i := range hung {
			if g.fuses[i].waiting() > 0 {
				did = append(did, fmt.Sprintf("requests waiting on %s for a second", g.fuses[i].dir))
				abort(g.fuses[i])
				handled[i] = true
			}
		}
	}
	// 2. File systems.
	for _, dir := range slices.Backward(g.mounts) {
		if _, ok := guardMountAt(dir); !ok {
			continue
		}
		_, err := guardRun(guardTimeout, "umount", dir)
		if _, ok := guardMountAt(dir); !ok {
			did = append(did, "unmounted "+dir)
			continue
		}
		if _, err2 := guardRun(guardTimeout, "umount", "-l", dir); err2 != nil {
			fail(errors.Join(err, err2))
			continue
		}
		did = append(did, fmt.Sprintf("unmounted %s lazily after %v", dir, err))
	}
	// 3. Loop devices.
	for _, l := range slices.Backward(g.loops) {
		id, err := guardLoopID(l.dev)
		if err != nil || id != l.id {
			fail(err)
			continue // detached already, or attached anew by someone else
		}
		if _, err := guardRun(guardTimeout, "losetup", "-d", l.dev); err != nil && !strings.Contains(err.Error(), "No such device") {
			fail(err)
			continue
		}
		if id, _ := guardLoopID(l.dev); id == l.id {
			did = append(did, fmt.Sprintf("loop device %s in use: detaches when closed", l.dev))
		} else {
			did = append(did, "detached loop device "+l.dev)
		}
	}
	// 4. FUSE mounts.
	for i, f := range slices.Backward(g.fuses) {
		if _, mounted := f.conns(); !handled[i] && (mounted || failed && f.waiting() > 0) {
			abort(f)
		}
	}
	// 5. Cgroups.
	for _, c := range slices.Backward(g.cgroups) {
		d, err := c.remove()
		did = append(did, d...)
		fail(err)
	}
	if len(did) > 0 {
		g.t.Logf("diskGuard cleanup found leftovers:\n\t%s", strings.Join(did, "\n\t"))
	}
}

// conns returns the connection numbers of f to look at: the registered one
// and the one mounted at f.dir now if that differs; mounted says whether a
// FUSE file system is mounted there.
func (f guardFUSE) conns() (conns []uint64, mounted bool) {
	if f.conn != 0 {
		conns = append(conns, f.conn)
	}
	if e, ok := guardMountAt(f.dir); ok && isFUSE(e.FSType) {
		mounted = true
		if mountConn(e) != f.conn {
			conns = append(conns, mountConn(e))
		}
	}
	return conns, mounted
}

// abort aborts the live connections of f, detaches its mount and says what it did.
func (f guardFUSE) abort() ([]string, error) {
	conns, mounted := f.conns()
	var did []string
	var errs []error
	for _, conn := range conns {
		note, err := fuseAbort(conn, f.dir)
		if note != "" {
			did = append(did, note)
		}
		errs = append(errs, err)
	}
	if mounted {
		if err := detachFUSE(f.dir); err != nil {
			errs = append(errs, err)
		} else {
			did = append(did, "detached FUSE mount "+f.dir)
		}
	}
	return did, errors.Join(errs...)
}

// waiting returns how many requests wait on the live connections of f.
func (f guardFUSE) waiting() int {
	conns, _ := f.conns()
	n := 0
	for _, conn := range conns {
		if live, _ := fuseLive(conn, f.dir); live {
			n += fuseWaiting(conn)
		}
	}
	return n
}

// guardMountAt returns the topmost mount on dir. It reads mountinfo, which,
// unlike stat, never asks a FUSE server anything.
func guardMountAt(dir string) (fusefs.MountInfo, bool) {
	mounts, _ := fusefs.ReadMountInfo()
	for _, m := range slices.Backward(mounts) {
		if m.Dir == dir {
			return m, true
		}
	}
	return fusefs.MountInfo{}, false
}

// mountConn returns the kernel's number for the device of a mount, major<<20 |
// minor: for FUSE, the connection number (the major is 0).
func mountConn(m fusefs.MountInfo) uint64 { return uint64(m.Major)<<20 | uint64(m.Minor) }

// guardPath makes dir absolute with the symbolic links of its parent resolved,
// as mountinfo names it, without looking at dir itself (a FUSE mount, maybe hung).
func guardPath(t testing.TB, dir string) string {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(parent, filepath.Base(abs))
}

func isFUSE(fstype string) bool {
	return fstype == "fuse" || fstype == "fuseblk" || strings.HasPrefix(fstype, "fuse.")
}

var fusectlMu sync.Mutex

// ensureFusectl mounts the FUSE control file system on /sys/fs/fuse/connections
// unless it is there. It stays mounted (systemd mounts it on most machines).
func ensureFusectl() error {
	fusectlMu.Lock()
	defer fusectlMu.Unlock()
	if m, ok := guardMountAt(fuseCtlDir); ok && m.FSType == "fusectl" {
		return nil
	}
	if err := unix.Mount("fusectl", fuseCtlDir, "fusectl", 0, ""); err != nil {
		return fmt.Errorf("mount -t fusectl fusectl %s: %w", fuseCtlDir, err)
	}
	return nil
}

func fuseConnDir(conn uint64) string { return filepath.Join(fuseCtlDir, strconv.FormatUint(conn, 10)) }

// fuseWaiting returns the number of requests waiting on connection conn.
func fuseWaiting(conn uint64) int {
	raw, _ := os.ReadFile(filepath.Join(fuseConnDir(conn), "waiting"))
	n, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	return n
}

// fuseLive reports whether FUSE connection conn exists and is not, by now,
// the connection of a mount elsewhere than dir: the numbers are reused.
func fuseLive(conn uint64, dir string) (bool, error) {
	if err := ensureFusectl(); err != nil {
		return false, err
	}
	if _, err := os.Stat(fuseConnDir(conn)); err != nil {
		return false, nil
	}
	mounts, err := fusefs.ReadMountInfo()
	for _, m := range mounts {
		if mountConn(m) == conn && m.Dir != dir && isFUSE(m.FSType) {
			return false, nil
		}
	}
	return err == nil, err
}

// fuseAbort aborts connection conn of the mount at dir if it is live, and
// says what it did.
func fuseAbort(conn uint64, dir string) (string, error) {
	live, err := fuseLive(conn, dir)
	if !live || err != nil {
		return "", err
	}
	waiting := fuseWaiting(conn)
	_, err = guardWithin(5*time.Second, func() (struct{}, error) {
		return struct{}{}, os.WriteFile(filepath.Join(fuseConnDir(conn), "abort"), []byte("1"), 0)
	})
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil // gone meanwhile
	} else if err != nil {
		return "", fmt.Errorf("aborting FUSE connection %d of %s: %w", conn, dir, err)
	}
	return fmt.Sprintf("aborted FUSE connection %d of %s (%d requests waiting)", conn, dir, waiting), nil
}

// detachFUSE lazily unmounts the FUSE mount at dir.
func detachFUSE(dir string) error {
	_, err := guardRun(guardTimeout, "fusermount3", "-u", "-z", dir)
	if _, ok := guardMountAt(dir); err == nil || !ok {
		return nil
	}
	if _, err2 := guardRun(guardTimeout, "umount", "-l", dir); err2 != nil {
		return errors.Join(err, err2)
	}
	return nil
}

// guardLoopID returns what loop device dev is attached to, "BACK-INO
// BACK-MAJ:MIN OFFSET", or "" if it is not attached.
func guardLoopID(dev string) (string, error) {
	out, err := guardRun(guardTimeout, "losetup", "--list", "--noheadings", "-O", "BACK-INO,BACK-MAJ:MIN,OFFSET", dev)
	if err != nil && strings.Contains(out, "No such device") {
		return "", nil
	}
	return strings.Join(strings.Fields(out), " "), err
}

// guardRun runs a command for a cleanup and returns its combined output. It
// is killed after timeout and left behind (named in the error) if it has not
// exited guardGrace later: nothing can kill a process in D state.
func guardRun(timeout time.Duration, name string, args ...string) (string, error) {
	path, err := findTool(name)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	out := &mntSyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = time.Second
	line := strings.Join(append([]string{name}, args...), " ")
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("%s: %w", line, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		text := strings.TrimSpace(out.String())
		if err != nil {
			return text, fmt.Errorf("%s: %v: %s", line, err, text)
		}
		return text, nil
	case <-time.After(timeout + guardGrace):
		return "", fmt.Errorf("%s: pid %d still there %v after it was killed (D state?): left behind", line, cmd.Process.Pid, guardGrace)
	}
}

// guardWithin runs f and gives up on it after d: a read or write of /proc or
// /sys can block in a wedged kernel. Given up, f runs on and its result is lost.
func guardWithin[T any](d time.Duration, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-time.After(d):
		var zero T
		return zero, fmt.Errorf("no answer after %v: left behind", d)
	}
}

// memCgroup creates a memory cgroup (v1) limited to limit bytes and returns
// its directory; the cleanup removes it, moving tasks still in it back to the
// test process's cgroup. Start programs in it with cgCommand or cgAddPID.
// Without memory cgroup v1 it skips the test (fails it with CI=true).
//
// Page cache dirtied in it is charged to it, but v1 has no writeback of its
// own (the dirty limits stay global) and reclaim in a full v1 cgroup may wait
// for writeback: keep FUSE servers out of the cgroup of what writes to them.
func (g *diskGuard) memCgroup(limit int64) string {
	g.t.Helper()
	if _, err := os.Stat(filepath.Join(memCgroupRoot, "memory.limit_in_bytes")); err != nil {
		skipOrFail(g.t, fmt.Sprintf("no memory cgroup v1 at %s: %v", memCgroupRoot, err))
	}
	if swept := sweepCgroups(); len(swept) > 0 {
		g.t.Logf("removed cgroups of test processes that are gone: %s", strings.Join(swept, " "))
	}
	home, err := memCgroupOf("self")
	if err != nil {
		g.t.Fatal(err)
	}
	if strings.HasPrefix(filepath.Base(home), cgroupPrefix) {
		home = memCgroupRoot
	}
	cg := filepath.Join(memCgroupRoot, fmt.Sprintf("%s%d-%08x", cgroupPrefix, os.Getpid(), rand.Uint32()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		g.t.Fatal(err)
	}
	guardAdd(&g.mu, &g.cgroups, guardCgroup{cg, home})
	if err := os.WriteFile(filepath.Join(cg, "memory.limit_in_bytes"), []byte(strconv.FormatInt(limit, 10)), 0); err != nil {
		g.t.Fatal(err)
	}
	return cg
}

// cgAddPID moves process pid (all its threads) into cgroup cg.
func cgAddPID(cg string, pid int) error {
	return os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
}

// cgroupPIDs returns the processes in cgroup cg (none if it is gone).
func cgroupPIDs(cg string) []int { return guardReadPIDs(filepath.Join(cg, "cgroup.procs")) }

// cgCommand returns a command running name with args in cgroup cg from its
// first instruction: a shell writes its own pid to cg/cgroup.procs and execs
// the program, so neither it nor its children ever run outside cg.
func cgCommand(ctx context.Context, cg, name string, args ...string) *exec.Cmd {
	script := `echo $$ > "$1" && shift && exec "$@"`
	return exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", script, "sh", filepath.Join(cg, "cgroup.procs"), name}, args...)...)
}

// memCgroupOf returns the directory of the memory cgroup (v1) of process pid
// ("self" for this one).
func memCgroupOf(pid string) (string, error) {
	raw, err := os.ReadFile(filepath.Join("/proc", pid, "cgroup"))
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(raw)) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) == 3 && slices.Contains(strings.Split(parts[1], ","), "memory") {
			return filepath.Join(memCgroupRoot, parts[2]), nil
		}
	}
	return "", fmt.Errorf("process %s is in no memory cgroup (v1)", pid)
}

func guardReadPIDs(path string) []int {
	raw, _ := os.ReadFile(path)
	var pids []int
	for _, f := range strings.Fields(string(raw)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// remove moves the tasks still in the cgroup to c.home and removes it.
func (c guardCgroup) remove() ([]string, error) {
	if _, err := os.Stat(c.path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var did []string
	for try := 0; ; try++ {
		tasks := guardReadPIDs(filepath.Join(c.path, "tasks"))
		if len(tasks) == 0 {
			break
		}
		if try == 20 {
			return did, fmt.Errorf("cgroup %s: tasks %v still in it after 2 s", c.path, tasks)
		}
		if try == 0 {
			var names []string
			for _, tid := range tasks {
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", tid))
				names = append(names, fmt.Sprintf("%d (%s)", tid, strings.TrimSpace(string(comm))))
			}
			did = append(did, fmt.Sprintf("moved tasks %s from %s to %s", strings.Join(names, ", "), c.path, c.home))
		}
		for _, tid := range tasks {
			// A thread's id moves its whole process; one that is gone fails.
			guardWithin(2*time.Second, func() (struct{}, error) { return struct{}{}, cgAddPID(c.home, tid) })
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Reclaim the page cache still charged to it, which would keep the removed
	// cgroup alive (offline) in the kernel. The write loops in reclaim until a
	// signal, hence a shell with a timeout.
	if usage, _ := os.ReadFile(filepath.Join(c.path, "memory.usage_in_bytes")); strings.TrimSpace(string(usage)) != "0" {
		guardRun(5*time.Second, "sh", "-c", `echo 0 > "$1"`, "sh", filepath.Join(c.path, "memory.force_empty"))
	}
	var err error
	for range 10 {
		if err = os.Remove(c.path); err == nil || errors.Is(err, fs.ErrNotExist) {
			return did, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return did, fmt.Errorf("removing cgroup %s: %w", c.path, err)
}

// sweepCgroups removes the empty test cgroups of processes that are gone,
// such as a test binary killed by go test -timeout before its cleanups ran.
func sweepCgroups() []string {
	paths, _ := filepath.Glob(filepath.Join(memCgroupRoot, cgroupPrefix+"*"))
	var swept []string
	for _, cg := range paths {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(cg), cgroupPrefix), "-")
		n, err := strconv.Atoi(pid)
		if err != nil || syscall.Kill(n, 0) != syscall.ESRCH || len(cgroupPIDs(cg)) > 0 {
			continue
		}
		if os.Remove(cg) == nil {
			swept = append(swept, cg)
		}
	}
	return swept
}

// dWatch tracks how long tasks stay in D state (uninterruptible sleep), where
// a task waiting for I/O or a FUSE request that never completes stays.
type dWatch struct {
	proc     string        // the procfs root: /proc, or fake files in a test
	interval time.Duration // between polls
	limit    time.Duration // this long in D state is stuck
	pids     func() []int
	since    map[[2]int]time.Time // pid and tid -> since when in D state
}

// watchDState polls every task of the processes pids() every 500 ms and calls
// onStuck once, describing each stuck task (pid, tid, comm, wchan, seconds in
// D state, kernel stack), when one has been in D state for limit. The returned
// stop ends the watch and waits for it, and for onStuck, to return.
func watchDState(ctx context.Context, pids func() []int, limit time.Duration, onStuck func(desc string)) (stop func()) {
	w := &dWatch{proc: "/proc", interval: 500 * time.Millisecond, limit: limit, pids: pids}
	return w.start(ctx, onStuck)
}

func (w *dWatch) start(ctx context.Context, onStuck func(desc string)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(w.interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				if desc := w.poll(now); desc != "" {
					onStuck(desc)
					return
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// poll looks at every task once, at time now, and describes those in D state
// for limit or longer ("" if none).
func (w *dWatch) poll(now time.Time) string {
	if w.since == nil {
		w.since = map[[2]int]time.Time{}
	}
	seen := map[[2]int]bool{}
	var stuck []string
	for _, pid := range w.pids() {
		taskDir := filepath.Join(w.proc, strconv.Itoa(pid), "task")
		tasks, err := os.ReadDir(taskDir)
		if err != nil {
			continue // gone
		}
		for _, e := range tasks {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			dir := filepath.Join(taskDir, e.Name())
			state, comm, err := readTaskStat(filepath.Join(dir, "stat"))
			if err != nil || state != 'D' {
				continue
			}
			key := [2]int{pid, tid}
			seen[key] = true
			first, ok := w.since[key]
			if !ok {
				first = now
				w.since[key] = now
			}
			if d := now.Sub(first); d >= w.limit {
				stuck = append(stuck, describeTask(dir, pid, tid, comm, d))
			}
		}
	}
	maps.DeleteFunc(w.since, func(key [2]int, _ time.Time) bool { return !seen[key] })
	return strings.Join(stuck, "\n")
}

// readTaskStat returns state and command name from a /proc/PID/task/TID/stat
// file, "TID (COMM) STATE ...", where COMM may hold spaces and parentheses.
func readTaskStat(path string) (state byte, comm string, err error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, "", err
	}
	open, end := bytes.IndexByte(raw, '('), bytes.LastIndexByte(raw, ')')
	if open < 0 || end < open || end+2 >= len(raw) {
		return 0, "", fmt.Errorf("%s: no state in %q", path, raw)
	}
	return raw[end+2], string(raw[open+1 : end]), nil
}

// describeTask says which task in dir is stuck, where and for how long.
func describeTask(dir string, pid, tid int, comm string, d time.Duration) string {
	wchan, err := os.ReadFile(filepath.Join(dir, "wchan"))
	if err != nil {
		wchan = []byte("?")
	}
	desc := fmt.Sprintf("pid %d tid %d (%s) in D state for %.1f s, wchan %s", pid, tid, comm, d.Seconds(), bytes.TrimSpace(wchan))
	stack, err := guardWithin(time.Second, func() ([]byte, error) { return os.ReadFile(filepath.Join(dir, "stack")) })
	if err == nil && len(bytes.TrimSpace(stack)) > 0 {
		desc += "\n\t" + strings.ReplaceAll(string(bytes.TrimSpace(stack)), "\n", "\n\t")
	}
	return desc
}

// copyTree copies the directories, regular files (with their permissions) and
// symbolic links of src to dst, in walk order, stopping before the first file
// that would take the bytes copied over maxBytes (no limit if 0). It returns
// the number of regular files and their bytes. Call it from the test's goroutine.
func copyTree(t testing.TB, src, dst string, maxBytes int64) (files int, size int64) {
	t.Helper()
	errFull := errors.New("maxBytes reached")
	err := guardWalk(src, func(path, rel string, d fs.DirEntry) error {
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		switch {
		case err != nil:
			return err
		case d.IsDir():
			return os.MkdirAll(to, info.Mode().Perm()|0o700)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case d.Type().IsRegular():
			if maxBytes > 0 && size+info.Size() > maxBytes {
				return errFull
			}
			n, err := guardCopyFile(path, to, info.Mode().Perm())
			files++
			size += n
			return err
		}
		return nil // devices, sockets, fifos
	})
	if err != nil && err != errFull {
		t.Fatalf("copying %s to %s: %v", src, dst, err)
	}
	return files, size
}

// guardWalk calls fn for everything below root, root included, in lexical
// order, with the path relative to root.
func guardWalk(root string, fn func(path, rel string, d fs.DirEntry) error) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		return fn(path, rel, d)
	})
}

func guardCopyFile(src, dst string, perm fs.FileMode) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// treeSums maps the path below root (with slashes) of every regular file to
// its sha256 in hex and of every symbolic link to "link:" and its target.
func treeSums(t testing.TB, root string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	err := guardWalk(root, func(path, rel string, d fs.DirEntry) (err error) {
		rel = filepath.ToSlash(rel)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			var target string
			target, err = os.Readlink(path)
			sums[rel] = "link:" + target
		case d.Type().IsRegular():
			sums[rel], err = guardFileSum(path)
		}
		return err
	})
	if err != nil {
		t.Fatalf("checksums of %s: %v", root, err)
	}
	return sums
}

func guardFileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

var goRoot = sync.OnceValues(func() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOROOT: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
})

// goSourceTree returns $(go env GOROOT)/src, a real tree to copy: about
// 150 MB in 11,000 files; copyTree's maxBytes takes the first part of it.
func goSourceTree(t testing.TB) string {
	t.Helper()
	root, err := goRoot()
	src := filepath.Join(root, "src")
	if err == nil {
		_, err = os.Stat(filepath.Join(src, "go", "build"))
	}
	if err != nil {
		skipOrFail(t, fmt.Sprintf("no Go source tree to copy: %v", err))
	}
	return src
}

// TestDiskGuardTree: copyTree and treeSums agree on a small tree with a
// symbolic link, see a changed byte, and maxBytes copies a prefix of the Go
// source tree, each file as in GOROOT.
func TestDiskGuardTree(t *testing.T) {
	src := t.TempDir()
	big := make([]byte, 100_000)
	fillRand(big, 7)
	for _, err := range []error{
		os.MkdirAll(filepath.Join(src, "sub", "deep"), 0o755),
		os.Mkdir(filepath.Join(src, "empty"), 0o750),
		os.WriteFile(filepath.Join(src, "a.txt"), []byte("hello\n"), 0o644),
		os.WriteFile(filepath.Join(src, "sub", "deep", "b.bin"), big, 0o600),
		os.Symlink("sub/deep/b.bin", filepath.Join(src, "link")),
		os.Symlink("../nowhere", filepath.Join(src, "sub", "dangling")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(t.TempDir(), "copy")
	if files, size := copyTree(t, src, dst, 0); files != 2 || size != 6+100_000 {
		t.Errorf("copied %d files, %d bytes; want 2, 100006", files, size)
	}
	want, got := treeSums(t, src), treeSums(t, dst)
	hello := sha256.Sum256([]byte("hello\n"))
	if len(want) != 4 || want["link"] != "link:sub/deep/b.bin" || want["sub/dangling"] != "link:../nowhere" || want["a.txt"] != hex.EncodeToString(hello[:]) {
		t.Errorf("treeSums(src) = %v", want)
	}
	if !maps.Equal(got, want) {
		t.Errorf("treeSums of the copy %v, of the original %v", got, want)
	}
	if st, err := os.Stat(filepath.Join(dst, "sub", "deep", "b.bin")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("b.bin in the copy: %v %v", st, err)
	}
	if st, err := os.Stat(filepath.Join(dst, "empty")); err != nil || !st.IsDir() {
		t.Errorf("empty in the copy: %v", err)
	}
	big[50_000] ^= 1
	if err := os.WriteFile(filepath.Join(dst, "sub", "deep", "b.bin"), big, 0o600); err != nil {
		t.Fatal(err)
	}
	changed := treeSums(t, dst)
	if changed["sub/deep/b.bin"] == want["sub/deep/b.bin"] || changed["a.txt"] != want["a.txt"] {
		t.Errorf("after flipping a bit of b.bin: %v", changed)
	}
	// Walk order is lexical: a.txt fits in 1000 bytes, b.bin does not.
	if files, size := copyTree(t, src, filepath.Join(t.TempDir(), "part"), 1000); files != 1 || size != 6 {
		t.Errorf("with maxBytes 1000: %d files, %d bytes; want 1, 6", files, size)
	}

	tree := goSourceTree(t)
	part := filepath.Join(t.TempDir(), "go")
	files, size := copyTree(t, tree, part, 1<<20)
	if files < 10 || size > 1<<20 {
		t.Errorf("1 MiB of %s: %d files, %d bytes", tree, files, size)
	}
	sums := treeSums(t, part)
	for rel, sum := range sums {
		if orig, err := guardFileSum(filepath.Join(tree, rel)); err != nil || orig != sum {
			t.Errorf("%s: sha256 %s, in GOROOT %s %v", rel, sum, orig, err)
		}
	}
	if len(sums) != files {
		t.Errorf("%d checksums of %d files", len(sums), files)
	}
}

// TestDiskGuardDState: the watchdog stays quiet over sleeping processes; over
// fake /proc files it reports a task only after limit in D state without a
// break, with pid, tid, command name and wchan, and calls onStuck once.
func TestDiskGuardDState(t *testing.T) {
	t.Run("sleeping", func(t *testing.T) {
		t.Parallel()
		cmd := exec.Command("sleep", "10")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
		fired := make(chan string, 1)
		stop := watchDState(t.Context(), func() []int { return []int{cmd.Process.Pid} }, time.Second, func(desc string) { fired <- desc })
		time.Sleep(2 * time.Second)
		stop()
		select {
		case desc := <-fired:
			t.Errorf("the watchdog fired over sleeping processes: %s", desc)
		default:
		}
	})
	t.Run("fake", func(t *testing.T) {
		t.Parallel()
		proc := t.TempDir()
		task := func(pid, tid int, state, comm string) {
			dir := filepath.Join(proc, strconv.Itoa(pid), "task", strconv.Itoa(tid))
			stat := fmt.Sprintf("%d (%s) %s 1 %d %d 0 -1 4194560 120 0 0 0\n", tid, comm, state, pid, pid)
			for _, err := range []error{
				os.MkdirAll(dir, 0o755),
				os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644),
				os.WriteFile(filepath.Join(dir, "wchan"), []byte("request_wait_answer"), 0o644),
			} {
				if err != nil {
					t.Fatal(err)
				}
			}
		}
		task(100, 100, "S", "cp")
		task(100, 101, "D", "cp (worker) x")
		task(200, 200, "D", "kworker/u8:1")
		pids := func() []int { return []int{100, 200, 300} } // 300 has exited
		w := &dWatch{proc: proc, limit: 3 * time.Second, pids: pids}
		t0 := time.Unix(1000, 0)
		for _, s := range []int{0, 2} {
			if desc := w.poll(t0.Add(time.Duration(s) * time.Second)); desc != "" {
				t.Errorf("at %d s: %q", s, desc)
			}
		}
		task(200, 200, "R", "kworker/u8:1") // a break resets 200's time
		desc := w.poll(t0.Add(3 * time.Second))
		if want := "pid 100 tid 101 (cp (worker) x) in D state for 3.0 s, wchan request_wait_answer"; desc != want {
			t.Errorf("at 3 s: %q, want %q", desc, want)
		}
		task(200, 200, "D", "kworker/u8:1")
		if desc := w.poll(t0.Add(5 * time.Second)); strings.Contains(desc, "pid 200") || !strings.Contains(desc, "tid 101") {
			t.Errorf("at 5 s: %q", desc)
		}
		if desc := w.poll(t0.Add(8 * time.Second)); !strings.Contains(desc, "pid 200 tid 200 (kworker/u8:1) in D state for 3.0 s") {
			t.Errorf("at 8 s: %q", desc)
		}

		var mu sync.Mutex
		var calls []string
		fast := &dWatch{proc: proc, interval: 10 * time.Millisecond, limit: 50 * time.Millisecond, pids: pids}
		stop := fast.start(t.Context(), func(desc string) {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, desc)
		})
		mntWaitFor(t, 20*time.Second, "onStuck", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(calls) > 0
		})
		time.Sleep(100 * time.Millisecond)
		stop()
		if len(calls) != 1 || !strings.Contains(calls[0], "tid 101") || !strings.Contains(calls[0], "tid 200") {
			t.Errorf("onStuck calls: %q", calls)
		}
	})
}

// TestDiskGuardCgroup: a memory cgroup gets its limit and the processes of
// cgCommand (a shell and its child) and cgAddPID; its guard removes it at the
// end, moving a process still running in it back to the test's own cgroup.
func TestDiskGuardCgroup(t *testing.T) {
	guardRequireRoot(t)
	var cg string
	var straggler *exec.Cmd
	t.Cleanup(func() {
		if straggler != nil {
			straggler.Process.Kill()
			straggler.Wait()
		}
	})
	t.Run("guarded", func(t *testing.T) {
		g := newDiskGuard(t)
		cg = g.memCgroup(64 << 20)
		if limit, err := os.ReadFile(filepath.Join(cg, "memory.limit_in_bytes")); err != nil || strings.TrimSpace(string(limit)) != "67108864" {
			t.Errorf("memory.limit_in_bytes %q %v", limit, err)
		}
		cmd := cgCommand(ctxFor(t, 30*time.Second), cg, "sh", "-c", "sleep 1; true")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		mntWaitFor(t, 20*time.Second, "the shell and sleep in the cgroup", func() bool {
			return slices.Contains(cgroupPIDs(cg), cmd.Process.Pid) && len(cgroupPIDs(cg)) == 2
		})
		if in, err := memCgroupOf(strconv.Itoa(cmd.Process.Pid)); in != cg {
			t.Errorf("/proc/%d/cgroup: memory cgroup %s %v, want %s", cmd.Process.Pid, in, err, cg)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		if pids := cgroupPIDs(cg); len(pids) != 0 {
			t.Errorf("processes %v in the cgroup after the command exited", pids)
		}
		straggler = exec.Command("sleep", "60")
		if err := straggler.Start(); err != nil {
			t.Fatal(err)
		}
		if err := cgAddPID(cg, straggler.Process.Pid); err != nil {
			t.Fatal(err)
		}
		if pids := cgroupPIDs(cg); !slices.Equal(pids, []int{straggler.Process.Pid}) {
			t.Errorf("cgroup.procs %v after cgAddPID(%d)", pids, straggler.Process.Pid)
		}
	})
	if cg == "" {
		return
	}
	if _, err := os.Stat(cg); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s is still there after the cleanup (%v)", cg, err)
	}
	home, err := memCgroupOf("self")
	if in, err2 := memCgroupOf(strconv.Itoa(straggler.Process.Pid)); err != nil || in != home {
		t.Errorf("the process left in the cgroup is now in %s %v, want %s %v", in, err2, home, err)
	}
}

// TestDiskGuardLoopAndMount: ext4 on a loop device over a file, mounted and
// registered, with a file held open in it: the guard's cleanup falls back to
// umount -l and sets the device to detach, which it does once the file is
// closed; the temporary directory holding both is removed.
func TestDiskGuardLoopAndMount(t *testing.T) {
	guardRequireRoot(t)
	RequireTools(t, "losetup", "mkfs.ext4", "mount", "umount")
	var img, dev, id, dir string
	var busy *os.File
	t.Cleanup(func() {
		if busy != nil {
			busy.Close()
		}
	})
	t.Run("guarded", func(t *testing.T) {
		g := newDiskGuard(t)
		img = filepath.Join(t.TempDir(), "disk.img")
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 32<<20); err != nil {
			t.Fatal(err)
		}
		dev = strings.TrimSpace(mntRunTool(t, guardTimeout, "losetup", "--find", "--show", img))
		g.loop(dev)
		g.loop(dev)
		var err error
		if id, err = guardLoopID(dev); err != nil || id == "" {
			t.Fatalf("losetup lists %s as %q: %v", dev, id, err)
		}
		mntRunTool(t, time.Minute, "mkfs.ext4", "-q", dev)
		dir = filepath.Join(t.TempDir(), "mnt")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		g.mount(dir)
		mntRunTool(t, time.Minute, "mount", dev, dir)
		if busy, err = os.Create(filepath.Join(dir, "busy")); err != nil {
			t.Fatal(err)
		}
	})
	if dir == "" {
		return
	}
	if mounted, err := mntIsMounted(dir); mounted || err != nil {
		t.Errorf("%s still mounted (%v)", dir, err)
	}
	if _, err := os.Stat(img); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s not removed with its temporary directory: %v", img, err)
	}
	if _, err := busy.Write([]byte("still works\n")); err != nil {
		t.Errorf("writing to the file held open: %v", err)
	}
	busy.Close()
	busy = nil
	mntWaitFor(t, 20*time.Second, dev+" detached", func() bool {
		now, err := guardLoopID(dev)
		return err == nil && now != id
	})
}

// dgRoot is a FUSE file system of one file, "block", whose reads signal
// reading and wait until release is closed.
type dgRoot struct {
	gofs.Inode
	reading chan struct{} // buffered
	release chan struct{}
}

func (r *dgRoot) OnAdd(ctx context.Context) {
	file := r.NewPersistentInode(ctx, &dgFile{reading: r.reading, release: r.release}, gofs.StableAttr{Mode: fuse.S_IFREG})
	r.AddChild("block", file, false)
}

type dgFile struct {
	gofs.Inode
	reading chan struct{}
	release chan struct{}
}

func (f *dgFile) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = fuse.S_IFREG | 0o444
	out.Size = 4096
	return 0
}

func (f *dgFile) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *dgFile) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	select {
	case f.reading <- struct{}{}:
	default:
	}
	<-f.release // deaf to interrupts: the caller waits for the answer
	return fuse.ReadResultData(nil), 0
}

// dgReader is a cat of a file, running.
type dgReader struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // of Wait, set before done is closed
}

func dgStartReader(t testing.TB, path string) *dgReader {
	t.Helper()
	r := &dgReader{cmd: exec.Command("cat", path), done: make(chan struct{})}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	return r
}

// TestDiskGuardFUSE, over FUSE mounts this process serves, whose reads get no
// answer: abortFUSE ends a read and detaches the mount; a reader killed
// during its read stays in D state until the watchdog of watch notices and
// aborts the connection; a mount still mounted at the end is aborted and
// detached by the cleanup. The connection number the guard finds is the
// minor device number of the mountpoint.
func TestDiskGuardFUSE(t *testing.T) {
	guardRequireRoot(t)
	RequireFUSE(t)
	release := make(chan struct{})
	var dirs [3]string
	var conns [3]uint64
	var readers [3]*dgReader
	var reports []string
	var mu sync.Mutex // reports
	// Reads are never answered: an answer on an aborted connection only makes
	// go-fuse log. Should the guard fail, the last resort is to answer.
	t.Cleanup(func() {
		for i, r := range readers {
			if r == nil {
				continue
			}
			r.cmd.Process.Kill()
			select {
			case <-r.done:
			case <-time.After(20 * time.Second):
				t.Errorf("reader %d still running", i)
				close(release)
				return
			}
			if _, ok := guardMountAt(dirs[i]); ok {
				t.Errorf("%s still mounted", dirs[i])
				detachFUSE(dirs[i])
			}
		}
	})
	t.Run("guarded", func(t *testing.T) {
		g := newDiskGuard(t)
		g.errorf = func(format string, args ...any) {
			mu.Lock()
			defer mu.Unlock()
			reports = append(reports, fmt.Sprintf(format, args...))
		}
		serve := func(i int) {
			dirs[i] = filepath.Join(t.TempDir(), "mnt")
			if err := os.Mkdir(dirs[i], 0o755); err != nil {
				t.Fatal(err)
			}
			opts := &gofs.Options{MountOptions: fuse.MountOptions{DirectMount: true, FsName: "diskguard", Name: "diskguard"}}
			reading := make(chan struct{}, 1)
			if _, err := gofs.Mount(dirs[i], &dgRoot{reading: reading, release: release}, opts); err != nil {
				t.Fatal(err)
			}
			conns[i] = g.fuse(dirs[i])
			var st unix.Stat_t
			if err := unix.Stat(dirs[i], &st); err != nil || unix.Major(st.Dev) != 0 || uint64(unix.Minor(st.Dev)) != conns[i] {
				t.Errorf("%s: st_dev %d:%d (%v), connection %d", dirs[i], unix.Major(st.Dev), unix.Minor(st.Dev), err, conns[i])
			}
			readers[i] = dgStartReader(t, filepath.Join(dirs[i], "block"))
			select {
			case <-reading:
			case <-time.After(20 * time.Second):
				t.Fatalf("the read of %s did not reach the server", dirs[i])
			}
		}
		exited := func(i int, why string) {
			t.Helper()
			select {
			case <-readers[i].done:
				if readers[i].err == nil {
					t.Errorf("reader %d exited 0 after %s", i, why)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("reader %d still running 20 s after %s", i, why)
			}
			mntWaitFor(t, 20*time.Second, dirs[i]+" detached", func() bool {
				_, ok := guardMountAt(dirs[i])
				return !ok
			})
		}

		serve(0)
		// A task waiting on FUSE sleeps interruptibly (S) until a signal: only
		// then, or in I/O under a file system, is it in D state.
		if state, _, err := readTaskStat(fmt.Sprintf("/proc/%d/stat", readers[0].cmd.Process.Pid)); state != 'S' {
			t.Errorf("a reader waiting on FUSE is in state %c (%v), want S", state, err)
		}
		g.abortFUSE(dirs[0])
		exited(0, "abortFUSE")
		g.abortFUSE(dirs[0]) // nothing left to do

		serve(1)
		pid := readers[1].cmd.Process.Pid
		readers[1].cmd.Process.Kill()
		mntWaitFor(t, 20*time.Second, "the killed reader in D state", func() bool {
			state, _, _ := readTaskStat(fmt.Sprintf("/proc/%d/stat", pid))
			return state == 'D'
		})
		g.watch(func() []int { return []int{pid} }, time.Second)
		exited(1, "the watchdog")
		mntWaitFor(t, 20*time.Second, "the watchdog's report", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(reports) > 0
		})
		mu.Lock()
		if len(reports) != 1 || !strings.Contains(reports[0], fmt.Sprintf("pid %d tid %d (cat) in D state", pid, pid)) ||
			!strings.Contains(reports[0], fmt.Sprintf("aborted FUSE connection %d of %s (1 requests waiting)", conns[1], dirs[1])) {
			t.Errorf("reports: %q", reports)
		}
		reports = nil
		mu.Unlock()

		serve(2) // left to the cleanup
	})
	if dirs[2] == "" {
		return
	}
	select {
	case <-readers[2].done:
	case <-time.After(20 * time.Second):
		t.Errorf("reader 2 still running 20 s after the cleanup")
	}
	for i, dir := range dirs {
		if _, ok := guardMountAt(dir); ok {
			t.Errorf("%s still mounted", dir)
		}
		mntWaitFor(t, 20*time.Second, fmt.Sprintf("FUSE connection %d gone", conns[i]), func() bool {
			_, err := os.Stat(fuseConnDir(conns[i]))
			return errors.Is(err, fs.ErrNotExist)
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 0 {
		t.Errorf("the cleanup reported: %q", reports)
	}
}
