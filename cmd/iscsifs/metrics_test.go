package main

import (
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/iscsifs/iscsifs/cache"
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

// metricsBefore is every metric /metrics served before its counters were
// derived from the Stats structs' tags: integration tests, dashboards and
// the README use these names, so a change here is one users see.
var metricsBefore = []struct{ name, typ, labels, help string }{
	{"iscsifs_commands_total", "counter", "target", "SCSI commands completed or failed."},
	{"iscsifs_command_errors_total", "counter", "target", "SCSI commands that failed in transport."},
	{"iscsifs_read_bytes_total", "counter", "target", "Bytes read from the target."},
	{"iscsifs_write_bytes_total", "counter", "target", "Bytes written to the target."},
	{"iscsifs_commands_in_flight", "gauge", "target", "SCSI commands outstanding now."},
	{"iscsifs_pdus_received_total", "counter", "target", "PDUs received from the target."},
	{"iscsifs_pdus_read_by_caller_total", "counter", "target", "PDUs read by the goroutine waiting for them, without a hand-off between goroutines."},
	{"iscsifs_pdus_sent_total", "counter", "target", "PDUs sent to the target."},
	{"iscsifs_send_writes_total", "counter", "target", "Write system calls that sent PDUs (commands sent together share one)."},
	{"iscsifs_fua_writes_total", "counter", "target", "WRITE commands sent with FORCE UNIT ACCESS (durable on completion)."},
	{"iscsifs_sync_cache_total", "counter", "target", "SYNCHRONIZE CACHE commands completed."},
	{"iscsifs_sync_cache_skipped_total", "counter", "target", "Syncs that needed no SYNCHRONIZE CACHE: nothing written since the last one, or written with FUA."},
	{"iscsifs_reconnects_total", "counter", "target", "Times the session was re-established."},
	{"iscsifs_session_up", "gauge", "target", "1 when the session is logged in, 0 while recovering or unavailable."},
	{"iscsifs_command_latency_seconds", "histogram", "target", "SCSI command latency (power-of-two buckets)."},
	{"iscsifs_cache_hits_total", "counter", "file,target,lun", "Reads served from the cache."},
	{"iscsifs_cache_misses_total", "counter", "file,target,lun", "Reads that needed the target."},
	{"iscsifs_cache_uncached_reads_total", "counter", "file,target,lun", "Random reads served straight from the target, around the cache."},
	{"iscsifs_cache_device_read_bytes_total", "counter", "file,target,lun", "Bytes the cache read from the LUN."},
	{"iscsifs_cache_device_write_bytes_total", "counter", "file,target,lun", "Bytes the cache wrote to the LUN."},
	{"iscsifs_cache_readahead_bytes_total", "counter", "file,target,lun", "Bytes fetched by read-ahead."},
	{"iscsifs_cache_readahead_window_bytes", "gauge", "file,target,lun", "Current largest read-ahead window."},
	{"iscsifs_cache_dirty_bytes", "gauge", "file,target,lun", "Bytes written but not yet on the target."},
	{"iscsifs_cache_cached_bytes", "gauge", "file,target,lun", "Bytes held in the cache."},
	{"iscsifs_cache_evictions_total", "counter", "file,target,lun", "Cache blocks evicted."},
	{"iscsifs_cache_writeback_errors_total", "counter", "file,target,lun", "Failed write-backs."},
	{"iscsifs_lun_size_bytes", "gauge", "file,target,lun", "Capacity of the LUN."},
	{"iscsifs_path_active", "gauge", "target,portal", "1 for the path the session's connection uses, else 0."},
	{"iscsifs_path_logins_total", "counter", "target,portal", "Logins through the path that succeeded."},
	{"iscsifs_path_login_failures_total", "counter", "target,portal", "Logins through the path that failed (or led to another LU)."},
}

// statsTypes are the library structs whose tagged fields become metrics.
var statsTypes = []reflect.Type{reflect.TypeFor[initiator.Stats](), reflect.TypeFor[cache.Stats]()}

// TestMetricsUnchanged: the collector describes exactly the metrics of
// metricsBefore, with the same help and labels, and the Stats-derived ones
// have the same type.
func TestMetricsUnchanged(t *testing.T) {
	want := map[string]string{} // Desc.String() → type
	for _, m := range metricsBefore {
		want[prometheus.NewDesc(m.name, m.help, strings.Split(m.labels, ","), nil).String()] = m.typ
	}
	ch := make(chan *prometheus.Desc, 100)
	newMetricsCollector(nil).Describe(ch)
	close(ch)
	got := map[string]bool{}
	for d := range ch {
		got[d.String()] = true
		if _, ok := want[d.String()]; !ok {
			t.Errorf("new or changed metric %s", d)
		}
	}
	for d := range want {
		if !got[d] {
			t.Errorf("missing metric %s", d)
		}
	}
	typeName := map[prometheus.ValueType]string{prometheus.CounterValue: "counter", prometheus.GaugeValue: "gauge"}
	for _, sm := range slices.Concat([]statsMetric(sessionMetrics), cacheMetrics) {
		if typ, ok := want[sm.desc.String()]; ok && typ != typeName[sm.typ] {
			t.Errorf("%s is a %s, was a %s", sm.desc, typeName[sm.typ], typ)
		}
	}
}

// collectorFuncs makes a Collector of two functions.
type collectorFuncs struct {
	describe func(chan<- *prometheus.Desc)
	collect  func(chan<- prometheus.Metric)
}

func (c collectorFuncs) Describe(ch chan<- *prometheus.Desc) { c.describe(ch) }
func (c collectorFuncs) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

// TestStatsMetrics: every tagged field of a Stats struct is collected as
// the metric its tag names, of its type, with its value (a duration in
// seconds) and the labels given; nothing else is.
func TestStatsMetrics(t *testing.T) {
	for _, tc := range []struct {
		typ      reflect.Type
		labels   map[string]string
		collect  func(ch chan<- prometheus.Metric, st any)
		describe func(ch chan<- *prometheus.Desc)
	}{
		{
			typ:    reflect.TypeFor[initiator.Stats](),
			labels: map[string]string{"target": "iqn.2026-01.test:t"},
			collect: func(ch chan<- prometheus.Metric, st any) {
				sessionMetrics.collect(ch, st.(initiator.Stats), "iqn.2026-01.test:t")
			},
			describe: sessionMetrics.describe,
		},
		{
			typ:    reflect.TypeFor[cache.Stats](),
			labels: map[string]string{"file": "lun1", "target": "iqn.2026-01.test:t", "lun": "1"},
			collect: func(ch chan<- prometheus.Metric, st any) {
				cacheMetrics.collect(ch, st.(cache.Stats), "lun1", "iqn.2026-01.test:t", "1")
			},
			describe: cacheMetrics.describe,
		},
	} {
		t.Run(tc.typ.String(), func(t *testing.T) {
			// Distinct values: field i holds 1000+i (durations: that many
			// half seconds), so a metric reading the wrong field shows.
			st := reflect.New(tc.typ).Elem()
			want := map[string]float64{} // field → value
			for i := range tc.typ.NumField() {
				f := st.Field(i)
				switch {
				case f.Type() == reflect.TypeFor[time.Duration]():
					f.SetInt(int64(1000+i) * int64(time.Second/2))
					want[tc.typ.Field(i).Name] = float64(1000+i) / 2
				case f.CanInt():
					f.SetInt(int64(1000 + i))
					want[tc.typ.Field(i).Name] = float64(1000 + i)
				case f.CanUint():
					f.SetUint(uint64(1000 + i))
					want[tc.typ.Field(i).Name] = float64(1000 + i)
				}
			}
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(collectorFuncs{tc.describe, func(ch chan<- prometheus.Metric) { tc.collect(ch, st.Interface()) }})
			families, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			byName := map[string]*dto.MetricFamily{}
			for _, mf := range families {
				byName[mf.GetName()] = mf
			}
			tagged := 0
			for i := range tc.typ.NumField() {
				f := tc.typ.Field(i)
				tag, ok := f.Tag.Lookup("metric")
				if !ok || tag == "-" {
					continue
				}
				tagged++
				parts := strings.SplitN(tag, ",", 3)
				name, typ := "iscsifs_"+parts[0], parts[1]
				mf := byName[name]
				if mf == nil {
					t.Errorf("%s: no metric %s", f.Name, name)
					continue
				}
				if len(mf.GetMetric()) != 1 {
					t.Errorf("%s: %d samples of %s, want 1", f.Name, len(mf.GetMetric()), name)
					continue
				}
				m := mf.GetMetric()[0]
				var got float64
				switch typ {
				case "counter":
					if mf.GetType() != dto.MetricType_COUNTER {
						t.Errorf("%s: %s is a %v, want a counter", f.Name, name, mf.GetType())
					}
					got = m.GetCounter().GetValue()
				case "gauge":
					if mf.GetType() != dto.MetricType_GAUGE {
						t.Errorf("%s: %s is a %v, want a gauge", f.Name, name, mf.GetType())
					}
					got = m.GetGauge().GetValue()
				default:
					t.Errorf("%s: metric type %q", f.Name, typ)
				}
				if got != want[f.Name] {
					t.Errorf("%s: %s = %v, want %v", f.Name, name, got, want[f.Name])
				}
				labels := map[string]string{}
				for _, lp := range m.GetLabel() {
					labels[lp.GetName()] = lp.GetValue()
				}
				if !maps.Equal(labels, tc.labels) {
					t.Errorf("%s: %s labels %v, want %v", f.Name, name, labels, tc.labels)
				}
			}
			if tagged == 0 || len(families) != tagged {
				t.Errorf("%d metrics from %d tagged fields", len(families), tagged)
			}
		})
	}
}

// TestStatsFieldsTagged: every number in a Stats struct says whether it is
// a metric, so that a new counter cannot be left off /metrics by oversight.
func TestStatsFieldsTagged(t *testing.T) {
	for _, typ := range statsTypes {
		for i := range typ.NumField() {
			f := typ.Field(i)
			if _, ok := f.Tag.Lookup("metric"); !ok && f.IsExported() && isNumber(f.Type) {
				t.Errorf(`%s.%s: a number without a metric tag: add metric:"name,counter|gauge,help" (exported as iscsifs_name) or metric:"-"`, typ, f.Name)
			}
		}
	}
}
