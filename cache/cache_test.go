package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"
)

const (
	kib = 1 << 10
	mib = 1 << 20
)

func newCache(t testing.TB, dev Device, opts Options) *Cache {
	t.Helper()
	c, err := New(dev, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func readAt(t testing.TB, c *Cache, off int64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if got, err := c.ReadAtContext(context.Background(), p, off); err != nil || got != n {
		t.Fatalf("ReadAt(%d, %d) = %d, %v", off, n, got, err)
	}
	return p
}

func writeAt(t testing.TB, c *Cache, p []byte, off int64) {
	t.Helper()
	if n, err := c.WriteAtContext(context.Background(), p, off); err != nil || n != len(p) {
		t.Fatalf("WriteAt(%d, %d) = %d, %v", off, len(p), n, err)
	}
}

func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i*7) + byte(i>>9)
	}
	return p
}

// verify checks that the cache reads data, then that after Sync the device
// holds it, and that every device request was aligned.
func verify(t testing.TB, c *Cache, dev *testDev, data []byte) {
	t.Helper()
	if got := readAt(t, c, 0, len(data)); !bytes.Equal(got, data) {
		t.Error("cache content differs")
	}
	if err := c.SyncContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dev.content(t), data) {
		t.Error("device content differs")
	}
	checkAligned(t, dev)
}

func checkAligned(t testing.TB, d *testDev) {
	t.Helper()
	if n := d.misaligned.Load(); n != 0 {
		t.Errorf("%d misaligned device requests", n)
	}
}

// TestRandomReadFetchesOnlyWhatIsAsked: a cold random read fetches exactly its
// logical blocks, with no read-ahead, for both logical block sizes.
func TestRandomReadFetchesOnlyWhatIsAsked(t *testing.T) {
	tests := []struct {
		bs        int
		off       int64
		n         int
		wantBytes int64
	}{
		{512, 600, 100, 512},
		{512, 1000, 100, 1024},
		{512, 4096, 4096, 4096},
		{512, 4000, 200, 1024},
		{512, blockSize - 100, 200, 1024}, // across two cache blocks: two requests
		{4096, 1000, 100, 4096},
		{4096, 4096, 4096, 4096},
		{4096, 4000, 200, 8192},
		{4096, 3*mib + 5, 64 * kib, 64*kib + 4096},
	}
	for _, tt := range tests {
		dev, data := newTestDev(t, 8*mib, tt.bs, 1)
		c := newCache(t, dev, Options{Size: 4 * mib, ReadAhead: 1 * mib})
		got := readAt(t, c, tt.off, tt.n)
		if !bytes.Equal(got, data[tt.off:tt.off+int64(tt.n)]) {
			t.Errorf("bs %d read(%d,%d): wrong data", tt.bs, tt.off, tt.n)
		}
		if b := dev.readBytes.Load(); b != tt.wantBytes {
			t.Errorf("bs %d read(%d,%d): device read %d bytes, want %d", tt.bs, tt.off, tt.n, b, tt.wantBytes)
		}
		if s := c.Stats(); s.ReadAheadBytes != 0 || s.Misses != 1 {
			t.Errorf("bs %d: stats %+v", tt.bs, s)
		}
		checkAligned(t, dev)
	}
}

// TestSecondReadIsCached: reading a cached range again, whole or in unaligned
// pieces, makes no device request.
func TestSecondReadIsCached(t *testing.T) {
	dev, data := newTestDev(t, 8*mib, 512, 2)
	c := newCache(t, dev, Options{Size: 8 * mib})
	readAt(t, c, 3*mib, mib)
	reads := dev.reads.Load()
	if got := readAt(t, c, 3*mib, mib); !bytes.Equal(got, data[3*mib:4*mib]) {
		t.Fatal("wrong data")
	}
	for _, r := range []struct {
		off int64
		n   int
	}{{3*mib + 1, 1000}, {3*mib + blockSize - 7, 300}, {4*mib - 1, 1}} {
		if got := readAt(t, c, r.off, r.n); !bytes.Equal(got, data[r.off:r.off+int64(r.n)]) {
			t.Fatalf("wrong data at %d", r.off)
		}
	}
	if n := dev.reads.Load() - reads; n != 0 {
		t.Errorf("%d device reads for cached data", n)
	}
	if s := c.Stats(); s.Hits != 4 || s.Misses != 1 || s.Reads != 5 || s.ReadBytes != 2*mib+1301 {
		t.Errorf("hits %d misses %d reads %d read bytes %d, want 4, 1, 5 and %d", s.Hits, s.Misses, s.Reads, s.ReadBytes, 2*mib+1301)
	}
	writeAt(t, c, make([]byte, 3000), 17)
	if s := c.Stats(); s.Writes != 1 || s.WriteBytes != 3000 {
		t.Errorf("writes %d write bytes %d, want 1 and 3000", s.Writes, s.WriteBytes)
	}
}

// TestLargeReadIsParallel: a 4 MiB read is split into per-block fetches that
// run in parallel, never more than Parallel at once.
func TestLargeReadIsParallel(t *testing.T) {
	dev, data := newTestDev(t, 8*mib, 512, 3)
	c := newCache(t, dev, Options{Size: 16 * mib, Parallel: 6})
	open := gate(&dev.readGate)
	done := make(chan []byte)
	go func() {
		p := make([]byte, 4*mib)
		_, _ = c.ReadAtContext(context.Background(), p, 2*mib+512)
		done <- p
	}()
	waitFor(t, func() bool { return dev.inflight.Load() == 6 })
	time.Sleep(10 * time.Millisecond)
	if n := dev.inflight.Load(); n != 6 {
		t.Errorf("%d device reads in flight, want Parallel=6", n)
	}
	open()
	if p := <-done; !bytes.Equal(p, data[2*mib+512:6*mib+512]) {
		t.Error("wrong data")
	}
	if m := dev.maxIn.Load(); m != 6 {
		t.Errorf("max in flight %d, want 6", m)
	}
}

// TestOverlappingMissesShareFetches: readers of overlapping ranges being
// fetched wait for the fetches in flight and fetch only what nobody fetches.
func TestOverlappingMissesShareFetches(t *testing.T) {
	dev, data := newTestDev(t, 4*mib, 512, 4)
	c := newCache(t, dev, Options{Size: 4 * mib})
	open := gate(&dev.readGate)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(mib + i*512)
			p := make([]byte, 4096)
			if _, err := c.ReadAtContext(context.Background(), p, off); err != nil || !bytes.Equal(p, data[off:off+4096]) {
				t.Errorf("reader %d: err %v or wrong data", i, err)
			}
		}()
	}
	waitFor(t, func() bool { return dev.inflight.Load() >= 1 })
	time.Sleep(20 * time.Millisecond)
	open()
	wg.Wait()
	// Every logical block was fetched once: the first reader's 8, then one
	// more for each later reader, whose other 7 were already being fetched.
	if b := dev.readBytes.Load(); b != 4096+7*512 {
		t.Errorf("%d bytes read from the device, want %d", b, 4096+7*512)
	}
}

// TestSameRangeOneFetch: concurrent misses on the same range make one device
// fetch per cache block.
func TestSameRangeOneFetch(t *testing.T) {
	dev, _ := newTestDev(t, 4*mib, 512, 5)
	c := newCache(t, dev, Options{Size: 4 * mib})
	open := gate(&dev.readGate)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 300*kib)
			if _, err := c.ReadAtContext(context.Background(), p, 100*kib); err != nil {
				t.Error(err)
			}
		}()
	}
	waitFor(t, func() bool { return dev.inflight.Load() == 2 })
	time.Sleep(20 * time.Millisecond)
	open()
	wg.Wait()
	if n := dev.reads.Load(); n != 2 { // two cache blocks
		t.Errorf("%d device reads, want 2", n)
	}
}

func TestEOFAndRange(t *testing.T) {
	dev, data := newTestDev(t, 2*mib, 512, 6)
	c := newCache(t, dev, Options{Size: 4 * mib})
	ctx := context.Background()
	p := make([]byte, 4096)
	n, err := c.ReadAtContext(ctx, p, 2*mib-100)
	if n != 100 || err != io.EOF || !bytes.Equal(p[:100], data[2*mib-100:]) {
		t.Errorf("read across the end: %d, %v", n, err)
	}
	if n, err := c.ReadAtContext(ctx, p, 2*mib); n != 0 || err != io.EOF {
		t.Errorf("read at the end: %d, %v", n, err)
	}
	if n, err := c.WriteAtContext(ctx, p, 2*mib-10); n != 0 || !errors.Is(err, ErrOutOfRange) {
		t.Errorf("write across the end: %d, %v", n, err)
	}
	if _, err := c.ReadAtContext(ctx, p, -1); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("negative offset: %v", err)
	}
	writeAt(t, c, p[:10], 2*mib-10)
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadAtContext(ctx, p, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("read after close: %v", err)
	}
	if got := dev.content(t); !bytes.Equal(got[2*mib-10:], p[:10]) {
		t.Error("last bytes not written")
	}
}

// TestWriteAlignment: aligned writes never read the device; unaligned edges
// read just their partial logical blocks.
func TestWriteAlignment(t *testing.T) {
	tests := []struct {
		name      string
		bs        int
		off       int64
		n         int
		wantReads int64 // bytes read from the device
	}{
		{"aligned 4k", 512, 8192, 4096, 0},
		{"aligned 1 MiB across blocks", 4096, blockSize - 8192, mib, 0},
		{"one sector", 512, 512, 512, 0},
		{"inside a sector", 512, 10, 100, 512},
		{"both edges", 512, 100, 2000, 1024},
		{"both edges, two blocks", 512, blockSize - 100, 300, 1024},
		{"inside a 4k block", 4096, 10, 100, 4096},
		{"4k both edges", 4096, 4000, 5000, 8192},
		{"4k head only", 4096, 4000, 8192 - 4000, 4096},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev, data := newTestDev(t, 4*mib, tt.bs, 7)
			c := newCache(t, dev, Options{Size: 4 * mib})
			p := pattern(tt.n, 3)
			writeAt(t, c, p, tt.off)
			if b := dev.readBytes.Load(); b != tt.wantReads {
				t.Errorf("device read %d bytes, want %d", b, tt.wantReads)
			}
			copy(data[tt.off:], p)
			verify(t, c, dev, data)
		})
	}
}

// TestEvictionWritesBackFirst: with a tiny cache, writing more than fits
// pushes the data to the device before the blocks are reused.
func TestEvictionWritesBackFirst(t *testing.T) {
	dev, data := newTestDev(t, 16*mib, 512, 8)
	c := newCache(t, dev, Options{Size: 1 * mib, FlushInterval: time.Hour})
	p := pattern(8*mib, 9)
	for off := 0; off < len(p); off += 64 * kib {
		writeAt(t, c, p[off:off+64*kib], int64(off)+mib)
	}
	copy(data[mib:], p)
	got := dev.content(t)
	same := 0
	for i := mib; i < 9*mib; i++ {
		if got[i] == data[i] {
			same++
		}
	}
	// At most the cache size can still be waiting in memory.
	if same < 7*mib {
		t.Errorf("only %d of %d bytes on the device before any flush", same, 8*mib)
	}
	if s := c.Stats(); s.DirtyBytes > mib || s.BufferBytes > mib+maxCoalesce {
		t.Errorf("stats %+v", s)
	}
	verify(t, c, dev, data)
}

// TestWritebackErrorKeepsData: a failed write-back is reported by Flush, the
// device's error is still visible through the wrapping, and the data is written
// by the next Flush.
func TestWritebackErrorKeepsData(t *testing.T) {
	for _, background := range []bool{false, true} {
		dev, data := newTestDev(t, 4*mib, 512, 10)
		opts := Options{Size: 4 * mib, FlushInterval: time.Hour}
		if background {
			opts.FlushInterval = 5 * time.Millisecond
		}
		c := newCache(t, dev, opts)
		dev.failWrites.Store(1)
		p := pattern(mib+1000, 11)
		writeAt(t, c, p, 1234)
		copy(data[1234:], p)
		if background {
			waitFor(t, func() bool { return c.Stats().WritebackErrors == 1 })
		}
		err := c.Flush(context.Background())
		var de *devError
		if !errors.As(err, &de) || de.Op != "write" {
			t.Fatalf("background %v: Flush = %v, want the device's error", background, err)
		}
		if !background && c.Stats().DirtyBytes == 0 {
			t.Error("failed data is no longer dirty")
		}
		if err := c.Flush(context.Background()); err != nil {
			t.Fatalf("second Flush: %v", err)
		}
		if s := c.Stats(); s.DirtyBytes != 0 || s.WritebackErrors != 1 {
			t.Errorf("stats %+v", s)
		}
		if !bytes.Equal(dev.content(t), data) {
			t.Errorf("background %v: device content differs", background)
		}
	}
}

func TestReadErrorPropagates(t *testing.T) {
	dev, data := newTestDev(t, 4*mib, 512, 12)
	c := newCache(t, dev, Options{Size: 4 * mib})
	dev.failReads.Store(1)
	p := make([]byte, 8192)
	_, err := c.ReadAtContext(context.Background(), p, 4096)
	var de *devError
	if !errors.As(err, &de) || de.Op != "read" || de.Off != 4096 {
		t.Fatalf("ReadAt = %v, want the device's error", err)
	}
	if got := readAt(t, c, 4096, 8192); !bytes.Equal(got, data[4096:4096+8192]) {
		t.Error("wrong data after the error")
	}
	dev.failReads.Store(1)
	_, err = c.WriteAtContext(context.Background(), []byte{1, 2, 3}, mib+1)
	if !errors.As(err, &de) {
		t.Fatalf("read-modify-write: %v, want the device's error", err)
	}
	if s := c.Stats(); s.DirtyBytes != 0 {
		t.Errorf("failed write left %d dirty bytes", s.DirtyBytes)
	}
}

func TestTimerFlush(t *testing.T) {
	dev, _ := newTestDev(t, 4*mib, 512, 13)
	c := newCache(t, dev, Options{Size: 4 * mib, FlushInterval: 20 * time.Millisecond})
	p := pattern(100*kib, 14)
	writeAt(t, c, p, 77)
	waitFor(t, func() bool { return bytes.Equal(dev.content(t)[77:77+len(p)], p) })
	waitFor(t, func() bool { return c.Stats().DirtyBytes == 0 })
}

func TestWriteThrough(t *testing.T) {
	dev, data := newTestDev(t, 4*mib, 512, 15)
	c := newCache(t, dev, Options{Size: 4 * mib, WriteThrough: true, FlushInterval: time.Hour})
	p := pattern(300*kib+17, 16)
	writeAt(t, c, p, blockSize-1000)
	copy(data[blockSize-1000:], p)
	if !bytes.Equal(dev.content(t), data) {
		t.Error("data not on the device when WriteAt returned")
	}
	if dev.syncs.Load() != 1 {
		t.Errorf("%d syncs, want 1", dev.syncs.Load())
	}
	s := c.Stats()
	if s.DirtyBytes != 0 || s.CachedBytes == 0 {
		t.Errorf("stats %+v", s)
	}
	// A coalesced write across the three blocks.
	if w := dev.writes.Load(); w != 1 {
		t.Errorf("%d device writes, want 1", w)
	}
	reads := dev.reads.Load()
	if got := readAt(t, c, blockSize-1000, len(p)); !bytes.Equal(got, p) || dev.reads.Load() != reads {
		t.Error("written data not served from the cache")
	}
}

// TestCancelledRead: a read waiting for the device returns ctx.Err(); the
// fetch finishes in the background and is usable by later reads.
func TestCancelledRead(t *testing.T) {
	dev, data := newTestDev(t, 4*mib, 512, 17)
	c := newCache(t, dev, Options{Size: 4 * mib})
	open := gate(&dev.readGate)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	p := make([]byte, 64*kib)
	if _, err := c.ReadAtContext(ctx, p, mib); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReadAt = %v, want deadline exceeded", err)
	}
	open()
	if got := readAt(t, c, mib, 64*kib); !bytes.Equal(got, data[mib:mib+64*kib]) {
		t.Error("wrong data")
	}
	if n := dev.reads.Load(); n != 1 {
		t.Errorf("%d device reads, want the one shared fetch", n)
	}
}

// TestCancelledWriteChangesNothing: a write that cannot be accepted (dirty
// limit reached, write-back stalled) returns ctx.Err() and changes nothing.
func TestCancelledWriteChangesNothing(t *testing.T) {
	dev, data := newTestDev(t, 8*mib, 512, 18)
	c := newCache(t, dev, Options{Size: mib, FlushInterval: time.Hour})
	open := gate(&dev.writeGate)
	writeAt(t, c, pattern(3*blockSize, 19), 0) // the dirty limit is 3/4 of the cache
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	n, err := c.WriteAtContext(ctx, pattern(blockSize, 20), 4*mib)
	if n != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WriteAt = %d, %v, want 0 and deadline exceeded", n, err)
	}
	open()
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	copy(data, pattern(3*blockSize, 19))
	if !bytes.Equal(dev.content(t), data) {
		t.Error("device content differs")
	}
	if got := readAt(t, c, 4*mib, blockSize); !bytes.Equal(got, data[4*mib:4*mib+blockSize]) {
		t.Error("cancelled write was applied")
	}
}

func TestInvalidate(t *testing.T) {
	dev, data := newTestDev(t, 4*mib, 512, 21)
	c := newCache(t, dev, Options{Size: 4 * mib, FlushInterval: time.Hour})
	readAt(t, c, 0, mib)
	writeAt(t, c, pattern(4096, 22), 0)
	// Change the device behind the cache's back.
	other := pattern(mib, 23)
	if _, err := dev.f.WriteAt(other, 0); err != nil {
		t.Fatal(err)
	}
	if got := readAt(t, c, 4096, 4096); !bytes.Equal(got, data[4096:8192]) {
		t.Error("cached data changed before Invalidate")
	}
	c.Invalidate()
	want := append(pattern(4096, 22), other[4096:]...)
	if got := readAt(t, c, 0, mib); !bytes.Equal(got, want) {
		t.Error("after Invalidate: dirty data lost or clean data stale")
	}
	if err := c.SyncContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := dev.content(t)[:mib]; !bytes.Equal(got, want) {
		t.Error("device content differs")
	}
}

// TestByteBound: whatever the workload, cached plus dirty bytes stay within
// Size and block buffers are never allocated beyond it.
func TestByteBound(t *testing.T) {
	const size = 2 * mib
	dev, _ := newTestDev(t, 32*mib, 512, 24)
	c := newCache(t, dev, Options{Size: size, ReadAhead: 8 * mib, FlushInterval: 3 * time.Millisecond, Parallel: 8})
	stop := make(chan struct{})
	var viol sync.Once
	var samplers sync.WaitGroup
	samplers.Add(1)
	go func() {
		defer samplers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			s := c.Stats()
			if s.CachedBytes+s.DirtyBytes > size || s.BufferBytes > size+maxCoalesce {
				viol.Do(func() { t.Errorf("bound exceeded: %+v", s) })
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := newRand(uint64(g))
			buf := make([]byte, 2*mib)
			for i := 0; i < 60; i++ {
				n := 1 + rng.IntN(2*mib)
				off := rng.Int64N(32*mib - int64(n))
				var err error
				switch {
				case g == 0: // a sequential reader
					off = int64(i%32) * mib
					_, err = c.ReadAtContext(context.Background(), buf[:mib], off)
				case i%2 == 0:
					_, err = c.WriteAtContext(context.Background(), buf[:n], off)
				default:
					_, err = c.ReadAtContext(context.Background(), buf[:n], off)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	samplers.Wait()
	c.mu.Lock()
	made, maxBufs := c.bufsMade, c.maxBufs
	c.mu.Unlock()
	if made > maxBufs || maxBufs != size/blockSize {
		t.Errorf("%d block buffers allocated, bound %d", made, maxBufs)
	}
	checkAligned(t, dev)
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	dev, _ := newTestDev(t, 16*mib, 512, 25)
	c, err := New(dev, Options{Size: 4 * mib, ReadAhead: 2 * mib, FlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < 8*mib; off += 128 * kib {
		readAt(t, c, off, 128*kib)
	}
	writeAt(t, c, pattern(3*mib, 26), 5*mib+3)
	open := gate(&dev.readGate)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	_, _ = c.ReadAtContext(ctx, make([]byte, 4096), 15*mib) // leaves a fetch waiting on the gate
	cancel()
	go func() { time.Sleep(10 * time.Millisecond); open() }()
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
}

// waitFor polls cond for up to five seconds.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReadDuringWriteback: while write-back is stalled in the device, reads
// see the latest data, writes elsewhere in the same block go ahead, and a write
// over the sectors being written back waits for it, then is written too.
func TestReadDuringWriteback(t *testing.T) {
	dev, data := newTestDev(t, 4*mib, 512, 27)
	c := newCache(t, dev, Options{Size: 4 * mib, FlushInterval: time.Hour})
	ctx := context.Background()
	first := pattern(8192, 28)
	writeAt(t, c, first, 4096)
	open := gate(&dev.writeGate)
	flushed := make(chan error)
	go func() { flushed <- c.Flush(ctx) }()
	waitFor(t, func() bool { return dev.inflight.Load() == 1 })

	if got := readAt(t, c, 4096, 8192); !bytes.Equal(got, first) {
		t.Error("read during write-back: not the latest data")
	}
	other := pattern(1000, 29)
	writeAt(t, c, other, 64*kib+3) // same block, other sectors: no wait
	over := pattern(100, 30)
	overDone := make(chan struct{})
	go func() {
		writeAt(t, c, over, 4096+50)
		close(overDone)
	}()
	select {
	case <-overDone:
		t.Fatal("a write over sectors being written back did not wait")
	case <-time.After(20 * time.Millisecond):
	}
	open()
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	<-overDone
	copy(data[4096:], first)
	copy(data[64*kib+3:], other)
	copy(data[4096+50:], over)
	verify(t, c, dev, data)
}

// *Cache is an io.ReaderAt and io.WriterAt (the ctx-free convention).
var (
	_ io.ReaderAt = (*Cache)(nil)
	_ io.WriterAt = (*Cache)(nil)
)
