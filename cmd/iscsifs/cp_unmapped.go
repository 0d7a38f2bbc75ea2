package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/iscsifs/iscsifs/initiator"
)

// unmappedSkipper answers reads of ranges a thin LUN reports deallocated
// (GET LBA STATUS) with zeros, without reading them. Only for LUNs whose
// unmapped blocks read as zeros (LBPRZ), so the copy is the same as reading.
type unmappedSkipper struct {
	lun     *initiator.LUN
	read    func(ctx context.Context, p []byte, off int64) error
	skipped atomic.Int64 // bytes not read

	mu   sync.Mutex
	exts []initiator.Extent // the last GET LBA STATUS answer
	off  bool               // the LUN gave no map: read everything
}

func newUnmappedSkipper(lun *initiator.LUN, read func(context.Context, []byte, int64) error) *unmappedSkipper {
	return &unmappedSkipper{lun: lun, read: read, off: !lun.Provisioning.LBPRZ}
}

func (u *unmappedSkipper) readAt(ctx context.Context, p []byte, off int64) error {
	if u.unmapped(ctx, off, int64(len(p))) {
		clear(p)
		u.skipped.Add(int64(len(p)))
		return nil
	}
	return u.read(ctx, p, off)
}

// unmapped reports whether one deallocated extent covers [off, off+n).
func (u *unmappedSkipper) unmapped(ctx context.Context, off, n int64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.off {
		return false
	}
	for attempt := 0; attempt < 2; attempt++ {
		for _, e := range u.exts {
			if e.Off <= off && off < e.Off+e.Len {
				return !e.Mapped && off+n <= e.Off+e.Len
			}
		}
		if attempt == 1 {
			break
		}
		exts, err := u.lun.LBAStatus(ctx, off)
		if err != nil {
			if errors.Is(err, initiator.ErrNoLBAStatus) {
				u.off = true
			}
			return false // read it: a map error never loses data
		}
		u.exts = exts
	}
	return false
}
