package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"
)

// Background mounts (mount --daemon): the command re-executes itself as a
// child in a new session and waits on a pipe until the child is ready (the
// mount serves, devices are attached) or has failed, so that it exits 0 only
// for a working mount and otherwise prints the child's error as its own.
const (
	// daemonReadyEnv names the child's end of the readiness pipe (always fd 3).
	daemonReadyEnv = "ISCSIFS_DAEMON_READY_FD"
	// daemonStartTimeout bounds the wait for the child: logins have their own
	// timeouts, this only catches a child that hangs without saying why.
	daemonStartTimeout = 5 * time.Minute
)

// defaultLogFile is where a background mount logs without --log-file.
func defaultLogFile() string {
	if os.Geteuid() == 0 {
		return "/var/log/iscsifs.log"
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("iscsifs-%d.log", os.Geteuid()))
}

// isDaemonChild reports whether this process is the child of mount --daemon.
func isDaemonChild() bool { return os.Getenv(daemonReadyEnv) != "" }

// startDaemon runs the mount in a child process and returns once it is ready
// (nil) or has failed (its error). args are the command line to re-execute;
// the child's stdout and stderr go to logPath.
func startDaemon(args []string, logPath string, stdout io.Writer) error {
	log, err := openLogFile(logPath)
	if err != nil {
		return err
	}
	defer log.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	exe, err := os.Executable()
	if err != nil {
		w.Close()
		return fmt.Errorf("--daemon: %w", err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		w.Close()
		return err
	}
	defer devnull.Close()
	cmd := exec.Command(exe, args[1:]...)
	cmd.Args[0] = args[0]
	cmd.Env = append(os.Environ(), daemonReadyEnv+"=3")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, log, log
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("--daemon: starting the background mount: %w", err)
	}
	w.Close() // the child holds the only write end: EOF means it is gone
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(daemonStartTimeout)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				// The child closed the pipe without a verdict: it died.
				err := <-exited
				return fmt.Errorf("background mount exited before it was ready (%v); see %s", err, logPath)
			}
			switch verdict, rest, _ := strings.Cut(line, " "); verdict {
			case "ready":
				// Devices and the like, as the foreground mount prints them.
				if rest != "" {
					fmt.Fprintln(stdout, strings.ReplaceAll(rest, "\t", "\n"))
				}
				return nil
			case "error":
				<-exited
				return errors.New(rest)
			}
		case <-timeout:
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("background mount not ready after %v; killed it; see %s", daemonStartTimeout, logPath)
		}
	}
}

// openLogFile opens the daemon's log for appending, refusing a file on a file
// system that iscsifs serves.
func openLogFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("--log-file: %w", err)
	}
	if err := checkLogTarget(int(f.Fd()), "--log-file "+path); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// readiness tells whoever waits for the mount that it is ready or failed:
// the parent of mount --daemon, and systemd (NOTIFY_SOCKET).
type readiness struct {
	pipe *os.File // nil unless this is a --daemon child
	log  zerolog.Logger

	mu   sync.Mutex
	out  []string // lines to print (devices), passed to the parent
	done bool
}

// Write collects output lines for the parent until the mount is ready;
// later ones (devices of new partitions) are in the log only.
func (r *readiness) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.done {
		r.out = append(r.out, strings.Split(strings.TrimRight(string(p), "\n"), "\n")...)
	}
	return len(p), nil
}

func newReadiness(log zerolog.Logger) *readiness {
	r := &readiness{log: log}
	// The variable stays set: it is how this process knows it is the child
	// (also after re-executing itself to become an I/O flusher, which keeps
	// fd 3 open).
	if fd, err := strconv.Atoi(os.Getenv(daemonReadyEnv)); err == nil {
		r.pipe = os.NewFile(uintptr(fd), "readiness")
	}
	return r
}

// ready reports success: the parent prints out and exits 0; systemd gets
// READY=1. The daemon then leaves the caller's directory.
func (r *readiness) ready() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	if r.pipe != nil {
		fmt.Fprintf(r.pipe, "ready %s\n", strings.Join(r.out, "\t"))
		r.pipe.Close()
		_ = os.Chdir("/")
	}
	if sent, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		r.log.Warn().Err(err).Msg("telling systemd we are ready")
	} else if sent {
		r.log.Debug().Msg("READY=1 sent to systemd")
	}
}

// failed reports an error that ends the mount before it was ready.
func (r *readiness) failed(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	if r.pipe != nil {
		fmt.Fprintf(r.pipe, "error %s\n", oneLine(err))
		r.pipe.Close()
	}
}

// stopping tells systemd that the mount is shutting down.
func (r *readiness) stopping() {
	if _, err := daemon.SdNotify(false, daemon.SdNotifyStopping); err != nil {
		r.log.Debug().Err(err).Msg("telling systemd we are stopping")
	}
}
