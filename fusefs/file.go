// Package fusefs exposes iSCSI LUNs as regular files through FUSE, using the
// node API of github.com/hanwen/go-fuse/v2/fs.
//
// The package knows nothing about iSCSI or the block cache: it serves any
// [File], and cmd/iscsifs wires a cache over a LUN into it. The tree only
// grows: one regular file per [Entry] (intermediate directories come from the
// entry paths), directories filled on first use ([LazyDir], e.g. one per
// target IQN of a portal mount) and, when [Options.StatusFiles] is set, a
// read-only ".iscsifs" directory.
//
// [Mount] mounts the tree and returns a [Server]; [Server.Wait] returns when
// it is unmounted, by [Server.Unmount] or from outside (fusermount3 -u).
//
// Requests are read by a loop of this package, not go-fuse's Server: it reads
// a non-blocking /dev/fuse through the Go netpoller, so no thread sleeps in a
// system call, and has go-fuse's ProtocolServer decode each request and call
// the node tree. A program that serves I/O from a mount and nothing else is
// then an event loop with GOMAXPROCS 1, which is what cmd/iscsifs runs (see
// the README, "The serving loop").
//
// The files behave like a block device rather than like files on a disk
// file system:
//   - directories listed in [Options.LazyDirs] get their files on first use;
//   - the size is the LUN's capacity and cannot change: truncate to another
//     size gives EINVAL (ftruncate to the current size succeeds, as qemu-img and
//     others do it), so open(O_TRUNC) fails too (use dd conv=notrunc);
//   - a write that starts at or past the end gives ENOSPC, a write that
//     crosses the end is cut short at the end (its next part then gets ENOSPC),
//     which is what writing to /dev/sdX does, so dd, cp and qemu-img stop as
//     they do at the end of a disk; EFBIG means "larger than a file size
//     limit" (RLIMIT_FSIZE, the file system's maximum), which is not the
//     problem;
//   - read-only LUNs and read-only mounts refuse writes and write opens with
//     EROFS (files are 0444; with allow_other, a user other than root who
//     opens a read-only LUN for writing gets EACCES from the kernel's mode
//     check first, as default_permissions is set);
//   - fsync and fdatasync call [File.SyncContext]; close calls [File.Flush] for
//     handles opened for writing, and both report write-back errors as errnos
//     (the kernel ignores the result of RELEASE, so that is the last chance);
//   - fallocate(PUNCH_HOLE|KEEP_SIZE) calls [Discarder.Discard].
package fusefs

import (
	"context"
)

// File is one LUN as the mount sees it (cmd/ passes a cache over a LUN).
// All methods may be called concurrently.
type File interface {
	// ReadAtContext reads len(p) bytes at off. It may return io.EOF with a short
	// count at the end of the LUN.
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
	// WriteAtContext writes p at off. It must copy p before returning: the FUSE
	// request buffer is reused as soon as the call returns.
	WriteAtContext(ctx context.Context, p []byte, off int64) (int, error)
	// Flush writes back dirty data (without SYNCHRONIZE CACHE).
	Flush(ctx context.Context) error
	// SyncContext writes back dirty data and makes it durable on the target.
	SyncContext(ctx context.Context) error
	// Size is the capacity in bytes. It is read on every GETATTR; after it
	// changes, call [Server.NotifySize] so that the kernel forgets the old one.
	Size() int64
	// ReadOnly reports a write-protected LUN (or a read-only cache).
	ReadOnly() bool
}

// Discarder is implemented by Files that can deallocate a range
// (SCSI UNMAP or WRITE SAME with UNMAP). fallocate(2) promises that a punched
// range reads back as zeros, so a File whose LUN does not guarantee that after
// an unmap (no LBPRZ) should write zeros instead or not implement Discarder.
type Discarder interface {
	Discard(ctx context.Context, off, length int64) error
}

// Seeker is implemented by Files that know which ranges are allocated, for
// lseek(2) SEEK_DATA and SEEK_HOLE. Seek returns the first offset at or after
// off that is data (hole false) or a hole (hole true); Size() when there is
// none (for data: no data after off).
type Seeker interface {
	Seek(ctx context.Context, off int64, hole bool) (int64, error)
}

// LazyDir is a directory of the mount whose files are made the first time
// someone looks into it (a lookup of a name in it, or a listing), e.g. one
// per target of a portal mount, so that a session logs in only when its
// target is used. Load returns the files, with paths relative to the
// directory; when it fails the lookup or listing fails with the mapped errno
// and the next one calls Load again.
type LazyDir struct {
	Path string
	Load func(ctx context.Context) ([]Entry, error)
}

// Entry is one file of the mount.
type Entry struct {
	// Path is slash-separated and relative, e.g. "lun1" or
	// "iqn.2026-11.lab:plain/lun1". Directories are created as needed.
	Path string
	File File
}
