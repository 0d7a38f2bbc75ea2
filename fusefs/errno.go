package fusefs

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"syscall"
)

// ErrnoMapper turns an error from a File into the errno the application sees.
// It reports false when it does not recognise the error. cmd/ adds mappers for
// the SCSI package's sentinel errors through [Options.ErrnoMappers], so that
// fusefs does not depend on the initiator.
// It is an alias so that plain func literals and slices of them fit.
type ErrnoMapper = func(err error) (syscall.Errno, bool)

// defaultMappers run after Options.ErrnoMappers. Anything they do not
// recognise becomes EIO.
var defaultMappers = []ErrnoMapper{
	// An errno from below (e.g. a file-backed test device) passes through.
	func(err error) (syscall.Errno, bool) {
		var errno syscall.Errno
		if errors.As(err, &errno) && errno != 0 {
			return errno, true
		}
		return 0, false
	},
	func(err error) (syscall.Errno, bool) {
		return syscall.EACCES, errors.Is(err, fs.ErrPermission)
	},
	// Timeouts inside the initiator or cache (a command timeout, a session
	// replacement timeout) are I/O errors for the application, as they are
	// for a SCSI disk; ETIMEDOUT from read(2) would surprise most programs.
	// A cancelled context that was not our interrupt (the session shutting
	// down) is the same.
	func(err error) (syscall.Errno, bool) {
		return syscall.EIO, errors.Is(err, os.ErrDeadlineExceeded) ||
			errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
	},
	func(err error) (syscall.Errno, bool) {
		return syscall.EIO, errors.Is(err, io.ErrUnexpectedEOF)
	},
}

// toErrno maps err, returned by a File method that was given ctx, to an errno.
// It is the only place where errors become errnos.
//
// Reads are given the FUSE request context, which go-fuse cancels when the
// kernel sends INTERRUPT (the reading process got a signal): then the read
// fails with EINTR. Writes, flushes, syncs and discards are given a context
// without that cancellation (context.WithoutCancel), because abandoning a
// write half-way would leave the LUN with part of the data and a write(2)
// that the application believes failed; their context errors never become
// EINTR.
func (m *Server) toErrno(ctx context.Context, err error) syscall.Errno {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return syscall.EINTR
	}
	for _, mappers := range [][]ErrnoMapper{m.mappers, defaultMappers} {
		for _, mapper := range mappers {
			if errno, ok := mapper(err); ok && errno != 0 {
				return errno
			}
		}
	}
	return syscall.EIO
}

// fail maps err like toErrno and logs it once, at warn level, with the
// operation and the file's path. Interrupted reads are routine (a signal
// during read) and only logged at debug level.
func (m *Server) fail(ctx context.Context, op, path string, err error) syscall.Errno {
	errno := m.toErrno(ctx, err)
	level := slog.LevelWarn
	if errno == syscall.EINTR {
		level = slog.LevelDebug
	}
	m.log.Log(ctx, level, "fuse request failed", "op", op, "path", path, "err", err, "errno", errno.Error())
	return errno
}
