package main

import (
	"context"
	"log/slog"

	"github.com/rs/zerolog"
)

// The libraries (initiator, cache, fusefs) log through log/slog so that they
// bring no logging package to their callers; the command line logs through
// zerolog (console or JSON, --log-level). zerologHandler carries the
// libraries' records into the command's zerolog logger, so that one log has
// one format.

// slogTo returns a slog.Logger whose records go to log.
func slogTo(log zerolog.Logger) *slog.Logger {
	return slog.New(&zerologHandler{log: log})
}

type zerologHandler struct {
	log    zerolog.Logger
	attrs  []slog.Attr // from WithAttrs, already qualified by their groups
	prefix string      // the open groups, "a.b."
}

func zerologLevel(l slog.Level) zerolog.Level {
	switch {
	case l < slog.LevelInfo:
		return zerolog.DebugLevel
	case l < slog.LevelWarn:
		return zerolog.InfoLevel
	case l < slog.LevelError:
		return zerolog.WarnLevel
	default:
		return zerolog.ErrorLevel
	}
}

func (h *zerologHandler) Enabled(_ context.Context, l slog.Level) bool {
	zl := zerologLevel(l)
	return zl >= h.log.GetLevel() && zl >= zerolog.GlobalLevel()
}

func (h *zerologHandler) Handle(_ context.Context, r slog.Record) error {
	ev := h.log.WithLevel(zerologLevel(r.Level))
	if ev == nil {
		return nil
	}
	for _, a := range h.attrs {
		addAttr(ev, "", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		addAttr(ev, h.prefix, a)
		return true
	})
	ev.Msg(r.Message)
	return nil
}

func (h *zerologHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := *h
	out.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range attrs {
		a.Key = h.prefix + a.Key
		out.attrs = append(out.attrs, a)
	}
	return &out
}

func (h *zerologHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	out := *h
	out.prefix = h.prefix + name + "."
	return &out
}

// addAttr adds a to ev as a zerolog field of the same type. An error under
// the key "err" becomes zerolog's error field, as the command's own log
// lines write it.
func addAttr(ev *zerolog.Event, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if a.Key == "" && v.Kind() != slog.KindGroup {
		return // slog's rule: an attribute without a key is left out
	}
	key := prefix + a.Key
	switch v.Kind() {
	case slog.KindGroup:
		p := prefix
		if a.Key != "" {
			p = key + "."
		}
		for _, g := range v.Group() {
			addAttr(ev, p, g)
		}
		return
	case slog.KindString:
		ev.Str(key, v.String())
	case slog.KindDuration: // milliseconds, as zerolog writes durations
		ev.Dur(key, v.Duration())
	case slog.KindTime:
		ev.Time(key, v.Time())
	default:
		if err, ok := v.Any().(error); ok {
			if key == "err" {
				ev.Err(err)
			} else {
				ev.AnErr(key, err)
			}
			return
		}
		ev.Interface(key, v.Any()) // numbers and bools encode as themselves
	}
}
