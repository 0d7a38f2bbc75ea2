package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/iscsifs/iscsifs/loopdev"
)

// devices are the loop devices of a mount started with --attach: one per
// LUN file and one per partition file, owned by the mount (it holds each
// device open; autoclear detaches one whose daemon died once nothing else
// holds it). Partition devices follow the partition table.
type devices struct {
	dir      string // the mountpoint
	readOnly bool   // --read-only: every device read-only
	log      zerolog.Logger
	out      io.Writer // one line per device: "lun1 /dev/loop3"

	mu    sync.Mutex
	owned map[string]*loopdev.Device // by file path in the mount
}

// devSlot is where a file keeps its device.
type devSlot = atomic.Pointer[loopdev.Device]

func newDevices(dir string, readOnly bool, log zerolog.Logger, out io.Writer) *devices {
	return &devices{dir: dir, readOnly: readOnly, log: log, out: out, owned: map[string]*loopdev.Device{}}
}

// attach gives the file at path (in the mount) a loop device with the LUN's
// block size, direct I/O (the kernel must not keep a second copy of what the
// cache holds, nor write back a page cache through this daemon) and
// autoclear.
func (d *devices) attach(path string, slot *devSlot, readOnly bool, blockSize int) error {
	dev, err := loopdev.Attach(filepath.Join(d.dir, path), loopdev.Options{
		ReadOnly:  readOnly || d.readOnly,
		BlockSize: blockSize,
		DirectIO:  true,
		Autoclear: true,
	})
	if err != nil {
		return fmt.Errorf("attach %s: %w", path, err)
	}
	if !dev.DirectIO() {
		d.log.Warn().Str("file", path).Str("device", dev.Path()).Msg("loop device without direct I/O")
	}
	d.mu.Lock()
	d.owned[path] = dev
	d.mu.Unlock()
	slot.Store(dev)
	d.log.Info().Str("file", path).Str("device", dev.Path()).Bool("read_only", readOnly || d.readOnly).Int("block_size", blockSize).Msg("attached")
	fmt.Fprintf(d.out, "%s %s\n", path, dev.Path())
	return nil
}

// attachFiles attaches each LUN file and each of its partition files. On
// failure it detaches what it attached: nothing stays half-attached.
func (d *devices) attachFiles(files []*lunFile) error {
	for _, f := range files {
		if f.dev.Load() != nil {
			continue
		}
		if err := d.attach(f.path, &f.dev, f.ReadOnly(), f.lun.BlockSize()); err != nil {
			return errors.Join(err, d.detachAll())
		}
		for _, p := range f.partitions() {
			if p.dev.Load() != nil {
				continue
			}
			if err := d.attach(p.path, &p.dev, p.ReadOnly(), f.lun.BlockSize()); err != nil {
				return errors.Join(err, d.detachAll())
			}
		}
	}
	return nil
}

// follow detaches the devices of partitions that went away and attaches the
// new ones (rescan only removes a partition whose device is free).
func (d *devices) follow(gone, added []*partFile) {
	for _, p := range gone {
		if dev := p.dev.Load(); dev != nil {
			if err := d.detach(p.path, dev); err != nil {
				d.log.Warn().Err(err).Str("file", p.path).Msg("detaching the device of a removed partition")
			}
		}
	}
	for _, p := range added {
		if err := d.attach(p.path, &p.dev, p.ReadOnly(), p.lun.lun.BlockSize()); err != nil {
			d.log.Error().Err(err).Str("file", p.path).Msg("attaching a new partition")
		}
	}
}

func (d *devices) detach(path string, dev *loopdev.Device) error {
	if err := dev.Detach(); err != nil {
		return err
	}
	d.mu.Lock()
	if d.owned[path] == dev {
		delete(d.owned, path)
	}
	d.mu.Unlock()
	d.log.Info().Str("file", path).Str("device", dev.Path()).Msg("detached")
	return nil
}

// busy describes each device that something holds (a mounted file system),
// e.g. "lun1-part1 /dev/loop4 (mounted at /mnt/x)"; none means all are free.
func (d *devices) busy() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var held []string
	for path, dev := range d.owned {
		if b, err := dev.Busy(); b || err != nil {
			what := strings.Join(dev.Holders(), ", ")
			if err != nil {
				what = err.Error()
			}
			held = append(held, fmt.Sprintf("%s %s (%s)", path, dev.Path(), what))
		}
	}
	return held
}

// detachAll detaches every device (partitions first is not needed: each is
// a device of its own over a file of the mount).
func (d *devices) detachAll() error {
	d.mu.Lock()
	owned := d.owned
	d.owned = map[string]*loopdev.Device{}
	d.mu.Unlock()
	var errs []error
	for path, dev := range owned {
		if err := dev.Detach(); err != nil {
			errs = append(errs, fmt.Errorf("detach %s (%s): %w", dev.Path(), path, err))
			continue
		}
		d.log.Info().Str("file", path).Str("device", dev.Path()).Msg("detached")
	}
	return errors.Join(errs...)
}

// waitFree returns once no device is busy, logging once what holds them and
// again whenever that changes; stop ends the wait early (a second signal).
func (d *devices) waitFree(stop <-chan struct{}) bool {
	last := ""
	for {
		held := d.busy()
		if len(held) == 0 {
			return true
		}
		if s := strings.Join(held, "; "); s != last {
			d.log.Warn().Strs("busy", held).Msg("not unmounting: devices are in use; serving until they are free (umount the file systems on them)")
			last = s
		}
		select {
		case <-stop:
			return false
		case <-time.After(time.Second):
		}
	}
}

// deviceOf returns the device path of a file, "" if none.
func deviceOf(slot *devSlot) string {
	if dev := slot.Load(); dev != nil {
		return dev.Path()
	}
	return ""
}
