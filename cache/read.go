package cache

import (
	"context"
	"fmt"
	"io"
	"slices"
)

// fetch is one device read in flight into sectors [s0, s1) of a block. Every
// request that needs those sectors waits on done and shares err.
type fetch struct {
	b      *block
	s0, s1 int
	ra     bool // issued by read-ahead
	done   chan struct{}
	err    error // set before done is closed
}

// fetchLocked starts device reads for the sectors of [s0, s1) that are neither
// valid nor being fetched, and returns a fetch in flight over a sector of the
// range that is not valid yet, or nil when the whole range is valid.
func (c *Cache) fetchLocked(b *block, s0, s1 int, ra bool) *fetch {
	if b.valid.all(s0, s1) {
		return nil
	}
	busy := b.valid.or(&b.fetching)
	for i := busy.next(s0, s1, false); i < s1; {
		j := busy.next(i, s1, true)
		c.startFetchLocked(b, i, j, ra)
		i = busy.next(j, s1, false)
	}
	for _, f := range b.fetches {
		if f.s0 < s1 && f.s1 > s0 {
			return f
		}
	}
	return nil
}

// startFetchLocked reads sectors [s0, s1) of b from the device in a goroutine
// of its own: the request that started it may give up, others may wait for it,
// and the buffer stays pinned until the device has answered.
func (c *Cache) startFetchLocked(b *block, s0, s1 int, ra bool) {
	f := &fetch{b: b, s0: s0, s1: s1, ra: ra, done: make(chan struct{})}
	b.fetching.set(s0, s1)
	b.fetches = append(b.fetches, f)
	b.refs++
	c.wg.Add(1)
	go c.runFetch(f)
}

func (c *Cache) runFetch(f *fetch) {
	defer c.wg.Done()
	b := f.b
	p := b.buf[f.s0<<c.ssShift : f.s1<<c.ssShift]
	off := b.off + c.bytes(f.s0)
	err := c.acquire(c.bg)
	if err == nil {
		var n int
		n, err = c.dev.ReadAtContext(c.bg, p, off)
		c.release()
		c.st.devReads.Add(1)
		c.st.devReadBytes.Add(int64(n))
		if f.ra {
			c.st.readAheadBytes.Add(int64(n))
		}
		if err == nil && n < len(p) {
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil {
		if c.bg.Err() != nil {
			err = ErrClosed // Close gave up waiting and cancelled the read
		}
		err = fmt.Errorf("cache: read %d bytes at offset %d: %w", len(p), off, err)
		c.log.Debug("device read failed", "err", err)
	}

	c.mu.Lock()
	b.fetching.clear(f.s0, f.s1)
	if err == nil {
		b.valid.set(f.s0, f.s1)
		c.validBytes += int64(len(p))
		if f.ra {
			c.readAheadDoneLocked(b)
		}
		c.clipLocked(b) // the device may have shrunk meanwhile
	}
	if i := slices.Index(b.fetches, f); i >= 0 {
		b.fetches = slices.Delete(b.fetches, i, i+1)
	}
	f.err = err
	close(f.done)
	notify(&b.ch)
	c.unpinLocked(b)
	c.mu.Unlock()
}

// ReadAtContext reads len(p) bytes at off. Any size and alignment is accepted; a read
// past the end of the device returns a short count and io.EOF, like os.File.
// A read cancelled while it waits returns ctx.Err().
func (c *Cache) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if !c.enter() {
		return 0, ErrClosed
	}
	defer c.leave()
	if off < 0 {
		return 0, fmt.Errorf("%w: read at negative offset %d", ErrOutOfRange, off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	size := c.size.Load()
	if off >= size {
		return 0, io.EOF
	}
	n := len(p)
	var eof error
	if int64(n) > size-off {
		n = int(size - off)
		eof = io.EOF
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}

	ra, random := c.detectStream(off, off+int64(n))
	if random {
		if done, err := c.readUncached(ctx, p[:n], off); done {
			c.st.misses.Add(1)
			if err != nil {
				return 0, err
			}
			c.st.readBytes.Add(int64(n))
			return n, eof
		}
	}
	hit := true
	for done := 0; done < n; {
		m := c.chunkLen(off+int64(done), n-done)
		h, err := c.readChunk(ctx, p[done:done+m], off+int64(done), ra)
		ra = raRange{} // read-ahead goes out with the first chunk
		if err != nil {
			c.st.misses.Add(1)
			return done, err
		}
		hit = hit && h
		done += m
	}
	if hit {
		c.st.hits.Add(1)
	} else {
		c.st.misses.Add(1)
	}
	c.st.readBytes.Add(int64(n))
	return n, eof
}

// readChunk reads one chunk (at most chunkBlocks blocks): pin every block, start
// the missing fetches and the read-ahead, wait, copy, unpin. It reports whether
// no device read had to be waited for.
func (c *Cache) readChunk(ctx context.Context, p []byte, off int64, ra raRange) (bool, error) {
	var arr [maxChunkBlocks]segment
	segs := split(off, len(p), arr[:0])
	if err := c.pinLocked(ctx, segs); err != nil {
		return false, err
	}
	hit := true
	started := false
	for {
		var w *fetch
		for i := range segs {
			s := &segs[i]
			s0, s1 := c.sectors(s)
			if s1 > s.b.nsec {
				c.unpinSegsLocked(segs)
				c.mu.Unlock()
				return false, errShrunk(off, len(p))
			}
			if f := c.fetchLocked(s.b, s0, s1, false); f != nil && w == nil {
				w = f
			}
		}
		if !started && ra.to > ra.from {
			// Our own fetches are queued first; read-ahead follows them.
			started = true
			if got := c.prefetchLocked(ra.from, ra.to); got < ra.to {
				c.readAheadShort(ra, got)
			}
		}
		c.mu.Unlock()
		if w == nil {
			break
		}
		hit = false
		err := wait(ctx, w.done)
		if err == nil {
			err = w.err
		}
		if err != nil {
			c.unpinSegs(segs)
			return false, err
		}
		c.mu.Lock()
	}
	pos := 0
	for i := range segs {
		s := &segs[i]
		s.b.dm.RLock()
		copy(p[pos:pos+s.n], s.b.buf[s.boff:])
		s.b.dm.RUnlock()
		pos += s.n
	}
	c.mu.Lock()
	for i := range segs {
		c.consumedLocked(segs[i].b)
	}
	c.unpinSegsLocked(segs)
	c.mu.Unlock()
	return hit, nil
}

// prefetchLocked starts read-ahead fetches for [from, to) without waiting for
// anything: it stops where no buffer can be had at once, and returns how far it got.
func (c *Cache) prefetchLocked(from, to int64) int64 {
	for pos := from; pos < to; {
		idx := pos >> blockShift
		end := min(to, (idx+1)<<blockShift)
		b, ok := c.lru.Peek(idx)
		if ok && b.stale {
			return pos
		}
		if !ok {
			buf := c.takeBufLocked()
			if buf == nil {
				return pos
			}
			b = c.newBlockLocked(idx, buf)
		}
		s0 := int(pos&blockMask) >> c.ssShift
		s1 := min(int((end-1)&blockMask)>>c.ssShift+1, b.nsec)
		if s0 < s1 {
			c.fetchLocked(b, s0, s1, true)
		}
		pos = end
	}
	return to
}

// ReadAt is ReadAtContext without a deadline: *Cache is an io.ReaderAt.
func (c *Cache) ReadAt(p []byte, off int64) (int, error) {
	return c.ReadAtContext(context.Background(), p, off)
}
