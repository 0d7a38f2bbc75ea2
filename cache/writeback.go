package cache

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// wbPiece is a run of logical blocks [s0, s1) of one block being written back.
// While it exists the block is pinned and the logical blocks are marked wb.
type wbPiece struct {
	b      *block
	s0, s1 int
}

// wbRun is one device write: adjacent pieces, possibly of several blocks.
type wbRun struct {
	off    int64
	n      int
	pieces []wbPiece
}

// kickFlusher wakes the flusher for a write-back pass. c.mu may be held.
func (c *Cache) kickFlusher() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// flusher writes dirty data back on the FlushInterval timer and whenever
// eviction or the dirty threshold asks for it.
func (c *Cache) flusher() {
	defer c.wg.Done()
	var tick <-chan time.Time
	if c.interval > 0 {
		t := time.NewTicker(c.interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-c.stop:
			return
		case <-tick:
		case <-c.kick:
		}
		select {
		case c.wbSem <- struct{}{}:
		case <-c.stop:
			return
		}
		err := c.writebackAll(c.bg, false)
		<-c.wbSem
		if err == nil {
			continue
		}
		c.mu.Lock()
		if c.bgErr == nil {
			c.bgErr = err
		}
		c.mu.Unlock()
		select {
		case <-c.stop:
			return
		case <-time.After(retryDelay):
		}
	}
}

// Flush writes back every dirty range. It returns the first write-back error
// (its own, or else one of a background write-back since the last Flush); data
// that failed to be written stays dirty and is retried later.
func (c *Cache) Flush(ctx context.Context) error {
	if !c.enter() {
		return ErrClosed
	}
	defer c.leave()
	return c.flush(ctx, false)
}

// Sync is SyncContext without a deadline, as os.File.Sync.
func (c *Cache) Sync() error { return c.SyncContext(context.Background()) }

// SyncContext is Flush followed by a device sync (SCSI SYNCHRONIZE CACHE).
// A small write-back goes through the device's DurableWriter, so that the
// device sync may have nothing left to do.
func (c *Cache) SyncContext(ctx context.Context) error {
	if !c.enter() {
		return ErrClosed
	}
	defer c.leave()
	if err := c.flush(ctx, true); err != nil {
		return err
	}
	if err := c.dev.SyncContext(ctx); err != nil {
		return fmt.Errorf("cache: sync device: %w", err)
	}
	return nil
}

// flush writes back every dirty range; forSync says a device sync follows
// (see issue).
func (c *Cache) flush(ctx context.Context, forSync bool) error {
	select {
	case c.wbSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	err := c.writebackAll(ctx, forSync)
	<-c.wbSem
	c.mu.Lock()
	if err == nil {
		err = c.bgErr
	}
	c.bgErr = nil
	c.mu.Unlock()
	return err
}

// writebackAll writes back every dirty logical block, in device order,
// coalesced and in parallel. Passes are serialised by wbSem.
func (c *Cache) writebackAll(ctx context.Context, forSync bool) error {
	c.mu.Lock()
	blocks := make([]*block, 0, len(c.dirtyBlocks))
	for _, b := range c.dirtyBlocks {
		b.refs++
		blocks = append(blocks, b)
	}
	c.mu.Unlock()
	if len(blocks) == 0 {
		return nil
	}
	slices.SortFunc(blocks, func(a, b *block) int { return cmp.Compare(a.idx, b.idx) })
	var pieces []wbPiece
	for _, b := range blocks {
		pieces = c.grab(b, 0, maxSectors, pieces)
	}
	c.mu.Lock()
	for _, b := range blocks {
		c.unpinLocked(b)
	}
	c.mu.Unlock()
	if c.log.Enabled(ctx, slog.LevelDebug) { // spares boxing the counts on every flush
		c.log.Debug("write-back", "blocks", len(blocks), "pieces", len(pieces))
	}
	return c.issue(ctx, pieces, forSync)
}

// grab moves the dirty logical blocks of b within [lo, hi) to wb and appends
// them as pieces. b must be pinned. Holding b.dm shared keeps writers out, so
// no write is half copied into what is grabbed.
func (c *Cache) grab(b *block, lo, hi int, pieces []wbPiece) []wbPiece {
	b.dm.RLock()
	c.mu.Lock()
	d := b.dirty
	d.runs(lo, hi, func(i, j int) {
		b.dirty.clear(i, j)
		b.wb.set(i, j)
		b.refs++
		pieces = append(pieces, wbPiece{b: b, s0: i, s1: j})
	})
	if b.dirty.empty() {
		delete(c.dirtyBlocks, b.idx)
	}
	c.mu.Unlock()
	b.dm.RUnlock()
	return pieces
}

// coalesce turns pieces (in device order) into runs of adjacent pieces of at
// most maxCoalesce bytes.
func (c *Cache) coalesce(pieces []wbPiece) []wbRun {
	var runs []wbRun
	for i, p := range pieces {
		off := p.b.off + c.bytes(p.s0)
		n := int(c.bytes(p.s1 - p.s0))
		if k := len(runs) - 1; k >= 0 && runs[k].off+int64(runs[k].n) == off && runs[k].n+n <= maxCoalesce {
			runs[k].n += n
			runs[k].pieces = pieces[i-len(runs[k].pieces) : i+1]
			continue
		}
		runs = append(runs, wbRun{off: off, n: n, pieces: pieces[i : i+1]})
	}
	return runs
}

// issue writes pieces back with up to Parallel device writes in flight and
// returns the first error. Pieces that fail, or are never issued because ctx
// ended, become dirty again. forSync says a device sync follows: then up to
// durableWriteMax bytes go through the device's DurableWriter.
func (c *Cache) issue(ctx context.Context, pieces []wbPiece, forSync bool) error {
	if len(pieces) == 0 {
		return nil
	}
	runs := c.coalesce(pieces)
	durable := false
	if forSync && c.durable != nil {
		total := 0
		for _, r := range runs {
			total += r.n
		}
		durable = total <= durableWriteMax
	}
	var (
		wg    sync.WaitGroup
		emu   sync.Mutex
		first error
	)
	fail := func(err error) {
		emu.Lock()
		if first == nil {
			first = err
		}
		emu.Unlock()
	}
	for len(runs) > 0 {
		r := runs[0]
		runs = runs[1:]
		var stage []byte
		if len(r.pieces) > 1 {
			if stage = c.takeStage(); stage == nil {
				// No staging buffer free: write the pieces one by one.
				single := make([]wbRun, 0, len(r.pieces)+len(runs))
				for _, p := range r.pieces {
					single = append(single, wbRun{off: p.b.off + c.bytes(p.s0), n: int(c.bytes(p.s1 - p.s0)), pieces: []wbPiece{p}})
				}
				runs = append(single, runs...)
				continue
			}
		}
		if err := c.acquire(ctx); err != nil {
			c.putStage(stage)
			for _, r := range append(runs, r) {
				c.finishRun(r, err)
			}
			fail(err)
			break
		}
		if len(runs) == 0 {
			// The last run (often the only one: an fsync after a small
			// write) is written by the caller, saving a goroutine and
			// its wake-up on the path of every synchronous write.
			if err := c.writeRun(ctx, r, stage, durable); err != nil {
				fail(err)
			}
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.writeRun(ctx, r, stage, durable); err != nil {
				fail(err)
			}
		}()
	}
	wg.Wait()
	return first
}

// writeRun performs one device write (holding a request slot) and settles
// its pieces; durable sends it through c.durable.
func (c *Cache) writeRun(ctx context.Context, r wbRun, stage []byte, durable bool) error {
	var data []byte
	if stage != nil {
		data = stage[:r.n]
		pos := 0
		for _, p := range r.pieces {
			pos += copy(data[pos:], p.b.buf[p.s0<<c.ssShift:p.s1<<c.ssShift])
		}
	} else {
		p := r.pieces[0]
		data = p.b.buf[p.s0<<c.ssShift : p.s1<<c.ssShift]
	}
	var n int
	var err error
	if durable {
		n, err = c.durable.WriteDurableAtContext(ctx, data, r.off)
	} else {
		n, err = c.dev.WriteAtContext(ctx, data, r.off)
	}
	c.release()
	c.putStage(stage)
	c.st.devWrites.Add(1)
	c.st.devWriteBytes.Add(int64(n))
	if err == nil && n < len(data) {
		err = io.ErrShortWrite
	}
	if err != nil {
		c.st.writebackErrors.Add(1)
		err = fmt.Errorf("cache: write back %d bytes at offset %d: %w", len(data), r.off, err)
		c.log.Warn("write-back failed; data kept dirty", "err", err)
	}
	c.finishRun(r, err)
	return err
}

// finishRun settles the pieces of a run: written, or dirty again after err.
func (c *Cache) finishRun(r wbRun, err error) {
	c.mu.Lock()
	for _, p := range r.pieces {
		b := p.b
		b.wb.clear(p.s0, p.s1)
		if err != nil {
			b.dirty.set(p.s0, p.s1)
			c.dirtyBlocks[b.idx] = b
		} else {
			c.dirtyBytes -= c.bytes(p.s1 - p.s0)
		}
		c.clipLocked(b) // past the end after a shrink: dropped, not retried
		notify(&b.ch)
		c.unpinLocked(b)
	}
	if err == nil {
		notify(&c.dirtyCh)
	}
	notify(&c.memCh)
	c.mu.Unlock()
}

// takeStage returns a staging buffer for a coalesced write, or nil if none is free.
func (c *Cache) takeStage() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.stageFree); n > 0 {
		buf := c.stageFree[n-1]
		c.stageFree = c.stageFree[:n-1]
		return buf
	}
	if c.stageMade < c.maxStage {
		c.stageMade++
		return make([]byte, maxCoalesce)
	}
	return nil
}

func (c *Cache) putStage(buf []byte) {
	if buf == nil {
		return
	}
	c.mu.Lock()
	c.stageFree = append(c.stageFree, buf)
	c.mu.Unlock()
}
