package integration

// Mounting through mount(8): `mount -t fuse.iscsifs` (mount.fuse3 runs
// `iscsifs URL DIR -o OPTS`), an fstab line (mount -T), and `mount -t
// iscsifs` (mount(8) runs /sbin/mount.iscsifs URL DIR -o OPTS).
//
// mount(8) clears PATH before it runs a helper (util-linux sanitize_env), so
// mount.fuse3's /bin/sh finds iscsifs only in sh's default PATH
// (/usr/local/sbin ... /sbin, /bin), and mount(8) looks for mount.iscsifs in
// /sbin only. Rather than installing anything, the tests run mount(8) in a
// private mount namespace whose /sbin is a copy (links) of the real one
// plus iscsifs and mount.iscsifs: links to the built binary. The daemons
// live in that namespace; the test reads their mounts through
// /proc/PID/root and runs mount and umount there with nsenter.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFstab(t *testing.T) {
	RequireFUSE(t)
	if os.Geteuid() != 0 {
		skipOrFail(t, "fstab: mount(8) and a private mount namespace need root")
	}
	RequireTools(t, "mount", "umount", "mount.fuse3", "nsenter")
	const (
		chapIQN  = "iqn.2026-11.lab:fstab-chap"
		plainIQN = "iqn.2026-11.lab:fstab-plain"
		chapUser = "fstabuser"
	)
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	secret := "fstab-secret-" + hex.EncodeToString(rnd[:])
	tg := StartTGT(t,
		TargetSpec{Name: chapIQN, CHAPUser: chapUser, CHAPSecret: secret,
			LUNs: []LUNSpec{{LUN: 1, Size: 8 << 20, Fill: "random"}}},
		TargetSpec{Name: plainIQN, LUNs: []LUNSpec{{LUN: 1, Size: 8 << 20, Fill: "random"}}},
	)
	ns := newMountNS(t, iscsifsBinary(t))
	secretFile := filepath.Join(ns.dir, "chap-secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("mount -t fuse.iscsifs, ro, chap_secret_file", func(t *testing.T) {
		mnt, log := ns.mountDir(t, "mnt-fuse")
		ns.mount(t, log, "-t", "fuse.iscsifs", tg.URL(chapIQN, 1), mnt,
			"-o", "ro,cache_size=64MiB,chap_user="+chapUser+",chap_secret_file="+secretFile+",log_file="+log)
		st := ns.status(t, mnt)
		if !st.ReadOnly {
			t.Errorf("status.json: read_only false after -o ro")
		}
		daemonArgs := fstabCmdline(st.PID)
		for _, want := range []string{"mount", "--daemon", "--read-only", "--cache-size=64MiB", "--chap-secret-file=" + secretFile} {
			if !strings.Contains("\x00"+daemonArgs+"\x00", "\x00"+want+"\x00") {
				t.Errorf("daemon %d's command line %q lacks %q", st.PID, daemonArgs, want)
			}
		}
		got, err := os.ReadFile(ns.path(mnt + "/lun1"))
		if err != nil {
			t.Fatal(err)
		}
		if want := mustRead(t, tg.BackingFile(chapIQN, 1)); !bytes.Equal(got, want) {
			t.Errorf("lun1 differs from the backing file at %d", mntFirstDiff(got, want))
		}
		if f, err := os.OpenFile(ns.path(mnt+"/lun1"), os.O_WRONLY, 0); err == nil {
			f.Close()
			t.Errorf("lun1 of a ro mount opened for writing")
		}
		fstabNoSecretInCmdlines(t, secret)
		ns.umount(t, mnt, st.PID)
	})

	t.Run("mount -T fstab, write back before the daemon exits", func(t *testing.T) {
		mnt, log := ns.mountDir(t, "mnt-tab")
		fstab := filepath.Join(ns.dir, "fstab")
		line := fmt.Sprintf("%s %s fuse.iscsifs _netdev,rw,cache_size=64MiB,log_file=%s 0 0\n", tg.URL(plainIQN, 1), mnt, log)
		if err := os.WriteFile(fstab, []byte("# iscsifs test\n"+line), 0o644); err != nil {
			t.Fatal(err)
		}
		ns.mount(t, log, "-T", fstab, mnt)
		st := ns.status(t, mnt)
		if st.ReadOnly {
			t.Errorf("status.json: read_only after -o rw")
		}
		data := mntRandomBytes(1 << 20)
		const at = 3 << 20
		f, err := os.OpenFile(ns.path(mnt+"/lun1"), os.O_WRONLY, 0)
		if err == nil {
			_, err = f.WriteAt(data, at)
			err = errors.Join(err, f.Close()) // no fsync: umount and the daemon's exit must write back
		}
		if err != nil {
			t.Fatal(err)
		}
		ns.umount(t, mnt, st.PID)
		if got := mntReadFileAt(t, tg.BackingFile(plainIQN, 1), len(data), at); !bytes.Equal(got, data) {
			t.Errorf("after umount the backing file differs at +%d", mntFirstDiff(got, data))
		}
	})

	t.Run("mount -t iscsifs, chap_secret as an option", func(t *testing.T) {
		mnt, log := ns.mountDir(t, "mnt-helper")
		// The secret is on mount(8)'s command line and its helper's, not
		// on the daemon's once they are gone.
		ns.mount(t, log, "-t", "iscsifs", tg.URL(chapIQN, 1), mnt,
			"-o", "chap_user="+chapUser+",chap_secret="+secret+",log_file="+log)
		st := ns.status(t, mnt)
		if argv0, _, _ := strings.Cut(fstabCmdline(st.PID), "\x00"); argv0 != "/sbin/mount.iscsifs" {
			t.Errorf("daemon %d's argv[0] is %q, want /sbin/mount.iscsifs", st.PID, argv0)
		}
		want := mustRead(t, tg.BackingFile(chapIQN, 1))[:1<<20]
		if got := mntReadFileAt(t, ns.path(mnt+"/lun1"), len(want), 0); !bytes.Equal(got, want) {
			t.Errorf("lun1 differs from the backing file at %d", mntFirstDiff(got, want))
		}
		fstabNoSecretInCmdlines(t, secret)
		ns.umount(t, mnt, st.PID)
	})
}

// mountNS is a private mount namespace whose /sbin holds iscsifs and
// mount.iscsifs, kept by a sleeping process.
type mountNS struct {
	pid int    // of the process that keeps the namespace
	dir string // on the host: mount points, logs, the /sbin copy
}

// newMountNS starts the namespace; it ends with the test.
func newMountNS(t *testing.T, bin string) *mountNS {
	t.Helper()
	sbin, err := filepath.EvalSymlinks("/sbin")
	if err != nil {
		t.Fatal(err)
	}
	ns := &mountNS{dir: t.TempDir()}
	orig, links := filepath.Join(ns.dir, "sbin-orig"), filepath.Join(ns.dir, "sbin")
	for _, d := range []string{orig, links} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(sbin)
	if err != nil {
		t.Fatal(err)
	}
	// The real /sbin is bound at orig inside the namespace, before links
	// covers /sbin.
	for _, e := range entries {
		if e.Name() != "iscsifs" && e.Name() != "mount.iscsifs" {
			if err := os.Symlink(filepath.Join(orig, e.Name()), filepath.Join(links, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, name := range []string{"iscsifs", "mount.iscsifs"} {
		if err := os.Symlink(bin, filepath.Join(links, name)); err != nil {
			t.Fatal(err)
		}
	}
	ready := filepath.Join(ns.dir, "ready")
	cmd := exec.Command("sh", "-c", `mount --bind "$1" "$2" && mount --bind "$3" "$1" && : >"$4" && exec sleep 100000`, "sh", sbin, orig, links, ready)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS} // and / private
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		skipOrFail(t, fmt.Sprintf("fstab: no private mount namespace: %v", err))
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	mntWaitFor(t, 10*time.Second, "the private mount namespace", func() bool {
		select {
		case <-exited:
			t.Fatalf("private mount namespace: %s", out.String())
		default:
		}
		_, err := os.Stat(ready)
		return err == nil
	})
	ns.pid = cmd.Process.Pid
	return ns
}

// path is p as the namespace sees it.
func (ns *mountNS) path(p string) string { return fmt.Sprintf("/proc/%d/root%s", ns.pid, p) }

// run runs a command in the namespace and returns its output.
func (ns *mountNS) run(name string, args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"-t", fmt.Sprint(ns.pid), "-m", "--", name}, args...)...)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			_ = cmd.Process.Kill()
		}
	}()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mountDir makes a mount point and names a log file for its daemon. At the
// end of the test whatever is left is unmounted lazily and killed.
func (ns *mountNS) mountDir(t *testing.T, name string) (dir, log string) {
	t.Helper()
	dir, log = filepath.Join(ns.dir, name), filepath.Join(ns.dir, name+".log")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ns.mounted(dir) {
			t.Errorf("%s still mounted at the end; unmounting lazily", dir)
			if out, err := ns.run("umount", "-l", dir); err != nil {
				t.Errorf("umount -l %s: %v %s", dir, err, out)
			}
		}
		for _, pid := range daemonsOf(dir) {
			t.Errorf("iscsifs daemon %d still serving %s at the end; killing it", pid, dir)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if b, _ := os.ReadFile(log); t.Failed() && len(b) > 0 {
			t.Logf("%s:\n%s", log, mntTail(string(b), 8<<10))
		}
		if b, _ := os.ReadFile(log); strings.Contains(string(b), "WARNING: DATA RACE") || strings.Contains(string(b), "panic:") {
			t.Errorf("the daemon of %s reported a race or a panic:\n%s", dir, mntTail(string(b), 8<<10))
		}
	})
	return dir, log
}

// mount runs mount(8) with args in the namespace and expects it to succeed.
func (ns *mountNS) mount(t *testing.T, log string, args ...string) {
	t.Helper()
	if out, err := ns.run("mount", args...); err != nil {
		b, _ := os.ReadFile(log)
		t.Fatalf("mount %q: %v\n%s\ndaemon log:\n%s", args, err, out, mntTail(string(b), 8<<10))
	}
}

// umount runs umount(8) in the namespace and waits for the daemon to exit.
// umount(8) does not wait for it: a FUSE mount (unlike fuseblk) gets no
// DESTROY, and umount(8) would look for a helper only as umount.fuse, for
// every FUSE file system. Written data has been written back when its file
// was closed; the daemon sends SYNCHRONIZE CACHE on its way out.
func (ns *mountNS) umount(t *testing.T, dir string, pid int) {
	t.Helper()
	if out, err := ns.run("umount", dir); err != nil {
		t.Fatalf("umount %s: %v %s", dir, err, out)
	}
	mntWaitFor(t, time.Minute, fmt.Sprintf("daemon %d to exit after umount", pid), func() bool { return !processExists(pid) })
	if ns.mounted(dir) {
		t.Errorf("%s still mounted after umount", dir)
	}
}

// mounted reports whether dir is a mount point in the namespace.
func (ns *mountNS) mounted(dir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", ns.pid))
	if err != nil {
		return false // the namespace is gone, and its mounts with it
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// status reads the mount's status.json.
func (ns *mountNS) status(t *testing.T, dir string) statusJSON {
	t.Helper()
	var st statusJSON
	b, err := os.ReadFile(ns.path(dir + "/.iscsifs/status.json"))
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err == nil && st.PID <= 0 {
		err = fmt.Errorf("no pid in %s", b)
	}
	if err != nil {
		t.Fatalf("status.json of %s: %v", dir, err)
	}
	return st
}

// fstabCmdline is a process's command line, arguments separated by NULs.
func fstabCmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSuffix(string(b), "\x00")
}

// fstabNoSecretInCmdlines checks that no process shows the secret in ps.
func fstabNoSecretInCmdlines(t *testing.T, secret string) {
	t.Helper()
	procs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		var pid int
		if _, err := fmt.Sscan(p.Name(), &pid); err != nil {
			continue
		}
		if cmdline := fstabCmdline(pid); strings.Contains(cmdline, secret) {
			t.Errorf("the CHAP secret is in the command line of process %d (%s)", pid, strings.Fields(strings.ReplaceAll(cmdline, "\x00", " "))[0])
		}
	}
}
