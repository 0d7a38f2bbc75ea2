//go:build linux

package initiator

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawWritev is writev(2) without the runtime's system call bookkeeping, for a
// non-blocking socket: it never sleeps, and bookkeeping it as a blocking call
// lets sysmon hand the P to another thread whenever the call outlasts a
// sysmon tick, which a loopback send that runs the receiver's TCP stack
// often does.
// rawIOV bounds the segments of one call (its iovec array is on the stack).
const rawIOV = 64

func rawWritev(fd int, iov [][]byte) (int, error) {
	var vecs [rawIOV]unix.Iovec
	k := 0
	for _, b := range iov {
		if k == rawIOV {
			break // a short write: the caller writes the rest
		}
		if len(b) == 0 {
			continue
		}
		vecs[k].Base = &b[0]
		vecs[k].SetLen(len(b))
		k++
	}
	if k == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&vecs[0])), uintptr(k))
	if e != 0 {
		return int(n), e
	}
	return int(n), nil
}

// rawRead is read(2) of a non-blocking descriptor without the runtime's
// system call bookkeeping (see rawWritev): entering a system call wakes
// sysmon from its deep sleep, and sysmon then polls every 20 µs for a while;
// on a virtual machine those timer wake-ups cost as much CPU as a request.
func rawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}
