package fusefs

import (
	"context"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// statusNode is a read-only file under .iscsifs/ whose content is generated
// on each open, so that every reader sees one consistent snapshot.
type statusNode struct {
	node
	path string
	gen  func() ([]byte, error)
}

// statusHandle holds the snapshot taken at open.
type statusHandle struct {
	data []byte
}

var (
	_ = (fs.NodeOpener)((*statusNode)(nil))
	_ = (fs.NodeReader)((*statusNode)(nil))
	_ = (fs.NodeGetattrer)((*statusNode)(nil))
	_ = (fs.NodeStatfser)((*statusNode)(nil))
)

// Open takes the snapshot. The handle is direct I/O, so reads go by the
// snapshot's length, not by the size the kernel last saw.
func (n *statusNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	data, err := n.gen()
	if err != nil {
		return nil, 0, n.m.fail(ctx, "open", n.path, err)
	}
	return &statusHandle{data: data}, fuse.FOPEN_DIRECT_IO, 0
}

func (n *statusNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := f.(*statusHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(h.data[off:min(int64(len(h.data)), off+int64(len(dest)))]), 0
}

// Getattr reports the size of an open snapshot when there is one (fstat after
// open) and 0 otherwise, and asks the kernel not to cache it.
func (n *statusNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.m.fillAttr(&out.Attr, 0o444)
	if h, ok := f.(*statusHandle); ok {
		out.Size = uint64(len(h.data))
	}
	out.SetTimeout(time.Nanosecond) // 0 would mean "use the mount's 1 h"
	return 0
}
