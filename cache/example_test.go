package cache_test

import (
	"context"
	"fmt"
	"log"
	"sync"

	"github.com/iscsifs/iscsifs/cache"
)

// memDevice is a 1 MiB device in memory with 512-byte blocks. A program
// passes an *initiator.LUN, which has the same methods (see the fusefs
// package's example for a LUN behind a cache).
type memDevice struct {
	mu     sync.Mutex
	data   []byte
	syncs  int
	writes int
}

func (d *memDevice) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return copy(p, d.data[off:]), nil
}

func (d *memDevice) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writes++
	return copy(d.data[off:], p), nil
}

func (d *memDevice) SyncContext(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.syncs++
	return nil
}

func (d *memDevice) Size() int64    { return int64(len(d.data)) }
func (d *memDevice) BlockSize() int { return 512 }

// A cache takes writes of any size and alignment, keeps them until Sync (or
// its write-back timer), and serves reads of what it holds without the
// device.
func ExampleNew() {
	dev := &memDevice{data: make([]byte, 1<<20)}
	opts := cache.DefaultOptions()
	opts.Size = 4 << 20
	opts.FlushInterval = -1 // write back only when asked: the output is then fixed
	c, err := cache.New(dev, opts)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(context.Background())

	if _, err := c.WriteAt([]byte("hello, LUN"), 1000); err != nil { // not block aligned
		log.Fatal(err)
	}
	fmt.Printf("device before Sync: %q\n", dev.data[1000:1010])
	if err := c.Sync(); err != nil { // write back, then SYNCHRONIZE CACHE
		log.Fatal(err)
	}
	fmt.Printf("device after Sync: %q (%d write, %d sync)\n", dev.data[1000:1010], dev.writes, dev.syncs)

	buf := make([]byte, 10)
	if _, err := c.ReadAt(buf, 1000); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("read back: %q\n", buf)
	// Output:
	// device before Sync: "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	// device after Sync: "hello, LUN" (1 write, 1 sync)
	// read back: "hello, LUN"
}
