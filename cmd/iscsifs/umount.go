package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/iscsifs/iscsifs/fusefs"
)

func umountCommand() *cli.Command {
	return &cli.Command{
		Name:      "umount",
		Usage:     "flush, unmount and wait for the mount's daemon to exit",
		ArgsUsage: "MOUNTPOINT",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "lazy", Aliases: []string{"l"}, Usage: "detach now even if busy; the daemon exits once the last user is gone"},
			&cli.DurationFlag{Name: "timeout", Usage: "how long to wait for the daemon to flush and exit", Value: 5 * time.Minute},
		},
		Action: umountAction,
	}
}

func umountAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("umount: want exactly one argument, the mount point")
	}
	dir, err := filepath.Abs(c.Args().First())
	if err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	mounts, err := fusefs.ReadMountInfo()
	if err != nil {
		return fmt.Errorf("umount: %w", err)
	}
	if !isIscsifsMount(mounts, dir) {
		return fmt.Errorf("umount: %s is not an iscsifs mount", dir)
	}
	var st mountStatus
	if err := readJSON(filepath.Join(dir, ".iscsifs", statusFile), &st); err != nil || st.PID <= 0 {
		// The daemon is gone (ENOTCONN) or too old to say its pid: detach.
		if uerr := syscall.Unmount(dir, syscall.MNT_DETACH); uerr != nil {
			return fmt.Errorf("umount %s: %w", dir, uerr)
		}
		return nil
	}
	if !c.Bool("lazy") {
		if held := holdersOf(dir, st, mounts); len(held) > 0 {
			return fmt.Errorf("umount %s: busy: %s", dir, strings.Join(held, "; "))
		}
	}
	// The daemon flushes, detaches its devices, unmounts and logs out on
	// SIGTERM; a lazy umount detaches first so that nothing new can start.
	if c.Bool("lazy") {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("umount %s: %w", dir, err)
		}
	}
	if err := syscall.Kill(st.PID, syscall.SIGTERM); err != nil {
		return fmt.Errorf("umount %s: signalling its daemon (pid %d): %w", dir, st.PID, err)
	}
	if c.Bool("lazy") {
		return nil // it exits when the last open file is closed
	}
	deadline := time.Now().Add(c.Duration("timeout"))
	for processAlive(st.PID) {
		if time.Now().After(deadline) {
			return fmt.Errorf("umount %s: its daemon (pid %d) has not exited after %v; it may still be flushing (see its log)", dir, st.PID, c.Duration("timeout"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if stillMounted(dir) {
		return fmt.Errorf("umount %s: the daemon (pid %d) exited but the mount is still there; check its log", dir, st.PID)
	}
	return nil
}

// isIscsifsMount reports whether mounts has an iscsifs mount at dir.
func isIscsifsMount(mounts []fusefs.MountInfo, dir string) bool {
	for _, m := range mounts {
		if m.Dir == dir && m.FSType == "fuse.iscsifs" {
			return true
		}
	}
	return false
}

func stillMounted(dir string) bool {
	mounts, err := fusefs.ReadMountInfo()
	return err == nil && isIscsifsMount(mounts, dir)
}

// processAlive reports whether pid is still running (and not a zombie).
func processAlive(pid int) bool {
	fields, err := procStat(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && len(fields) > 0 && fields[0] != "Z"
}

// holdersOf names what keeps the mount at dir busy: processes with a file,
// directory or mapping in it, and file systems mounted on its devices.
func holdersOf(dir string, st mountStatus, mounts []fusefs.MountInfo) []string {
	var held []string
	for _, t := range st.Targets {
		for _, l := range t.LUNs {
			devs := map[string]string{l.Path: l.Device}
			for _, p := range l.Partitions {
				devs[p.Path] = p.Device
			}
			for file, dev := range devs {
				for _, m := range mounts {
					if dev != "" && m.Source == dev {
						held = append(held, fmt.Sprintf("%s (%s) is mounted at %s", dev, file, m.Dir))
					}
				}
			}
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == st.PID || pid == os.Getpid() {
			continue
		}
		if what := usesDir(pid, dir); what != "" {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			held = append(held, fmt.Sprintf("pid %d (%s) %s", pid, strings.TrimSpace(string(comm)), what))
		}
	}
	return held
}

// usesDir says how process pid uses something below dir, "" if it does not.
func usesDir(pid int, dir string) string {
	inside := func(p string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	base := fmt.Sprintf("/proc/%d/", pid)
	for _, link := range []string{"cwd", "root"} {
		if p, err := os.Readlink(base + link); err == nil && inside(p) {
			return "has its " + link + " there"
		}
	}
	fds, _ := os.ReadDir(base + "fd")
	for _, fd := range fds {
		if p, err := os.Readlink(base + "fd/" + fd.Name()); err == nil && inside(p) {
			return "has " + p + " open"
		}
	}
	maps, _ := os.ReadFile(base + "maps")
	for _, line := range strings.Split(string(maps), "\n") {
		if i := strings.Index(line, " /"); i >= 0 && inside(strings.TrimSpace(line[i:])) {
			return "has " + strings.TrimSpace(line[i:]) + " mapped"
		}
	}
	return ""
}
