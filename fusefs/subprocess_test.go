package fusefs

// Tests whose client must be another process: a page fault on a FUSE mmap, or
// a thread blocked in a FUSE read, inside the serving process can deadlock
// with the garbage collector, and a signal must reach one precise thread.
// The test binary runs itself with helperEnv set.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const helperEnv = "ISCSIFS_FUSEFS_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		if err := runHelper(mode, os.Args[len(os.Args)-1]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startHelper runs the test binary as a helper on path, with its stdout
// readable line by line.
func startHelper(t *testing.T, mode, path string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", path)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, bufio.NewScanner(out)
}

func runHelper(mode, path string) error {
	switch mode {
	case "mmap":
		return helperMmap(path)
	case "read", "write":
		return helperInterrupted(mode, path)
	}
	return fmt.Errorf("unknown helper mode %q", mode)
}

// helperMmap maps the whole file shared, prints the sha256 of the mapping,
// stores through the mapping and msyncs, then writes with pwrite and prints
// whether the mapping shows that write.
func helperMmap(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	defer unix.Munmap(mem)
	fmt.Printf("sha256 %x\n", sha256.Sum256(mem))
	copy(mem[5000:], "stored through mmap")
	if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
		return fmt.Errorf("msync: %w", err)
	}
	if _, err := f.WriteAt([]byte("written with pwrite"), 9000); err != nil {
		return err
	}
	fmt.Printf("coherent %v\n", string(mem[9000:9019]) == "written with pwrite")
	return nil
}

// helperInterrupted prints its thread id, then does one pread or pwrite on
// that thread and prints the result; the test signals the thread meanwhile.
func helperInterrupted(mode, path string) error {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGUSR1) // handled, not fatal
	runtime.LockOSThread()
	fd, err := syscall.Open(path, syscall.O_RDWR, 0)
	if err != nil {
		return err
	}
	fmt.Printf("tid %d\n", syscall.Gettid())
	buf := make([]byte, 4096)
	var n int
	if mode == "read" {
		n, err = syscall.Pread(fd, buf, 0)
	} else {
		n, err = syscall.Pwrite(fd, buf, 0)
	}
	if errno, ok := err.(syscall.Errno); ok {
		fmt.Printf("errno %d\n", int(errno))
	} else {
		fmt.Printf("n %d\n", n)
	}
	return nil
}

func TestMmap(t *testing.T) {
	f := newMemFile(2*mib+300, 30)
	_, dir := mountT(t, []Entry{{Path: "lun0", File: f}}, Options{})
	want := sha256.Sum256(f.snapshot())
	cmd, out := startHelper(t, "mmap", filepath.Join(dir, "lun0"))
	var lines []string
	for out.Scan() {
		lines = append(lines, out.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("mmap helper: %v (output %q)", err, lines)
	}
	if len(lines) != 2 || lines[0] != fmt.Sprintf("sha256 %x", want) {
		t.Errorf("mmap helper printed %q, want the sha256 %x first", lines, want)
	}
	if len(lines) == 2 && lines[1] != "coherent true" {
		t.Errorf("a pwrite after mmap is not visible through the mapping: %q", lines[1])
	}
	got := f.snapshot()
	if !bytes.Equal(got[5000:5019], []byte("stored through mmap")) {
		t.Errorf("a store through the shared mapping did not reach the File: %q", got[5000:5019])
	}
}

// blockingFile makes ReadAt and WriteAt block until released (Flush and
// Sync pass), and reports whether their context was cancelled.
type blockingFile struct {
	entered   chan string
	release   chan struct{}
	cancelled chan bool
}

func (f *blockingFile) wait(ctx context.Context, op string) error {
	if op != "read" && op != "write" {
		return nil
	}
	f.entered <- op
	select {
	case <-ctx.Done():
		f.cancelled <- true
		return ctx.Err()
	case <-f.release:
		f.cancelled <- false
		return nil
	}
}

// TestInterrupt signals a thread blocked in read(2) or write(2) on the mount:
// the read is cancelled and fails with EINTR, the write is not cancelled and
// completes.
func TestInterrupt(t *testing.T) {
	for _, c := range []struct {
		mode       string
		wantCancel bool
		wantResult string
	}{
		{"read", true, fmt.Sprintf("errno %d", int(syscall.EINTR))},
		{"write", false, "n 4096"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			f := &blockingFile{entered: make(chan string, 1), release: make(chan struct{}), cancelled: make(chan bool, 1)}
			m, dir := mountT(t, []Entry{{Path: "lun0", File: &hookedFile{memFile: newMemFile(mib, 31), before: f.wait}}}, Options{})
			cmd, out := startHelper(t, c.mode, filepath.Join(dir, "lun0"))
			if !out.Scan() {
				t.Fatalf("helper printed nothing: %v", out.Err())
			}
			tid, err := strconv.Atoi(strings.TrimPrefix(out.Text(), "tid "))
			if err != nil {
				t.Fatalf("helper printed %q", out.Text())
			}
			select {
			case <-f.entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the helper's request did not reach the File")
			}
			if err := unix.Tgkill(cmd.Process.Pid, tid, unix.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			if !c.wantCancel {
				// Give the interrupt time to arrive before letting the write go.
				time.Sleep(300 * time.Millisecond)
				close(f.release)
			}
			select {
			case cancelled := <-f.cancelled:
				if cancelled != c.wantCancel {
					t.Errorf("File's context cancelled: %v, want %v", cancelled, c.wantCancel)
				}
			case <-time.After(10 * time.Second):
				close(f.release)
				t.Fatal("the interrupt did not cancel the read")
			}
			if !out.Scan() || out.Text() != c.wantResult {
				t.Errorf("helper's %s returned %q, want %q", c.mode, out.Text(), c.wantResult)
			}
			cmd.Wait()
			// The loop answers reads itself (readFast): its INTERRUPT
			// handling is what this tested.
			if fast := m.server.fastReads.Load(); (fast > 0) != (c.mode == "read") {
				t.Errorf("%d reads answered by the loop itself during the %s", fast, c.mode)
			}
		})
	}
}
