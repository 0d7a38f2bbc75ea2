package main

import (
	"math"
	"math/bits"
	"time"
)

// latHist is a log-linear latency histogram: exact below 128 ns, then 64
// buckets per power of two (under 1.6% relative error), in fixed memory.
type latHist struct {
	counts [latBuckets]uint64
	n      uint64
	sum    int64 // ns
	max    int64 // ns
}

const (
	latSubBits = 6
	latSub     = 1 << latSubBits
	latBuckets = (64-latSubBits)*latSub + 2*latSub
)

func latBucket(ns int64) int {
	v := uint64(max(ns, 0))
	if v < 2*latSub {
		return int(v)
	}
	shift := bits.Len64(v) - latSubBits - 1 // v>>shift is in [latSub, 2*latSub)
	return shift*latSub + int(v>>shift)
}

// latBucketMid is the middle of bucket i in nanoseconds.
func latBucketMid(i int) float64 {
	if i < 2*latSub {
		return float64(i)
	}
	shift := i/latSub - 1
	m := uint64(i - shift*latSub)
	lo := m << shift
	return float64(lo) + float64(uint64(1)<<shift)/2
}

func (h *latHist) add(d time.Duration) {
	ns := int64(d)
	h.counts[latBucket(ns)]++
	h.n++
	h.sum += ns
	h.max = max(h.max, ns)
}

func (h *latHist) merge(o *latHist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile in microseconds.
func (h *latHist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(latBucketMid(i), float64(h.max)) / 1e3
		}
	}
	return float64(h.max) / 1e3
}
