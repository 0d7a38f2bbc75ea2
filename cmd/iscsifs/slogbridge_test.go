package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestSlogToZerolog: the libraries' slog records come out of the command's
// zerolog logger with the same level, message and typed fields, and below
// the logger's level not at all.
func TestSlogToZerolog(t *testing.T) {
	tests := []struct {
		name string
		log  func(*slog.Logger)
		want map[string]any // nil: no line
	}{
		{"typed fields", func(l *slog.Logger) {
			l.Warn("connection lost", "portal", "127.0.0.1:3260", "attempt", 3, "lun", uint64(1), "ok", true, "time2wait", 2*time.Second)
		}, map[string]any{"level": "warn", "message": "connection lost", "portal": "127.0.0.1:3260", "attempt": 3.0, "lun": 1.0, "ok": true, "time2wait": 2000.0}},
		{"err is zerolog's error field", func(l *slog.Logger) {
			l.Error("write-back failed", "err", errors.New("boom"), "cause", errors.New("lost"))
		}, map[string]any{"level": "error", "error": "boom", "cause": "lost"}},
		{"attrs and groups", func(l *slog.Logger) {
			l.With("target", "iqn.x").WithGroup("path").Info("up", "portal", "a", slog.Group("g", "n", 1))
		}, map[string]any{"level": "info", "target": "iqn.x", "path.portal": "a", "path.g.n": 1.0}},
		{"below the level", func(l *slog.Logger) { l.Debug("noise", "x", 1) }, nil},
		{"empty key left out", func(l *slog.Logger) { l.Info("m", slog.Attr{}) }, map[string]any{"message": "m"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tc.log(slogTo(zerolog.New(&buf).Level(zerolog.InfoLevel)))
			if tc.want == nil {
				if buf.Len() != 0 {
					t.Fatalf("logged %s", buf.String())
				}
				return
			}
			var got map[string]any
			if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
				t.Fatalf("%v: %s", err, buf.String())
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v (%T), want %v in %s", k, got[k], got[k], v, buf.String())
				}
			}
			if _, ok := got[""]; ok {
				t.Errorf("field with an empty key: %s", buf.String())
			}
		})
	}
}
