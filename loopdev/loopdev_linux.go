//go:build linux

package loopdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// controlPath is the loop control device; a variable for tests.
var controlPath = "/dev/loop-control"

const (
	loopMajor = 7

	// attachAttempts bounds how many free devices Attach tries when other
	// processes keep taking the one LOOP_CTL_GET_FREE named.
	attachAttempts = 16
	// detachWait bounds how long Detach waits for processes that have the
	// device open (without O_EXCL) to close it.
	detachWait = time.Second
	// unbindWait bounds how long Detach waits for sysfs to show the device
	// unbound once our descriptor is closed.
	unbindWait = 2 * time.Second
	// pollInterval is the sleep between two checks while waiting.
	pollInterval = 10 * time.Millisecond
)

// useLoopConfigure is false only in tests, to exercise the LOOP_SET_FD way
// that kernels before 5.8 need.
var useLoopConfigure = true

// testHookFree, when a test sets it, runs between LOOP_CTL_GET_FREE and the
// attach of the device it named, to play another process taking it.
var testHookFree func(n int)

// errTaken marks an attach attempt that lost the free device to another
// process; Attach then tries the next free device.
var errTaken = errors.New("taken by another process")

// Available returns nil if this process can attach loop devices, otherwise an
// error whose message is one line that says why.
func Available() error {
	fd, err := unix.Open(controlPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return controlError(err)
	}
	unix.Close(fd)
	if !hasCapSysAdmin() {
		return errors.New("loop devices need root (CAP_SYS_ADMIN)")
	}
	return nil
}

// controlError explains a failed open of /dev/loop-control.
func controlError(err error) error {
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		return fmt.Errorf("loop devices need root (CAP_SYS_ADMIN): %s: %w", controlPath, err)
	}
	return fmt.Errorf("no loop support: %s: %w", controlPath, err)
}

// hasCapSysAdmin reports whether CAP_SYS_ADMIN is in the effective set of
// the calling thread.
func hasCapSysAdmin() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return os.Geteuid() == 0
	}
	return data[unix.CAP_SYS_ADMIN/32].Effective&(1<<(unix.CAP_SYS_ADMIN%32)) != 0
}

// Attach binds a free loop device to the file at backing and returns it,
// holding an open descriptor on it. If anything fails, no device stays bound.
func Attach(backing string, opts Options) (*Device, error) {
	bs, err := opts.blockSize()
	if err != nil {
		return nil, fmt.Errorf("loopdev: attach %s: %w", backing, err)
	}
	abs, err := filepath.Abs(backing)
	if err != nil {
		return nil, fmt.Errorf("loopdev: attach %s: %w", backing, err)
	}
	mode := unix.O_RDWR
	if opts.ReadOnly {
		mode = unix.O_RDONLY
	}
	bfd, err := unix.Open(abs, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loopdev: attach %s: open backing file: %w", abs, err)
	}
	// The kernel takes its own reference on the file; ours can go.
	defer unix.Close(bfd)
	var st unix.Stat_t
	if err := unix.Fstat(bfd, &st); err != nil {
		return nil, fmt.Errorf("loopdev: attach %s: %w", abs, err)
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG && t != unix.S_IFBLK {
		return nil, fmt.Errorf("loopdev: attach %s: not a regular file or block device", abs)
	}

	ctl, err := unix.Open(controlPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loopdev: attach %s: %w", abs, controlError(err))
	}
	defer unix.Close(ctl)

	var lost error
	for range attachAttempts {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loopdev: attach %s: LOOP_CTL_GET_FREE: %w", abs, err)
		}
		if testHookFree != nil {
			testHookFree(n)
		}
		d, err := attachTo(n, abs, bfd, opts, bs)
		if !errors.Is(err, errTaken) {
			return d, err
		}
		lost = err
	}
	return nil, fmt.Errorf("loopdev: attach %s: other processes took %d free loop devices in a row, last: %w", abs, attachAttempts, lost)
}

// attachTo binds /dev/loopN to the open backing file bfd. It returns an
// error wrapping errTaken when another process bound the device first.
func attachTo(n int, backing string, bfd int, opts Options, bs int) (*Device, error) {
	d := &Device{
		path:      "/dev/loop" + strconv.Itoa(n),
		number:    n,
		dev:       deviceNumber(n),
		backing:   backing,
		autoclear: opts.Autoclear,
		fd:        -1,
	}
	if err := ensureNode(d.path, d.dev); err != nil {
		return nil, d.errorf("%w", err)
	}
	fd, err := unix.Open(d.path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV) {
			// Removed with LOOP_CTL_REMOVE since LOOP_CTL_GET_FREE.
			return nil, d.errorf("open: %w (%w)", err, errTaken)
		}
		return nil, d.errorf("open: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Rdev != d.dev {
		unix.Close(fd)
		if err == nil {
			err = fmt.Errorf("is device %d:%d, want %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev), unix.Major(d.dev), unix.Minor(d.dev))
		}
		return nil, d.errorf("%w", err)
	}

	var flags uint32
	if opts.ReadOnly {
		flags |= unix.LO_FLAGS_READ_ONLY
	}
	if opts.Autoclear {
		flags |= unix.LO_FLAGS_AUTOCLEAR
	}
	if opts.DirectIO {
		flags |= unix.LO_FLAGS_DIRECT_IO
	}
	if err := bind(fd, bfd, flags, bs, backing); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EBUSY) {
			return nil, d.errorf("%w (%w)", err, errTaken)
		}
		return nil, d.errorf("attach: %w", err)
	}
	d.fd = fd
	d.dio = d.readDIO()
	d.sysBacking, _ = d.readSys("loop/backing_file")
	return d, nil
}

// bind binds the loop device open at fd to the backing file open at bfd.
// On failure the device is left unbound.
func bind(fd, bfd int, flags uint32, bs int, name string) error {
	if !useLoopConfigure {
		return bindLegacy(fd, bfd, flags, bs, name)
	}
	err := configure(fd, bfd, flags, bs, name)
	if errors.Is(err, unix.EINVAL) && flags&unix.LO_FLAGS_DIRECT_IO != 0 {
		// Some kernels refuse direct I/O that the backing file system cannot
		// do (6.18 silently does buffered I/O instead): do without.
		flags &^= unix.LO_FLAGS_DIRECT_IO
		err = configure(fd, bfd, flags, bs, name)
	}
	if !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL) {
		return err
	}
	// Before Linux 5.8 there is no LOOP_CONFIGURE and the ioctl fails with
	// EINVAL (or ENOTTY): bind in four steps.
	if lerr := bindLegacy(fd, bfd, flags, bs, name); lerr != nil {
		return fmt.Errorf("%v, then %w", err, lerr)
	}
	return nil
}

// configure binds with LOOP_CONFIGURE, in one step.
func configure(fd, bfd int, flags uint32, bs int, name string) error {
	cfg := unix.LoopConfig{Fd: uint32(bfd), Size: uint32(bs)}
	cfg.Info.Flags = flags
	setFileName(&cfg.Info, name)
	if err := unix.IoctlLoopConfigure(fd, &cfg); err != nil {
		return fmt.Errorf("LOOP_CONFIGURE: %w", err)
	}
	return nil
}

// bindLegacy binds with LOOP_SET_FD, LOOP_SET_STATUS64, LOOP_SET_BLOCK_SIZE
// and LOOP_SET_DIRECT_IO. LOOP_SET_FD makes the device read-only by itself
// when the backing file is open read-only.
func bindLegacy(fd, bfd int, flags uint32, bs int, name string) error {
	if err := unix.IoctlSetInt(fd, unix.LOOP_SET_FD, bfd); err != nil {
		return fmt.Errorf("LOOP_SET_FD: %w", err)
	}
	undo := func(step string, err error) error {
		if cerr := unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0); cerr != nil {
			return fmt.Errorf("%s: %w (and LOOP_CLR_FD: %v)", step, err, cerr)
		}
		return fmt.Errorf("%s: %w", step, err)
	}
	info := unix.LoopInfo64{Flags: flags & unix.LO_FLAGS_AUTOCLEAR}
	setFileName(&info, name)
	if err := unix.IoctlLoopSetStatus64(fd, &info); err != nil {
		return undo("LOOP_SET_STATUS64", err)
	}
	if bs != 512 {
		if err := unix.IoctlSetInt(fd, unix.LOOP_SET_BLOCK_SIZE, bs); err != nil {
			return undo("LOOP_SET_BLOCK_SIZE", err)
		}
	}
	if flags&unix.LO_FLAGS_DIRECT_IO != 0 {
		// A failure means buffered I/O, which Device.DirectIO reports.
		_ = unix.IoctlSetInt(fd, unix.LOOP_SET_DIRECT_IO, 1)
	}
	return nil
}

// setFileName stores name (cut to fit) as the informational lo_file_name.
func setFileName(info *unix.LoopInfo64, name string) {
	n := copy(info.File_name[:len(info.File_name)-1], name)
	info.File_name[n] = 0
}

// deviceNumber returns the device number of /dev/loopN, from sysfs (whose
// minor depends on the max_part parameter of the loop module).
func deviceNumber(n int) uint64 {
	b, err := os.ReadFile("/sys/block/loop" + strconv.Itoa(n) + "/dev")
	if err == nil {
		var major, minor uint32
		if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &major, &minor); err == nil {
			return unix.Mkdev(major, minor)
		}
	}
	return unix.Mkdev(loopMajor, uint32(n))
}

// ensureNode makes sure path is the block device node dev, creating it when
// it is missing (in containers /dev may lack nodes of new loop devices).
func ensureNode(path string, dev uint64) error {
	var st unix.Stat_t
	err := unix.Stat(path, &st)
	if errors.Is(err, unix.ENOENT) {
		err = unix.Mknod(path, unix.S_IFBLK|0o660, int(dev))
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("mknod: %w", err)
		}
		err = unix.Stat(path, &st)
	}
	if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != dev {
		return fmt.Errorf("node is not block device %d:%d", unix.Major(dev), unix.Minor(dev))
	}
	return nil
}

// sysPath returns the path of name under /sys/block/loopN.
func (d *Device) sysPath(name string) string {
	return "/sys/block/loop" + strconv.Itoa(d.number) + "/" + name
}

// readSys returns the trimmed content of name under /sys/block/loopN.
func (d *Device) readSys(name string) (string, error) {
	b, err := os.ReadFile(d.sysPath(name))
	return strings.TrimSpace(string(b)), err
}

// readDIO asks the kernel whether the device does direct I/O.
func (d *Device) readDIO() bool {
	if s, err := d.readSys("loop/dio"); err == nil {
		return s == "1"
	}
	info, err := unix.IoctlLoopGetStatus64(d.fd)
	return err == nil && info.Flags&unix.LO_FLAGS_DIRECT_IO != 0
}

// bound reports whether sysfs still shows the device bound to our file.
func (d *Device) bound() bool {
	s, err := d.readSys("loop/backing_file")
	return err == nil && (d.sysBacking == "" || s == d.sysBacking)
}

// Size returns the size of the device in bytes (BLKGETSIZE64).
func (d *Device) Size() (int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return 0, d.errorf("size: %w", ErrClosed)
	}
	var size uint64
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size)))
	if errno != 0 {
		return 0, d.errorf("BLKGETSIZE64: %w", errno)
	}
	return int64(size), nil
}

// Busy reports whether the device is held exclusively: a mounted file
// system, a device-mapper target, a swap area or any O_EXCL opener. It is
// true when an O_EXCL open of the device fails with EBUSY.
func (d *Device) Busy() (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return false, d.errorf("busy: %w", ErrClosed)
	}
	return d.busy()
}

func (d *Device) busy() (bool, error) {
	fd, err := unix.Open(d.path, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.EBUSY) {
		return true, nil
	}
	if err != nil {
		return false, d.errorf("open O_EXCL: %w", err)
	}
	unix.Close(fd)
	return false, nil
}

// Holders returns human-readable descriptions of what uses the device:
// "mounted at /mnt/x" for each mount of it in this mount namespace (from
// /proc/self/mountinfo), "held by dm-0" for each entry of
// /sys/block/loopN/holders, and "swap area" if it is in /proc/swaps. It is
// empty when nothing is found, and after Close or Detach.
func (d *Device) Holders() []string {
	d.mu.Lock()
	held := d.fd >= 0
	d.mu.Unlock()
	if !held {
		return nil
	}
	return d.holders()
}

func (d *Device) holders() []string {
	var out []string
	for _, mp := range mountPoints(d.dev, d.path) {
		out = append(out, "mounted at "+mp)
	}
	if entries, err := os.ReadDir(d.sysPath("holders")); err == nil {
		for _, e := range entries {
			out = append(out, "held by "+e.Name())
		}
	}
	if b, err := os.ReadFile("/proc/swaps"); err == nil {
		for line := range strings.Lines(string(b)) {
			if f := strings.Fields(line); len(f) > 0 && unescapeProc(f[0]) == d.path {
				out = append(out, "swap area")
			}
		}
	}
	return out
}

// mountPoints returns the mount points in /proc/self/mountinfo whose device
// number is dev or whose source is path.
func mountPoints(dev uint64, path string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	want := fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
	var out []string
	for line := range strings.Lines(string(b)) {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		match := f[2] == want
		for i := 6; !match && i+2 < len(f); i++ {
			if f[i] == "-" {
				match = unescapeProc(f[i+2]) == path
				break
			}
		}
		if match {
			out = append(out, unescapeProc(f[4]))
		}
	}
	return out
}

// procUnescaper undoes the escapes the kernel puts in paths of
// /proc/self/mountinfo and /proc/swaps: space, tab, newline and backslash
// become \040, \011, \012 and \134.
var procUnescaper = strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)

// unescapeProc returns the path that s, from /proc/self/mountinfo or
// /proc/swaps, stands for.
func unescapeProc(s string) string { return procUnescaper.Replace(s) }

// busyError returns an error wrapping ErrBusy that names the holders, or
// reason when none is found.
func (d *Device) busyError(reason string) error {
	what := strings.Join(d.holders(), ", ")
	if what == "" {
		what = reason
	}
	return d.errorf("detach: %w: %s", ErrBusy, what)
}

// Detach unbinds the device from its backing file and closes our descriptor.
// It refuses with an error wrapping ErrBusy while the device is in use:
// mounted or otherwise held exclusively, or open in another process (waited
// for up to a second). After a nil return the device is unbound. Detach
// after a successful Detach returns nil; after Close it returns an error
// wrapping ErrClosed, as the device may already belong to someone else.
func (d *Device) Detach() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.detached {
		return nil
	}
	if d.fd < 0 {
		return d.errorf("detach: %w", ErrClosed)
	}
	busy, err := d.busy()
	if err != nil {
		return err
	}
	if busy {
		return d.busyError("held exclusively by another process or mount namespace")
	}
	if err := d.clearFD(); err != nil {
		return err
	}
	err = unix.Close(d.fd)
	d.fd = -1
	d.detached = true
	if err != nil {
		return d.errorf("detach: close: %w", err)
	}
	return d.waitUnbound()
}

// clearFD issues LOOP_CLR_FD. The kernel never refuses it: when another
// opener exists it only sets LO_FLAGS_AUTOCLEAR and leaves the device bound,
// which LOOP_GET_STATUS64 still answers for. So clearFD retries until the
// kernel starts the teardown (LOOP_GET_STATUS64 fails with ENXIO; closing
// our descriptor finishes it), or else restores the flags and returns an
// error wrapping ErrBusy.
func (d *Device) clearFD() error {
	deadline := time.Now().Add(detachWait)
	for {
		err := unix.IoctlSetInt(d.fd, unix.LOOP_CLR_FD, 0)
		if errors.Is(err, unix.ENXIO) {
			return nil // not bound any more
		}
		if err != nil && !errors.Is(err, unix.EBUSY) {
			return d.errorf("detach: LOOP_CLR_FD: %w", err)
		}
		// EBUSY: old kernels refuse while another opener exists.
		var info *unix.LoopInfo64
		if err == nil {
			info, err = unix.IoctlLoopGetStatus64(d.fd)
			if errors.Is(err, unix.ENXIO) {
				return nil
			}
			if err != nil {
				return d.errorf("detach: LOOP_GET_STATUS64: %w", err)
			}
		}
		if time.Now().After(deadline) {
			reason := "open in another process"
			if info != nil && !d.autoclear && info.Flags&unix.LO_FLAGS_AUTOCLEAR != 0 {
				info.Flags &^= unix.LO_FLAGS_AUTOCLEAR
				if err := unix.IoctlLoopSetStatus64(d.fd, info); err != nil {
					reason += fmt.Sprintf(" (and clearing the deferred auto-clear failed: %v; it detaches on last close)", err)
				}
			}
			return d.busyError(reason)
		}
		time.Sleep(pollInterval)
	}
}

// waitUnbound waits until sysfs no longer shows the device bound to our
// file, for at most unbindWait.
func (d *Device) waitUnbound() error {
	deadline := time.Now().Add(unbindWait)
	for d.bound() {
		if time.Now().After(deadline) {
			return d.errorf("detach: still bound %v after LOOP_CLR_FD", unbindWait)
		}
		time.Sleep(pollInterval)
	}
	return nil
}

// Close closes our descriptor on the device without detaching it, and the
// process no longer owns the device. With Options.Autoclear the kernel
// detaches the device once its last opener is gone (at once, if nothing else
// has it open; when the file system mounted on it is unmounted, otherwise).
// Without Autoclear the device stays bound until someone detaches it.
// Close after Detach or Close does nothing.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	if err != nil {
		return d.errorf("close: %w", err)
	}
	return nil
}
