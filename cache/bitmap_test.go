package cache

import "testing"

// TestBitmap checks every bitmap operation against a slice of bools.
func TestBitmap(t *testing.T) {
	rng := newRand(1)
	var m bitmap
	var ref [maxSectors]bool
	for i := 0; i < 20000; i++ {
		lo := rng.IntN(maxSectors)
		hi := lo + rng.IntN(maxSectors-lo+1)
		switch rng.IntN(3) {
		case 0:
			m.set(lo, hi)
			for j := lo; j < hi; j++ {
				ref[j] = true
			}
		case 1:
			m.clear(lo, hi)
			for j := lo; j < hi; j++ {
				ref[j] = false
			}
		}
		all, some, n := true, false, 0
		next := [2]int{hi, hi}
		for j := hi - 1; j >= lo; j-- {
			all = all && ref[j]
			some = some || ref[j]
			if ref[j] {
				n++
				next[1] = j
			} else {
				next[0] = j
			}
		}
		if m.all(lo, hi) != all || m.any(lo, hi) != some || m.count(lo, hi) != n ||
			m.next(lo, hi, false) != next[0] || m.next(lo, hi, true) != next[1] {
			t.Fatalf("step %d [%d,%d): all %v/%v any %v/%v count %d/%d next %d,%d/%v",
				i, lo, hi, m.all(lo, hi), all, m.any(lo, hi), some, m.count(lo, hi), n,
				m.next(lo, hi, false), m.next(lo, hi, true), next)
		}
		covered := 0
		m.runs(lo, hi, func(a, b int) {
			if a > lo && ref[a-1] || b < hi && ref[b] {
				t.Fatalf("run [%d,%d) in [%d,%d) is not maximal", a, b, lo, hi)
			}
			for j := a; j < b; j++ {
				if !ref[j] {
					t.Fatalf("run [%d,%d) covers clear bit %d", a, b, j)
				}
			}
			covered += b - a
		})
		if covered != n {
			t.Fatalf("runs cover %d bits, want %d", covered, n)
		}
	}
	if m.empty() != (m.count(0, maxSectors) == 0) {
		t.Fatal("empty disagrees with count")
	}
}
