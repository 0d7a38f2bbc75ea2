package cache

import (
	"context"
	"testing"
)

// BenchmarkWarmRead reads 1 MiB at a time over a 128 MiB range that is
// already cached (the copy out of the cache is what is measured).
func BenchmarkWarmRead(b *testing.B) {
	const span = 128 * mib
	dev, _ := newTestDev(b, span, 512, 40)
	c := newCache(b, dev, Options{Size: 256 * mib, ReadAhead: 8 * mib})
	p := make([]byte, mib)
	ctx := context.Background()
	for off := int64(0); off < span; off += mib {
		if _, err := c.ReadAtContext(ctx, p, off); err != nil {
			b.Fatal(err)
		}
	}
	reads := dev.reads.Load()
	b.SetBytes(mib)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := c.ReadAtContext(ctx, p, int64(i%(span/mib))*mib); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if dev.reads.Load() != reads {
		b.Fatal("warm reads went to the device")
	}
}

// BenchmarkWarmReadParallel is BenchmarkWarmRead from GOMAXPROCS goroutines.
func BenchmarkWarmReadParallel(b *testing.B) {
	const span = 128 * mib
	dev, _ := newTestDev(b, span, 512, 41)
	c := newCache(b, dev, Options{Size: 256 * mib, ReadAhead: 8 * mib})
	ctx := context.Background()
	p := make([]byte, mib)
	for off := int64(0); off < span; off += mib {
		if _, err := c.ReadAtContext(ctx, p, off); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(mib)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		p := make([]byte, mib)
		i := 0
		for pb.Next() {
			if _, err := c.ReadAtContext(ctx, p, int64(i%(span/mib))*mib); err != nil {
				b.Error(err)
				return
			}
			i += 7
		}
	})
}

// BenchmarkColdSequentialRead reads a 64 MiB device through a 16 MiB cache in
// 128 KiB requests (as FUSE hands them over): read-ahead and eviction at work.
func BenchmarkColdSequentialRead(b *testing.B) {
	const span = 64 * mib
	dev, _ := newTestDev(b, span, 512, 42)
	c := newCache(b, dev, Options{Size: 16 * mib, ReadAhead: 4 * mib})
	ctx := context.Background()
	p := make([]byte, 128*kib)
	b.SetBytes(span)
	for b.Loop() {
		c.Invalidate()
		for off := int64(0); off < span; off += int64(len(p)) {
			if _, err := c.ReadAtContext(ctx, p, off); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(dev.reads.Load())/float64(b.N), "devreads/op")
}

// BenchmarkSequentialWrite writes a 64 MiB device through a 16 MiB cache in
// 1 MiB requests and flushes: coalesced, parallel write-back under back-pressure.
func BenchmarkSequentialWrite(b *testing.B) {
	const span = 64 * mib
	dev, _ := newTestDev(b, span, 512, 43)
	c := newCache(b, dev, Options{Size: 16 * mib})
	ctx := context.Background()
	p := pattern(mib, 44)
	b.SetBytes(span)
	for b.Loop() {
		for off := int64(0); off < span; off += mib {
			if _, err := c.WriteAtContext(ctx, p, off); err != nil {
				b.Fatal(err)
			}
		}
		if err := c.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(dev.writes.Load())/float64(b.N), "devwrites/op")
}
