package cache

import (
	"context"
	"fmt"
	"io"
	"math/bits"
)

const (
	// uncachedMax is the largest read that may bypass the cache: random I/O
	// sizes (4 KiB pages, 8–64 KiB database and file system blocks).
	uncachedMax = 64 << 10
	// ghostBytesPerEntry sizes the table of recently bypassed reads: one
	// entry (8 bytes) per 16 KiB of cache.
	ghostBytesPerEntry = 16 << 10
	minGhostEntries    = 1 << 10
)

// Random reads and admission
//
// A block is 256 KiB, so caching a random 4 KiB read costs a whole buffer and
// evicts 256 KiB of whatever was cached: a random reader over a device larger
// than the cache would turn it over without ever hitting (fio over a 1 GiB LUN
// with the default 256 MiB cache hit 0.1 % of its reads), and pay the
// eviction, a fetch goroutine and a copy on every read. So a small aligned
// read that continues no stream, where the cache holds none of its sectors
// (no block of its range is cached, or the cached ones have no valid or
// fetching sector in it), goes straight from the device into the caller's
// buffer, and its position is noted in a small table of recent bypasses (the
// "ghost" of an admission filter). When the same position is read again while
// still in the table it is admitted: it goes through the cache like any other
// read, so data that is read twice (file system metadata, a hot page) is
// cached from then on.
//
// This keeps reads coherent with writes: dirty data and data being written
// back are valid sectors of blocks that stay in the cache until the device
// has them, so a range without a valid cached sector reads the same from the
// device. A bypassed read that overlaps a concurrent write may see either
// version, as any read racing a write may.

// newGhost returns the table for a cache of size bytes: a power of two.
func newGhost(size int64) []uint64 {
	n := max(minGhostEntries, size/ghostBytesPerEntry)
	return make([]uint64, 1<<bits.Len64(uint64(n-1)))
}

// seenLocked reports whether a read at sector was bypassed recently (and
// forgets it: it is being admitted); otherwise it remembers it, replacing
// whatever shared its slot.
func (c *Cache) seenLocked(sector int64) bool {
	key := uint64(sector) + 1 // 0 is an empty slot
	slot := (key * 0x9E3779B97F4A7C15) >> (64 - bits.Len(uint(len(c.ghost)-1)))
	if c.ghost[slot] == key {
		c.ghost[slot] = 0
		return true
	}
	c.ghost[slot] = key
	return false
}

// holdsAnyLocked reports whether b has, or is fetching, any sector of the
// device range [off, end): only then may the cache know better than the
// device. Dirty sectors and sectors being written back are valid ones, so a
// block without a valid or fetching sector in the range holds nothing newer
// than the device there. A random read that lands in a cached block but
// none of its data (a quarter of them with a cache a quarter of the range)
// then skips the fetch goroutine and the copy as well.
func (c *Cache) holdsAnyLocked(b *block, off, end int64) bool {
	lo := max(off, b.off) - b.off
	hi := min(end, b.off+blockSize) - b.off
	s0, s1 := int(lo>>c.ssShift), int((hi+int64(c.ss)-1)>>c.ssShift)
	return b.valid.any(s0, s1) || b.fetching.any(s0, s1)
}

// readUncached serves a random read [off, off+len(p)) from the device when it
// may bypass the cache (see above); done false means it must go through the
// cache.
func (c *Cache) readUncached(ctx context.Context, p []byte, off int64) (done bool, err error) {
	mask := int64(c.ss - 1)
	if len(p) > uncachedMax || off&mask != 0 || int64(len(p))&mask != 0 {
		return false, nil
	}
	end := off + int64(len(p))
	c.mu.Lock()
	for idx := off >> blockShift; idx <= (end-1)>>blockShift; idx++ {
		if b, ok := c.lru.Peek(idx); ok && c.holdsAnyLocked(b, off, end) {
			c.mu.Unlock()
			return false, nil
		}
	}
	if c.seenLocked(off >> c.ssShift) {
		c.mu.Unlock()
		return false, nil
	}
	c.mu.Unlock()

	if err := c.acquire(ctx); err != nil {
		return true, err
	}
	n, err := c.dev.ReadAtContext(ctx, p, off)
	c.release()
	c.st.devReads.Add(1)
	c.st.devReadBytes.Add(int64(n))
	c.st.uncachedReads.Add(1)
	if err == nil && n < len(p) {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && ctx.Err() != nil {
		return true, ctx.Err()
	}
	if err != nil {
		return true, fmt.Errorf("cache: read %d bytes at offset %d: %w", len(p), off, err)
	}
	return true, nil
}
