//go:build !linux

package initiator

import (
	"syscall"

	"golang.org/x/sys/unix"
)

func rawWritev(fd int, iov [][]byte) (int, error) { return unix.Writev(fd, iov) }

func rawRead(fd int, p []byte) (int, error) { return syscall.Read(fd, p) }
