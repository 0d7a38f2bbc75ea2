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
