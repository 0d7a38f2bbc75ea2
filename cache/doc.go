// Package cache is a block cache between FUSE and a remote block device (an
// iSCSI LUN): read-ahead for sequential streams, write-back with coalescing, and
// a hard memory bound.
//
// # Layout
//
// The device is cut into fixed 256 KiB cache blocks (see blockSize). Each block
// in memory owns one 256 KiB buffer and per-logical-block (sector) bitmaps:
// valid (buffer content is authoritative), dirty (newer than the device), wb
// (being written back) and fetching (a device read is filling it). A block can
// therefore be partly valid: a random 4 KiB read fetches exactly the sectors it
// needs and a sector-aligned write never reads from the device.
//
// Blocks live in a golang-lru/v2 simplelru ordered by use. Memory is bounded by
// counting buffers: at most Size/256 KiB block buffers exist (a free list recycles
// them, they are never handed back to the GC while the cache is open), plus a
// fixed pool of at most four 1 MiB staging buffers used to coalesce write-back
// across block boundaries. Only clean, unpinned blocks are evicted; dirty blocks
// at the cold end are marked for reclaim, written back by the flusher, then freed.
//
// # Read-ahead
//
// Up to eight streams are tracked by the offset their next read is expected
// at. A read that continues no stream starts a candidate and fetches only what
// it asked for; after two reads that continue it exactly, the stream gets a
// window of 128 KiB (or twice the read size), doubled each time the reader has
// used half of what was read ahead, up to Options.ReadAhead. A jump near an
// established stream halves its window. Read-ahead fetches are asynchronous,
// whole-block where possible, bounded by Options.Parallel, never wait for
// memory, and are shared with the readers that arrive while they are in
// flight. Blocks filled by read-ahead and not read yet are passed over by
// eviction for a while (see raProtect) so random readers do not evict them.
//
// # Write-back
//
// Dirty logical blocks are written back on Flush/Sync, by the flusher on the
// FlushInterval timer, when dirty bytes pass 3/8 of the cache, when eviction
// meets dirty blocks, and on Close. A pass takes every dirty run in device
// order, coalesces adjacent runs (across blocks, through a staging buffer) into
// writes of up to 1 MiB and issues them in parallel. Failed runs become dirty
// again and the error is reported by the next Flush. Writers wait (back-pressure)
// while dirty bytes would pass 3/4 of the cache.
//
// # Locking
//
// Cache.mu guards the LRU, every bitmap, pin counts, fetch lists and
// accounting; it is never held across device I/O or a copy of block data. A
// block's dm RWMutex orders copies: readers copy under RLock, writers claim their
// sectors and copy under Lock, write-back takes RLock while it moves dirty
// sectors to wb. The lock order is block.dm before Cache.mu. Device reads fill
// only sectors marked fetching and device writes read only sectors marked wb;
// writers wait for both to clear, so no copy ever races with device I/O.
//
// A request pins all the blocks it touches at once (all or nothing) and waits
// for memory without holding any pin, so requests cannot deadlock on buffers.
// Requests larger than half the cache are processed in chunks.
package cache
