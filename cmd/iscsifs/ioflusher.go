package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// pfMemallocNOIO is the task flag PR_SET_IO_FLUSHER sets (with
// PF_LOCAL_THROTTLE); /proc/PID/task/TID/stat shows it in field 9.
const pfMemallocNOIO = 0x00080000

// ioFlusherEnv marks the process re-executed by becomeIOFlusher.
const ioFlusherEnv = "ISCSIFS_IO_FLUSHER_EXEC"

// becomeIOFlusher marks every thread of the daemon an I/O flusher
// (PR_SET_IO_FLUSHER), as iscsid does: a file system on our loop devices
// turns memory reclaim into writeback that only this process can perform,
// and a thread of ours that reclaims memory must not wait for it. The flag
// makes the kernel allocate for our threads without starting or waiting for
// I/O, and exempts us from dirty throttling of other devices.
//
// The flag is per thread and inherited by threads cloned later. A pure-Go
// binary sets it on every thread at once; a cgo binary (the race detector
// needs cgo) cannot, so it sets it on this thread and re-executes itself:
// execve keeps the flag and every later thread inherits it. Without
// CAP_SYS_RESOURCE nothing changes (a debug line).
func becomeIOFlusher(log zerolog.Logger) {
	if ioFlusherAll() {
		log.Debug().Msg("every thread is an I/O flusher")
		return
	}
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_IO_FLUSHER, 1, 0)
	switch {
	case errno == 0:
		log.Debug().Msg("marked an I/O flusher (PR_SET_IO_FLUSHER)")
		return
	case errno == syscall.EPERM:
		log.Debug().Msg("not marked an I/O flusher: PR_SET_IO_FLUSHER needs CAP_SYS_RESOURCE")
		return
	case errno != syscall.ENOTSUP:
		log.Debug().Err(errno).Msg("not marked an I/O flusher")
		return
	}
	if os.Getenv(ioFlusherEnv) != "" {
		log.Warn().Msg("re-executed to become an I/O flusher, but some threads are not")
		return
	}
	runtime.LockOSThread() // the thread that execs must be the one marked
	if err := unix.Prctl(unix.PR_SET_IO_FLUSHER, 1, 0, 0, 0); err != nil {
		runtime.UnlockOSThread()
		log.Debug().Err(err).Msg("not marked an I/O flusher")
		return
	}
	exe, err := os.Executable()
	if err == nil {
		err = syscall.Exec(exe, os.Args, append(os.Environ(), ioFlusherEnv+"=1"))
	}
	runtime.UnlockOSThread()
	log.Warn().Err(err).Msg("not marked an I/O flusher: re-executing failed")
}

// ioFlusherAll reports whether every thread of this process has the flag.
func ioFlusherAll() bool {
	tids, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return false
	}
	for _, t := range tids {
		flags, err := taskFlags("/proc/self/task/" + t.Name() + "/stat")
		if err != nil || flags&pfMemallocNOIO == 0 {
			return false
		}
	}
	return len(tids) > 0
}

// taskFlags reads the flags of a task from its /proc stat file.
func taskFlags(path string) (uint64, error) {
	fields, err := procStat(path)
	if err != nil {
		return 0, err
	}
	if len(fields) < 7 {
		return 0, fmt.Errorf("%s: %d fields", path, len(fields))
	}
	return strconv.ParseUint(fields[6], 10, 64) // field 9 of stat
}

// procStat returns the fields of a /proc stat file after the command name,
// starting with the state (field 3). The name in field 2 may hold spaces and
// parentheses, so the fields count from the last ')'.
func procStat(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, errors.New(path + ": no command name")
	}
	return strings.Fields(s[i+1:]), nil
}
