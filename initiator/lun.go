package initiator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iscsifs/iscsifs/initiator/pdu"
	"github.com/iscsifs/iscsifs/initiator/scsi"
)

// Retry bounds for SCSI conditions that are not failures.
const (
	maxUnitAttentionRetries = 10
	maxBusyWait             = 30 * time.Second
	maxNotReadyWait         = 30 * time.Second
	maxAbortedRetries       = 3
)

// Do runs a SCSI command, retrying UNIT ATTENTION, BUSY, TASK SET FULL, NOT
// READY (becoming ready) and ABORTED COMMAND within bounds; on a session
// with several paths that follows ALUA states, also a command its port
// refused as standby or unavailable (see doALUA). It returns the
// Data-In bytes received; a final non-GOOD status is a *scsi.StatusError
// wrapped in a *CommandError.
func (s *Session) Do(ctx context.Context, lun uint64, cdb, read, write []byte) (int, error) {
	return s.doALUA(ctx, lun, cdb, read, write)
}

// do is Do over any way of executing a command (recovery uses a connection
// that is not installed yet).
func (s *Session) do(ctx context.Context, exec func(context.Context, *Command) (*Response, error), lun uint64, cdb, read, write []byte) (int, error) {
	op := scsi.OpName(cdb)
	ua, aborted := 0, 0
	backoff := 5 * time.Millisecond
	// The busy and not-ready waits count from the first such answer: no
	// clock read on the path of a command that succeeds.
	var start time.Time
	sinceStart := func() time.Duration {
		if start.IsZero() {
			start = time.Now()
		}
		return time.Since(start)
	}
	for {
		resp, err := exec(ctx, &Command{LUN: lun, CDB: cdb, Read: read, Write: write})
		if err != nil {
			return 0, &CommandError{Target: s.target, LUN: lun, Op: op, Err: err}
		}
		// CheckStatus returns a bare *StatusError: a type assertion, unlike
		// errors.As, keeps serr off the heap on every command's success.
		serr, _ := scsi.CheckStatus(cdb, resp.Status, resp.Sense).(*scsi.StatusError)
		if serr == nil {
			return resp.Transferred, nil // GOOD or CONDITION MET
		}
		wait := time.Duration(0)
		if st := aluaNotReady(serr); st != ALUAUnknown {
			// The path's port does not serve the LU now: that is the
			// path's ALUA state. A MultipathLUN tries another path at once.
			s.noteALUA(resp.portal, st, cdb)
			if s.alua.failFast.Load() {
				return 0, &CommandError{Target: s.target, LUN: lun, Op: op, Err: serr}
			}
		}
		switch {
		case errors.Is(serr, scsi.ErrUnitAttention):
			ua++
			if ua > maxUnitAttentionRetries {
				return 0, &CommandError{Target: s.target, LUN: lun, Op: op, Err: serr}
			}
			s.logger().Debug("unit attention", "lun", lun, "sense", serr.Sense.String())
			if errors.Is(serr, scsi.ErrCapacityChanged) {
				s.capacityChanged(lun)
			}
			if errors.Is(serr, scsi.ErrModeChanged) {
				s.modeChanged(lun)
			}
			if errors.Is(serr, scsi.ErrAccessChanged) {
				s.aluaChanged()
			}
		case resp.Status == scsi.StatusBusy || resp.Status == scsi.StatusTaskSetFull:
			if sinceStart() > maxBusyWait {
				return 0, &CommandError{Target: s.target, LUN: lun, Op: op, Err: serr}
			}
			wait = backoff
		case errors.Is(serr, scsi.ErrNotReady) && serr.Retryable():
			if sinceStart() > maxNotReadyWait {
				return 0, &CommandError{Target: s.target, LUN: lun, Op: op, Err: serr}
			}
			wait = backoff
		case serr.Sense != nil && serr.Sense.Key == scsi.SenseAbortedCommand:
			aborted++
			if aborted > maxAbortedRetries {
				return 0, &CommandError{Target: s.target, LUN: lun, Op: op, Err: serr}
			}
		default:
			return 0, &CommandError{Target: s.target, LUN: lun, Op: op, Err: serr}
		}
		if wait > 0 {
			backoff = min(backoff*2, time.Second)
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
	}
}

// LUN is one logical unit of a session, usable as a block device. Its
// methods are safe for concurrent use.
type LUN struct {
	s         *Session
	ownsS     bool // opened by Open: Close logs the session out
	lun       uint64
	blockSize int
	blocks    atomic.Uint64 // changes on a capacity-changed UNIT ATTENTION
	maxXfer   int           // bytes per command
	lbpme     bool          // thin-provisioned (READ CAPACITY(16) LBPME)

	unmapBroken     atomic.Bool // UNMAP advertised but refused
	lbaStatusBroken atomic.Bool // GET LBA STATUS refused
	resizeMu        sync.Mutex
	onResize        func(newSize int64)
	refreshMu       sync.Mutex // one capacity or mode refresh at a time, so reports keep their order

	Inquiry      scsi.InquiryData
	Serial       string // VPD 0x80, "" if not reported
	Identifier   string // VPD 0x83 LU designator, "" if not reported
	Limits       scsi.BlockLimits
	Provisioning scsi.Provisioning
	VPDPages     []uint8
	readOnly     atomic.Bool // MODE SENSE WP; re-read on UA 2A/01 and after a reconnect
	writeCache   atomic.Bool // MODE SENSE caching page WCE, likewise
	// fua: MODE SENSE DPOFUA, the device server honours FORCE UNIT ACCESS
	// (cleared if a FUA write is refused all the same).
	fua       atomic.Bool
	modeKnown atomic.Bool // MODE SENSE has answered once
	// force16 makes every READ and WRITE a 16-byte command: set for a LUN
	// of 2^32 blocks or more, as Linux's sd does (use_16_for_rw), so that
	// such a LUN never sees the 10-byte commands.
	force16 atomic.Bool

	// writesDone counts finished data-changing commands (WRITE, UNMAP,
	// WRITE SAME, failed ones included: part of their data may have
	// landed); syncedWrites is the count the last successful SYNCHRONIZE
	// CACHE covered. A filesystem on the LUN flushes at every journal
	// commit, often with nothing written since the previous flush.
	writesDone   atomic.Uint64
	syncedWrites atomic.Uint64
}

// ErrNotBlockDevice is returned by OpenLUN for a LUN that is not a
// direct-access block device (e.g. tgt's LUN 0 controller).
var ErrNotBlockDevice = errors.New("not a direct-access block device")

// RangeError is I/O outside the LUN.
type RangeError struct {
	Off, Len, Size int64
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("I/O [%d, %d) beyond the end of the %d-byte LUN", e.Off, e.Off+e.Len, e.Size)
}

// OpenLUN probes a LUN: drains UNIT ATTENTIONs, reads INQUIRY, the VPD pages
// the LUN lists, its capacity and write protection.
func (s *Session) OpenLUN(ctx context.Context, lun uint64) (*LUN, error) {
	l := &LUN{s: s, lun: lun}
	// A port in ALUA standby or unavailable state refuses TEST UNIT READY
	// (04/0B, 04/0C) yet answers what OpenLUN reads next.
	if _, err := s.Do(ctx, lun, scsi.TestUnitReady(), nil, nil); err != nil && aluaNotReady(err) == ALUAUnknown {
		return nil, err
	}
	inq, err := s.Inquiry(ctx, lun)
	if err != nil {
		return nil, err
	}
	l.Inquiry = inq
	if inq.PeripheralQualifier != 0 || inq.DeviceType != 0 {
		return nil, &CommandError{Target: s.target, LUN: lun, Op: "INQUIRY", Err: fmt.Errorf("%w (peripheral type 0x%02x)", ErrNotBlockDevice, inq.DeviceType)}
	}
	if err := l.readVPD(ctx); err != nil {
		return nil, err
	}
	if err := l.readCapacity(ctx); err != nil {
		return nil, err
	}
	l.readModeSense(ctx)
	l.maxXfer = l.transferLimit()
	s.rememberLUN(l)
	if inq.TPGS != scsi.TPGSNone {
		s.learnALUA(ctx) // before the first I/O, which then takes the best path
	}
	return l, nil
}

// Inquiry reads the standard INQUIRY data (36 bytes, more if offered).
func (s *Session) Inquiry(ctx context.Context, lun uint64) (scsi.InquiryData, error) {
	buf := make([]byte, 36)
	n, err := s.Do(ctx, lun, scsi.Inquiry(false, 0, 36), buf, nil)
	if err != nil {
		return scsi.InquiryData{}, err
	}
	inq, err := scsi.ParseInquiry(buf[:n])
	if err != nil {
		return scsi.InquiryData{}, &CommandError{Target: s.target, LUN: lun, Op: "INQUIRY", Err: err}
	}
	return inq, nil
}

// vpd reads one VPD page, re-issuing with the page's full length.
func (s *Session) vpd(ctx context.Context, lun uint64, page uint8) ([]byte, error) {
	return s.vpdWith(ctx, s.Execute, lun, page)
}

// vpdWith is vpd over any way of executing a command (recovery reads the
// unit serial on a connection that is not installed yet).
func (s *Session) vpdWith(ctx context.Context, exec func(context.Context, *Command) (*Response, error), lun uint64, page uint8) ([]byte, error) {
	alloc := 255
	for try := 0; try < 2; try++ {
		buf := make([]byte, alloc)
		n, err := s.do(ctx, exec, lun, scsi.Inquiry(true, page, uint16(alloc)), buf, nil)
		if err != nil {
			return nil, err
		}
		buf = buf[:n]
		if full := scsi.VPDLength(buf); full > alloc && try == 0 {
			alloc = min(full, 0xffff)
			continue
		}
		return buf, nil
	}
	return nil, fmt.Errorf("VPD page 0x%02x keeps growing", page)
}

func (l *LUN) readVPD(ctx context.Context) error {
	s := l.s
	b, err := s.vpd(ctx, l.lun, scsi.VPDSupportedPages)
	if err != nil {
		// VPD is optional (SPC-2 devices): work without it.
		s.logger().Debug("no VPD pages", "err", err)
		return nil
	}
	pages, err := scsi.ParseSupportedVPDPages(b)
	if err != nil {
		return nil
	}
	l.VPDPages = pages
	for _, p := range pages {
		switch p {
		case scsi.VPDUnitSerial, scsi.VPDDeviceIdentification, scsi.VPDBlockLimits, scsi.VPDLogicalBlockProvisioning:
		default:
			continue
		}
		b, err := s.vpd(ctx, l.lun, p)
		if err != nil {
			s.logger().Debug("VPD page listed but not readable", "err", err, "page", p)
			continue
		}
		switch p {
		case scsi.VPDUnitSerial:
			l.Serial, _ = scsi.ParseUnitSerial(b)
		case scsi.VPDDeviceIdentification:
			if ds, err := scsi.ParseDeviceIdentification(b); err == nil {
				l.Identifier = scsi.LUIdentifier(ds)
			}
		case scsi.VPDBlockLimits:
			l.Limits, _ = scsi.ParseBlockLimits(b)
		case scsi.VPDLogicalBlockProvisioning:
			l.Provisioning, _ = scsi.ParseLogicalBlockProvisioning(b)
		}
	}
	return nil
}

func (l *LUN) readCapacity(ctx context.Context) error {
	s := l.s
	buf := make([]byte, 32)
	n, err := s.Do(ctx, l.lun, scsi.ReadCapacity16(32), buf, nil)
	var c scsi.Capacity
	if err == nil {
		c, err = scsi.ParseReadCapacity16(buf[:n])
	}
	if err != nil {
		// READ CAPACITY(16) is optional: fall back to (10).
		buf = make([]byte, 8)
		n, err = s.Do(ctx, l.lun, scsi.ReadCapacity10(), buf, nil)
		if err != nil {
			return err
		}
		if c, err = scsi.ParseReadCapacity10(buf[:n]); err != nil {
			return &CommandError{Target: s.target, LUN: l.lun, Op: "READ CAPACITY(10)", Err: err}
		}
	}
	if c.BlockSize == 0 || c.BlockSize%512 != 0 || c.BlockSize > 1<<20 {
		return &CommandError{Target: s.target, LUN: l.lun, Op: "READ CAPACITY", Err: fmt.Errorf("unsupported block size %d", c.BlockSize)}
	}
	if l.blockSize != 0 && l.blockSize != int(c.BlockSize) {
		return &CommandError{Target: s.target, LUN: l.lun, Op: "READ CAPACITY", Err: fmt.Errorf("block size changed from %d to %d", l.blockSize, c.BlockSize)}
	}
	if l.blockSize == 0 {
		// Set once, at open: afterwards they are read without locks.
		l.blockSize = int(c.BlockSize)
		l.lbpme = c.LBPME
	}
	l.blocks.Store(c.LastLBA + 1)
	l.force16.Store(c.LastLBA >= math.MaxUint32)
	return nil
}

// readModeSense learns write protection and the write cache setting; a LUN
// without MODE SENSE (or whose MODE SENSE fails) is taken as having a write
// cache, so SYNCHRONIZE CACHE is never skipped on a guess. It runs at open,
// and again when the target reports changed mode parameters (UA 2A/01) and
// after a reconnect.
func (l *LUN) readModeSense(ctx context.Context) {
	s := l.s
	buf := make([]byte, 255)
	n, err := s.Do(ctx, l.lun, scsi.ModeSense10(0x08, 0, 255, true), buf, nil)
	var mp scsi.ModeParameters
	if err == nil {
		mp, err = scsi.ParseModeSense10(buf[:n])
	}
	if err != nil {
		n, err = s.Do(ctx, l.lun, scsi.ModeSense6(0x08, 0, 255, true), buf, nil)
		if err == nil {
			mp, err = scsi.ParseModeSense6(buf[:n])
		}
	}
	if err != nil {
		s.logger().Debug("MODE SENSE not supported", "err", err, "lun", l.lun)
		l.writeCache.Store(true)
		l.fua.Store(false)
		return
	}
	l.fua.Store(mp.DPOFUA)
	wce := !mp.HaveCachingPage || mp.WriteCacheEnabled
	changed := l.readOnly.Swap(mp.WriteProtected) != mp.WriteProtected
	changed = l.writeCache.Swap(wce) != wce || changed
	level := slog.LevelDebug
	if known := l.modeKnown.Swap(true); changed && known {
		level = slog.LevelInfo // a change after open
	}
	s.logger().Log(context.Background(), level, "LUN mode parameters", "lun", l.lun, "write_protected", mp.WriteProtected, "write_cache", wce, "fua", mp.DPOFUA)
}

// transferLimit is the largest single READ/WRITE: MaxBurstLength (so a
// write needs one R2T at most and reads pipeline well), the Block Limits
// MAXIMUM TRANSFER LENGTH and the 16-bit block count of READ(10).
func (l *LUN) transferLimit() int {
	limit := l.s.Params().MaxBurstLength
	if limit <= 0 {
		limit = 256 * 1024
	}
	if m := int(l.Limits.MaxTransferLength); m > 0 {
		limit = min(limit, m*l.blockSize)
	}
	limit = min(limit, 0xffff*l.blockSize)
	return max(l.blockSize, limit/l.blockSize*l.blockSize)
}

// Number returns the LUN number.
func (l *LUN) Number() uint64 { return l.lun }

// Session returns the session the LUN belongs to.
func (l *LUN) Session() *Session { return l.s }

// Size returns the capacity in bytes.
func (l *LUN) Size() int64 { return int64(l.blocks.Load()) * int64(l.blockSize) }

// OnResize registers f to be called (from its own goroutine) when the LUN's
// capacity changes (UNIT ATTENTION 2A/09, CAPACITY DATA HAS CHANGED, or the
// same sense in an Asynchronous Message). Calls come one at a time, in the
// order the new sizes were read.
func (l *LUN) OnResize(f func(newSize int64)) {
	l.resizeMu.Lock()
	l.onResize = f
	l.resizeMu.Unlock()
}

// refreshMode re-reads the mode parameters, one refresh at a time.
func (l *LUN) refreshMode(ctx context.Context) {
	l.refreshMu.Lock()
	defer l.refreshMu.Unlock()
	l.readModeSense(ctx)
}

// refreshCapacity re-reads the capacity and reports a change.
func (l *LUN) refreshCapacity(ctx context.Context) {
	l.refreshMu.Lock()
	defer l.refreshMu.Unlock()
	before := l.Size()
	if err := l.readCapacity(ctx); err != nil {
		l.s.logger().Warn("re-reading capacity after a capacity change", "err", err, "lun", l.lun)
		return
	}
	after := l.Size()
	if after == before {
		return
	}
	l.s.logger().Info("LUN capacity changed", "lun", l.lun, "from", before, "to", after)
	l.resizeMu.Lock()
	f := l.onResize
	l.resizeMu.Unlock()
	if f != nil {
		f(after)
	}
}

// BlockSize returns the logical block size.
func (l *LUN) BlockSize() int { return l.blockSize }

// ReadOnly reports a write-protected LUN (MODE SENSE WP bit).
func (l *LUN) ReadOnly() bool { return l.readOnly.Load() }

// WriteCacheEnabled reports MODE SENSE caching page WCE (SYNCHRONIZE CACHE matters).
func (l *LUN) WriteCacheEnabled() bool { return l.writeCache.Load() }

// MaxTransfer returns the bytes per READ/WRITE command.
func (l *LUN) MaxTransfer() int { return l.maxXfer }

// ReadAt implements io.ReaderAt.
func (l *LUN) ReadAt(p []byte, off int64) (int, error) {
	return l.ReadAtContext(context.Background(), p, off)
}

// WriteAt implements io.WriterAt.
func (l *LUN) WriteAt(p []byte, off int64) (int, error) {
	return l.WriteAtContext(context.Background(), p, off)
}

// Sync makes written data durable (SYNCHRONIZE CACHE).
func (l *LUN) Sync() error { return l.SyncContext(context.Background()) }

// ReadAtContext reads len(p) bytes at off; at the end of the LUN it returns
// a short count and io.EOF. Any alignment works; unaligned edges are read
// into a bounce buffer.
func (l *LUN) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	size := l.Size()
	if off < 0 {
		return 0, &RangeError{Off: off, Len: int64(len(p)), Size: size}
	}
	if off >= size {
		return 0, io.EOF
	}
	var eof error
	if rest := size - off; int64(len(p)) > rest {
		p, eof = p[:rest], io.EOF
	}
	bs := int64(l.blockSize)
	if off%bs == 0 && int64(len(p))%bs == 0 {
		if err := l.rw(ctx, p, off, opRead); err != nil {
			return 0, err
		}
		return len(p), eof
	}
	start := off / bs * bs
	end := (off + int64(len(p)) + bs - 1) / bs * bs
	buf := make([]byte, end-start)
	if err := l.rw(ctx, buf, start, opRead); err != nil {
		return 0, err
	}
	copy(p, buf[off-start:])
	return len(p), eof
}

// WriteAtContext writes p at off. Unaligned edges are read, merged and
// written back (not atomic against concurrent overlapping writers; the cache
// layer only issues aligned writes).
func (l *LUN) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return l.writeAt(ctx, p, off, opWrite)
}

// WriteDurableAtContext is WriteAtContext for data that is about to be made
// durable anyway (fsync): when the LUN has a write cache, its device server
// honours FORCE UNIT ACCESS (MODE SENSE DPOFUA) and every earlier write is
// already covered by a SYNCHRONIZE CACHE, the WRITEs carry FUA, so they are
// on the medium when they complete and the next SyncContext sends nothing:
// one round trip instead of two for a small fsync. Otherwise it is
// WriteAtContext. Either way SyncContext is still what makes the data
// durable: the caller calls it afterwards, as after any write.
func (l *LUN) WriteDurableAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	// With writes awaiting SYNCHRONIZE CACHE it is sent anyway, and FUA
	// would only make the target flush twice.
	if l.writesDone.Load() != l.syncedWrites.Load() {
		return l.writeAt(ctx, p, off, opWrite)
	}
	n, _, err := l.writeFUA(ctx, p, off)
	return n, err
}

// writeFUA writes p with FORCE UNIT ACCESS when the LUN has a write cache
// and honours FUA, and says whether it did: then p is on the medium. A FUA
// write refused on the way goes again without FUA and is not durable.
func (l *LUN) writeFUA(ctx context.Context, p []byte, off int64) (n int, durable bool, err error) {
	if !l.fua.Load() || !l.writeCache.Load() {
		n, err = l.writeAt(ctx, p, off, opWrite)
		return n, false, err
	}
	n, err = l.writeAt(ctx, p, off, opWriteFUA)
	return n, err == nil && l.fua.Load(), err
}

func (l *LUN) writeAt(ctx context.Context, p []byte, off int64, op rwOp) (int, error) {
	size := l.Size()
	if off < 0 || off+int64(len(p)) > size {
		return 0, &RangeError{Off: off, Len: int64(len(p)), Size: size}
	}
	if l.readOnly.Load() {
		return 0, &CommandError{Target: l.s.target, LUN: l.lun, Op: "WRITE", Err: scsi.ErrWriteProtected}
	}
	bs := int64(l.blockSize)
	if off%bs == 0 && int64(len(p))%bs == 0 {
		if err := l.rw(ctx, p, off, op); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	start := off / bs * bs
	end := (off + int64(len(p)) + bs - 1) / bs * bs
	buf := make([]byte, end-start)
	if off != start {
		if err := l.rw(ctx, buf[:bs], start, opRead); err != nil {
			return 0, err
		}
	}
	if (off+int64(len(p)))%bs != 0 && (end-bs > start || off == start) {
		if err := l.rw(ctx, buf[len(buf)-int(bs):], end-bs, opRead); err != nil {
			return 0, err
		}
	}
	copy(buf[off-start:], p)
	if err := l.rw(ctx, buf, start, op); err != nil {
		return 0, err
	}
	return len(p), nil
}

// SyncContext sends SYNCHRONIZE CACHE for the whole LUN when its write cache
// is enabled (MODE SENSE WCE, SBC-3) and a write of this LUN has finished
// since the last one; with WCE off a completed write is already on the
// medium, so there is nothing to flush (as Linux's sd does).
func (l *LUN) SyncContext(ctx context.Context) error {
	if !l.writeCache.Load() {
		return nil
	}
	// Read the count before sending: a write finishing while the command is
	// in flight may not be covered, and then keeps the next Sync necessary.
	done := l.writesDone.Load()
	if done == l.syncedWrites.Load() {
		l.s.stats.syncsSkipped.Add(1)
		return nil
	}
	if _, err := l.s.Do(ctx, l.lun, scsi.SynchronizeCache(0, 0), nil, nil); err != nil {
		return err
	}
	l.s.stats.syncsSent.Add(1)
	raiseTo(&l.syncedWrites, done)
	return nil
}

// raiseTo sets a to v unless it is already higher.
func raiseTo(a *atomic.Uint64, v uint64) {
	for {
		prev := a.Load()
		if prev >= v || a.CompareAndSwap(prev, v) {
			return
		}
	}
}

// wrote records a finished data-changing command (see writesDone).
func (l *LUN) wrote() { l.writesDone.Add(1) }

// rwOp is what rw does: read, write, or write with FORCE UNIT ACCESS.
type rwOp uint8

const (
	opRead rwOp = iota
	opWrite
	opWriteFUA
)

// rw runs an aligned transfer as commands of at most maxXfer bytes, issued
// concurrently; the session's queue depth bounds how many are in flight.
func (l *LUN) rw(ctx context.Context, p []byte, off int64, op rwOp) error {
	if len(p) <= l.maxXfer {
		return l.rwOne(ctx, p, off, op)
	}
	return l.rwPieces(ctx, p, off, op)
}

// rwPieces is rw of more than one command. It is apart so that what its
// goroutines capture is not moved to the heap on rw's one-command path.
func (l *LUN) rwPieces(ctx context.Context, p []byte, off int64, op rwOp) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pieces := (len(p) + l.maxXfer - 1) / l.maxXfer
	errs := make(chan error, pieces)
	for i := 0; i < len(p); i += l.maxXfer {
		chunk := p[i:min(i+l.maxXfer, len(p))]
		go func(chunk []byte, off int64) {
			errs <- l.rwOne(ctx, chunk, off, op)
		}(chunk, off+int64(i))
	}
	var first error
	for range pieces {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

func (l *LUN) rwOne(ctx context.Context, p []byte, off int64, op rwOp) error {
	bs := int64(l.blockSize)
	lba := uint64(off / bs)
	blocks := uint32(int64(len(p)) / bs)
	switch op {
	case opWriteFUA:
		_, err := l.s.Do(ctx, l.lun, scsi.Write(lba, blocks, true, l.force16.Load()), nil, p)
		if err == nil {
			// On the medium: nothing for SYNCHRONIZE CACHE to cover.
			l.s.stats.fuaWrites.Add(1)
			return nil
		}
		// Part of a failed write may sit in the target's cache.
		l.wrote()
		if !errors.Is(err, scsi.ErrInvalidField) {
			return err
		}
		// DPOFUA said yes and the CDB was refused all the same: write
		// without FUA, now and from now on (SyncContext then flushes).
		// Concurrent refusals each retry; the first one logs.
		if l.fua.Swap(false) {
			l.s.logger().Info("FUA write refused; writing without FUA", "lun", l.lun, "err", err)
		}
		fallthrough
	case opWrite:
		_, err := l.s.Do(ctx, l.lun, scsi.Write(lba, blocks, false, l.force16.Load()), nil, p)
		l.wrote()
		return err
	}
	n, err := l.s.Do(ctx, l.lun, scsi.Read(lba, blocks, false, l.force16.Load()), p, nil)
	if err != nil {
		return err
	}
	if n != len(p) {
		return &CommandError{Target: l.s.target, LUN: l.lun, Op: "READ", Err: fmt.Errorf("short read: %d of %d bytes", n, len(p))}
	}
	return nil
}

// ReportLUNs lists the session's LUNs (REPORT LUNS on LUN 0).
func (s *Session) ReportLUNs(ctx context.Context) ([]uint64, error) {
	alloc := uint32(16 + 8*64)
	for try := 0; try < 3; try++ {
		buf := make([]byte, alloc)
		n, err := s.Do(ctx, 0, scsi.ReportLUNs(alloc), buf, nil)
		if err != nil {
			return nil, err
		}
		luns, listLen, err := scsi.ParseReportLUNs(buf[:n])
		if err != nil {
			return nil, &CommandError{Target: s.target, Op: "REPORT LUNS", Err: err}
		}
		if need := listLen + 8; need > alloc && try < 2 {
			alloc = min(need, 1<<20)
			continue
		}
		return luns, nil
	}
	return nil, &CommandError{Target: s.target, Op: "REPORT LUNS", Err: errors.New("LUN list keeps growing")}
}

// Close closes a LUN opened with Open: it logs its session out (Session.Close
// says how long that may take). For a LUN of Session.OpenLUN it does nothing:
// the session is the program's to close.
func (l *LUN) Close() error {
	if l.ownsS {
		return l.s.Close(context.Background())
	}
	return nil
}

// Execute sends one SCSI command that the LUN's methods do not wrap (e.g.
// PERSISTENT RESERVE IN, REPORT SUPPORTED OPERATION CODES) and returns how
// many bytes the target returned into dataIn. cdb is the command descriptor
// block (6 to 260 bytes); dataIn receives the command's data from the
// target, and its length is the most the target may send (make it match
// the CDB's ALLOCATION LENGTH); dataOut is the data the command sends. At
// most one of dataIn and dataOut may be non-empty; neither may be used by
// another goroutine until Execute returns.
//
// A status other than GOOD or CONDITION MET is a *CommandError wrapping a
// *scsi.StatusError, whose Sense holds the decoded sense data (errors.As);
// errors.Is matches the scsi package's sentinels (scsi.ErrInvalidOpcode,
// scsi.ErrReservation ...). As for the LUN's own commands, UNIT ATTENTION,
// BUSY, TASK SET FULL, NOT READY while becoming ready and ABORTED COMMAND are
// retried within bounds, and a command caught by a connection loss is
// issued again on the new connection: use Execute for commands that may be
// carried out twice. The library cannot tell whether a command changed the
// LUN's data, so the next Sync sends SYNCHRONIZE CACHE in any case.
func (l *LUN) Execute(ctx context.Context, cdb, dataIn, dataOut []byte) (int, error) {
	switch {
	case len(cdb) < 6 || len(cdb) > pdu.MaxCDBLength:
		return 0, fmt.Errorf("initiator: Execute: a CDB of %d bytes (want 6 to %d)", len(cdb), pdu.MaxCDBLength)
	case len(dataIn) > 0 && len(dataOut) > 0:
		return 0, fmt.Errorf("initiator: Execute: %s with both data-in and data-out buffers (bidirectional commands are not supported)", scsi.OpName(cdb))
	case uint64(max(len(dataIn), len(dataOut))) > math.MaxUint32:
		return 0, fmt.Errorf("initiator: Execute: %s: more than 4 GiB of data", scsi.OpName(cdb))
	}
	var in, out []byte // nil unless used: Command tells the direction by nil
	if len(dataIn) > 0 {
		in = dataIn
	}
	if len(dataOut) > 0 {
		out = dataOut
	}
	defer l.wrote()
	return l.s.Do(ctx, l.lun, cdb, in, out)
}
