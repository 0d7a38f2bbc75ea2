package cache

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// devError is the typed error the test device fails with; tests check that
// errors.As finds it through the cache's wrapping.
type devError struct {
	Op  string
	Off int64
}

func (e *devError) Error() string { return fmt.Sprintf("injected %s failure at %d", e.Op, e.Off) }

// testDev is a Device over a temporary file that counts requests, checks their
// alignment and injects faults and stalls.
type testDev struct {
	f    *os.File
	path string
	size atomic.Int64 // changes with resize
	bs   int

	reads, readBytes   atomic.Int64
	writes, writeBytes atomic.Int64
	syncs              atomic.Int64
	misaligned         atomic.Int64
	beyond             atomic.Int64 // requests past the end, refused like a target would
	inflight, maxIn    atomic.Int64

	failReads  atomic.Int64 // fail this many next reads
	failWrites atomic.Int64 // fail this many next writes
	readGate   atomic.Pointer[chan struct{}]
	writeGate  atomic.Pointer[chan struct{}]
}

// newTestDev creates a device of size bytes with logical block size bs, filled
// with random bytes from seed. It returns the device and its initial content.
func newTestDev(t testing.TB, size int64, bs int, seed uint64) (*testDev, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "lun.img")
	data := make([]byte, size)
	fill(data, seed)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	d := &testDev{f: f, path: path, bs: bs}
	d.size.Store(size)
	return d, data
}

func (d *testDev) Size() int64    { return d.size.Load() }
func (d *testDev) BlockSize() int { return d.bs }

func (d *testDev) aligned(p []byte, off int64) bool {
	ok := off%int64(d.bs) == 0 && len(p)%d.bs == 0 && len(p) > 0
	if !ok {
		d.misaligned.Add(1)
	}
	return ok
}

func (d *testDev) enter() func() {
	n := d.inflight.Add(1)
	for {
		m := d.maxIn.Load()
		if n <= m || d.maxIn.CompareAndSwap(m, n) {
			break
		}
	}
	return func() { d.inflight.Add(-1) }
}

// stall waits on the gate, if one is set.
func stall(ctx context.Context, g *atomic.Pointer[chan struct{}]) error {
	if ch := g.Load(); ch != nil {
		select {
		case <-*ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// takeFault consumes one injected fault if any is pending.
func takeFault(n *atomic.Int64) bool {
	for {
		v := n.Load()
		if v <= 0 {
			return false
		}
		if n.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

func (d *testDev) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return d.do(ctx, p, off, "read", &d.reads, &d.readBytes, &d.readGate, &d.failReads, d.f.ReadAt)
}

func (d *testDev) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return d.do(ctx, p, off, "write", &d.writes, &d.writeBytes, &d.writeGate, &d.failWrites, d.f.WriteAt)
}

// do carries out one request: count it, check alignment, wait at the gate,
// inject a pending fault, else do the file I/O.
func (d *testDev) do(ctx context.Context, p []byte, off int64, op string, count, bytes *atomic.Int64,
	g *atomic.Pointer[chan struct{}], faults *atomic.Int64, fileIO func([]byte, int64) (int, error)) (int, error) {
	defer d.enter()()
	count.Add(1)
	if !d.aligned(p, off) {
		return 0, fmt.Errorf("misaligned %s of %d at %d", op, len(p), off)
	}
	if err := stall(ctx, g); err != nil {
		return 0, err
	}
	if off+int64(len(p)) > d.size.Load() {
		d.beyond.Add(1)
		return 0, &devError{Op: op + " past the end", Off: off}
	}
	if takeFault(faults) {
		return 0, &devError{Op: op, Off: off}
	}
	n, err := fileIO(p, off)
	bytes.Add(int64(n))
	return n, err
}

func (d *testDev) SyncContext(ctx context.Context) error {
	d.syncs.Add(1)
	return nil
}

// gate makes reads (or writes) wait until the returned function is called.
func gate(g *atomic.Pointer[chan struct{}]) (open func()) {
	ch := make(chan struct{})
	g.Store(&ch)
	return func() {
		g.Store(nil)
		close(ch)
	}
}

// fill fills p with pseudo-random bytes from seed (cheap, even under -race).
func fill(p []byte, seed uint64) {
	x := seed*0x9e3779b97f4a7c15 | 1
	for len(p) >= 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(p, x)
		p = p[8:]
	}
	for i := range p {
		p[i] = byte(x >> (8 * i))
	}
}

// content returns the file as it is now.
func (d *testDev) content(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(d.path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// resize changes the device's capacity: the file is truncated or extended
// with pseudo-random bytes from seed, which it returns.
func (d *testDev) resize(t testing.TB, size int64, seed uint64) []byte {
	t.Helper()
	old := d.size.Load()
	if err := d.f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	var added []byte
	if size > old {
		added = make([]byte, size-old)
		fill(added, seed)
		if _, err := d.f.WriteAt(added, old); err != nil {
			t.Fatal(err)
		}
	}
	d.size.Store(size)
	return added
}
