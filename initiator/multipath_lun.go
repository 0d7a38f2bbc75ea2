package initiator

import (
	"context"
	"sync"
)

// What a MultipathLUN offers beyond I/O, so that a program can use it where
// it would use a LUN (the iscsifs mount serves either).

// Number is the LUN number (the same on every path).
func (m *MultipathLUN) Number() uint64 { return m.paths[0].l.Number() }

// Primary is the first path's LUN: its identity (Inquiry, Serial,
// Identifier) is the multipath LUN's, since every path was checked to
// reach the same logical unit. I/O should go through m, not through it.
func (m *MultipathLUN) Primary() *LUN { return m.paths[0].l }

// Discard is LUN.Discard down one of the paths.
func (m *MultipathLUN) Discard(ctx context.Context, off, length int64) error {
	_, err := m.do(ctx, func(l *LUN) (int, error) { return 0, l.Discard(ctx, off, length) })
	return err
}

// LBAStatus is LUN.LBAStatus down one of the paths.
func (m *MultipathLUN) LBAStatus(ctx context.Context, off int64) ([]Extent, error) {
	var out []Extent
	_, err := m.do(ctx, func(l *LUN) (int, error) {
		var err error
		out, err = l.LBAStatus(ctx, off)
		return 0, err
	})
	return out, err
}

// OnResize registers f to be called when the LU's capacity changes. Every
// path hears of the change (each I_T nexus gets its own UNIT ATTENTION);
// f is called once per new size, in order, one call at a time.
func (m *MultipathLUN) OnResize(f func(newSize int64)) {
	var mu sync.Mutex
	for _, p := range m.paths {
		p.l.OnResize(func(size int64) {
			mu.Lock()
			defer mu.Unlock()
			if m.sizeNow.Swap(size) == size {
				return // another path reported it already
			}
			if f != nil {
				f(size)
			}
		})
	}
}
