package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

const (
	// blockShift sets the cache block size, 256 KiB. It is the default iSCSI
	// MaxBurstLength (and tgt's), so filling a whole block is one SCSI command
	// answered in one Data-In sequence; a 1 MiB FUSE read becomes four fetches
	// issued in parallel; the default 256 MiB cache is 1024 blocks, so the LRU and
	// its bookkeeping stay small. Partial validity (per logical block) keeps
	// random reads at the size asked for, so a larger block costs memory on random
	// workloads but never device bandwidth.
	blockShift = 18
	blockSize  = 1 << blockShift
	blockMask  = blockSize - 1

	minSectorSize = 512
	maxSectors    = blockSize / minSectorSize

	// minBuffers is the smallest number of block buffers a cache gets whatever
	// Options.Size says, so that a request spanning two blocks always fits in half.
	minBuffers = 4
	// maxChunkBlocks bounds how many blocks one request pins at a time.
	maxChunkBlocks = 16
	// maxCoalesce bounds one coalesced write-back request (and a staging buffer).
	maxCoalesce = 1 << 20
	// maxStaging bounds the staging buffers: at most 4 MiB of fixed overhead.
	maxStaging = 4

	// retryDelay is how long the flusher waits after a failed pass before it
	// lets eviction or the dirty threshold start another one.
	retryDelay = 100 * time.Millisecond
)

// Stats are counters and gauges of a Cache.
//
// A field's metric tag names the Prometheus metric the iscsifs command
// exports it as (prefixed iscsifs_, labelled with the LUN file):
// metric:"name,type,help" with type counter or gauge, or metric:"-" for a
// number left out of the metrics. Every numeric field has one of the two.
type Stats struct {
	Reads      int64 `metric:"-" json:"reads"`       // ReadAt calls: Hits + Misses
	ReadBytes  int64 `metric:"-" json:"read_bytes"`  // bytes returned by ReadAt
	Writes     int64 `metric:"-" json:"writes"`      // WriteAt calls accepted
	WriteBytes int64 `metric:"-" json:"write_bytes"` // bytes they wrote
	// ReadAt calls served without waiting for the device
	Hits int64 `metric:"cache_hits_total,counter,Reads served from the cache." json:"hits"`
	// ReadAt calls that waited for (or issued) a device read
	Misses int64 `metric:"cache_misses_total,counter,Reads that needed the target." json:"misses"`
	// random reads served straight from the device (see readUncached)
	UncachedReads    int64 `metric:"cache_uncached_reads_total,counter,Random reads served straight from the target, around the cache." json:"uncached_reads"`
	DeviceReads      int64 `metric:"-" json:"device_reads"` // device read requests issued
	DeviceReadBytes  int64 `metric:"cache_device_read_bytes_total,counter,Bytes the cache read from the LUN." json:"device_read_bytes"`
	DeviceWrites     int64 `metric:"-" json:"device_writes"` // device write requests issued
	DeviceWriteBytes int64 `metric:"cache_device_write_bytes_total,counter,Bytes the cache wrote to the LUN." json:"device_write_bytes"`
	// bytes fetched by read-ahead
	ReadAheadBytes int64 `metric:"cache_readahead_bytes_total,counter,Bytes fetched by read-ahead." json:"read_ahead_bytes"`
	// current largest read-ahead window of a stream
	ReadAheadWindow int64 `metric:"cache_readahead_window_bytes,gauge,Current largest read-ahead window." json:"read_ahead_window"`
	// bytes newer than the device, write-back in flight included
	DirtyBytes int64 `metric:"cache_dirty_bytes,gauge,Bytes written but not yet on the target." json:"dirty_bytes"`
	// clean valid bytes held
	CachedBytes int64 `metric:"cache_cached_bytes,gauge,Bytes held in the cache." json:"cached_bytes"`
	// blocks evicted to make room
	Evictions int64 `metric:"cache_evictions_total,counter,Cache blocks evicted." json:"evictions"`
	// failed device writes during write-back
	WritebackErrors int64 `metric:"cache_writeback_errors_total,counter,Failed write-backs." json:"writeback_errors"`
	BufferBytes     int64 `metric:"-" json:"buffer_bytes"` // memory held in block and staging buffers
}

type counters struct {
	readBytes                  atomic.Int64
	writes, writeBytes         atomic.Int64
	hits, misses               atomic.Int64
	uncachedReads              atomic.Int64
	devReads, devReadBytes     atomic.Int64
	devWrites, devWriteBytes   atomic.Int64
	readAheadBytes             atomic.Int64
	evictions, writebackErrors atomic.Int64
}

// Cache is a block cache in front of a Device. All methods are safe for
// concurrent use.
type Cache struct {
	dev          Device
	durable      DurableWriter // dev's, if it offers one; else nil
	log          *slog.Logger
	size         atomic.Int64 // device size in bytes; changes with Resize
	ss           int          // logical block size
	ssShift      uint         // log2(ss)
	maxBufs      int
	chunkBlocks  int
	maxRA        int64
	writeThrough bool
	interval     time.Duration
	dirtyLimit   int64 // writers wait above this many dirty bytes
	dirtyKick    int64 // the flusher starts above this many dirty bytes

	sem    chan struct{} // device request slots (Options.Parallel)
	wbSem  chan struct{} // one write-back pass at a time
	kick   chan struct{} // wakes the flusher
	stop   chan struct{} // stops the flusher
	bg     context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // fetch goroutines and the flusher

	// Operations register in ops (enter, leave); Close sets closed, after
	// which enter refuses, and waits for ops to drop to 0 (leave signals
	// idle once closed is set).
	ops    atomic.Int64
	closed atomic.Bool
	idle   chan struct{} // capacity 1

	mu          sync.Mutex
	lru         *simplelru.LRU[int64, *block]
	free        [][]byte // recycled block buffers
	nbufs       int      // block buffers allocated (in blocks or free)
	bufsMade    int      // block buffers ever allocated (tests check the bound)
	stageFree   [][]byte
	stageMade   int
	maxStage    int
	dirtyBlocks map[int64]*block // blocks with dirty (not yet grabbed) sectors
	raBlocks    int              // blocks holding read-ahead not read yet
	epoch       time.Time
	validBytes  int64
	dirtyBytes  int64         // dirty plus wb sectors
	memCh       chan struct{} // closed when a buffer may have become available
	dirtyCh     chan struct{} // closed when dirty bytes went down
	bgErr       error         // first background write-back error not yet reported

	ghost []uint64 // recently bypassed random reads (see readUncached); under mu

	smu     sync.Mutex
	streams [maxStreams]stream
	tick    uint64

	st counters
}

// New returns a cache in front of dev. It starts a flusher goroutine: call Close.
func New(dev Device, opts Options) (*Cache, error) {
	if dev == nil {
		return nil, errors.New("cache: nil device")
	}
	ss := dev.BlockSize()
	if ss < minSectorSize || ss > blockSize || ss&(ss-1) != 0 {
		return nil, fmt.Errorf("cache: unsupported logical block size %d", ss)
	}
	size := dev.Size()
	if size < 0 || size%int64(ss) != 0 {
		return nil, fmt.Errorf("cache: device size %d is not a multiple of its block size %d", size, ss)
	}
	if opts.Size <= 0 {
		opts.Size = DefaultSize
	}
	if opts.ReadAhead < 0 {
		return nil, fmt.Errorf("cache: negative read-ahead %d", opts.ReadAhead)
	}
	if opts.FlushInterval == 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.Parallel <= 0 {
		opts.Parallel = DefaultParallel
	}
	maxBufs := int(max(opts.Size/blockSize, minBuffers))
	mem := int64(maxBufs) * blockSize
	lru, err := simplelru.NewLRU[int64, *block](maxBufs+1, nil)
	if err != nil {
		return nil, err
	}
	durable, _ := dev.(DurableWriter)
	c := &Cache{
		dev:          dev,
		durable:      durable,
		log:          orDiscard(opts.Logger),
		ss:           ss,
		ssShift:      uint(bits.TrailingZeros(uint(ss))),
		maxBufs:      maxBufs,
		chunkBlocks:  min(maxChunkBlocks, maxBufs/2),
		maxRA:        min(opts.ReadAhead, mem/4),
		writeThrough: opts.WriteThrough,
		interval:     opts.FlushInterval,
		dirtyLimit:   mem * 3 / 4,
		dirtyKick:    mem * 3 / 8,
		sem:          make(chan struct{}, opts.Parallel),
		wbSem:        make(chan struct{}, 1),
		kick:         make(chan struct{}, 1),
		stop:         make(chan struct{}),
		lru:          lru,
		maxStage:     min(maxStaging, max(1, maxBufs/16)),
		dirtyBlocks:  make(map[int64]*block),
		epoch:        time.Now(),
		ghost:        newGhost(opts.Size),
		idle:         make(chan struct{}, 1),
	}
	c.size.Store(size)
	c.bg, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.flusher()
	return c, nil
}

// Size returns the size of the device in bytes.
func (c *Cache) Size() int64 { return c.size.Load() }

// BlockSize returns the logical block size of the device.
func (c *Cache) BlockSize() int { return c.ss }

// enter admits an operation; leave must follow when it returns true.
func (c *Cache) enter() bool {
	c.ops.Add(1)
	if c.closed.Load() {
		c.leave()
		return false
	}
	return true
}

func (c *Cache) leave() {
	if c.ops.Add(-1) == 0 && c.closed.Load() {
		select {
		case c.idle <- struct{}{}:
		default:
		}
	}
}

// drain waits until no operation is in progress, or ctx ends; closed must
// be set (so that none starts).
func (c *Cache) drain(ctx context.Context) error {
	for c.ops.Load() > 0 {
		select {
		case <-c.idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// acquire takes a device request slot.
func (c *Cache) acquire(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
		return nil
	default:
	}
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Cache) release() { <-c.sem }

// waitChan returns the channel *p, creating it: waiters block on it until
// notify closes it.
func waitChan(p *chan struct{}) chan struct{} {
	if *p == nil {
		*p = make(chan struct{})
	}
	return *p
}

func notify(p *chan struct{}) {
	if *p != nil {
		close(*p)
		*p = nil
	}
}

// wait blocks until ch is closed or ctx is done.
func wait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	s := Stats{
		ReadBytes:        c.st.readBytes.Load(),
		Writes:           c.st.writes.Load(),
		WriteBytes:       c.st.writeBytes.Load(),
		Hits:             c.st.hits.Load(),
		Misses:           c.st.misses.Load(),
		UncachedReads:    c.st.uncachedReads.Load(),
		DeviceReads:      c.st.devReads.Load(),
		DeviceReadBytes:  c.st.devReadBytes.Load(),
		DeviceWrites:     c.st.devWrites.Load(),
		DeviceWriteBytes: c.st.devWriteBytes.Load(),
		ReadAheadBytes:   c.st.readAheadBytes.Load(),
		Evictions:        c.st.evictions.Load(),
		WritebackErrors:  c.st.writebackErrors.Load(),
	}
	s.Reads = s.Hits + s.Misses
	c.mu.Lock()
	s.DirtyBytes = c.dirtyBytes
	s.CachedBytes = c.validBytes - c.dirtyBytes
	s.BufferBytes = int64(c.nbufs)*blockSize + int64(c.stageMade)*maxCoalesce
	c.mu.Unlock()
	s.ReadAheadWindow = c.readAheadWindow()
	return s
}

// Invalidate drops clean data (e.g. after the device reconnected); dirty data
// is kept. Blocks in use are dropped when their last user lets go, and new users
// wait for that, so no read that starts after Invalidate sees the old data.
// After Close it does nothing.
func (c *Cache) Invalidate() {
	if !c.enter() {
		return
	}
	defer c.leave()
	c.mu.Lock()
	for _, b := range c.lru.Values() {
		if b.refs > 0 {
			b.stale = true
		} else {
			c.applyStaleLocked(b)
		}
	}
	c.mu.Unlock()
	c.resetStreams()
}

// Close refuses new operations (they return ErrClosed, as does a second
// Close), waits for those in progress to finish, writes back every dirty
// range, stops the flusher and waits for every goroutine of the cache. If the
// final write-back fails the error is returned and the dirty data is lost
// with the cache.
//
// All of it is bounded by ctx: when ctx ends first, Close cancels the
// cache's own device requests (read-ahead, fetches, write-back) and returns
// ctx's error; dirty data not yet written is lost, and goroutines still
// running end when the device answers.
func (c *Cache) Close(ctx context.Context) error {
	if c.closed.Swap(true) {
		return ErrClosed
	}
	close(c.stop)
	if err := c.drain(ctx); err != nil {
		// Operations still run (and may start fetches): end the cache's own
		// device requests and leave the rest to finish on their own.
		c.cancel()
		c.log.Warn("cache closed while operations were still in progress", "err", err)
		return err
	}
	err := c.flush(ctx, false)
	c.cancel()
	// Every operation has left, so no fetch starts any more: nothing is
	// added to wg while Close waits for it.
	allDone := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(allDone)
	}()
	select {
	case <-allDone:
	case <-ctx.Done():
		c.log.Warn("cache closed before its device requests ended", "err", ctx.Err())
		if err == nil {
			err = ctx.Err()
		}
		return err
	}

	c.mu.Lock()
	if c.dirtyBytes > 0 {
		c.log.Error("cache closed with data not written back", "dirty_bytes", c.dirtyBytes)
	}
	c.free, c.stageFree = nil, nil
	c.lru.Purge()
	clear(c.dirtyBlocks)
	c.mu.Unlock()
	return err
}
