package fusefs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
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

const mib = 1 << 20

func TestSHA256ThroughMount(t *testing.T) {
	f := newMemFile(8*mib+12345, 1)
	_, dir := mountT(t, []Entry{{Path: "lun0", File: f}}, Options{})
	p := filepath.Join(dir, "lun0")

	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != f.Size() || fi.Mode() != 0o644 {
		t.Errorf("stat: size %d mode %v, want %d -rw-r--r--", fi.Size(), fi.Mode(), f.Size())
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != uint32(os.Geteuid()) || st.Gid != uint32(os.Getegid()) {
		t.Errorf("owner %d:%d, want %d:%d", st.Uid, st.Gid, os.Geteuid(), os.Getegid())
	}

	want := sha256.Sum256(f.snapshot())
	r, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Errorf("sha256 through the mount %x, want %x", got, want)
	}
	if out, err := exec.Command("sha256sum", p).Output(); err == nil {
		if got := strings.Fields(string(out))[0]; got != hex.EncodeToString(want[:]) {
			t.Errorf("sha256sum %s, want %x", got, want)
		}
	}
}

// TestRequestSizes checks that max_read/max_pages let 1 MiB requests through:
// dd bs=1M must reach the File as 1 MiB ReadAt/WriteAt calls.
func TestRequestSizes(t *testing.T) {
	f := newMemFile(16*mib, 2)
	_, dir := mountT(t, []Entry{{Path: "lun0", File: f}}, Options{})
	p := filepath.Join(dir, "lun0")

	for _, c := range []struct {
		name string
		args []string
		read bool
	}{
		{"dd read bs=1M", []string{"if=" + p, "of=/dev/null", "bs=1M", "count=8"}, true},
		{"dd read bs=1M iflag=direct", []string{"if=" + p, "of=/dev/null", "bs=1M", "count=8", "iflag=direct"}, true},
		{"dd read bs=4M", []string{"if=" + p, "of=/dev/null", "bs=4M", "count=2"}, true},
		{"dd write bs=1M", []string{"if=/dev/zero", "of=" + p, "bs=1M", "count=8", "conv=notrunc"}, false},
		{"dd write bs=1M oflag=direct", []string{"if=/dev/zero", "of=" + p, "bs=1M", "count=8", "conv=notrunc", "oflag=direct"}, false},
	} {
		f.resetCounts()
		if out, err := exec.Command("dd", c.args...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", c.name, err, out)
		}
		reads, writes, _, _ := f.counts()
		got := writes
		if c.read {
			got = reads
		}
		t.Logf("%s: request sizes (bytes: count) %v", c.name, got)
		if len(got) != 1 || got[mib] != 8 {
			t.Errorf("%s: request sizes %v, want 8 requests of 1 MiB", c.name, got)
		}
	}
}

func TestUnalignedWrite(t *testing.T) {
	f := newMemFile(mib, 3)
	_, dir := mountT(t, []Entry{{Path: "lun0", File: f}}, Options{})
	want := f.snapshot()

	w, err := os.OpenFile(filepath.Join(dir, "lun0"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	buf := bytes.Repeat([]byte("0123456789"), 100)
	if n, err := w.WriteAt(buf, 777); n != 1000 || err != nil {
		t.Fatalf("WriteAt: %d, %v", n, err)
	}
	copy(want[777:], buf)
	got := make([]byte, 1000)
	if n, err := w.ReadAt(got, 777); n != 1000 || err != nil || !bytes.Equal(got, buf) {
		t.Errorf("ReadAt after write: %d, %v, equal %v", n, err, bytes.Equal(got, buf))
	}
	// An odd-sized read across the written range.
	got = make([]byte, 3001)
	if n, err := w.ReadAt(got, 1); n != len(got) || err != nil || !bytes.Equal(got, want[1:3002]) {
		t.Errorf("unaligned ReadAt: %d, %v", n, err)
	}
	if !bytes.Equal(f.snapshot(), want) {
		t.Error("backing data differs from the model after an unaligned write")
	}
}

func TestEndOfFile(t *testing.T) {
	const size = 10000
	f := newMemFile(size, 4)
	_, dir := mountT(t, []Entry{{Path: "lun0", File: f}}, Options{})
	w, err := os.OpenFile(filepath.Join(dir, "lun0"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	buf := make([]byte, 4096)
	if n, err := w.ReadAt(buf, size); n != 0 || err != io.EOF {
		t.Errorf("read at EOF: %d, %v; want 0, EOF", n, err)
	}
	if n, err := w.ReadAt(buf, size+mib); n != 0 || err != io.EOF {
		t.Errorf("read after EOF: %d, %v; want 0, EOF", n, err)
	}
	if n, err := w.ReadAt(buf, size-100); n != 100 || err != io.EOF || !bytes.Equal(buf[:100], f.snapshot()[size-100:]) {
		t.Errorf("read across EOF: %d, %v; want 100, EOF", n, err)
	}

	_, err = w.WriteAt([]byte("x"), size)
	wantErrno(t, "write at EOF", err, syscall.ENOSPC)
	_, err = w.WriteAt([]byte("x"), size+mib)
	wantErrno(t, "write after EOF", err, syscall.ENOSPC)
	// Crossing the end: the part that fits is written and the count is
	// short, as on a block device; the rest then gets ENOSPC. (os.File
	// retries the rest itself and reports 0 bytes with the error, so use
	// pwrite.)
	n, err := unix.Pwrite(int(w.Fd()), bytes.Repeat([]byte{0xAB}, 300), size-100)
	if n != 100 || err != nil {
		t.Errorf("write across EOF: %d, %v; want 100, nil", n, err)
	}
	_, err = w.WriteAt(bytes.Repeat([]byte{0xAB}, 300), size-100)
	wantErrno(t, "write across EOF with os.File", err, syscall.ENOSPC)
	if got := f.snapshot()[size-100:]; !bytes.Equal(got, bytes.Repeat([]byte{0xAB}, 100)) {
		t.Error("the part of a write before EOF was not written")
	}
	if fi, err := os.Stat(filepath.Join(dir, "lun0")); err != nil || fi.Size() != size {
		t.Errorf("size after writes past EOF: %v, %v", fi.Size(), err)
	}
}

func TestFsyncAndFlush(t *testing.T) {
	f := newMemFile(mib, 5)
	_, dir := mountT(t, []Entry{{Path: "lun0", File: f}}, Options{})
	p := filepath.Join(dir, "lun0")

	w, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("dirty"), 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Errorf("fsync: %v", err)
	}
	if err := unix.Fdatasync(int(w.Fd())); err != nil {
		t.Errorf("fdatasync: %v", err)
	}
	if _, _, _, syncs := f.counts(); syncs != 2 {
		t.Errorf("fsync+fdatasync made %d Sync calls, want 2", syncs)
	}
	if err := w.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if _, _, flushes, _ := f.counts(); flushes != 1 {
		t.Errorf("close of a written handle made %d Flush calls, want 1", flushes)
	}

	// A read-only handle has nothing to flush.
	f.resetCounts()
	r, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("close read-only: %v", err)
	}
	if _, _, flushes, _ := f.counts(); flushes != 0 {
		t.Errorf("close of a read-only handle made %d Flush calls", flushes)
	}
}

// TestWriteBackErrors checks that errors of Flush and Sync reach the writing
// program as errnos from close(2) and fsync(2), through the default mapping
// and through Options.ErrnoMappers.
func TestWriteBackErrors(t *testing.T) {
	errMedium := errors.New("medium error")
	f := newMemFile(mib, 6)
	mapper := func(err error) (syscall.Errno, bool) {
		return syscall.ENOSPC, errors.Is(err, errMedium)
	}
	_, dir := mountT(t, []Entry{{Path: "lun0", File: f}}, Options{ErrnoMappers: []ErrnoMapper{mapper}})
	p := filepath.Join(dir, "lun0")

	write := func() *os.File {
		w, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("data")); err != nil {
			t.Fatal(err)
		}
		return w
	}

	f.set(func(f *memFile) { f.flushErr = errors.New("write-back failed") })
	wantErrno(t, "close with a failing Flush", write().Close(), syscall.EIO)

	f.set(func(f *memFile) { f.flushErr = fmt.Errorf("block 7: %w", errMedium) })
	wantErrno(t, "close with a mapped Flush error", write().Close(), syscall.ENOSPC)

	f.set(func(f *memFile) { f.flushErr, f.syncErr = nil, errors.New("sync failed") })
	w := write()
	wantErrno(t, "fsync with a failing Sync", w.Sync(), syscall.EIO)
	if err := w.Close(); err != nil {
		t.Errorf("close after the failed fsync: %v", err)
	}

	f.set(func(f *memFile) { f.syncErr, f.readErr = nil, syscall.ENOMEDIUM })
	_, err := os.ReadFile(p)
	wantErrno(t, "read with an errno from the File", err, syscall.ENOMEDIUM)
}

func TestReadOnlyFile(t *testing.T) {
	f := newMemFile(64<<10, 7)
	f.readOnly = true
	_, dir := mountT(t, []Entry{{Path: "lun0", File: f}}, Options{})
	checkReadOnly(t, filepath.Join(dir, "lun0"), f)
}

func TestReadOnlyMount(t *testing.T) {
	f := newMemFile(64<<10, 8)
	_, dir := mountT(t, []Entry{{Path: "lun0", File: f}}, Options{ReadOnly: true})
	checkReadOnly(t, filepath.Join(dir, "lun0"), f)
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("statfs of a read-only mount: flags %#x, %v; want ST_RDONLY", st.Flags, err)
	}
}

func checkReadOnly(t *testing.T, p string, f *memFile) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil || fi.Mode() != 0o444 {
		t.Errorf("mode of a read-only file: %v, %v; want -r--r--r--", fi.Mode(), err)
	}
	for _, flag := range []int{os.O_RDWR, os.O_WRONLY} {
		w, err := os.OpenFile(p, flag, 0)
		if err == nil {
			w.Close()
		}
		wantErrno(t, fmt.Sprintf("open flags %#x", flag), err, syscall.EROFS)
	}
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, f.snapshot()) {
		t.Errorf("read of a read-only file: %v, equal %v", err, bytes.Equal(got, f.snapshot()))
	}
	wantErrno(t, "truncate of a read-only file", os.Truncate(p, 1), syscall.EROFS)
	if _, writes, _, _ := f.counts(); len(writes) != 0 {
		t.Errorf("writes reached a read-only File: %v", writes)
	}
}

func TestTruncate(t *testing.T) {
	f := newMemFile(mib, 9)
	_, dir := mountT(t, []Entry{{Path: "lun0", File: f}}, Options{})
	p := filepath.Join(dir, "lun0")

	wantErrno(t, "truncate to 0", os.Truncate(p, 0), syscall.EINVAL)
	wantErrno(t, "truncate to grow", os.Truncate(p, 2*mib), syscall.EINVAL)
	if err := os.Truncate(p, mib); err != nil {
		t.Errorf("truncate to the current size: %v", err)
	}
	w, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Truncate(mib); err != nil {
		t.Errorf("ftruncate to the current size: %v", err)
	}
	wantErrno(t, "ftruncate to 4096", w.Truncate(4096), syscall.EINVAL)
	w.Close()
	_, err = os.OpenFile(p, os.O_RDWR|os.O_TRUNC, 0)
	wantErrno(t, "open O_TRUNC", err, syscall.EINVAL)

	wantErrno(t, "chmod", os.Chmod(p, 0o600), syscall.EPERM)
	now := time.Now()
	if err := os.Chtimes(p, now, now); err != nil {
		t.Errorf("touch: %v", err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != mib || fi.Mode() != 0o644 {
		t.Errorf("after truncate attempts: %v %v %v", fi.Size(), fi.Mode(), err)
	}
}

func TestStatfs(t *testing.T) {
	a, b := newMemFile(8*mib, 10), newMemFile(3*mib+100, 11)
	_, dir := mountT(t, []Entry{{Path: "a", File: a}, {Path: "b", File: b}}, Options{})
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(dir, "a"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Bsize != 4096 || st.Blocks != (11*mib+100)/4096 || st.Bfree != 0 || st.Bavail != 0 {
		t.Errorf("statfs: bsize %d blocks %d free %d avail %d; want 4096 %d 0 0",
			st.Bsize, st.Blocks, st.Bfree, st.Bavail, (11*mib+100)/4096)
	}
	if out, err := exec.Command("df", "-T", dir).CombinedOutput(); err == nil {
		if !strings.Contains(string(out), "fuse.iscsifs") {
			t.Errorf("df -T does not show fuse.iscsifs:\n%s", out)
		}
	}
}

func TestFallocate(t *testing.T) {
	const size = 4 * mib
	d := &discardFile{memFile: newMemFile(size, 12)}
	plain := newMemFile(size, 13)
	_, dir := mountT(t, []Entry{{Path: "discard", File: d}, {Path: "plain", File: plain}}, Options{})
	const punch = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE

	w, err := os.OpenFile(filepath.Join(dir, "discard"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fd := int(w.Fd())
	if err := unix.Fallocate(fd, punch, 4096, 65536); err != nil {
		t.Errorf("punch hole: %v", err)
	}
	if err := unix.Fallocate(fd, punch, size-1000, 8192); err != nil {
		t.Errorf("punch hole across the end: %v", err)
	}
	if err := unix.Fallocate(fd, punch, size+4096, 4096); err != nil {
		t.Errorf("punch hole past the end: %v", err)
	}
	d.mu.Lock()
	got := slices.Clone(d.discards)
	d.mu.Unlock()
	if want := [][2]int64{{4096, 65536}, {size - 1000, 1000}}; !slices.Equal(got, want) {
		t.Errorf("Discard calls %v, want %v", got, want)
	}
	buf := make([]byte, 65536)
	if _, err := w.ReadAt(buf, 4096); err != nil || !bytes.Equal(buf, make([]byte, 65536)) {
		t.Errorf("punched range does not read as zeros (%v)", err)
	}

	if err := unix.Fallocate(fd, 0, 0, size); err != nil {
		t.Errorf("allocate the existing range: %v", err)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, mib, mib); err != nil {
		t.Errorf("allocate KEEP_SIZE in range: %v", err)
	}
	wantErrno(t, "allocate beyond the end", unix.Fallocate(fd, 0, size-10, 20), syscall.ENOSPC)
	wantErrno(t, "allocate KEEP_SIZE beyond the end", unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, size, 4096), syscall.ENOSPC)
	wantErrno(t, "zero range", unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, 0, 4096), syscall.EOPNOTSUPP)

	wp, err := os.OpenFile(filepath.Join(dir, "plain"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer wp.Close()
	wantErrno(t, "punch hole without a Discarder", unix.Fallocate(int(wp.Fd()), punch, 0, 4096), syscall.EOPNOTSUPP)
}

func TestPortalTree(t *testing.T) {
	a, b := newMemFile(4096, 14), newMemFile(8192, 15)
	_, dir := mountT(t, []Entry{
		{Path: "iqn.2026-11.lab:a/lun1", File: a},
		{Path: "iqn.2026-11.lab:b/lun1", File: b},
		{Path: "iqn.2026-11.lab:b/lun2", File: newMemFile(512, 16)},
	}, Options{})

	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		if fi, err := e.Info(); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v %v, want a 0755 directory", e.Name(), fi.Mode(), err)
		}
	}
	if want := []string{"iqn.2026-11.lab:a", "iqn.2026-11.lab:b"}; !slices.Equal(names, want) {
		t.Errorf("root lists %v, want %v", names, want)
	}
	for p, f := range map[string]*memFile{"iqn.2026-11.lab:a/lun1": a, "iqn.2026-11.lab:b/lun1": b} {
		got, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || !bytes.Equal(got, f.snapshot()) {
			t.Errorf("%s: %v, equal %v", p, err, bytes.Equal(got, f.snapshot()))
		}
	}
	sub, err := os.ReadDir(filepath.Join(dir, "iqn.2026-11.lab:b"))
	if err != nil || len(sub) != 2 || sub[0].Name() != "lun1" || sub[1].Name() != "lun2" {
		t.Errorf("target directory lists %v, %v", sub, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "lun1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of a missing name: %v", err)
	}
}

// TestLazyDirs: a lazy directory loads on first use, once however many
// processes race to it, a failed load gives the mapped errno and is retried,
// and the files it brings serve I/O, NotifySize and statfs.
func TestLazyDirs(t *testing.T) {
	a := newMemFile(8192, 21)
	var loadsA, loadsB atomic.Int32
	failB := atomic.Bool{}
	failB.Store(true)
	errLogin := errors.New("login refused")
	m, dir := mountT(t, []Entry{{Path: "top", File: newMemFile(512, 20)}}, Options{
		ErrnoMappers: []ErrnoMapper{func(err error) (syscall.Errno, bool) {
			return syscall.EACCES, errors.Is(err, errLogin)
		}},
		LazyDirs: []LazyDir{
			{Path: "iqn.a", Load: func(ctx context.Context) ([]Entry, error) {
				loadsA.Add(1)
				time.Sleep(50 * time.Millisecond) // let concurrent first uses pile up
				return []Entry{{Path: "lun1", File: a}, {Path: "lun2", File: newMemFile(512, 22)}}, nil
			}},
			{Path: "iqn.b", Load: func(ctx context.Context) ([]Entry, error) {
				loadsB.Add(1)
				if failB.Load() {
					return nil, errLogin
				}
				return []Entry{{Path: "lun1", File: newMemFile(1024, 23)}}, nil
			}},
		},
	})
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"iqn.a", "iqn.b", "top"}; !slices.Equal(names, want) {
		t.Errorf("root lists %v, want %v", names, want)
	}
	if loadsA.Load()+loadsB.Load() != 0 {
		t.Fatal("listing the root loaded a lazy directory")
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := os.ReadFile(filepath.Join(dir, "iqn.a", "lun1"))
			if err != nil || !bytes.Equal(got, a.snapshot()) {
				t.Errorf("read through a lazy directory: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := loadsA.Load(); n != 1 {
		t.Errorf("iqn.a loaded %d times, want once", n)
	}
	sub, err := os.ReadDir(filepath.Join(dir, "iqn.a"))
	if err != nil || len(sub) != 2 || sub[0].Name() != "lun1" || sub[1].Name() != "lun2" {
		t.Errorf("lazy directory lists %v, %v", sub, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "iqn.a", "lun3")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of a missing name in a loaded directory: %v", err)
	}
	_, err = os.Stat(filepath.Join(dir, "iqn.b", "lun1"))
	wantErrno(t, "stat in a directory whose load fails", err, syscall.EACCES)
	_, err = os.ReadDir(filepath.Join(dir, "iqn.b"))
	wantErrno(t, "listing a directory whose load fails", err, syscall.EACCES)
	failB.Store(false)
	if fi, err := os.Stat(filepath.Join(dir, "iqn.b", "lun1")); err != nil || fi.Size() != 1024 {
		t.Errorf("stat after the load succeeds: %v, %v", fi, err)
	}
	if n := loadsB.Load(); n != 3 {
		t.Errorf("iqn.b loaded %d times, want 3 (two failures, one success)", n)
	}
	a.set(func(f *memFile) { f.data = append(f.data, make([]byte, 4096)...) })
	if err := m.NotifySize("iqn.a/lun1"); err != nil {
		t.Errorf("NotifySize of a lazily loaded file: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "iqn.a", "lun1")); err != nil || fi.Size() != 12288 {
		t.Errorf("size after NotifySize: %v, %v", fi, err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || st.Files != 4 {
		t.Errorf("statfs files %d (%v), want 4", st.Files, err)
	}
}

func TestMountpointErrors(t *testing.T) {
	m, dir := mountT(t, []Entry{{Path: "lun0", File: newMemFile(4096, 17)}}, Options{})

	_, err := Mount(dir, []Entry{{Path: "lun0", File: newMemFile(4096, 18)}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "busy") || !strings.Contains(err.Error(), dir) {
		t.Errorf("second mount on %s: %v, want a 'busy' error naming the directory", dir, err)
	}
	// The first mount still serves.
	if fi, err := os.Stat(filepath.Join(m.Dir(), "lun0")); err != nil || fi.Size() != 4096 {
		t.Errorf("first mount after the refused second one: %v", err)
	}

	missing := filepath.Join(t.TempDir(), "missing")
	_, err = Mount(missing, nil, Options{})
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("mount on a missing directory: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Mount(file, nil, Options{})
	if err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("mount on a file: %v", err)
	}
	_, err = Mount(t.TempDir(), []Entry{{Path: "a", File: newMemFile(1, 1)}, {Path: "a/b", File: newMemFile(1, 1)}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "a/b") {
		t.Errorf("mount with a file below a file: %v", err)
	}
}

func TestExternalUnmount(t *testing.T) {
	m, dir := mountT(t, []Entry{{Path: "lun0", File: newMemFile(4096, 19)}}, Options{})
	if out, err := exec.Command("fusermount3", "-u", dir).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
	waited := make(chan struct{})
	go func() {
		m.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after fusermount3 -u")
	}
	if err := m.Unmount(); err != nil {
		t.Errorf("Unmount after an external unmount: %v", err)
	}
}

func TestStatusFiles(t *testing.T) {
	var mu sync.Mutex
	opens := 0
	gen := func() ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		opens++
		return fmt.Appendf(nil, "opens: %d\n", opens), nil
	}
	_, dir := mountT(t, []Entry{{Path: "lun0", File: newMemFile(4096, 20)}},
		Options{StatusFiles: map[string]func() ([]byte, error){
			"status": gen,
			"broken": func() ([]byte, error) { return nil, errors.New("no session") },
		}})
	sd := filepath.Join(dir, statusDirName)
	if fi, err := os.Stat(sd); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o555 {
		t.Errorf("%s: %v %v", sd, fi.Mode(), err)
	}
	for i := 1; i <= 2; i++ {
		got, err := os.ReadFile(filepath.Join(sd, "status"))
		if want := fmt.Sprintf("opens: %d\n", i); err != nil || string(got) != want {
			t.Errorf("read %d of the status file: %q, %v; want %q", i, got, err, want)
		}
	}
	_, err := os.OpenFile(filepath.Join(sd, "status"), os.O_WRONLY, 0)
	wantErrno(t, "open a status file for writing", err, syscall.EROFS)
	_, err = os.ReadFile(filepath.Join(sd, "broken"))
	wantErrno(t, "open a status file whose generator fails", err, syscall.EIO)
}

func TestNotifySize(t *testing.T) {
	f := newMemFile(mib, 21)
	m, dir := mountT(t, []Entry{{Path: "t/lun0", File: f}}, Options{})
	p := filepath.Join(dir, "t/lun0")
	if err := m.NotifySize("t/lun0"); err != nil {
		t.Errorf("NotifySize before the kernel looked the file up: %v", err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != mib {
		t.Fatalf("stat: %v", err)
	}
	f.set(func(f *memFile) { f.data = append(f.data, make([]byte, mib)...) })
	if fi, _ := os.Stat(p); fi.Size() != mib {
		t.Logf("size changed without a notification (attributes not cached?): %d", fi.Size())
	}
	if err := m.NotifySize("t/lun0"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != 2*mib {
		t.Errorf("size after NotifySize: %d, %v; want %d", fi.Size(), err, 2*mib)
	}
	if err := m.NotifySize("nope"); err == nil {
		t.Error("NotifySize of an unknown path succeeded")
	}
}

// TestConcurrentIO has 8 goroutines read and write their own regions of one
// file through the mount (unaligned offsets, sizes up to 300 KiB, regions
// sharing pages with each other) and checks every read against a model.
func TestConcurrentIO(t *testing.T) {
	const workers, region = 8, 1*mib + 1234
	f := newMemFile(workers*region, 22)
	_, dir := mountT(t, []Entry{{Path: "lun0", File: f}}, Options{})
	p := filepath.Join(dir, "lun0")
	model := f.snapshot()

	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fd, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Error(err)
				return
			}
			defer fd.Close()
			r := rand.New(rand.NewPCG(uint64(w), 99))
			fill := rand.NewChaCha8([32]byte{byte(w)})
			base := int64(w * region)
			mine := model[base : base+region] // only this goroutine touches it
			for range 200 {
				off := r.Int64N(region)
				n := min(1+r.Int64N(300<<10), region-off)
				buf := make([]byte, n)
				if r.IntN(2) == 0 {
					fill.Read(buf)
					if k, err := fd.WriteAt(buf, base+off); k != len(buf) || err != nil {
						t.Errorf("worker %d: write %d at %d: %d, %v", w, n, off, k, err)
						return
					}
					copy(mine[off:], buf)
				} else {
					if k, err := fd.ReadAt(buf, base+off); k != len(buf) || err != nil {
						t.Errorf("worker %d: read %d at %d: %d, %v", w, n, off, k, err)
						return
					}
					if !bytes.Equal(buf, mine[off:off+n]) {
						t.Errorf("worker %d: read %d at %d differs from the model", w, n, off)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, model) || !bytes.Equal(f.snapshot(), model) {
		t.Errorf("final contents differ from the model (%v)", err)
	}
}

// TestMountInfo checks what mount(8) shows: the type, the FSName as source,
// and the options that reach the kernel (max_read for 1 MiB reads,
// default_permissions, ro).
func TestMountInfo(t *testing.T) {
	for _, readOnly := range []bool{false, true} {
		m, _ := mountT(t, []Entry{{Path: "lun0", File: newMemFile(4096, 23)}},
			Options{FSName: "iscsi://127.0.0.1/iqn.x/0", ReadOnly: readOnly})
		info, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Skip(err)
		}
		var line string
		for _, l := range strings.Split(string(info), "\n") {
			if f := strings.Fields(l); len(f) > 4 && unescapeMountinfo(f[4]) == m.Dir() {
				line = l
			}
		}
		// ... - fuse.iscsifs SOURCE SUPEROPTS; per-mount options come first.
		_, after, ok := strings.Cut(line, " - ")
		f := strings.Fields(after)
		if !ok || len(f) != 3 {
			t.Fatalf("no mountinfo line for %s: %q", m.Dir(), line)
		}
		if f[0] != "fuse.iscsifs" || f[1] != "iscsi://127.0.0.1/iqn.x/0" {
			t.Errorf("type %q source %q, want fuse.iscsifs and the FSName", f[0], f[1])
		}
		opts := strings.Split(f[2], ",")
		for _, want := range []string{"max_read=1048576", "default_permissions"} {
			if !slices.Contains(opts, want) {
				t.Errorf("mount options %v lack %s", opts, want)
			}
		}
		if slices.Contains(opts, "ro") != readOnly {
			t.Errorf("read-only %v but mount options are %v", readOnly, opts)
		}
	}
}

// TestParallelWrites checks FOPEN_PARALLEL_DIRECT_WRITES: writes to one file
// from several threads reach the File at the same time instead of one by one
// under the inode lock. Reads are checked the same way.
func TestParallelWrites(t *testing.T) {
	const parallel = 4
	for _, op := range []string{"write", "read"} {
		t.Run(op, func(t *testing.T) {
			var mu sync.Mutex
			inside, most := 0, 0
			all := make(chan struct{})
			f := &hookedFile{memFile: newMemFile(parallel*mib, 24), before: func(ctx context.Context, got string) error {
				if got != op {
					return nil
				}
				mu.Lock()
				inside++
				most = max(most, inside)
				if inside == parallel {
					close(all)
				}
				mu.Unlock()
				select { // wait for the others, or give up: then most < parallel
				case <-all:
				case <-time.After(5 * time.Second):
				}
				mu.Lock()
				inside--
				mu.Unlock()
				return nil
			}}
			_, dir := mountT(t, []Entry{{Path: "lun0", File: f}}, Options{})
			w, err := os.OpenFile(filepath.Join(dir, "lun0"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			var wg sync.WaitGroup
			for i := range parallel {
				wg.Go(func() {
					buf := make([]byte, 64<<10)
					var err error
					if op == "write" {
						_, err = unix.Pwrite(int(w.Fd()), buf, int64(i)*mib)
					} else {
						_, err = unix.Pread(int(w.Fd()), buf, int64(i)*mib)
					}
					if err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			mu.Lock() // the kernel orders the File's calls before ours; the race detector cannot see that
			defer mu.Unlock()
			if most != parallel {
				t.Errorf("at most %d %ss reached the File at once, want %d", most, op, parallel)
			}
		})
	}
}
