package integration

// Tests of `iscsifs mount --attach`: loop devices over the LUN and partition
// files, file systems on them, crashes of the daemon, a target restart and
// shutdown while a file system is mounted. Everything they set up is undone
// by a diskGuard, also when a test fails or hangs.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// requireAttach skips (or on CI fails) where loop devices cannot be used.
func requireAttach(t *testing.T) {
	t.Helper()
	RequireFUSE(t)
	Tool(t, "losetup")
	if os.Geteuid() != 0 {
		skipOrFail(t, "--attach needs root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		skipOrFail(t, "no loop device support: "+err.Error())
	}
}

var attachLine = regexp.MustCompile(`(?m)^(\S+) (/dev/loop[0-9]+)$`)

// attachedDevices parses the "FILE /dev/loopN" lines the mount printed.
func attachedDevices(out string) map[string]string {
	devs := map[string]string{}
	for _, m := range attachLine.FindAllStringSubmatch(out, -1) {
		devs[m[1]] = m[2]
	}
	return devs
}

// startAttached starts `iscsifs mount --attach` and registers the mount and
// its devices with the guard; it returns once every file in status.json has
// a device.
func startAttached(t *testing.T, g *diskGuard, bin, url string, flags ...string) *mountProc {
	t.Helper()
	m := startMount(t, bin, url, append([]string{"--attach"}, flags...)...)
	g.fuse(m.dir)
	mntWaitFor(t, 30*time.Second, "a device for every file", func() bool {
		all := true
		for _, tg := range m.status(t).Targets {
			for _, l := range tg.LUNs {
				if l.Device == "" {
					all = false
				} else {
					g.loop(l.Device)
				}
				for _, p := range l.Parts {
					if p.Device == "" {
						all = false
					} else {
						g.loop(p.Device)
					}
				}
			}
		}
		return all
	})
	return m
}

// deviceOfFile returns the device status.json gives the file at path,
// waiting for it (partition devices are attached in the background).
func (m *mountProc) deviceOfFile(t testing.TB, g *diskGuard, path string) string {
	t.Helper()
	dev := ""
	mntWaitFor(t, 20*time.Second, "a device for "+path, func() bool {
		for _, tg := range m.status(t).Targets {
			for _, l := range tg.LUNs {
				if l.Path == path {
					dev = l.Device
				}
				for _, p := range l.Parts {
					if p.Path == path {
						dev = p.Device
					}
				}
			}
		}
		return dev != ""
	})
	g.loop(dev)
	return dev
}

// loopBlockSize reads a loop device's logical block size from sysfs.
func loopBlockSize(t testing.TB, dev string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "queue/logical_block_size"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// loopBound reports whether dev is bound to a file under dir (the mount's
// directory). A device that another test package attached the moment ours
// was freed (go test runs packages in parallel) does not count.
func loopBound(dev, dir string) bool {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop/backing_file"))
	return err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dir+"/")
}

// plainLoop attaches a byte range of a file (a partition of a backing file)
// read-only or not to a loop device of its own, with the guard detaching it.
func plainLoop(t testing.TB, g *diskGuard, file string, off, size int64, readOnly bool) string {
	t.Helper()
	args := []string{"-f", "--show", "-o", fmt.Sprint(off)}
	if size > 0 {
		args = append(args, "--sizelimit", fmt.Sprint(size))
	}
	if readOnly {
		args = append(args, "-r")
	}
	dev := strings.TrimSpace(mntRunTool(t, time.Minute, "losetup", append(args, file)...))
	g.loop(dev)
	return dev
}

// mountFS mounts a block device on a new directory with the guard
// unmounting it.
func mountFS(t testing.TB, g *diskGuard, dev string, opts ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := append(opts, dev, dir)
	mntRunTool(t, time.Minute, "mount", args...)
	g.mount(dir)
	return dir
}

func umountFS(t testing.TB, dir string) {
	t.Helper()
	mntRunTool(t, 2*time.Minute, "umount", dir)
}

// partOf returns the start and size of partition n of a LUN file from status.json.
func (m *mountProc) partOf(t testing.TB, lun string, n int) (int64, int64) {
	t.Helper()
	p := m.lunStatusOf(t, lun).Parts[n]
	start, err1 := strconv.ParseInt(p[0], 10, 64)
	size, err2 := strconv.ParseInt(p[1], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("%s has no partition %d in status.json", lun, n)
	}
	return start, size
}

// TestAttach: --attach gives every LUN and partition file a loop device with
// the LUN's block size; a table written on a device brings partition devices;
// ext4 and xfs on partitions take a real tree; after everything is taken
// down, fsck of each partition of the backing file is clean and a fresh
// mount sees every file with the same sha256.
func TestAttach(t *testing.T) {
	requireAttach(t)
	Tool(t, "sfdisk")
	Tool(t, "mkfs.xfs")
	const iqn = "iqn.2026-12.lab:attach"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{
		{LUN: 1, Size: 768 << 20},
		{LUN: 2, Size: 64 << 20, BlockSize: 4096},
	}})
	g := newDiskGuard(t)
	bin := iscsifsBinaryNoRace(t)
	url := "iscsi://" + tg.Portal + "/" + iqn
	m := startAttached(t, g, bin, url)
	printed := attachedDevices(m.output())
	lun1, lun2 := m.deviceOfFile(t, g, "lun1"), m.deviceOfFile(t, g, "lun2")
	if printed["lun1"] != lun1 || printed["lun2"] != lun2 {
		t.Errorf("printed devices %v, status.json says lun1 %s lun2 %s", printed, lun1, lun2)
	}
	if bs := loopBlockSize(t, lun1); bs != 512 {
		t.Errorf("%s: logical block size %d, want 512", lun1, bs)
	}
	if bs := loopBlockSize(t, lun2); bs != 4096 {
		t.Errorf("%s: logical block size %d, want 4096", lun2, bs)
	}
	if dio, _ := os.ReadFile(filepath.Join("/sys/block", filepath.Base(lun1), "loop/dio")); strings.TrimSpace(string(dio)) != "1" {
		t.Errorf("%s: direct I/O is off", lun1)
	}

	// A GPT written on the 4096-byte device: sfdisk counts in 4096-byte
	// sectors there, and the part file follows.
	runSfdisk(t, lun2, "label: gpt\nsize=16MiB, name=one\nname=two\n")
	mntWaitFor(t, 10*time.Second, "lun2's partitions", func() bool { return len(m.lunStatusOf(t, "lun2").Parts) == 2 })
	checkPartFiles(t, m, "lun2", lun2)
	if dev := m.deviceOfFile(t, g, "lun2-part2"); loopBlockSize(t, dev) != 4096 {
		t.Errorf("lun2-part2's device %s: block size %d, want 4096", dev, loopBlockSize(t, dev))
	}
	checkPartWrite(t, m, tg.BackingFile(iqn, 2), "lun2", 2)

	// ext4 and xfs on partitions of lun1, the table written through the file.
	runSfdisk(t, m.path("lun1"), "label: gpt\nsize=320MiB, name=ext4\nname=xfs\n")
	checkPartFiles(t, m, "lun1", tg.BackingFile(iqn, 1))
	fsTypes := map[int]string{1: "ext4", 2: "xfs"}
	tree := goSourceTree(t)
	var want map[string]string
	for n, fstype := range fsTypes {
		dev := m.deviceOfFile(t, g, fmt.Sprintf("lun1-part%d", n))
		if fstype == "ext4" {
			mntRunTool(t, 2*time.Minute, "mkfs.ext4", "-F", "-q", dev)
		} else {
			mntRunTool(t, 2*time.Minute, "mkfs.xfs", "-f", "-q", dev)
		}
		dir := mountFS(t, g, dev)
		start := time.Now()
		files, bytes := copyTree(t, tree, filepath.Join(dir, "src"), 96<<20)
		mntRunTool(t, 2*time.Minute, "sync", "-f", dir)
		t.Logf("%s on %s: copied %d files, %d MiB in %v", fstype, dev, files, bytes>>20, time.Since(start).Round(time.Millisecond))
		sums := treeSums(t, filepath.Join(dir, "src"))
		if want == nil {
			want = sums
		} else if len(sums) != len(want) {
			t.Errorf("%s holds %d files, ext4 %d", fstype, len(sums), len(want))
		}
		umountFS(t, dir)
	}
	var parts [3][2]int64
	for n := range fsTypes {
		parts[n][0], parts[n][1] = m.partOf(t, "lun1", n)
	}
	m.term(t)
	for _, dev := range []string{lun1, lun2} {
		if loopBound(dev, m.dir) {
			t.Errorf("%s still bound after the mount exited", dev)
		}
	}

	// fsck of each partition, straight from the backing file.
	backing := tg.BackingFile(iqn, 1)
	for n, fstype := range fsTypes {
		dev := plainLoop(t, g, backing, parts[n][0], parts[n][1], true)
		if fstype == "ext4" {
			mntRunTool(t, 2*time.Minute, "e2fsck", "-fn", dev)
		} else {
			mntRunTool(t, 2*time.Minute, "xfs_repair", "-n", dev)
		}
	}

	// A fresh mount sees every file with the same sha256.
	m2 := startAttached(t, g, bin, url, "--read-only")
	for n, fstype := range fsTypes {
		dev := m2.deviceOfFile(t, g, fmt.Sprintf("lun1-part%d", n))
		opts := []string{"-o", "ro"}
		if fstype == "xfs" {
			opts = []string{"-o", "ro,norecovery"}
		}
		dir := mountFS(t, g, dev, opts...)
		got := treeSums(t, filepath.Join(dir, "src"))
		bad := 0
		for p, sum := range want {
			if got[p] != sum {
				bad++
				if bad <= 5 {
					t.Errorf("%s: %s: sha256 %q, want %q", fstype, p, got[p], sum)
				}
			}
		}
		if bad > 0 || len(got) != len(want) {
			t.Errorf("%s: %d of %d files differ; %d files present", fstype, bad, len(want), len(got))
		}
		umountFS(t, dir)
	}
	m2.term(t)
}

// TestAttachShutdown: SIGTERM while ext4 on an attached device is mounted:
// 10 s later the daemon still serves and the file system works; after its
// umount the daemon exits 0 within 30 s, the devices are gone and the data is
// on the target.
func TestAttachShutdown(t *testing.T) {
	requireAttach(t)
	const iqn = "iqn.2026-12.lab:shutdown"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 128 << 20}}})
	g := newDiskGuard(t)
	m := startAttached(t, g, iscsifsBinaryNoRace(t), "iscsi://"+tg.Portal+"/"+iqn)
	dev := m.deviceOfFile(t, g, "lun1")
	mntRunTool(t, time.Minute, "mkfs.ext4", "-F", "-q", dev)
	dir := mountFS(t, g, dev)
	before := mntRandomBytes(1<<20 + 17)
	if err := os.WriteFile(filepath.Join(dir, "before"), before, 0o644); err != nil {
		t.Fatal(err)
	}
	// A daemon whose log would go to a file system on our device is refused.
	logFile, err := os.Create(filepath.Join(dir, "iscsifs.log"))
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	refused := exec.Command(m.cmd.Path, "mount", "iscsi://"+tg.Portal+"/"+iqn, other)
	refused.Stderr, refused.Stdout = logFile, logFile
	rerr := refused.Run()
	logFile.Close()
	msg, _ := os.ReadFile(filepath.Join(dir, "iscsifs.log"))
	if rerr == nil || !strings.Contains(string(msg), "which iscsifs serves") || strings.Count(strings.TrimSpace(string(msg)), "\n") != 0 {
		t.Errorf("a mount logging into ext4 on our device: %v, %q; want one line refusing it", rerr, msg)
	}
	if mounted, _ := mntIsMounted(other); mounted {
		_ = exec.Command("fusermount3", "-u", "-z", other).Run()
		t.Errorf("the refused mount is mounted")
	}
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.done:
		t.Fatalf("the daemon exited %d on SIGTERM while ext4 was mounted on %s:\n%s", m.code, dev, mntTail(m.output(), 4<<10))
	case <-time.After(10 * time.Second):
	}
	if !strings.Contains(m.output(), "devices are in use") {
		t.Errorf("the daemon did not say what holds it")
	}
	after := mntRandomBytes(2<<20 + 5)
	if err := os.WriteFile(filepath.Join(dir, "after"), after, 0o644); err != nil {
		t.Fatalf("ext4 after SIGTERM: %v", err)
	}
	mntRunTool(t, time.Minute, "sync", "-f", dir)
	if got, err := os.ReadFile(filepath.Join(dir, "before")); err != nil || sha256.Sum256(got) != sha256.Sum256(before) {
		t.Errorf("reading back after SIGTERM: %v", err)
	}
	umountFS(t, dir)
	if code := m.wait(t, 30*time.Second); code != 0 {
		t.Errorf("exit %d after the file system was unmounted", code)
	}
	if loopBound(dev, m.dir) {
		t.Errorf("%s still bound after the daemon exited", dev)
	}
	if mounted, _ := mntIsMounted(m.dir); mounted {
		t.Errorf("%s still mounted", m.dir)
	}
	// The data is on the target: ext4 straight from the backing file.
	plain := plainLoop(t, g, tg.BackingFile(iqn, 1), 0, 0, true)
	mntRunTool(t, time.Minute, "e2fsck", "-fn", plain)
	ro := mountFS(t, g, plain, "-o", "ro")
	for name, data := range map[string][]byte{"before": before, "after": after} {
		if got, err := os.ReadFile(filepath.Join(ro, name)); err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
			t.Errorf("%s on the backing file: %v", name, err)
		}
	}
}

// TestAttachAbortedConnection: the mount's FUSE connection aborted through
// fusectl while its device is attached. With nothing on the device the
// daemon detaches it, unmounts and exits 0. With ext4 mounted on it, the
// device can only fail from then on: the daemon says so in one line, exits
// non-zero and leaves nothing mounted at the mountpoint; the device goes
// away once ext4 is unmounted (autoclear).
func TestAttachAbortedConnection(t *testing.T) {
	requireAttach(t)
	for _, withFS := range []bool{false, true} {
		name := map[bool]string{false: "free", true: "ext4 mounted"}[withFS]
		t.Run(name, func(t *testing.T) {
			const iqn = "iqn.2026-12.lab:attach-abort"
			tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 64 << 20}}})
			g := newDiskGuard(t)
			m := startAttached(t, g, iscsifsBinaryNoRace(t), "iscsi://"+tg.Portal+"/"+iqn)
			dev := m.deviceOfFile(t, g, "lun1")
			var fsDir string
			if withFS {
				mntRunTool(t, time.Minute, "mkfs.ext4", "-F", "-q", dev)
				fsDir = mountFS(t, g, dev)
				if err := os.WriteFile(filepath.Join(fsDir, "f"), []byte("data"), 0o644); err != nil {
					t.Fatal(err)
				}
				mntRunTool(t, time.Minute, "sync", "-f", fsDir)
			}
			conn := g.fuse(m.dir)
			if err := os.WriteFile(filepath.Join(fuseConnDir(conn), "abort"), []byte("1"), 0); err != nil {
				t.Fatalf("abort connection %d: %v", conn, err)
			}
			code := m.wait(t, 30*time.Second)
			out := m.output()
			if e, mounted := guardMountAt(m.dir); mounted {
				t.Errorf("%s is still mounted (%s) after the daemon exited:\n%s", m.dir, e.FSType, mntTail(out, 4<<10))
			}
			if !withFS {
				if code != 0 {
					t.Errorf("exit %d after the connection was aborted:\n%s", code, mntTail(out, 4<<10))
				}
				if loopAttached(dev) {
					t.Errorf("%s still attached after the daemon exited:\n%s", dev, mntTail(out, 4<<10))
				}
				// The device is detached before the unmount, which then
				// is not refused as busy (and left to a lazy unmount).
				if strings.Contains(out, "retrying lazily") {
					t.Errorf("the dead mount was still busy with the device:\n%s", mntTail(out, 4<<10))
				}
				return
			}
			want := "iscsifs: the FUSE connection ended while a device was in use: lun1 " + dev + " (mounted at " + fsDir + ") fails every I/O until unmounted"
			if code == 0 || !strings.Contains(out, want+"\n") {
				t.Errorf("exit %d; want non-zero and the line %q in:\n%s", code, want, mntTail(out, 4<<10))
			}
			if !loopAttached(dev) {
				t.Errorf("%s detached under the mounted ext4", dev)
			}
			umountFS(t, fsDir)
			mntWaitFor(t, 10*time.Second, dev+" detached after ext4 was unmounted", func() bool { return !loopAttached(dev) })
		})
	}
}

// loopAttached reports whether the loop device is bound to any file.
func loopAttached(dev string) bool {
	_, err := os.Stat(filepath.Join("/sys/block", filepath.Base(dev), "loop/backing_file"))
	return err == nil
}

// TestAttachErrors: --attach without loop support or root fails with one line
// and leaves nothing mounted (here: a read-only LUN attaches read-only, and a
// mount whose attach cannot work is refused).
func TestAttachReadOnly(t *testing.T) {
	requireAttach(t)
	const iqn = "iqn.2026-12.lab:attach-ro"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 16 << 20, Fill: "random"}}})
	g := newDiskGuard(t)
	m := startAttached(t, g, iscsifsBinary(t), "iscsi://"+tg.Portal+"/"+iqn, "--read-only")
	dev := m.deviceOfFile(t, g, "lun1")
	ro, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "ro"))
	if err != nil || strings.TrimSpace(string(ro)) != "1" {
		t.Errorf("%s of a --read-only mount: ro=%q %v", dev, ro, err)
	}
	if f, err := os.OpenFile(dev, os.O_WRONLY, 0); err == nil {
		_, werr := f.Write(make([]byte, 512))
		f.Close()
		if werr == nil {
			t.Errorf("a write to the read-only device %s succeeded", dev)
		}
	}
	m.term(t)
	if loopBound(dev, m.dir) {
		t.Errorf("%s still bound", dev)
	}
}

// crashWriter creates files in dir, fsyncs each and the directory, and
// appends "name sha256" to an fsynced manifest, until ctx ends or a write
// fails (the daemon was killed).
func crashWriter(ctx context.Context, dir string, seed uint64) (written int, err error) {
	man, err := os.OpenFile(filepath.Join(dir, "manifest"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer man.Close()
	d, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; ctx.Err() == nil; i++ {
		data := make([]byte, 1+rng.IntN(256<<10))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		name := fmt.Sprintf("f%05d", i)
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
		if err != nil {
			return written, err
		}
		if _, err = f.Write(data); err == nil {
			err = f.Sync()
		}
		f.Close()
		if err == nil {
			err = d.Sync()
		}
		if err != nil {
			return written, err
		}
		sum := sha256.Sum256(data)
		if _, err := fmt.Fprintf(man, "%s %s\n", name, hex.EncodeToString(sum[:])); err != nil {
			return written, err
		}
		if err := man.Sync(); err != nil {
			return written, err
		}
		written++
	}
	return written, nil
}

// TestAttachCrash: five times, a writer fsyncs files and a manifest on ext4
// over an attached device and the daemon gets SIGKILL at a random moment.
// After cleanup, ext4 on the backing file replays its journal, every
// manifest entry is there with its sha256, and fsck is clean.
func TestAttachCrash(t *testing.T) {
	requireAttach(t)
	const iqn = "iqn.2026-12.lab:crash"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 128 << 20}}})
	bin := iscsifsBinaryNoRace(t)
	url := "iscsi://" + tg.Portal + "/" + iqn
	backing := tg.BackingFile(iqn, 1)
	for run := range 5 {
		t.Run(fmt.Sprint(run), func(t *testing.T) {
			g := newDiskGuard(t)
			m := startAttached(t, g, bin, url)
			dev := m.deviceOfFile(t, g, "lun1")
			if run == 0 {
				mntRunTool(t, time.Minute, "mkfs.ext4", "-F", "-q", dev)
			}
			dir := mountFS(t, g, dev)
			sub := filepath.Join(dir, fmt.Sprintf("run%d", run))
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			type result struct {
				n   int
				err error
			}
			done := make(chan result, 1)
			go func() {
				n, err := crashWriter(ctx, sub, uint64(run)+1)
				done <- result{n, err}
			}()
			time.Sleep(time.Duration(500+rand.IntN(2500)) * time.Millisecond)
			_ = m.cmd.Process.Kill()
			<-m.done
			var r result
			select {
			case r = <-done:
			case <-time.After(60 * time.Second):
				g.abortFUSE(m.dir)
				r = <-done
			}
			cancel()
			t.Logf("run %d: %d files written and fsynced before SIGKILL (writer stopped with: %v)", run, r.n, r.err)
			// Cleanup as an operator would: lazy umount, detach, unmount the dead FUSE mount.
			_ = exec.Command("umount", "-l", dir).Run()
			_ = exec.Command("losetup", "-d", dev).Run()
			g.abortFUSE(m.dir)
			mntWaitFor(t, 30*time.Second, dev+" released", func() bool { return !loopBound(dev, m.dir) })

			plain := plainLoop(t, g, backing, 0, 0, false)
			check := mountFS(t, g, plain) // replays the journal
			man, err := os.Open(filepath.Join(check, fmt.Sprintf("run%d", run), "manifest"))
			if err != nil {
				t.Fatal(err)
			}
			entries := 0
			sc := bufio.NewScanner(man)
			for sc.Scan() {
				name, sum, ok := strings.Cut(sc.Text(), " ")
				if !ok || len(sum) != 64 {
					continue // the last line may be torn: it was not fsynced yet
				}
				entries++
				f, err := os.Open(filepath.Join(check, fmt.Sprintf("run%d", run), name))
				if err != nil {
					t.Errorf("manifest entry %s: %v", name, err)
					continue
				}
				h := sha256.New()
				_, err = io.Copy(h, f)
				f.Close()
				if got := hex.EncodeToString(h.Sum(nil)); err != nil || got != sum {
					t.Errorf("manifest entry %s: sha256 %s (%v), want %s", name, got, err, sum)
				}
			}
			man.Close()
			if entries < r.n {
				t.Errorf("the manifest has %d entries after the crash; %d were fsynced", entries, r.n)
			}
			umountFS(t, check)
			mntRunTool(t, 2*time.Minute, "e2fsck", "-fn", plain)
		})
		if t.Failed() {
			return
		}
	}
}

// setDirtyBytes sets the kernel's dirty limits in bytes, and when the test
// ends restores the ratios (or byte limits) that were set before: writing a
// ratio is what turns the byte limit off again.
func setDirtyBytes(t testing.TB, background, limit int64) {
	t.Helper()
	const vm = "/proc/sys/vm/"
	saved := map[string][]byte{}
	for _, name := range []string{"dirty_ratio", "dirty_background_ratio", "dirty_bytes", "dirty_background_bytes"} {
		b, err := os.ReadFile(vm + name)
		if err != nil {
			t.Fatal(err)
		}
		saved[name] = b
	}
	t.Cleanup(func() {
		for _, pair := range [][2]string{{"dirty_bytes", "dirty_ratio"}, {"dirty_background_bytes", "dirty_background_ratio"}} {
			name := pair[1] // a ratio was in force (its bytes read 0)
			if strings.TrimSpace(string(saved[pair[0]])) != "0" {
				name = pair[0]
			}
			if err := os.WriteFile(vm+name, saved[name], 0o644); err != nil {
				t.Errorf("restoring %s: %v", name, err)
			}
		}
	})
	for name, v := range map[string]int64{"dirty_background_bytes": background, "dirty_bytes": limit} {
		if err := os.WriteFile(vm+name, []byte(fmt.Sprint(v)), 0o644); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// taskStacks describes every thread of pid: state, wchan and kernel stack.
func taskStacks(pid int) string {
	var b strings.Builder
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		dir := fmt.Sprintf("/proc/%d/task/%s", pid, task.Name())
		stat, _ := os.ReadFile(dir + "/stat")
		wchan, _ := os.ReadFile(dir + "/wchan")
		stack, _ := os.ReadFile(dir + "/stack")
		s := string(stat)
		state := "?"
		if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) {
			state = s[i+2 : i+3]
		}
		fmt.Fprintf(&b, "tid %s state %s wchan %s\n\t%s\n", task.Name(), state, wchan, strings.ReplaceAll(strings.TrimSpace(string(stack)), "\n", "\n\t"))
	}
	return b.String()
}

const capSysResource = 24

// haveCapability reports whether this process has capability bit cap in its
// effective set (the daemon it starts gets the same).
func haveCapability(cap uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			eff, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && eff&(1<<cap) != 0
		}
	}
	return false
}

// ioFlusherThreads counts the daemon's threads with and without
// PF_MEMALLOC_NOIO (set by PR_SET_IO_FLUSHER).
func ioFlusherThreads(t testing.TB, pid int) (with, without int) {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		flags, _ := strconv.ParseUint(fields[6], 10, 64)
		if flags&0x00080000 != 0 {
			with++
		} else {
			without++
		}
	}
	return with, without
}

// TestAttachMemoryPressure: the daemon, a writer of 1 GiB into ext4 on the
// attached disk and a memory hog share one memory cgroup of 384 MiB, with
// small dirty limits. Every daemon thread is an I/O flusher; the writer
// finishes in bounded time and no task stays in D state for 60 s. On a hang
// the guard aborts the FUSE connection so that the machine recovers.
func TestAttachMemoryPressure(t *testing.T) {
	requireAttach(t)
	const iqn = "iqn.2026-12.lab:pressure"
	g := newDiskGuard(t)
	// The target's backing file lives in a tmpfs: the small dirty limits
	// below are global (cgroup v1 has none of its own), and tgtd writing
	// to a disk file would be throttled by them as much as the writer.
	tgDir := filepath.Join(t.TempDir(), "target")
	if err := os.Mkdir(tgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	mntRunTool(t, time.Minute, "mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", tgDir)
	g.mount(tgDir)
	tg, err := NewTGT(tgDir, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 1536 << 20}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tg.Close(); err != nil {
			t.Errorf("tgtd: %v", err)
		}
	})
	cg := g.memCgroup(384 << 20)
	setDirtyBytes(t, 8<<20, 32<<20)

	// The daemon starts inside the cgroup, so that all it allocates is
	// charged there.
	inCgroup := filepath.Join(t.TempDir(), "iscsifs-in-cgroup")
	script := fmt.Sprintf("#!/bin/sh\necho $$ > %s/cgroup.procs || exit 1\nexec %s \"$@\"\n", cg, iscsifsBinaryNoRace(t))
	if err := os.WriteFile(inCgroup, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	m := startAttached(t, g, inCgroup, "iscsi://"+tg.Portal+"/"+iqn, "--cache-size", "64MiB", "--memory-limit", "192MiB")
	if !slices.Contains(cgroupPIDs(cg), m.cmd.Process.Pid) {
		t.Fatalf("the daemon (pid %d) is not in %s", m.cmd.Process.Pid, cg)
	}
	with, without := ioFlusherThreads(t, m.cmd.Process.Pid)
	switch {
	case !haveCapability(capSysResource):
		t.Logf("no CAP_SYS_RESOURCE here: the daemon cannot be an I/O flusher (%d threads)", with+without)
	case without != 0 || with == 0:
		t.Errorf("daemon threads: %d I/O flushers, %d not", with, without)
	}
	dev := m.deviceOfFile(t, g, "lun1")
	mntRunTool(t, 2*time.Minute, "mkfs.ext4", "-F", "-q", dev)
	dir := mountFS(t, g, dev)

	// The hog: 160 MiB of tmpfs pages charged to the cgroup, held until the
	// tmpfs is unmounted.
	hogDir := filepath.Join(t.TempDir(), "hog")
	if err := os.Mkdir(hogDir, 0o755); err != nil {
		t.Fatal(err)
	}
	mntRunTool(t, time.Minute, "mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", hogDir)
	g.mount(hogDir)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	if out, err := cgCommand(ctx, cg, "dd", "if=/dev/zero", "of="+filepath.Join(hogDir, "hog"), "bs=1M", "count=160").CombinedOutput(); err != nil {
		t.Fatalf("memory hog: %v\n%s", err, out)
	}

	stuck := make(chan string, 1)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go watchDState(wctx, func() []int { return cgroupPIDs(cg) }, 60*time.Second, func(desc string) {
		desc += "\ndaemon threads:\n" + taskStacks(m.cmd.Process.Pid)
		select {
		case stuck <- desc:
		default:
		}
		g.abortFUSE(m.dir)
	})
	writer := cgCommand(ctx, cg, "dd", "if=/dev/zero", "of="+filepath.Join(dir, "big"), "bs=1M", "count=1024", "conv=fsync")
	start := time.Now()
	out, err := writer.CombinedOutput()
	stopWatch()
	select {
	case desc := <-stuck:
		t.Fatalf("a task stayed in D state for 60 s (FUSE connection aborted): %s", desc)
	default:
	}
	if err != nil {
		t.Fatalf("writing 1 GiB under memory pressure: %v after %v\n%s", err, time.Since(start), out)
	}
	failcnt, _ := os.ReadFile(filepath.Join(cg, "memory.failcnt"))
	peak, _ := os.ReadFile(filepath.Join(cg, "memory.max_usage_in_bytes"))
	t.Logf("1 GiB written with conv=fsync in a 384 MiB cgroup with a 160 MiB hog: %v; the cgroup hit its limit %s times, peak %s bytes",
		time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(failcnt)), strings.TrimSpace(string(peak)))
	if strings.TrimSpace(string(failcnt)) == "0" {
		t.Errorf("the cgroup never reached its limit: the test put no memory pressure on the daemon")
	}
	umountFS(t, dir)
	m.term(t)
}

// TestAttachTargetRestart: tgtd is killed during a tree copy into ext4 on an
// attached disk and comes back 3 s later; the copy finishes without an error,
// every file has the source's sha256, and fsck of the backing file is clean.
func TestAttachTargetRestart(t *testing.T) {
	requireAttach(t)
	const iqn = "iqn.2026-12.lab:restart"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 512 << 20}}})
	g := newDiskGuard(t)
	m := startAttached(t, g, iscsifsBinaryNoRace(t), "iscsi://"+tg.Portal+"/"+iqn)
	dev := m.deviceOfFile(t, g, "lun1")
	mntRunTool(t, 2*time.Minute, "mkfs.ext4", "-F", "-q", dev)
	dir := mountFS(t, g, dev)
	src := goSourceTree(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp := exec.CommandContext(ctx, "cp", "-a", src, filepath.Join(dir, "src"))
	var cpOut strings.Builder
	cp.Stdout, cp.Stderr = &cpOut, &cpOut
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	copied := make(chan error, 1)
	go func() { copied <- cp.Wait() }()
	time.Sleep(time.Second)
	tg.Kill()
	killed := time.Now()
	time.Sleep(3 * time.Second)
	tg.Restart()
	t.Logf("tgtd down for %v", time.Since(killed).Round(time.Millisecond))
	if err := <-copied; err != nil {
		t.Fatalf("cp -a across the target restart: %v\n%s", err, cpOut.String())
	}
	mntRunTool(t, 2*time.Minute, "sync", "-f", dir)
	want, got := treeSums(t, src), treeSums(t, filepath.Join(dir, "src"))
	bad := 0
	for p, sum := range want {
		if got[p] != sum {
			bad++
		}
	}
	if bad > 0 || len(got) != len(want) {
		t.Errorf("%d of %d files differ after the restart; %d present", bad, len(want), len(got))
	}
	umountFS(t, dir)
	m.term(t)
	if !strings.Contains(m.output(), "reconnect") && !strings.Contains(m.output(), "recover") {
		t.Errorf("the daemon logged no reconnect")
	}
	mntRunTool(t, 2*time.Minute, "e2fsck", "-fn", tg.BackingFile(iqn, 1))
}

// TestAttachUnmountFromOutside: while devices are attached, fusermount3 -u
// is refused (the devices hold the files) and the daemon goes on; a lazy
// fusermount3 -u -z makes it detach its devices and exit 0. `iscsifs status`
// names the devices. A partition that goes from the table loses its device.
func TestAttachUnmountFromOutside(t *testing.T) {
	requireAttach(t)
	Tool(t, "sfdisk")
	const iqn = "iqn.2026-12.lab:outside"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 64 << 20}}})
	g := newDiskGuard(t)
	m := startAttached(t, g, iscsifsBinary(t), "iscsi://"+tg.Portal+"/"+iqn)
	dev := m.deviceOfFile(t, g, "lun1")
	runSfdisk(t, dev, "label: gpt\nsize=8MiB\nsize=8MiB\n")
	p1, p2 := m.deviceOfFile(t, g, "lun1-part1"), m.deviceOfFile(t, g, "lun1-part2")
	out := runCLI(t, nil, "status", m.dir)
	for _, d := range []string{dev, p1, p2} {
		if !strings.Contains(out.stdout, "device "+d) {
			t.Errorf("iscsifs status does not name %s:\n%s", d, out.stdout)
		}
	}
	// Without a mount point, status lists the mount with its devices.
	list := runCLI(t, nil, "status", "--json")
	var mounts []struct {
		Mountpoint string            `json:"mountpoint"`
		Devices    map[string]string `json:"devices"`
	}
	if err := json.Unmarshal([]byte(list.stdout), &mounts); err != nil {
		t.Fatalf("status --json: %v\n%s", err, list.stdout)
	}
	listed := false
	for _, e := range mounts {
		if e.Mountpoint == m.dir {
			listed = e.Devices["lun1"] == dev && e.Devices["lun1-part1"] == p1 && e.Devices["lun1-part2"] == p2
		}
	}
	if !listed {
		t.Errorf("status --json does not list %s with lun1=%s lun1-part1=%s lun1-part2=%s:\n%s", m.dir, dev, p1, p2, list.stdout)
	}
	// The table loses partition 2: its file and device go.
	runSfdisk(t, dev, "label: gpt\nsize=8MiB\n")
	mntWaitFor(t, 20*time.Second, "lun1-part2's device detached", func() bool { return !loopBound(p2, m.dir) })
	if _, err := os.Stat(m.path("lun1-part2")); !os.IsNotExist(err) {
		t.Errorf("lun1-part2 after its partition was deleted: %v", err)
	}
	if !loopBound(p1, m.dir) {
		t.Errorf("%s (lun1-part1, unchanged) was detached", p1)
	}

	if out, err := exec.Command("fusermount3", "-u", m.dir).CombinedOutput(); err == nil {
		t.Errorf("fusermount3 -u succeeded while devices hold the files: %s", out)
	}
	select {
	case <-m.done:
		t.Fatalf("the daemon exited after a refused unmount:\n%s", mntTail(m.output(), 4<<10))
	case <-time.After(time.Second):
	}
	mntRunTool(t, time.Minute, "fusermount3", "-u", "-z", m.dir)
	if code := m.wait(t, 30*time.Second); code != 0 {
		t.Errorf("exit %d after a lazy unmount", code)
	}
	for _, d := range []string{dev, p1} {
		if loopBound(d, m.dir) {
			t.Errorf("%s still bound after the daemon exited", d)
		}
	}
}

// TestAttachNotRoot: --attach as a user who cannot attach loop devices fails
// with one line before anything is mounted.
func TestAttachNotRoot(t *testing.T) {
	requireAttach(t)
	const iqn = "iqn.2026-12.lab:notroot"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 16 << 20}}})
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // so that nobody can run the binary
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "iscsifs")
	data, err := os.ReadFile(iscsifsBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o777); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "mount", "--attach", "iscsi://"+tg.Portal+"/"+iqn, mnt)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	msg := strings.TrimSpace(string(out))
	if err == nil || strings.Contains(msg, "\n") || !strings.Contains(msg, "--attach") || !strings.Contains(msg, "root") {
		t.Errorf("--attach as nobody: %v, %q; want one line about root and a non-zero exit", err, msg)
	}
	if mounted, _ := mntIsMounted(mnt); mounted {
		_ = exec.Command("fusermount3", "-u", "-z", mnt).Run()
		t.Errorf("%s is mounted after the refused --attach", mnt)
	}
}
