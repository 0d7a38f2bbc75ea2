package integration

// Tests of `iscsifs mount` as a user runs it: the built binary mounts LUNs of a
// real tgtd or istgt in a temporary directory, and the files are used with
// dd, fio, mkfs.ext4 and plain reads and writes from this process (never
// from the process that serves the mount).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
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
	"sync"
	"syscall"
	"testing"
	"time"
)

// The mount lab: one data target whose LUNs each serve one test (so that the
// tests do not depend on each other's writes), a read-only target, and a
// second plain target for the portal mount.
const (
	mountData   = "iqn.2026-11.lab:mount"
	mountRO     = "iqn.2026-11.lab:mount-ro"
	mountSecond = "iqn.2026-11.lab:mount-second"
)

// Roles of the data target's LUNs: the LUN number is lab.firstLUN + role.
const (
	roleRead      = iota // checksums, stats.json, the --read-only mount
	roleDD               // dd seek=3, then a fresh mount
	roleUnaligned        // writes of odd sizes at odd offsets
	roleFIO              // fio --verify=crc32c
	roleExt4             // mkfs.ext4 and e2fsck
	roleTerm             // SIGTERM during a stream of writes
	roleThrough          // --write-through, timer write-back, fusermount3 -u
	numRoles
)

// mountRoleSpecs are the sizes and contents of the data target's LUNs.
var mountRoleSpecs = [numRoles]LUNSpec{
	roleRead:      {Size: 24 << 20, Fill: "random"},
	roleDD:        {Size: 16 << 20, Fill: "random"},
	roleUnaligned: {Size: 16 << 20, Fill: "random"},
	roleFIO:       {Size: 32 << 20},
	roleExt4:      {Size: 64 << 20},
	roleTerm:      {Size: 64 << 20},
	roleThrough:   {Size: 8 << 20, Fill: "random"},
}

func mountLabSpecs(lab labSetup) []TargetSpec {
	data := TargetSpec{Name: mountData}
	for role, spec := range mountRoleSpecs {
		spec.LUN = lab.firstLUN + role
		data.LUNs = append(data.LUNs, spec)
	}
	return []TargetSpec{
		data,
		{Name: mountRO, LUNs: []LUNSpec{{LUN: lab.firstLUN, Size: 4 << 20, Fill: "random", ReadOnly: true}}},
		{Name: mountSecond, LUNs: []LUNSpec{{LUN: lab.firstLUN, Size: 2 << 20, Fill: "random"}}},
	}
}

// TestMount runs the file-level tests of issue 3 over a real FUSE mount of
// each target implementation.
func TestMount(t *testing.T) {
	RequireFUSE(t)
	for _, lab := range labs {
		t.Run(lab.kind, func(t *testing.T) {
			bin := iscsifsBinary(t)
			tg := lab.start(t, mountLabSpecs(lab)...)
			ml := &mountLab{lab: lab, tg: tg, bin: bin}
			// The main mount: the data target, default settings.
			ml.main = startMount(t, bin, ml.targetURL(mountData))

			t.Run("files", ml.testFiles)
			t.Run("sha256", ml.testSHA256)
			t.Run("status", ml.testStatusFiles)
			t.Run("dd", ml.testDD)
			t.Run("unaligned", ml.testUnaligned)
			t.Run("fio", ml.testFIO)
			t.Run("ext4", ml.testExt4)
			t.Run("read-only", ml.testReadOnly)
			t.Run("portal", ml.testPortal)
			t.Run("sigterm", ml.testSIGTERM)
			t.Run("write-through", ml.testWriteThrough)
			t.Run("fsync", ml.testFsyncDurable)
			t.Run("timer", ml.testTimerWriteback)
			t.Run("unmount", ml.testUnmountFromOutside)
			t.Run("busy", ml.testBusyMountpoint)
		})
	}
}

type mountLab struct {
	lab  labSetup
	tg   *Target
	bin  string
	main *mountProc
}

func (ml *mountLab) lun(role int) int { return ml.lab.firstLUN + role }

func (ml *mountLab) targetURL(iqn string) string { return "iscsi://" + ml.tg.Portal + "/" + iqn }

func (ml *mountLab) backing(role int) string { return ml.tg.BackingFile(mountData, ml.lun(role)) }

// file is the path of a data LUN's file in the main mount.
func (ml *mountLab) file(role int) string { return ml.main.path(fmt.Sprintf("lun%d", ml.lun(role))) }

// testFiles: one file per direct-access LUN, named by its number, sized by its
// capacity; tgt's controller LUN 0 is no file.
func (ml *mountLab) testFiles(t *testing.T) {
	entries, err := os.ReadDir(ml.main.dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := []string{".iscsifs"}
	for role := range numRoles {
		want = append(want, fmt.Sprintf("lun%d", ml.lun(role)))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("mount holds %q, want %q", got, want)
	}
	for role, spec := range mountRoleSpecs {
		fi, err := os.Stat(ml.file(role))
		if err != nil {
			t.Error(err)
			continue
		}
		if fi.Size() != spec.Size || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: size %d mode %v, want size %d and -rw-r--r--", fi.Name(), fi.Size(), fi.Mode(), spec.Size)
		}
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(ml.main.dir, &sfs); err != nil {
		t.Errorf("statfs: %v", err)
	}
}

// testSHA256: every mounted file reads back exactly its backing file.
func (ml *mountLab) testSHA256(t *testing.T) {
	for role := range numRoles {
		got, want := mntFileSHA256(t, ml.file(role)), mntFileSHA256(t, ml.backing(role))
		if got != want {
			t.Errorf("lun%d: sha256 %s through the mount, %s in the backing file", ml.lun(role), got, want)
		}
	}
	// Those reads were answered by the serving loop itself, not go-fuse:
	// this is that path's check against a real target.
	if sv := ml.main.status(t).Serving; sv.ReadsByLoop == 0 || sv.Requests < sv.ReadsByLoop {
		t.Errorf("status.json serving: %d reads answered by the loop of %d requests; want some", sv.ReadsByLoop, sv.Requests)
	}
}

// testStatusFiles: stats.json counts device reads (nothing for a re-read of
// cached data), status.json describes the session and the LUNs.
func (ml *mountLab) testStatusFiles(t *testing.T) {
	path := fmt.Sprintf("lun%d", ml.lun(roleRead))
	buf := make([]byte, 1<<20)
	mntReadAt(t, ml.main.path(path), buf, 5<<20) // cached by now (testSHA256), or now
	before := ml.main.stats(t)[path]
	for range 3 {
		mntReadAt(t, ml.main.path(path), buf, 5<<20)
	}
	after := ml.main.stats(t)[path]
	if after.DeviceReads != before.DeviceReads || after.Hits < before.Hits+3 {
		t.Errorf("re-reading a cached MiB: device reads %d -> %d, hits %d -> %d; want no device read and 3+ hits",
			before.DeviceReads, after.DeviceReads, before.Hits, after.Hits)
	}
	if after.LatencyP50 <= 0 {
		t.Errorf("stats.json has no command latency after reading: %+v", after)
	}
	if after.QueueDepth != 64 { // --queue-depth's default; the target never answered TASK SET FULL
		t.Errorf("session_queue_depth %d, want 64", after.QueueDepth)
	}
	if after.Reads < before.Reads+3 {
		t.Errorf("reads %d -> %d after 3 reads", before.Reads, after.Reads)
	}
	// Rates cover the last full second: busy while reading, zero once idle.
	for end := time.Now().Add(2200 * time.Millisecond); time.Now().Before(end); {
		mntReadAt(t, ml.main.path(path), buf, 5<<20)
	}
	if r := ml.main.stats(t)[path].Rates; r.ReadIOPS < 1 || r.ReadBytesPerSecond < float64(len(buf)) || r.DeviceReadIOPS != 0 {
		t.Errorf("rates while re-reading a cached MiB: %+v", r)
	}
	time.Sleep(2200 * time.Millisecond)
	if r := ml.main.stats(t)[path].Rates; r.ReadIOPS != 0 {
		t.Errorf("rates when idle: %+v", r)
	}
	if after.DeviceReadBytes < mountRoleSpecs[roleRead].Size || after.Target != mountData || after.LUN != uint64(ml.lun(roleRead)) {
		t.Errorf("stats of %s after reading it all: %+v", path, after)
	}

	st := ml.main.status(t)
	if len(st.Targets) != 1 {
		t.Fatalf("status.json has %d targets, want 1: %+v", len(st.Targets), st)
	}
	tgt := st.Targets[0]
	if tgt.Target != mountData || tgt.Portal != ml.tg.Portal || tgt.Params.MaxBurstLength <= 0 || tgt.Params.FirstBurstLength <= 0 {
		t.Errorf("status.json target: %+v", tgt)
	}
	if len(tgt.LUNs) != int(numRoles) {
		t.Fatalf("status.json lists %d LUNs, want %d: %+v", len(tgt.LUNs), numRoles, tgt.LUNs)
	}
	for role, l := range tgt.LUNs {
		if l.LUN != uint64(ml.lun(role)) || l.Path != fmt.Sprintf("lun%d", l.LUN) || l.Size != mountRoleSpecs[role].Size ||
			l.BlockSize != 512 || l.ReadOnly || l.Serial == "" {
			t.Errorf("status.json LUN %d: %+v", role, l)
		}
	}
}

// testDD: dd into the file at 3 MiB with fsync lands in the backing file, and
// a fresh mount reads it back.
func (ml *mountLab) testDD(t *testing.T) {
	data := mntRandomBytes(5 << 20)
	src := filepath.Join(t.TempDir(), "random.bin")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	mntRunTool(t, 2*time.Minute, "dd", "if="+src, "of="+ml.file(roleDD), "bs=1M", "seek=3", "conv=notrunc,fsync", "status=none")
	const off = 3 << 20
	if got := mntReadFileAt(t, ml.backing(roleDD), len(data), off); !bytes.Equal(got, data) {
		t.Errorf("backing file at %d differs from what dd wrote (first difference at +%d)", off, mntFirstDiff(got, data))
	}
	// The whole file: what the mount shows is what the target has.
	if got, want := mntFileSHA256(t, ml.file(roleDD)), mntFileSHA256(t, ml.backing(roleDD)); got != want {
		t.Errorf("after dd: sha256 %s through the mount, %s in the backing file", got, want)
	}

	fresh := startMount(t, ml.bin, ml.tg.URL(mountData, ml.lun(roleDD)))
	name := fmt.Sprintf("lun%d", ml.lun(roleDD))
	if got := mntReadFileAt(t, fresh.path(name), len(data), off); !bytes.Equal(got, data) {
		t.Errorf("a fresh mount reads other data at %d (first difference at +%d)", off, mntFirstDiff(got, data))
	}
	if entries, _ := os.ReadDir(fresh.dir); len(entries) != 2 {
		t.Errorf("a LUN URL mount holds %d entries, want lun%d and .iscsifs", len(entries), ml.lun(roleDD))
	}
	fresh.term(t)
}

// testUnaligned: writes of odd sizes at odd offsets read back exactly, before
// and after fsync, and land in the backing file with fsync.
func (ml *mountLab) testUnaligned(t *testing.T) {
	size := mountRoleSpecs[roleUnaligned].Size
	model, err := os.ReadFile(ml.backing(roleUnaligned))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(ml.file(roleUnaligned), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	writes := []struct {
		off int64
		n   int
	}{
		{777, 1000},
		{0, 1},
		{1, 511},
		{4095, 4097},
		{262100, 300000},        // across a 256 KiB cache block
		{3<<20 + 13, 1<<20 + 1}, // more than one FUSE request
		{800, 100},              // inside the first one
		{size - 7, 7},           // the last bytes
	}
	for _, w := range writes {
		data := mntRandomBytes(w.n)
		if n, err := f.WriteAt(data, w.off); n != w.n || err != nil {
			t.Fatalf("write %d bytes at %d: %d, %v", w.n, w.off, n, err)
		}
		copy(model[w.off:], data)
		// Read back at once, through another descriptor.
		if got := mntReadFileAt(t, ml.file(roleUnaligned), w.n+20, max(0, w.off-10)); !bytes.Equal(got, model[max(0, w.off-10):max(0, w.off-10)+int64(len(got))]) {
			t.Errorf("read back of %d bytes at %d differs", w.n, w.off)
		}
	}
	// A write that crosses the end is cut short there, then ENOSPC (a disk's behaviour).
	// (os.File.WriteAt would retry the rest and report 0 bytes.)
	if n, err := syscall.Pwrite(int(f.Fd()), make([]byte, 10), size-5); n != 5 || err != nil {
		t.Errorf("write of 10 bytes at size-5: %d, %v; want 5", n, err)
	}
	if n, err := syscall.Pwrite(int(f.Fd()), make([]byte, 5), size); n > 0 || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write at the end: %d, %v; want ENOSPC", n, err)
	}
	copy(model[size-5:], make([]byte, 5))
	if got := mntFileSHA256(t, ml.file(roleUnaligned)); got != mntSHA256Hex(model) {
		t.Errorf("the file through the mount differs from the expected content before fsync")
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	got, err := os.ReadFile(ml.backing(roleUnaligned))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Errorf("after fsync the backing file differs from the expected content at %d", mntFirstDiff(got, model))
	}
}

// testFIO: fio random writes of 4 jobs with crc32c verification, through
// libaio with O_DIRECT so that many requests are in flight at once.
func (ml *mountLab) testFIO(t *testing.T) {
	fio := Tool(t, "fio")
	size := mountRoleSpecs[roleFIO].Size
	const jobs = 4
	region := size / jobs
	out := filepath.Join(t.TempDir(), "fio.json")
	args := []string{
		"--name=verify", "--filename=" + ml.file(roleFIO),
		"--rw=randwrite", "--bsrange=4k-128k", "--ioengine=libaio", "--iodepth=8", "--direct=1",
		fmt.Sprint("--numjobs=", jobs), fmt.Sprint("--size=", region), fmt.Sprint("--offset_increment=", region),
		"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_dump=0",
		"--group_reporting=0", "--output-format=json", "--output=" + out,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, fio, args...)
	cmd.Dir = t.TempDir() // fio leaves its verify state files in the working directory
	combined, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("fio: %v\n%s", err, combined)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// fio may put warnings before the JSON document ("fio: multiple writers
	// may overwrite blocks that belong to other jobs": they do not, thanks to
	// offset_increment).
	if i := bytes.Index(raw, []byte("\n{")); i >= 0 && !bytes.HasPrefix(raw, []byte("{")) {
		raw = raw[i+1:]
	}
	var res struct {
		Jobs []struct {
			Name  string `json:"jobname"`
			Error int    `json:"error"`
			Read  struct {
				Bytes int64 `json:"io_bytes"`
			} `json:"read"`
			Write struct {
				Bytes int64 `json:"io_bytes"`
			} `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("fio JSON: %v\n%s", err, raw)
	}
	if len(res.Jobs) != jobs {
		t.Fatalf("fio reported %d jobs, want %d\n%s", len(res.Jobs), jobs, raw)
	}
	for i, j := range res.Jobs {
		// Every byte of the job's region written once (random map) and read
		// back by the verify phase.
		if j.Error != 0 || j.Write.Bytes != region || j.Read.Bytes != region {
			t.Errorf("fio job %d: error %d, wrote %d and verified %d bytes; want 0, %d, %d", i, j.Error, j.Write.Bytes, j.Read.Bytes, region, region)
		}
	}
}

// testExt4: mkfs.ext4 on the file, a file written into it with debugfs, and
// e2fsck -fn finds nothing wrong, through the mount and in the backing file.
func (ml *mountLab) testExt4(t *testing.T) {
	file := ml.file(roleExt4)
	mntRunTool(t, 2*time.Minute, "mkfs.ext4", "-F", "-q", file)
	payload := filepath.Join(t.TempDir(), "payload")
	data := mntRandomBytes(3<<20 + 123)
	if err := os.WriteFile(payload, data, 0o644); err != nil {
		t.Fatal(err)
	}
	mntRunTool(t, time.Minute, "debugfs", "-w", "-R", "write "+payload+" payload", file)
	mntRunTool(t, 2*time.Minute, "e2fsck", "-fn", file)
	dump := filepath.Join(t.TempDir(), "dump")
	mntRunTool(t, time.Minute, "debugfs", "-R", "dump payload "+dump, file)
	if got, err := os.ReadFile(dump); err != nil || !bytes.Equal(got, data) {
		t.Errorf("the file written into the ext4 reads back differently (%v)", err)
	}
	// debugfs and e2fsck close the file, which writes back; fsync makes it durable.
	mntSyncFile(t, file)
	mntRunTool(t, 2*time.Minute, "e2fsck", "-fn", ml.backing(roleExt4))
}

// testReadOnly: a write-protected LUN and a --read-only mount refuse writes
// with EROFS and serve reads.
func (ml *mountLab) testReadOnly(t *testing.T) {
	cases := []struct {
		name    string
		url     string
		flags   []string
		file    string
		backing string
	}{
		{"ro LUN", ml.tg.URL(mountRO, ml.lab.firstLUN), nil, fmt.Sprintf("lun%d", ml.lab.firstLUN), ml.tg.BackingFile(mountRO, ml.lab.firstLUN)},
		{"--read-only", ml.targetURL(mountData), []string{"--read-only"}, fmt.Sprintf("lun%d", ml.lun(roleRead)), ml.backing(roleRead)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := startMount(t, ml.bin, c.url, c.flags...)
			path := m.path(c.file)
			for _, flag := range []int{os.O_WRONLY, os.O_RDWR} {
				f, err := os.OpenFile(path, flag, 0)
				if err == nil {
					f.Close()
				}
				if !errors.Is(err, syscall.EROFS) {
					t.Errorf("open for writing (%#x): %v, want EROFS", flag, err)
				}
			}
			if err := os.Truncate(path, 0); !errors.Is(err, syscall.EROFS) {
				t.Errorf("truncate: %v, want EROFS", err)
			}
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o444 {
				t.Errorf("stat: %v, %v; want mode 0444", fi, err)
			}
			if got, want := mntFileSHA256(t, path), mntFileSHA256(t, c.backing); got != want {
				t.Errorf("read: sha256 %s, backing file %s", got, want)
			}
			st := m.status(t)
			if len(st.Targets) != 1 || len(st.Targets[0].LUNs) == 0 || !st.Targets[0].LUNs[0].ReadOnly {
				t.Errorf("status.json does not say read-only: %+v", st)
			}
			for name, s := range m.stats(t) {
				if s.DeviceWrites != 0 {
					t.Errorf("%s: %d device writes on a read-only mount", name, s.DeviceWrites)
				}
			}
			m.term(t)
		})
	}
}

// targetStates maps each target of status.json to its state.
func (m *mountProc) targetStates(t testing.TB) map[string]string {
	t.Helper()
	states := map[string]string{}
	for _, tg := range m.status(t).Targets {
		states[tg.Target] = tg.State
	}
	return states
}

// testPortal: a portal URL mounts every target in a directory of its own,
// logging in to a target only when its directory is first used.
func (ml *mountLab) testPortal(t *testing.T) {
	m := startMount(t, ml.bin, ml.tg.PortalURL())
	specs := mountLabSpecs(ml.lab)
	if _, err := os.ReadDir(m.dir); err != nil {
		t.Fatal(err)
	}
	states := m.targetStates(t)
	for _, spec := range specs {
		if states[spec.Name] != "not-logged-in" {
			t.Errorf("before first use, %s is %q, want not-logged-in (states %v)", spec.Name, states[spec.Name], states)
		}
	}
	if _, err := os.Stat(m.path(filepath.Join(mountSecond, fmt.Sprintf("lun%d", ml.lab.firstLUN)))); err != nil {
		t.Fatal(err)
	}
	states = m.targetStates(t)
	for _, spec := range specs {
		want := "not-logged-in"
		if spec.Name == mountSecond {
			want = "logged-in"
		}
		if states[spec.Name] != want {
			t.Errorf("after using %s only, %s is %q, want %q", mountSecond, spec.Name, states[spec.Name], want)
		}
	}
	want := map[string][]string{".iscsifs": {"stats.json", "status.json"}}
	for _, spec := range specs {
		for _, l := range spec.LUNs {
			want[spec.Name] = append(want[spec.Name], fmt.Sprintf("lun%d", l.LUN))
		}
	}
	got := map[string][]string{}
	top, err := os.ReadDir(m.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range top {
		if !d.IsDir() {
			t.Errorf("%s at the top of a portal mount is not a directory", d.Name())
			continue
		}
		files, err := os.ReadDir(m.path(d.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got[d.Name()] = []string{}
		for _, f := range files {
			got[d.Name()] = append(got[d.Name()], f.Name())
		}
	}
	for k := range want {
		slices.SortFunc(want[k], func(a, b string) int { return mntNaturalCmp(a, b) })
		slices.SortFunc(got[k], func(a, b string) int { return mntNaturalCmp(a, b) })
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("portal mount holds\n%v\nwant\n%v", got, want)
	}
	path := filepath.Join(mountSecond, fmt.Sprintf("lun%d", ml.lab.firstLUN))
	if got, want := mntFileSHA256(t, m.path(path)), mntFileSHA256(t, ml.tg.BackingFile(mountSecond, ml.lab.firstLUN)); got != want {
		t.Errorf("%s: sha256 %s, backing file %s", path, got, want)
	}
	if st := m.status(t); len(st.Targets) != 3 {
		t.Errorf("status.json of a portal mount has %d targets, want 3", len(st.Targets))
	}
	for name, state := range m.targetStates(t) {
		if state != "logged-in" {
			t.Errorf("after listing every directory, %s is %q", name, state)
		}
	}
	if _, ok := m.stats(t)[path]; !ok {
		t.Errorf("stats.json of a portal mount has no %s", path)
	}
	m.term(t)
}

// testSIGTERM: SIGTERM while a writer streams writes of odd sizes, in order,
// without fsync (and with no timer write-back). What was written before the
// signal reaches the target while the writer still holds the file open, so
// the signal's flush did it, not close(2); the writer goes on for a while,
// then closes; the mount process then exits 0 and the backing file holds
// every byte that write(2) accepted.
func (ml *mountLab) testSIGTERM(t *testing.T) {
	m := startMount(t, ml.bin, ml.tg.URL(mountData, ml.lun(roleTerm)), "--flush-interval", "1h")
	name := fmt.Sprintf("lun%d", ml.lun(roleTerm))
	size := mountRoleSpecs[roleTerm].Size
	model := make([]byte, size) // the LUN starts zeroed
	f, err := os.OpenFile(m.path(name), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		mu      sync.Mutex
		written int64 // [0, written) is written
		wErr    error
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		rng := rand.New(rand.NewPCG(1, 2))
		for off := int64(0); off < size; {
			select {
			case <-stop:
				return
			default:
			}
			// 1 byte to 300 KiB: most writes start and end inside a sector.
			n := min(size-off, 1+rng.Int64N(300<<10))
			if rng.IntN(4) == 0 {
				n = min(size-off, 1+rng.Int64N(1000))
			}
			data := mntRandomBytes(int(n))
			k, err := f.WriteAt(data, off)
			mu.Lock()
			copy(model[off:], data[:k])
			off += int64(k)
			written = off
			if err != nil {
				wErr = err
			}
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	progress := func() (int64, error) {
		mu.Lock()
		defer mu.Unlock()
		return written, wErr
	}
	mntWaitFor(t, 30*time.Second, "4 MiB written", func() bool {
		n, err := progress()
		return n >= 4<<20 || err != nil
	})
	if dirty := m.stats(t)[name].DirtyBytes; dirty == 0 {
		t.Errorf("no dirty data before SIGTERM: the test would prove nothing")
	}
	before, _ := progress()
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // writes go on while the mount flushes
	close(stop)
	<-done
	if wErr != nil {
		t.Errorf("a write failed after %d bytes: %v", written, wErr)
	}
	// The file is still open: only the flush on SIGTERM can have written
	// back what was written before the signal.
	var got []byte
	mntWaitFor(t, 30*time.Second, "the data written before SIGTERM in the backing file", func() bool {
		got = mntReadFileAt(t, ml.backing(roleTerm), int(before), 0)
		return bytes.Equal(got, model[:before])
	})
	select {
	case <-m.done:
		t.Errorf("the mount process exited (%d) while a file was open", m.code)
	default:
	}
	if err := f.Close(); err != nil {
		t.Errorf("close after SIGTERM: %v", err)
	}
	if code := m.wait(t, time.Minute); code != 0 {
		t.Errorf("mount exited %d after SIGTERM", code)
	}
	got, err = os.ReadFile(ml.backing(roleTerm))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Errorf("after exit the backing file lacks written data (first difference at %d; %d bytes written)", mntFirstDiff(got, model), written)
	}
	t.Logf("%d bytes written before SIGTERM, %d in all", before, written)
}

// testWriteThrough: with --write-through a write is on the target when
// write(2) returns; without it (and no timer) it is not yet, which shows that
// the check can tell the difference.
func (ml *mountLab) testWriteThrough(t *testing.T) {
	for _, c := range []struct {
		name    string
		flags   []string
		durable bool
	}{
		{"write-through", []string{"--write-through", "--flush-interval", "1h"}, true},
		{"write-back", []string{"--flush-interval", "1h"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := startMount(t, ml.bin, ml.tg.URL(mountData, ml.lun(roleThrough)), c.flags...)
			name := fmt.Sprintf("lun%d", ml.lun(roleThrough))
			f, err := os.OpenFile(m.path(name), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, w := range []struct {
				off int64
				n   int
			}{{4096, 4096}, {777, 1000}, {1<<20 + 5, 300 << 10}} {
				data := mntRandomBytes(w.n)
				if _, err := f.WriteAt(data, w.off); err != nil {
					t.Fatal(err)
				}
				onTarget := bytes.Equal(mntReadFileAt(t, ml.backing(roleThrough), w.n, w.off), data)
				if onTarget != c.durable {
					t.Errorf("%d bytes at %d: in the backing file right after write(2): %v, want %v", w.n, w.off, onTarget, c.durable)
				}
			}
			if dirty := m.stats(t)[name].DirtyBytes; (dirty == 0) != c.durable {
				t.Errorf("dirty bytes %d after the writes", dirty)
			}
			if err := f.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
			m.term(t)
		})
	}
}

// testFsyncDurable: what fsync and fdatasync cover is in the backing file
// when they return, and how it got there follows the target: tgt offers
// FORCE UNIT ACCESS (MODE SENSE DPOFUA), so a small fsync is one WRITE with
// FUA and no SYNCHRONIZE CACHE; istgt does not (DPOFUA 0), so every fsync
// after a write sends SYNCHRONIZE CACHE. A large fsync (over 1 MiB) always
// ends with SYNCHRONIZE CACHE, and an fsync with nothing written sends
// nothing.
func (ml *mountLab) testFsyncDurable(t *testing.T) {
	m := startMount(t, ml.bin, ml.tg.URL(mountData, ml.lun(roleThrough)), "--flush-interval", "1h")
	name := fmt.Sprintf("lun%d", ml.lun(roleThrough))
	model, err := os.ReadFile(ml.backing(roleThrough))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(m.path(name), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fua := ml.lab.kind == "tgt"
	counters := func() (fuaWrites, syncs, skipped uint64) {
		st := m.status(t)
		if len(st.Targets) != 1 {
			t.Fatalf("status.json has %d targets, want 1", len(st.Targets))
		}
		s := st.Targets[0].Session
		return s.FUAWrites, s.SyncsSent, s.SyncsSkipped
	}
	for i, c := range []struct {
		off       int64
		n         int
		datasync  bool
		large     bool // over 1 MiB: plain WRITEs and SYNCHRONIZE CACHE
		nothingIn bool // no write before the fsync
	}{
		{off: 4096, n: 4096},
		{off: 777, n: 1000, datasync: true},
		{off: 2 << 20, n: 64 << 10},
		{nothingIn: true},
		{off: 3 << 20, n: 2 << 20, large: true},
		{off: 100 << 10, n: 4096, datasync: true},
	} {
		fua0, syncs0, skipped0 := counters()
		if !c.nothingIn {
			data := mntRandomBytes(c.n)
			if _, err := f.WriteAt(data, c.off); err != nil {
				t.Fatal(err)
			}
			copy(model[c.off:], data)
		}
		if c.datasync {
			err = syscall.Fdatasync(int(f.Fd()))
		} else {
			err = f.Sync()
		}
		if err != nil {
			t.Fatalf("fsync %d: %v", i, err)
		}
		if got, _ := os.ReadFile(ml.backing(roleThrough)); !bytes.Equal(got, model) {
			t.Fatalf("fsync %d: the backing file differs at %d", i, mntFirstDiff(got, model))
		}
		fua1, syncs1, skipped1 := counters()
		gotFUA, gotSyncs, gotSkipped := fua1-fua0, syncs1-syncs0, skipped1-skipped0
		switch {
		case c.nothingIn:
			if gotFUA != 0 || gotSyncs != 0 || gotSkipped == 0 {
				t.Errorf("fsync %d, nothing written: %d FUA writes, %d SYNCHRONIZE CACHE, %d skipped; want 0, 0, >0", i, gotFUA, gotSyncs, gotSkipped)
			}
		case fua && !c.large:
			if gotFUA == 0 || gotSyncs != 0 {
				t.Errorf("fsync %d (%d bytes): %d FUA writes and %d SYNCHRONIZE CACHE; want FUA writes only", i, c.n, gotFUA, gotSyncs)
			}
		default:
			if gotFUA != 0 || gotSyncs != 1 {
				t.Errorf("fsync %d (%d bytes): %d FUA writes and %d SYNCHRONIZE CACHE; want 0 and 1", i, c.n, gotFUA, gotSyncs)
			}
		}
	}
	fuaN, syncsN, skippedN := counters()
	want := fmt.Sprintf("syncs: %d SYNCHRONIZE CACHE sent, %d not needed; %d WRITEs with FUA", syncsN, skippedN, fuaN)
	if out := runCLI(t, nil, "status", m.dir); !strings.Contains(out.stdout, want) {
		t.Errorf("iscsifs status does not say %q:\n%s", want, out.stdout)
	}
	if err := f.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	m.term(t)
}

// testTimerWriteback: without fsync or close, written data reaches the target
// once the flush interval has passed.
func (ml *mountLab) testTimerWriteback(t *testing.T) {
	m := startMount(t, ml.bin, ml.tg.URL(mountData, ml.lun(roleThrough)), "--flush-interval", "200ms")
	name := fmt.Sprintf("lun%d", ml.lun(roleThrough))
	f, err := os.OpenFile(m.path(name), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := mntRandomBytes(100<<10 + 7)
	const off = 3<<20 + 511
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	mntWaitFor(t, 10*time.Second, "the timer's write-back", func() bool {
		return bytes.Equal(mntReadFileAt(t, ml.backing(roleThrough), len(data), off), data)
	})
	if dirty := m.stats(t)[name].DirtyBytes; dirty != 0 {
		t.Errorf("%d dirty bytes after the write-back", dirty)
	}
	if err := f.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	m.term(t)
}

// testUnmountFromOutside: fusermount3 -u makes the mount process flush, log
// out and exit 0.
func (ml *mountLab) testUnmountFromOutside(t *testing.T) {
	m := startMount(t, ml.bin, ml.tg.URL(mountData, ml.lun(roleThrough)), "--flush-interval", "1h")
	name := fmt.Sprintf("lun%d", ml.lun(roleThrough))
	data := mntRandomBytes(64<<10 + 3)
	const off = 2<<20 + 1
	f, err := os.OpenFile(m.path(name), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	mntRunTool(t, 30*time.Second, "fusermount3", "-u", m.dir)
	if code := m.wait(t, time.Minute); code != 0 {
		t.Errorf("mount exited %d after fusermount3 -u", code)
	}
	if !strings.Contains(m.output(), "unmounted from outside") {
		t.Errorf("no log line about the unmount from outside:\n%s", m.output())
	}
	if got := mntReadFileAt(t, ml.backing(roleThrough), len(data), off); !bytes.Equal(got, data) {
		t.Errorf("data written before fusermount3 -u is not in the backing file")
	}
	if mounted, err := mntIsMounted(m.dir); err != nil || mounted {
		t.Errorf("%s still mounted after the process exited (%v)", m.dir, err)
	}
}

// testBusyMountpoint: mounting over the main mount fails at once, with one
// line that says why, and leaves the main mount working.
func (ml *mountLab) testBusyMountpoint(t *testing.T) {
	// The mountpoint is checked before the login: with a dead portal the
	// error is still about the mountpoint.
	for _, url := range []string{ml.targetURL(mountData), "iscsi://127.0.0.1:1/" + mountData} {
		r := runCLI(t, nil, "mount", url, ml.main.dir)
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		if r.code == 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "iscsifs: ") || !strings.Contains(lines[0], "busy") {
			t.Errorf("second mount of %s on %s: exit %d, stderr:\n%s\nwant non-zero and one line saying the mountpoint is busy", url, ml.main.dir, r.code, r.stderr)
		}
	}
	if _, err := os.Stat(ml.file(roleRead)); err != nil {
		t.Errorf("the first mount is gone after a failed second mount: %v", err)
	}
	// The mount that serves everything else still ends cleanly.
	ml.main.term(t)
}

// TestMountAcceptance is issue 3's acceptance on a 1 GiB tgt LUN: dd reads it
// all with the right checksum; a re-read of a range that fits in the cache
// costs no device read; dd with fsync writes land on the target; the peak RSS
// of a mount with a 128 MiB cache that reads the LUN twice stays under 200 MiB.
//
// It uses a binary built without -race even under -race: the race detector
// multiplies memory use (the RSS bound would measure the detector) and makes
// reading 1 GiB several times slower. The race-checked binary runs the same
// code paths in TestMount.
func TestMountAcceptance(t *testing.T) {
	RequireFUSE(t)
	const (
		size    = 1 << 30
		rssMax  = 200 << 20
		rereadN = 64 << 20
	)
	bin := iscsifsBinaryNoRace(t)
	tg := StartTGT(t, TargetSpec{Name: mountData, LUNs: []LUNSpec{{LUN: 1, Size: size, Fill: "random"}}})
	backing := tg.BackingFile(mountData, 1)
	wantSum := mntFileSHA256(t, backing)
	m := startMount(t, bin, tg.URL(mountData, 1), "--cache-size", "128MiB")
	file := m.path("lun1")

	// Pass 1 checks the content (dd into sha256 in this process), pass 2 is
	// the plain dd of=/dev/null.
	sum, rate := mntDDRead(t, file, true)
	t.Logf("pass 1: dd if=lun1 bs=1M | sha256: %s", rate)
	if sum != wantSum {
		t.Errorf("pass 1: sha256 %s, backing file %s", sum, wantSum)
	}
	_, rate = mntDDRead(t, file, false)
	t.Logf("pass 2: dd if=lun1 of=/dev/null bs=1M: %s", rate)
	hwm := mntVMHWM(t, m.cmd.Process.Pid)
	t.Logf("VmHWM after reading 1 GiB twice with --cache-size 128MiB: %d MiB", hwm>>20)
	if hwm >= rssMax {
		t.Errorf("peak RSS %d MiB, want < %d MiB", hwm>>20, rssMax>>20)
	}

	// The last 64 MiB: read once (cached, if the passes left it out), then
	// again: the second time nothing reaches the network.
	buf := make([]byte, rereadN)
	mntReadAt(t, file, buf, size-rereadN)
	before := m.stats(t)["lun1"]
	mntReadAt(t, file, buf, size-rereadN)
	after := m.stats(t)["lun1"]
	if after.DeviceReads != before.DeviceReads || after.Hits <= before.Hits {
		t.Errorf("re-reading %d MiB that fit in the cache: device reads %d -> %d, hits %d -> %d",
			rereadN>>20, before.DeviceReads, after.DeviceReads, before.Hits, after.Hits)
	}
	if !bytes.Equal(buf, mntReadFileAt(t, backing, rereadN, size-rereadN)) {
		t.Errorf("the re-read range differs from the backing file")
	}

	// Random 4 KiB reads all over the LUN (8 times the cache): right data,
	// and most go around the cache, reading only what was asked.
	const randomN = 2000
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	bf, err := os.Open(backing)
	if err != nil {
		t.Fatal(err)
	}
	before = m.stats(t)["lun1"]
	rng := rand.New(rand.NewPCG(7, 7))
	got, want := make([]byte, 4096), make([]byte, 4096)
	for i := range randomN {
		off := rng.Int64N(size/4096) * 4096
		if _, err := f.ReadAt(got, off); err != nil {
			t.Fatalf("random read %d at %d: %v", i, off, err)
		}
		if _, err := bf.ReadAt(want, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("random read %d at %d differs from the backing file", i, off)
		}
	}
	f.Close()
	bf.Close()
	after = m.stats(t)["lun1"]
	if n := after.UncachedReads - before.UncachedReads; n < randomN/2 {
		t.Errorf("%d of %d random reads went around the cache, want most", n, randomN)
	}
	if n := after.DeviceReadBytes - before.DeviceReadBytes; n > randomN*4096 {
		t.Errorf("%d random 4 KiB reads read %d bytes from the LUN, want at most %d", randomN, n, randomN*4096)
	}

	// dd conv=fsync of twice the cache size into the LUN: on the target when
	// dd returns.
	const wrote, at = 256 << 20, 500 << 20
	data := mntRandomBytes(wrote)
	src := filepath.Join(t.TempDir(), "random.bin")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := mntRunTool(t, 2*time.Minute, "dd", "if="+src, "of="+file, "bs=1M", fmt.Sprint("seek=", at>>20), "conv=notrunc,fsync")
	if r := mntDDRate.FindStringSubmatch(out); r != nil {
		t.Logf("dd of=lun1 bs=1M conv=notrunc,fsync (%d MiB): %s (%s)", wrote>>20, r[2], r[1])
	}
	if got := mntReadFileAt(t, backing, len(data), at); !bytes.Equal(got, data) {
		t.Errorf("dd conv=fsync: the backing file differs at +%d", mntFirstDiff(got, data))
	}
	// Logged, not checked: the bound is the for reads, and writes
	// come close to it (go-fuse's request buffers and the Go heap's growth
	// ahead of a collection add to the 128 MiB of cache blocks).
	t.Logf("VmHWM after writing %d MiB too: %d MiB", wrote>>20, mntVMHWM(t, m.cmd.Process.Pid)>>20)
	m.term(t)
}

// ---- helpers ----

var (
	noRaceOnce sync.Once
	noRacePath string
	noRaceErr  error
)

// iscsifsBinaryNoRace is iscsifsBinary without -race (the same binary when the
// tests do not run with -race).
func iscsifsBinaryNoRace(t testing.TB) string {
	t.Helper()
	if !raceEnabled {
		return iscsifsBinary(t)
	}
	noRaceOnce.Do(func() {
		dir := filepath.Dir(iscsifsBinary(t)) // removed by TestMain
		noRacePath = filepath.Join(dir, "iscsifs-norace")
		cmd := exec.Command("go", "build", "-o", noRacePath, "../cmd/iscsifs")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as `make build`: pure Go
		out, err := cmd.CombinedOutput()
		if err != nil {
			noRaceErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if noRaceErr != nil {
		t.Fatal(noRaceErr)
	}
	return noRacePath
}

// mountProc is one running `iscsifs mount`.
type mountProc struct {
	dir  string // the mountpoint
	cmd  *exec.Cmd
	out  *mntSyncBuffer // stderr: JSON log lines
	done chan struct{}
	code int // exit code, set before done is closed
}

// startMount runs `iscsifs mount [flags] URL DIR` on a new directory under
// t.TempDir() and returns when the mount serves its status files. When the
// test ends the process is killed if still running and the mountpoint is
// lazily unmounted if still mounted, whatever happened.
func startMount(t testing.TB, bin, url string, flags ...string) *mountProc {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"mount", "--log-format", "json", "--log-level", "info"}, flags...)
	args = append(args, url, dir)
	m := &mountProc{dir: dir, cmd: exec.Command(bin, args...), out: &mntSyncBuffer{}, done: make(chan struct{})}
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := m.cmd.Wait()
		m.code = m.cmd.ProcessState.ExitCode()
		if err != nil && m.code == 0 {
			m.code = -1
		}
		close(m.done)
	}()
	t.Cleanup(func() {
		select {
		case <-m.done:
		default:
			m.cmd.Process.Kill()
			<-m.done
		}
		if mounted, _ := mntIsMounted(dir); mounted {
			if out, err := exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput(); err != nil {
				t.Errorf("fusermount3 -u -z %s: %v %s", dir, err, out)
			}
		}
		out := m.output()
		if strings.Contains(out, "WARNING: DATA RACE") || strings.Contains(out, "panic:") || strings.Contains(out, "goroutine ") {
			t.Errorf("iscsifs mount reported a race or a panic:\n%s", out)
		} else if strings.Contains(out, `"component":"go-fuse"`) {
			// go-fuse complains only about things we do wrong (it once
			// logged a failed splice on every 1 MiB read).
			t.Errorf("go-fuse logged warnings:\n%s", mntTail(out, 8<<10))
		} else if t.Failed() {
			t.Logf("iscsifs mount %s output:\n%s", url, mntTail(out, 8<<10))
		}
	})
	status := filepath.Join(dir, ".iscsifs", "status.json")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(status); err == nil {
			return m
		}
		select {
		case <-m.done:
			t.Fatalf("iscsifs mount %s exited %d before serving:\n%s", url, m.code, m.output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("iscsifs mount %s: no %s after 30 s:\n%s", url, status, m.output())
		}
	}
}

func (m *mountProc) path(name string) string { return filepath.Join(m.dir, name) }

func (m *mountProc) output() string { return m.out.String() }

// term stops the mount with SIGTERM (flush, unmount, log out) and expects
// exit status 0.
func (m *mountProc) term(t testing.TB) {
	t.Helper()
	if code := m.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("iscsifs mount exited %d after SIGTERM", code)
	}
}

// stop sends sig and returns the exit code.
func (m *mountProc) stop(t testing.TB, sig syscall.Signal) int {
	t.Helper()
	select {
	case <-m.done:
		return m.code
	default:
	}
	if err := m.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	return m.wait(t, time.Minute)
}

// wait waits for the process to exit and returns its exit code.
func (m *mountProc) wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-m.done:
		return m.code
	case <-time.After(timeout):
		t.Fatalf("iscsifs mount still running after %v:\n%s", timeout, mntTail(m.output(), 8<<10))
		return -1
	}
}

// fileStatsJSON is the part of a file's entry in stats.json the tests read.
type fileStatsJSON struct {
	Target string `json:"target"`
	LUN    uint64 `json:"lun"`
	Reads  int64  `json:"reads"`
	// Of the session's commands.
	LatencyP50 int64 `json:"session_latency_p50_ns"`
	Rates      struct {
		ReadIOPS           float64 `json:"read_iops"`
		ReadBytesPerSecond float64 `json:"read_bytes_per_second"`
		DeviceReadIOPS     float64 `json:"device_read_iops"`
	} `json:"rates"`
	Hits            int64 `json:"hits"`
	Misses          int64 `json:"misses"`
	DeviceReads     int64 `json:"device_reads"`
	DeviceReadBytes int64 `json:"device_read_bytes"`
	UncachedReads   int64 `json:"uncached_reads"`
	QueueDepth      int   `json:"session_queue_depth"`
	DeviceWrites    int64 `json:"device_writes"`
	DirtyBytes      int64 `json:"dirty_bytes"`
}

func (m *mountProc) stats(t testing.TB) map[string]fileStatsJSON {
	t.Helper()
	var st struct {
		Files map[string]fileStatsJSON `json:"files"`
	}
	m.readJSON(t, "stats.json", &st)
	return st.Files
}

type statusJSON struct {
	PID      int  `json:"pid"`
	ReadOnly bool `json:"read_only"`
	Serving  struct {
		Requests    int64 `json:"requests"`
		ReadsByLoop int64 `json:"reads_answered_by_loop"`
	} `json:"serving"`
	Targets []struct {
		Target string `json:"target"`
		Portal string `json:"portal"`
		State  string `json:"state"`
		Params struct {
			MaxBurstLength   int `json:"max_burst_length"`
			FirstBurstLength int `json:"first_burst_length"`
		} `json:"params"`
		Session struct {
			Commands     uint64 `json:"commands"`
			FUAWrites    uint64 `json:"fua_writes"`
			SyncsSent    uint64 `json:"syncs_sent"`
			SyncsSkipped uint64 `json:"syncs_skipped"`
		} `json:"session"`
		Paths []struct {
			Portal   string `json:"portal"`
			State    string `json:"state"`
			Logins   int    `json:"logins"`
			Failures int    `json:"failures"`
			Commands uint64 `json:"commands"` // --multipath
		} `json:"paths"`
		LUNs []struct {
			LUN       uint64 `json:"lun"`
			Path      string `json:"path"`
			Size      int64  `json:"size"`
			BlockSize int    `json:"block_size"`
			ReadOnly  bool   `json:"read_only"`
			Serial    string `json:"serial"`
			Device    string `json:"device"`
			Table     string `json:"partition_table"`
			Parts     []struct {
				Number int    `json:"number"`
				Path   string `json:"path"`
				Start  int64  `json:"start"`
				Size   int64  `json:"size"`
				Type   string `json:"type"`
				Device string `json:"device"`
			} `json:"partitions"`
		} `json:"luns"`
	} `json:"targets"`
}

func (m *mountProc) status(t testing.TB) statusJSON {
	t.Helper()
	var st statusJSON
	m.readJSON(t, "status.json", &st)
	return st
}

func (m *mountProc) readJSON(t testing.TB, name string, v any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(m.dir, ".iscsifs", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, raw)
	}
}

// mntSyncBuffer is a bytes.Buffer that a process writes while the test reads.
type mntSyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *mntSyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *mntSyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func mntTail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "...\n" + s[len(s)-n:]
}

// mntIsMounted reports whether dir is the root of a mount in /proc/self/mountinfo.
func mntIsMounted(dir string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.ReplaceAll(fields[4], `\040`, " ") == dir {
			return true, nil
		}
	}
	return false, sc.Err()
}

// mntRunTool runs a command line and fails the test unless it exits 0.
func mntRunTool(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	path := Tool(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// mntDDRate matches the summary dd prints on stderr, e.g.
// "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 3.2 s, 335 MB/s".
var mntDDRate = regexp.MustCompile(`copied, ([0-9.,]+ s), ([0-9.,]+ [kMG]?B/s)`)

// mntDDRead runs `dd if=file bs=1M`, into sha256 when sum is set (the sum is
// returned) or of=/dev/null, and returns dd's own rate and time.
func mntDDRead(t testing.TB, file string, sum bool) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := []string{"if=" + file, "bs=1M"}
	if !sum {
		args = append(args, "of=/dev/null")
	}
	cmd := exec.CommandContext(ctx, Tool(t, "dd"), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	_, copyErr := io.CopyBuffer(h, stdout, make([]byte, 1<<20))
	if err := cmd.Wait(); err != nil || copyErr != nil {
		t.Fatalf("dd if=%s: %v %v\n%s", file, err, copyErr, stderr.String())
	}
	rate := strings.TrimSpace(stderr.String())
	if m := mntDDRate.FindStringSubmatch(rate); m != nil {
		rate = m[2] + " (" + m[1] + ")"
	}
	return hex.EncodeToString(h.Sum(nil)), rate
}

// mntVMHWM returns the peak resident set size of a process (VmHWM in
// /proc/PID/status) in bytes.
func mntVMHWM(t testing.TB, pid int) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(raw)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM line %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

func mntFileSHA256(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	// 1 MiB reads: one FUSE request each (io.Copy would use 32 KiB).
	if _, err := io.CopyBuffer(h, struct{ io.Reader }{f}, make([]byte, 1<<20)); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func mntSHA256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// mntReadAt fills buf from path at off, failing the test on a short read.
func mntReadAt(t testing.TB, path string, buf []byte, off int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := f.ReadAt(buf, off); n != len(buf) {
		t.Fatalf("read %d bytes of %s at %d: %d, %v", len(buf), path, off, n, err)
	}
}

// mntReadFileAt returns up to n bytes of path at off (fewer at the end).
func mntReadFileAt(t testing.TB, path string, n int, off int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	k, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("read %s at %d: %v", path, off, err)
	}
	return buf[:k]
}

func mntSyncFile(t testing.TB, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", path, err)
	}
}

func mntRandomBytes(n int) []byte {
	b := make([]byte, n)
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(rand.Uint32())
	}
	rand.NewChaCha8(seed).Read(b)
	return b
}

// mntFirstDiff is the first index where a and b differ (or the shorter length).
func mntFirstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// mntNaturalCmp orders "lun2" before "lun10".
func mntNaturalCmp(a, b string) int {
	pa, na := mntSplitNum(a)
	pb, nb := mntSplitNum(b)
	if c := strings.Compare(pa, pb); c != 0 {
		return c
	}
	return na - nb
}

func mntSplitNum(s string) (string, int) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	n, _ := strconv.Atoi(s[i:])
	return s[:i], n
}

func mntWaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMountAbortedConnection: a mount whose FUSE connection is aborted
// through fusectl (how a hung mount is cut off) makes the daemon exit, and
// it takes the dead mount away on its way out: no "Transport endpoint is
// not connected" stays behind.
func TestMountAbortedConnection(t *testing.T) {
	RequireFUSE(t)
	if os.Geteuid() != 0 {
		skipOrFail(t, "aborting a FUSE connection through fusectl needs root")
	}
	const iqn = "iqn.2026-12.lab:aborted"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 16 << 20}}})
	g := newDiskGuard(t)
	m := startMount(t, iscsifsBinary(t), "iscsi://"+tg.Portal+"/"+iqn)
	conn := g.fuse(m.dir)
	if err := os.WriteFile(filepath.Join(fuseConnDir(conn), "abort"), []byte("1"), 0); err != nil {
		t.Fatalf("abort connection %d: %v", conn, err)
	}
	code := m.wait(t, 30*time.Second)
	if code != 0 {
		t.Errorf("exit %d after the connection was aborted:\n%s", code, mntTail(m.output(), 4<<10))
	}
	if e, mounted := guardMountAt(m.dir); mounted {
		t.Errorf("%s is still mounted (%s) after the daemon exited:\n%s", m.dir, e.FSType, mntTail(m.output(), 4<<10))
	}
}
