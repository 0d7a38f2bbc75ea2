package main

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"sync"
	"time"

	"github.com/iscsifs/iscsifs/cache"
	"github.com/iscsifs/iscsifs/fusefs"
	"github.com/iscsifs/iscsifs/initiator"
	"github.com/iscsifs/iscsifs/partition"
)

// The files a mount serves under MOUNTPOINT/.iscsifs/ (fusefs.Options.StatusFiles).
// Each is generated afresh on every open, so `cat` shows the state of that moment.
const (
	statsFile  = "stats.json"
	statusFile = "status.json"
)

// statusFiles returns the generators of stats.json and status.json for m.
func (m *mounted) statusFiles() map[string]func() ([]byte, error) {
	return map[string]func() ([]byte, error){
		statsFile:  func() ([]byte, error) { return marshalStatus(m.stats()) },
		statusFile: func() ([]byte, error) { return marshalStatus(m.status()) },
	}
}

func marshalStatus(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// mountStats is stats.json: counters and gauges of every LUN file, keyed by its
// path in the mount ("lun1", or "IQN/lun1" for a portal mount).
type mountStats struct {
	Files map[string]fileStats `json:"files"`
}

// fileStats are one LUN file's cache counters (cache.Stats) and the
// in-flight numbers of its session (shared by the LUNs of one target).
type fileStats struct {
	Target               string  `json:"target"`
	LUN                  uint64  `json:"lun"`
	Rates                rates   `json:"rates"` // over the last second (rateInterval)
	cache.Stats                  // the cache's counters, under their own json names
	SessionLatencyP50    int64   `json:"session_latency_p50_ns"` // of the session's commands
	SessionLatencyP99    int64   `json:"session_latency_p99_ns"`
	SessionLatencyP999   int64   `json:"session_latency_p999_ns"`
	SessionInFlight      int     `json:"session_in_flight"`
	SessionPeakInFlight  int     `json:"session_peak_in_flight"`
	SessionQueueDepth    int     `json:"session_queue_depth"` // lower than --queue-depth after TASK SET FULL
	CacheSize            int64   `json:"cache_size"`
	ReadAheadMax         int64   `json:"read_ahead_max"`
	WriteThrough         bool    `json:"write_through"`
	FlushIntervalSeconds float64 `json:"flush_interval_seconds"`
}

func (m *mounted) stats() mountStats {
	_, files, _ := m.snapshot()
	out := mountStats{Files: make(map[string]fileStats, len(files))}
	for _, f := range files {
		st := f.Stats()
		s := f.lun.Session()
		ss := s.Stats()
		out.Files[f.path] = fileStats{
			SessionLatencyP50:    int64(ss.LatencyP50),
			SessionLatencyP99:    int64(ss.LatencyP99),
			SessionLatencyP999:   int64(ss.LatencyP999),
			Target:               s.Target(),
			LUN:                  f.lun.Number(),
			Rates:                m.rates.get(f.path),
			Stats:                st,
			SessionInFlight:      s.InFlight(),
			SessionPeakInFlight:  s.PeakInFlight(),
			SessionQueueDepth:    s.QueueDepth(),
			CacheSize:            m.copts.Size,
			ReadAheadMax:         m.copts.ReadAhead,
			WriteThrough:         m.copts.WriteThrough,
			FlushIntervalSeconds: m.copts.FlushInterval.Seconds(),
		}
	}
	return out
}

// rateInterval is how often the counters are sampled for the rates.
const rateInterval = time.Second

// rates are one LUN file's operations and bytes per second over the last
// rateInterval: what the file was asked for (reads and writes through the
// mount) and what went to the target (device requests, after the cache).
type rates struct {
	ReadIOPS               float64 `json:"read_iops"`
	WriteIOPS              float64 `json:"write_iops"`
	ReadBytesPerSecond     float64 `json:"read_bytes_per_second"`
	WriteBytesPerSecond    float64 `json:"write_bytes_per_second"`
	DeviceReadIOPS         float64 `json:"device_read_iops"`
	DeviceWriteIOPS        float64 `json:"device_write_iops"`
	DeviceReadBytesPerSec  float64 `json:"device_read_bytes_per_second"`
	DeviceWriteBytesPerSec float64 `json:"device_write_bytes_per_second"`
}

// rateTracker samples every file's counters each rateInterval and keeps the
// rates between the last two samples, so that reading stats.json (at any
// pace, by any number of readers) always shows the last full interval.
type rateTracker struct {
	mu    sync.Mutex
	prev  map[string]rateSample
	rates map[string]rates
}

type rateSample struct {
	at time.Time
	st cache.Stats
}

// run samples until ctx ends.
func (rt *rateTracker) run(ctx context.Context, m *mounted) {
	t := time.NewTicker(rateInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			_, files, _ := m.snapshot()
			rt.sample(now, files)
		}
	}
}

func (rt *rateTracker) sample(now time.Time, files []*lunFile) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.prev == nil {
		rt.prev, rt.rates = map[string]rateSample{}, map[string]rates{}
	}
	for _, f := range files {
		cur := rateSample{at: now, st: f.Stats()}
		if p, ok := rt.prev[f.path]; ok {
			rt.rates[f.path] = ratesBetween(p, cur)
		}
		rt.prev[f.path] = cur
	}
}

func (rt *rateTracker) get(path string) rates {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.rates[path]
}

func ratesBetween(a, b rateSample) rates {
	dt := b.at.Sub(a.at).Seconds()
	if dt <= 0 {
		return rates{}
	}
	per := func(x, y int64) float64 { return math.Round(float64(y-x)/dt*10) / 10 }
	return rates{
		ReadIOPS:               per(a.st.Reads, b.st.Reads),
		WriteIOPS:              per(a.st.Writes, b.st.Writes),
		ReadBytesPerSecond:     per(a.st.ReadBytes, b.st.ReadBytes),
		WriteBytesPerSecond:    per(a.st.WriteBytes, b.st.WriteBytes),
		DeviceReadIOPS:         per(a.st.DeviceReads, b.st.DeviceReads),
		DeviceWriteIOPS:        per(a.st.DeviceWrites, b.st.DeviceWrites),
		DeviceReadBytesPerSec:  per(a.st.DeviceReadBytes, b.st.DeviceReadBytes),
		DeviceWriteBytesPerSec: per(a.st.DeviceWriteBytes, b.st.DeviceWriteBytes),
	}
}

// mountStatus is status.json: what the mount is connected to.
type mountStatus struct {
	PID        int               `json:"pid"`        // of the daemon serving the mount
	URL        string            `json:"url"`        // without secrets
	Mountpoint string            `json:"mountpoint"` // absolute
	ReadOnly   bool              `json:"read_only"`  // --read-only
	Serving    fusefs.ServeStats `json:"serving"`    // the FUSE request loop
	Targets    []targetStatus    `json:"targets"`
}

type targetStatus struct {
	Target  string                 `json:"target"`
	Portal  string                 `json:"portal"`
	State   string                 `json:"state"` // logged-in, recovering, unavailable, closed, not-logged-in
	Params  paramStatus            `json:"params"`
	Session initiator.Stats        `json:"session"`
	Paths   []initiator.PathStatus `json:"paths"`
	LUNs    []lunStatus            `json:"luns"`
}

// paramStatus is initiator.Params with JSON names.
type paramStatus struct {
	MaxRecvDataSegmentLength       int    `json:"max_recv_data_segment_length"`
	TargetMaxRecvDataSegmentLength int    `json:"target_max_recv_data_segment_length"`
	MaxBurstLength                 int    `json:"max_burst_length"`
	FirstBurstLength               int    `json:"first_burst_length"`
	InitialR2T                     bool   `json:"initial_r2t"`
	ImmediateData                  bool   `json:"immediate_data"`
	MaxOutstandingR2T              int    `json:"max_outstanding_r2t"`
	DataPDUInOrder                 bool   `json:"data_pdu_in_order"`
	DataSequenceInOrder            bool   `json:"data_sequence_in_order"`
	DefaultTime2Wait               int    `json:"default_time2wait"`
	DefaultTime2Retain             int    `json:"default_time2retain"`
	ErrorRecoveryLevel             int    `json:"error_recovery_level"`
	MaxConnections                 int    `json:"max_connections"`
	HeaderDigest                   bool   `json:"header_digest"`
	DataDigest                     bool   `json:"data_digest"`
	TargetPortalGroupTag           int    `json:"target_portal_group_tag"`
	TargetAlias                    string `json:"target_alias,omitempty"`
}

func paramsStatus(p initiator.Params) paramStatus {
	return paramStatus{
		MaxRecvDataSegmentLength:       p.MaxRecvDataSegmentLength,
		TargetMaxRecvDataSegmentLength: p.TargetMaxRecvDataSegmentLength,
		MaxBurstLength:                 p.MaxBurstLength,
		FirstBurstLength:               p.FirstBurstLength,
		InitialR2T:                     p.InitialR2T,
		ImmediateData:                  p.ImmediateData,
		MaxOutstandingR2T:              p.MaxOutstandingR2T,
		DataPDUInOrder:                 p.DataPDUInOrder,
		DataSequenceInOrder:            p.DataSequenceInOrder,
		DefaultTime2Wait:               p.DefaultTime2Wait,
		DefaultTime2Retain:             p.DefaultTime2Retain,
		ErrorRecoveryLevel:             p.ErrorRecoveryLevel,
		MaxConnections:                 p.MaxConnections,
		HeaderDigest:                   p.HeaderDigest,
		DataDigest:                     p.DataDigest,
		TargetPortalGroupTag:           p.TargetPortalGroupTag,
		TargetAlias:                    p.TargetAlias,
	}
}

type lunStatus struct {
	LUN        uint64 `json:"lun"`
	Path       string `json:"path"` // the file in the mount
	Size       int64  `json:"size"`
	BlockSize  int    `json:"block_size"`
	ReadOnly   bool   `json:"read_only"` // write-protected by the target or --read-only
	Vendor     string `json:"vendor"`
	Product    string `json:"product"`
	Serial     string `json:"serial"`
	Identifier string `json:"identifier"`
	Device     string `json:"device,omitempty"` // loop device with --attach
	// PartitionTable is "dos", "gpt" or "" (none); each partition has a
	// file at Path-partN.
	PartitionTable string       `json:"partition_table"`
	Partitions     []partStatus `json:"partitions"`
}

type partStatus struct {
	Number int    `json:"number"`
	Path   string `json:"path"`
	Start  int64  `json:"start"` // bytes into the LUN
	Size   int64  `json:"size"`
	Type   string `json:"type"` // MBR type ("83") or GPT type GUID
	Name   string `json:"name,omitempty"`
	UUID   string `json:"uuid,omitempty"`
	Device string `json:"device,omitempty"`
}

// partsStatus describes f's partition files.
func partsStatus(f *lunFile) (partition.Scheme, []partStatus) {
	f.disk.mu.Lock()
	scheme := f.disk.scheme
	f.disk.mu.Unlock()
	out := []partStatus{}
	for _, p := range f.partitions() {
		out = append(out, partStatus{
			Number: p.part.Number, Path: p.path, Start: p.part.Start, Size: p.part.Size,
			Type: p.part.Type, Name: p.part.Name, UUID: p.part.UUID, Device: deviceOf(&p.dev),
		})
	}
	return scheme, out
}

func (m *mounted) status() mountStatus {
	sessions, files, pending := m.snapshot()
	out := mountStatus{PID: os.Getpid(), URL: m.url.String(), ReadOnly: m.readOnly, Targets: make([]targetStatus, 0, len(sessions)+len(pending))}
	if srv := m.srv.Load(); srv != nil {
		out.Mountpoint = srv.Dir()
		out.Serving = srv.ServeStats()
	}
	for _, s := range sessions {
		st := s.Stats()
		ts := targetStatus{Target: s.Target(), Portal: s.Portal(), State: st.State.String(), Params: paramsStatus(s.Params()), Session: st, Paths: m.pathsOf(s), LUNs: []lunStatus{}}
		for _, f := range files {
			if f.lun.Session() != s {
				continue
			}
			scheme, parts := partsStatus(f)
			ts.LUNs = append(ts.LUNs, lunStatus{
				Device:         deviceOf(&f.dev),
				PartitionTable: string(scheme),
				Partitions:     parts,
				LUN:            f.lun.Number(),
				Path:           f.path,
				Size:           f.Size(),
				BlockSize:      f.lun.BlockSize(),
				ReadOnly:       f.ReadOnly(),
				Vendor:         f.lun.Inquiry.Vendor,
				Product:        f.lun.Inquiry.Product,
				Serial:         f.lun.Serial,
				Identifier:     f.lun.Identifier,
			})
		}
		out.Targets = append(out.Targets, ts)
	}
	// Targets of a portal mount nobody has used yet.
	for _, t := range pending {
		out.Targets = append(out.Targets, targetStatus{Target: t, Portal: m.url.Portal(), State: stateNotLoggedIn, LUNs: []lunStatus{}})
	}
	return out
}

// pathsOf is the paths of session s: its own (failover), or with
// --multipath those of the multipath LUN whose first path it is.
func (m *mounted) pathsOf(s *initiator.Session) []initiator.PathStatus {
	_, files, _ := m.snapshot()
	for _, f := range files {
		if f.mp != nil && f.lun.Session() == s {
			return f.mp.Paths()
		}
	}
	return s.Paths()
}

// stateNotLoggedIn is the state of a portal mount's target before first use.
const stateNotLoggedIn = "not-logged-in"
