package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"
)

// checkCounts checks the cache's bookkeeping against its blocks: the byte
// counts equal the bitmaps, and nothing valid or dirty lies past a block's
// end unless it is being written back.
func checkCounts(t testing.TB, c *Cache) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var valid, dirty int64
	for _, b := range c.lru.Values() {
		valid += c.bytes(b.valid.count(0, maxSectors))
		d := b.dirty.or(&b.wb)
		dirty += c.bytes(d.count(0, maxSectors))
		if b.dirty.any(b.nsec, maxSectors) {
			t.Errorf("block %d: dirty past its %d logical blocks", b.idx, b.nsec)
		}
		past := b.valid.andNot(&b.wb)
		if past.any(b.nsec, maxSectors) {
			t.Errorf("block %d: valid past its %d logical blocks", b.idx, b.nsec)
		}
	}
	if valid != c.validBytes || dirty != c.dirtyBytes {
		t.Errorf("counts: valid %d (blocks say %d), dirty %d (blocks say %d)", c.validBytes, valid, c.dirtyBytes, dirty)
	}
}

// TestResizeGrow: after the device grows, the new range reads what the device
// holds and takes writes, including across the old end inside a block that
// used to be the short last one.
func TestResizeGrow(t *testing.T) {
	for _, bs := range []int{512, 4096} {
		oldSize := int64(mib + 3*bs) // the last cache block is short
		dev, model := newTestDev(t, oldSize, bs, 41)
		c := newCache(t, dev, Options{Size: 8 * mib, ReadAhead: mib, FlushInterval: time.Hour})
		readAt(t, c, 0, int(oldSize))
		edge := pattern(2*bs, 42)
		writeAt(t, c, edge, oldSize-int64(len(edge)))
		copy(model[oldSize-int64(len(edge)):], edge)

		newSize := int64(3*mib + 5*bs)
		model = append(model, dev.resize(t, newSize, 43)...)
		if dropped, err := c.Resize(newSize); err != nil || dropped != 0 {
			t.Fatalf("Resize(%d) = %d, %v", newSize, dropped, err)
		}
		if c.Size() != newSize {
			t.Fatalf("Size() = %d after Resize(%d)", c.Size(), newSize)
		}
		checkCounts(t, c)
		across := pattern(4*bs, 44)
		writeAt(t, c, across, oldSize-int64(bs))
		copy(model[oldSize-int64(bs):], across)
		verify(t, c, dev, model)
		checkCounts(t, c)
		if _, err := c.ReadAtContext(context.Background(), make([]byte, bs), newSize); err != io.EOF {
			t.Errorf("read at the new end: %v, want io.EOF", err)
		}
	}
}

// TestResizeShrink: dirty data past the new end is dropped and counted, never
// written; data before it survives; I/O past the new end fails as out of range.
func TestResizeShrink(t *testing.T) {
	const bs = 512
	dev, model := newTestDev(t, 4*mib, bs, 51)
	c := newCache(t, dev, Options{Size: 8 * mib, ReadAhead: mib, FlushInterval: time.Hour})
	readAt(t, c, 0, 4*mib)
	newSize := int64(2*mib + 7*bs) // mid-block
	inside := pattern(64*kib, 52)
	writeAt(t, c, inside, newSize-int64(len(inside)))
	copy(model[newSize-int64(len(inside)):], inside)
	straddle := pattern(16*kib, 53) // half inside, half past the new end
	writeAt(t, c, straddle, newSize-8*kib)
	copy(model[newSize-8*kib:], straddle[:8*kib])
	writeAt(t, c, pattern(mib, 54), 3*mib) // wholly past the new end

	dev.resize(t, newSize, 0)
	dropped, err := c.Resize(newSize)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(8*kib + mib); dropped != want {
		t.Errorf("Resize dropped %d dirty bytes, want %d", dropped, want)
	}
	checkCounts(t, c)
	if _, err := c.WriteAtContext(context.Background(), make([]byte, bs), newSize); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("write at the new end: %v, want ErrOutOfRange", err)
	}
	verify(t, c, dev, model[:newSize])
	if n := dev.beyond.Load(); n != 0 {
		t.Errorf("%d device requests past the new end", n)
	}
	if s := c.Stats(); s.DirtyBytes != 0 || s.CachedBytes > newSize {
		t.Errorf("stats after shrink and sync: %+v", s)
	}
}

// TestResizeDuringWriteback: a shrink while write-back past the new end is in
// flight drops that data when the device refuses it, rather than retrying it
// for ever, and the error reaches the next Flush once.
func TestResizeDuringWriteback(t *testing.T) {
	const bs = 512
	dev, _ := newTestDev(t, 4*mib, bs, 61)
	c := newCache(t, dev, Options{Size: 8 * mib, FlushInterval: time.Hour})
	writeAt(t, c, pattern(mib, 62), 3*mib)
	open := gate(&dev.writeGate)
	flushed := make(chan error, 1)
	go func() { flushed <- c.Flush(context.Background()) }()
	for dev.writes.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	dev.resize(t, 2*mib, 0)
	if _, err := c.Resize(2 * mib); err != nil {
		t.Fatal(err)
	}
	open()
	if err := <-flushed; err == nil {
		t.Error("Flush of data the device refused succeeded")
	}
	checkCounts(t, c)
	if err := c.Flush(context.Background()); err != nil {
		t.Errorf("second Flush: %v (the dropped data must not be retried)", err)
	}
	if s := c.Stats(); s.DirtyBytes != 0 {
		t.Errorf("dirty bytes after the refused write-back: %d", s.DirtyBytes)
	}
}

// TestResizeRaces grows and shrinks the tail of the device while readers and
// writers work on the head; the head's data stays right and the counts add up.
func TestResizeRaces(t *testing.T) {
	const bs = 512
	const head = 2 * mib
	dev, model := newTestDev(t, 4*mib, bs, 71)
	c := newCache(t, dev, Options{Size: 4 * mib, ReadAhead: mib, FlushInterval: 5 * time.Millisecond, Parallel: 4})
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex // orders writers against the model, per whole head
	stop := make(chan struct{})
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := newRand(uint64(g) + 7)
			buf := make([]byte, 192*kib)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				off := rng.Int64N(head - int64(len(buf)))
				n := 1 + rng.IntN(len(buf))
				p := buf[:n]
				mu.Lock()
				if rng.IntN(2) == 0 {
					fill(p, rng.Uint64())
					writeAt(t, c, p, off)
					copy(model[off:], p)
				} else if got := readAt(t, c, off, n); !bytes.Equal(got, model[off:off+int64(n)]) {
					t.Errorf("read %d at %d differs", n, off)
				}
				mu.Unlock()
				// Tail I/O that may race with a shrink: any outcome but a
				// panic or a wrong count is fine.
				tail := head + rng.Int64N(head)
				if rng.IntN(2) == 0 {
					_, _ = c.WriteAtContext(ctx, p[:min(n, 4*kib)], tail)
				} else {
					_, _ = c.ReadAtContext(ctx, p[:min(n, 64*kib)], tail)
				}
			}
		}()
	}
	sizes := []int64{3 * mib, head + 5*bs, 4 * mib, head, 3*mib + bs}
	for i := range 40 {
		size := sizes[i%len(sizes)]
		if _, err := c.Resize(size); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	_, _ = c.Resize(head)
	_ = c.Flush(ctx) // write-back raced past the end may report an error once
	if err := c.SyncContext(ctx); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, c)
	if got := dev.content(t)[:head]; !bytes.Equal(got, model[:head]) {
		t.Error("device head differs from the model")
	}
	if s := c.Stats(); s.DirtyBytes != 0 {
		t.Errorf("dirty bytes after Sync: %d", s.DirtyBytes)
	}
}
