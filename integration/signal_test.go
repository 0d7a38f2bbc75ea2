package integration

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMountSignalDuringLogin: SIGTERM while the mount waits for a login
// that the portal never answers (it accepts the connection and stays
// silent) ends the mount at once, with a non-zero exit and one line on
// stderr, not after the 60 s login timeout; nothing is mounted.
func TestMountSignalDuringLogin(t *testing.T) {
	RequireFUSE(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 16)
	defer func() {
		ln.Close()
		for len(held) > 0 {
			(<-held).Close()
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case held <- c: // read nothing, answer nothing
			default:
				c.Close()
			}
		}
	}()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(iscsifsBinary(t), "mount", "--timeout", "60s", "iscsi://"+ln.Addr().String()+"/iqn.2026-12.lab:silent/1", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	}()
	time.Sleep(time.Second)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || cmd.ProcessState.ExitCode() == 0 {
			t.Errorf("exit status %v after SIGTERM during login, want non-zero", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("mount still running 10 s after SIGTERM during login:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "stopped by terminated") {
		t.Errorf("stderr does not say the signal stopped it: %s", stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) != 1 || lines[0] == "" {
		t.Errorf("stderr is not one line:\n%s", stderr.String())
	}
	if mounted, _ := mntIsMounted(dir); mounted {
		t.Errorf("%s is mounted after the failed mount", dir)
	}
}
