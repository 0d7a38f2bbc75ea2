package cache

import "math/bits"

// bitmap holds one bit per logical block (sector) of a cache block. The smallest
// logical block is 512 bytes, so a 256 KiB cache block has at most 512 of them.
type bitmap [maxSectors / 64]uint64

// wordMask returns the bits of word w that fall in [lo, hi); lo < hi, and the
// range must touch word w.
func wordMask(w, lo, hi int) uint64 {
	a := max(lo, w<<6) - w<<6
	b := min(hi, (w+1)<<6) - w<<6
	return ^uint64(0) >> (64 - (b - a)) << a
}

// set sets the bits [lo, hi).
func (m *bitmap) set(lo, hi int) {
	for w := lo >> 6; lo < hi && w <= (hi-1)>>6; w++ {
		m[w] |= wordMask(w, lo, hi)
	}
}

// clear clears the bits [lo, hi).
func (m *bitmap) clear(lo, hi int) {
	for w := lo >> 6; lo < hi && w <= (hi-1)>>6; w++ {
		m[w] &^= wordMask(w, lo, hi)
	}
}

// all reports whether every bit in [lo, hi) is set (true for an empty range).
func (m *bitmap) all(lo, hi int) bool {
	for w := lo >> 6; lo < hi && w <= (hi-1)>>6; w++ {
		if mask := wordMask(w, lo, hi); m[w]&mask != mask {
			return false
		}
	}
	return true
}

// any reports whether some bit in [lo, hi) is set.
func (m *bitmap) any(lo, hi int) bool {
	for w := lo >> 6; lo < hi && w <= (hi-1)>>6; w++ {
		if m[w]&wordMask(w, lo, hi) != 0 {
			return true
		}
	}
	return false
}

// count returns how many bits in [lo, hi) are set.
func (m *bitmap) count(lo, hi int) int {
	n := 0
	for w := lo >> 6; lo < hi && w <= (hi-1)>>6; w++ {
		n += bits.OnesCount64(m[w] & wordMask(w, lo, hi))
	}
	return n
}

// empty reports whether no bit is set.
func (m *bitmap) empty() bool {
	for _, x := range m {
		if x != 0 {
			return false
		}
	}
	return true
}

// or returns the union of m and o.
func (m *bitmap) or(o *bitmap) bitmap {
	var r bitmap
	for i := range r {
		r[i] = m[i] | o[i]
	}
	return r
}

// next returns the first index in [i, hi) whose bit equals v, or hi if there is none.
func (m *bitmap) next(i, hi int, v bool) int {
	for w := i >> 6; i < hi && w <= (hi-1)>>6; w++ {
		x := m[w]
		if !v {
			x = ^x
		}
		x &= wordMask(w, i, hi)
		if x != 0 {
			return w<<6 + bits.TrailingZeros64(x)
		}
	}
	return hi
}

// runs calls fn for each maximal run [i, j) of set bits within [lo, hi).
func (m *bitmap) runs(lo, hi int, fn func(i, j int)) {
	for i := m.next(lo, hi, true); i < hi; {
		j := m.next(i, hi, false)
		fn(i, j)
		i = m.next(j, hi, true)
	}
}

// andNot returns the bits of m that are not in o.
func (m *bitmap) andNot(o *bitmap) bitmap {
	var r bitmap
	for i := range r {
		r[i] = m[i] &^ o[i]
	}
	return r
}
