package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestToErrno(t *testing.T) {
	errWP := errors.New("write protected")
	m := &Server{mappers: []ErrnoMapper{
		func(err error) (syscall.Errno, bool) { return syscall.EROFS, errors.Is(err, errWP) },
		// A mapper that claims an error but gives no errno is skipped.
		func(err error) (syscall.Errno, bool) { return 0, true },
	}}
	live := context.Background()
	interrupted, cancel := context.WithCancel(context.Background())
	cancel()

	for _, c := range []struct {
		name string
		ctx  context.Context
		err  error
		want syscall.Errno
	}{
		{"interrupted read", interrupted, context.Canceled, syscall.EINTR},
		{"interrupted read, wrapped", interrupted, fmt.Errorf("read block 3: %w", context.Canceled), syscall.EINTR},
		{"cancelled, not by us", live, context.Canceled, syscall.EIO},
		{"internal deadline", live, context.DeadlineExceeded, syscall.EIO},
		{"socket timeout", live, fmt.Errorf("read tcp: %w", os.ErrDeadlineExceeded), syscall.EIO},
		{"cmd mapper", live, fmt.Errorf("lun 1: %w", errWP), syscall.EROFS},
		{"cmd mapper on an interrupted request", interrupted, errWP, syscall.EROFS},
		{"errno passthrough", live, &os.PathError{Op: "pread", Path: "x", Err: syscall.ENOMEDIUM}, syscall.ENOMEDIUM},
		{"zero errno", live, syscall.Errno(0), syscall.EIO},
		{"permission", live, fs.ErrPermission, syscall.EACCES},
		{"unexpected EOF", live, io.ErrUnexpectedEOF, syscall.EIO},
		{"anything else", live, errors.New("target went away"), syscall.EIO},
	} {
		if got := m.toErrno(c.ctx, c.err); got != c.want {
			t.Errorf("%s: toErrno(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

// TestWriteContextNotCancelled calls the node directly with an interrupted
// request context: reads see the cancellation, writes, flushes, syncs and
// discards do not.
func TestWriteContextNotCancelled(t *testing.T) {
	// The File fails reads with the context's error, as a cache would.
	var seen []string
	f := &hookedFile{memFile: newMemFile(4096, 40), before: func(ctx context.Context, op string) error {
		state := "live"
		if ctx.Err() != nil {
			state = "cancelled"
		}
		seen = append(seen, op+":"+state)
		return ctx.Err()
	}}
	n := &lunNode{node: node{m: &Server{log: orDiscard(nil)}}, path: "lun0", file: f}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	if _, errno := n.Read(ctx, nil, make([]byte, 10), 0); errno != syscall.EINTR {
		t.Errorf("interrupted read: %v, want EINTR", errno)
	}
	if w, errno := n.Write(ctx, nil, []byte("abc"), 0); w != 3 || errno != 0 {
		t.Errorf("write on an interrupted request: %d, %v", w, errno)
	}
	if errno := n.Flush(ctx, &lunHandle{writable: true}); errno != 0 {
		t.Errorf("flush: %v", errno)
	}
	if errno := n.Fsync(ctx, nil, 0); errno != 0 {
		t.Errorf("fsync: %v", errno)
	}
	want := "read:cancelled write:live flush:live sync:live"
	if got := strings.Join(seen, " "); got != want {
		t.Errorf("contexts seen by the File: %s, want %s", got, want)
	}
}

func TestCheckEntries(t *testing.T) {
	f := newMemFile(1, 1)
	status := map[string]func() ([]byte, error){"s": nil}
	load := func(context.Context) ([]Entry, error) { return nil, nil }
	for _, c := range []struct {
		paths  []string
		status map[string]func() ([]byte, error)
		bad    string   // substring of the error, "" if valid
		lazy   []string // lazy directory paths
	}{
		{[]string{"lun0", "lun1"}, nil, "", nil},
		{[]string{"iqn.a/lun1", "iqn.b/lun1", "iqn.b/lun2"}, status, "", nil},
		{[]string{".iscsifs"}, nil, "", nil},
		{[]string{".iscsifs/lun0"}, status, "status directory", nil},
		{[]string{""}, nil, "not a clean", nil},
		{[]string{"/lun0"}, nil, "not a clean", nil},
		{[]string{"a//b"}, nil, "not a clean", nil},
		{[]string{"a/"}, nil, "not a clean", nil},
		{[]string{"../x"}, nil, "invalid component", nil},
		{[]string{strings.Repeat("x", 256)}, nil, "invalid component", nil},
		{[]string{"lun0", "lun0"}, nil, "used twice", nil},
		{[]string{"a/b", "a"}, nil, "also the directory", nil},
		{[]string{"a", "a/b"}, nil, "below the file", nil},
		{[]string{"lun0"}, map[string]func() ([]byte, error){"x/y": nil}, "plain file name", nil},
		{[]string{"lun0"}, status, "", []string{"iqn.a", "iqn.b"}},
		{nil, nil, "", []string{"portal/iqn.a"}},
		{[]string{"iqn.a"}, nil, "used twice", []string{"iqn.a"}},
		{[]string{"iqn.a/lun1"}, nil, "also the directory", []string{"iqn.a"}},
		{nil, nil, "below the lazy directory", []string{"iqn.a", "iqn.a/b"}},
		{nil, status, "status directory", []string{".iscsifs"}},
		{nil, nil, "not a clean", []string{"/iqn.a"}},
	} {
		var entries []Entry
		for _, p := range c.paths {
			entries = append(entries, Entry{Path: p, File: f})
		}
		var lazy []LazyDir
		for _, p := range c.lazy {
			lazy = append(lazy, LazyDir{Path: p, Load: load})
		}
		err := checkEntries(entries, lazy, c.status)
		if c.bad == "" && err != nil {
			t.Errorf("%q: %v", c.paths, err)
		}
		if c.bad != "" && (err == nil || !strings.Contains(err.Error(), c.bad)) {
			t.Errorf("%q: error %v, want one about %q", c.paths, err, c.bad)
		}
	}
	if err := checkEntries([]Entry{{Path: "lun0"}}, nil, nil); err == nil {
		t.Error("an entry without a File was accepted")
	}
	if err := checkEntries(nil, []LazyDir{{Path: "iqn.a"}}, nil); err == nil {
		t.Error("a lazy directory without Load was accepted")
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/plain`:          "/mnt/plain",
		`/mnt/with\040space`:  "/mnt/with space",
		`/a\134b\011c\012d`:   "/a\\b\tc\nd",
		`/trailing\04`:        `/trailing\04`,
		`/not\999octal\040ok`: `/not\999octal ok`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
