package cache

import (
	"fmt"
)

// Resize changes the size of the device the cache fronts, after the device
// reported a capacity change. It does not wait for anything.
//
// Growing makes the new range readable and writable; nothing cached changes.
// Shrinking forgets what lies beyond the new end, dirty data included (those
// logical blocks no longer exist on the device, so it could never be written
// back); the count of dirty bytes dropped is returned so the caller can say so.
// Reads and writes racing with a shrink past the new end fail or are dropped.
func (c *Cache) Resize(size int64) (droppedDirty int64, err error) {
	if !c.enter() {
		return 0, ErrClosed
	}
	defer c.leave()
	if size < 0 || size%int64(c.ss) != 0 {
		return 0, fmt.Errorf("cache: new device size %d is not a multiple of its block size %d", size, c.ss)
	}
	c.mu.Lock()
	if c.size.Swap(size) == size {
		c.mu.Unlock()
		return 0, nil
	}
	before := c.dirtyBytes
	for _, b := range c.lru.Values() {
		b.nsec = c.sectorsInside(b.off, size)
		c.clipLocked(b)
		if b.buf != nil && b.valid.empty() && evictableLocked(b) {
			c.freeBlockLocked(b)
		}
	}
	droppedDirty = before - c.dirtyBytes
	if droppedDirty > 0 {
		notify(&c.dirtyCh)
	}
	c.mu.Unlock()
	c.resetStreams() // their read-ahead ends may lie past the new end
	return droppedDirty, nil
}

// sectorsInside returns how many logical blocks of the block at device offset
// off lie inside a device of size bytes.
func (c *Cache) sectorsInside(off, size int64) int {
	return int(max(0, min(blockSize, size-off)) >> c.ssShift)
}

// clipLocked forgets the valid and dirty logical blocks of b at or past its
// nsec, keeping the byte counts right. Device reads and write-back in flight
// past nsec are left alone; their completion calls clipLocked again.
func (c *Cache) clipLocked(b *block) {
	if b.nsec >= maxSectors {
		return
	}
	if n := b.dirty.count(b.nsec, maxSectors); n > 0 {
		c.dirtyBytes -= c.bytes(n)
		b.dirty.clear(b.nsec, maxSectors)
		if b.dirty.empty() {
			delete(c.dirtyBlocks, b.idx)
		}
	}
	// Sectors being written back stay valid until that write settles.
	gone := b.valid
	gone.clear(0, b.nsec)
	gone = gone.andNot(&b.wb)
	if n := gone.count(0, maxSectors); n > 0 {
		c.validBytes -= c.bytes(n)
		b.valid = b.valid.andNot(&gone)
	}
}

// errShrunk is the error of a request that the device shrank under.
func errShrunk(off int64, n int) error {
	return fmt.Errorf("%w: %d bytes at offset %d: the device shrank", ErrOutOfRange, n, off)
}
