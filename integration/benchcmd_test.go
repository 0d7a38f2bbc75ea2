package integration

// Tests of `iscsifs bench` against tgtd.

import (
	"encoding/json"
	"strings"
	"testing"
)

type benchJSON struct {
	Pattern    string  `json:"pattern"`
	RW         string  `json:"rw"`
	BlockSize  int64   `json:"block_size"`
	QueueDepth int     `json:"queue_depth"`
	Seconds    float64 `json:"seconds"`
	Bytes      int64   `json:"bytes"`
	IOs        int64   `json:"ios"`
	Reads      int64   `json:"reads"`
	Writes     int64   `json:"writes"`
	MBps       float64 `json:"mb_per_s"`
	IOPS       float64 `json:"iops"`
	Latency    struct {
		P50  float64 `json:"p50"`
		P99  float64 `json:"p99"`
		P999 float64 `json:"p99_9"`
		Mean float64 `json:"mean"`
		Max  float64 `json:"max"`
	} `json:"latency_us"`
}

// saneBench checks the figures of one run against each other.
func saneBench(t *testing.T, r benchJSON, pattern, rw string, bs int64) {
	t.Helper()
	if r.Pattern != pattern || r.RW != rw || r.BlockSize != bs {
		t.Errorf("ran %s %s bs %d, want %s %s bs %d", r.Pattern, r.RW, r.BlockSize, pattern, rw, bs)
	}
	if r.Seconds < 0.9 || r.Seconds > 10 {
		t.Errorf("ran %.2f s for --time 1s", r.Seconds)
	}
	if r.IOs <= 0 || r.Bytes != r.IOs*bs || r.Reads+r.Writes != r.IOs {
		t.Errorf("ios %d, bytes %d, reads %d, writes %d: inconsistent", r.IOs, r.Bytes, r.Reads, r.Writes)
	}
	if mbps := float64(r.Bytes) / r.Seconds / 1e6; r.MBps <= 0 || r.MBps < mbps*0.99 || r.MBps > mbps*1.01 {
		t.Errorf("%.1f MB/s, but %d bytes in %.2f s make %.1f", r.MBps, r.Bytes, r.Seconds, mbps)
	}
	if iops := float64(r.IOs) / r.Seconds; r.IOPS <= 0 || r.IOPS < iops*0.99 || r.IOPS > iops*1.01 {
		t.Errorf("%.0f IOPS, but %d requests in %.2f s make %.0f", r.IOPS, r.IOs, r.Seconds, iops)
	}
	l := r.Latency
	if !(0 < l.P50 && l.P50 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max && l.Mean > 0 && l.Mean <= l.Max) {
		t.Errorf("latency percentiles out of order: %+v", l)
	}
	if l.P50 > 1e6 {
		t.Errorf("median latency %.0f µs on localhost", l.P50)
	}
}

func TestBenchCommand(t *testing.T) {
	const iqn = "iqn.2026-11.test:bench"
	tg := StartTGT(t,
		TargetSpec{Name: iqn, LUNs: []LUNSpec{
			{LUN: 1, BSType: "null"},
			{LUN: 2, Size: 16 << 20, Fill: "random"},
		}},
		TargetSpec{Name: cpRO, LUNs: []LUNSpec{{LUN: 1, Size: 4 << 20, ReadOnly: true}}},
	)
	null, disk := tg.URL(iqn, 1), tg.URL(iqn, 2)

	for _, tc := range []struct {
		url, pattern, rw string
		bs               int64
		extra            []string
	}{
		{null, "seq", "read", 128 << 10, nil},
		{null, "rand", "read", 4 << 10, nil},
		{disk, "rand", "write", 4 << 10, []string{"--write"}},
		{disk, "seq", "mix", 64 << 10, []string{"--write", "--bs", "64KiB"}},
	} {
		t.Run(tc.pattern+"-"+tc.rw, func(t *testing.T) {
			args := append([]string{"bench", "--json", "--time", "1s", "--qd", "8", "--pattern", tc.pattern, "--rw", tc.rw}, tc.extra...)
			r := runCLI(t, nil, append(args, tc.url)...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			var res benchJSON
			if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
				t.Fatalf("bench --json: %v\n%s", err, r.stdout)
			}
			saneBench(t, res, tc.pattern, tc.rw, tc.bs)
			if tc.rw == "mix" && (res.Reads == 0 || res.Writes == 0) {
				t.Errorf("mix ran %d reads and %d writes", res.Reads, res.Writes)
			}
		})
	}

	t.Run("text", func(t *testing.T) {
		r := runCLI(t, nil, "bench", "--time", "1s", "--qd", "4", null)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		for _, want := range []string{"seq read", "MB/s", "IOPS", "p50", "p99 ", "p99.9"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("output lacks %q: %s", want, r.stdout)
			}
		}
	})

	t.Run("refuses writes", func(t *testing.T) {
		before := fileSum(t, tg.BackingFile(iqn, 2), 0, 16<<20)
		for _, rw := range []string{"write", "mix"} {
			r := runCLI(t, nil, "bench", "--time", "1s", "--rw", rw, disk)
			oneLineError(t, r.stderr, r.code, "--write")
		}
		if fileSum(t, tg.BackingFile(iqn, 2), 0, 16<<20) != before {
			t.Error("a refused write benchmark changed the LUN")
		}
		r := runCLI(t, nil, "bench", "--time", "1s", "--rw", "write", "--write", tg.URL(cpRO, 1))
		oneLineError(t, r.stderr, r.code, "read-only")
	})
}
