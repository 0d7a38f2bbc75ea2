package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// memFile is a File in memory that counts what reaches it.
type memFile struct {
	mu       sync.Mutex
	data     []byte
	readOnly bool

	readSizes  map[int]int // request length -> count
	writeSizes map[int]int
	flushes    int
	syncs      int
	flushErr   error
	syncErr    error
	readErr    error
}

func newMemFile(size int, seed uint64) *memFile {
	f := &memFile{data: make([]byte, size), readSizes: map[int]int{}, writeSizes: map[int]int{}}
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	rand.NewChaCha8(key).Read(f.data)
	return f
}

func (f *memFile) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readSizes[len(p)]++
	if f.readErr != nil {
		return 0, f.readErr
	}
	if off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writeSizes[len(p)]++
	if off+int64(len(p)) > int64(len(f.data)) {
		return 0, errors.New("memFile: write past the end reached the File")
	}
	return copy(f.data[off:], p), nil
}

func (f *memFile) Flush(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushes++
	return f.flushErr
}

func (f *memFile) SyncContext(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	return f.syncErr
}

func (f *memFile) Size() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return int64(len(f.data))
}

func (f *memFile) ReadOnly() bool { return f.readOnly }

// snapshot returns a copy of the data.
func (f *memFile) snapshot() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.data...)
}

// counts returns copies of the counters under the lock.
func (f *memFile) counts() (reads, writes map[int]int, flushes, syncs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	reads, writes = map[int]int{}, map[int]int{}
	for k, v := range f.readSizes {
		reads[k] = v
	}
	for k, v := range f.writeSizes {
		writes[k] = v
	}
	return reads, writes, f.flushes, f.syncs
}

func (f *memFile) resetCounts() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readSizes, f.writeSizes = map[int]int{}, map[int]int{}
	f.flushes, f.syncs = 0, 0
}

func (f *memFile) set(fn func(f *memFile)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// discardFile is a memFile that also implements Discarder by zeroing.
type discardFile struct {
	*memFile
	discards [][2]int64
}

func (f *discardFile) Discard(ctx context.Context, off, length int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.discards = append(f.discards, [2]int64{off, length})
	clear(f.data[off : off+length])
	return nil
}

// hookedFile is a memFile that calls before(ctx, op) ahead of each ReadAt,
// WriteAt, Flush and Sync ("read", "write", "flush", "sync") and fails the
// call with its error.
type hookedFile struct {
	*memFile
	before func(ctx context.Context, op string) error
}

func (f *hookedFile) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if err := f.before(ctx, "read"); err != nil {
		return 0, err
	}
	return f.memFile.ReadAtContext(ctx, p, off)
}

func (f *hookedFile) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if err := f.before(ctx, "write"); err != nil {
		return 0, err
	}
	return f.memFile.WriteAtContext(ctx, p, off)
}

func (f *hookedFile) Flush(ctx context.Context) error {
	if err := f.before(ctx, "flush"); err != nil {
		return err
	}
	return f.memFile.Flush(ctx)
}

func (f *hookedFile) SyncContext(ctx context.Context) error {
	if err := f.before(ctx, "sync"); err != nil {
		return err
	}
	return f.memFile.SyncContext(ctx)
}

// requireFUSE skips the test when this machine cannot mount FUSE, except on
// CI, where that is a failure.
func requireFUSE(t *testing.T) {
	t.Helper()
	why := ""
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		why = "cannot open /dev/fuse: " + err.Error()
	} else {
		f.Close()
	}
	if _, err := exec.LookPath("fusermount3"); err != nil && why == "" {
		why = "fusermount3 not found (apt-get install fuse3)"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("FUSE is required on CI: %s", why)
	}
	t.Skipf("skipping FUSE mount test: %s", why)
}

// testLogger writes to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// mountT mounts entries in a fresh directory and unmounts in t.Cleanup, also
// when the test fails.
func mountT(t *testing.T, entries []Entry, opts Options) (*Server, string) {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	opts.Logger = testLogger(t)
	m, err := Mount(dir, entries, opts)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() { unmountT(t, m, dir) })
	return m, dir
}

// unmountT unmounts cleanly, or lazily with fusermount3 -u -z if that fails,
// and waits for the serve loop to end.
func unmountT(t *testing.T, m *Server, dir string) {
	t.Helper()
	if err := m.Unmount(); err != nil {
		t.Errorf("Unmount: %v; trying fusermount3 -u -z", err)
		if err := detachLazily(dir); err != nil {
			t.Error(err)
		}
	}
	waitServeEnd(t, m, dir)
}

// detachLazily detaches dir with fusermount3 -u -z: a mount whose
// connection is gone stays until it is detached.
func detachLazily(dir string) error {
	if out, err := exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("fusermount3 -u -z %s: %v: %s", dir, err, out)
	}
	return nil
}

// waitServeEnd fails the test when the serve loop of m does not end soon.
func waitServeEnd(t *testing.T, m *Server, dir string) {
	t.Helper()
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		t.Errorf("serve loop of %s did not end", dir)
	}
}

// wantErrno checks that err wraps the errno want.
func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	var got syscall.Errno
	if !errors.As(err, &got) || got != want {
		t.Errorf("%s: got error %v, want %v (%d)", what, err, want, int(want))
	}
}
