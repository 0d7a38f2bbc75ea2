package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x15c5)) }

// rangeLocks serialise the model's overlapping operations only: goroutines
// working on disjoint byte ranges (often in the same cache block and even the
// same logical block) run concurrently.
type rangeLocks struct {
	mu   sync.Mutex
	cond *sync.Cond
	held [][2]int64
}

func (r *rangeLocks) lock(off, end int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.overlaps(off, end) {
		r.cond.Wait()
	}
	r.held = append(r.held, [2]int64{off, end})
}

func (r *rangeLocks) overlaps(off, end int64) bool {
	for _, h := range r.held {
		if off < h[1] && h[0] < end {
			return true
		}
	}
	return false
}

func (r *rangeLocks) unlock(off, end int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, h := range r.held {
		if h == [2]int64{off, end} {
			r.held = append(r.held[:i], r.held[i+1:]...)
			break
		}
	}
	r.cond.Broadcast()
}

// randomIO picks a size and offset: tiny unaligned, logical-block aligned, or
// large, and sometimes across the end of the device.
func randomIO(rng *rand.Rand, size int64) (int64, int) {
	var n int
	switch rng.IntN(4) {
	case 0:
		n = 1 + rng.IntN(5000)
	case 1:
		n = 4096 * (1 + rng.IntN(16))
	case 2:
		n = 1 + rng.IntN(300*kib)
	default:
		n = 1 + rng.IntN(1200*kib)
	}
	off := rng.Int64N(size - int64(n))
	if rng.IntN(2) == 0 {
		off &^= 4095
	}
	if rng.IntN(40) == 0 {
		off = size - int64(n)/2 // crosses the end
	}
	return off, n
}

// TestModel runs random concurrent reads and writes of random sizes and
// alignments from 8 goroutines against a small cache (forcing eviction) and an
// in-memory model; every read must agree with the model, and after Sync the
// device must too.
func TestModel(t *testing.T) {
	for _, tc := range []struct {
		name string
		bs   int
		opts Options
		// durable: the device has a volatile write cache and durable
		// writes (durableDev); the model also syncs, and checks at the end
		// that the medium holds everything.
		durable bool
	}{
		{"writeback-512", 512, Options{Size: 4 * mib, ReadAhead: mib, FlushInterval: 10 * time.Millisecond, Parallel: 8}, false},
		{"writeback-4096-noflusher", 4096, Options{Size: 4 * mib, ReadAhead: 2 * mib, FlushInterval: -1, Parallel: 4}, false},
		{"writethrough", 512, Options{Size: 4 * mib, ReadAhead: mib, WriteThrough: true, Parallel: 8}, false},
		{"writeback-durable", 512, Options{Size: 4 * mib, ReadAhead: mib, FlushInterval: 10 * time.Millisecond, Parallel: 8}, true},
		{"writethrough-durable", 4096, Options{Size: 4 * mib, ReadAhead: mib, WriteThrough: true, Parallel: 8}, true},
	} {
		t.Run(tc.name, func(t *testing.T) { runModel(t, tc.bs, tc.opts, tc.durable) })
	}
}

func runModel(t *testing.T, bs int, opts Options, durable bool) {
	const size = 32 * mib
	ops := 150
	if testing.Short() {
		ops = 40
	}
	dev, model := newTestDev(t, size, bs, 99)
	var ddev *durableDev
	var cdev Device = dev
	if durable {
		ddev = &durableDev{testDev: dev, medium: append([]byte(nil), model...)}
		cdev = ddev
	}
	c := newCache(t, cdev, opts)
	locks := &rangeLocks{}
	locks.cond = sync.NewCond(&locks.mu)
	ctx := context.Background()

	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := newRand(uint64(g) + 1000)
			buf := make([]byte, 1200*kib)
			seq := int64(g) * 4 * mib
			for i := 0; i < ops; i++ {
				off, n := randomIO(rng, size)
				r := rng.IntN(100)
				if g == 0 {
					// A sequential reader: read-ahead races with the writers.
					off, n, r = seq, 128*kib, 50
					seq = (seq + int64(n)) % size
				}
				end := min(off+int64(n), size)
				switch {
				case r < 45:
					if off+int64(n) > size {
						if _, err := c.WriteAtContext(ctx, buf[:n], off); !errors.Is(err, ErrOutOfRange) {
							t.Errorf("write across the end: %v", err)
						}
						continue
					}
					p := buf[:n]
					fill(p, rng.Uint64())
					locks.lock(off, end)
					w, err := c.WriteAtContext(ctx, p, off)
					if err == nil && w == n {
						copy(model[off:], p)
					}
					locks.unlock(off, end)
					if err != nil || w != n {
						t.Errorf("WriteAt(%d, %d) = %d, %v", off, n, w, err)
						return
					}
					// Scribble over the buffer: the cache must have copied it.
					clear(p)
				case r < 95:
					p := buf[:n]
					locks.lock(off, end)
					got, err := c.ReadAtContext(ctx, p, off)
					ok := bytes.Equal(p[:got], model[off:off+int64(got)])
					locks.unlock(off, end)
					if got != int(end-off) || (err != nil && !(err == io.EOF && end == size)) {
						t.Errorf("ReadAt(%d, %d) = %d, %v", off, n, got, err)
						return
					}
					if !ok {
						t.Errorf("ReadAt(%d, %d): data differs from the model", off, n)
						return
					}
				case r < 98:
					sync := c.Flush
					if durable && rng.IntN(2) == 0 {
						sync = c.SyncContext
					}
					if err := sync(ctx); err != nil {
						t.Error(err)
					}
				default:
					c.Invalidate()
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if err := c.SyncContext(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dev.content(t), model) {
		t.Error("device differs from the model after Sync")
	}
	if durable {
		if !bytes.Equal(ddev.survives(), model) {
			t.Error("after Sync the device's medium differs from the model")
		}
		if ddev.durableWrites.Load() == 0 {
			t.Error("no durable write: the test did not exercise them")
		}
		t.Logf("%d durable writes, %d device flushes", ddev.durableWrites.Load(), ddev.flushes.Load())
	}
	s := c.Stats()
	if s.DirtyBytes != 0 || s.CachedBytes+s.DirtyBytes > opts.Size {
		t.Errorf("stats after Sync: %+v", s)
	}
	if s.Evictions == 0 || s.ReadAheadBytes == 0 || s.UncachedReads == 0 {
		t.Error("no eviction, no read-ahead or no read around the cache: the test did not exercise them")
	}
	checkAligned(t, dev)
	if m := dev.maxIn.Load(); m > int64(opts.Parallel) {
		t.Errorf("%d device requests in flight, Parallel is %d", m, opts.Parallel)
	}
	t.Logf("stats %+v", s)
}
