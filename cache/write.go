package cache

import (
	"context"
	"fmt"
)

// WriteAtContext writes p at off. Any size and alignment is accepted; p is copied, so
// the caller may reuse it at once. A write that does not fit inside the device
// fails with ErrOutOfRange and changes nothing.
//
// The write is accepted into the cache when its first chunk is applied; until
// then (waiting for dirty room, memory or the device read of a partial edge
// logical block) ctx cancels it and nothing is changed. Once accepted it is
// applied in full whatever ctx says, so a write is never half-applied. Writes
// larger than half the cache are applied chunk by chunk; only the wait for the
// first chunk can be cancelled.
//
// With Options.WriteThrough the data is written to the device and synced
// before WriteAtContext returns; an error then means the data may not be durable (it
// stays dirty in the cache and later write-back retries it).
func (c *Cache) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if !c.enter() {
		return 0, ErrClosed
	}
	defer c.leave()
	size := c.size.Load()
	if off < 0 || off > size || int64(len(p)) > size-off {
		return 0, fmt.Errorf("%w: write of %d bytes at offset %d, device size %d", ErrOutOfRange, len(p), off, size)
	}
	if len(p) == 0 {
		return 0, nil
	}
	wctx := ctx
	for done := 0; done < len(p); {
		n := c.chunkLen(off+int64(done), len(p)-done)
		if err := c.writeChunk(wctx, p[done:done+n], off+int64(done)); err != nil {
			return done, err
		}
		done += n
		wctx = context.WithoutCancel(ctx)
	}
	c.st.writes.Add(1)
	c.st.writeBytes.Add(int64(len(p)))
	if c.writeThrough {
		if err := c.writeThroughRange(ctx, off, off+int64(len(p))); err != nil {
			return len(p), err
		}
	}
	return len(p), nil
}

// writeChunk applies one chunk: wait for dirty room, pin every block, make the
// partial edge logical blocks valid (read-modify-write of those only), then
// apply every segment without further regard for ctx.
func (c *Cache) writeChunk(ctx context.Context, p []byte, off int64) error {
	if err := c.waitDirtyRoom(ctx, int64(len(p))); err != nil {
		return err
	}
	var arr [maxChunkBlocks]segment
	segs := split(off, len(p), arr[:0])
	if err := c.pinLocked(ctx, segs); err != nil {
		return err
	}
	mask := int64(c.ss - 1)
	head, tail := &segs[0], &segs[len(segs)-1]
	for {
		if s1 := (tail.boff + tail.n + c.ss - 1) >> c.ssShift; s1 > tail.b.nsec {
			c.unpinSegsLocked(segs)
			c.mu.Unlock()
			return errShrunk(off, len(p))
		}
		var w *fetch
		if off&mask != 0 {
			s := head.boff >> c.ssShift
			w = c.fetchLocked(head.b, s, s+1, false)
		}
		if end := off + int64(len(p)); end&mask != 0 {
			s := (tail.boff + tail.n - 1) >> c.ssShift
			if f := c.fetchLocked(tail.b, s, s+1, false); w == nil {
				w = f
			}
		}
		c.mu.Unlock()
		if w == nil {
			break
		}
		err := wait(ctx, w.done)
		if err == nil {
			err = w.err
		}
		if err != nil {
			c.unpinSegs(segs)
			return err
		}
		c.mu.Lock()
	}
	// Accepted: from here on the chunk is applied in full. Edge logical blocks
	// stay valid while pinned; waits below are for device I/O to finish.
	pos := 0
	for i := range segs {
		c.commit(&segs[i], p[pos:pos+segs[i].n])
		pos += segs[i].n
	}
	c.mu.Lock()
	c.unpinSegsLocked(segs)
	if c.dirtyBytes > c.dirtyKick {
		c.kickFlusher()
	}
	c.mu.Unlock()
	return nil
}

// commit copies data into a pinned segment. It waits while a device read fills,
// or write-back reads, any of its logical blocks.
func (c *Cache) commit(s *segment, data []byte) {
	b := s.b
	s0, s1 := c.sectors(s)
	for {
		b.dm.Lock()
		c.mu.Lock()
		if b.fetching.any(s0, s1) || b.wb.any(s0, s1) {
			ch := waitChan(&b.ch)
			c.mu.Unlock()
			b.dm.Unlock()
			<-ch
			continue
		}
		n := s1 - s0
		c.validBytes += c.bytes(n - b.valid.count(s0, s1))
		c.dirtyBytes += c.bytes(n - b.dirty.count(s0, s1))
		b.valid.set(s0, s1)
		b.dirty.set(s0, s1)
		c.dirtyBlocks[b.idx] = b
		c.clipLocked(b) // a write racing with a shrink loses what is past the end
		c.mu.Unlock()
		copy(b.buf[s.boff:s.boff+s.n], data)
		b.dm.Unlock()
		return
	}
}

// waitDirtyRoom blocks while n more dirty bytes would go over the dirty limit
// (back-pressure), waking the flusher.
func (c *Cache) waitDirtyRoom(ctx context.Context, n int64) error {
	c.mu.Lock()
	for c.dirtyBytes > 0 && c.dirtyBytes+n > c.dirtyLimit {
		c.kickFlusher()
		ch := waitChan(&c.dirtyCh)
		c.mu.Unlock()
		if err := wait(ctx, ch); err != nil {
			return err
		}
		c.mu.Lock()
	}
	c.mu.Unlock()
	return nil
}

// writeThroughRange makes [off, end) durable: it writes back the dirty logical
// blocks of the range, waits for write-back of the range already in flight, and
// syncs the device.
func (c *Cache) writeThroughRange(ctx context.Context, off, end int64) error {
	var arr [maxChunkBlocks]*block
	for round := 0; ; round++ {
		blocks := arr[:0]
		c.mu.Lock()
		for idx := off >> blockShift; idx <= (end-1)>>blockShift; idx++ {
			if b, ok := c.lru.Peek(idx); ok {
				b.refs++
				blocks = append(blocks, b)
			}
		}
		c.mu.Unlock()
		var pieces []wbPiece
		for _, b := range blocks {
			lo, hi := c.blockRange(b, off, end)
			pieces = c.grab(b, lo, hi, pieces)
		}
		err := c.issue(ctx, pieces, true)
		if err == nil {
			err = c.waitWriteback(ctx, blocks, off, end)
		}
		pending := false
		c.mu.Lock()
		for _, b := range blocks {
			lo, hi := c.blockRange(b, off, end)
			pending = pending || b.dirty.any(lo, hi)
			c.unpinLocked(b)
		}
		c.mu.Unlock()
		if err != nil {
			return err
		}
		// Dirty again: a write-back by someone else failed, or another writer
		// came in; one more round covers the first case.
		if !pending || round > 0 {
			break
		}
	}
	if err := c.dev.SyncContext(ctx); err != nil {
		return fmt.Errorf("cache: sync device: %w", err)
	}
	return nil
}

// blockRange returns the logical blocks of b that [off, end) touches.
func (c *Cache) blockRange(b *block, off, end int64) (int, int) {
	lo := max(off, b.off) - b.off
	hi := min(end, b.off+blockSize) - b.off
	return int(lo) >> c.ssShift, int(hi+int64(c.ss)-1) >> c.ssShift
}

// waitWriteback waits until no logical block of [off, end) in blocks is being
// written back.
func (c *Cache) waitWriteback(ctx context.Context, blocks []*block, off, end int64) error {
	c.mu.Lock()
	for {
		var ch chan struct{}
		for _, b := range blocks {
			if lo, hi := c.blockRange(b, off, end); b.wb.any(lo, hi) {
				ch = waitChan(&b.ch)
				break
			}
		}
		c.mu.Unlock()
		if ch == nil {
			return nil
		}
		if err := wait(ctx, ch); err != nil {
			return err
		}
		c.mu.Lock()
	}
}

// WriteAt is WriteAtContext without a deadline: *Cache is an io.WriterAt.
func (c *Cache) WriteAt(p []byte, off int64) (int, error) {
	return c.WriteAtContext(context.Background(), p, off)
}
