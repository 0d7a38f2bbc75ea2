package cache

import (
	"context"
	"sync"
	"time"
)

// raProtect is how long read-ahead nobody has read yet is passed over by
// eviction, as long as such blocks fill at most half the cache: random reads
// churning through the cache must not evict what a stream is about to read.
const raProtect = 2 * time.Second

// block is one cache block: a blockSize window of the device and its buffer.
type block struct {
	idx int64 // block number: device offset >> blockShift
	off int64 // device offset of the block
	// nsec is how many logical blocks of the block lie inside the device: fewer
	// in the last block of a device, none beyond the end after a shrink. It is
	// guarded by Cache.mu and changes with Resize; valid and dirty never reach
	// past it (see clipLocked).
	nsec int
	buf  []byte

	// dm orders copies into and out of buf: readers under RLock, writers under
	// Lock, write-back under RLock while it grabs dirty sectors.
	dm sync.RWMutex

	// Guarded by Cache.mu. dirty, wb and fetching are disjoint; dirty and wb are
	// subsets of valid.
	valid, dirty, wb, fetching bitmap

	fetches   []*fetch      // device reads in flight into buf
	refs      int           // pins: requests, fetches and write-back pieces using buf
	stale     bool          // Invalidate ran while pinned: drop clean sectors at the last unpin
	reclaim   bool          // eviction wanted this dirty block: free it once it is clean
	readahead bool          // filled by read-ahead and not read yet (see raProtect)
	raAt      time.Duration // when read-ahead filled it, since Cache.epoch
	ch        chan struct{} // closed when the state above changes; waiters then look again
}

// segment is the part of a request that falls in one block.
type segment struct {
	b    *block
	idx  int64
	boff int // offset in the block
	n    int // bytes
}

// split appends to segs the per-block segments of [off, off+n).
func split(off int64, n int, segs []segment) []segment {
	for n > 0 {
		boff := int(off & blockMask)
		l := min(n, blockSize-boff)
		segs = append(segs, segment{idx: off >> blockShift, boff: boff, n: l})
		off += int64(l)
		n -= l
	}
	return segs
}

// chunkLen returns how many bytes from off (at most n) one request chunk covers.
func (c *Cache) chunkLen(off int64, n int) int {
	end := (off>>blockShift + int64(c.chunkBlocks)) << blockShift
	return int(min(int64(n), end-off))
}

// sectors returns the logical blocks [s0, s1) a segment touches.
func (c *Cache) sectors(s *segment) (int, int) {
	return s.boff >> c.ssShift, (s.boff + s.n + c.ss - 1) >> c.ssShift
}

// bytes converts a count of logical blocks to bytes.
func (c *Cache) bytes(sectors int) int64 { return int64(sectors) << c.ssShift }

// evictableLocked reports whether b may lose its buffer now.
func evictableLocked(b *block) bool {
	return b.refs == 0 && !b.stale && b.dirty.empty() && b.wb.empty()
}

// newBlockLocked inserts a block for idx owning buf.
func (c *Cache) newBlockLocked(idx int64, buf []byte) *block {
	off := idx << blockShift
	b := &block{
		idx:  idx,
		off:  off,
		nsec: c.sectorsInside(off, c.size.Load()),
		buf:  buf,
	}
	c.lru.Add(idx, b)
	return b
}

// takeBufLocked returns a block buffer: a recycled one, a new one while under
// the bound, or the buffer of the least recently used evictable block. Dirty
// blocks met at the cold end are marked for reclaim and the flusher is woken.
// It returns nil when nothing can be had without waiting.
func (c *Cache) takeBufLocked() []byte {
	if n := len(c.free); n > 0 {
		buf := c.free[n-1]
		c.free[n-1] = nil
		c.free = c.free[:n-1]
		return buf
	}
	if c.nbufs < c.maxBufs {
		c.nbufs++
		c.bufsMade++
		return make([]byte, blockSize)
	}
	flush := false
	protect := c.raBlocks <= c.maxBufs/2
	var now time.Duration
	var spare *block // the oldest protected read-ahead passed over
	for range c.lru.Len() {
		idx, b, _ := c.lru.GetOldest()
		if evictableLocked(b) {
			if b.readahead && protect {
				if now == 0 {
					now = time.Since(c.epoch)
				}
				if now-b.raAt < raProtect {
					if spare == nil {
						spare = b
					}
					c.lru.Get(idx)
					continue
				}
			}
			c.st.evictions.Add(1)
			return c.detachLocked(b)
		}
		if !b.dirty.empty() && !b.reclaim {
			b.reclaim = true
			flush = true
		}
		c.lru.Get(idx) // in use or dirty: rotate it out of the way
	}
	if flush {
		c.kickFlusher()
	}
	if spare != nil {
		// Nothing else to evict: read-ahead goes rather than making anyone wait.
		c.st.evictions.Add(1)
		return c.detachLocked(spare)
	}
	return nil
}

// readAheadDoneLocked marks b as filled by read-ahead not read yet.
func (c *Cache) readAheadDoneLocked(b *block) {
	if !b.readahead {
		b.readahead = true
		c.raBlocks++
	}
	b.raAt = time.Since(c.epoch)
}

// consumedLocked notes that b has been read (or lost its read-ahead).
func (c *Cache) consumedLocked(b *block) {
	if b.readahead {
		b.readahead = false
		c.raBlocks--
	}
}

// detachLocked removes an unpinned clean block from the cache and returns its buffer.
func (c *Cache) detachLocked(b *block) []byte {
	c.lru.Remove(b.idx)
	c.consumedLocked(b)
	c.validBytes -= c.bytes(b.valid.count(0, maxSectors))
	b.valid = bitmap{}
	buf := b.buf
	b.buf = nil
	notify(&b.ch)
	return buf
}

// freeBlockLocked detaches b and recycles its buffer.
func (c *Cache) freeBlockLocked(b *block) {
	c.free = append(c.free, c.detachLocked(b))
	notify(&c.memCh)
}

// applyStaleLocked drops the clean sectors of an unpinned block.
func (c *Cache) applyStaleLocked(b *block) {
	b.stale = false
	keep := b.dirty.or(&b.wb)
	c.validBytes -= c.bytes(b.valid.count(0, maxSectors) - keep.count(0, maxSectors))
	b.valid = keep
	c.consumedLocked(b)
	if b.valid.empty() {
		c.freeBlockLocked(b)
	}
	notify(&b.ch)
}

// unpinLocked drops one pin of b and, at the last one, carries out what waited
// for it: Invalidate, reclaim after write-back, or freeing a block nothing
// could be read into.
func (c *Cache) unpinLocked(b *block) {
	b.refs--
	if b.refs > 0 {
		return
	}
	switch {
	case b.stale:
		c.applyStaleLocked(b)
	case b.buf != nil && (b.reclaim || b.valid.empty()) && evictableLocked(b):
		c.freeBlockLocked(b)
	}
	notify(&c.memCh)
}

// unpinSegsLocked unpins the blocks of segs that are pinned.
func (c *Cache) unpinSegsLocked(segs []segment) {
	for i := range segs {
		if segs[i].b != nil {
			c.unpinLocked(segs[i].b)
			segs[i].b = nil
		}
	}
}

func (c *Cache) unpinSegs(segs []segment) {
	c.mu.Lock()
	c.unpinSegsLocked(segs)
	c.mu.Unlock()
}

// pinLocked pins the blocks of segs, creating the missing ones. It is all or
// nothing: when buffers are short it pins nothing and waits (without holding
// any pin, so requests cannot deadlock on each other). On success it returns
// with c.mu held.
func (c *Cache) pinLocked(ctx context.Context, segs []segment) error {
	c.mu.Lock()
	for {
		ch := c.tryPinLocked(segs)
		if ch == nil {
			return nil
		}
		c.mu.Unlock()
		if err := wait(ctx, ch); err != nil {
			return err
		}
		c.mu.Lock()
	}
}

// tryPinLocked pins every block of segs or none; when it cannot, it returns a
// channel to wait on before trying again.
func (c *Cache) tryPinLocked(segs []segment) chan struct{} {
	missing := 0
	for i := range segs {
		s := &segs[i]
		b, ok := c.lru.Get(s.idx)
		if !ok {
			s.b = nil
			missing++
			continue
		}
		if b.stale {
			c.unpinSegsLocked(segs[:i])
			return waitChan(&b.ch)
		}
		b.refs++
		b.reclaim = false
		s.b = b
	}
	if missing == 0 {
		return nil
	}
	var bufs [maxChunkBlocks][]byte
	got := 0
	for got < missing {
		buf := c.takeBufLocked()
		if buf == nil {
			break
		}
		bufs[got] = buf
		got++
	}
	if got < missing {
		c.free = append(c.free, bufs[:got]...)
		c.unpinSegsLocked(segs)
		c.kickFlusher()
		return waitChan(&c.memCh)
	}
	for i := range segs {
		if segs[i].b == nil {
			got--
			b := c.newBlockLocked(segs[i].idx, bufs[got])
			b.refs = 1
			segs[i].b = b
		}
	}
	return nil
}
