package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// row is one line of the table: iscsifs against one peer in one figure.
type row struct {
	Figure     string    `json:"figure"`
	What       string    `json:"what"`
	Unit       string    `json:"unit"`
	Peer       string    `json:"peer"`
	PeerRuns   []float64 `json:"peer_runs"`
	PeerMedian float64   `json:"peer_median"`
	PeerMin    float64   `json:"peer_min"`
	PeerMax    float64   `json:"peer_max"`
	OursRuns   []float64 `json:"iscsifs_runs"`
	OursMedian float64   `json:"iscsifs_median"`
	OursMin    float64   `json:"iscsifs_min"`
	OursMax    float64   `json:"iscsifs_max"`
	// Ratio is iscsifs/peer, or peer/iscsifs where lower is better (RSS):
	// above 1 iscsifs is better.
	Ratio float64 `json:"ratio"`
	// StealMax is the highest share of CPU time the hypervisor took away
	// during one of the figure's runs, in percent.
	StealMax float64 `json:"steal_max_pct"`
	Target   string  `json:"target"`
	Met      *bool   `json:"met,omitempty"`
	Error    string  `json:"error,omitempty"`
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread is the least and the greatest of the runs, 0 and 0 for none.
func spread(v []float64) (lo, hi float64) {
	if len(v) == 0 {
		return 0, 0
	}
	return slices.Min(v), slices.Max(v)
}

// ratioRows makes one row per peer (every result but the last, which is
// iscsifs). A target ratio applies to the best peer.
func ratioRows(fig, what, unit string, res []result, target float64) []row {
	return compareRows(fig, what, unit, res, target, false)
}

// compareRows is ratioRows, for a figure where less is better (seconds,
// memory) if lower is set: the best peer is then the lowest, and the ratio
// peer/iscsifs.
func compareRows(fig, what, unit string, res []result, target float64, lower bool) []row {
	ours := res[len(res)-1]
	peers := res[:len(res)-1]
	best := -1
	for i, p := range peers {
		if p.err == nil && len(p.runs) > 0 && (best < 0 || (median(p.runs) > median(peers[best].runs)) != lower) {
			best = i
		}
	}
	var rows []row
	for i, p := range peers {
		r := row{Figure: fig, What: what, Unit: unit, Peer: p.name,
			PeerRuns: p.runs, PeerMedian: median(p.runs), OursRuns: ours.runs, OursMedian: median(ours.runs),
			StealMax: max(p.stealMax, ours.stealMax)}
		r.PeerMin, r.PeerMax = spread(p.runs)
		r.OursMin, r.OursMax = spread(ours.runs)
		var errs []string
		if p.err != nil {
			errs = append(errs, p.name+": "+p.err.Error())
		}
		if ours.err != nil {
			errs = append(errs, "iscsifs: "+ours.err.Error())
		}
		r.Error = strings.Join(errs, "; ")
		if r.PeerMedian > 0 && r.OursMedian > 0 {
			r.Ratio = r.OursMedian / r.PeerMedian
		}
		if lower {
			r.lowerIsBetter()
		}
		if target > 0 {
			if i == best || len(peers) == 1 {
				r.Target = fmt.Sprintf("ratio ≥ %.1f", target)
				if len(peers) > 1 {
					r.Target += " (best peer)"
				}
				if r.Error == "" {
					met := r.Ratio >= target
					r.Met = &met
				}
			} else {
				r.Target = "-"
			}
		}
		rows = append(rows, r)
	}
	return rows
}

// failedRows are the rows of a figure that could not run: err for the peers
// and for iscsifs.
func failedRows(fig, what, unit string, target float64, lower bool, err error, peers ...string) []row {
	var res []result
	for _, p := range append(peers, "iscsifs") {
		res = append(res, result{name: p, err: err})
	}
	return compareRows(fig, what, unit, res, target, lower)
}

// lowerIsBetter turns the ratio around for a figure where less is better.
func (r *row) lowerIsBetter() {
	r.Ratio = 0
	if r.PeerMedian > 0 && r.OursMedian > 0 {
		r.Ratio = r.PeerMedian / r.OursMedian
	}
}

func num(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.1f", v)
	}
}

// spreadText is the spread of the runs as "min–max", "-" for fewer than
// two runs.
func spreadText(runs []float64) string {
	if len(runs) < 2 {
		return "-"
	}
	lo, hi := spread(runs)
	return num(lo) + "–" + num(hi)
}

func printTable(w io.Writer, b *bench, rows []row) {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Fprintf(w, "\niscsifs make bench, %s: %d CPUs, Linux %s, tgtd on 127.0.0.1; median (min–max) of %d alternating runs; ratio > 1: iscsifs is better\n",
		b.start.UTC().Format("2006-01-02"), runtime.NumCPU(), strings.TrimSpace(string(kernel)), b.cfg.runs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "fig\tfigure\tpeer\tpeer value\tmin–max\tiscsifs\tmin–max\tunit\tratio\ttarget\tmet\tsteal")
	for _, r := range rows {
		met := ""
		if r.Met != nil {
			met = map[bool]string{true: "yes", false: "NO"}[*r.Met]
		}
		ratio := "-"
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", r.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f%%\n", r.Figure, r.What, r.Peer,
			num(r.PeerMedian), spreadText(r.PeerRuns), num(r.OursMedian), spreadText(r.OursRuns), r.Unit, ratio, r.Target, met, r.StealMax)
	}
	tw.Flush()
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(w, "figure %s (%s): %s\n", r.Figure, r.Peer, r.Error)
		}
	}
}

func writeJSON(path string, b *bench, rows []row) error {
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	doc := struct {
		Date    string `json:"date"`
		Host    string `json:"host"`
		Kernel  string `json:"kernel"`
		CPUs    int    `json:"cpus"`
		Runs    int    `json:"runs"`
		Seconds int    `json:"seconds"`
		Note    string `json:"note"`
		Rows    []row  `json:"rows"`
	}{
		Date: b.start.UTC().Format(time.RFC3339), Host: host, Kernel: strings.TrimSpace(string(kernel)),
		CPUs: runtime.NumCPU(), Runs: b.cfg.runs, Seconds: b.cfg.seconds,
		Note: "medians (and min, max) of alternating runs against tgtd on 127.0.0.1; ratio above 1: iscsifs is better",
		Rows: rows,
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
