package cache

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// durableDev is a testDev with a volatile write cache: medium is what
// survives a power loss. WriteDurableAtContext writes through to the medium
// (FUA); SyncContext flushes only when a plain write came since the last
// flush, as initiator.LUN decides.
type durableDev struct {
	*testDev
	mu       sync.Mutex
	medium   []byte
	unsynced int // plain writes since the last flush

	durableWrites, flushes atomic.Int64
}

func newDurableDev(t testing.TB, size int64, bs int) (*durableDev, []byte) {
	dev, data := newTestDev(t, size, bs, 7)
	return &durableDev{testDev: dev, medium: append([]byte(nil), data...)}, data
}

func (d *durableDev) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := d.testDev.WriteAtContext(ctx, p, off)
	d.mu.Lock()
	d.unsynced++
	d.mu.Unlock()
	return n, err
}

func (d *durableDev) WriteDurableAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := d.testDev.WriteAtContext(ctx, p, off)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.unsynced++
		return n, err
	}
	copy(d.medium[off:], p[:n])
	d.durableWrites.Add(1)
	return n, nil
}

func (d *durableDev) SyncContext(ctx context.Context) error {
	d.testDev.syncs.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.unsynced == 0 {
		return nil
	}
	if _, err := d.f.ReadAt(d.medium, 0); err != nil {
		return err
	}
	d.unsynced = 0
	d.flushes.Add(1)
	return nil
}

func (d *durableDev) survives() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.medium...)
}

// TestSyncDurable: what a sync covers (fsync, or every write with
// WriteThrough) is on the medium afterwards, and small syncs get there with
// durable writes alone, large ones with plain writes and one device flush.
func TestSyncDurable(t *testing.T) {
	type write struct {
		off int64
		n   int
	}
	small := []write{{8 * kib, 4 * kib}}
	scattered := []write{{0, 4 * kib}, {777, 1000}, {300 * kib, 4 * kib}, {3 * mib, 64 * kib}}
	large := []write{{mib, 2 * mib}}
	for _, tc := range []struct {
		name    string
		through bool
		writes  []write
		flush   bool // Flush (write-back without a sync) before the sync
		durable bool // durable writes, and no device flush
	}{
		{"fsync small", false, small, false, true},
		{"fsync scattered", false, scattered, false, true},
		{"fsync large", false, large, false, false},
		{"fsync after write-back", false, small, true, false},
		{"write-through small", true, small, false, true},
		{"write-through scattered", true, scattered, false, true},
		{"write-through large", true, large, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev, model := newDurableDev(t, 8*mib, 512)
			c := newCache(t, dev, Options{Size: 4 * mib, FlushInterval: time.Hour, Parallel: 4, WriteThrough: tc.through})
			ctx := context.Background()
			for i, w := range tc.writes {
				p := bytes.Repeat([]byte{byte(i + 1)}, w.n)
				if _, err := c.WriteAtContext(ctx, p, w.off); err != nil {
					t.Fatal(err)
				}
				copy(model[w.off:], p)
				if tc.through && !bytes.Equal(dev.survives(), model) {
					t.Fatalf("write-through: write %d is not on the medium when WriteAtContext returns", i)
				}
			}
			if tc.flush {
				if err := c.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.SyncContext(ctx); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dev.survives(), model) {
				t.Fatal("after SyncContext the medium lacks written data")
			}
			durable, flushes := dev.durableWrites.Load(), dev.flushes.Load()
			if tc.durable && (durable == 0 || flushes != 0) || !tc.durable && (durable != 0 || flushes == 0) {
				t.Errorf("%d durable writes and %d device flushes (want durable writes only: %v)", durable, flushes, tc.durable)
			}
		})
	}
}
