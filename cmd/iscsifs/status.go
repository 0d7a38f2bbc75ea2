package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/iscsifs/iscsifs/fusefs"
	"github.com/iscsifs/iscsifs/initiator"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show a mount's sessions, negotiated parameters and I/O counters; without MOUNTPOINT, list every iscsifs mount",
		ArgsUsage: "[MOUNTPOINT]",
		Flags:     []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print status.json and stats.json as one JSON object"}},
		Action:    statusAction,
	}
}

func statusAction(c *cli.Context) error {
	if c.NArg() == 0 {
		return listMounts(c)
	}
	if c.NArg() != 1 {
		return fmt.Errorf("status: want at most one argument, the mount point")
	}
	dir := filepath.Join(c.Args().First(), ".iscsifs")
	var st mountStatus
	var stats mountStats
	if err := readJSON(filepath.Join(dir, statusFile), &st); err != nil {
		return err
	}
	if err := readJSON(filepath.Join(dir, statsFile), &stats); err != nil {
		return err
	}
	w := c.App.Writer
	if c.Bool("json") {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Status mountStatus `json:"status"`
			Stats  mountStats  `json:"stats"`
		}{st, stats})
	}
	printStatus(w, st, stats)
	return nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return fmt.Errorf("%s: not an iscsifs mount (no %s)", filepath.Dir(filepath.Dir(path)), path)
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func printStatus(w io.Writer, st mountStatus, stats mountStats) {
	for _, t := range st.Targets {
		s := t.Session
		if t.State == stateNotLoggedIn {
			fmt.Fprintf(w, "%s at %s: not logged in yet (logs in when its directory is first used)\n", t.Target, t.Portal)
			continue
		}
		fmt.Fprintf(w, "%s at %s: %s, %d reconnects\n", t.Target, t.Portal, t.State, s.Reconnects)
		if len(t.Paths) > 1 {
			for _, p := range t.Paths {
				fmt.Fprintf(w, "  path %s: %s, %d logins, %d failed", p.Portal, p.State, p.Logins, p.Failures)
				if p.Commands > 0 {
					fmt.Fprintf(w, ", %d commands", p.Commands)
				}
				if p.ALUA != initiator.ALUAUnknown {
					fmt.Fprintf(w, ", ALUA %s (group %d)", p.ALUA, p.TPG)
				}
				if p.LastError != "" {
					fmt.Fprintf(w, " (last: %s)", p.LastError)
				}
				fmt.Fprintln(w)
			}
		}
		p := t.Params
		fmt.Fprintf(w, "  negotiated: burst %d/%d, segment in %d out %d, InitialR2T %v, ImmediateData %v, digests header %v data %v\n",
			p.FirstBurstLength, p.MaxBurstLength, p.MaxRecvDataSegmentLength, p.TargetMaxRecvDataSegmentLength,
			p.InitialR2T, p.ImmediateData, p.HeaderDigest, p.DataDigest)
		fmt.Fprintf(w, "  commands %d (%d failed), read %s, written %s, in flight %d (peak %d), latency p50 %v p99 %v p99.9 %v\n",
			s.Commands, s.Errors, human(int64(s.ReadBytes)), human(int64(s.WriteBytes)), s.InFlight, s.PeakFlight,
			s.LatencyP50.Round(time.Microsecond), s.LatencyP99.Round(time.Microsecond), s.LatencyP999.Round(time.Microsecond))
		fmt.Fprintf(w, "  syncs: %d SYNCHRONIZE CACHE sent, %d not needed; %d WRITEs with FUA\n", s.SyncsSent, s.SyncsSkipped, s.FUAWrites)
		for _, l := range t.LUNs {
			ro := ""
			if l.ReadOnly {
				ro = ", read-only"
			}
			dev := ""
			if l.Device != "" {
				dev = ", device " + l.Device
			}
			fmt.Fprintf(w, "  %s: LUN %d, %s (%d-byte blocks%s), %s %s, serial %s%s\n",
				l.Path, l.LUN, human(l.Size), l.BlockSize, ro, l.Vendor, l.Product, l.Serial, dev)
			for _, p := range l.Partitions {
				dev := ""
				if p.Device != "" {
					dev = ", device " + p.Device
				}
				fmt.Fprintf(w, "    %s: %s partition %d at %d, %s, type %s%s\n",
					p.Path, l.PartitionTable, p.Number, p.Start, human(p.Size), p.Type, dev)
			}
			if f, ok := stats.Files[l.Path]; ok {
				hit := 0.0
				if f.Hits+f.Misses > 0 {
					hit = 100 * float64(f.Hits) / float64(f.Hits+f.Misses)
				}
				fmt.Fprintf(w, "    cache: %.1f%% hits (%d/%d), %s cached of %s, %s dirty, read-ahead window %s, %d evictions, %d write-back errors\n",
					hit, f.Hits, f.Hits+f.Misses, human(f.CachedBytes), human(f.CacheSize), human(f.DirtyBytes),
					human(f.ReadAheadWindow), f.Evictions, f.WritebackErrors)
				r := f.Rates
				fmt.Fprintf(w, "    last second: read %.0f IOPS %s/s, write %.0f IOPS %s/s; to the target: read %.0f IOPS %s/s, write %.0f IOPS %s/s\n",
					r.ReadIOPS, human(int64(r.ReadBytesPerSecond)), r.WriteIOPS, human(int64(r.WriteBytesPerSecond)),
					r.DeviceReadIOPS, human(int64(r.DeviceReadBytesPerSec)), r.DeviceWriteIOPS, human(int64(r.DeviceWriteBytesPerSec)))
			}
		}
	}
	v := st.Serving
	fmt.Fprintf(w, "FUSE requests: %d, reads answered by the loop %d, taken right after a reply %d, read while polling after a write %d\n",
		v.Requests, v.ReadsByLoop, v.TakenAfterReply, v.ReadWhilePolling)
}

// human prints a byte count with a binary unit.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// mountSummary is one line of `iscsifs status` without a mount point.
type mountSummary struct {
	Mountpoint string            `json:"mountpoint"`
	URL        string            `json:"url"` // without secrets
	PID        int               `json:"pid"`
	State      string            `json:"state"` // "serving", the targets' worst state, or why it is unknown
	Devices    map[string]string `json:"devices"`
}

// statusReadTimeout bounds reading a mount's status.json: a mount whose
// daemon hangs must not hang the listing.
const statusReadTimeout = 5 * time.Second

// listMounts prints every fuse.iscsifs mount of this mount namespace.
func listMounts(c *cli.Context) error {
	mounts, err := fusefs.ReadMountInfo()
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	out := []mountSummary{}
	for _, m := range mounts {
		if m.FSType != "fuse.iscsifs" {
			continue
		}
		out = append(out, summarize(m.Dir))
	}
	w := c.App.Writer
	if c.Bool("json") {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(out) == 0 {
		fmt.Fprintln(w, "no iscsifs mounts")
	}
	for _, s := range out {
		fmt.Fprintf(w, "%s  %s  pid %d  %s", s.Mountpoint, s.URL, s.PID, s.State)
		paths := make([]string, 0, len(s.Devices))
		for p := range s.Devices {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		for _, p := range paths {
			fmt.Fprintf(w, "  %s=%s", p, s.Devices[p])
		}
		fmt.Fprintln(w)
	}
	return nil
}

// summarize reads one mount's status.json, within statusReadTimeout.
func summarize(dir string) mountSummary {
	sum := mountSummary{Mountpoint: dir, Devices: map[string]string{}}
	type result struct {
		st  mountStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		var st mountStatus
		err := readJSON(filepath.Join(dir, ".iscsifs", statusFile), &st)
		done <- result{st, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(statusReadTimeout):
		sum.State = "not answering"
		return sum
	}
	if r.err != nil {
		sum.State = "daemon gone (" + oneLine(r.err) + ")"
		return sum
	}
	sum.URL, sum.PID, sum.State = r.st.URL, r.st.PID, "serving"
	for _, t := range r.st.Targets {
		if t.State != "logged-in" && t.State != stateNotLoggedIn {
			sum.State = t.Target + " " + t.State
		}
		for _, l := range t.LUNs {
			if l.Device != "" {
				sum.Devices[l.Path] = l.Device
			}
			for _, p := range l.Partitions {
				if p.Device != "" {
					sum.Devices[p.Path] = p.Device
				}
			}
		}
	}
	return sum
}
