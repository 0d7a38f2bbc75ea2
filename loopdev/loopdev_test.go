//go:build linux

package loopdev

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const backingSize = 64 << 20

// requireLoop skips the test when this process cannot attach loop devices.
func requireLoop(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		unavailable(t, err.Error())
	} else if os.Geteuid() != 0 {
		unavailable(t, "not root")
	}
}

// requireTool returns the path of a program the test needs, and skips the
// test when it is missing.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		unavailable(t, err.Error())
	}
	return p
}

// unavailable skips the test for what it lacks, or fails it under CI=true,
// where loop devices and the tools must be there.
func unavailable(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("required under CI=true: %s", why)
	}
	t.Skipf("skipping: %s (this test attaches loop devices)", why)
}

// newBacking creates a sparse file of size bytes in dir.
func newBacking(t *testing.T, dir string, size int64) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "backing-*.img")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// attach attaches backing and registers a cleanup that leaves nothing
// mounted or attached, whatever the test did.
func attach(t *testing.T, backing string, opts Options) *Device {
	t.Helper()
	d, err := Attach(backing, opts)
	if err != nil {
		t.Fatalf("Attach(%s, %+v): %v", backing, opts, err)
	}
	t.Cleanup(func() { cleanupDevice(t, d) })
	return d
}

// cleanupDevice unmounts (lazily) whatever is still mounted from d while we
// own it, then detaches it, with a bare LOOP_CLR_FD if Detach refuses.
func cleanupDevice(t *testing.T, d *Device) {
	d.mu.Lock()
	held := d.fd >= 0
	d.mu.Unlock()
	if !held {
		return // detached, or released with Close: not ours any more
	}
	for _, mp := range mountPoints(d.dev, d.path) {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			t.Errorf("cleanup: umount -l %s: %v", mp, err)
		}
	}
	err := d.Detach()
	if err == nil {
		return
	}
	t.Errorf("cleanup: Detach %s: %v; forcing LOOP_CLR_FD", d, err)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd >= 0 {
		if err := unix.IoctlSetInt(d.fd, unix.LOOP_CLR_FD, 0); err != nil {
			t.Errorf("cleanup: LOOP_CLR_FD %s: %v", d, err)
		}
		unix.Close(d.fd)
		d.fd = -1
	}
}

// mount mounts dev on a new directory with a cleanup that lazily unmounts
// it if the test did not, and returns the directory.
func mount(t *testing.T, dev, fstype string, flags uintptr) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount(dev, dir, fstype, flags, ""); err != nil {
		t.Fatalf("mount %s on %s: %v", dev, dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("cleanup: umount -l %s: %v", dir, err)
		}
	})
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	return real
}

// mkfs makes an ext4 file system on dev.
func mkfs(t *testing.T, dev string) {
	t.Helper()
	out, err := exec.Command(requireTool(t, "mkfs.ext4"), "-q", "-F", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4 %s: %v\n%s", dev, err, out)
	}
}

func sysfs(t *testing.T, d *Device, name string) string {
	t.Helper()
	s, err := d.readSys(name)
	if err != nil {
		t.Fatalf("%s: %v", d.sysPath(name), err)
	}
	return s
}

// waitUnboundT waits up to 2s for the device to be unbound from our file.
func waitUnboundT(t *testing.T, d *Device) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for d.bound() {
		if time.Now().After(deadline) {
			t.Fatalf("%s still bound to %s", d.Path(), d.sysBacking)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// statusFlags returns lo_flags of the device through our descriptor.
func statusFlags(t *testing.T, d *Device) uint32 {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	info, err := unix.IoctlLoopGetStatus64(d.fd)
	if err != nil {
		t.Fatalf("LOOP_GET_STATUS64 %s: %v", d, err)
	}
	return info.Flags
}

// alignedBuf returns a page-aligned buffer of n bytes, fit for O_DIRECT.
func alignedBuf(t *testing.T, n int) []byte {
	t.Helper()
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

func fill(b []byte, seed byte) {
	for i := range b {
		b[i] = seed + byte(i*7+i/511)
	}
}

// boundTo lists the loop devices that sysfs shows bound to path.
func boundTo(t *testing.T, path string) []string {
	t.Helper()
	files, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.TrimSpace(string(b)) == path {
			out = append(out, f)
		}
	}
	return out
}

// checkDevice checks block size, size, direct I/O and that data goes both
// ways between the device (with O_DIRECT) and the backing file.
func checkDevice(t *testing.T, d *Device, backing string, bs int, wantDIO bool) {
	t.Helper()
	if got := sysfs(t, d, "queue/logical_block_size"); got != fmt.Sprint(bs) {
		t.Errorf("logical_block_size = %s, want %d", got, bs)
	}
	size, err := d.Size()
	if err != nil {
		t.Fatal(err)
	}
	if size != backingSize {
		t.Errorf("BLKGETSIZE64 = %d, want %d", size, backingSize)
	}
	dio := sysfs(t, d, "loop/dio")
	if d.DirectIO() != (dio == "1") {
		t.Errorf("DirectIO() = %v, but loop/dio is %s", d.DirectIO(), dio)
	}
	if d.DirectIO() != wantDIO {
		t.Errorf("DirectIO() = %v, want %v", d.DirectIO(), wantDIO)
	}

	dev, err := os.OpenFile(d.Path(), os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	file, err := os.OpenFile(backing, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()

	// Device to file.
	n := 3 * bs
	out, in := alignedBuf(t, n), alignedBuf(t, n)
	fill(out, 1)
	off := int64(5<<20 + 7*bs)
	if _, err := dev.WriteAt(out, off); err != nil {
		t.Fatalf("write %s at %d: %v", d.Path(), off, err)
	}
	if _, err := file.ReadAt(in, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(in, out) {
		t.Errorf("write through %s at %d did not reach the file at %d", d.Path(), off, off)
	}

	// File to device.
	fill(out, 99)
	off = int64(backingSize - 2*n)
	if _, err := file.WriteAt(out, off); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.ReadAt(in, off); err != nil {
		t.Fatalf("read %s at %d: %v", d.Path(), off, err)
	}
	if !bytes.Equal(in, out) {
		t.Errorf("write to the file at %d not seen through %s", off, d.Path())
	}
}

func TestAttach(t *testing.T) {
	requireLoop(t)
	for _, bs := range []int{512, 4096} {
		for _, dio := range []bool{false, true} {
			t.Run(fmt.Sprintf("bs%d/dio=%v", bs, dio), func(t *testing.T) {
				backing := newBacking(t, t.TempDir(), backingSize)
				d := attach(t, backing, Options{BlockSize: bs, DirectIO: dio})
				t.Logf("%s: direct I/O asked %v, on %v", d, dio, d.DirectIO())
				if !strings.HasPrefix(d.Path(), "/dev/loop") || d.Path() != fmt.Sprintf("/dev/loop%d", d.Number()) {
					t.Errorf("Path() = %q, Number() = %d", d.Path(), d.Number())
				}
				if d.Backing() != backing {
					t.Errorf("Backing() = %q, want %q", d.Backing(), backing)
				}
				if got := sysfs(t, d, "loop/backing_file"); got != backing {
					t.Errorf("loop/backing_file = %q, want %q", got, backing)
				}
				// Direct I/O on a regular file of a local disk file system
				// is expected to work; elsewhere only what sysfs says counts.
				checkDevice(t, d, backing, bs, d.DirectIO() && dio)
				if !dio && d.DirectIO() {
					t.Error("direct I/O on without Options.DirectIO")
				}
				if err := d.Detach(); err != nil {
					t.Fatal(err)
				}
				if d.bound() {
					t.Errorf("%s still bound after Detach", d.Path())
				}
				if err := d.Detach(); err != nil {
					t.Errorf("second Detach: %v", err)
				}
			})
		}
	}
}

func TestAttachReadOnly(t *testing.T) {
	requireLoop(t)
	backing := newBacking(t, t.TempDir(), backingSize)
	d := attach(t, backing, Options{ReadOnly: true, BlockSize: 4096, DirectIO: true})
	if got := sysfs(t, d, "ro"); got != "1" {
		t.Errorf("ro = %s, want 1", got)
	}
	if statusFlags(t, d)&unix.LO_FLAGS_READ_ONLY == 0 {
		t.Error("LO_FLAGS_READ_ONLY not set")
	}
	buf := alignedBuf(t, 4096)
	fill(buf, 3)
	f, err := os.OpenFile(d.Path(), os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		if !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM) {
			t.Fatalf("open %s O_RDWR: %v, want EROFS, EACCES or EPERM", d.Path(), err)
		}
		t.Logf("open O_RDWR refused: %v", err)
	} else {
		defer f.Close()
		_, err := f.WriteAt(buf, 0)
		if !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.EPERM) {
			t.Fatalf("write to read-only %s: %v, want EROFS or EPERM", d.Path(), err)
		}
		t.Logf("write refused: %v", err)
	}
	// Reads work, and the file was not written.
	r, err := os.OpenFile(d.Path(), os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Error("read-only device shows data that was never written")
	}
}

// TestDirectIOFallback attaches a file of ramfs, which cannot do O_DIRECT.
func TestDirectIOFallback(t *testing.T) {
	requireLoop(t)
	dir := t.TempDir()
	if err := unix.Mount("ramfs", dir, "ramfs", 0, ""); err != nil {
		t.Skipf("skipping: cannot mount ramfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	backing := newBacking(t, dir, backingSize)
	d := attach(t, backing, Options{DirectIO: true, BlockSize: 4096})
	if d.DirectIO() {
		t.Errorf("DirectIO() = true on ramfs")
	}
	checkDevice(t, d, backing, 4096, false)
}

// TestLegacyAttach binds the way kernels before LOOP_CONFIGURE need.
func TestLegacyAttach(t *testing.T) {
	requireLoop(t)
	useLoopConfigure = false
	t.Cleanup(func() { useLoopConfigure = true })
	backing := newBacking(t, t.TempDir(), backingSize)
	d := attach(t, backing, Options{BlockSize: 4096, DirectIO: true})
	checkDevice(t, d, backing, 4096, d.DirectIO())
	if statusFlags(t, d)&unix.LO_FLAGS_AUTOCLEAR != 0 {
		t.Error("LO_FLAGS_AUTOCLEAR set without Options.Autoclear")
	}

	ro := attach(t, backing, Options{ReadOnly: true, Autoclear: true})
	if got := sysfs(t, ro, "ro"); got != "1" {
		t.Errorf("ro = %s, want 1", got)
	}
	if statusFlags(t, ro)&unix.LO_FLAGS_AUTOCLEAR == 0 {
		t.Error("LO_FLAGS_AUTOCLEAR not set")
	}
	for _, dev := range []*Device{d, ro} {
		if err := dev.Detach(); err != nil {
			t.Error(err)
		}
	}
}

func TestAttachErrors(t *testing.T) {
	requireLoop(t)
	dir := t.TempDir()
	backing := newBacking(t, dir, backingSize)
	for _, tc := range []struct {
		path string
		opts Options
		want string
	}{
		{backing, Options{BlockSize: 1000}, "block size 1000"},
		{backing, Options{BlockSize: 8192}, "block size 8192"},
		{filepath.Join(dir, "missing"), Options{}, "no such file"},
		{dir, Options{ReadOnly: true}, "not a regular file"},
	} {
		d, err := Attach(tc.path, tc.opts)
		if err == nil {
			cleanupDevice(t, d)
			t.Errorf("Attach(%s, %+v) succeeded", tc.path, tc.opts)
			continue
		}
		if !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Attach(%s, %+v): %v; want it to name the file and say %q", tc.path, tc.opts, err, tc.want)
		}
	}
	if b := boundTo(t, backing); len(b) != 0 {
		t.Errorf("failed attaches left %v bound", b)
	}
}

// TestBusy mounts a file system on the device: Detach must refuse, and the
// kernel must not have been told to detach later behind our back.
func TestBusy(t *testing.T) {
	requireLoop(t)
	backing := newBacking(t, t.TempDir(), backingSize)
	d := attach(t, backing, Options{DirectIO: true, BlockSize: 4096})
	mkfs(t, d.Path())
	if busy, err := d.Busy(); err != nil || busy {
		t.Fatalf("Busy() before mount = %v, %v", busy, err)
	}
	if h := d.Holders(); len(h) != 0 {
		t.Errorf("Holders() before mount = %q", h)
	}

	mnt := mount(t, d.Path(), "ext4", 0)
	if err := os.WriteFile(filepath.Join(mnt, "hello"), []byte("hello, loop"), 0o644); err != nil {
		t.Fatal(err)
	}
	busy, err := d.Busy()
	if err != nil || !busy {
		t.Fatalf("Busy() while mounted = %v, %v", busy, err)
	}
	if h := d.Holders(); !slices.Contains(h, "mounted at "+mnt) {
		t.Errorf("Holders() = %q, want it to contain %q", h, "mounted at "+mnt)
	}
	err = d.Detach()
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("Detach while mounted: %v, want ErrBusy", err)
	}
	for _, s := range []string{d.Path(), backing, "mounted at " + mnt} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("Detach error %q does not mention %q", err, s)
		}
	}
	t.Logf("Detach while mounted: %v", err)
	if !d.bound() {
		t.Fatal("device unbound by a refused Detach")
	}
	if statusFlags(t, d)&unix.LO_FLAGS_AUTOCLEAR != 0 {
		t.Error("refused Detach left LO_FLAGS_AUTOCLEAR set (a silently deferred detach)")
	}

	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	if busy, err := d.Busy(); err != nil || busy {
		t.Errorf("Busy() after umount = %v, %v", busy, err)
	}
	if err := d.Detach(); err != nil {
		t.Fatalf("Detach after umount: %v", err)
	}
	if d.bound() {
		t.Errorf("%s still bound after Detach", d.Path())
	}
	if _, err := d.Busy(); !errors.Is(err, ErrClosed) {
		t.Errorf("Busy() after Detach: %v, want ErrClosed", err)
	}

	// The file system reached the file: attach it again read-only.
	ro := attach(t, backing, Options{ReadOnly: true})
	mnt = mount(t, ro.Path(), "ext4", unix.MS_RDONLY)
	got, err := os.ReadFile(filepath.Join(mnt, "hello"))
	if err != nil || string(got) != "hello, loop" {
		t.Errorf("reading back through a new loop device: %q, %v", got, err)
	}
}

// TestBusyOtherOpener has another descriptor open on the device, without
// O_EXCL: Busy is false, but Detach must still not leave a deferred detach.
func TestBusyOtherOpener(t *testing.T) {
	requireLoop(t)
	backing := newBacking(t, t.TempDir(), backingSize)
	d := attach(t, backing, Options{})
	other, err := os.Open(d.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if busy, err := d.Busy(); err != nil || busy {
		t.Fatalf("Busy() = %v, %v with a non-exclusive opener", busy, err)
	}
	err = d.Detach()
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("Detach with another opener: %v, want ErrBusy", err)
	}
	t.Logf("Detach with another opener: %v", err)
	if !d.bound() {
		t.Fatal("device unbound by a refused Detach")
	}
	if statusFlags(t, d)&unix.LO_FLAGS_AUTOCLEAR != 0 {
		t.Error("refused Detach left LO_FLAGS_AUTOCLEAR set (a silently deferred detach)")
	}

	// The other opener goes away while Detach waits.
	time.AfterFunc(200*time.Millisecond, func() { other.Close() })
	if err := d.Detach(); err != nil {
		t.Fatalf("Detach as the other opener closes: %v", err)
	}
	if d.bound() {
		t.Errorf("%s still bound after Detach", d.Path())
	}
}

func TestAutoclear(t *testing.T) {
	requireLoop(t)
	backing := newBacking(t, t.TempDir(), backingSize)

	t.Run("close", func(t *testing.T) {
		d := attach(t, backing, Options{Autoclear: true})
		if statusFlags(t, d)&unix.LO_FLAGS_AUTOCLEAR == 0 {
			t.Fatal("LO_FLAGS_AUTOCLEAR not set")
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		waitUnboundT(t, d)
		if err := d.Detach(); !errors.Is(err, ErrClosed) {
			t.Errorf("Detach after Close: %v, want ErrClosed", err)
		}
		if err := d.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})

	t.Run("mounted", func(t *testing.T) {
		d := attach(t, backing, Options{Autoclear: true, DirectIO: true})
		mkfs(t, d.Path())
		mnt := mount(t, d.Path(), "ext4", 0)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		if !d.bound() {
			t.Fatal("autoclear device detached while still mounted")
		}
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Fatal(err)
		}
		waitUnboundT(t, d)
	})

	// Detach works the same with Autoclear.
	t.Run("detach", func(t *testing.T) {
		d := attach(t, backing, Options{Autoclear: true})
		if err := d.Detach(); err != nil {
			t.Fatal(err)
		}
		if d.bound() {
			t.Errorf("%s still bound after Detach", d.Path())
		}
	})
}

// TestConcurrentAttach attaches from several goroutines at once, so that
// they race for the same free device and some must retry.
func TestConcurrentAttach(t *testing.T) {
	requireLoop(t)
	const n = 4
	dir := t.TempDir()
	var files []string
	for range n {
		files = append(files, newBacking(t, dir, backingSize))
	}
	var tries atomic.Int64
	testHookFree = func(int) { tries.Add(1) }
	t.Cleanup(func() {
		testHookFree = nil
		t.Logf("%d attaches took %d free devices (retries after losing a race: %d)", 5*n, tries.Load(), tries.Load()-5*n)
	})
	for round := range 5 {
		devs := make([]*Device, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				devs[i], errs[i] = Attach(files[i], Options{DirectIO: i%2 == 0, BlockSize: 512 << (i % 4)})
			})
		}
		close(start)
		wg.Wait()
		for i, d := range devs {
			if d != nil {
				t.Cleanup(func() { cleanupDevice(t, d) })
			}
			if errs[i] != nil {
				t.Fatalf("round %d: Attach %s: %v", round, files[i], errs[i])
			}
		}
		seen := map[string]string{}
		for i, d := range devs {
			if prev, ok := seen[d.Path()]; ok {
				t.Fatalf("round %d: %s attached to both %s and %s", round, d.Path(), prev, files[i])
			}
			seen[d.Path()] = files[i]
			if got := sysfs(t, d, "loop/backing_file"); got != files[i] {
				t.Errorf("round %d: %s backs %s, want %s", round, d.Path(), got, files[i])
			}
			if got := sysfs(t, d, "queue/logical_block_size"); got != fmt.Sprint(512<<(i%4)) {
				t.Errorf("round %d: %s block size %s, want %d", round, d.Path(), got, 512<<(i%4))
			}
		}
		var dwg sync.WaitGroup
		for _, d := range devs {
			dwg.Go(func() {
				if err := d.Detach(); err != nil {
					t.Errorf("round %d: %v", round, err)
				}
			})
		}
		dwg.Wait()
	}
}

func TestUnescapeProc(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/plain`:          "/mnt/plain",
		`/mnt/a\040b`:         "/mnt/a b",
		`/mnt/tab\011x\134y`:  "/mnt/tab\tx\\y",
		`/mnt/trailing\04`:    `/mnt/trailing\04`,
		`/mnt/not\999octal\\`: `/mnt/not\999octal\\`,
		`/mnt/nl\012`:         "/mnt/nl\n",
		`/mnt/bs\134040`:      `/mnt/bs\040`,
	} {
		if got := unescapeProc(in); got != want {
			t.Errorf("unescapeProc(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOptionsBlockSize(t *testing.T) {
	for bs, want := range map[int]int{0: 512, 512: 512, 1024: 1024, 2048: 2048, 4096: 4096, 256: 0, 3000: 0, 8192: 0, -512: 0} {
		got, err := Options{BlockSize: bs}.blockSize()
		if got != want || (err == nil) != (want != 0) {
			t.Errorf("BlockSize %d: %d, %v; want %d", bs, got, err, want)
		}
	}
}

// TestAttachRetriesTakenDevice binds the device LOOP_CTL_GET_FREE named
// before Attach gets to it, as another process would: Attach must move on to
// another device and leave the taken one alone.
func TestAttachRetriesTakenDevice(t *testing.T) {
	requireLoop(t)
	dir := t.TempDir()
	theirs, ours := newBacking(t, dir, backingSize), newBacking(t, dir, backingSize)
	taken := -1
	testHookFree = func(n int) {
		if taken >= 0 {
			return
		}
		taken = n
		path := fmt.Sprintf("/dev/loop%d", n)
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("open %s: %v", path, err)
		}
		bfd, err := unix.Open(theirs, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
		defer unix.Close(bfd)
		if err := unix.IoctlLoopConfigure(fd, &unix.LoopConfig{Fd: uint32(bfd), Size: 512}); err != nil {
			unix.Close(fd)
			t.Fatalf("LOOP_CONFIGURE %s: %v", path, err)
		}
		t.Cleanup(func() {
			if err := unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0); err != nil {
				t.Errorf("cleanup: LOOP_CLR_FD %s: %v", path, err)
			}
			unix.Close(fd)
		})
	}
	t.Cleanup(func() { testHookFree = nil })

	d := attach(t, ours, Options{})
	if taken < 0 {
		t.Fatal("hook never ran")
	}
	if d.Number() == taken {
		t.Fatalf("Attach used /dev/loop%d, which another opener had bound", taken)
	}
	if got, _ := os.ReadFile(fmt.Sprintf("/sys/block/loop%d/loop/backing_file", taken)); strings.TrimSpace(string(got)) != theirs {
		t.Errorf("/dev/loop%d now backs %q, want %q (untouched)", taken, got, theirs)
	}
	if got := sysfs(t, d, "loop/backing_file"); got != ours {
		t.Errorf("%s backs %q, want %q", d.Path(), got, ours)
	}
}

func TestEnsureNode(t *testing.T) {
	requireLoop(t)
	dir := t.TempDir()
	node := filepath.Join(dir, "loop200")
	dev := unix.Mkdev(loopMajor, 200)
	for range 2 { // creates, then finds it
		if err := ensureNode(node, dev); err != nil {
			t.Fatal(err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(node, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != dev {
		t.Errorf("node mode %o rdev %d:%d", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	if err := ensureNode(node, unix.Mkdev(loopMajor, 201)); err == nil {
		t.Error("ensureNode accepted a node of another device")
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ensureNode(plain, dev); err == nil {
		t.Error("ensureNode accepted a regular file")
	}
}

func TestAvailableNoLoop(t *testing.T) {
	old := controlPath
	controlPath = filepath.Join(t.TempDir(), "loop-control")
	t.Cleanup(func() { controlPath = old })
	err := Available()
	if err == nil || !strings.HasPrefix(err.Error(), "no loop support: "+controlPath+": ") || strings.Contains(err.Error(), "\n") {
		t.Errorf("Available() = %v", err)
	}
	if _, err := Attach(newBacking(t, t.TempDir(), 1<<20), Options{}); err == nil || !strings.Contains(err.Error(), "no loop support") {
		t.Errorf("Attach without loop-control: %v", err)
	}
}

// TestAvailableNotRoot runs this test binary as nobody and asks Available.
func TestAvailableNotRoot(t *testing.T) {
	if os.Getenv("LOOPDEV_AVAILABLE_CHILD") == "1" {
		err := Available()
		fmt.Printf("AVAILABLE=%v\n", err)
		return
	}
	if os.Geteuid() != 0 {
		if err := Available(); err == nil || !strings.Contains(err.Error(), "root") {
			t.Errorf("Available() as uid %d = %v", os.Geteuid(), err)
		}
		return
	}
	// Copy the binary where nobody can run it.
	dir, err := os.MkdirTemp("", "loopdev-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "loopdev.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestAvailableNotRoot$")
	cmd.Env = append(os.Environ(), "LOOPDEV_AVAILABLE_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Skipf("skipping: cannot run the test binary as nobody: %v\n%s", err, out)
	}
	want := "AVAILABLE=loop devices need root (CAP_SYS_ADMIN)"
	if !strings.Contains(string(out), want) {
		t.Errorf("as nobody: %s\nwant a line starting %q", out, want)
	}
	t.Logf("as nobody: %s", strings.SplitN(string(out), "\n", 2)[0])
}
