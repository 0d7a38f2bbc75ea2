package cache

const (
	// maxStreams is how many sequential streams are tracked at once (several
	// dd's, a copy and its verify pass, FUSE readers of different files...).
	maxStreams = 8
	// initialReadAhead is the first window of a stream (or twice the read
	// size if larger); it doubles each time the reader has consumed half of what
	// was read ahead.
	initialReadAhead = 128 << 10
	// seqToStart is how many reads must continue a stream exactly before read-ahead
	// starts, so that random reads that happen to touch never trigger it.
	seqToStart = 2
)

// stream is a reader moving forward through the device.
type stream struct {
	next  int64  // where the next read of the stream is expected
	raEnd int64  // read-ahead has been issued up to here
	win   int64  // read-ahead window; 0 while the stream is not proven sequential
	seq   int    // reads in a row that continued the stream
	used  uint64 // tick of the last read, 0 for a free slot
}

// raRange is read-ahead to issue for the stream in slot.
type raRange struct {
	from, to int64
	slot     int
}

// detectStream files the read [off, end) under a stream and returns the
// read-ahead to issue, if any. Reads that continue no stream start a candidate
// stream, get no read-ahead and are reported random; a jump near an
// established stream halves its window (and a window below the initial one is
// reset). Without read-ahead no streams are tracked and nothing is random.
func (c *Cache) detectStream(off, end int64) (ra raRange, random bool) {
	if c.maxRA <= 0 {
		return raRange{}, false
	}
	c.smu.Lock()
	defer c.smu.Unlock()
	c.tick++
	for i := range c.streams {
		s := &c.streams[i]
		if s.used == 0 {
			continue
		}
		lo, hi := s.next, s.next
		if s.win > 0 {
			// Established: FUSE and the kernel deliver a stream's reads a
			// little out of order, some behind the head, some a bit ahead.
			lo, hi = s.next-s.win-blockSize, s.next+blockSize
		}
		if off >= lo && off <= hi {
			return c.advanceStream(i, end, end-off), false
		}
	}
	for i := range c.streams {
		s := &c.streams[i]
		if s.win > 0 && off >= s.next-4*s.win && off <= s.next+4*s.win {
			s.win /= 2
			if s.win < min(initialReadAhead, c.maxRA) {
				s.win, s.seq = 0, 0
			}
			s.next, s.raEnd, s.used = end, end, c.tick
			return raRange{}, false
		}
	}
	c.streams[c.victimStream()] = stream{next: end, raEnd: end, used: c.tick}
	return raRange{}, true
}

// advanceStream moves stream i past a read of n bytes ending at end.
func (c *Cache) advanceStream(i int, end, n int64) raRange {
	s := &c.streams[i]
	s.used = c.tick
	if end <= s.next {
		return raRange{} // late or repeated read behind the head
	}
	s.next = end
	s.seq++
	if s.seq < seqToStart {
		return raRange{}
	}
	switch {
	case s.win == 0:
		s.win = min(max(initialReadAhead, 2*n), c.maxRA)
	case s.raEnd-end >= s.win/2:
		return raRange{} // still enough read ahead
	default:
		s.win = min(2*s.win, c.maxRA)
	}
	from := max(s.raEnd, end)
	// Round up to a block boundary so read-ahead fetches whole blocks.
	to := min(c.size.Load(), (end+s.win+blockMask)&^blockMask)
	if to <= from {
		return raRange{}
	}
	s.raEnd = to
	return raRange{from: from, to: to, slot: i}
}

// victimStream picks the slot for a new candidate: a free one, else the least
// recently used candidate, else the least recently used stream. Established
// streams are thus not pushed out by random reads.
func (c *Cache) victimStream() int {
	best, bestEst := -1, true
	for i := range c.streams {
		s := &c.streams[i]
		if s.used == 0 {
			return i
		}
		est := s.win > 0
		if best < 0 || (bestEst && !est) || (est == bestEst && s.used < c.streams[best].used) {
			best, bestEst = i, est
		}
	}
	return best
}

// readAheadShort notes that read-ahead for ra only got to got (no memory to
// spare): the stream will issue it again later, with a smaller window.
func (c *Cache) readAheadShort(ra raRange, got int64) {
	c.smu.Lock()
	defer c.smu.Unlock()
	s := &c.streams[ra.slot]
	if s.raEnd != ra.to {
		return
	}
	s.raEnd = got
	s.win = max(s.win/2, min(initialReadAhead, c.maxRA))
}

// readAheadWindow returns the largest window of the tracked streams.
func (c *Cache) readAheadWindow() int64 {
	c.smu.Lock()
	defer c.smu.Unlock()
	var w int64
	for i := range c.streams {
		w = max(w, c.streams[i].win)
	}
	return w
}

func (c *Cache) resetStreams() {
	c.smu.Lock()
	c.streams = [maxStreams]stream{}
	c.smu.Unlock()
}
