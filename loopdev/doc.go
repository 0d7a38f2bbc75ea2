// Package loopdev attaches files to Linux loop devices, so that a file
// served by iscsifs (a LUN exposed as a file over FUSE) can be mounted as a
// block device.
//
// # Ownership
//
// Attach binds a free /dev/loopN to the backing file with LOOP_CONFIGURE and
// returns a Device that keeps an open file descriptor on /dev/loopN. The
// process owns the device for as long as it holds that descriptor: nothing in
// this package ever touches a loop device it did not attach itself, so loop
// devices of other programs on the machine are safe. A mount of the device
// owns it too: while a file system is mounted on it (or a device-mapper
// target, md array or swap area holds it), the device is "busy".
//
// Detach refuses while the device is busy and returns an error wrapping
// ErrBusy that names the holders ("mounted at /mnt/x"). This matters because
// the kernel itself never refuses LOOP_CLR_FD: when the device is still open
// elsewhere it only marks it for auto-clear and returns success, so the
// device silently stays bound until the last opener goes away. Detach checks
// for an exclusive holder first (an O_EXCL open fails with EBUSY), and if
// LOOP_CLR_FD was only deferred because some process has the device open
// without O_EXCL, it waits briefly, then undoes the deferral and reports
// ErrBusy too. When Detach returns nil the device is no longer bound to the
// file.
//
// With Options.Autoclear the kernel detaches the device by itself once its
// last opener is gone. A caller that wants the binding to end together with
// the mount attaches with Autoclear, mounts, then calls Device.Close: the
// process drops its descriptor, and the kernel detaches when the file system
// is unmounted (or at once, if nothing else has the device open).
//
// # Direct I/O
//
// Options.DirectIO asks the loop driver to read and write the backing file
// with O_DIRECT. Over a FUSE file this is what one wants, for two reasons:
//
//   - No double caching. Without direct I/O every block lives twice in
//     memory: once in the page cache of the file system mounted on the loop
//     device, and once more in the page cache of the backing FUSE file.
//
//   - No writeback of the loop's page cache through the daemon. With buffered
//     I/O, writes to the loop device become dirty pages of the FUSE file, and
//     the kernel writes those back by sending requests to the FUSE daemon.
//     Under memory pressure, reclaim waits for that writeback while the
//     daemon itself may need memory (or be throttled on dirty pages) to
//     serve it: the memory-reclaim deadlock path of loop over FUSE. With
//     direct I/O the loop worker sends each request straight to the daemon
//     and no dirty page of the backing file exists.
//
// Not every file system can do O_DIRECT (ramfs cannot, for one). The device
// is then attached with buffered I/O rather than not at all: Linux 6.18 does
// so by itself, and where a kernel refuses LOOP_CONFIGURE with EINVAL
// instead, Attach retries without direct I/O. Device.DirectIO reports what
// the kernel actually does, read from /sys/block/loopN/loop/dio.
//
// Attach uses LOOP_CONFIGURE (Linux 5.8 and later) and falls back to
// LOOP_SET_FD, LOOP_SET_STATUS64, LOOP_SET_BLOCK_SIZE and LOOP_SET_DIRECT_IO
// on kernels without it. Attaching needs CAP_SYS_ADMIN; Available tells
// whether this process can attach loop devices at all.
package loopdev
