package initiator

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// latencyBuckets are powers of two of microseconds: bucket i counts
// latencies in [2^(i-1), 2^i) µs, the last one everything longer (~35 min).
const latencyBuckets = 32

// sessionStats are counters updated without locks on the I/O path.
type sessionStats struct {
	commands   atomic.Uint64
	errors     atomic.Uint64
	readBytes  atomic.Uint64
	writeBytes atomic.Uint64
	latency    [latencyBuckets]atomic.Uint64
	latencySum atomic.Int64 // nanoseconds, of the commands in latency
	// PDUs received, and those of them read by the goroutine waiting for
	// them (conn.await) instead of handed over by readLoop.
	pdus         atomic.Uint64
	pdusByCaller atomic.Uint64
	// PDUs queued for sending, and the write system calls that sent them.
	pdusSent   atomic.Uint64
	sendWrites atomic.Uint64
	// Durability: WRITEs with FORCE UNIT ACCESS, SYNCHRONIZE CACHEs sent,
	// and syncs that had nothing to flush.
	fuaWrites    atomic.Uint64
	syncsSent    atomic.Uint64
	syncsSkipped atomic.Uint64
}

func (st *sessionStats) record(cmd *Command, took time.Duration, err error) {
	st.commands.Add(1)
	if err != nil {
		st.errors.Add(1)
		return
	}
	st.readBytes.Add(uint64(len(cmd.Read)))
	st.writeBytes.Add(uint64(len(cmd.Write)))
	us := uint64(took.Microseconds())
	b := min(bits.Len64(us), latencyBuckets-1)
	st.latency[b].Add(1)
	st.latencySum.Add(int64(took))
}

// Stats is a snapshot of a session's counters since login.
//
// A field's metric tag names the Prometheus metric the iscsifs command
// exports it as (prefixed iscsifs_, labelled with the target):
// metric:"name,type,help" with type counter or gauge, or metric:"-" for a
// number left out of the metrics or exported otherwise. Every numeric field
// has one of the two.
type Stats struct {
	Commands   uint64 `json:"commands" metric:"commands_total,counter,SCSI commands completed or failed."`
	Errors     uint64 `json:"errors" metric:"command_errors_total,counter,SCSI commands that failed in transport."`
	ReadBytes  uint64 `json:"read_bytes" metric:"read_bytes_total,counter,Bytes read from the target."`
	WriteBytes uint64 `json:"write_bytes" metric:"write_bytes_total,counter,Bytes written to the target."`
	InFlight   int    `json:"in_flight" metric:"commands_in_flight,gauge,SCSI commands outstanding now."`
	PeakFlight int    `json:"peak_in_flight" metric:"-"`
	Reconnects int    `json:"reconnects" metric:"reconnects_total,counter,Times the session was re-established."`
	// PDUsReadByCaller of PDUsReceived were read by the goroutine waiting
	// for them, with no hand-off between goroutines (the fast path for a
	// command alone on its connection).
	PDUsReceived     uint64 `json:"pdus_received" metric:"pdus_received_total,counter,PDUs received from the target."`
	PDUsReadByCaller uint64 `json:"pdus_read_by_caller" metric:"pdus_read_by_caller_total,counter,PDUs read by the goroutine waiting for them, without a hand-off between goroutines."`
	// PDUsSent went to the target in SendWrites write system calls: the
	// commands sent together share one.
	PDUsSent   uint64 `json:"pdus_sent" metric:"pdus_sent_total,counter,PDUs sent to the target."`
	SendWrites uint64 `json:"send_writes" metric:"send_writes_total,counter,Write system calls that sent PDUs (commands sent together share one)."`
	// A sync (fsync) sends SYNCHRONIZE CACHE only when a write since the
	// last one may sit in the target's write cache; small fsyncs write
	// with FORCE UNIT ACCESS instead (LUN.WriteDurableAtContext).
	FUAWrites    uint64       `json:"fua_writes" metric:"fua_writes_total,counter,WRITE commands sent with FORCE UNIT ACCESS (durable on completion)."`
	SyncsSent    uint64       `json:"syncs_sent" metric:"sync_cache_total,counter,SYNCHRONIZE CACHE commands completed."`
	SyncsSkipped uint64       `json:"syncs_skipped" metric:"sync_cache_skipped_total,counter,Syncs that needed no SYNCHRONIZE CACHE: nothing written since the last one, or written with FUA."`
	State        SessionState `json:"state" metric:"-"` // exported as session_up
	// Latency percentiles of successful commands (upper bucket bounds,
	// within a factor of two).
	LatencyP50  time.Duration `json:"latency_p50_ns" metric:"-"`
	LatencyP99  time.Duration `json:"latency_p99_ns" metric:"-"`
	LatencyP999 time.Duration `json:"latency_p999_ns" metric:"-"`
	// LatencyBuckets[i] counts commands that took less than 2^i µs (and at
	// least 2^(i-1) µs).
	LatencyBuckets []uint64 `json:"latency_buckets_pow2_us"`
	// LatencySum is the total latency of the commands LatencyBuckets counts.
	// With LatencyBuckets it is exported as the command_latency_seconds histogram.
	LatencySum time.Duration `json:"latency_sum_ns" metric:"-"`
}

// Stats returns the session's counters.
func (s *Session) Stats() Stats {
	st := &s.stats
	out := Stats{
		Commands:         st.commands.Load(),
		Errors:           st.errors.Load(),
		ReadBytes:        st.readBytes.Load(),
		WriteBytes:       st.writeBytes.Load(),
		InFlight:         s.InFlight(),
		PeakFlight:       s.PeakInFlight(),
		Reconnects:       s.Reconnects(),
		PDUsReceived:     st.pdus.Load(),
		PDUsReadByCaller: st.pdusByCaller.Load(),
		PDUsSent:         st.pdusSent.Load(),
		SendWrites:       st.sendWrites.Load(),
		FUAWrites:        st.fuaWrites.Load(),
		SyncsSent:        st.syncsSent.Load(),
		SyncsSkipped:     st.syncsSkipped.Load(),
		State:            s.State(),
		LatencyBuckets:   make([]uint64, latencyBuckets),
		LatencySum:       time.Duration(st.latencySum.Load()),
	}
	var total uint64
	for i := range st.latency {
		out.LatencyBuckets[i] = st.latency[i].Load()
		total += out.LatencyBuckets[i]
	}
	out.LatencyP50 = percentile(out.LatencyBuckets, total, 0.50)
	out.LatencyP99 = percentile(out.LatencyBuckets, total, 0.99)
	out.LatencyP999 = percentile(out.LatencyBuckets, total, 0.999)
	return out
}

// percentile returns the upper bound of the bucket holding quantile q.
func percentile(buckets []uint64, total uint64, q float64) time.Duration {
	if total == 0 {
		return 0
	}
	want := uint64(q*float64(total) + 0.5)
	want = max(want, 1)
	var seen uint64
	for i, n := range buckets {
		seen += n
		if seen >= want {
			return time.Duration(uint64(1)<<i) * time.Microsecond
		}
	}
	return time.Duration(uint64(1)<<(len(buckets)-1)) * time.Microsecond
}
