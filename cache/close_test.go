package cache

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestCloseBoundedByContext: Close waits for operations in progress no
// longer than its context allows; meanwhile, and after, new operations fail
// with ErrClosed instead of waiting. The operation in progress ends with
// ErrClosed (Close cancelled the device read it waited for).
func TestCloseBoundedByContext(t *testing.T) {
	dev, _ := newTestDev(t, 4*mib, 512, 31)
	c := newCache(t, dev, Options{Size: 4 * mib})
	open := sync.OnceFunc(gate(&dev.readGate))
	defer open()
	p := make([]byte, 4096)
	reading := make(chan error, 1)
	go func() {
		_, err := c.ReadAtContext(context.Background(), p, 0)
		reading <- err
	}()
	waitFor(t, func() bool { return dev.inflight.Load() > 0 })

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	start := time.Now()
	go func() { closed <- c.Close(ctx) }()
	if err := within(t, closed, "Close (it ignored its context)"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with a read stuck in the device: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v with a 100 ms context", d)
	}
	if _, err := c.ReadAtContext(context.Background(), make([]byte, 512), 8192); !errors.Is(err, ErrClosed) {
		t.Errorf("read after Close: %v, want ErrClosed", err)
	}
	if err := within(t, reading, "the read in progress"); !errors.Is(err, ErrClosed) {
		t.Errorf("the read in progress: %v, want ErrClosed", err)
	}
	if err := c.Close(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
}

// within receives from ch, failing the test after five seconds.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no answer within 5 s", what)
		panic("unreachable")
	}
}

// TestAfterClose: what each method does once Close has returned, as the
// package documents it: I/O and changes fail with ErrClosed, Invalidate
// does nothing, Size, BlockSize and Stats keep answering.
func TestAfterClose(t *testing.T) {
	dev, _ := newTestDev(t, 4*mib, 512, 32)
	c := newCache(t, dev, Options{Size: 4 * mib})
	ctx := context.Background()
	readAt(t, c, 0, 4096)
	writeAt(t, c, make([]byte, 4096), 8192)
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 512)
	if _, err := c.ReadAtContext(ctx, p, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadAt: %v", err)
	}
	if _, err := c.WriteAtContext(ctx, p, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("WriteAt: %v", err)
	}
	if err := c.Flush(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush: %v", err)
	}
	if err := c.SyncContext(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync: %v", err)
	}
	if _, err := c.Resize(8 * mib); !errors.Is(err, ErrClosed) {
		t.Errorf("Resize: %v", err)
	}
	c.Invalidate()
	if c.Size() != 4*mib || c.BlockSize() != 512 {
		t.Errorf("Size %d, BlockSize %d", c.Size(), c.BlockSize())
	}
	if st := c.Stats(); st.Reads != 1 || st.Writes != 1 || st.DeviceWrites != 1 {
		t.Errorf("Stats after Close: %+v", st)
	}
}
