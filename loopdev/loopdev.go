package loopdev

import (
	"errors"
	"fmt"
	"sync"
)

// ErrBusy is wrapped by the error of Device.Detach when the device is still
// in use: a file system is mounted on it, something holds it exclusively, or
// another process has it open.
var ErrBusy = errors.New("loop device busy")

// ErrClosed is wrapped by the errors of Device methods called after
// Device.Close: the process no longer holds the device, so it no longer owns
// it and must not act on it.
var ErrClosed = errors.New("loop device released by this process")

// Options for Attach.
type Options struct {
	// ReadOnly attaches with LO_FLAGS_READ_ONLY, and the backing file is
	// opened O_RDONLY.
	ReadOnly bool
	// BlockSize is the logical block size of the device: 512, 1024, 2048 or
	// 4096. 0 means 512.
	BlockSize int
	// DirectIO asks for LO_FLAGS_DIRECT_IO: the loop driver reads and writes
	// the backing file with O_DIRECT, without a page cache of its own over
	// it. When the backing file system cannot do O_DIRECT, Attach falls back
	// to buffered I/O; Device.DirectIO tells which one is in effect.
	DirectIO bool
	// Autoclear sets LO_FLAGS_AUTOCLEAR: the kernel detaches the device when
	// its last opener closes it (see Device.Close).
	Autoclear bool
}

// blockSize returns the logical block size opts ask for, or an error.
func (opts Options) blockSize() (int, error) {
	switch opts.BlockSize {
	case 0:
		return 512, nil
	case 512, 1024, 2048, 4096:
		return opts.BlockSize, nil
	}
	return 0, fmt.Errorf("block size %d: want 512, 1024, 2048 or 4096", opts.BlockSize)
}

// Device is a loop device this process attached. Its methods are safe for
// concurrent use.
type Device struct {
	path      string // "/dev/loopN"
	number    int    // N
	dev       uint64 // device number (major 7, minor from sysfs)
	backing   string // absolute path of the backing file
	autoclear bool   // attached with LO_FLAGS_AUTOCLEAR
	dio       bool   // direct I/O was on right after attach
	// sysBacking is /sys/block/loopN/loop/backing_file right after attach,
	// to tell our binding from a later one of someone else.
	sysBacking string

	mu       sync.Mutex
	fd       int  // our open descriptor on path; -1 once closed
	detached bool // Detach succeeded
}

// Path returns the device node, "/dev/loopN".
func (d *Device) Path() string { return d.path }

// Number returns N of /dev/loopN.
func (d *Device) Number() int { return d.number }

// Backing returns the absolute path of the backing file.
func (d *Device) Backing() string { return d.backing }

// DirectIO reports whether the loop driver does direct I/O on the backing
// file, as the kernel reported in /sys/block/loopN/loop/dio right after
// Attach. It is false when Options.DirectIO was not set, and also when it was
// but the backing file system cannot do O_DIRECT.
func (d *Device) DirectIO() bool { return d.dio }

// String returns "/dev/loopN (backing file)".
func (d *Device) String() string { return d.path + " (" + d.backing + ")" }

// errorf returns an error that names the device and its backing file.
func (d *Device) errorf(format string, args ...any) error {
	return fmt.Errorf("loopdev: %s (backing %s): %w", d.path, d.backing, fmt.Errorf(format, args...))
}
