package integration

// Tests of the target harness itself, checked from the outside with libiscsi's tools
// (iscsi-ls, iscsi-readcapacity16) and qemu's iscsi driver (qemu-io, qemu-img).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// harnessRun runs a tool with a timeout and returns its combined output.
func harnessRun(t testing.TB, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	path := Tool(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s: timed out after %v (%v)", name, timeout, err)
	}
	return string(out), err
}

// harnessMust is harnessRun that fails the test on an error.
func harnessMust(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := harnessRun(t, timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// harnessListing is what `iscsi-ls -s` prints: target name → LUN → device type.
type harnessListing map[string]map[int]string

func harnessParseLs(out string) harnessListing {
	l := harnessListing{}
	current := ""
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 1 && strings.HasPrefix(f[0], "Target:"):
			current = strings.TrimPrefix(f[0], "Target:")
			l[current] = map[int]string{}
		case len(f) >= 2 && strings.HasPrefix(f[0], "Lun:") && current != "":
			n, err := strconv.Atoi(strings.TrimPrefix(f[0], "Lun:"))
			if err == nil {
				l[current][n] = strings.TrimPrefix(f[1], "Type:")
			}
		}
	}
	return l
}

// harnessCapacity returns the exact size of a LUN in bytes (iscsi-readcapacity16 -s).
func harnessCapacity(t testing.TB, url string) (int64, error) {
	t.Helper()
	out, err := harnessRun(t, 20*time.Second, "iscsi-readcapacity16", "-s", "-i", LabInitiator, url)
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, strings.TrimSpace(out))
	}
	return strconv.ParseInt(strings.TrimSpace(out), 10, 64)
}

// harnessCHAPURL puts credentials (and mutual credentials as libiscsi's query keys) into a
// harness URL.
func harnessCHAPURL(url, user, secret, targetUser, targetSecret string) string {
	url = strings.Replace(url, "iscsi://", "iscsi://"+user+"%"+secret+"@", 1)
	if targetUser != "" {
		url += "?target_user=" + targetUser + "&target_password=" + targetSecret
	}
	return url
}

// harnessParallel runs the checks concurrently (istgt logins take a second each).
func harnessParallel(t *testing.T, checks map[string]func() error) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failures []string
	for name, check := range checks {
		wg.Go(func() {
			if err := check(); err != nil {
				mu.Lock()
				failures = append(failures, name+": "+err.Error())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
}

// harnessExpectSize checks a LUN's capacity.
func harnessExpectSize(t testing.TB, url string, want int64) func() error {
	return func() error {
		got, err := harnessCapacity(t, url)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("capacity %d, want %d", got, want)
		}
		return nil
	}
}

// harnessExpectLoginFailure checks that a login with these credentials is refused.
func harnessExpectLoginFailure(t testing.TB, url string) func() error {
	return func() error {
		out, err := harnessRun(t, 20*time.Second, "iscsi-readcapacity16", "-s", "-i", LabInitiator, url)
		if err == nil {
			return fmt.Errorf("login succeeded: %s", out)
		}
		if !strings.Contains(out, "Login Failed") && !strings.Contains(out, "Authentication fail") {
			return fmt.Errorf("want a login failure, got %v: %s", err, out)
		}
		return nil
	}
}

// harnessExpectWriteProtected checks that qemu refuses to open the LUN read-write (it
// reads the WP bit with MODE SENSE).
func harnessExpectWriteProtected(t testing.TB, url string) func() error {
	return func() error {
		out, err := harnessRun(t, 20*time.Second, "qemu-io", "-f", "raw", "-c", "write 0 512", url)
		if err == nil || !strings.Contains(out, "write protected") {
			return fmt.Errorf("write to read-only LUN: err %v, output %q", err, out)
		}
		return nil
	}
}

// harnessExpectSameData copies the LUN with qemu-img and compares it with the backing file
// (which also checks the LUN's size).
func harnessExpectSameData(t testing.TB, url, backing string) func() error {
	return func() error {
		out := filepath.Join(t.TempDir(), "copy.raw")
		if o, err := harnessRun(t, 60*time.Second, "qemu-img", "convert", "-f", "raw", "-O", "raw", url, out); err != nil {
			return fmt.Errorf("qemu-img convert: %v: %s", err, o)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			return err
		}
		want, err := os.ReadFile(backing)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("LUN data (%d bytes) differs from %s (%d bytes)", len(got), backing, len(want))
		}
		if bytes.Count(want[:4096], []byte{0}) > 100 {
			return fmt.Errorf("%s does not look random", backing)
		}
		return nil
	}
}

// harnessGone checks that the process is gone (not even a zombie: the harness reaps it).
func harnessGone(t testing.TB, pid int) {
	t.Helper()
	if pid <= 0 {
		t.Fatalf("bad pid %d", pid)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("pid %d still exists (kill 0: %v)", pid, err)
	}
}

func harnessNoSocket(t testing.TB, control int) {
	t.Helper()
	for _, p := range []string{fmt.Sprintf("/var/run/tgtd/socket.%d", control), fmt.Sprintf("/var/run/tgtd/socket.%d.lock", control)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (stat: %v)", p, err)
		}
	}
}

func TestHarnessTGTLab(t *testing.T) {
	RequireTools(t, "iscsi-ls", "iscsi-readcapacity16", "qemu-io", "qemu-img")
	specs := LabTGTSpecs()
	tg := StartTGT(t, specs...)
	if tg.Kind != "tgt" || tg.Host != "127.0.0.1" || tg.Portal != fmt.Sprintf("127.0.0.1:%d", tg.Port) {
		t.Fatalf("target %+v", tg)
	}
	if tg.Control < 1 || tg.Control > 32767 {
		t.Fatalf("control number %d out of range", tg.Control)
	}
	if _, err := os.Stat(fmt.Sprintf("/var/run/tgtd/socket.%d", tg.Control)); err != nil {
		t.Fatalf("management socket: %v", err)
	}

	// One set of credentials logs in everywhere (see LabTGTSpecs).
	portal := harnessCHAPURL(tg.PortalURL(), LabCHAPUser, LabCHAPSecret, "", "")
	ls := harnessParseLs(harnessMust(t, 30*time.Second, "iscsi-ls", "-s", "-i", LabInitiator, portal))
	if len(ls) != len(specs) {
		t.Errorf("iscsi-ls lists %d targets, want %d: %v", len(ls), len(specs), ls)
	}
	for _, s := range specs {
		luns, ok := ls[s.Name]
		if !ok {
			t.Errorf("target %s not listed", s.Name)
			continue
		}
		if luns[0] != "STORAGE_ARRAY_CONTROLLER" {
			t.Errorf("%s LUN 0 is %q, want the controller", s.Name, luns[0])
		}
		if len(luns) != len(s.LUNs)+1 {
			t.Errorf("%s has LUNs %v, want 0 and %d data LUNs", s.Name, luns, len(s.LUNs))
		}
		for _, l := range s.LUNs {
			if luns[l.LUN] != "DIRECT_ACCESS" {
				t.Errorf("%s LUN %d is %q, want DIRECT_ACCESS", s.Name, l.LUN, luns[l.LUN])
			}
		}
	}

	checks := map[string]func() error{}
	for _, s := range specs {
		for _, l := range s.LUNs {
			want := l.Size
			if l.BSType == "null" {
				want = 1 << 40
			}
			url := tg.URL(s.Name, l.LUN)
			if s.CHAPUser != "" {
				url = harnessCHAPURL(url, s.CHAPUser, s.CHAPSecret, s.MutualUser, s.MutualSecret)
			}
			checks[fmt.Sprintf("size %s/%d", s.Name, l.LUN)] = harnessExpectSize(t, url, want)
		}
	}
	checks["chap without credentials"] = harnessExpectLoginFailure(t, tg.URL(LabCHAP, 1))
	checks["chap wrong secret"] = harnessExpectLoginFailure(t, harnessCHAPURL(tg.URL(LabCHAP, 1), LabCHAPUser, "wrong-secret-000", "", ""))
	checks["mutual wrong target secret"] = harnessExpectLoginFailure(t,
		harnessCHAPURL(tg.URL(LabMutual, 1), LabCHAPUser, LabCHAPSecret, LabMutualUser, "wrong-secret-000"))
	checks["ro"] = harnessExpectWriteProtected(t, tg.URL(LabRO, 1))
	checks["plain data"] = harnessExpectSameData(t, tg.URL(LabPlain, 1), tg.BackingFile(LabPlain, 1))
	checks["thin"] = func() error {
		for lun, want := range map[int]string{1: "LBPME:0", 2: "LBPME:1"} {
			out, err := harnessRun(t, 20*time.Second, "iscsi-readcapacity16", "-i", LabInitiator, tg.URL(LabPlain, lun))
			if err != nil || !strings.Contains(out, want) {
				return fmt.Errorf("plain LUN %d: want %s: %v %s", lun, want, err, out)
			}
		}
		return nil
	}
	checks["digest keys"] = func() error {
		out, err := tg.TGTAdm("--lld", "iscsi", "--op", "show", "--mode", "target", "--tid", strconv.Itoa(tg.TID(LabDigest)))
		if err != nil || !strings.Contains(out, "HeaderDigest=CRC32C") || !strings.Contains(out, "DataDigest=CRC32C") {
			return fmt.Errorf("digest target parameters: %v\n%s", err, out)
		}
		return nil
	}
	harnessParallel(t, checks)

	if _, err := os.Stat(tg.BackingFile(LabNull, 1)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("null LUN backing file exists: %v", err)
	}
}

func TestHarnessTGTKillRestartPause(t *testing.T) {
	RequireTools(t, "iscsi-ls", "qemu-io")
	const iqn = "iqn.2026-11.test:bounce"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 4 << 20, BlockSize: 4096}}})
	url := tg.URL(iqn, 1)
	harnessMust(t, 20*time.Second, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 8192 4096", url)

	port, control, pid := tg.Port, tg.Control, tg.PID()
	tg.Kill()
	harnessGone(t, pid)
	harnessNoSocket(t, control)
	if tg.Running() || tg.PID() != 0 {
		t.Fatal("Running after Kill")
	}
	if out, err := harnessRun(t, 10*time.Second, "iscsi-ls", "-i", LabInitiator, tg.PortalURL()); err == nil {
		t.Fatalf("iscsi-ls works on a killed target: %s", out)
	}

	tg.Restart()
	if tg.Port != port || tg.Control != control {
		t.Fatalf("restart moved the target from port %d (-C %d) to %d (-C %d)", port, control, tg.Port, tg.Control)
	}
	if tg.PID() == pid || !tg.Running() {
		t.Fatalf("no new daemon after Restart (pid %d, was %d)", tg.PID(), pid)
	}
	ls := harnessParseLs(harnessMust(t, 20*time.Second, "iscsi-ls", "-s", "-i", LabInitiator, tg.PortalURL()))
	if ls[iqn][1] != "DIRECT_ACCESS" {
		t.Fatalf("after restart: %v", ls)
	}
	// The data written before the crash is still there, and the block size was reconfigured.
	harnessMust(t, 20*time.Second, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0x5a 8192 4096", url)
	if c, err := harnessCapacity(t, url); err != nil || c != 4<<20 {
		t.Fatalf("capacity after restart %d, %v", c, err)
	}

	// A paused daemon accepts TCP connections (the kernel does) but answers nothing.
	tg.Pause()
	if out, err := harnessRun(t, 1500*time.Millisecond, "iscsi-ls", "-i", LabInitiator, tg.PortalURL()); err == nil {
		t.Fatalf("iscsi-ls answered by a paused target: %s", out)
	}
	tg.Resume()
	harnessMust(t, 20*time.Second, "iscsi-ls", "-i", LabInitiator, tg.PortalURL())

	// Restart of a paused daemon works too (it is killed first).
	tg.Pause()
	tg.Restart()
	harnessMust(t, 20*time.Second, "iscsi-ls", "-i", LabInitiator, tg.PortalURL())
}

func TestHarnessTGTStopWithSession(t *testing.T) {
	RequireTools(t, "iscsi-perf")
	const iqn = "iqn.2026-11.test:stop"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 8 << 20}},
		Keys: map[string]string{"nop_interval": "1", "nop_count": "3"}})

	// A session that reconnects at once when dropped: Stop must still get rid of the target.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	perf := exec.CommandContext(ctx, Tool(t, "iscsi-perf"), "-i", LabInitiator, "-m", "4", "-b", "8", tg.URL(iqn, 1))
	perf.WaitDelay = time.Second
	var perfOut bytes.Buffer
	perf.Stdout, perf.Stderr = &perfOut, &perfOut
	if err := perf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = perf.Wait()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := tg.TGTAdm("--lld", "iscsi", "--op", "show", "--mode", "conn", "--tid", "1")
		if err == nil && len(parseTGTConns(out)) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("iscsi-perf never logged in: %v %s\n%s", err, out, perfOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	pid, control := tg.PID(), tg.Control
	start := time.Now()
	tg.Stop()
	took := time.Since(start)
	harnessGone(t, pid)
	harnessNoSocket(t, control)
	if tg.last.err != nil {
		t.Errorf("tgtd did not exit by itself (graceful stop failed): %v after %v\n%s", tg.last.err, took, tg.Log())
	}
	if took > stopTimeout {
		t.Errorf("Stop took %v", took)
	}
	tg.Stop() // stopping twice is fine
}

func TestHarnessTGTParallelStarts(t *testing.T) {
	RequireTools(t, "iscsi-ls")
	var mu sync.Mutex
	ports := map[int]string{}
	for i := range 4 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			iqn := fmt.Sprintf("iqn.2026-11.test:parallel%d", i)
			tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 1 << 20}}})
			mu.Lock()
			if other, dup := ports[tg.Port]; dup {
				t.Errorf("port %d given to %s and %s", tg.Port, other, iqn)
			}
			ports[tg.Port] = iqn
			mu.Unlock()
			ls := harnessParseLs(harnessMust(t, 20*time.Second, "iscsi-ls", "-s", "-i", LabInitiator, tg.PortalURL()))
			if len(ls) != 1 || ls[iqn][1] != "DIRECT_ACCESS" {
				t.Errorf("%s lists %v", tg.Portal, ls)
			}
		})
	}
}

func TestHarnessTGTStandalone(t *testing.T) {
	RequireTools(t, tgtTools...)
	dir := t.TempDir()
	tg, err := NewTGT(dir, TargetSpec{Name: "iqn.2026-11.test:standalone", LUNs: []LUNSpec{{LUN: 1, Size: 1 << 20, Fill: "random"}}})
	if err != nil {
		t.Fatal(err)
	}
	pid, control := tg.PID(), tg.Control
	if !strings.HasPrefix(tg.BackingFile("iqn.2026-11.test:standalone", 1), dir) {
		t.Errorf("backing file %s outside %s", tg.BackingFile("iqn.2026-11.test:standalone", 1), dir)
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	harnessGone(t, pid)
	harnessNoSocket(t, control)

	if _, err := NewTGT(dir, TargetSpec{Name: "iqn.2026-11.test:bad", LUNs: []LUNSpec{{LUN: 0, Size: 1 << 20}}}); err == nil ||
		!strings.Contains(err.Error(), "controller") {
		t.Errorf("LUN 0 on tgt: got %v, want an error about the controller", err)
	}
}

// harnessDiscover lists the targets of an istgt portal. istgt advances ExpCmdSN for the
// immediate SendTargets, after which iscsi-ls's discovery logout hangs: read its
// line-buffered output until every wanted target is listed, then stop it.
func harnessDiscover(t testing.TB, portalURL string, want []string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, Tool(t, "stdbuf"), "-oL", Tool(t, "iscsi-ls"), "-i", LabInitiator, portalURL)
	cmd.WaitDelay = time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cancel()
		_ = cmd.Wait()
	}()
	missing := map[string]bool{}
	for _, w := range want {
		missing[w] = true
	}
	var seen []string
	sc := bufio.NewScanner(stdout)
	for len(missing) > 0 && sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 && strings.HasPrefix(f[0], "Target:") {
			name := strings.TrimPrefix(f[0], "Target:")
			seen = append(seen, name)
			delete(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("discovery listed %v, missing %v", seen, missing)
	}
	if len(seen) != len(want) {
		return fmt.Errorf("discovery listed %v, want %v", seen, want)
	}
	return nil
}

func TestHarnessISTGTLab(t *testing.T) {
	RequireTools(t, "iscsi-ls", "iscsi-readcapacity16", "qemu-io", "qemu-img", "stdbuf")
	specs := LabISTGTSpecs()
	tg := StartISTGT(t, specs...)
	if tg.Kind != "istgt" || tg.Portal != fmt.Sprintf("127.0.0.1:%d", tg.Port) {
		t.Fatalf("target %+v", tg)
	}
	var names []string
	for _, s := range specs {
		names = append(names, s.Name)
	}

	checks := map[string]func() error{
		"discovery": func() error { return harnessDiscover(t, tg.PortalURL(), names) },
		"discovery with CHAP": func() error {
			return harnessDiscover(t, harnessCHAPURL(tg.PortalURL(), LabCHAPUser, LabCHAPSecret, "", ""), names)
		},
	}
	// istgt handles one login at a time, a second each: keep their number down.
	for _, s := range specs {
		for _, l := range s.LUNs {
			if s.Name == LabPlain && l.LUN == 0 {
				continue // "plain data" below compares the whole LUN
			}
			url := tg.URL(s.Name, l.LUN)
			if s.CHAPUser != "" {
				url = harnessCHAPURL(url, s.CHAPUser, s.CHAPSecret, s.MutualUser, s.MutualSecret)
			}
			checks[fmt.Sprintf("size %s/%d", s.Name, l.LUN)] = harnessExpectSize(t, url, l.Size)
		}
	}
	checks["chap without credentials"] = harnessExpectLoginFailure(t, tg.URL(LabCHAP, 0))
	// istgt's "CHAP Mutual" refuses a one-way login.
	checks["mutual one-way"] = harnessExpectLoginFailure(t, harnessCHAPURL(tg.URL(LabMutual, 0), LabCHAPUser, LabCHAPSecret, "", ""))
	checks["ro"] = harnessExpectWriteProtected(t, tg.URL(LabRO, 0))
	checks["plain data"] = harnessExpectSameData(t, tg.URL(LabPlain, 0), tg.BackingFile(LabPlain, 0))
	harnessParallel(t, checks)
}

func TestHarnessISTGTKillRestartStop(t *testing.T) {
	RequireTools(t, "iscsi-readcapacity16")
	const iqn = "iqn.2026-11.test:bounce"
	tg := StartISTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 0, Size: 2 << 20, BlockSize: 4096}}})
	url := tg.URL(iqn, 0)
	port, pid := tg.Port, tg.PID()
	tg.Kill()
	harnessGone(t, pid)
	if _, err := harnessCapacity(t, url); err == nil {
		t.Fatal("login to a killed istgt worked")
	}
	tg.Restart()
	if tg.Port != port || tg.PID() == pid {
		t.Fatalf("restart: port %d → %d, pid %d → %d", port, tg.Port, pid, tg.PID())
	}
	if c, err := harnessCapacity(t, url); err != nil || c != 2<<20 {
		t.Fatalf("capacity after restart %d, %v", c, err)
	}
	pid = tg.PID()
	tg.Stop()
	harnessGone(t, pid)
	if tg.last.err != nil {
		t.Errorf("istgt did not exit on SIGTERM: %v\n%s", tg.last.err, tg.Log())
	}
	if _, err := os.Stat(filepath.Join(tg.Dir, "istgt.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file left behind: %v", err)
	}
}

func TestHarnessBackingFiles(t *testing.T) {
	dir := t.TempDir()
	zero, rnd1, rnd2 := filepath.Join(dir, "z"), filepath.Join(dir, "r1"), filepath.Join(dir, "r2")
	const size = 9<<20 + 512 // not a multiple of the fill chunk
	for path, fill := range map[string]string{zero: "zero", rnd1: "random", rnd2: "random"} {
		if err := createBacking(path, size, fill); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil || st.Size() != size {
			t.Fatalf("%s: %v size %d, want %d", path, err, st.Size(), size)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(zero, &st); err != nil || st.Blocks != 0 {
		t.Errorf("zero file not sparse: %d blocks, %v", st.Blocks, err)
	}
	a, _ := os.ReadFile(rnd1)
	b, _ := os.ReadFile(rnd2)
	if bytes.Equal(a, b) {
		t.Error("two random fills are equal")
	}
	for _, data := range [][]byte{a, b} {
		// Every 4 KiB block, the last partial one included, must have been written.
		for off := 0; off < len(data); off += 4096 {
			block := data[off:min(off+4096, len(data))]
			if bytes.Count(block, []byte{0}) > len(block)/64 {
				t.Fatalf("random file has a zero block at %d", off)
			}
		}
	}
}

func TestHarnessSpecValidation(t *testing.T) {
	lun := []LUNSpec{{LUN: 1, Size: 1 << 20}}
	for name, c := range map[string]struct {
		ops   daemonOps
		specs []TargetSpec
		want  string
	}{
		"no targets":       {tgtOps{}, nil, "no targets"},
		"short name":       {tgtOps{}, []TargetSpec{{Name: "plain", LUNs: lun}}, "full iqn"},
		"twice":            {tgtOps{}, []TargetSpec{{Name: "iqn.a:x", LUNs: lun}, {Name: "iqn.a:x", LUNs: lun}}, "twice"},
		"secret only":      {tgtOps{}, []TargetSpec{{Name: "iqn.a:x", LUNs: lun, CHAPSecret: "s"}}, "go together"},
		"mutual only":      {tgtOps{}, []TargetSpec{{Name: "iqn.a:x", LUNs: lun, MutualUser: "u", MutualSecret: "s"}}, "needs CHAPUser"},
		"size":             {tgtOps{}, []TargetSpec{{Name: "iqn.a:x", LUNs: []LUNSpec{{LUN: 1, Size: 1000}}}}, "multiple"},
		"block size":       {tgtOps{}, []TargetSpec{{Name: "iqn.a:x", LUNs: []LUNSpec{{LUN: 1, Size: 1 << 20, BlockSize: 777}}}}, "block size"},
		"fill":             {tgtOps{}, []TargetSpec{{Name: "iqn.a:x", LUNs: []LUNSpec{{LUN: 1, Size: 1 << 20, Fill: "ones"}}}}, "Fill"},
		"tgt LUN 0":        {tgtOps{}, []TargetSpec{{Name: "iqn.a:x", LUNs: []LUNSpec{{LUN: 0, Size: 1 << 20}}}}, "controller"},
		"tgt account":      {tgtOps{}, []TargetSpec{{Name: "iqn.a:x", LUNs: lun, CHAPUser: "u", CHAPSecret: "a"}, {Name: "iqn.a:y", LUNs: lun, CHAPUser: "u", CHAPSecret: "b"}}, "global"},
		"istgt null":       {istgtOps{}, []TargetSpec{{Name: "iqn.a:x", LUNs: []LUNSpec{{LUN: 0, BSType: "null"}}}}, "tgt only"},
		"istgt thin":       {istgtOps{}, []TargetSpec{{Name: "iqn.a:x", LUNs: []LUNSpec{{LUN: 0, Size: 1 << 20, Thin: true}}}}, "tgt only"},
		"istgt block size": {istgtOps{}, []TargetSpec{{Name: "iqn.a:x", LUNs: []LUNSpec{{LUN: 0, Size: 1 << 20}, {LUN: 1, Size: 1 << 20, BlockSize: 4096}}}}, "one block size"},
		"istgt key":        {istgtOps{}, []TargetSpec{{Name: "iqn.a:x", LUNs: lun, Keys: map[string]string{"nop_interval": "1"}}}, "no istgt equivalent"},
		"istgt global":     {istgtOps{}, []TargetSpec{{Name: "iqn.a:x", LUNs: lun, Keys: map[string]string{"NopInInterval": "1"}}, {Name: "iqn.a:y", LUNs: lun, Keys: map[string]string{"NopInInterval": "2"}}}, "global"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := newTarget(t.TempDir(), "test", c.ops, c.specs)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestHarnessISTGTConfig(t *testing.T) {
	tg := &Target{Kind: "istgt", Host: "127.0.0.1", Dir: "/d", specs: []TargetSpec{
		{Name: "iqn.a:plain", LUNs: []LUNSpec{{LUN: 0, Size: 512}}, Keys: map[string]string{
			"HeaderDigest": "CRC32C", "NopInInterval": "2", "FirstBurstLength": "8192"}},
		{Name: "iqn.a:mutual", LUNs: []LUNSpec{{LUN: 0, Size: 4096, BlockSize: 4096, ReadOnly: true}},
			CHAPUser: "u", CHAPSecret: "s", MutualUser: "mu", MutualSecret: "ms"},
	}, backing: map[lunKey]string{{"iqn.a:plain", 0}: "/d/p.img", {"iqn.a:mutual", 0}: "/d/m.img"}}
	tg.setPort(3333)
	conf, auth := istgtOps{}.configs(tg)
	for _, want := range []string{
		"[UnitControl]", "Portal DA1 127.0.0.1:3333", "InitiatorName \"ALL\"", "NopInInterval 2\n",
		"DiscoveryAuthGroup AuthGroup9999",
		"[LogicalUnit1]\n  TargetName iqn.a:plain\n", "AuthMethod None", "UseDigest Header\n",
		"FirstBurstLength 8192\n", "LUN0 Storage \"/d/p.img\" Auto",
		"[LogicalUnit2]\n  TargetName iqn.a:mutual\n", "AuthMethod CHAP Mutual\n  AuthGroup AuthGroup2",
		"ReadOnly Yes", "BlockLength 4096",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("istgt.conf lacks %q:\n%s", want, conf)
		}
	}
	for _, want := range []string{"[AuthGroup2]\n  Auth \"u\" \"s\" \"mu\" \"ms\"", "[AuthGroup9999]"} {
		if !strings.Contains(auth, want) {
			t.Errorf("auth.conf lacks %q:\n%s", want, auth)
		}
	}
}

func TestHarnessParseTGTConns(t *testing.T) {
	out := "Session: 8\n    Connection: 0\n        Initiator: iqn.x\n        IP Address: 127.0.0.1\nSession: 9\n    Connection: 1\n"
	got := parseTGTConns(out)
	if len(got) != 2 || got[0] != [2]string{"8", "0"} || got[1] != [2]string{"9", "1"} {
		t.Fatalf("got %v", got)
	}
	if parseTGTConns("") != nil {
		t.Fatal("connections in empty output")
	}
}

// harnessRecorder records Fatal and Skip instead of ending the test.
type harnessRecorder struct {
	*testing.T
	fatal, skip string
}

func (r *harnessRecorder) Fatal(args ...any) { r.fatal = fmt.Sprint(args...) }
func (r *harnessRecorder) Skip(args ...any)  { r.skip = fmt.Sprint(args...) }

func TestHarnessRequireToolsCIRule(t *testing.T) {
	t.Setenv("CI", "true")
	r := &harnessRecorder{T: t}
	RequireTools(r, "no-such-tool-iscsifs", "tgtd")
	if !strings.Contains(r.fatal, "no-such-tool-iscsifs not found") || r.skip != "" {
		t.Errorf("CI=true: fatal %q, skip %q", r.fatal, r.skip)
	}
	t.Setenv("CI", "")
	r = &harnessRecorder{T: t}
	RequireTools(r, "no-such-tool-iscsifs", "tgtd")
	if !strings.Contains(r.skip, "no-such-tool-iscsifs not found") || r.fatal != "" {
		t.Errorf("CI unset: fatal %q, skip %q", r.fatal, r.skip)
	}
	r = &harnessRecorder{T: t}
	RequireTools(r, "tgtd", "istgt")
	if r.skip != "" || r.fatal != "" {
		t.Errorf("installed tools: fatal %q, skip %q", r.fatal, r.skip)
	}
}

func TestHarnessRequireTools(t *testing.T) {
	if err := missingToolError("tgtd"); !strings.Contains(err.Error(), "apt-get install tgt") {
		t.Errorf("tgtd: %v", err)
	}
	if err := missingToolError("qemu-img"); !strings.Contains(err.Error(), "apt-get install qemu-utils") {
		t.Errorf("qemu-img: %v", err)
	}
	if _, err := findTool("no-such-tool-iscsifs"); err == nil {
		t.Error("found a tool that does not exist")
	}
}
