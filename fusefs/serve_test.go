package fusefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func TestMountOptionStrings(t *testing.T) {
	tests := []struct {
		name string
		opts fuse.MountOptions
		want []string
	}{
		{"plain", fuse.MountOptions{Options: []string{"default_permissions"}, FsName: "iscsifs", Name: "iscsifs", MaxWrite: 1 << 20},
			[]string{"default_permissions", "fsname=iscsifs", "subtype=iscsifs", "max_read=1048576"}},
		{"allow_other and ro", fuse.MountOptions{Options: []string{"default_permissions", "ro"}, AllowOther: true, MaxWrite: 4096},
			[]string{"default_permissions", "ro", "allow_other", "max_read=4096"}},
		{"escaped", fuse.MountOptions{FsName: `a,b\c`, MaxWrite: 4096},
			[]string{`fsname=a\,b\\c`, "max_read=4096"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mountOptionStrings(&tt.opts)
			if len(got) != len(tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %q, want %q", got, tt.want)
				}
			}
		})
	}
}

// TestAbortCancelsRequests aborts the FUSE connection (as fusectl or a
// forced unmount does) while a read waits in the File: the read's context
// must end and the serve loop must stop, or a request stuck on an
// unreachable target would keep the daemon from ever exiting.
func TestAbortCancelsRequests(t *testing.T) {
	requireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("aborting a FUSE connection through fusectl needs root")
	}
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	canceled := make(chan error, 1)
	f := &hookedFile{memFile: newMemFile(1<<20, 1), before: func(ctx context.Context, op string) error {
		if op != "read" {
			return nil
		}
		entered <- struct{}{}
		select {
		case <-ctx.Done():
			canceled <- ctx.Err()
			return ctx.Err()
		case <-release:
			return errors.New("released by the test")
		}
	}}
	dir := t.TempDir()
	m, err := Mount(dir, []Entry{{Path: "lun", File: f}}, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() {
		close(release)
		if m.Mounted() {
			if err := detachLazily(dir); err != nil {
				t.Log(err)
			}
		}
		waitServeEnd(t, m, dir)
	})
	abort := abortPath(t, dir)

	readErr := make(chan error, 1)
	go func() {
		fh, err := os.Open(filepath.Join(dir, "lun"))
		if err != nil {
			readErr <- err
			return
		}
		defer fh.Close()
		_, err = fh.ReadAt(make([]byte, 4096), 0)
		readErr <- err
	}()
	select {
	case <-entered:
	case err := <-readErr:
		t.Fatalf("read ended before reaching the File: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("read did not reach the File")
	}
	if err := os.WriteFile(abort, []byte("1"), 0); err != nil {
		t.Fatalf("abort the connection: %v", err)
	}
	select {
	case err := <-canceled:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the read's context ended with %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the read's context was not cancelled after the connection was aborted")
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, syscall.ECONNABORTED) && !errors.Is(err, syscall.ENOTCONN) {
			t.Errorf("read on the aborted mount: %v, want ECONNABORTED or ENOTCONN", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the reader was not released by the abort")
	}
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the serve loop did not end after the abort")
	}
	if m.server.fastReads.Load() == 0 {
		t.Error("the read was not answered by the loop itself (readFast): its cancellation was not tested")
	}
	// The aborted mount stays in place, dead, until it is unmounted:
	// Unmount takes it away.
	if err := m.Unmount(); err != nil {
		t.Errorf("Unmount after the abort: %v", err)
	}
	mounts, err := ReadMountInfo()
	if err != nil {
		t.Fatal(err)
	}
	for _, mi := range mounts {
		if mi.Dir == dir {
			t.Errorf("%s is still mounted (%s) after Unmount", dir, mi.FSType)
		}
	}
}

// abortPath returns the fusectl file that aborts the FUSE connection of the
// mount at dir (root only), mounting fusectl if it is not.
func abortPath(t *testing.T, dir string) string {
	t.Helper()
	const ctlDir = "/sys/fs/fuse/connections"
	if ents, err := os.ReadDir(ctlDir); err != nil || len(ents) == 0 {
		// fusectl is not mounted (or no connection exists yet; mounting
		// it again is then harmless).
		if err := unix.Mount("fusectl", ctlDir, "fusectl", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			t.Fatalf("mount -t fusectl fusectl %s: %v", ctlDir, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(ctlDir, strconv.FormatUint(uint64(unix.Minor(st.Dev)), 10), "abort")
}

// TestHandleAnswersEveryRequest feeds requests go-fuse cannot serve to the
// loop's handler over a socket standing in for /dev/fuse: each must get an
// error reply with its unique, or the process that sent it would wait for
// ever.
func TestHandleAnswersEveryRequest(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[1])
	// A missing reply fails the test instead of hanging it.
	tv := syscall.Timeval{Sec: 2}
	if err := syscall.SetsockoptTimeval(fds[1], syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	ps := fuse.NewProtocolServer(fuse.NewDefaultRawFileSystem(), &fuse.MountOptions{})
	c, err := newFuseConn(fds[0], ps, func(msg string, args ...any) { t.Log(append([]any{msg}, args...)...) })
	if err != nil {
		t.Fatal(err)
	}
	defer c.file.Close()

	request := func(opcode uint32, unique uint64, size uint32) []byte {
		in := fuse.ReadIn{Size: size}
		in.Length = uint32(unsafe.Sizeof(in))
		in.Opcode = opcode
		in.Unique = unique
		return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(&in)), unsafe.Sizeof(in))...)
	}
	tests := []struct {
		name   string
		req    []byte
		unique uint64
		want   syscall.Errno
	}{
		{"unknown opcode", request(9999, 7, 0), 7, syscall.ENOSYS},
		{"READ larger than any reply buffer", request(opRead, 8, 64<<20), 8, syscall.EIO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, op := requestID(tt.req)
			done := make(chan struct{})
			go func() { c.handle(tt.req, u, op); close(done) }()
			reply := make([]byte, 64)
			n, err := syscall.Read(fds[1], reply)
			if err != nil {
				t.Fatalf("read the reply: %v", err)
			}
			<-done
			if n != fuseOutHeaderSize {
				t.Fatalf("reply of %d bytes, want a bare header", n)
			}
			var out fuse.OutHeader
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&out)), unsafe.Sizeof(out)), reply)
			if out.Unique != tt.unique || syscall.Errno(-out.Status) != tt.want {
				t.Fatalf("reply: unique %d, error %v; want %d, %v", out.Unique, syscall.Errno(-out.Status), tt.unique, tt.want)
			}
		})
	}
}

// TestServeNoGoroutineLeak grows the loop's pool of readers with requests
// that wait in the File together, then unmounts: every goroutine the mount
// started (readers, handlers, the one waiting for the loop) must end.
func TestServeNoGoroutineLeak(t *testing.T) {
	requireFUSE(t)
	before := runtime.NumGoroutine()
	// Registered first, so it runs after the unmount that mountT registers.
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("%d goroutines outlived the mount:\n%s", n-before, buf)
		}
	})

	const readers = 24 // more than maxIdleReaders
	var (
		mu      sync.Mutex
		waiting int
	)
	release := make(chan struct{})
	f := &hookedFile{memFile: newMemFile(readers*4096, 5), before: func(ctx context.Context, op string) error {
		if op != "read" {
			return nil
		}
		mu.Lock()
		waiting++
		mu.Unlock()
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	m, dir := mountT(t, []Entry{{Path: "lun0", File: f}}, Options{})
	p := filepath.Join(dir, "lun0")

	var wg sync.WaitGroup
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fd, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECT, 0)
			if err != nil {
				t.Error(err)
				return
			}
			defer fd.Close()
			buf := make([]byte, 4096)
			if _, err := fd.ReadAt(buf, int64(i)*4096); err != nil {
				t.Errorf("read %d: %v", i, err)
			}
		}()
	}
	// Every read must reach the File at once: the loop starts a reader
	// for the next request before it handles one.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := waiting
		mu.Unlock()
		if n == readers {
			break
		}
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("%d of %d reads reached the File together", n, readers)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	wg.Wait()
	m.server.mu.Lock()
	got := m.server.readers
	m.server.mu.Unlock()
	if got > maxIdleReaders {
		t.Errorf("%d goroutines wait for requests, want at most %d", got, maxIdleReaders)
	}
}

// TestPollAfterWrite: a chain of writes and fsyncs through a mount that
// polls after writes is answered in full, in order, and (with a window far
// longer than the chain's gaps) its requests are read by the polling
// goroutine; without polling none is.
func TestPollAfterWrite(t *testing.T) {
	for _, tt := range []struct {
		name   string
		window time.Duration
		polled bool
	}{
		{"off", 0, false},
		{"on", time.Second, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const n = 20
			f := newMemFile(n*4096, 9)
			m, dir := mountT(t, []Entry{{Path: "lun0", File: f}}, Options{PollAfterWrite: tt.window})
			fd, err := os.OpenFile(filepath.Join(dir, "lun0"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer fd.Close()
			want := append([]byte(nil), f.snapshot()...)
			done := make(chan error, 1)
			go func() {
				for i := range n {
					block := bytes.Repeat([]byte{byte(i + 1)}, 4096)
					copy(want[i*4096:], block)
					if _, err := fd.WriteAt(block, int64(i)*4096); err != nil {
						done <- err
						return
					}
					if err := fd.Sync(); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(20 * time.Second):
				// A request the loop lost is never answered: abort the
				// connection so that the writer and the unmount are not
				// stuck behind it (as root; otherwise the cleanup's lazy
				// unmount is all there is).
				if os.Geteuid() == 0 {
					if err := os.WriteFile(abortPath(t, dir), []byte("1"), 0); err != nil {
						t.Log(err)
					}
					<-done
					if err := detachLazily(dir); err != nil {
						t.Log(err)
					}
				}
				t.Fatal("the chain of writes and fsyncs did not finish")
			}
			if got := f.snapshot(); string(got) != string(want) {
				t.Error("the file's content differs from what was written")
			}
			_, _, _, syncs := f.counts()
			if syncs != n {
				t.Errorf("%d syncs reached the File, want %d", syncs, n)
			}
			if polled := m.server.polled.Load(); (polled > 0) != tt.polled {
				t.Errorf("%d requests read while polling, want some: %v", polled, tt.polled)
			}
		})
	}
}

// TestReadPaths reads the same ranges through the loop's own READ path and,
// with Debug (go-fuse logs each request it answers, so the loop leaves READs
// to it), through go-fuse: the same bytes, the end of the file included, and
// the counter says which path answered.
func TestReadPaths(t *testing.T) {
	const size = 3*mib + 777
	for _, debug := range []bool{false, true} {
		t.Run(fmt.Sprintf("debug=%v", debug), func(t *testing.T) {
			f := newMemFile(size, 41)
			m, dir := mountT(t, []Entry{{Path: "lun0", File: f}}, Options{Debug: debug})
			model := f.snapshot()
			fh, err := os.Open(filepath.Join(dir, "lun0"))
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			for _, r := range []struct{ off, n int64 }{
				{0, 4096}, {1, 1}, {mib - 3, 4099}, {0, mib}, {size - 100, 4096}, {size, 10}, {size + 4096, 1},
			} {
				buf := make([]byte, r.n)
				got, err := fh.ReadAt(buf, r.off)
				want := max(0, min(r.n, size-r.off))
				if int64(got) != want || (err != nil && !errors.Is(err, io.EOF)) || !bytes.Equal(buf[:got], model[min(r.off, size):min(r.off, size)+want]) {
					t.Errorf("read %d at %d: %d bytes, %v; want %d bytes of the file", r.n, r.off, got, err, want)
				}
			}
			if fast := m.server.fastReads.Load(); (fast > 0) == debug {
				t.Errorf("%d reads answered by the loop itself with Debug %v", fast, debug)
			}
		})
	}
}

// TestReadPanicIsEIO: a File that panics in a read answered by the loop
// itself gives that read EIO, and the mount keeps serving (go-fuse recovers
// the same way for the requests it answers).
func TestReadPanicIsEIO(t *testing.T) {
	var panics atomic.Int32
	f := &hookedFile{memFile: newMemFile(1<<20, 5), before: func(ctx context.Context, op string) error {
		if op == "read" && panics.Add(1) == 1 {
			panic("a broken File")
		}
		return nil
	}}
	m, dir := mountT(t, []Entry{{Path: "lun", File: f}}, Options{})
	fh, err := os.Open(filepath.Join(dir, "lun"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	buf := make([]byte, 4096)
	if _, err := fh.ReadAt(buf, 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("read that panicked: %v, want EIO", err)
	}
	if n, err := fh.ReadAt(buf, 4096); n != len(buf) || err != nil || !bytes.Equal(buf, f.snapshot()[4096:8192]) {
		t.Errorf("the next read: %d, %v", n, err)
	}
	if m.server.fastReads.Load() == 0 {
		t.Error("the reads did not go through the loop's own READ path")
	}
}
