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
		if _, err := c.ReadAt(ctx, p, off); err != nil {
			b.Fatal(err)
		}
	}
	reads := dev.reads.Load()
	b.SetBytes(mib)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := c.ReadAt(ctx, p, int64(i%(span/mib))*mib); err != nil {
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
		if _, err := c.ReadAt(ctx, p, off); err != nil {
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
			if _, err := c.ReadAt(ctx, p, int64(i%(span/mib))*mib); err != nil {
				b.Error(err)
				return
			}
			i += 7
		}
	})
}
