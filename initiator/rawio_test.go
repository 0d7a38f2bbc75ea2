package initiator

import (
	"bytes"
	"net"
	"syscall"
	"testing"
)

// TestRawIO checks the system calls that bypass the runtime: a gather write
// of more segments than one call takes (empty ones among them) goes out
// whole through consumed, as writeNonBlocking loops, and a read of an empty
// non-blocking socket says EAGAIN.
func TestRawIO(t *testing.T) {
	for _, nsegs := range []int{1, rawIOV - 1, rawIOV, rawIOV + 1, 3*rawIOV + 7} {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		var want []byte
		var segs net.Buffers
		for i := range nsegs {
			if i%5 == 2 {
				segs = append(segs, nil)
			}
			b := bytes.Repeat([]byte{byte(i)}, 1+i%7)
			want = append(want, b...)
			segs = append(segs, b)
		}
		for calls := 0; len(segs) > 0; calls++ {
			if calls > nsegs {
				t.Fatalf("%d segments: no progress", nsegs)
			}
			n, err := rawWritev(fds[0], segs)
			if err != nil {
				t.Fatalf("%d segments: rawWritev: %v", nsegs, err)
			}
			segs = consumed(segs, n)
			for len(segs) > 0 && len(segs[0]) == 0 {
				segs = segs[1:]
			}
		}
		got := make([]byte, len(want)+10)
		n, err := rawRead(fds[1], got)
		if err != nil || !bytes.Equal(got[:n], want) {
			t.Fatalf("%d segments: read %d bytes (%v), want the %d written", nsegs, n, err, len(want))
		}
		if _, err := rawRead(fds[1], got); err != syscall.EAGAIN {
			t.Fatalf("%d segments: read of an empty socket: %v, want EAGAIN", nsegs, err)
		}
		syscall.Close(fds[0])
		syscall.Close(fds[1])
	}
}
