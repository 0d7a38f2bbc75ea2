package cache

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"
)

// TestReadAheadSequential: sequential reads grow the window up to ReadAhead
// and the device sees few, large requests and little waste.
func TestReadAheadSequential(t *testing.T) {
	dev, data := newTestDev(t, 32*mib, 512, 30)
	c := newCache(t, dev, Options{Size: 32 * mib, ReadAhead: 2 * mib, FlushInterval: time.Hour})
	var windows []int64
	for off := int64(0); off < 16*mib; off += 64 * kib {
		if got := readAt(t, c, off, 64*kib); !bytes.Equal(got, data[off:off+64*kib]) {
			t.Fatalf("wrong data at %d", off)
		}
		if w := c.Stats().ReadAheadWindow; len(windows) == 0 || windows[len(windows)-1] != w {
			windows = append(windows, w)
		}
	}
	want := []int64{0, 128 * kib, 256 * kib, 512 * kib, mib, 2 * mib}
	if !equalInts(windows, want) {
		t.Errorf("window went %v, want %v", windows, want)
	}
	s := c.Stats()
	if s.ReadAheadBytes < 15*mib {
		t.Errorf("read-ahead fetched %d bytes", s.ReadAheadBytes)
	}
	if s.DeviceReadBytes > 16*mib+2*mib+blockSize {
		t.Errorf("device read %d bytes for 16 MiB", s.DeviceReadBytes)
	}
	// 256 reads of 64 KiB, served by about 16 MiB / 256 KiB block fetches.
	if s.DeviceReads > 80 {
		t.Errorf("%d device reads", s.DeviceReads)
	}
	if s.Hits == 0 {
		t.Error("no read was served from read-ahead without waiting")
	}
	// A jump near the stream halves its window.
	readAt(t, c, 16*mib+3*mib, 4096)
	if w := c.Stats().ReadAheadWindow; w != mib {
		t.Errorf("window after a jump is %d, want 1 MiB", w)
	}
}

// TestReadAheadRandom: random reads fetch only what is asked.
func TestReadAheadRandom(t *testing.T) {
	dev, data := newTestDev(t, 32*mib, 4096, 31)
	c := newCache(t, dev, Options{Size: 8 * mib, ReadAhead: 8 * mib})
	rng := newRand(5)
	slots := rng.Perm(32 * mib / (8 * kib)) // 4 KiB reads at 8 KiB spacing never touch
	for _, s := range slots[:300] {
		off := int64(s) * 8 * kib
		if got := readAt(t, c, off, 4*kib); !bytes.Equal(got, data[off:off+4*kib]) {
			t.Fatalf("wrong data at %d", off)
		}
	}
	s := c.Stats()
	if s.DeviceReads != 300 || s.DeviceReadBytes != 300*4*kib || s.ReadAheadBytes != 0 || s.ReadAheadWindow != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestReadAheadStreams: two concurrent sequential readers each get a stream,
// and random reads interleaved with them neither trigger read-ahead of their
// own nor reset the streams.
func TestReadAheadStreams(t *testing.T) {
	dev, data := newTestDev(t, 64*mib, 512, 32)
	c := newCache(t, dev, Options{Size: 32 * mib, ReadAhead: 2 * mib})
	var wg sync.WaitGroup
	for _, base := range []int64{0, 32 * mib} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 64*kib)
			for off := base; off < base+8*mib; off += 64 * kib {
				if _, err := c.ReadAtContext(context.Background(), p, off); err != nil || !bytes.Equal(p, data[off:off+64*kib]) {
					t.Errorf("at %d: %v or wrong data", off, err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := newRand(9)
		p := make([]byte, 4096)
		for range 100 {
			off := 16*mib + rng.Int64N(8*mib)&^4095
			if _, err := c.ReadAtContext(context.Background(), p, off); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
	s := c.Stats()
	// 100 random reads, and 2 x 128 sequential reads of 64 KiB: with
	// read-ahead about 2 x 32 block fetches, plus each stream's first reads
	// and windows cut short where the streams raced for buffers (runs gave
	// 176-183 in all).
	if s.DeviceReads > 100+2*48 {
		t.Errorf("%d device reads", s.DeviceReads)
	}
	if s.ReadAheadBytes < 14*mib {
		t.Errorf("read-ahead fetched only %d bytes", s.ReadAheadBytes)
	}
	if s.DeviceReadBytes > 16*mib+2*(2*mib+blockSize)+100*4096 {
		t.Errorf("device read %d bytes", s.DeviceReadBytes)
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRandomReadsKeepReadAhead: random reads churning through a small cache
// evict other clean data, not the read-ahead a stream has yet to consume.
func TestRandomReadsKeepReadAhead(t *testing.T) {
	dev, data := newTestDev(t, 64*mib, 512, 33)
	c := newCache(t, dev, Options{Size: 4 * mib, ReadAhead: mib})
	rng := newRand(11)
	slots := rng.Perm(32 * mib / blockSize)
	random := 0
	for off := int64(0); off < 8*mib; off += 64 * kib {
		if got := readAt(t, c, off, 64*kib); !bytes.Equal(got, data[off:off+64*kib]) {
			t.Fatalf("wrong data at %d", off)
		}
		// Four random reads, each in a cache block of its own.
		for range 4 {
			roff := 32*mib + int64(slots[random%len(slots)])*blockSize + 4096
			random++
			readAt(t, c, roff, 4096)
		}
	}
	s := c.Stats()
	seq := s.DeviceReadBytes - int64(random)*4096
	if seq > 8*mib+mib+blockSize {
		t.Errorf("the stream's region was read %d bytes from the device for 8 MiB: read-ahead evicted before use", seq)
	}
	if s.Evictions < int64(random)/2 {
		t.Errorf("only %d evictions: the test did not churn the cache", s.Evictions)
	}
}
