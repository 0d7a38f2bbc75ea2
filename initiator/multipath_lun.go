package initiator

import "context"

// What a MultipathLUN offers beyond I/O, so that a program can use it where
// it would use a LUN (the iscsifs mount serves either).

// Number is the LUN number (the same on every path).
func (m *MultipathLUN) Number() uint64 { return m.lun }

// Primary is the first path's LUN: its identity (Inquiry, Serial,
// Identifier) is the multipath LUN's, since every path was checked to
// reach the same logical unit. I/O should go through m, not through it.
func (m *MultipathLUN) Primary() *LUN { return m.list()[0].l }

// Discard is LUN.Discard down one of the paths.
func (m *MultipathLUN) Discard(ctx context.Context, off, length int64) error {
	defer m.writesDone.Add(1)
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
// f is called once per new size, in order, one call at a time. Call it
// once, before I/O.
func (m *MultipathLUN) OnResize(f func(newSize int64)) {
	m.mu.Lock()
	m.onResize = f
	paths := m.list() // a path joining after this registers in join
	m.mu.Unlock()
	for _, p := range paths {
		m.watchResize(p, f)
	}
}

// watchResize passes p's capacity changes on to f, once per new size.
func (m *MultipathLUN) watchResize(p *mpPath, f func(newSize int64)) {
	p.l.OnResize(func(size int64) {
		m.resizeMu.Lock()
		defer m.resizeMu.Unlock()
		if m.sizeNow.Swap(size) == size {
			return // another path reported it already
		}
		if f != nil {
			f(size)
		}
	})
}
