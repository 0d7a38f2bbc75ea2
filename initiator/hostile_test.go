package initiator

// Hostile and broken targets (CHECKLIST sections G, J, L, M 91-97 and N):
// each test makes the fake target misbehave in one way and checks that the
// initiator ends in a clear, typed error or recovers by itself, and never
// panics, hangs, writes outside the caller's buffer or allocates what the
// target asks for beyond the negotiated limits.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iscsifs/iscsifs/initiator/pdu"
	"github.com/iscsifs/iscsifs/initiator/scsi"
)

// trap selects the READ(10) commands a hostile hook acts on: none until
// arm, then the next n.
type trap struct {
	armed atomic.Bool
	left  atomic.Int64
	hits  atomic.Int32
}

const always = 1 << 40

func (tr *trap) arm(n int64) {
	tr.left.Store(n)
	tr.armed.Store(true)
}

func (tr *trap) take(m *pdu.SCSICommand) bool {
	if m == nil || len(m.CDB) == 0 || m.CDB[0] != 0x28 || !tr.armed.Load() {
		return false
	}
	if tr.left.Add(-1) < 0 {
		return false
	}
	tr.hits.Add(1)
	return true
}

// logBuffer collects the session's log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// hostileConfig bounds everything so that a test that would hang fails
// instead: short command and replacement timeouts, no keep-alive (tests that
// want it set it).
func hostileConfig(t testing.TB, logs *logBuffer) Config {
	cfg := fakeConfig(t)
	cfg.LoginTimeout = 2 * time.Second
	cfg.CommandTimeout = 3 * time.Second
	cfg.ReplacementTimeout = 5 * time.Second
	if logs != nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return cfg
}

// bounded runs f and fails the test with every goroutine's stack if f does
// not return within d: a hang is a failure, never a test timeout.
func bounded[T any](t *testing.T, d time.Duration, f func() T) T {
	t.Helper()
	ch := make(chan T, 1)
	go func() { ch <- f() }()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("no answer within %v (hang):\n%s", d, buf)
		panic("unreachable")
	}
}

// outcome is a value and an error, for bounded calls.
type outcome[T any] struct {
	v   T
	err error
}

// boundedCall is bounded for functions returning a value and an error.
func boundedCall[T any](t *testing.T, d time.Duration, f func() (T, error)) (T, error) {
	t.Helper()
	o := bounded(t, d, func() outcome[T] {
		v, err := f()
		return outcome[T]{v, err}
	})
	return o.v, o.err
}

// readBlock reads 4 KiB at off through the LUN into a buffer with guard
// bytes after it, checks the guard, and compares with the fake's disk.
func readBlock(t *testing.T, ft *fakeTarget, l *LUN, off int64) error {
	t.Helper()
	const n, guard = 4096, 4096
	mem := make([]byte, n+guard)
	for i := range mem {
		mem[i] = 0xa5
	}
	buf := mem[:n] // cap(buf) > len(buf): an overrun would land in the guard
	_, err := l.ReadAtContext(context.Background(), buf, off)
	for i, b := range mem[n:] {
		if b != 0xa5 {
			t.Fatalf("byte %d after the caller's buffer was overwritten", i)
		}
	}
	if err != nil {
		return err
	}
	ft.mu.Lock()
	want := append([]byte(nil), ft.disk[off:off+n]...)
	ft.mu.Unlock()
	if !bytes.Equal(buf, want) {
		return fmt.Errorf("read at %d returned wrong data", off)
	}
	return nil
}

// dataInFor is a Data-In PDU carrying disk bytes for m at off.
func dataInFor(ft *fakeTarget, m *pdu.SCSICommand, off, n int, sn uint32) *pdu.DataIn {
	lba := int(binary.BigEndian.Uint32(m.CDB[2:]))
	ft.mu.Lock()
	data := append([]byte(nil), ft.disk[lba*512+off:lba*512+off+n]...)
	ft.mu.Unlock()
	return &pdu.DataIn{ITT: m.ITT, TTT: pdu.ReservedTag, DataSN: sn, BufferOffset: uint32(off), Data: data}
}

// hostileCase makes the fake answer a READ(10) in one broken way.
type hostileCase struct {
	name string
	// act answers the trapped command m on c.
	act func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand)
	// want checks the error of a read whose every attempt is answered by act.
	want func(err error) bool
	// digests negotiates CRC32C digests with the fake.
	digests bool
}

func asProtocolViolation(err error) bool {
	var pv *ProtocolViolation
	return errors.As(err, &pv)
}

// asBadPDU is a PDU the codec refuses (*pdu.ProtocolError) or one the
// session refuses (*ProtocolViolation).
func asBadPDU(err error) bool {
	var pe *pdu.ProtocolError
	return errors.As(err, &pe) || asProtocolViolation(err)
}

func asHeaderDigest(err error) bool {
	var de *pdu.DigestError
	return errors.As(err, &de) && de.Header
}

func asDataDigest(err error) bool {
	var de *pdu.DigestError
	return errors.As(err, &de) && !de.Header
}

// The connection-level cases: each breaks the framing or the numbering of the
// connection, so the initiator must drop it and reinstate the session.
var connectionCases = []hostileCase{
	{
		name: "garbage BHS with an opcode targets never send",
		act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
			b := make([]byte, pdu.BHSLen)
			rng := rand.New(rand.NewPCG(uint64(m.ITT), 1))
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			b[0] = 0x1c                         // no such opcode
			b[4], b[5], b[6], b[7] = 0, 0, 0, 0 // lengths zero: a well-framed lie
			c.sendRaw(b)
		},
		want: asBadPDU,
	},
	{
		name: "initiator opcode from the target",
		act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
			c.writeRaw(&pdu.NOPOut{Immediate: true, ITT: m.ITT, TTT: pdu.ReservedTag}, false, nil, nil)
		},
		want: asProtocolViolation,
	},
	{
		name: "data segment length beyond MaxRecvDataSegmentLength",
		act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
			// A Data-In that claims 16 MiB - 1 bytes: the initiator must
			// refuse it from the header, before allocating or reading.
			d := dataInFor(ft, m, 0, 512, 0)
			c.writeRaw(d, false, nil, func(wire []byte) {
				wire[5], wire[6], wire[7] = 0xff, 0xff, 0xff
			})
		},
		want: func(err error) bool {
			var le *pdu.LengthError
			return errors.As(err, &le) && le.Length == pdu.MaxDataSegmentLength
		},
	},
	{
		name: "NOP-In with an oversized data segment",
		act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
			c.writeRaw(&pdu.NOPIn{ITT: pdu.ReservedTag, TTT: pdu.ReservedTag}, false, nil, func(wire []byte) {
				wire[5], wire[6], wire[7] = 0x10, 0x00, 0x00 // 1 MiB > 256 KiB declared
			})
		},
		want: func(err error) bool {
			var le *pdu.LengthError
			return errors.As(err, &le)
		},
	},
	{
		name: "SCSI Response for an unknown ITT",
		act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
			c.respond(&pdu.SCSICommand{ITT: m.ITT ^ 0x5a5a0000}, 0, nil)
		},
		want: asProtocolViolation,
	},
	{
		name: "Data-In for an unknown ITT",
		act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
			d := dataInFor(ft, m, 0, 4096, 0)
			d.ITT ^= 0x00770000
			c.writeRaw(d, false, nil, nil)
		},
		want: asProtocolViolation,
	},
	{
		name: "NOP-In answering a ping that was never sent",
		act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
			c.writeRaw(&pdu.NOPIn{ITT: 0x7fff0001, TTT: pdu.ReservedTag}, true, nil, nil)
		},
		want: asProtocolViolation,
	},
	{
		name: "Data-In beyond the buffer",
		act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
			// The command asked for 4096 bytes; this PDU is well within
			// MaxRecvDataSegmentLength but lands at [2048, 6144).
			d := dataInFor(ft, m, 0, 4096, 0)
			d.BufferOffset = 2048
			c.writeRaw(d, false, nil, nil)
		},
		want: asProtocolViolation,
	},
	{
		name: "Data-In offset wrapping around 2^32",
		act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
			d := dataInFor(ft, m, 0, 512, 0)
			d.BufferOffset = 0xffffff00
			c.writeRaw(d, false, nil, nil)
		},
		want: asProtocolViolation,
	},
	{
		name: "Data-In with a wrong DataSN",
		act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
			c.writeRaw(dataInFor(ft, m, 0, 2048, 0), false, nil, nil)
			c.writeRaw(dataInFor(ft, m, 2048, 2048, 2), false, nil, nil) // 1 is missing
		},
		want: asProtocolViolation,
	},
	{
		name: "StatSN gap",
		act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
			d := dataInFor(ft, m, 0, 4096, 0)
			d.Final, d.StatusPresent = true, true
			c.writeRaw(d, true, func(raw *pdu.Raw) {
				sn := binary.BigEndian.Uint32(raw.BHS[24:28])
				binary.BigEndian.PutUint32(raw.BHS[24:28], sn+5)
			}, nil)
		},
		want: asProtocolViolation,
	},
	{
		name: "R2T for a read",
		act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
			c.writeRaw(&pdu.R2T{ITT: m.ITT, TTT: 9, DesiredDataTransferLength: 4096}, false, nil, nil)
		},
		want: asProtocolViolation,
	},
	{
		name:    "corrupted header digest",
		digests: true,
		act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
			d := dataInFor(ft, m, 0, 4096, 0)
			d.Final, d.StatusPresent = true, true
			c.writeRaw(d, true, nil, func(wire []byte) { wire[pdu.BHSLen] ^= 0x01 })
		},
		want: asHeaderDigest,
	},
	{
		name:    "corrupted data",
		digests: true,
		act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
			// One flipped bit in the data segment: the data digest must
			// catch it, never hand the byte to the caller.
			d := dataInFor(ft, m, 0, 4096, 0)
			d.Final, d.StatusPresent = true, true
			c.writeRaw(d, true, nil, func(wire []byte) { wire[pdu.BHSLen+4+100] ^= 0x40 })
		},
		want: asDataDigest,
	},
	{
		name: "Reject: data digest error",
		act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
			sendReject(c, m, pdu.RejectDataDigest)
		},
		want: func(err error) bool {
			var re *RejectError
			return errors.As(err, &re) && re.Reason == pdu.RejectDataDigest
		},
	},
	{
		name: "Reject without the rejected header",
		act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
			c.writeRaw(&pdu.Reject{Reason: pdu.RejectProtocolError, Data: []byte{1, 2, 3}}, true, nil, nil)
		},
		want: asProtocolViolation,
	},
}

func sendReject(c *fakeConn, m *pdu.SCSICommand, reason uint8) {
	var raw pdu.Raw
	cmd := *m
	cmd.Data = nil
	if err := cmd.Encode(&raw); err != nil {
		panic(err)
	}
	c.writeRaw(&pdu.Reject{Reason: reason, Data: append([]byte(nil), raw.BHS[:]...)}, true, nil, nil)
}

// hostileSession starts a fake whose READ(10) commands go to act once tr is
// armed, and a session with hostileConfig.
func hostileSession(t *testing.T, hc hostileCase, tr *trap, logs *logBuffer) (*fakeTarget, *Session, *LUN) {
	t.Helper()
	ft := newFakeTarget(t, 1<<20)
	ft.digests = hc.digests
	ft.onPDU = func(c *fakeConn, raw *pdu.Raw) bool {
		m := command(raw)
		if !tr.take(m) {
			return false
		}
		c.accept(m)
		hc.act(ft, c, m)
		return true
	}
	cfg := hostileConfig(t, logs)
	if hc.digests {
		cfg.Negotiation = DefaultNegotiationConfig()
		cfg.Negotiation.HeaderDigest = DigestCRC32C
		cfg.Negotiation.DataDigest = DigestCRC32C
	}
	s, l := fakeSession(t, ft, cfg)
	if hc.digests && !(s.Params().HeaderDigest && s.Params().DataDigest) {
		t.Fatalf("digests not negotiated: %+v", s.Params())
	}
	return ft, s, l
}

// TestHostileConnectionRecovers: a target that breaks the connection once is
// survived without the caller noticing: the connection is dropped, the
// session reinstated and the read re-issued with the right data.
func TestHostileConnectionRecovers(t *testing.T) {
	for _, hc := range connectionCases {
		t.Run(hc.name, func(t *testing.T) {
			checkNoLeak(t)
			var tr trap
			var logs logBuffer
			ft, s, l := hostileSession(t, hc, &tr, &logs)
			tr.arm(1)
			err := bounded(t, 10*time.Second, func() error { return readBlock(t, ft, l, 8192) })
			if err != nil {
				t.Fatalf("read across a broken connection: %v", err)
			}
			if tr.hits.Load() != 1 {
				t.Fatalf("the misbehaviour happened %d times, want 1", tr.hits.Load())
			}
			if n := s.Reconnects(); n != 1 {
				t.Errorf("%d reconnects, want 1", n)
			}
			if !strings.Contains(logs.String(), "connection lost") {
				t.Errorf("the connection loss was not logged:\n%s", logs.String())
			}
		})
	}
}

// TestHostileConnectionFails: a target that breaks every attempt of a
// command makes that command fail in bounded time with an error that says
// why, instead of re-issuing it forever; the session itself stays usable.
func TestHostileConnectionFails(t *testing.T) {
	for _, hc := range connectionCases {
		t.Run(hc.name, func(t *testing.T) {
			checkNoLeak(t)
			var tr trap
			ft, s, l := hostileSession(t, hc, &tr, nil)
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			tr.arm(always)
			start := time.Now()
			err := bounded(t, 20*time.Second, func() error { return readBlock(t, ft, l, 8192) })
			if err == nil {
				t.Fatal("read succeeded against a target that breaks every attempt")
			}
			var ce *ConnectionError
			var cmdErr *CommandError
			if !hc.want(err) || !errors.As(err, &ce) || !errors.As(err, &cmdErr) {
				t.Fatalf("error %v (%T): not the expected typed cause", err, err)
			}
			t.Logf("failed after %v and %d attempts: %v", time.Since(start).Round(time.Millisecond), tr.hits.Load(), err)
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if grown := after.TotalAlloc - before.TotalAlloc; grown > 32<<20 {
				t.Errorf("%d MiB allocated while failing: more than the negotiated limits allow", grown>>20)
			}
			// Other commands still work.
			tr.armed.Store(false)
			if err := bounded(t, 10*time.Second, func() error { return readBlock(t, ft, l, 0) }); err != nil {
				t.Fatalf("the session is unusable after a failed command: %v", err)
			}
			if s.State() != StateLoggedIn {
				t.Errorf("state %q", s.State())
			}
		})
	}
}

// TestHostileAHS: AHS on Data-In and SCSI Response PDUs from the target
// (neither tgt nor istgt sends any) is skipped, not taken for data.
func TestHostileAHS(t *testing.T) {
	checkNoLeak(t)
	var tr trap
	ahs, err := pdu.AppendAHS(nil, pdu.AHS{Type: 0x3e, Data: []byte{1, 2, 3, 4, 5, 6, 7}})
	if err != nil {
		t.Fatal(err)
	}
	withAHS := func(raw *pdu.Raw) {
		raw.AHS = append(raw.AHS[:0], ahs...)
		raw.BHS[4] = byte(len(ahs) / 4)
	}
	hc := hostileCase{act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
		c.writeRaw(dataInFor(ft, m, 0, 4096, 0), false, withAHS, nil)
		exp, max := c.window()
		c.writeRaw(&pdu.SCSIResponse{ITT: m.ITT, ExpCmdSN: exp, MaxCmdSN: max}, true, withAHS, nil)
	}}
	for _, digests := range []bool{false, true} {
		t.Run(fmt.Sprintf("digests=%v", digests), func(t *testing.T) {
			hc.digests = digests
			ft, s, l := hostileSession(t, hc, &tr, nil)
			tr.arm(1)
			if err := bounded(t, 10*time.Second, func() error { return readBlock(t, ft, l, 4096) }); err != nil {
				t.Fatal(err)
			}
			if tr.hits.Load() == 0 || s.Reconnects() != 0 {
				t.Fatalf("hits %d, reconnects %d: want the AHS PDUs accepted on the same connection", tr.hits.Load(), s.Reconnects())
			}
		})
	}
}

// TestHostileStaleStatSN: a StatSN from the past (a retransmission) is
// accepted as already acknowledged and does not cost the connection.
func TestHostileStaleStatSN(t *testing.T) {
	checkNoLeak(t)
	var tr trap
	hc := hostileCase{act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
		d := dataInFor(ft, m, 0, 4096, 0)
		d.Final, d.StatusPresent = true, true
		c.writeRaw(d, false, func(raw *pdu.Raw) {
			binary.BigEndian.PutUint32(raw.BHS[24:28], c.statSN-3) // wmu is held
		}, nil)
	}}
	ft, s, l := hostileSession(t, hc, &tr, nil)
	tr.arm(1)
	if err := bounded(t, 10*time.Second, func() error { return readBlock(t, ft, l, 4096) }); err != nil {
		t.Fatal(err)
	}
	if err := readBlock(t, ft, l, 0); err != nil {
		t.Fatal(err)
	}
	if s.Reconnects() != 0 {
		t.Errorf("%d reconnects for a stale StatSN", s.Reconnects())
	}
}

// TestHostileStallMidResponse: a target that stops in the middle of a
// Data-In PDU (header and half the data sent, then silence, socket open) is
// bounded by the command timeout even without keep-alive: the command is
// aborted, the connection dropped and the read re-issued.
func TestHostileStallMidResponse(t *testing.T) {
	checkNoLeak(t)
	var tr trap
	hc := hostileCase{}
	hc.act = func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
		d := dataInFor(ft, m, 0, 4096, 0)
		d.Final, d.StatusPresent = true, true
		var raw pdu.Raw
		d.Encode(&raw)
		c.sendRaw(append(raw.BHS[:], d.Data[:2048]...))
	}
	ft := newFakeTarget(t, 1<<20)
	ft.onPDU = func(c *fakeConn, raw *pdu.Raw) bool {
		m := command(raw)
		if !tr.take(m) {
			return false
		}
		c.accept(m)
		hc.act(ft, c, m)
		return true
	}
	cfg := hostileConfig(t, nil)
	cfg.CommandTimeout = 500 * time.Millisecond
	s, l := fakeSession(t, ft, cfg)
	tr.arm(1)
	start := time.Now()
	if err := bounded(t, 20*time.Second, func() error { return readBlock(t, ft, l, 4096) }); err != nil {
		t.Fatal(err)
	}
	// Timeout, then the abort's own bound (no answer can be read while the
	// reader is stuck in the PDU), then a reconnect.
	if d := time.Since(start); d > 4*cfg.CommandTimeout+time.Second {
		t.Errorf("a stalled response took %v with a %v command timeout", d, cfg.CommandTimeout)
	}
	if s.Reconnects() != 1 {
		t.Errorf("%d reconnects, want 1", s.Reconnects())
	}

	// A cancelled read during such a stall returns within the same bound,
	// and the caller's buffer is not written after it returned.
	tr.arm(1)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	buf := make([]byte, 4096)
	start = time.Now()
	_, err := boundedCall(t, 20*time.Second, func() (int, error) { return l.ReadAtContext(ctx, buf, 4096) })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled read: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 4*cfg.CommandTimeout+time.Second {
		t.Errorf("a cancelled read during a stall returned after %v", d)
	}
	for i := range buf {
		buf[i] = 0xee
	}
	time.Sleep(3 * cfg.CommandTimeout)
	for _, b := range buf {
		if b != 0xee {
			t.Fatal("the caller's buffer was written after the cancelled read returned")
		}
	}
}

// TestHostileStallForever: a target that accepts a command and never answers
// it (but answers ABORT TASK and logins) makes the command fail after the
// timeout escalation (abort and re-issue, then a new connection, then an
// error), instead of re-issuing it forever.
func TestHostileStallForever(t *testing.T) {
	checkNoLeak(t)
	var tr trap
	ft := newFakeTarget(t, 1<<20)
	ft.onPDU = func(c *fakeConn, raw *pdu.Raw) bool {
		m := command(raw)
		if !tr.take(m) {
			return false
		}
		c.accept(m)
		return true // never answered
	}
	cfg := hostileConfig(t, nil)
	cfg.CommandTimeout = 300 * time.Millisecond
	s, l := fakeSession(t, ft, cfg)
	tr.arm(always)
	start := time.Now()
	err := bounded(t, 20*time.Second, func() error { return readBlock(t, ft, l, 4096) })
	if !errors.Is(err, ErrCommandTimeout) {
		t.Fatalf("got %v, want ErrCommandTimeout", err)
	}
	if d := time.Since(start); d > 10*cfg.CommandTimeout {
		t.Errorf("failing took %v with a %v command timeout", d, cfg.CommandTimeout)
	}
	if n := tr.hits.Load(); n < 3 {
		t.Errorf("the command was sent %d times, want the whole escalation (>= 3)", n)
	}
	if s.Reconnects() < 1 {
		t.Error("the escalation never replaced the connection")
	}
	tr.armed.Store(false)
	if err := readBlock(t, ft, l, 0); err != nil {
		t.Fatalf("session unusable after a timed-out command: %v", err)
	}
}

// TestHostileReject: a Reject PDU for a command, for every reason RFC 7143
// defines: a data digest error costs the connection (ERL 0), "immediate
// command reject" and "long op reject" are retried later, "waiting for
// logout" makes the initiator reinstate the session, and the others fail
// the command with a *RejectError while the session goes on.
func TestHostileReject(t *testing.T) {
	tests := []struct {
		reason     uint8
		retried    bool // the read succeeds after the one Reject
		reconnects int
	}{
		{pdu.RejectDataDigest, true, 1},
		{pdu.RejectSNACK, false, 0},
		{pdu.RejectProtocolError, false, 0},
		{pdu.RejectNotSupported, false, 0},
		{pdu.RejectImmediate, true, 0},
		{pdu.RejectTaskInProgress, false, 0},
		{pdu.RejectInvalidDataAck, false, 0},
		{pdu.RejectInvalidPDUField, false, 0},
		{pdu.RejectLongOp, true, 0},
		{pdu.RejectNegotiationReset, false, 0},
		{pdu.RejectWaitingForLogout, true, 1},
		{0x2f, false, 0}, // unknown reason
	}
	for _, tt := range tests {
		t.Run(pdu.RejectReasonText(tt.reason), func(t *testing.T) {
			checkNoLeak(t)
			var tr trap
			hc := hostileCase{act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
				sendReject(c, m, tt.reason)
			}}
			ft, s, l := hostileSession(t, hc, &tr, nil)
			tr.arm(1)
			err := bounded(t, 10*time.Second, func() error { return readBlock(t, ft, l, 4096) })
			if tt.retried {
				if err != nil {
					t.Fatalf("read after a Reject %#x: %v", tt.reason, err)
				}
			} else {
				var re *RejectError
				var cmdErr *CommandError
				if !errors.As(err, &re) || re.Reason != tt.reason || !errors.As(err, &cmdErr) {
					t.Fatalf("got %v (%T), want a CommandError wrapping RejectError %#x", err, err, tt.reason)
				}
				if !strings.Contains(err.Error(), "rejected") {
					t.Errorf("error %q does not say the target rejected the PDU", err)
				}
			}
			if n := s.Reconnects(); n != tt.reconnects {
				t.Errorf("%d reconnects, want %d", n, tt.reconnects)
			}
			if err := readBlock(t, ft, l, 0); err != nil {
				t.Fatalf("next read: %v", err)
			}
		})
	}
}

// TestHostileAsyncMessages: every Asynchronous Message event (RFC 7143
// §11.9.1) at any time.
func TestHostileAsyncMessages(t *testing.T) {
	tests := []struct {
		name       string
		event      uint8
		lun        uint64
		reconnects int
	}{
		{"0 SCSI event without sense", 0, 0, 0},
		{"1 logout request", 1, 0, 1},
		{"2 connection drop", 2, 0, 1},
		{"3 session drop", 3, 0, 1},
		{"4 renegotiation request", 4, 0, 0},
		{"5 tasks terminated on another LU", 5, 3, 0},
		{"255 vendor specific", 255, 0, 0},
		{"6 unknown event", 6, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			ft := newFakeTarget(t, 1<<20)
			s, l := fakeSession(t, ft, hostileConfig(t, nil))
			ft.lastConn().sendAsync(tt.event, scsi.EncodeLUN(tt.lun), 1, 0, 1, nil)
			deadline := time.Now().Add(5 * time.Second)
			for s.Reconnects() < tt.reconnects && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if err := bounded(t, 10*time.Second, func() error { return readBlock(t, ft, l, 4096) }); err != nil {
				t.Fatal(err)
			}
			if n := s.Reconnects(); n != tt.reconnects {
				t.Errorf("%d reconnects, want %d", n, tt.reconnects)
			}
			if tt.reconnects == 0 && ft.logins.Load() != 1 {
				t.Errorf("%d logins, want the first connection kept", ft.logins.Load())
			}
		})
	}
}

// TestHostileAsyncLogoutDuringIO: event 1 (the target requests a logout)
// while reads and writes are in flight. No new command goes out on the
// connection, those in flight finish on it, then a Logout Request (close
// the session) reaches the target within Parameter3; the session logs in
// again at once and every read and write issued around it completes with
// the right data. What still reaches the target after its request it
// rejects with "waiting for logout", as RFC 7143 §11.9.1 allows: those
// commands are re-issued too.
func TestHostileAsyncLogoutDuringIO(t *testing.T) {
	checkNoLeak(t)
	const param3 = 2 // seconds
	ft := newFakeTarget(t, 4<<20)
	var old atomic.Pointer[fakeConn]
	var eventAt atomic.Int64 // unix nanoseconds, once the request is on the wire
	var late atomic.Int32
	ft.onPDU = func(c *fakeConn, raw *pdu.Raw) bool {
		m := command(raw)
		at := eventAt.Load()
		if m == nil || at == 0 || c != old.Load() {
			return false
		}
		if time.Since(time.Unix(0, at)) > 150*time.Millisecond {
			late.Add(1) // sent well after the initiator had the request
		}
		c.accept(m)
		sendReject(c, m, pdu.RejectWaitingForLogout)
		return true
	}
	var logs logBuffer
	s, l := fakeSession(t, ft, hostileConfig(t, &logs))
	old.Store(ft.lastConn())
	ft.delay.Store(int64(200 * time.Millisecond))

	const workers, size = 8, 64 << 10
	var wg sync.WaitGroup
	var stop atomic.Bool
	var rounds [workers]atomic.Int32
	last := make([][]byte, workers) // each worker's last write, read after wg.Wait
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(w) * 512 << 10
			for round := 0; !stop.Load(); round++ {
				data := bytes.Repeat([]byte{byte(w<<4 | round&15)}, size)
				if _, err := l.WriteAtContext(context.Background(), data, off); err != nil {
					errs <- fmt.Errorf("worker %d round %d: write: %w", w, round, err)
					return
				}
				last[w] = data
				got := make([]byte, size)
				if _, err := l.ReadAtContext(context.Background(), got, off); err != nil {
					errs <- fmt.Errorf("worker %d round %d: read: %w", w, round, err)
					return
				}
				if !bytes.Equal(got, data) {
					errs <- fmt.Errorf("worker %d round %d read back other data", w, round)
					return
				}
				rounds[w].Add(1)
			}
		}()
	}
	if !waitFor(5*time.Second, func() bool { return old.Load().pending.Load() > 0 }) {
		t.Fatal("no command in flight at the target")
	}
	old.Load().sendAsync(pdu.AsyncEventLogoutRequest, [8]byte{}, 0, 0, param3, nil)
	eventAt.Store(time.Now().UnixNano())
	if !waitFor(10*time.Second, func() bool { return s.Reconnects() == 1 && s.State() == StateLoggedIn }) {
		t.Fatalf("not logged in again: %d reconnects, state %s", s.Reconnects(), s.State())
	}
	var before [workers]int32
	for w := range workers {
		before[w] = rounds[w].Load()
	}
	// Every worker gets through a round on the new connection.
	waitFor(5*time.Second, func() bool {
		for w := range workers {
			if rounds[w].Load() <= before[w] {
				return false
			}
		}
		return true
	})
	stop.Store(true)
	bounded(t, 15*time.Second, func() bool { wg.Wait(); return true })
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for w := range workers {
		if rounds[w].Load() <= before[w] {
			t.Errorf("worker %d completed no round after the new login", w)
		}
	}

	event := time.Unix(0, eventAt.Load())
	logouts := ft.logoutRecords()
	if len(logouts) != 1 {
		t.Fatalf("%d Logout Requests, want 1", len(logouts))
	}
	lo := logouts[0]
	if lo.reason != pdu.LogoutCloseSession {
		t.Errorf("logout reason %d, want %d (close the session)", lo.reason, pdu.LogoutCloseSession)
	}
	if d := lo.at.Sub(event); d > param3*time.Second {
		t.Errorf("Logout Request %v after the request, want within Parameter3 = %ds", d, param3)
	}
	if lo.pending != 0 {
		t.Errorf("logged out with %d commands unanswered: the commands in flight were not let finish", lo.pending)
	}
	if n := late.Load(); n != 0 {
		t.Errorf("%d commands sent on the connection after the logout request", n)
	}
	if n := ft.logins.Load(); n != 2 || s.Reconnects() != 1 {
		t.Fatalf("%d logins, %d reconnects, want 2 and 1", n, s.Reconnects())
	}
	if d := loginAfter(t, ft, lo.at).Sub(lo.at); d > 500*time.Millisecond {
		t.Errorf("new login %v after the logout, want at once", d)
	}
	ft.mu.Lock()
	for w := range workers {
		off := w * 512 << 10
		if !bytes.Equal(ft.disk[off:off+size], last[w]) {
			t.Errorf("worker %d: the disk does not hold its last write", w)
		}
	}
	ft.mu.Unlock()
	if !strings.Contains(logs.String(), "requests a logout") {
		t.Errorf("the logout request was not logged:\n%s", logs.String())
	}
}

// loginAfter returns when the first Login Request after t0 arrived.
func loginAfter(t *testing.T, ft *fakeTarget, t0 time.Time) time.Time {
	t.Helper()
	for _, r := range ft.loginRecords() {
		if r.at.After(t0) {
			return r.at
		}
	}
	t.Fatalf("no Login Request after %v", t0)
	return time.Time{}
}

// TestHostileAsyncLogoutUnanswered: a target that requests a logout and then
// never answers the Logout Request: the initiator waits for the answer a
// bounded time, closes the connection and logs in again; I/O issued
// meanwhile waits for the new connection.
func TestHostileAsyncLogoutUnanswered(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	ft.dropLogout.Store(true)
	s, l := fakeSession(t, ft, hostileConfig(t, nil))
	ft.lastConn().sendAsync(pdu.AsyncEventLogoutRequest, [8]byte{}, 0, 0, 1, nil)
	if !waitFor(2*time.Second, func() bool { return len(ft.logoutRecords()) == 1 }) {
		t.Fatal("no Logout Request within Parameter3 = 1s")
	}
	sent := ft.logoutRecords()[0].at
	ft.dropLogout.Store(false) // the Logout of Close is answered
	if err := bounded(t, 10*time.Second, func() error { return readBlock(t, ft, l, 4096) }); err != nil {
		t.Fatal(err)
	}
	if n := ft.logins.Load(); n != 2 || s.Reconnects() != 1 {
		t.Fatalf("%d logins, %d reconnects, want 2 and 1", n, s.Reconnects())
	}
	// The read waited for the new login, which came once the wait for the
	// Logout Response was over.
	if d := loginAfter(t, ft, sent).Sub(sent); d < logoutResponseWait-100*time.Millisecond || d > logoutResponseWait+time.Second {
		t.Errorf("new login %v after the unanswered logout, want after the %v wait for the response", d, logoutResponseWait)
	}
	if n := len(ft.logoutRecords()); n != 1 {
		t.Errorf("%d Logout Requests, want 1", n)
	}
}

// TestHostileAsyncLogoutCrossingCommand: a command that crossed the logout
// request on the wire and is rejected with "waiting for logout" is re-issued
// after the new login; it costs neither the command nor the logout.
func TestHostileAsyncLogoutCrossingCommand(t *testing.T) {
	checkNoLeak(t)
	var tr trap
	hc := hostileCase{act: func(ft *fakeTarget, c *fakeConn, m *pdu.SCSICommand) {
		c.sendAsync(pdu.AsyncEventLogoutRequest, [8]byte{}, 0, 0, 2, nil)
		sendReject(c, m, pdu.RejectWaitingForLogout)
	}}
	ft, s, l := hostileSession(t, hc, &tr, nil)
	tr.arm(1)
	if err := bounded(t, 10*time.Second, func() error { return readBlock(t, ft, l, 4096) }); err != nil {
		t.Fatal(err)
	}
	if tr.hits.Load() != 1 {
		t.Fatalf("the request came %d times, want 1", tr.hits.Load())
	}
	if n := len(ft.logoutRecords()); n != 1 {
		t.Errorf("%d Logout Requests, want 1", n)
	}
	if n := ft.logins.Load(); n != 2 || s.Reconnects() != 1 {
		t.Errorf("%d logins, %d reconnects, want 2 and 1", n, s.Reconnects())
	}
}

// TestHostileAsyncDropTime2Wait: events 2 (the target will drop the
// connection) and 3 (all connections of the session) with Time2Wait = 2 s:
// the connection is given up at once and the next login comes no earlier
// than Time2Wait; a read issued meanwhile completes after it.
func TestHostileAsyncDropTime2Wait(t *testing.T) {
	for _, event := range []uint8{pdu.AsyncEventConnectionDrop, pdu.AsyncEventSessionDrop} {
		t.Run(fmt.Sprintf("event %d", event), func(t *testing.T) {
			checkNoLeak(t)
			const time2Wait = 2 // seconds
			ft := newFakeTarget(t, 1<<20)
			s, l := fakeSession(t, ft, hostileConfig(t, nil))
			at := time.Now()
			ft.lastConn().sendAsync(event, [8]byte{}, 1, time2Wait, 20, nil)
			if !waitFor(time.Second, func() bool { return s.State() == StateRecovering }) {
				t.Fatalf("state %s after the drop announcement, want recovering", s.State())
			}
			err := bounded(t, 10*time.Second, func() error { return readBlock(t, ft, l, 4096) })
			done := time.Now()
			if err != nil {
				t.Fatal(err)
			}
			if n := ft.logins.Load(); n != 2 || s.Reconnects() != 1 {
				t.Fatalf("%d logins, %d reconnects, want 2 and 1", n, s.Reconnects())
			}
			login := loginAfter(t, ft, at)
			if d := login.Sub(at); d < time2Wait*time.Second-200*time.Millisecond || d > time2Wait*time.Second+time.Second {
				t.Errorf("new login %v after the announcement, want after Time2Wait = %ds", d, time2Wait)
			}
			if done.Before(login) {
				t.Error("the read completed before the new login")
			}
		})
	}
}

// TestHostileAsyncDropLongTime2Wait: a Time2Wait of hours is capped, and
// while recovery waits it out the replacement timeout still fails I/O and
// Close still ends the session at once.
func TestHostileAsyncDropLongTime2Wait(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	var logs logBuffer
	cfg := hostileConfig(t, &logs)
	cfg.ReplacementTimeout = 300 * time.Millisecond
	s, l := fakeSession(t, ft, cfg)
	ft.lastConn().sendAsync(pdu.AsyncEventSessionDrop, [8]byte{}, 0, 0xffff, 0, nil)
	start := time.Now()
	err := bounded(t, 5*time.Second, func() error { return readBlock(t, ft, l, 4096) })
	var su *SessionUnavailableError
	if !errors.As(err, &su) {
		t.Fatalf("read during Time2Wait: %v, want a SessionUnavailableError", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the read failed after %v, want after the replacement timeout %v", d, cfg.ReplacementTimeout)
	}
	if !strings.Contains(logs.String(), `time2wait=1m0s`) {
		t.Errorf("Time2Wait not capped at 60 s:\n%s", logs.String())
	}
	closeStart := time.Now()
	bounded(t, 5*time.Second, func() error { return s.Close(context.Background()) })
	if d := time.Since(closeStart); d > time.Second {
		t.Errorf("Close took %v during Time2Wait", d)
	}
	if n := ft.logins.Load(); n != 1 {
		t.Errorf("%d logins, want none after the announcement", n)
	}
}

// TestHostileAsyncTasksTerminated: event 5 (all tasks of the LU terminated)
// means no answer will come for the commands in flight: they are re-issued
// at once instead of waiting for the command timeout.
func TestHostileAsyncTasksTerminated(t *testing.T) {
	checkNoLeak(t)
	var tr trap
	ft := newFakeTarget(t, 1<<20)
	ft.onPDU = func(c *fakeConn, raw *pdu.Raw) bool {
		m := command(raw)
		if !tr.take(m) {
			return false
		}
		c.accept(m)
		c.sendAsync(pdu.AsyncEventTasksTerminated, m.LUN, 0, 0, 0, nil) // and the command is gone
		return true
	}
	cfg := hostileConfig(t, nil)
	cfg.CommandTimeout = 10 * time.Second
	s, l := fakeSession(t, ft, cfg)
	tr.arm(1)
	start := time.Now()
	if err := bounded(t, 30*time.Second, func() error { return readBlock(t, ft, l, 4096) }); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > cfg.CommandTimeout/4 {
		t.Errorf("the terminated read took %v: it waited for the command timeout", d)
	}
	if s.Reconnects() != 0 {
		t.Errorf("%d reconnects, want 0", s.Reconnects())
	}
}

// TestHostileAsyncCapacityChange: event 0 carrying sense 2A/09 (capacity
// data has changed) is a UNIT ATTENTION without a command: the LUN re-reads
// its capacity.
func TestHostileAsyncCapacityChange(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	s, l := fakeSession(t, ft, hostileConfig(t, nil))
	resized := make(chan int64, 1)
	l.OnResize(func(n int64) { resized <- n })
	ft.growAnnounced(1 << 20)
	select {
	case n := <-resized:
		if n != 2<<20 || l.Size() != 2<<20 {
			t.Fatalf("resized to %d, Size %d, want %d", n, l.Size(), 2<<20)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no resize after an asynchronous capacity change; Size %d", l.Size())
	}
	if err := readBlock(t, ft, l, 1<<20+4096); err != nil {
		t.Fatalf("read in the new space: %v", err)
	}
	if s.Reconnects() != 0 {
		t.Errorf("%d reconnects", s.Reconnects())
	}
}

// TestSyncFollowsWriteCache: SYNCHRONIZE CACHE goes out only while the
// caching mode page says WCE=1 (or nothing is known); a UNIT ATTENTION 2A/01
// (mode parameters changed) makes the LUN read the page again.
func TestSyncFollowsWriteCache(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	ft.modeWCE.Store(1)
	var armed, told atomic.Bool // the next READ gets UA 2A/01, once
	ft.onSCSI = func(c *fakeConn, m *pdu.SCSICommand) bool {
		if m.CDB[0] == 0x28 && armed.Load() && told.CompareAndSwap(false, true) {
			c.respond(m, 2, fixedSense(byte(scsi.SenseUnitAttention), 0x2a, 0x01))
			return true
		}
		return false
	}
	_, l := fakeSession(t, ft, hostileConfig(t, nil))
	syncs := func() int {
		ft.mu.Lock()
		defer ft.mu.Unlock()
		return ft.cdbOps[0x35]
	}
	if l.WriteCacheEnabled() {
		t.Fatal("WCE=0 in the caching page, but WriteCacheEnabled")
	}
	if err := l.SyncContext(context.Background()); err != nil || syncs() != 0 {
		t.Fatalf("Sync with WCE=0: %v, %d SYNCHRONIZE CACHE sent, want none", err, syncs())
	}
	// The target turns its write cache on and says so with a UA.
	ft.modeWCE.Store(2)
	armed.Store(true)
	if err := readBlock(t, ft, l, 4096); err != nil {
		t.Fatalf("read after the UA: %v", err)
	}
	waitFor(5*time.Second, l.WriteCacheEnabled)
	if !told.Load() || !l.WriteCacheEnabled() {
		t.Fatal("WriteCacheEnabled still false after UA 2A/01 and WCE=1")
	}
	if err := l.SyncContext(context.Background()); err != nil || syncs() != 0 {
		t.Fatalf("Sync with WCE=1 and nothing written: %v, %d SYNCHRONIZE CACHE sent, want none", err, syncs())
	}
	writeSync := func(want int) {
		t.Helper()
		if _, err := l.WriteAtContext(context.Background(), make([]byte, 4096), 8192); err != nil {
			t.Fatal(err)
		}
		for range 2 { // the second has nothing new to cover
			if err := l.SyncContext(context.Background()); err != nil || syncs() != want {
				t.Fatalf("Sync with WCE=1 after a write: %v, %d SYNCHRONIZE CACHE sent, want %d", err, syncs(), want)
			}
		}
	}
	writeSync(1)
	writeSync(2)
}

// TestSyncWithoutModeSense: a LUN that refuses MODE SENSE is taken as having
// a write cache: SYNCHRONIZE CACHE is never skipped on a guess.
func TestSyncWithoutModeSense(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	_, l := fakeSession(t, ft, hostileConfig(t, nil))
	if _, err := l.WriteAtContext(context.Background(), make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	if err := l.SyncContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	ft.mu.Lock()
	n := ft.cdbOps[0x35]
	ft.mu.Unlock()
	if !l.WriteCacheEnabled() || n != 1 {
		t.Fatalf("WriteCacheEnabled %v, %d SYNCHRONIZE CACHE sent; want true and 1", l.WriteCacheEnabled(), n)
	}
}

// scsiCondition answers a READ with a status the first times.
type scsiCondition struct {
	name     string
	status   uint8
	sense    []byte
	times    int64 // how many READs get the condition
	attempts int32 // READs the fake sees in all
	want     error // nil: the read succeeds in the end
	minTime  time.Duration
}

// TestHostileSCSIConditions: SCSI statuses and sense keys that only a fake
// can produce on demand (CHECKLIST M 91-97): retried with back-off, or
// failed at once with the matching sentinel error.
func TestHostileSCSIConditions(t *testing.T) {
	ua := byte(scsi.SenseUnitAttention)
	tests := []scsiCondition{
		{name: "BUSY", status: 0x08, times: 4, attempts: 5, minTime: 5 * time.Millisecond * (1 + 2 + 4 + 8)},
		{name: "TASK SET FULL", status: 0x28, times: 4, attempts: 5, minTime: 5 * time.Millisecond * (1 + 2 + 4 + 8)},
		{name: "NOT READY becoming ready", status: 2, sense: fixedSense(byte(scsi.SenseNotReady), 0x04, 0x01), times: 3, attempts: 4, minTime: 5 * time.Millisecond * (1 + 2 + 4)},
		{name: "UNIT ATTENTION power on", status: 2, sense: fixedSense(ua, 0x29, 0x00), times: 2, attempts: 3},
		{name: "ABORTED COMMAND", status: 2, sense: fixedSense(byte(scsi.SenseAbortedCommand), 0x47, 0x00), times: 2, attempts: 3},
		{name: "UNIT ATTENTION forever", status: 2, sense: fixedSense(ua, 0x29, 0x00), times: always, attempts: maxUnitAttentionRetries + 1, want: scsi.ErrUnitAttention},
		{name: "MEDIUM ERROR", status: 2, sense: fixedSense(byte(scsi.SenseMediumError), 0x11, 0x00), times: always, attempts: 1, want: scsi.ErrMediumError},
		{name: "HARDWARE ERROR", status: 2, sense: fixedSense(byte(scsi.SenseHardwareError), 0x44, 0x00), times: always, attempts: 1, want: scsi.ErrHardwareError},
		{name: "NOT READY medium not present", status: 2, sense: fixedSense(byte(scsi.SenseNotReady), 0x3a, 0x00), times: always, attempts: 1, want: scsi.ErrMediumNotPresent},
		{name: "ILLEGAL REQUEST LBA out of range", status: 2, sense: fixedSense(byte(scsi.SenseIllegalRequest), 0x21, 0x00), times: always, attempts: 1, want: scsi.ErrLBAOutOfRange},
		{name: "DATA PROTECT", status: 2, sense: fixedSense(byte(scsi.SenseDataProtect), 0x27, 0x00), times: always, attempts: 1, want: scsi.ErrWriteProtected},
		{name: "RESERVATION CONFLICT", status: 0x18, times: always, attempts: 1, want: scsi.ErrReservation},
		{name: "CHECK CONDITION without sense", status: 2, times: always, attempts: 1, want: scsi.ErrNoSense},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			var tr trap
			var seen atomic.Int32
			ft := newFakeTarget(t, 1<<20)
			ft.onSCSI = func(c *fakeConn, m *pdu.SCSICommand) bool {
				if len(m.CDB) > 0 && m.CDB[0] == 0x28 && tr.armed.Load() {
					seen.Add(1)
				}
				if !tr.take(m) {
					return false
				}
				c.respond(m, tt.status, tt.sense)
				return true
			}
			s, l := fakeSession(t, ft, hostileConfig(t, nil))
			tr.arm(tt.times)
			start := time.Now()
			err := bounded(t, 20*time.Second, func() error { return readBlock(t, ft, l, 4096) })
			took := time.Since(start)
			if tt.want == nil && err != nil {
				t.Fatalf("read: %v", err)
			}
			if tt.want != nil {
				var se *scsi.StatusError
				if !errors.Is(err, tt.want) || !errors.As(err, &se) {
					t.Fatalf("got %v, want %v", err, tt.want)
				}
			}
			if n := seen.Load(); n != tt.attempts {
				t.Errorf("the target saw %d attempts, want %d", n, tt.attempts)
			}
			if took < tt.minTime {
				t.Errorf("retries took %v, want back-off of at least %v", took, tt.minTime)
			}
			if s.Reconnects() != 0 {
				t.Errorf("%d reconnects", s.Reconnects())
			}
		})
	}
}

// TestHostileCapacityChangedUA: UNIT ATTENTION 2A/09 on a READ is retried
// and makes the LUN re-read its capacity (tgt cannot resize online).
func TestHostileCapacityChangedUA(t *testing.T) {
	checkNoLeak(t)
	var tr trap
	ft := newFakeTarget(t, 1<<20)
	ft.onSCSI = func(c *fakeConn, m *pdu.SCSICommand) bool {
		if !tr.take(m) {
			return false
		}
		c.respond(m, 2, fixedSense(byte(scsi.SenseUnitAttention), 0x2a, 0x09))
		return true
	}
	_, l := fakeSession(t, ft, hostileConfig(t, nil))
	resized := make(chan int64, 1)
	l.OnResize(func(n int64) { resized <- n })
	ft.mu.Lock()
	ft.disk = append(ft.disk, make([]byte, 3<<20)...)
	ft.mu.Unlock()
	tr.arm(1)
	if err := bounded(t, 10*time.Second, func() error { return readBlock(t, ft, l, 4096) }); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-resized:
		if n != 4<<20 {
			t.Fatalf("resized to %d, want %d", n, 4<<20)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("capacity not re-read after UNIT ATTENTION 2A/09: Size %d", l.Size())
	}
	if got := l.Size(); got != 4<<20 {
		t.Errorf("Size %d after the capacity change, want %d", got, 4<<20)
	}
}

// TestHostileLogin: targets that misbehave during login. Every case ends in
// a typed error within the login timeout.
func TestHostileLogin(t *testing.T) {
	var redirectSelf string
	tests := []struct {
		name    string
		onLogin func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction
		check   func(t *testing.T, err error)
	}{
		{
			name: "endless security stage (T=0 forever)",
			onLogin: func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
				if req.CSG != 0 {
					return loginDefault
				}
				c.send(&pdu.LoginResp{CSG: 0, NSG: 0, ISID: req.ISID, ITT: req.ITT, StatSN: c.nextStat(),
					Data: pdu.EncodeText(nil, []pdu.KV{{Key: "AuthMethod", Value: "None"}})})
				return loginHandled
			},
			check: wantLoginError("never left the security stage"),
		},
		{
			name: "endless operational stage (T=0 forever)",
			onLogin: func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
				if req.CSG != 1 {
					return loginDefault
				}
				c.send(&pdu.LoginResp{CSG: 1, NSG: 0, ISID: req.ISID, ITT: req.ITT, StatSN: c.nextStat(), ExpCmdSN: req.CmdSN, MaxCmdSN: req.CmdSN})
				return loginHandled
			},
			check: wantLoginError("never completed operational negotiation"),
		},
		{
			name: "endless continued text (C=1 forever)",
			onLogin: func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
				c.send(&pdu.LoginResp{Continue: true, CSG: req.CSG, NSG: req.NSG, ISID: req.ISID, ITT: req.ITT, StatSN: c.nextStat(),
					Data: bytes.Repeat([]byte("X"), 4096)})
				return loginHandled
			},
			check: wantLoginError("exceeds 64 KiB"),
		},
		{
			name: "stall: never answers",
			onLogin: func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
				return loginHandled
			},
			check: wantLoginError("timed out"),
		},
		{
			name: "stall mid-response",
			onLogin: func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
				var raw pdu.Raw
				(&pdu.LoginResp{CSG: req.CSG, NSG: req.NSG, ISID: req.ISID, ITT: req.ITT, Data: []byte("AuthMethod=None\x00")}).Encode(&raw)
				c.sendRaw(append(raw.BHS[:], raw.Data[:4]...))
				return loginHandled
			},
			check: wantLoginError("timed out"),
		},
		{
			name: "closes during login",
			onLogin: func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
				return loginClose
			},
			check: func(t *testing.T, err error) {
				var ce *ConnectionError
				if !errors.As(err, &ce) {
					t.Fatalf("got %v (%T), want a ConnectionError", err, err)
				}
			},
		},
		{
			name: "closes after the security stage",
			onLogin: func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
				if req.CSG == 1 {
					return loginClose
				}
				return loginDefault
			},
			check: func(t *testing.T, err error) {
				var ce *ConnectionError
				if !errors.As(err, &ce) {
					t.Fatalf("got %v (%T), want a ConnectionError", err, err)
				}
			},
		},
		{
			name: "oversized login response",
			onLogin: func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
				c.writeRaw(&pdu.LoginResp{CSG: req.CSG, NSG: req.NSG, ISID: req.ISID, ITT: req.ITT}, false, nil, func(wire []byte) {
					wire[5], wire[6], wire[7] = 0x7f, 0xff, 0xff
				})
				return loginHandled
			},
			check: func(t *testing.T, err error) {
				var le *pdu.LengthError
				var ce *ConnectionError
				if !errors.As(err, &le) || !errors.As(err, &ce) || le.Limit != 8192 {
					t.Fatalf("got %v (%T), want a ConnectionError wrapping LengthError with the 8192 login limit", err, err)
				}
			},
		},
		{
			name: "another opcode during login",
			onLogin: func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
				c.send(&pdu.NOPIn{ITT: pdu.ReservedTag, TTT: pdu.ReservedTag})
				return loginHandled
			},
			check: wantLoginError("opcode 0x20 during login"),
		},
		{
			name: "foreign ITT",
			onLogin: func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
				c.send(&pdu.LoginResp{Transit: true, CSG: req.CSG, NSG: req.NSG, ISID: req.ISID, ITT: req.ITT + 1, StatSN: c.nextStat()})
				return loginHandled
			},
			check: wantLoginError("foreign ITT"),
		},
		{
			name: "target error (class 3): temporary",
			onLogin: func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
				c.send(&pdu.LoginResp{CSG: req.CSG, ISID: req.ISID, ITT: req.ITT, StatusClass: 3, StatusDetail: 1})
				return loginClose
			},
			check: func(t *testing.T, err error) {
				var le *LoginError
				if !errors.As(err, &le) || !le.Temporary() || !strings.Contains(err.Error(), "service unavailable") {
					t.Fatalf("got %v, want a temporary LoginError", err)
				}
			},
		},
		{
			name: "redirect loop",
			onLogin: func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
				c.send(&pdu.LoginResp{CSG: req.CSG, ISID: req.ISID, ITT: req.ITT, StatusClass: 1, StatusDetail: 1,
					Data: pdu.EncodeText(nil, []pdu.KV{{Key: "TargetAddress", Value: redirectSelf + ",1"}})})
				return loginClose
			},
			check: wantLoginError("too many login redirects"),
		},
		{
			name: "redirect without an address",
			onLogin: func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
				c.send(&pdu.LoginResp{CSG: req.CSG, ISID: req.ISID, ITT: req.ITT, StatusClass: 1, StatusDetail: 2})
				return loginClose
			},
			check: wantLoginError("redirect without a usable TargetAddress"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			ft := newFakeTarget(t, 1<<20)
			ft.onLogin = tt.onLogin
			addr := ft.start()
			redirectSelf = addr
			cfg := hostileConfig(t, nil)
			cfg.LoginTimeout = 500 * time.Millisecond
			start := time.Now()
			s, err := boundedCall(t, 10*time.Second, func() (*Session, error) {
				return Login(context.Background(), addr, "iqn.2026-11.test:fake", cfg)
			})
			if err == nil {
				s.Close(context.Background())
				t.Fatal("login succeeded")
			}
			tt.check(t, err)
			if d := time.Since(start); d > 2*cfg.LoginTimeout {
				t.Errorf("failing took %v with a %v login timeout", d, cfg.LoginTimeout)
			}
		})
	}
}

func wantLoginError(substr string) func(t *testing.T, err error) {
	return func(t *testing.T, err error) {
		t.Helper()
		var le *LoginError
		if !errors.As(err, &le) || !strings.Contains(err.Error(), substr) {
			t.Fatalf("got %v (%T), want a LoginError saying %q", err, err, substr)
		}
	}
}

// TestHostileCHAP: a target that tries to have the initiator compute CHAP
// answers for it (RFC 7143 §9.2.1): replaying the challenge the initiator
// sent on another connection, or answering the mutual challenge with the
// initiator's own secret. Both are refused before anything is revealed.
func TestHostileCHAP(t *testing.T) {
	creds := Credentials{User: "alice", Secret: "alice-secret-0123", MutualUser: "tgt", MutualSecret: "target-secret-4567"}
	t.Run("honest target", func(t *testing.T) {
		checkNoLeak(t)
		ft := newFakeTarget(t, 1<<20)
		ft.chap = &fakeCHAP{user: creds.User, secret: creds.Secret, mutualUser: creds.MutualUser, mutualSecret: creds.MutualSecret}
		cfg := hostileConfig(t, nil)
		cfg.Credentials = creds
		_, l := fakeSession(t, ft, cfg)
		if err := readBlock(t, ft, l, 0); err != nil {
			t.Fatal(err)
		}
		if len(ft.challengesSeen()) != 1 {
			t.Fatalf("the fake saw %d mutual challenges", len(ft.challengesSeen()))
		}
	})
	t.Run("challenge equal to ours", func(t *testing.T) {
		checkNoLeak(t)
		ft := newFakeTarget(t, 1<<20)
		ch := &fakeCHAP{user: creds.User, secret: creds.Secret, mutualUser: creds.MutualUser, mutualSecret: creds.MutualSecret}
		ft.chap = ch
		cfg := hostileConfig(t, nil)
		cfg.Credentials = creds
		addr := ft.start()
		// First connection: an honest mutual login; the fake keeps the
		// initiator's challenge.
		s, err := Login(context.Background(), addr, "iqn.2026-11.test:fake", cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.Close(context.Background())
		seen := ft.challengesSeen()
		if len(seen) != 1 {
			t.Fatalf("%d challenges seen", len(seen))
		}
		// Second connection: the fake sends that challenge back.
		ch.challenge = func(*fakeConn) []byte { return seen[0] }
		before := ch.responses.Load()
		_, err = boundedCall(t, 10*time.Second, func() (*Session, error) {
			return Login(context.Background(), addr, "iqn.2026-11.test:fake", cfg)
		})
		var le *LoginError
		if !errors.As(err, &le) || !le.IsAuthFailure() || !strings.Contains(err.Error(), "reflection") {
			t.Fatalf("got %v, want an authentication LoginError naming the reflection", err)
		}
		if ch.responses.Load() != before {
			t.Error("the initiator answered a reflected challenge")
		}
	})
	t.Run("mutual answer with the initiator's secret", func(t *testing.T) {
		checkNoLeak(t)
		ft := newFakeTarget(t, 1<<20)
		ft.chap = &fakeCHAP{user: creds.User, secret: creds.Secret, mutualUser: creds.MutualUser, mutualWith: creds.Secret}
		cfg := hostileConfig(t, nil)
		cfg.Credentials = creds
		addr := ft.start()
		_, err := boundedCall(t, 10*time.Second, func() (*Session, error) {
			return Login(context.Background(), addr, "iqn.2026-11.test:fake", cfg)
		})
		var le *LoginError
		if !errors.As(err, &le) || !le.IsAuthFailure() || !strings.Contains(err.Error(), "reflection") {
			t.Fatalf("got %v, want a mutual authentication failure", err)
		}
	})
	t.Run("target that takes only a CHAP_A list of 5", func(t *testing.T) {
		tests := []struct {
			name   string
			algs   []CHAPAlgorithm
			offers []string
			ok     bool
		}{
			{"falls back to md5 once", []CHAPAlgorithm{CHAPSHA256, CHAPMD5}, []string{"7,5", "5"}, true},
			{"md5 alone from the start", nil, []string{"5"}, true},
			{"no md5 in the list: no fallback", []CHAPAlgorithm{CHAPSHA3_256, CHAPSHA256}, []string{"8,7"}, false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				checkNoLeak(t)
				ft := newFakeTarget(t, 1<<20)
				ch := &fakeCHAP{user: creds.User, secret: creds.Secret, onlyMD5: true}
				ft.chap = ch
				cfg := hostileConfig(t, nil)
				cfg.Credentials = Credentials{User: creds.User, Secret: creds.Secret}
				cfg.CHAPAlgorithms = tt.algs
				addr := ft.start()
				s, err := boundedCall(t, 10*time.Second, func() (*Session, error) {
					return Login(context.Background(), addr, "iqn.2026-11.test:fake", cfg)
				})
				if tt.ok != (err == nil) {
					t.Fatalf("login: %v, want success %v", err, tt.ok)
				}
				if s != nil {
					s.Close(context.Background())
				}
				ft.mu.Lock()
				offers := append([]string(nil), ch.offers...)
				ft.mu.Unlock()
				if !slices.Equal(offers, tt.offers) {
					t.Errorf("CHAP_A offers %q, want %q", offers, tt.offers)
				}
			})
		}
	})
	t.Run("wrong secret", func(t *testing.T) {
		checkNoLeak(t)
		ft := newFakeTarget(t, 1<<20)
		ft.chap = &fakeCHAP{user: creds.User, secret: "another-secret-99"}
		cfg := hostileConfig(t, nil)
		cfg.Credentials = Credentials{User: creds.User, Secret: creds.Secret}
		addr := ft.start()
		_, err := boundedCall(t, 10*time.Second, func() (*Session, error) {
			return Login(context.Background(), addr, "iqn.2026-11.test:fake", cfg)
		})
		var le *LoginError
		if !errors.As(err, &le) || !le.IsAuthFailure() {
			t.Fatalf("got %v, want an authentication failure", err)
		}
	})
}

// TestHostileLoginRedirect: a portal that redirects logins (class 1) to
// another one. A temporary redirect keeps the original portal for later
// reconnects, a permanent one replaces it.
func TestHostileLoginRedirect(t *testing.T) {
	for _, permanent := range []bool{false, true} {
		t.Run(map[bool]string{false: "temporary", true: "permanent"}[permanent], func(t *testing.T) {
			checkNoLeak(t)
			real := newFakeTarget(t, 1<<20)
			realAddr := real.start()
			front := newFakeTarget(t, 1<<20)
			var redirects atomic.Int32
			front.onLogin = func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction {
				redirects.Add(1)
				detail := uint8(1)
				if permanent {
					detail = 2
				}
				c.send(&pdu.LoginResp{CSG: req.CSG, ISID: req.ISID, ITT: req.ITT, StatusClass: 1, StatusDetail: detail,
					Data: pdu.EncodeText(nil, []pdu.KV{{Key: "TargetAddress", Value: realAddr + ",1"}})})
				return loginClose
			}
			frontAddr := front.start()
			s, err := Login(context.Background(), frontAddr, "iqn.2026-11.test:fake", hostileConfig(t, nil))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close(context.Background()) })
			l, err := s.OpenLUN(context.Background(), 0)
			if err != nil {
				t.Fatal(err)
			}
			wantPortal := frontAddr
			if permanent {
				wantPortal = realAddr
			}
			if s.Portal() != wantPortal || redirects.Load() != 1 || real.logins.Load() != 1 {
				t.Fatalf("portal %s (want %s), %d redirects, %d logins at the real portal", s.Portal(), wantPortal, redirects.Load(), real.logins.Load())
			}
			// A reconnect starts at the stored portal again.
			real.dropAll()
			if err := bounded(t, 10*time.Second, func() error { return readBlock(t, real, l, 4096) }); err != nil {
				t.Fatal(err)
			}
			wantRedirects := int32(2)
			if permanent {
				wantRedirects = 1
			}
			if redirects.Load() != wantRedirects || real.logins.Load() != 2 || s.Reconnects() != 1 {
				t.Errorf("after a reconnect: %d redirects (want %d), %d logins at the real portal (want 2), %d reconnects",
					redirects.Load(), wantRedirects, real.logins.Load(), s.Reconnects())
			}
		})
	}
}
