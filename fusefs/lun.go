package fusefs

import (
	"context"
	"errors"
	"io"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// preferredIOSize is st_blksize of a LUN file. cp and other tools size their
// buffers from it (coreutils uses max(st_blksize, 128 KiB)); 1 MiB matches
// MaxWrite, so that each of their read(2)/write(2) calls is one FUSE request
// and, below, one large SCSI command.
const preferredIOSize = 1 << 20

// lunNode is the regular file of one LUN.
type lunNode struct {
	node
	path string
	file File
}

// lunHandle is one open(2) of a LUN file.
type lunHandle struct {
	writable bool
}

var (
	_ = (fs.NodeOpener)((*lunNode)(nil))
	_ = (fs.NodeGetattrer)((*lunNode)(nil))
	_ = (fs.NodeSetattrer)((*lunNode)(nil))
	_ = (fs.NodeReader)((*lunNode)(nil))
	_ = (fs.NodeWriter)((*lunNode)(nil))
	_ = (fs.NodeFlusher)((*lunNode)(nil))
	_ = (fs.NodeFsyncer)((*lunNode)(nil))
	_ = (fs.NodeAllocater)((*lunNode)(nil))
	_ = (fs.NodeLseeker)((*lunNode)(nil))
	_ = (fs.NodeStatfser)((*lunNode)(nil))
)

func (n *lunNode) readOnly() bool {
	return n.m.readOnly || n.file.ReadOnly()
}

// Open refuses write opens of read-only LUNs and opens every file with
// FOPEN_DIRECT_IO: the page cache would hold a second copy of what cache/
// already holds, and with direct I/O a read(2) or write(2) of up to 1 MiB
// reaches us as one request instead of being cut into pages and limited by
// the kernel's 128 KiB read-ahead. FOPEN_PARALLEL_DIRECT_WRITES lets the
// kernel send concurrent writes to one file instead of serialising them on
// the inode lock. Shared mmap still works because Mount asks for
// CAP_DIRECT_IO_ALLOW_MMAP (see mountOptions). Read-only opens get
// FOPEN_NOFLUSH: their close has nothing to write back.
func (n *lunNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	writable := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if writable && n.readOnly() {
		return nil, 0, syscall.EROFS
	}
	fuseFlags := uint32(fuse.FOPEN_DIRECT_IO)
	if writable {
		fuseFlags |= fuse.FOPEN_PARALLEL_DIRECT_WRITES
	} else {
		fuseFlags |= fuse.FOPEN_NOFLUSH
	}
	return &lunHandle{writable: writable}, fuseFlags, 0
}

func (n *lunNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fillAttr(&out.Attr)
	return 0
}

func (n *lunNode) fillAttr(a *fuse.Attr) {
	perm := uint32(0o644)
	if n.readOnly() {
		perm = 0o444
	}
	n.m.fillAttr(a, perm)
	size := n.file.Size()
	a.Size = uint64(size)
	a.Blocks = uint64((size + 511) / 512)
	a.Blksize = preferredIOSize
}

// Setattr allows only what leaves the file as it is: the size of a LUN is
// fixed (EINVAL, or EROFS on a read-only LUN), mode and owner are those of the
// mount (EPERM), and time changes are accepted and dropped because the files
// have no stored times (touch(1) keeps working).
func (n *lunNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var cur fuse.Attr
	n.fillAttr(&cur)
	if size, ok := in.GetSize(); ok && size != cur.Size {
		if n.readOnly() {
			return syscall.EROFS
		}
		return syscall.EINVAL
	}
	if mode, ok := in.GetMode(); ok && mode&0o7777 != cur.Mode&0o7777 {
		return syscall.EPERM
	}
	if uid, ok := in.GetUID(); ok && uid != cur.Uid {
		return syscall.EPERM
	}
	if gid, ok := in.GetGID(); ok && gid != cur.Gid {
		return syscall.EPERM
	}
	out.Attr = cur
	return 0
}

// Read serves reads of any size and alignment; at and after the end it
// returns no data.
func (n *lunNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	got, errno := n.readInto(ctx, dest, off)
	if errno != 0 {
		return nil, errno
	}
	return fuse.ReadResultData(dest[:got]), 0
}

// readInto is Read for both paths: go-fuse's (Read) and the serving loop's
// own (readFast). ctx is cancelled by the kernel's INTERRUPT.
func (n *lunNode) readInto(ctx context.Context, dest []byte, off int64) (int, syscall.Errno) {
	size := n.file.Size()
	if off >= size {
		return 0, 0
	}
	if int64(len(dest)) > size-off {
		dest = dest[:size-off]
	}
	got, err := transferFull(ctx, n.file.ReadAtContext, dest, off, true)
	if err != nil {
		return 0, n.m.fail(ctx, "read", n.path, err)
	}
	return got, 0
}

// Write is cut short at the end of the LUN; a write that starts there gets
// ENOSPC, like a block device. It runs to completion even if the writer is
// interrupted (see toErrno).
func (n *lunNode) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if n.readOnly() {
		return 0, syscall.EROFS
	}
	if len(data) == 0 {
		return 0, 0
	}
	size := n.file.Size()
	if off >= size {
		return 0, syscall.ENOSPC
	}
	if int64(len(data)) > size-off {
		data = data[:size-off]
	}
	wctx := context.WithoutCancel(ctx)
	done, err := transferFull(wctx, n.file.WriteAtContext, data, off, false)
	if err != nil {
		return 0, n.m.fail(wctx, "write", n.path, err)
	}
	return uint32(done), 0
}

// transferFull calls rw until p is done, an error, or (for reads, eofOK) the
// end of the device.
func transferFull(ctx context.Context, rw func(context.Context, []byte, int64) (int, error), p []byte, off int64, eofOK bool) (int, error) {
	done := 0
	for done < len(p) {
		k, err := rw(ctx, p[done:], off+int64(done))
		done += k
		switch {
		case eofOK && errors.Is(err, io.EOF):
			return done, nil
		case err != nil:
			return done, err
		case k == 0:
			return done, io.ErrNoProgress
		}
	}
	return done, nil
}

// Flush runs on every close(2) of a handle opened for writing. The kernel
// ignores what RELEASE returns, so this is where write-back errors reach the
// application (as the result of close).
func (n *lunNode) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno {
	if h, ok := f.(*lunHandle); ok && !h.writable {
		return 0
	}
	wctx := context.WithoutCancel(ctx)
	if err := n.file.Flush(wctx); err != nil {
		return n.m.fail(wctx, "flush", n.path, err)
	}
	return 0
}

// Fsync serves fsync(2) and fdatasync(2) alike: write back, then make durable.
func (n *lunNode) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	if n.readOnly() {
		return 0 // nothing can be dirty, and a write-protected LUN may refuse SYNCHRONIZE CACHE
	}
	wctx := context.WithoutCancel(ctx)
	if err := n.file.SyncContext(wctx); err != nil {
		return n.m.fail(wctx, "fsync", n.path, err)
	}
	return 0
}

// Allocate serves fallocate(2). PUNCH_HOLE|KEEP_SIZE deallocates through the
// File's Discarder (EOPNOTSUPP without one). Plain allocation, with or
// without KEEP_SIZE, succeeds on the existing range because a LUN's blocks
// always exist, and fails with ENOSPC past the end because the LUN cannot
// grow. ZERO_RANGE and the range-shifting modes get EOPNOTSUPP: treating
// ZERO_RANGE as a no-op would leave old data where the caller expects zeros,
// and callers such as qemu fall back to writing zeros themselves.
func (n *lunNode) Allocate(ctx context.Context, f fs.FileHandle, off, length uint64, mode uint32) syscall.Errno {
	if n.readOnly() {
		return syscall.EROFS
	}
	size := uint64(n.file.Size())
	switch {
	case mode == unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE:
		d, ok := n.file.(Discarder)
		if !ok {
			return syscall.EOPNOTSUPP
		}
		if off >= size || length == 0 {
			return 0 // no blocks there
		}
		length = min(length, size-off)
		wctx := context.WithoutCancel(ctx)
		if err := d.Discard(wctx, int64(off), int64(length)); err != nil {
			return n.m.fail(wctx, "discard", n.path, err)
		}
		return 0
	case mode&^unix.FALLOC_FL_KEEP_SIZE == 0:
		if off > size || length > size-off {
			return syscall.ENOSPC
		}
		return 0
	default:
		return syscall.EOPNOTSUPP
	}
}

// Lseek answers SEEK_DATA and SEEK_HOLE (other whence values never reach
// the file system): from the File's allocation map when it implements
// Seeker, else as for a fully allocated file (data everywhere, the only hole
// at the end), which is what lseek(2) allows.
func (n *lunNode) Lseek(ctx context.Context, f fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	size := uint64(n.file.Size())
	if off >= size {
		return 0, syscall.ENXIO
	}
	hole := whence == unix.SEEK_HOLE
	if whence != unix.SEEK_DATA && !hole {
		return 0, syscall.EINVAL
	}
	if sk, ok := n.file.(Seeker); ok {
		pos, err := sk.Seek(ctx, int64(off), hole)
		if err != nil {
			return 0, n.m.fail(ctx, "lseek", n.path, err)
		}
		if pos < 0 || uint64(pos) > size || (!hole && uint64(pos) == size) {
			return 0, syscall.ENXIO // no data after off
		}
		return uint64(pos), 0
	}
	if hole {
		return size, 0
	}
	return off, 0
}
