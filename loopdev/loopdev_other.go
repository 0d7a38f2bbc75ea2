//go:build !linux

package loopdev

import "errors"

var errUnsupported = errors.New("no loop support: loop devices need Linux")

// Available returns nil if this process can attach loop devices; never here.
func Available() error { return errUnsupported }

// Attach binds a free loop device to the file at backing; only on Linux.
func Attach(backing string, opts Options) (*Device, error) { return nil, errUnsupported }

// Size returns the size of the device in bytes.
func (d *Device) Size() (int64, error) { return 0, errUnsupported }

// Busy reports whether the device is held exclusively.
func (d *Device) Busy() (bool, error) { return false, errUnsupported }

// Holders returns human-readable descriptions of what uses the device.
func (d *Device) Holders() []string { return nil }

// Detach unbinds the device from its backing file.
func (d *Device) Detach() error { return errUnsupported }

// Close closes our descriptor on the device without detaching it.
func (d *Device) Close() error { return nil }
