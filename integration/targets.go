// Package integration runs iscsifs against real iSCSI targets (tgtd and istgt) on 127.0.0.1.
//
// The harness in targets*.go starts a target daemon with backing files in a temporary
// directory, configures it, waits until it answers, and stops it again when the test ends:
//
//	tg := integration.StartTGT(t, integration.TargetSpec{
//		Name: "iqn.2026-11.lab:plain",
//		LUNs: []integration.LUNSpec{{LUN: 1, Size: 64 << 20, Fill: "random"}},
//	})
//	url := tg.URL("iqn.2026-11.lab:plain", 1) // iscsi://127.0.0.1:PORT/iqn.2026-11.lab:plain/1
//
// Every Target has its own daemon, port and directory, so tests that each start their own
// target may run in parallel. A Target shared by several tests (for example one started in
// TestMain with NewTGT) must not be used by parallel tests that also Kill, Restart, Stop or
// Pause it: those change the daemon under every other user.
package integration

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// LUNSpec describes one logical unit of a target.
type LUNSpec struct {
	// LUN is the logical unit number. tgt reserves LUN 0 for its controller, so tgt data LUNs
	// start at 1; istgt numbers LUNs from 0.
	LUN int
	// Size of the backing file in bytes (a multiple of BlockSize). Ignored for BSType "null",
	// which tgt always presents as 1 TiB.
	Size int64
	// Fill is "zero" (or ""): a sparse file; or "random": random data over the whole size.
	Fill string
	// BSType is "" (a file) or "null" (tgt only: reads zeros, drops writes).
	BSType string
	// ReadOnly presents the LUN write-protected.
	ReadOnly bool
	// Thin enables logical block provisioning (UNMAP, WRITE SAME with UNMAP); tgt only.
	Thin bool
	// BlockSize is the logical block size in bytes; 0 means 512. istgt has one block size per
	// target, so all LUNs of an istgt target must agree.
	BlockSize int
}

// TargetSpec describes one iSCSI target (a tgt target or an istgt LogicalUnit section).
type TargetSpec struct {
	// Name is the full target IQN, e.g. iqn.2026-11.lab:plain.
	Name string
	LUNs []LUNSpec
	// CHAPUser and CHAPSecret, when set, make the target require one-way CHAP.
	CHAPUser, CHAPSecret string
	// MutualUser and MutualSecret are the target's own credentials for mutual CHAP.
	// tgt offers but does not require mutual CHAP; istgt requires it ("CHAP Mutual").
	MutualUser, MutualSecret string
	// Keys are target parameters. For tgt they are set with
	// `tgtadm --op update --mode target -n KEY -v VALUE` (HeaderDigest, DataDigest,
	// MaxRecvDataSegmentLength, FirstBurstLength, InitialR2T, nop_interval, nop_count, ...).
	// For istgt see istgtKeyPlace: negotiation keys go into the target's section,
	// NopInInterval and friends into [Global], HeaderDigest/DataDigest=CRC32C become UseDigest.
	Keys map[string]string
	// ExtraPortalHosts are more addresses (in 127.0.0.0/8) the daemon
	// listens on, at the same port, in the one portal group. istgt only
	// (with tgt, add portals at run time: tgtadm --op new --mode portal).
	ExtraPortalHosts []string
}

// Target is a running (or stopped) target daemon started by StartTGT or StartISTGT.
type Target struct {
	Kind   string // "tgt" or "istgt"
	Host   string // always 127.0.0.1
	Port   int
	Portal string // "127.0.0.1:PORT"
	Dir    string // holds backing files, configuration and the daemon's log
	// Control is tgtd's management socket number (-C N, /var/run/tgtd/socket.N); 0 for istgt.
	Control int
	// LogPath is the daemon's combined stdout and stderr, appended across restarts.
	LogPath string

	specs   []TargetSpec
	backing map[lunKey]string
	ops     daemonOps
	fail    func(msg string) // reports a harness failure to the caller (t.Fatal or panic)

	mu     sync.Mutex
	proc   *daemon // the running daemon, nil when stopped or killed
	last   *daemon // the most recent daemon run, for inspecting how it ended
	paused bool
}

type lunKey struct {
	iqn string
	lun int
}

// daemonOps is what differs between tgtd and istgt.
type daemonOps interface {
	tools() []string
	// validate checks the specs before anything is created.
	validate(specs []TargetSpec) error
	// launch starts the daemon on tg.Port and returns when it is ready and configured.
	// It returns an error wrapping errPortBusy when the port could not be bound.
	launch(tg *Target) (*daemon, error)
	// shutdown stops a running daemon gracefully (the caller falls back to SIGKILL).
	shutdown(tg *Target, d *daemon) error
	// cleanupFiles removes what a dead daemon leaves behind outside Dir.
	cleanupFiles(tg *Target)
}

var errPortBusy = errors.New("portal port already in use")

const (
	startTimeout   = 15 * time.Second // daemon start until ready
	stopTimeout    = 6 * time.Second  // graceful stop before SIGKILL
	reapTimeout    = 5 * time.Second  // SIGKILL until the process is gone
	restartTimeout = 10 * time.Second // retrying the same port after a restart
	startAttempts  = 5                // fresh ports tried by a new Target
)

// StartTGT starts tgtd on a free 127.0.0.1 port with the given targets. Target tids are
// assigned in order from 1. The daemon is stopped when the test ends.
func StartTGT(t testing.TB, specs ...TargetSpec) *Target {
	t.Helper()
	return startForTest(t, "tgt", tgtOps{}, specs)
}

// StartISTGT starts istgt on a free 127.0.0.1 port with the given targets, written into an
// istgt.conf as LogicalUnit1, 2, ... in order. The daemon is stopped when the test ends.
// Each login to istgt takes about one second.
func StartISTGT(t testing.TB, specs ...TargetSpec) *Target {
	t.Helper()
	return startForTest(t, "istgt", istgtOps{}, specs)
}

// NewTGT starts tgtd outside a test (TestMain, tools). dir must exist and stays the
// caller's. Methods of the returned Target panic on failure; the caller must Close it.
func NewTGT(dir string, specs ...TargetSpec) (*Target, error) {
	return startStandalone(dir, "tgt", tgtOps{}, specs)
}

// NewISTGT is NewTGT for istgt.
func NewISTGT(dir string, specs ...TargetSpec) (*Target, error) {
	return startStandalone(dir, "istgt", istgtOps{}, specs)
}

func startForTest(t testing.TB, kind string, ops daemonOps, specs []TargetSpec) *Target {
	t.Helper()
	RequireTools(t, ops.tools()...)
	tg, err := newTarget(t.TempDir(), kind, ops, specs)
	if err != nil {
		t.Fatalf("%s harness: %v", kind, err)
	}
	tg.fail = func(msg string) {
		t.Helper()
		t.Fatal(msg)
	}
	// Registered before the start so that a half-started daemon is cleaned up too; it runs
	// before t.TempDir's removal (cleanups run last-in first-out).
	t.Cleanup(func() {
		if err := tg.Close(); err != nil {
			t.Errorf("%s harness cleanup: %v", kind, err)
		}
	})
	if err := tg.startFresh(); err != nil {
		t.Fatalf("%s harness: %v", kind, err)
	}
	return tg
}

func startStandalone(dir, kind string, ops daemonOps, specs []TargetSpec) (*Target, error) {
	for _, tool := range ops.tools() {
		if _, err := findTool(tool); err != nil {
			return nil, fmt.Errorf("%s harness: %w", kind, missingToolError(tool))
		}
	}
	tg, err := newTarget(dir, kind, ops, specs)
	if err != nil {
		return nil, fmt.Errorf("%s harness: %w", kind, err)
	}
	tg.fail = func(msg string) { panic(msg) }
	if err := tg.startFresh(); err != nil {
		_ = tg.Close()
		return nil, fmt.Errorf("%s harness: %w", kind, err)
	}
	return tg, nil
}

func newTarget(dir, kind string, ops daemonOps, specs []TargetSpec) (*Target, error) {
	if err := validateCommon(specs); err != nil {
		return nil, err
	}
	if err := ops.validate(specs); err != nil {
		return nil, err
	}
	tg := &Target{
		Kind:    kind,
		Host:    "127.0.0.1",
		Dir:     dir,
		LogPath: filepath.Join(dir, kind+".log"),
		specs:   cloneSpecs(specs),
		backing: map[lunKey]string{},
		ops:     ops,
	}
	for _, s := range tg.specs {
		for _, l := range s.LUNs {
			path := filepath.Join(dir, fileSafe(s.Name)+"-lun"+strconv.Itoa(l.LUN)+".img")
			tg.backing[lunKey{s.Name, l.LUN}] = path
			if l.BSType == "null" {
				continue // tgt's null store never opens its path
			}
			if err := createBacking(path, l.Size, l.Fill); err != nil {
				return nil, err
			}
		}
	}
	return tg, nil
}

func validateCommon(specs []TargetSpec) error {
	if len(specs) == 0 {
		return errors.New("no targets given")
	}
	names := map[string]bool{}
	for _, s := range specs {
		if !strings.HasPrefix(s.Name, "iqn.") && !strings.HasPrefix(s.Name, "eui.") && !strings.HasPrefix(s.Name, "naa.") {
			return fmt.Errorf("target name %q: want a full iqn./eui./naa. name", s.Name)
		}
		if strings.ContainsAny(s.Name, " \t\n\"\\") {
			return fmt.Errorf("target name %q contains white space, quotes or backslashes", s.Name)
		}
		if names[s.Name] {
			return fmt.Errorf("target %s given twice", s.Name)
		}
		names[s.Name] = true
		if (s.CHAPUser == "") != (s.CHAPSecret == "") {
			return fmt.Errorf("target %s: CHAPUser and CHAPSecret go together", s.Name)
		}
		if (s.MutualUser == "") != (s.MutualSecret == "") {
			return fmt.Errorf("target %s: MutualUser and MutualSecret go together", s.Name)
		}
		if s.MutualUser != "" && s.CHAPUser == "" {
			return fmt.Errorf("target %s: mutual CHAP needs CHAPUser too", s.Name)
		}
		for _, v := range []string{s.CHAPUser, s.CHAPSecret, s.MutualUser, s.MutualSecret} {
			if strings.ContainsAny(v, " \t\n\"\\") {
				return fmt.Errorf("target %s: credentials with white space, quotes or backslashes are not supported", s.Name)
			}
		}
		if len(s.LUNs) == 0 {
			return fmt.Errorf("target %s has no LUNs", s.Name)
		}
		luns := map[int]bool{}
		for _, l := range s.LUNs {
			if luns[l.LUN] {
				return fmt.Errorf("target %s: LUN %d given twice", s.Name, l.LUN)
			}
			luns[l.LUN] = true
			if l.LUN < 0 || l.LUN > 255 {
				return fmt.Errorf("target %s: LUN %d out of range 0..255", s.Name, l.LUN)
			}
			bs := l.blockSize()
			switch bs {
			case 512, 1024, 2048, 4096:
			default:
				return fmt.Errorf("target %s LUN %d: block size %d not one of 512, 1024, 2048, 4096", s.Name, l.LUN, bs)
			}
			switch l.BSType {
			case "":
				if l.Size <= 0 || l.Size%int64(bs) != 0 {
					return fmt.Errorf("target %s LUN %d: size %d is not a positive multiple of the block size %d", s.Name, l.LUN, l.Size, bs)
				}
			case "null":
			default:
				return fmt.Errorf("target %s LUN %d: unknown BSType %q (want \"\" or \"null\")", s.Name, l.LUN, l.BSType)
			}
			switch l.Fill {
			case "", "zero", "random":
			default:
				return fmt.Errorf("target %s LUN %d: unknown Fill %q (want \"zero\" or \"random\")", s.Name, l.LUN, l.Fill)
			}
		}
	}
	return nil
}

func (l LUNSpec) blockSize() int {
	if l.BlockSize == 0 {
		return 512
	}
	return l.BlockSize
}

func cloneSpecs(specs []TargetSpec) []TargetSpec {
	out := make([]TargetSpec, len(specs))
	for i, s := range specs {
		s.LUNs = append([]LUNSpec(nil), s.LUNs...)
		keys := make(map[string]string, len(s.Keys))
		for k, v := range s.Keys {
			keys[k] = v
		}
		s.Keys = keys
		out[i] = s
	}
	return out
}

// fileSafe turns an IQN into a file name component.
func fileSafe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			return r
		}
		return '_'
	}, s)
}

// Specs returns a copy of the target specifications the daemon was started with.
func (tg *Target) Specs() []TargetSpec { return cloneSpecs(tg.specs) }

// BackingFile returns the path of the backing file of the given LUN. For a tgt "null" LUN the
// path does not exist.
func (tg *Target) BackingFile(iqn string, lun int) string {
	path, ok := tg.backing[lunKey{iqn, lun}]
	if !ok {
		tg.fail(fmt.Sprintf("%s harness: no LUN %d on target %s", tg.Kind, lun, iqn))
	}
	return path
}

// URL returns iscsi://127.0.0.1:PORT/IQN/LUN as libiscsi and qemu write it.
func (tg *Target) URL(iqn string, lun int) string {
	return "iscsi://" + tg.Portal + "/" + iqn + "/" + strconv.Itoa(lun)
}

// PortalURL returns iscsi://127.0.0.1:PORT (the discovery portal).
func (tg *Target) PortalURL() string { return "iscsi://" + tg.Portal }

// PID returns the process id of the running daemon, or 0 when it is not running.
func (tg *Target) PID() int {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	if tg.proc == nil {
		return 0
	}
	return tg.proc.pid()
}

// Running reports whether the daemon process is alive (possibly paused).
func (tg *Target) Running() bool {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return tg.proc != nil && !tg.proc.exited()
}

// Log returns the daemon's output so far (the tail, when it is long).
func (tg *Target) Log() string { return readTail(tg.LogPath, 16<<10) }

// Kill sends SIGKILL to the daemon (a target crash) and waits until it is gone.
// Backing files and configuration stay for Restart.
func (tg *Target) Kill() {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	if err := tg.killLocked(); err != nil {
		tg.fail(fmt.Sprintf("%s harness: kill: %v", tg.Kind, err))
	}
}

// Restart brings the daemon back on the same port with the same backing files and
// configuration. A running (or paused) daemon is killed first.
func (tg *Target) Restart() {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	if err := tg.killLocked(); err != nil {
		tg.fail(fmt.Sprintf("%s harness: restart: %v", tg.Kind, err))
		return
	}
	deadline := time.Now().Add(restartTimeout)
	for {
		d, err := tg.ops.launch(tg)
		if err == nil {
			tg.proc, tg.last = d, d
			return
		}
		// The port can be briefly unavailable after a crash; keep trying the same one.
		if !errors.Is(err, errPortBusy) || time.Now().After(deadline) {
			tg.fail(fmt.Sprintf("%s harness: restart on %s: %v", tg.Kind, tg.Portal, err))
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Stop stops the daemon gracefully (tgt: drop connections, delete targets, delete the
// system; istgt: SIGTERM), falling back to SIGKILL after a short timeout. Restart may
// start it again.
func (tg *Target) Stop() {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	if err := tg.stopLocked(); err != nil {
		tg.fail(fmt.Sprintf("%s harness: stop: %v", tg.Kind, err))
	}
}

// Pause freezes the daemon with SIGSTOP: connections stay open but nothing is answered.
func (tg *Target) Pause() { tg.signalRunning(syscall.SIGSTOP, true) }

// Resume lets a paused daemon continue (SIGCONT).
func (tg *Target) Resume() { tg.signalRunning(syscall.SIGCONT, false) }

func (tg *Target) signalRunning(sig syscall.Signal, paused bool) {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	if tg.proc == nil || tg.proc.exited() {
		tg.fail(fmt.Sprintf("%s harness: %v: daemon is not running", tg.Kind, sig))
		return
	}
	if err := tg.proc.signal(sig); err != nil {
		tg.fail(fmt.Sprintf("%s harness: %v: %v", tg.Kind, sig, err))
		return
	}
	tg.paused = paused
}

// Close stops the daemon (gracefully, then SIGKILL) and removes what it leaves outside Dir.
// It is what the test cleanup runs; NewTGT/NewISTGT callers call it themselves.
func (tg *Target) Close() error {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	err := tg.stopLocked()
	if tg.proc == nil && tg.Port != 0 {
		releasePort(tg.Port)
	}
	return err
}

// startFresh picks a free port and starts the daemon, retrying on a port collision.
func (tg *Target) startFresh() error {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	var err error
	for range startAttempts {
		var port int
		port, err = freePort()
		if err != nil {
			return err
		}
		tg.setPort(port)
		var d *daemon
		d, err = tg.ops.launch(tg)
		if err == nil {
			tg.proc, tg.last = d, d
			return nil
		}
		releasePort(port)
		if !errors.Is(err, errPortBusy) {
			return err
		}
	}
	return fmt.Errorf("no usable port after %d attempts: %w", startAttempts, err)
}

func (tg *Target) setPort(port int) {
	tg.Port = port
	tg.Portal = net.JoinHostPort(tg.Host, strconv.Itoa(port))
	if tg.Kind == "tgt" {
		tg.Control = tgtControlNumber(port)
	}
}

func (tg *Target) killLocked() error {
	d := tg.proc
	if d == nil {
		return nil
	}
	tg.proc = nil
	tg.paused = false
	err := d.kill()
	if d.exited() {
		tg.ops.cleanupFiles(tg)
	}
	return err
}

func (tg *Target) stopLocked() error {
	d := tg.proc
	if d == nil {
		return nil
	}
	if tg.paused {
		_ = d.signal(syscall.SIGCONT)
		tg.paused = false
	}
	var errs []error
	if !d.exited() {
		if err := tg.ops.shutdown(tg, d); err != nil {
			errs = append(errs, fmt.Errorf("graceful stop failed, killing: %w", err))
		}
	}
	if err := tg.killLocked(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// portsInUse holds the ports of this process's Targets, so that two Targets started at
// the same moment never get the same port from the kernel (and the same tgtd -C number).
var portsInUse = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// freePort asks the kernel for a free port on 127.0.0.1 and reserves it for this process.
// The port is free only until somebody else takes it, so the callers retry on a collision.
func freePort() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("pick a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if err := l.Close(); err != nil {
			return 0, fmt.Errorf("pick a free port: %w", err)
		}
		portsInUse.Lock()
		taken := portsInUse.m[port]
		portsInUse.m[port] = true
		portsInUse.Unlock()
		if !taken {
			return port, nil
		}
	}
	return 0, errors.New("pick a free port: the kernel keeps returning ports in use")
}

func releasePort(port int) {
	portsInUse.Lock()
	delete(portsInUse.m, port)
	portsInUse.Unlock()
}

// readTail returns up to max bytes from the end of the file at path.
func readTail(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	off := int64(0)
	if st.Size() > max {
		off = st.Size() - max
	}
	buf := make([]byte, st.Size()-off)
	n, _ := f.ReadAt(buf, off)
	prefix := ""
	if off > 0 {
		prefix = fmt.Sprintf("(last %d bytes)\n", n)
	}
	return prefix + string(buf[:n])
}

// withLog appends the daemon's log to an error.
func (tg *Target) withLog(err error) error {
	return fmt.Errorf("%w\n--- %s ---\n%s", err, tg.LogPath, tg.Log())
}
