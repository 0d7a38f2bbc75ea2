package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/iscsifs/iscsifs/cache"
	"github.com/iscsifs/iscsifs/initiator"
)

// metricsCollector exposes a mount's counters (the same as stats.json) as
// Prometheus metrics, read at scrape time. The counters and gauges of
// initiator.Stats and cache.Stats come from their metric tags
// (sessionMetrics, cacheMetrics); the rest is declared here.
type metricsCollector struct {
	m *mounted

	up, latency, size                    *prometheus.Desc
	pathActive, pathLogins, pathFailures *prometheus.Desc
}

// The label names of a session's metrics, a path's and a LUN file's.
var (
	targetLabels = []string{"target"}
	pathLabels   = []string{"target", "portal"}
	fileLabels   = []string{"file", "target", "lun"}
)

// sessionMetrics and cacheMetrics are read once from the Stats structs'
// tags, so that a tagged field added there is on /metrics with no edit here.
var (
	sessionMetrics = statsMetrics[initiator.Stats](targetLabels)
	cacheMetrics   = statsMetrics[cache.Stats](fileLabels)
)

func metricDesc(name, help string, labels []string) *prometheus.Desc {
	return prometheus.NewDesc("iscsifs_"+name, help, labels, nil)
}

func newMetricsCollector(m *mounted) *metricsCollector {
	return &metricsCollector{
		m:            m,
		up:           metricDesc("session_up", "1 when the session is logged in, 0 while recovering or unavailable.", targetLabels),
		latency:      metricDesc("command_latency_seconds", "SCSI command latency (power-of-two buckets).", targetLabels),
		size:         metricDesc("lun_size_bytes", "Capacity of the LUN.", fileLabels),
		pathActive:   metricDesc("path_active", "1 for the path the session's connection uses, else 0.", pathLabels),
		pathLogins:   metricDesc("path_logins_total", "Logins through the path that succeeded.", pathLabels),
		pathFailures: metricDesc("path_login_failures_total", "Logins through the path that failed (or led to another LU).", pathLabels),
	}
}

// Describe lists every metric up front (rather than by collecting), so that
// the registry knows them whatever the mount holds when it is registered.
func (mc *metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	sessionMetrics.describe(ch)
	cacheMetrics.describe(ch)
	for _, d := range []*prometheus.Desc{mc.up, mc.latency, mc.size, mc.pathActive, mc.pathLogins, mc.pathFailures} {
		ch <- d
	}
}

func (mc *metricsCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	sessions, files, _ := mc.m.snapshot()
	for _, s := range sessions {
		st := s.Stats()
		t := s.Target()
		sessionMetrics.collect(ch, st, t)
		up := 0.0
		if st.State == initiator.StateLoggedIn {
			up = 1
		}
		gauge(mc.up, up, t)
		ch <- latencyHistogram(mc.latency, st, t)
		for _, p := range mc.m.pathsOf(s) {
			active := 0.0
			if p.State == initiator.PathActive {
				active = 1
			}
			gauge(mc.pathActive, active, t, p.Portal)
			counter(mc.pathLogins, float64(p.Logins), t, p.Portal)
			counter(mc.pathFailures, float64(p.Failures), t, p.Portal)
		}
	}
	for _, f := range files {
		labels := []string{f.path, f.lun.Session().Target(), strconv.FormatUint(f.lun.Number(), 10)}
		cacheMetrics.collect(ch, f.Stats(), labels...)
		gauge(mc.size, float64(f.Size()), labels...)
	}
}

// statsMetric is a Prometheus metric read from one field of a Stats struct.
type statsMetric struct {
	field int // index of the field in the struct
	desc  *prometheus.Desc
	typ   prometheus.ValueType
}

// statsMetricSet is the metrics of the Stats struct T, typed so that only a T
// can be collected with them.
type statsMetricSet[T any] []statsMetric

// statsMetrics reads the metric tags of the Stats struct T: a field tagged
// metric:"name,type,help" (type counter or gauge) becomes iscsifs_<name> with
// the given labels; untagged fields and metric:"-" are left out. A malformed
// tag panics, at start-up (the package variables above), so no test misses it.
func statsMetrics[T any](labels []string) statsMetricSet[T] {
	t := reflect.TypeFor[T]()
	var out statsMetricSet[T]
	for i := range t.NumField() {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("metric")
		if !ok || tag == "-" {
			continue
		}
		name, rest, _ := strings.Cut(tag, ",")
		typ, help, _ := strings.Cut(rest, ",")
		var vt prometheus.ValueType
		switch typ {
		case "counter":
			vt = prometheus.CounterValue
		case "gauge":
			vt = prometheus.GaugeValue
		default:
			panic(fmt.Sprintf("%s.%s: metric tag %q: want name,counter|gauge,help", t, f.Name, tag))
		}
		if name == "" || help == "" || !isNumber(f.Type) {
			panic(fmt.Sprintf("%s.%s: metric tag %q on a %s: want name,type,help on a number", t, f.Name, tag, f.Type))
		}
		out = append(out, statsMetric{field: i, desc: metricDesc(name, help, labels), typ: vt})
	}
	return out
}

// durationType fields are reported in seconds, Prometheus' base unit.
var durationType = reflect.TypeFor[time.Duration]()

// isNumber reports whether a field of type t can be a metric's value.
func isNumber(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

func (ms statsMetricSet[T]) describe(ch chan<- *prometheus.Desc) {
	for _, sm := range ms {
		ch <- sm.desc
	}
}

// collect sends the metrics of st.
func (ms statsMetricSet[T]) collect(ch chan<- prometheus.Metric, st T, labels ...string) {
	v := reflect.ValueOf(st)
	for _, sm := range ms {
		ch <- prometheus.MustNewConstMetric(sm.desc, sm.typ, metricValue(v.Field(sm.field)), labels...)
	}
}

func metricValue(v reflect.Value) float64 {
	switch {
	case v.Type() == durationType:
		return time.Duration(v.Int()).Seconds()
	case v.CanInt():
		return float64(v.Int())
	case v.CanUint():
		return float64(v.Uint())
	default:
		return v.Float()
	}
}

// latencyHistogram is a session's command latency histogram: the library's
// power-of-two buckets (cumulative, upper bounds in seconds) and its sum.
func latencyHistogram(d *prometheus.Desc, st initiator.Stats, labels ...string) prometheus.Metric {
	buckets := map[float64]uint64{}
	var count uint64
	for i, n := range st.LatencyBuckets {
		count += n
		buckets[float64(uint64(1)<<i)/1e6] = count
	}
	return prometheus.MustNewConstHistogram(d, count, st.LatencySum.Seconds(), buckets, labels...)
}

// serveMetrics serves /metrics on addr until ctx ends. It returns once the
// listener is bound, so a bad address fails the mount at once.
func serveMetrics(ctx context.Context, addr string, m *mounted, log zerolog.Logger) error {
	reg := prometheus.NewRegistry()
	if err := reg.Register(newMetricsCollector(m)); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn().Err(err).Msg("metrics server")
		}
	}()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	log.Info().Str("addr", ln.Addr().String()).Msg("serving Prometheus metrics at /metrics")
	return nil
}
