package cache

import (
	"time"

	"log/slog"
)

// Defaults used by New for zero Options fields (ReadAhead excepted: 0 disables
// read-ahead, so callers that want it start from DefaultOptions).
const (
	DefaultSize          = 256 << 20
	DefaultReadAhead     = 8 << 20
	DefaultFlushInterval = 5 * time.Second
	DefaultParallel      = 32
)

// Options configure a Cache.
type Options struct {
	Size          int64         // cache bytes bound (default 256 MiB)
	ReadAhead     int64         // max read-ahead window (default 8 MiB, capped at Size/4); 0 disables
	WriteThrough  bool          // every write durable before WriteAtContext returns (device write + SyncContext)
	FlushInterval time.Duration // write-back timer (default 5s); negative disables the timer
	Parallel      int           // max concurrent device requests issued by the cache (default 32)
	// Logger gets the cache's log records; nil logs nothing.
	Logger *slog.Logger
}

// DefaultOptions returns the documented defaults, read-ahead included, with a
// disabled logger.
func DefaultOptions() Options {
	return Options{
		Size:          DefaultSize,
		ReadAhead:     DefaultReadAhead,
		FlushInterval: DefaultFlushInterval,
		Parallel:      DefaultParallel,
	}
}

// orDiscard is l, or a logger that drops everything when l is nil.
func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
