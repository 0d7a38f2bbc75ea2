package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/iscsifs/iscsifs/integration"
)

type bench struct {
	cfg   config
	tg    *integration.Target
	reg   *registry
	ctx   context.Context
	start time.Time
	// How the peer of figures 9 to 11 attaches its loop device: set by
	// qsdPeer; qsdErr if no way keeps the data.
	qsdDIO *bool
	qsdErr error
	// noted is the second figure of the run in progress (see note).
	noted *float64
	// cpu samples the machine's and tgtd's CPU time around each run.
	cpu func() cpuSample
}

// note records a second figure of the run in progress (figure 8's peak RSS,
// figure 12's p99): contest keeps it with the run's sample in result.noted,
// and drops it with a run it repeats.
func (b *bench) note(v float64) { b.noted = &v }

// contestant is one tool measured in a figure; run returns one sample.
type contestant struct {
	name string
	run  func(ctx context.Context) (float64, error)
}

type result struct {
	name string
	runs []float64
	err  error
	// noted holds each kept run's second figure, if the run noted one.
	noted []float64
	// stealMax is the highest host steal (percent of CPU time) in a run.
	stealMax float64
}

// contest runs every contestant cfg.runs times, alternating: each round
// starts with the next contestant, so that none always runs first.
func (b *bench) contest(fig string, unit string, cs ...contestant) []result {
	res := make([]result, len(cs))
	for i := range cs {
		res[i].name = cs[i].name
	}
	for round := range b.cfg.runs {
		for k := range cs {
			i := (k + round) % len(cs)
			if res[i].err != nil || b.ctx.Err() != nil {
				continue
			}
			kept, err := b.attempts(fig, round, unit, cs[i])
			if err != nil {
				res[i].err = err
				logf("figure %s: %s failed: %v", fig, cs[i].name, err)
				continue
			}
			res[i].runs = append(res[i].runs, kept.value)
			if kept.noted != nil {
				res[i].noted = append(res[i].noted, *kept.noted)
			}
			res[i].stealMax = max(res[i].stealMax, kept.steal)
		}
	}
	if err := b.ctx.Err(); err != nil {
		for i := range res {
			if res[i].err == nil {
				res[i].err = errors.New("interrupted")
			}
		}
	}
	return res
}

// attempt is one run of a contestant.
type attempt struct {
	value float64
	noted *float64
	steal float64 // percent of the machine's CPU time the host took
}

// attempts runs c once, and again while the host stole more than
// cfg.maxSteal percent of the CPU time during the run, at most
// maxStealRepeats more times; it keeps the run the host disturbed least. On
// this shared VM a run can lose a third of its CPU time to other guests and
// come out at half speed, for either tool; repeating it right away keeps
// both tools' samples comparable without giving either an easier slot.
func (b *bench) attempts(fig string, round int, unit string, c contestant) (attempt, error) {
	var best *attempt
	for n := 0; ; n++ {
		b.noted = nil
		before := b.cpu()
		v, err := c.run(b.ctx)
		if err != nil {
			return attempt{}, err
		}
		after := b.cpu()
		a := attempt{value: v, noted: b.noted, steal: after.stealPercent(before)}
		b.noted = nil
		logf("figure %s run %d: %-22s %10.1f %s  (%s)", fig, round+1, c.name, v, unit, after.since(before))
		if best == nil || a.steal < best.steal {
			best = &a
		}
		if b.cfg.maxSteal <= 0 || best.steal <= b.cfg.maxSteal || n == maxStealRepeats || b.ctx.Err() != nil {
			if n > 0 {
				logf("figure %s run %d: %s kept the run with %.0f%% stolen", fig, round+1, c.name, best.steal)
			}
			return *best, nil
		}
		logf("figure %s run %d: %s again: the host took %.0f%% of the CPU time (over %.0f%%)", fig, round+1, c.name, a.steal, b.cfg.maxSteal)
	}
}

// maxStealRepeats bounds the runs attempts repeats, so that a host that
// steals all afternoon costs at most three times the time.
const maxStealRepeats = 2

// lastFigure is the number of the last figure.
const lastFigure = 16

// want reports whether -only selects the figure (e.g. "3b", "12"): it is a
// comma-separated list of terms. A figure's number selects it with all its
// variants ("3" is 3a and 3b), a variant's id only that variant ("3b"), and
// any other term the figures of each of its digits ("125" is 1, 2 and 5;
// "34" is 3a, 3b and 4; "9,10,11" is 9, 10 and 11).
func (b *bench) want(fig string) bool {
	if b.cfg.only == "" {
		return true
	}
	number := strings.TrimRight(fig, "abcdefghijklmnopqrstuvwxyz")
	for term := range strings.SplitSeq(b.cfg.only, ",") {
		term = strings.TrimSpace(term)
		n, err := strconv.Atoi(term)
		switch {
		case term == fig || term == number:
			return true
		case err == nil && n >= 1 && n <= lastFigure, variantID.MatchString(term):
			// another figure
		case len(number) == 1 && strings.Contains(term, number):
			return true
		}
	}
	return false
}

// variantID is the id of a variant of a figure, as 3b.
var variantID = regexp.MustCompile(`^[0-9]+[a-z]$`)

// all runs the figures in order: those of issue 4 (1 to 8), of a file system
// on the disk (9 to 11) and of issue 13 (3b, 12 to 15).
func (b *bench) all() []row {
	var rows []row
	secs := b.cfg.seconds
	null, disk, disk2 := b.tg.URL(nullIQN, 1), b.tg.URL(diskIQN, 1), b.tg.URL(diskIQN, 2)
	if b.want("1") {
		r := b.contest("1", "MB/s",
			contestant{"iscsi-perf", b.perf(null, 32, 256, false, "MB/s")},
			contestant{"iscsifs bench", b.oursBench(null, "seq", "128KiB", 32, "MB/s")})
		rows = append(rows, ratioRows("1", fmt.Sprintf("sequential read 128 KiB, qd 32, null LUN, %d s", secs), "MB/s", r, 1.0)...)
	}
	if b.want("2") {
		r := b.contest("2", "IOPS",
			contestant{"iscsi-perf -r", b.perf(null, 32, 8, true, "IOPS")},
			contestant{"iscsifs bench", b.oursBench(null, "rand", "4KiB", 32, "IOPS")})
		rows = append(rows, ratioRows("2", fmt.Sprintf("random read 4 KiB, qd 32, null LUN, %d s", secs), "IOPS", r, 1.0)...)
	}
	if b.want("3a") {
		rows = append(rows, b.imaging("3a", disk, b.cfg.dir)...)
	}
	if b.want("3b") {
		rows = append(rows, b.imagingDisk(disk)...)
	}
	if b.want("4") {
		rows = append(rows, b.restoring(disk2)...)
	}
	if b.want("5") {
		r := b.contest("5", "MB/s",
			contestant{"qemu-storage-daemon", b.coldRead(b.mountQSD)},
			contestant{"nbdfuse+qemu-nbd", b.coldRead(b.mountNBD)},
			contestant{"iscsifs mount", b.coldRead(b.mountOurs)})
		rows = append(rows, ratioRows("5", "FUSE cold sequential read of 1 GiB, dd bs=1M", "MB/s", r, 1.5)...)
	}
	if b.want("6") {
		r := b.contest("6", "IOPS",
			contestant{"qemu-storage-daemon", b.fioRandRead(b.mountQSD)},
			contestant{"iscsifs mount", b.fioRandRead(b.mountOurs)})
		rows = append(rows, ratioRows("6", fmt.Sprintf("FUSE random read 4 KiB, fio, %d s", secs), "IOPS", r, 1.2)...)
	}
	if b.want("7") {
		r := b.contest("7", "MB/s",
			contestant{"qemu-storage-daemon", b.seqWrite(b.mountQSD)},
			contestant{"iscsifs mount", b.seqWrite(b.mountOurs)})
		rows = append(rows, ratioRows("7", "FUSE sequential write of 512 MiB, dd bs=1M conv=fsync", "MB/s", r, 1.2)...)
	}
	if b.want("8") {
		rows = append(rows, b.warm()...)
	}
	if b.want("9") {
		rows = append(rows, b.fsCopy()...)
	}
	if b.want("10") {
		r := b.contest("10", "IOPS",
			contestant{b.qsdPeer(), b.fsRandWrite(b.attachQSD)},
			contestant{"iscsifs --attach", b.fsRandWrite(b.attachOurs)})
		rows = append(rows, ratioRows("10", fmt.Sprintf("ext4 on loop: fio 4 KiB rand write, fsync each, %d s", secs), "IOPS", r, 1.2)...)
	}
	if b.want("11") {
		r := b.contest("11", "IOPS",
			contestant{qsdName, b.fsRandRead(b.attachQSD, b.attachQSDDirect)},
			contestant{"iscsifs --attach", b.fsRandRead(b.attachOurs, b.attachOurs)})
		rows = append(rows, ratioRows("11", fmt.Sprintf("ext4 on loop: fio 4 KiB O_DIRECT rand read, cold, %d s", secs), "IOPS", r, 1.2)...)
	}
	if b.want("12") {
		rows = append(rows, b.directLatency()...)
	}
	if b.want("13") {
		r := b.contest("13", "IOPS",
			contestant{"qemu-storage-daemon", b.directFio(b.mountQSD, "randread", 8)},
			contestant{"iscsifs mount", b.directFio(b.mountOursCold, "randread", 8)})
		rows = append(rows, ratioRows("13", fmt.Sprintf("FUSE O_DIRECT rand read 4 KiB, psync, 8 jobs, %d s", secs), "IOPS", r, 1.2)...)
	}
	if b.want("14") {
		for _, jobs := range []int{1, 8} {
			r := b.contest("14", "IOPS",
				contestant{"qemu-storage-daemon", b.directFio(b.mountQSD, "randwrite", jobs)},
				contestant{"iscsifs mount", b.directFio(b.mountOurs, "randwrite", jobs)})
			what := fmt.Sprintf("FUSE O_DIRECT rand write 4 KiB + fdatasync, psync, %d %s, %d s", jobs, plural(jobs, "job"), secs)
			rows = append(rows, ratioRows("14", what, "IOPS", r, 1.0)...)
		}
	}
	if b.want("15") {
		r := b.contest("15", "IOPS",
			contestant{"iscsi-perf -r -m 1", b.perf(null, 1, 8, true, "IOPS")},
			contestant{"iscsifs bench --qd 1", b.oursBench(null, "rand", "4KiB", 1, "IOPS")})
		rows = append(rows, ratioRows("15", fmt.Sprintf("random read 4 KiB, qd 1, null LUN, %d s", secs), "IOPS", r, 1.0)...)
	}
	if b.want("16") {
		rows = append(rows, b.twoPaths(null)...)
	}
	return rows
}

// twoPaths is figure 16: iscsifs bench over two portals of tgtd at once
// (--multipath, 127.0.0.1 and 127.0.0.2) against one, on the null LUN.
func (b *bench) twoPaths(url string) []row {
	second := fmt.Sprintf("127.0.0.2:%d", b.tg.Port)
	what := fmt.Sprintf("random read 4 KiB, qd 32, null LUN, two paths (--multipath) vs one, %d s", b.cfg.seconds)
	if out, err := b.tg.TGTAdm("--lld", "iscsi", "--op", "new", "--mode", "portal", "--param", "portal="+second); err != nil {
		return failedRows("16", what, "IOPS", 1.0, false, fmt.Errorf("adding portal %s: %v: %s", second, err, out), "iscsifs bench, one path")
	}
	r := b.contest("16", "IOPS",
		contestant{"iscsifs bench, one path", b.oursBench(url, "rand", "4KiB", 32, "IOPS")},
		contestant{"iscsifs bench --multipath", b.oursBench(url, "rand", "4KiB", 32, "IOPS", "--multipath", "--portal", second)})
	return ratioRows("16", what, "IOPS", r, 1.0)
}

// plural is n's noun: job, jobs.
func plural(n int, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}

// iscsi-perf prints "iops average N (M MB/s)" every second; the last one
// covers the whole run but its partial last second.
var perfAverage = regexp.MustCompile(`iops average (\d+) `)

// perf runs iscsi-perf for cfg.seconds (it runs until SIGINT): depth
// commands in flight (-m), each of blocks 512-byte blocks (-b), at random
// places if random (-r).
func (b *bench) perf(url string, depth, blocks int, random bool, unit string) func(context.Context) (float64, error) {
	return func(ctx context.Context) (float64, error) {
		argv := []string{"iscsi-perf", "-m", strconv.Itoa(depth), "-b", strconv.Itoa(blocks)}
		if random {
			argv = append(argv, "-r")
		}
		p, err := b.reg.startProc(append(argv, url)...)
		if err != nil {
			return 0, err
		}
		select {
		case <-time.After(time.Duration(b.cfg.seconds) * time.Second):
		case <-ctx.Done():
		case <-p.done:
		}
		// It ignores SIGINT after a reconnect: SIGKILL after a grace period.
		p.stop(syscall.SIGINT, 5*time.Second)
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		m := perfAverage.FindAllStringSubmatch(p.stdout.String(), -1)
		if len(m) == 0 {
			return 0, fmt.Errorf("iscsi-perf printed no average: %s", lastLine(p.output()))
		}
		iops, _ := strconv.ParseFloat(m[len(m)-1][1], 64)
		if unit == "IOPS" {
			return iops, nil
		}
		return iops * float64(blocks*512) / 1e6, nil
	}
}

// oursBench runs `iscsifs bench` with the same block size and queue depth.
func (b *bench) oursBench(url, pattern, bs string, qd int, unit string, extra ...string) func(context.Context) (float64, error) {
	return func(ctx context.Context) (float64, error) {
		argv := append([]string{b.cfg.iscsifs, "bench", "--json",
			"--pattern", pattern, "--rw", "read", "--bs", bs, "--qd", strconv.Itoa(qd), "--time", fmt.Sprintf("%ds", b.cfg.seconds)}, extra...)
		p, err := b.reg.run(ctx, time.Duration(b.cfg.seconds+60)*time.Second, append(argv, url)...)
		if err != nil {
			return 0, err
		}
		var res struct {
			MBps float64 `json:"mb_per_s"`
			IOPS float64 `json:"iops"`
		}
		if err := json.Unmarshal([]byte(p.stdout.String()), &res); err != nil {
			return 0, fmt.Errorf("iscsifs bench --json: %v", err)
		}
		if unit == "IOPS" {
			return res.IOPS, nil
		}
		return res.MBps, nil
	}
}

// mbps turns bytes moved in d into MB/s (10^6 bytes per second).
func mbps(bytes int64, d time.Duration) float64 { return float64(bytes) / d.Seconds() / 1e6 }

// imaging is figure 3: the 1 GiB LUN to a file in dir, the work directory
// (3a, on tmpfs where there is room) or one on the local disk (3b).
func (b *bench) imaging(fig, url, dir string) []row {
	out := filepath.Join(dir, "image.raw")
	backing := b.tg.BackingFile(diskIQN, 1)
	image := func(argv ...string) func(context.Context) (float64, error) {
		checked := false
		return func(ctx context.Context) (float64, error) {
			// Start each run from the same state: no old output, nothing dirty.
			os.Remove(out)
			syscall.Sync()
			before := b.cpu()
			start := time.Now()
			p, err := b.reg.run(ctx, 10*time.Minute, argv...)
			d := time.Since(start)
			if err != nil {
				return 0, err
			}
			after := b.cpu()
			if !checked {
				if err := sameFiles(out, backing); err != nil {
					return 0, fmt.Errorf("the image is wrong: %v", err)
				}
				checked = true
			}
			// The CPU the copy cost, the copier's and tgtd's: both share two
			// cores, so this bounds the MB/s either tool can reach, and on
			// this VM the slow runs show up here too (page faults cost the
			// kernel more at some moments; README, figure 3).
			if st := p.cmd.ProcessState; st != nil && after.tgtdKnown && before.tgtdKnown {
				tgtd := float64(after.tgtd-before.tgtd) / 100 // USER_HZ
				b.note((st.UserTime() + st.SystemTime()).Seconds() + tgtd)
			}
			return mbps(gib, d), nil
		}
	}
	r := b.contest(fig, "MB/s",
		contestant{"qemu-img convert", image("qemu-img", "convert", "-f", "raw", "-O", "raw", url, out)},
		contestant{"iscsifs cp", image(b.cfg.iscsifs, "cp", "--no-progress", url, out)})
	os.Remove(out)
	what := "imaging 1 GiB LUN → file on " + fsType(dir)
	rows := ratioRows(fig, what, "MB/s", r, 1.5)
	for i := range r {
		r[i].runs = r[i].noted
	}
	return append(rows, compareRows(fig, what+": CPU, copier + tgtd", "s", r, 0, true)...)
}

// imagingDisk is figure 3b: imaging into a directory of its own under
// cfg.diskDir, which must not be in memory.
func (b *bench) imagingDisk(url string) []row {
	kind := fsType(b.cfg.diskDir)
	fail := func(err error) []row {
		return failedRows("3b", "imaging 1 GiB LUN → file on "+kind, "MB/s", 1.5, false, err, "qemu-img convert")
	}
	if kind == "tmpfs" || kind == "ramfs" {
		return fail(fmt.Errorf("-disk-dir %s is on %s, not on a disk", b.cfg.diskDir, kind))
	}
	dir, err := os.MkdirTemp(b.cfg.diskDir, "iscsifs-bench-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	return b.imaging("3b", url, dir)
}

// fsType is the type of the file system dir is on, as /proc/self/mountinfo
// lists it for the deepest mount point above dir ("?" if unknown).
func fsType(dir string) string {
	path, err := filepath.EvalSymlinks(dir)
	if err == nil {
		path, err = filepath.Abs(path)
	}
	data, rerr := os.ReadFile("/proc/self/mountinfo")
	if err != nil || rerr != nil {
		return "?"
	}
	// Fields: id, parent, major:minor, root, mount point, options, optional
	// fields, "-", type, source, super options; blanks escaped as octal.
	unescape := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	kind, depth := "?", -1
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 5 || sep < 5 || sep+1 >= len(f) {
			continue
		}
		mp := unescape.Replace(f[4])
		// Later lines are mounted over earlier ones: >= takes them.
		if (path == mp || strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= depth {
			kind, depth = f[sep+1], len(mp)
		}
	}
	return kind
}

// restoring is figure 4: a 1 GiB file onto the second LUN.
func (b *bench) restoring(url string) []row {
	src := b.tg.BackingFile(diskIQN, 1)
	restore := func(argv ...string) func(context.Context) (float64, error) {
		return func(ctx context.Context) (float64, error) {
			syscall.Sync() // the previous run's writes reach the disk outside the timing
			d, err := b.reg.timed(ctx, 10*time.Minute, argv...)
			if err != nil {
				return 0, err
			}
			return mbps(gib, d), nil
		}
	}
	r := b.contest("4", "MB/s",
		contestant{"qemu-img convert -n", restore("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, url)},
		contestant{"iscsifs cp", restore(b.cfg.iscsifs, "cp", "--no-progress", src, url)})
	rows := ratioRows("4", "restoring 1 GiB file → LUN", "MB/s", r, 1.5)
	if err := sameFiles(b.tg.BackingFile(diskIQN, 2), src); err != nil && b.ctx.Err() == nil {
		for i := range rows {
			rows[i].Error = "the LUN differs from the file after the copies: " + err.Error()
		}
	}
	return rows
}

// sameFiles compares two files byte for byte.
func sameFiles(a, b string) error { return sameBytes(a, b, -1) }

// sameBytes compares the first n bytes of two files, all of them if n < 0.
func sameBytes(a, b string, n int64) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	ra, rb := io.Reader(fa), io.Reader(fb)
	if n >= 0 {
		ra, rb = io.LimitReader(fa, n), io.LimitReader(fb, n)
	}
	ba, bb := make([]byte, 4<<20), make([]byte, 4<<20)
	for off := int64(0); ; off += int64(len(ba)) {
		na, ea := io.ReadFull(ra, ba)
		nb, eb := io.ReadFull(rb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return fmt.Errorf("%s and %s differ after byte %d", a, b, off)
		}
		if ea != nil || eb != nil {
			if errors.Is(ea, io.EOF) || errors.Is(ea, io.ErrUnexpectedEOF) {
				return nil
			}
			return errors.Join(ea, eb)
		}
	}
}

type mountFunc func(ctx context.Context, lun int, writable bool) (*fuseMount, error)

// mountQSD exports the LUN with qemu-storage-daemon's FUSE export (libiscsi
// inside qemu's block layer) at a regular file.
func (b *bench) mountQSD(ctx context.Context, lun int, writable bool) (*fuseMount, error) {
	file := filepath.Join(b.cfg.dir, fmt.Sprintf("qsd-lun%d", lun))
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		return nil, err
	}
	w := "off"
	if writable {
		w = "on"
	}
	p, err := b.reg.startProc("qemu-storage-daemon",
		"--blockdev", fmt.Sprintf("driver=iscsi,node-name=n0,transport=tcp,portal=%s,target=%s,lun=%d", b.tg.Portal, diskIQN, lun),
		"--export", fmt.Sprintf("type=fuse,id=e0,node-name=n0,mountpoint=%s,writable=%s", file, w))
	if err != nil {
		return nil, err
	}
	m := &fuseMount{file: file, mountpoint: file, daemon: p, reg: b.reg, stopSig: syscall.SIGTERM}
	if err := b.reg.waitMounted(ctx, p, file, file); err != nil {
		p.stop(syscall.SIGKILL, time.Second)
		return nil, err
	}
	return m, nil
}

// mountNBD serves the LUN with qemu-nbd (libiscsi) and mounts it with
// nbdfuse.
func (b *bench) mountNBD(ctx context.Context, lun int, writable bool) (*fuseMount, error) {
	dir := filepath.Join(b.cfg.dir, "nbdfuse")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	argv := []string{"nbdfuse"}
	if !writable {
		argv = append(argv, "-r")
	}
	argv = append(argv, dir, "--socket-activation", "qemu-nbd", "-f", "raw", b.tg.URL(diskIQN, lun))
	p, err := b.reg.startProc(argv...)
	if err != nil {
		return nil, err
	}
	m := &fuseMount{file: filepath.Join(dir, "nbd"), mountpoint: dir, daemon: p, reg: b.reg,
		unmountCmd: []string{"fusermount3", "-u", dir}}
	if err := b.reg.waitMounted(ctx, p, dir, m.file); err != nil {
		p.stop(syscall.SIGKILL, time.Second)
		return nil, err
	}
	return m, nil
}

// mountOurs runs `iscsifs mount` with its defaults and --cache-size.
func (b *bench) mountOurs(ctx context.Context, lun int, writable bool) (*fuseMount, error) {
	return b.startOurs(ctx, lun, writable, b.cfg.cacheMiB)
}

// coldCacheMiB is the cache of mountOursCold: much smaller than the range
// figures 12 and 13 read (directSize), so that nearly every read reaches the
// target, as every read through qemu-storage-daemon does.
const coldCacheMiB = 32

// mountOursCold is mountOurs with --cache-size coldCacheMiB.
func (b *bench) mountOursCold(ctx context.Context, lun int, writable bool) (*fuseMount, error) {
	return b.startOurs(ctx, lun, writable, coldCacheMiB)
}

// startOurs runs `iscsifs mount` with --cache-size cacheMiB and the extra
// flags.
func (b *bench) startOurs(ctx context.Context, lun int, writable bool, cacheMiB int64, extra ...string) (*fuseMount, error) {
	dir := filepath.Join(b.cfg.dir, "iscsifs-mnt")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	argv := append([]string{b.cfg.iscsifs, "mount", "--cache-size", fmt.Sprintf("%dMiB", cacheMiB)}, extra...)
	if !writable {
		argv = append(argv, "--read-only")
	}
	p, err := b.reg.startProc(append(argv, b.tg.URL(diskIQN, lun), dir)...)
	if err != nil {
		return nil, err
	}
	m := &fuseMount{file: filepath.Join(dir, fmt.Sprintf("lun%d", lun)), mountpoint: dir, daemon: p, reg: b.reg, stopSig: syscall.SIGINT}
	if err := b.reg.waitMounted(ctx, p, dir, m.file); err != nil {
		p.stop(syscall.SIGKILL, time.Second)
		return nil, err
	}
	return m, nil
}

// withMount mounts, runs fn on the file and unmounts; an unclean unmount
// fails the run.
func withMount(ctx context.Context, mount mountFunc, lun int, writable bool, fn func(m *fuseMount) (float64, error)) (float64, error) {
	m, err := mount(ctx, lun, writable)
	if err != nil {
		return 0, err
	}
	v, err := fn(m)
	if cerr := m.close(); err == nil && cerr != nil {
		err = fmt.Errorf("unmount: %w", cerr)
	}
	return v, err
}

// ddCopied is the "bytes ... copied, S s" line of dd.
var ddCopied = regexp.MustCompile(`(\d+) bytes .*copied, ([0-9.e+-]+) s`)

// dd runs dd and returns MB/s from its own report.
func (b *bench) dd(ctx context.Context, args ...string) (float64, error) {
	p, err := b.reg.run(ctx, 10*time.Minute, append([]string{"dd"}, args...)...)
	if err != nil {
		return 0, err
	}
	m := ddCopied.FindStringSubmatch(p.stderr.String())
	if m == nil {
		return 0, fmt.Errorf("dd printed no summary: %s", lastLine(p.output()))
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	s, _ := strconv.ParseFloat(m[2], 64)
	if s <= 0 {
		return 0, fmt.Errorf("dd took %v s", s)
	}
	return float64(n) / s / 1e6, nil
}

// coldRead is figure 5: a fresh mount, then dd of the whole LUN.
func (b *bench) coldRead(mount mountFunc) func(context.Context) (float64, error) {
	return func(ctx context.Context) (float64, error) {
		return withMount(ctx, mount, 1, false, func(m *fuseMount) (float64, error) {
			return b.dd(ctx, "if="+m.file, "of=/dev/null", "bs=1M")
		})
	}
}

// fioRandRead is figure 6: fio random 4 KiB reads, libaio at iodepth 32
// with O_DIRECT where the file takes it, else psync with 8 jobs.
func (b *bench) fioRandRead(mount mountFunc) func(context.Context) (float64, error) {
	return func(ctx context.Context) (float64, error) {
		return withMount(ctx, mount, 1, false, func(m *fuseMount) (float64, error) {
			var engine []string
			if _, err := b.reg.run(ctx, time.Minute, "dd", "if="+m.file, "of=/dev/null", "bs=4096", "count=1", "iflag=direct"); err == nil {
				engine = []string{"--ioengine=libaio", "--iodepth=32", "--direct=1"}
			} else {
				logf("figure 6: %s refuses O_DIRECT: psync with 8 jobs", m.file)
				engine = []string{"--ioengine=psync", "--numjobs=8", "--direct=0"}
			}
			return b.fio(ctx, "read", fioArgs("randread", m.file, b.cfg.seconds, engine...)...)
		})
	}
}

// fioArgs is a time-based fio job of 4 KiB requests; name is also its rw.
func fioArgs(name, file string, seconds int, extra ...string) []string {
	return append([]string{"fio", "--name=" + name, "--filename=" + file, "--rw=" + name, "--bs=4k",
		"--runtime=" + strconv.Itoa(seconds), "--time_based", "--output-format=json", "--group_reporting"}, extra...)
}

// fio runs fio with --output-format=json and returns the IOPS of its
// (grouped) job in direction dir, "read" or "write".
func (b *bench) fio(ctx context.Context, dir string, argv ...string) (float64, error) {
	side, err := b.fioReport(ctx, dir, argv...)
	return side.IOPS, err
}

// fioSide is what fio reports of one direction of its (grouped) job.
type fioSide struct {
	IOPS float64 `json:"iops"`
	// Completion latency: from submission to completion, all of a
	// synchronous engine's system call.
	Clat struct {
		Mean       float64            `json:"mean"`
		Percentile map[string]float64 `json:"percentile"`
	} `json:"clat_ns"`
}

// fioReport runs fio with --output-format=json and returns what it reports
// of its (grouped) job in direction dir, "read" or "write".
func (b *bench) fioReport(ctx context.Context, dir string, argv ...string) (fioSide, error) {
	p, err := b.reg.run(ctx, time.Duration(b.cfg.seconds+300)*time.Second, argv...)
	if err != nil {
		return fioSide{}, err
	}
	var out struct {
		Jobs []struct {
			Error int     `json:"error"`
			Read  fioSide `json:"read"`
			Write fioSide `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(p.stdout.String()), &out); err != nil || len(out.Jobs) == 0 {
		return fioSide{}, fmt.Errorf("fio --output-format=json: %v: %s", err, lastLine(p.output()))
	}
	job := out.Jobs[0]
	if job.Error != 0 {
		return fioSide{}, fmt.Errorf("fio job error %d", job.Error)
	}
	if dir == "write" {
		return job.Write, nil
	}
	return job.Read, nil
}

// seqWrite is figure 7: 512 MiB of random data (from the first LUN's
// backing file, in the page cache) onto the second LUN, made durable.
func (b *bench) seqWrite(mount mountFunc) func(context.Context) (float64, error) {
	src := b.tg.BackingFile(diskIQN, 1)
	return func(ctx context.Context) (float64, error) {
		syscall.Sync()
		return withMount(ctx, mount, 2, true, func(m *fuseMount) (float64, error) {
			return b.dd(ctx, "if="+src, "of="+m.file, "bs=1M", "count=512", "conv=fsync,notrunc")
		})
	}
}

// warm is figure 8: after reading the whole LUN (the cache is full), read
// a 128 MiB range twice and time the second read; then the daemon's peak
// RSS.
func (b *bench) warm() []row {
	run := func(name string, mount mountFunc) contestant {
		return contestant{name, func(ctx context.Context) (float64, error) {
			return withMount(ctx, mount, 1, false, func(m *fuseMount) (float64, error) {
				if _, err := b.dd(ctx, "if="+m.file, "of=/dev/null", "bs=1M"); err != nil {
					return 0, err
				}
				if _, err := b.dd(ctx, "if="+m.file, "of=/dev/null", "bs=1M", "count=128"); err != nil {
					return 0, err
				}
				v, err := b.dd(ctx, "if="+m.file, "of=/dev/null", "bs=1M", "count=128")
				if err != nil {
					return 0, err
				}
				peak, err := m.peakRSS()
				if err != nil {
					return 0, err
				}
				b.note(float64(peak) / float64(mib))
				return v, nil
			})
		}}
	}
	r := b.contest("8", "MB/s", run("qemu-storage-daemon", b.mountQSD), run("iscsifs mount", b.mountOurs))
	rows := ratioRows("8", "FUSE warm re-read of 128 MiB, dd bs=1M", "MB/s", r, 0)
	limitMB := 1500.0
	for i := range rows {
		rows[i].Target = fmt.Sprintf("iscsifs ≥ %.0f MB/s", limitMB)
		if rows[i].Error == "" {
			met := rows[i].OursMedian >= limitMB
			rows[i].Met = &met
		}
	}
	peer, ours := r[0], r[1]
	peer.runs, ours.runs = peer.noted, ours.noted
	rssRows := compareRows("8", fmt.Sprintf("peak RSS of the FUSE daemon (iscsifs --cache-size %dMiB)", b.cfg.cacheMiB), "MiB", []result{peer, ours}, 0, true)
	limit := float64(b.cfg.cacheMiB + 64)
	for i := range rssRows {
		rssRows[i].Target = fmt.Sprintf("iscsifs ≤ %.0f MiB", limit)
		if rssRows[i].Error == "" {
			met := rssRows[i].OursMedian <= limit
			rssRows[i].Met = &met
		}
	}
	return append(rows, rssRows...)
}
