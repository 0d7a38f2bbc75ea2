package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuSample is what the machine and tgtd had used at one moment: the
// per-run log lines say how busy the CPUs were and how much of it was the
// target, which tells a figure bound by the CPUs (both sides near 100 %)
// from one bound by waiting.
type cpuSample struct {
	at         time.Time
	busy, all  uint64 // jiffies of the machine, from /proc/stat
	steal      uint64 // jiffies the hypervisor ran something else (in busy too)
	tgtd       uint64 // utime+stime of tgtd, jiffies
	tgtdKnown  bool
	tgtdThread map[string]uint64 // the same per thread (task id)
}

func sampleCPU(tgtdPID int) cpuSample {
	s := cpuSample{at: time.Now()}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
		for i := 1; i < len(f) && i <= 8; i++ {
			v, _ := strconv.ParseUint(f[i], 10, 64)
			s.all += v
			if i != 4 && i != 5 { // idle, iowait
				s.busy += v
			}
			if i == 8 {
				s.steal = v
			}
		}
	}
	if tgtdPID > 0 {
		s.tgtd, s.tgtdKnown = procTicks(fmt.Sprintf("/proc/%d/stat", tgtdPID))
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", tgtdPID))
		s.tgtdThread = map[string]uint64{}
		for _, t := range tasks {
			if v, ok := procTicks(fmt.Sprintf("/proc/%d/task/%s/stat", tgtdPID, t.Name())); ok {
				s.tgtdThread[t.Name()] = v
			}
		}
	}
	return s
}

// procTicks is utime+stime of a /proc stat file, in jiffies.
func procTicks(path string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	// Fields after the command name: state is field 3, utime 14, stime 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) <= 12 {
		return 0, false
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return u + st, true
}

// stealPercent is the share of the machine's CPU time between before and s
// that the hypervisor gave to someone else: on a shared host the same run
// can take twice as long when it is high, so the log and the table show it.
func (s cpuSample) stealPercent(before cpuSample) float64 {
	all := s.all - before.all
	if all == 0 {
		return 0
	}
	return 100 * float64(s.steal-before.steal) / float64(all)
}

// since says how busy the CPUs were between before and s, and tgtd's share
// (in CPUs: 1.00 is one core the whole time), with its busiest thread's:
// tgtd serves every connection from one event loop thread.
func (s cpuSample) since(before cpuSample) string {
	all := s.all - before.all
	if all == 0 {
		return "cpu: n/a"
	}
	out := fmt.Sprintf("cpus %.0f%% busy, %.0f%% stolen by the host", 100*float64(s.busy-before.busy)/float64(all), s.stealPercent(before))
	if s.tgtdKnown && before.tgtdKnown {
		ticks := float64(s.at.Sub(before.at)) / float64(time.Second) * 100 // USER_HZ
		var busiest uint64
		for id, v := range s.tgtdThread {
			busiest = max(busiest, v-min(v, before.tgtdThread[id]))
		}
		out += fmt.Sprintf(", tgtd %.2f cpus (busiest thread %.2f)", float64(s.tgtd-before.tgtd)/ticks, float64(busiest)/ticks)
	}
	return out
}
