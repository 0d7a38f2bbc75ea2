package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/iscsifs/iscsifs/initiator"
)

// metricsCollector exposes a mount's counters (the same as stats.json) as
// Prometheus metrics, read at scrape time.
type metricsCollector struct {
	m *mounted

	commands, errors, readBytes, writeBytes *prometheus.Desc
	inFlight, reconnects, up, latency       *prometheus.Desc
	cacheHits, cacheMisses, devReadBytes    *prometheus.Desc
	devWriteBytes, readAhead, raWindow      *prometheus.Desc
	dirty, cached, evictions, wbErrors      *prometheus.Desc
	size, uncached                          *prometheus.Desc
	pathActive, pathLogins, pathFailures    *prometheus.Desc
}

func newMetricsCollector(m *mounted) *metricsCollector {
	target := []string{"target"}
	path := []string{"target", "portal"}
	file := []string{"file", "target", "lun"}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc("iscsifs_"+name, help, labels, nil)
	}
	return &metricsCollector{
		m:             m,
		commands:      d("commands_total", "SCSI commands completed or failed.", target),
		errors:        d("command_errors_total", "SCSI commands that failed in transport.", target),
		readBytes:     d("read_bytes_total", "Bytes read from the target.", target),
		writeBytes:    d("write_bytes_total", "Bytes written to the target.", target),
		inFlight:      d("commands_in_flight", "SCSI commands outstanding now.", target),
		reconnects:    d("reconnects_total", "Times the session was re-established.", target),
		up:            d("session_up", "1 when the session is logged in, 0 while recovering or unavailable.", target),
		latency:       d("command_latency_seconds", "SCSI command latency (power-of-two buckets).", target),
		cacheHits:     d("cache_hits_total", "Reads served from the cache.", file),
		cacheMisses:   d("cache_misses_total", "Reads that needed the target.", file),
		uncached:      d("cache_uncached_reads_total", "Random reads served straight from the target, around the cache.", file),
		devReadBytes:  d("cache_device_read_bytes_total", "Bytes the cache read from the LUN.", file),
		devWriteBytes: d("cache_device_write_bytes_total", "Bytes the cache wrote to the LUN.", file),
		readAhead:     d("cache_readahead_bytes_total", "Bytes fetched by read-ahead.", file),
		raWindow:      d("cache_readahead_window_bytes", "Current largest read-ahead window.", file),
		dirty:         d("cache_dirty_bytes", "Bytes written but not yet on the target.", file),
		cached:        d("cache_cached_bytes", "Bytes held in the cache.", file),
		evictions:     d("cache_evictions_total", "Cache blocks evicted.", file),
		wbErrors:      d("cache_writeback_errors_total", "Failed write-backs.", file),
		size:          d("lun_size_bytes", "Capacity of the LUN.", file),
		pathActive:    d("path_active", "1 for the path the session's connection uses, else 0.", path),
		pathLogins:    d("path_logins_total", "Logins through the path that succeeded.", path),
		pathFailures:  d("path_login_failures_total", "Logins through the path that failed (or led to another LU).", path),
	}
}

func (mc *metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(mc, ch)
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
		counter(mc.commands, float64(st.Commands), t)
		counter(mc.errors, float64(st.Errors), t)
		counter(mc.readBytes, float64(st.ReadBytes), t)
		counter(mc.writeBytes, float64(st.WriteBytes), t)
		gauge(mc.inFlight, float64(st.InFlight), t)
		counter(mc.reconnects, float64(st.Reconnects), t)
		up := 0.0
		if st.State == initiator.StateLoggedIn {
			up = 1
		}
		gauge(mc.up, up, t)
		ch <- latencyHistogram(mc.latency, st, t)
		for _, p := range s.Paths() {
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
		st := f.Stats()
		labels := []string{f.path, f.lun.Session().Target(), strconv.FormatUint(f.lun.Number(), 10)}
		counter(mc.cacheHits, float64(st.Hits), labels...)
		counter(mc.cacheMisses, float64(st.Misses), labels...)
		counter(mc.uncached, float64(st.UncachedReads), labels...)
		counter(mc.devReadBytes, float64(st.DeviceReadBytes), labels...)
		counter(mc.devWriteBytes, float64(st.DeviceWriteBytes), labels...)
		counter(mc.readAhead, float64(st.ReadAheadBytes), labels...)
		gauge(mc.raWindow, float64(st.ReadAheadWindow), labels...)
		gauge(mc.dirty, float64(st.DirtyBytes), labels...)
		gauge(mc.cached, float64(st.CachedBytes), labels...)
		counter(mc.evictions, float64(st.Evictions), labels...)
		counter(mc.wbErrors, float64(st.WritebackErrors), labels...)
		gauge(mc.size, float64(f.Size()), labels...)
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
