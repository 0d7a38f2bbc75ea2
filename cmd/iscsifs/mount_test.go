package main

import (
	"fmt"
	"syscall"
	"testing"

	"github.com/iscsifs/iscsifs/initiator"
	"github.com/iscsifs/iscsifs/initiator/scsi"
)

// TestErrnoMappers: the initiator's errors, wrapped as the cache and the
// lazy target directories wrap them, become the errnos a user expects.
func TestErrnoMappers(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want syscall.Errno // 0: no mapper claims it (fusefs then says EIO)
	}{
		{fmt.Errorf("cache: write back: %w", scsi.ErrWriteProtected), syscall.EROFS},
		{&initiator.RangeError{Off: 10, Len: 1, Size: 10}, syscall.ENOSPC},
		{fmt.Errorf("read: %w", scsi.ErrLBAOutOfRange), syscall.EINVAL},
		{scsi.ErrInvalidOpcode, syscall.EOPNOTSUPP},
		{&initiator.LoginError{Target: "iqn.x", Class: 2, Detail: 1}, syscall.EACCES},
		{&initiator.LoginError{Target: "iqn.x", Class: 2, Detail: 3}, syscall.ENOENT}, // not found
		{&initiator.LoginError{Target: "iqn.x", Class: 2, Detail: 4}, syscall.ENOENT}, // removed
		{&initiator.LoginError{Target: "iqn.x", Class: 3, Detail: 1}, 0},              // target busy
		{fmt.Errorf("plain"), 0},
	} {
		var got syscall.Errno
		for _, m := range errnoMappers {
			if e, ok := m(tc.err); ok {
				got = e
				break
			}
		}
		if got != tc.want {
			t.Errorf("%v: errno %v, want %v", tc.err, got, tc.want)
		}
	}
}
