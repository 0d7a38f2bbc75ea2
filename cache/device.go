package cache

import (
	"context"
	"errors"
)

// Device is the block device the cache fronts (an iSCSI LUN in production, a file in tests).
type Device interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
	WriteAtContext(ctx context.Context, p []byte, off int64) (int, error)
	SyncContext(ctx context.Context) error // durable (SCSI SYNCHRONIZE CACHE)
	Size() int64
	BlockSize() int // logical block size, 512 or 4096; Device I/O offsets and lengths must be multiples of it
}

// DurableWriter is what a Device may offer beyond Device: a write for data
// that is about to be made durable anyway, which the device may send so that
// it is durable when it completes (SCSI FORCE UNIT ACCESS) and the sync that
// follows has nothing left to do. The cache writes a sync's data (fsync, and
// every write with Options.WriteThrough) this way when it is small (at most
// durableWriteMax bytes), and still calls SyncContext afterwards: the device
// decides whether a SYNCHRONIZE CACHE is needed (an initiator.LUN knows
// whether any write since the last one went without FUA).
type DurableWriter interface {
	WriteDurableAtContext(ctx context.Context, p []byte, off int64) (int, error)
}

// durableWriteMax bounds the bytes a sync writes with DurableWriter: one
// extra round trip is half the time of a 4 KiB fsync but nothing next to
// megabytes of writes, where a single cache flush at the end is less work
// for the target than a forced write to the medium per command.
const durableWriteMax = 1 << 20

var (
	// ErrOutOfRange is returned for writes that do not fit inside the device and
	// for negative offsets.
	ErrOutOfRange = errors.New("cache: offset out of range")
	// ErrClosed is returned, once Close has been called, by the methods that
	// do I/O or change the cache: ReadAt, WriteAt, Flush, Sync, Resize and
	// Close itself. Size, BlockSize and Stats have no error to return and
	// keep answering (Stats with the counters as Close left them);
	// Invalidate does nothing.
	ErrClosed = errors.New("cache: closed")
)
