package integration

// Tests of service mode: mount -d, iscsifs umount, systemd readiness and
// `iscsifs status` without a mount point (tgtd, real FUSE).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// daemonsOf returns the pids of iscsifs processes whose command line names
// dir (the mount point is unique to a test).
func daemonsOf(dir string) []int {
	var pids []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmdline, []byte(dir)) || !bytes.Contains(cmdline, []byte("mount")) {
			continue
		}
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(stat), ") Z") {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// newMountDir makes an empty mount point and, at the end of the test, kills
// any daemon still serving it and unmounts it lazily.
func newMountDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, pid := range daemonsOf(dir) {
			t.Errorf("iscsifs daemon %d still serving %s at the end; killing it", pid, dir)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if mounted, _ := mntIsMounted(dir); mounted {
			_ = exec.Command("fusermount3", "-u", "-z", dir).Run()
		}
	})
	return dir
}

// mountDaemon runs `iscsifs mount -d` and returns its result.
func mountDaemon(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	return runCLI(t, env, append([]string{"mount", "-d", "--log-level", "debug"}, args...)...)
}

func TestDaemon(t *testing.T) {
	RequireFUSE(t)
	const iqn, chapIQN = "iqn.2026-12.lab:daemon", "iqn.2026-12.lab:daemon-chap"
	tg := StartTGT(t,
		TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 32 << 20, Fill: "random"}}},
		TargetSpec{Name: chapIQN, LUNs: []LUNSpec{{LUN: 1, Size: 8 << 20}}, CHAPUser: "daemon-user", CHAPSecret: "daemon-secret-123"},
	)
	url := "iscsi://" + tg.Portal + "/" + iqn

	t.Run("ready-when-it-returns", func(t *testing.T) {
		dir := newMountDir(t)
		logFile := filepath.Join(t.TempDir(), "iscsifs.log")
		res := mountDaemon(t, nil, "--log-file", logFile, url, dir)
		if res.code != 0 {
			t.Fatalf("mount -d: exit %d: %s", res.code, res.stderr)
		}
		// No sleep: the file must be there and readable now.
		if got, want := mntFileSHA256(t, filepath.Join(dir, "lun1")), mntFileSHA256(t, tg.BackingFile(iqn, 1)); got != want {
			t.Errorf("lun1 right after mount -d: sha256 %s, backing file %s", got, want)
		}
		var st statusJSON
		readStatus(t, dir, &st)
		pids := daemonsOf(dir)
		if st.PID == 0 || len(pids) != 1 || pids[0] != st.PID {
			t.Fatalf("status.json pid %d, processes serving %s: %v", st.PID, dir, pids)
		}
		if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", st.PID)); cwd != "/" {
			t.Errorf("daemon cwd %q, want /", cwd)
		}
		if sid, _ := sessionID(st.PID); sid != st.PID {
			t.Errorf("daemon session %d, want its own (%d)", sid, st.PID)
		}
		if b, _ := os.ReadFile(logFile); !bytes.Contains(b, []byte(`"serving"`)) {
			t.Errorf("--log-file has no serving line:\n%s", b)
		}
		// Write, then umount at once: the data must be on the target.
		data := mntRandomBytes(1<<20 + 333)
		f, err := os.OpenFile(filepath.Join(dir, "lun1"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(data, 4096); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if res := runCLI(t, nil, "umount", dir); res.code != 0 {
			t.Fatalf("iscsifs umount: exit %d: %s", res.code, res.stderr)
		}
		if processExists(st.PID) {
			t.Errorf("daemon %d still running after iscsifs umount returned", st.PID)
		}
		if mounted, _ := mntIsMounted(dir); mounted {
			t.Errorf("%s still mounted after iscsifs umount", dir)
		}
		back := make([]byte, len(data))
		bf, err := os.Open(tg.BackingFile(iqn, 1))
		if err != nil {
			t.Fatal(err)
		}
		defer bf.Close()
		if _, err := bf.ReadAt(back, 4096); err != nil || !bytes.Equal(back, data) {
			t.Errorf("the data written before iscsifs umount is not in the backing file (%v)", err)
		}
	})

	t.Run("failures", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closedPort := ln.Addr().String()
		ln.Close()
		for _, tc := range []struct {
			name string
			env  []string
			args func(dir string) []string
			want string
		}{
			{"wrong secret", []string{"ISCSIFS_CHAP_SECRET=wrong-secret-456"}, func(dir string) []string {
				return []string{"--chap-user", "daemon-user", "iscsi://" + tg.Portal + "/" + chapIQN, dir}
			}, "authentication"},
			{"closed port", nil, func(dir string) []string {
				return []string{"--timeout", "5s", "iscsi://" + closedPort + "/" + iqn, dir}
			}, "connection refused"},
			{"missing mountpoint", nil, func(dir string) []string { return []string{url, dir + "/nope"} }, "does not exist"},
			{"bad flag value", nil, func(dir string) []string { return []string{"--cache-size", "lots", url, dir} }, "--cache-size"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				dir := newMountDir(t)
				start := time.Now()
				res := mountDaemon(t, tc.env, append([]string{"--log-file", filepath.Join(t.TempDir(), "log")}, tc.args(dir)...)...)
				msg := strings.TrimSpace(res.stderr)
				if res.code == 0 || strings.Contains(msg, "\n") || !strings.Contains(msg, tc.want) {
					t.Errorf("exit %d after %v, stderr %q; want one line with %q and a non-zero exit", res.code, time.Since(start), msg, tc.want)
				}
				if strings.Contains(msg, "wrong-secret-456") {
					t.Errorf("the secret is in the error: %q", msg)
				}
				if pids := daemonsOf(dir); len(pids) > 0 {
					t.Errorf("processes left serving %s: %v", dir, pids)
				}
				if mounted, _ := mntIsMounted(dir); mounted {
					t.Errorf("%s is mounted after a failed mount -d", dir)
				}
			})
		}
	})

	t.Run("systemd-notify-and-status", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "notify")
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		dirA, dirB := newMountDir(t), newMountDir(t)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		fg := exec.CommandContext(ctx, iscsifsBinary(t), "mount", url, dirA)
		fg.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
		var fgOut bytes.Buffer
		fg.Stdout, fg.Stderr = &fgOut, &fgOut
		if err := fg.Start(); err != nil {
			t.Fatal(err)
		}
		fgDone := make(chan error, 1)
		go func() { fgDone <- fg.Wait() }()
		recv := func(want string) {
			t.Helper()
			buf := make([]byte, 4096)
			_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
			n, err := conn.Read(buf)
			if err != nil || !strings.Contains(string(buf[:n]), want) {
				t.Fatalf("notify socket: %q %v, want %s\n%s", buf[:n], err, want, fgOut.String())
			}
		}
		recv("READY=1")
		if _, err := os.Stat(filepath.Join(dirA, "lun1")); err != nil {
			t.Errorf("READY=1 came before lun1 existed: %v", err)
		}
		if res := mountDaemon(t, nil, "--log-file", filepath.Join(t.TempDir(), "log"), url, dirB); res.code != 0 {
			t.Fatalf("second mount -d: %s", res.stderr)
		}
		res := runCLI(t, nil, "status", "--json")
		var list []struct {
			Mountpoint string `json:"mountpoint"`
			URL        string `json:"url"`
			PID        int    `json:"pid"`
			State      string `json:"state"`
		}
		if err := json.Unmarshal([]byte(res.stdout), &list); err != nil {
			t.Fatalf("status --json: %v\n%s", err, res.stdout)
		}
		found := map[string]bool{}
		for _, m := range list {
			if (m.Mountpoint == dirA || m.Mountpoint == dirB) && m.URL == url && m.PID > 0 && m.State == "serving" {
				found[m.Mountpoint] = true
			}
		}
		if !found[dirA] || !found[dirB] {
			t.Errorf("status --json lists %+v; want both %s and %s serving %s", list, dirA, dirB, url)
		}
		if plain := runCLI(t, nil, "status"); !strings.Contains(plain.stdout, dirA) || !strings.Contains(plain.stdout, dirB) {
			t.Errorf("status lists:\n%s", plain.stdout)
		}
		for _, dir := range []string{dirA, dirB} {
			if res := runCLI(t, nil, "umount", dir); res.code != 0 {
				t.Errorf("iscsifs umount %s: %s", dir, res.stderr)
			}
		}
		recv("STOPPING=1")
		select {
		case err := <-fgDone:
			if err != nil {
				t.Errorf("foreground mount: %v\n%s", err, fgOut.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("foreground mount still running after iscsifs umount")
		}
	})

	t.Run("umount-busy", func(t *testing.T) {
		dir := newMountDir(t)
		if res := mountDaemon(t, nil, "--log-file", filepath.Join(t.TempDir(), "log"), url, dir); res.code != 0 {
			t.Fatalf("mount -d: %s", res.stderr)
		}
		f, err := os.Open(filepath.Join(dir, "lun1"))
		if err != nil {
			t.Fatal(err)
		}
		res := runCLI(t, nil, "umount", dir)
		msg := strings.TrimSpace(res.stderr)
		if res.code == 0 || !strings.Contains(msg, "busy") || !strings.Contains(msg, fmt.Sprintf("pid %d", os.Getpid())) {
			t.Errorf("umount while this test holds lun1 open: exit %d, %q; want busy naming pid %d", res.code, msg, os.Getpid())
		}
		var st statusJSON
		readStatus(t, dir, &st)
		// --lazy detaches at once; the daemon serves the open file until
		// it is closed, then exits.
		if res := runCLI(t, nil, "umount", "--lazy", dir); res.code != 0 {
			t.Fatalf("umount --lazy while busy: %s", res.stderr)
		}
		if mounted, _ := mntIsMounted(dir); mounted {
			t.Errorf("%s still mounted after umount --lazy", dir)
		}
		buf := make([]byte, 4096)
		if _, err := f.ReadAt(buf, 0); err != nil {
			t.Errorf("reading the file held open across umount --lazy: %v", err)
		}
		if !processExists(st.PID) {
			t.Errorf("the daemon exited while a file was still open")
		}
		f.Close()
		deadline := time.Now().Add(30 * time.Second)
		for processExists(st.PID) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if processExists(st.PID) {
			t.Errorf("daemon %d still running 30 s after the last file was closed", st.PID)
		}
	})

	t.Run("sync-only-after-writes", func(t *testing.T) {
		// A file system on the disk flushes at every journal commit, often
		// with nothing written since the last one: those flushes send no
		// SYNCHRONIZE CACHE (tgtd reports its write cache on).
		dir := newMountDir(t)
		if res := mountDaemon(t, nil, "--log-file", filepath.Join(t.TempDir(), "log"), url, dir); res.code != 0 {
			t.Fatalf("mount -d: %s", res.stderr)
		}
		var st statusJSON
		commands := func() uint64 {
			readStatus(t, dir, &st)
			return st.Targets[0].Session.Commands
		}
		f, err := os.OpenFile(filepath.Join(dir, "lun1"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(make([]byte, 4096), 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		before := commands()
		fua, syncs := st.Targets[0].Session.FUAWrites, st.Targets[0].Session.SyncsSent
		for range 5 {
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
		}
		if after := commands(); after != before {
			t.Errorf("5 fsyncs with nothing written sent %d SCSI commands, want 0", after-before)
		}
		if _, err := f.WriteAt(make([]byte, 4096), 8192); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		// tgt reports DPOFUA: one WRITE with FUA makes the fsync, with no
		// SYNCHRONIZE CACHE after it.
		after := commands()
		ss := st.Targets[0].Session
		if after-before != 1 || ss.FUAWrites != fua+1 || ss.SyncsSent != syncs {
			t.Errorf("a write and an fsync sent %d SCSI commands, %d WRITEs with FUA and %d SYNCHRONIZE CACHE; want one WRITE with FUA", after-before, ss.FUAWrites-fua, ss.SyncsSent-syncs)
		}
		f.Close()
		if res := runCLI(t, nil, "umount", dir); res.code != 0 {
			t.Errorf("umount: %s", res.stderr)
		}
	})
}

func readStatus(t testing.TB, dir string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, ".iscsifs", "status.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func processExists(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(b), ") Z")
}

// sessionID reads field 6 of /proc/PID/stat.
func sessionID(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return strconv.Atoi(fields[3])
}
