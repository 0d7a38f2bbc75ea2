package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestLatBucket: buckets are monotonic, in range, and their middles are
// within 1.6% of every value they hold.
func TestLatBucket(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 1000, 4095, 4096, 1e6, 1e9, 1e12, math.MaxInt64} {
		b := latBucket(v)
		if b < prev || b >= latBuckets {
			t.Errorf("latBucket(%d) = %d after %d (of %d)", v, b, prev, latBuckets)
		}
		prev = b
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 100000 {
		v := int64(rng.Uint64N(1 << uint(rng.IntN(50)+1)))
		mid := latBucketMid(latBucket(v))
		if math.Abs(mid-float64(v)) > 0.016*float64(v)+0.5 {
			t.Fatalf("value %d in a bucket with middle %.1f", v, mid)
		}
	}
}

func TestLatHistQuantiles(t *testing.T) {
	var a, b latHist
	var all []float64
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 20000 {
		d := time.Duration(rng.ExpFloat64() * float64(500*time.Microsecond))
		all = append(all, float64(d)/1e3)
		if i%2 == 0 {
			a.add(d)
		} else {
			b.add(d)
		}
	}
	a.merge(&b)
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.99, 0.999} {
		exact := all[int(math.Ceil(q*float64(len(all))))-1]
		if got := a.quantile(q); math.Abs(got-exact) > 0.02*exact {
			t.Errorf("q%.3f = %.1f µs, exact %.1f µs", q, got, exact)
		}
	}
	if a.n != 20000 || float64(a.max)/1e3 != all[len(all)-1] {
		t.Errorf("n %d, max %d", a.n, a.max)
	}
	var empty latHist
	if empty.quantile(0.5) != 0 {
		t.Error("empty histogram has a median")
	}
}
