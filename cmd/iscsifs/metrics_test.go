package main

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/iscsifs/iscsifs/initiator"
)

// TestLatencyHistogram: the command latency histogram carries the count,
// the cumulative power-of-two buckets and the sum of the latencies (which
// rate(sum)/rate(count) needs for a mean).
func TestLatencyHistogram(t *testing.T) {
	desc := prometheus.NewDesc("iscsifs_command_latency_seconds", "test", []string{"target"}, nil)
	st := initiator.Stats{LatencyBuckets: make([]uint64, 32), LatencySum: 3 * time.Millisecond}
	st.LatencyBuckets[3] = 2  // 2 commands under 8 µs
	st.LatencyBuckets[12] = 1 // 1 under 4096 µs
	var m dto.Metric
	if err := latencyHistogram(desc, st, "iqn.test").Write(&m); err != nil {
		t.Fatal(err)
	}
	h := m.GetHistogram()
	if got := h.GetSampleCount(); got != 3 {
		t.Errorf("count %d, want 3", got)
	}
	if got := h.GetSampleSum(); math.Abs(got-0.003) > 1e-12 {
		t.Errorf("sum %v s, want 0.003", got)
	}
	for _, b := range h.GetBucket() {
		switch b.GetUpperBound() {
		case 8e-6:
			if b.GetCumulativeCount() != 2 {
				t.Errorf("bucket 8 µs: %d, want 2", b.GetCumulativeCount())
			}
		case 4096e-6:
			if b.GetCumulativeCount() != 3 {
				t.Errorf("bucket 4096 µs: %d, want 3", b.GetCumulativeCount())
			}
		}
	}
}
