// Package initiator is an iSCSI initiator (RFC 7143) in pure Go: it logs in
// to a target over TCP and serves its logical units (LUNs) as block devices,
// with no kernel module and no cgo.
//
// # From a URL to a LUN
//
// A LUN is named by a URL as libiscsi and qemu write it,
// iscsi://[user[%secret]@]host[:port]/target-iqn/lun (see URL). Open logs in
// and opens the LUN; the LUN owns its session, and its Close logs out:
//
//	lun, err := initiator.Open(ctx, "iscsi://192.0.2.10/iqn.2003-01.org.example:disk1/0", initiator.Config{})
//	if err != nil {
//		return err
//	}
//	defer lun.Close()
//	n, err := lun.ReadAt(buf, 0)
//
// The zero Config works: default initiator name, negotiation and timeouts,
// no logging. Underneath, the model has three levels. Discover asks a
// portal (host:port) which targets it offers. Login opens a Session to one
// target: one TCP connection in Full Feature Phase, ErrorRecoveryLevel 0.
// Session.OpenLUN probes one of the session's LUNs (Session.ReportLUNs lists
// them) and returns a *LUN; a program that uses several LUNs of a target
// opens them all on one session and closes the session at the end.
//
// # I/O
//
// A LUN is an io.ReaderAt and an io.WriterAt of Size bytes, at any offset
// and length (partial blocks are read and merged), with context-taking
// variants (ReadAtContext, WriteAtContext, SyncContext). Large requests are
// split at the target's limits and their pieces sent at once. Sync makes
// written data durable with SYNCHRONIZE CACHE, sent only when a write since
// the last one may sit in the target's write cache: WriteDurableAtContext
// writes with FORCE UNIT ACCESS where the target offers it, so that the
// Sync after a small write has nothing to send. Discard deallocates (UNMAP,
// WRITE SAME) and LBAStatus reports allocation. Execute sends any other
// SCSI command as a raw CDB, with a data-in or a data-out buffer; Session.Do
// does the same for any LUN of a session.
//
// # Concurrency
//
// Sessions and LUNs are safe for concurrent use, and concurrency is how they
// go fast: each goroutine's command is in flight at the same time as the
// others', up to Config.QueueDepth and the target's command window. One
// goroutine at a time reads a connection and matches answers to commands:
// the caller waiting for a lone command reads its own answer (no hand-off
// between goroutines), and a reader goroutine takes over while several are
// outstanding or none is. A caller's buffer is never touched after its call
// has returned, even when its context ended first.
//
// # Errors
//
// Errors are typed, for errors.As and errors.Is:
//
//   - *LoginError: a login the target refused or that failed; IsAuthFailure
//     tells a CHAP or authorization failure apart.
//   - *CommandError: a failed SCSI command, naming the target, LUN and
//     command. It wraps the cause: a *scsi.StatusError for a SCSI status,
//     whose Sense is the decoded sense data, matched by the scsi package's
//     sentinels (errors.Is(err, scsi.ErrWriteProtected) ...); or one of the
//     errors below.
//   - *SessionUnavailableError: the connection was lost and not
//     re-established within Config.ReplacementTimeout.
//   - ErrSessionClosed, ErrCommandTimeout, ErrDeviceChanged, and the
//     context's error when a context ends first.
//   - *RangeError: I/O beyond the end of the LUN (reads end with io.EOF
//     there instead, as os.File's do).
//
// # Recovery and timeouts
//
// A lost connection is not an error the program sees at once. The session
// logs in again in the background (same ISID, with back-off), checks that
// each opened LUN is still the same device (ErrDeviceChanged if not, and
// then I/O is refused), and issues again the commands that were waiting.
// Commands wait for this up to Config.ReplacementTimeout, then fail with a
// *SessionUnavailableError while reconnection goes on. An idle connection is
// checked with NOP-Out pings (Config.KeepAlive, KeepAliveWait); a command
// without an answer for Config.CommandTimeout is aborted and issued again,
// then moved to a new connection, then failed with ErrCommandTimeout. A
// LUN's capacity and mode are re-read when the target reports a change
// (LUN.OnResize). Every goroutine the session starts ends with its Close,
// which waits for them no longer than its context allows.
//
// # Several paths
//
// Config.Portals (and Config.DiscoverPortals) give a session other portals
// of the same target: recovery logs in through them when the portal in use
// is lost (failover), after checking that each open LUN is the same LU
// (VPD 0x83, else 0x80); Session.Paths reports them. OpenMultipath uses all
// paths at once (active-active): a session per portal, commands spread by a
// PathSelector and sent again down another path when theirs fails; a
// MultipathLUN is an io.ReaderAt and io.WriterAt like a LUN. With a target
// that reports ALUA (INQUIRY TPGS), each path's asymmetric access state
// (PathStatus.ALUA) decides which paths are used: active/optimized first,
// standby only when no active path is left (see ALUAState).
//
// # Logging
//
// The library logs through Config.Logger, a *log/slog.Logger, so it brings
// no logging package of its own: any slog.Handler receives the records (the
// iscsifs command passes them on to zerolog). A nil Logger discards
// everything, so a program that sets nothing sees no output; secrets are
// never logged at any level.
package initiator
