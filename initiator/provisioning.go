package initiator

import (
	"context"
	"errors"
	"fmt"

	"github.com/iscsifs/iscsifs/initiator/scsi"
)

// ErrDiscardNotSupported means the LUN can neither unmap nor write zeros
// with WRITE SAME: the caller reports EOPNOTSUPP.
var ErrDiscardNotSupported = errors.New("LUN supports neither UNMAP nor WRITE SAME")

// Default chunk for WRITE SAME when the Block Limits page gives no maximum.
const defaultWriteSameBlocks = 1 << 16

// CanUnmap reports whether the LUN deallocates blocks (UNMAP or WRITE SAME
// with UNMAP, SBC-3 logical block provisioning).
func (l *LUN) CanUnmap() bool {
	return l.Provisioning.LBPU || l.Provisioning.LBPWS
}

// Discard makes [off, off+length) read back as zeros, releasing the blocks
// when the LUN is thin-provisioned: UNMAP when unmapped blocks read as zeros
// (LBPRZ), else WRITE SAME(16) of a zero block (with the UNMAP bit when the
// LUN supports it). Only whole logical blocks are discarded; a partial block
// at either end is written with zeros. It returns ErrDiscardNotSupported
// when the LUN has neither command.
func (l *LUN) Discard(ctx context.Context, off, length int64) error {
	size := l.Size()
	if off < 0 || length < 0 || off+length > size {
		return &RangeError{Off: off, Len: length, Size: size}
	}
	if l.readOnly.Load() {
		return &CommandError{Target: l.s.target, LUN: l.lun, Op: "UNMAP", Err: scsi.ErrWriteProtected}
	}
	bs := int64(l.blockSize)
	start := (off + bs - 1) / bs * bs
	end := (off + length) / bs * bs
	// Partial blocks at the edges: zero them with ordinary writes.
	for _, r := range [][2]int64{{off, min(start, off+length)}, {max(end, start), off + length}} {
		if r[1] > r[0] {
			if _, err := l.WriteAtContext(ctx, make([]byte, r[1]-r[0]), r[0]); err != nil {
				return err
			}
		}
	}
	if end <= start {
		return nil
	}
	lba, blocks := uint64(start/bs), uint64((end-start)/bs)
	p := l.Provisioning
	var err error
	switch {
	case p.LBPU && p.LBPRZ && !l.unmapBroken.Load():
		err = l.unmap(ctx, lba, blocks)
		if errors.Is(err, scsi.ErrInvalidOpcode) || errors.Is(err, scsi.ErrInvalidField) {
			l.unmapBroken.Store(true) // the target lied in VPD B2: stop trying
			err = l.writeSame(ctx, lba, blocks, p.LBPWS)
		}
	default:
		err = l.writeSame(ctx, lba, blocks, p.LBPWS && p.LBPRZ)
	}
	if errors.Is(err, scsi.ErrInvalidOpcode) {
		return fmt.Errorf("%w: %v", ErrDiscardNotSupported, err)
	}
	return err
}

// unmap sends UNMAP for the range, split by the Block Limits maxima.
func (l *LUN) unmap(ctx context.Context, lba, blocks uint64) error {
	perDesc := uint64(l.Limits.MaxUnmapLBACount)
	if perDesc == 0 || perDesc == 0xffffffff {
		perDesc = 0xffffffff // the descriptor's 32-bit count is the only limit
	}
	perCmd := int(l.Limits.MaxUnmapDescriptorCount)
	if perCmd == 0 || perCmd > scsi.MaxUnmapDescriptors {
		perCmd = scsi.MaxUnmapDescriptors
	}
	// A parameter list must fit one Data-Out burst comfortably.
	perCmd = min(perCmd, 255)
	var extents []scsi.Extent
	flush := func() error {
		if len(extents) == 0 {
			return nil
		}
		params := scsi.UnmapParameterList(extents)
		extents = extents[:0]
		_, err := l.s.Do(ctx, l.lun, scsi.Unmap(uint16(len(params))), nil, params)
		l.wrote()
		return err
	}
	for blocks > 0 {
		n := min(blocks, perDesc)
		extents = append(extents, scsi.Extent{LBA: lba, Blocks: uint32(n)})
		lba += n
		blocks -= n
		if len(extents) == perCmd {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// writeSame writes a zero block over the range with WRITE SAME(16),
// optionally allowing the target to unmap instead.
func (l *LUN) writeSame(ctx context.Context, lba, blocks uint64, unmap bool) error {
	chunk := l.Limits.MaxWriteSameLength
	if chunk == 0 {
		chunk = defaultWriteSameBlocks
	}
	chunk = min(chunk, 0xffffffff)
	zero := make([]byte, l.blockSize)
	for blocks > 0 {
		n := min(blocks, chunk)
		_, err := l.s.Do(ctx, l.lun, scsi.WriteSame16(lba, uint32(n), unmap), nil, zero)
		l.wrote()
		if err != nil {
			return err
		}
		lba += n
		blocks -= n
	}
	return nil
}

// Extent is a byte range of a LUN and whether it is allocated.
type Extent struct {
	Off, Len int64
	Mapped   bool
}

// ErrNoLBAStatus means the LUN cannot report which blocks are allocated.
var ErrNoLBAStatus = errors.New("LUN does not report LBA status")

// LBAStatus reports the allocation of the range starting at off (GET LBA
// STATUS, SBC-3): consecutive extents, the first starting at off. Only
// thin-provisioned LUNs (READ CAPACITY(16) LBPME) answer it.
func (l *LUN) LBAStatus(ctx context.Context, off int64) ([]Extent, error) {
	if !l.lbpme || l.lbaStatusBroken.Load() {
		return nil, ErrNoLBAStatus
	}
	bs := int64(l.blockSize)
	if off < 0 || off >= l.Size() {
		return nil, &RangeError{Off: off, Size: l.Size()}
	}
	buf := make([]byte, 8+16*64)
	n, err := l.s.Do(ctx, l.lun, scsi.GetLBAStatus(uint64(off/bs), uint32(len(buf))), buf, nil)
	if errors.Is(err, scsi.ErrInvalidOpcode) || errors.Is(err, scsi.ErrInvalidField) {
		l.lbaStatusBroken.Store(true)
		return nil, ErrNoLBAStatus
	}
	if err != nil {
		return nil, err
	}
	descs, err := scsi.ParseGetLBAStatus(buf[:n])
	if err != nil {
		return nil, &CommandError{Target: l.s.target, LUN: l.lun, Op: "GET LBA STATUS", Err: err}
	}
	var out []Extent
	for _, d := range descs {
		e := Extent{Off: int64(d.LBA) * bs, Len: int64(d.Blocks) * bs, Mapped: d.Status == scsi.LBAMapped}
		if e.Len == 0 {
			break
		}
		// Clip to what was asked and to the LUN.
		if e.Off < off {
			e.Len -= off - e.Off
			e.Off = off
		}
		e.Len = min(e.Len, l.Size()-e.Off)
		if e.Len > 0 {
			out = append(out, e)
		}
	}
	if len(out) == 0 || out[0].Off != off {
		return nil, &CommandError{Target: l.s.target, LUN: l.lun, Op: "GET LBA STATUS", Err: errors.New("answer does not start at the requested block")}
	}
	return out, nil
}
