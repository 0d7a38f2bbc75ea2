package initiator

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestCorkHoldsCommands: while the connection is corked (its role holder
// busy-polls), commands are queued and not written; clearing the cork, or a
// caller that must know its data left (waitSent), writes all of them with
// one system call, and every read gets its data.
func TestCorkHoldsCommands(t *testing.T) {
	for _, tt := range []struct {
		name    string
		release func(c *conn)
	}{
		{"cork cleared", func(c *conn) { c.setCork(false) }},
		{"waitSent", func(c *conn) { c.waitSent() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			ft := newFakeTarget(t, 1<<20)
			s, l := fakeSession(t, ft, fakeConfig(t)) // no busy polling: nothing else corks
			buf := make([]byte, 4096)
			if _, err := l.ReadAtContext(context.Background(), buf, 0); err != nil {
				t.Fatal(err)
			}
			c, err := s.connFor(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			const n = 8
			before := s.Stats()
			seen := ft.scsiN.Load()
			c.setCork(true)
			defer c.setCork(false)
			errs := make(chan error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					p := make([]byte, 4096)
					off := int64(i+1) * 4096
					if _, err := l.ReadAtContext(context.Background(), p, off); err != nil {
						errs <- err
					} else if !bytes.Equal(p, ft.disk[off:off+4096]) {
						errs <- fmt.Errorf("read at %d returned other data", off)
					}
				})
			}
			deadline := time.Now().Add(5 * time.Second)
			for s.Stats().PDUsSent-before.PDUsSent < n && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond) // time for a write that should not happen
			if got := s.Stats().PDUsSent - before.PDUsSent; got != n {
				t.Fatalf("%d commands queued, want %d", got, n)
			}
			if w := s.Stats().SendWrites - before.SendWrites; w != 0 || ft.scsiN.Load() != seen {
				t.Fatalf("corked: %d writes, %d commands reached the target; want none", w, ft.scsiN.Load()-seen)
			}
			tt.release(c)
			bounded(t, 10*time.Second, func() struct{} { wg.Wait(); return struct{}{} })
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if w := s.Stats().SendWrites - before.SendWrites; w != 1 {
				t.Errorf("%d commands left in %d writes, want 1", n, w)
			}
		})
	}
}
