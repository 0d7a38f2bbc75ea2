package cache

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

// randomOffsets returns n distinct 4 KiB-aligned offsets below size, far
// enough apart that no read continues another.
func randomOffsets(n int, size int64) []int64 {
	offs := make([]int64, 0, n)
	x := uint64(12345)
	seen := map[int64]bool{}
	for len(offs) < n {
		x = x*6364136223846793005 + 1442695040888963407
		off := int64(x>>20) % (size / (64 * kib)) * 64 * kib
		if !seen[off] {
			seen[off] = true
			offs = append(offs, off+4*kib) // not at a block start either
		}
	}
	return offs
}

// TestRandomReadsBypassTheCache: small aligned random reads over uncached
// blocks go straight to the device, take no buffer and evict nothing; a
// position read again soon after is admitted and cached.
func TestRandomReadsBypassTheCache(t *testing.T) {
	tests := []struct {
		name    string
		n       int  // read size
		bypass  bool // expected to bypass the cache
		aligned bool
	}{
		{"4KiB", 4 * kib, true, true},
		{"64KiB", 64 * kib, true, true},
		{"larger than 64KiB", 64*kib + 512, false, true},
		{"unaligned", 4 * kib, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev, data := newTestDev(t, 64*mib, 512, 3)
			c := newCache(t, dev, Options{Size: 4 * mib, ReadAhead: mib})
			offs := randomOffsets(100, 60*mib)
			for _, off := range offs {
				if !tt.aligned {
					off += 100
				}
				if got := readAt(t, c, off, tt.n); !bytes.Equal(got, data[off:off+int64(tt.n)]) {
					t.Fatalf("wrong data at %d", off)
				}
			}
			s := c.Stats()
			if s.Misses != 100 || s.Hits != 0 {
				t.Errorf("misses %d hits %d, want 100 and 0", s.Misses, s.Hits)
			}
			if tt.bypass {
				if s.UncachedReads != 100 || s.DeviceReads != 100 || s.BufferBytes != 0 || s.Evictions != 0 || s.CachedBytes != 0 {
					t.Errorf("uncached reads %d, device reads %d, buffers %d bytes, %d evictions, %d cached bytes: want 100, 100, 0, 0, 0",
						s.UncachedReads, s.DeviceReads, s.BufferBytes, s.Evictions, s.CachedBytes)
				}
			} else if s.UncachedReads != 0 || s.BufferBytes == 0 {
				t.Errorf("uncached reads %d, buffers %d bytes: want 0 and some", s.UncachedReads, s.BufferBytes)
			}
			checkAligned(t, dev)
		})
	}
}

// TestReadTwiceIsAdmitted: the second read of a bypassed position goes
// through the cache, so the third is a hit.
func TestReadTwiceIsAdmitted(t *testing.T) {
	dev, data := newTestDev(t, 64*mib, 512, 4)
	c := newCache(t, dev, Options{Size: 4 * mib, ReadAhead: mib})
	const off = 20*mib + 8*kib
	for i := range 3 {
		if got := readAt(t, c, off, 4*kib); !bytes.Equal(got, data[off:off+4*kib]) {
			t.Fatalf("read %d: wrong data", i)
		}
	}
	s := c.Stats()
	if s.UncachedReads != 1 || s.DeviceReads != 2 || s.Hits != 1 || s.CachedBytes != 4*kib {
		t.Errorf("uncached %d, device reads %d, hits %d, cached %d bytes: want 1, 2, 1, %d",
			s.UncachedReads, s.DeviceReads, s.Hits, s.CachedBytes, 4*kib)
	}
	// A random read of other sectors of the now cached block is no
	// different from one elsewhere: the block holds none of its data, so it
	// bypasses the cache the first time and is admitted the second.
	const near = off + 64*kib
	for i, want := range []struct {
		uncached int64
		cached   int64
	}{{2, 4 * kib}, {2, 8 * kib}} {
		if got := readAt(t, c, near, 4*kib); !bytes.Equal(got, data[near:near+4*kib]) {
			t.Fatalf("read %d of the neighbour: wrong data", i)
		}
		if s := c.Stats(); s.UncachedReads != want.uncached || s.CachedBytes != want.cached {
			t.Errorf("after read %d of the neighbour: uncached %d, cached %d bytes: want %d and %d",
				i, s.UncachedReads, s.CachedBytes, want.uncached, want.cached)
		}
	}
	// A read that overlaps the cached sectors goes through the cache.
	if got := readAt(t, c, off-4*kib, 8*kib); !bytes.Equal(got, data[off-4*kib:off+4*kib]) {
		t.Fatal("overlapping read: wrong data")
	}
	if s := c.Stats(); s.UncachedReads != 2 {
		t.Errorf("overlapping read: uncached %d, want 2", s.UncachedReads)
	}
}

// TestBypassSeesCachedWrites: a random read of data written into the cache,
// dirty or being written back, is served from the cache.
func TestBypassSeesCachedWrites(t *testing.T) {
	dev, _ := newTestDev(t, 64*mib, 512, 5)
	c := newCache(t, dev, Options{Size: 4 * mib, ReadAhead: mib, FlushInterval: -1})
	const off = 30*mib + 12*kib
	want := pattern(4*kib, 9)
	writeAt(t, c, want, off)
	if got := readAt(t, c, off, 4*kib); !bytes.Equal(got, want) {
		t.Fatal("dirty data: read the device's old content")
	}
	// During write-back: the device write is stalled.
	open := gate(&dev.writeGate)
	flushed := make(chan error, 1)
	go func() { flushed <- c.Flush(context.Background()) }()
	waitFor(t, func() bool { return dev.writes.Load() > 0 })
	if got := readAt(t, c, off, 4*kib); !bytes.Equal(got, want) {
		t.Fatal("data being written back: read the device's old content")
	}
	open()
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.UncachedReads != 0 || dev.reads.Load() != 0 {
		t.Errorf("uncached reads %d, device reads %d: want 0 and 0", s.UncachedReads, dev.reads.Load())
	}
}

// TestBypassCancelled: a bypassing read that is cancelled while the device
// stalls returns the context's error, and the position reads fine afterwards.
func TestBypassCancelled(t *testing.T) {
	dev, data := newTestDev(t, 64*mib, 512, 6)
	c := newCache(t, dev, Options{Size: 4 * mib, ReadAhead: mib})
	open := gate(&dev.readGate)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	p := make([]byte, 4*kib)
	if _, err := c.ReadAtContext(ctx, p, 5*mib); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReadAt = %v, want deadline exceeded", err)
	}
	open()
	if got := readAt(t, c, 5*mib, 4*kib); !bytes.Equal(got, data[5*mib:5*mib+4*kib]) {
		t.Error("wrong data")
	}
	if s := c.Stats(); s.UncachedReads != 1 || s.Misses != 2 {
		t.Errorf("uncached reads %d misses %d, want 1 and 2", s.UncachedReads, s.Misses)
	}
}

// TestBypassReadError: a device error on a bypassing read reaches the caller
// with the device's typed error inside.
func TestBypassReadError(t *testing.T) {
	dev, _ := newTestDev(t, 64*mib, 512, 7)
	c := newCache(t, dev, Options{Size: 4 * mib, ReadAhead: mib})
	dev.failReads.Store(1)
	p := make([]byte, 4*kib)
	_, err := c.ReadAtContext(context.Background(), p, 7*mib)
	var de *devError
	if !errors.As(err, &de) || de.Off != 7*mib {
		t.Fatalf("ReadAt = %v, want the device's error at %d", err, 7*mib)
	}
	if s := c.Stats(); s.UncachedReads != 1 {
		t.Errorf("uncached reads %d, want 1", s.UncachedReads)
	}
}

// TestHoldsAny: which part of a request a cached block is asked about, and
// which of its sectors count (valid and fetching ones; dirty and written
// back ones are valid too).
func TestHoldsAny(t *testing.T) {
	c := &Cache{ss: 512, ssShift: 9}
	const boff = 3 * blockSize // the block's device offset
	b := &block{off: boff}
	b.valid.set(8, 16)       // [4 KiB, 8 KiB) of the block
	b.fetching.set(100, 101) // [50 KiB, 50.5 KiB)
	b.valid.set(511, 512)    // its last sector
	for _, tt := range []struct {
		name      string
		off, size int64
		want      bool
	}{
		{"before the valid sectors", boff, 4 * kib, false},
		{"on them", boff + 4*kib, 4 * kib, true},
		{"overlapping their end", boff + 7*kib, 4 * kib, true},
		{"right after them", boff + 8*kib, 4 * kib, false},
		{"a fetching sector", boff + 48*kib, 4 * kib, true},
		{"unaligned end inside a valid sector", boff + 3*kib, 1024 + 1, true},
		{"from the block before, up to the valid sectors", boff - 8*kib, 12 * kib, false},
		{"from the block before, into them", boff - 8*kib, 12*kib + 512, true},
		{"into the block after, from the last sector", boff + blockSize - 512, 8 * kib, true},
		{"into the block after, short of the last sector", boff + blockSize - 4*kib, 3*kib + 512, false},
	} {
		if got := c.holdsAnyLocked(b, tt.off, tt.off+tt.size); got != tt.want {
			t.Errorf("%s: [%d, %d) of the block: %v, want %v", tt.name, tt.off-boff, tt.off+tt.size-boff, got, tt.want)
		}
	}
}
