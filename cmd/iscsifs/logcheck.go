package main

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/iscsifs/iscsifs/fusefs"
)

// checkLogTarget refuses a log (the file behind fd) that lives on a file
// system an iscsifs mount serves: directly (a file in a fuse.iscsifs mount)
// or through a loop device over one of its files. Writing the log would
// then dirty pages whose writeback needs an iscsifs daemon, which under
// memory pressure may be waiting for that very writeback to make room.
func checkLogTarget(fd int, what string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil // a terminal, a pipe, /dev/null: not a file system
	}
	mounts, err := fusefs.ReadMountInfo()
	if err != nil {
		return nil // no mountinfo: nothing to compare with
	}
	served, why := servedByIscsifs(mounts, unix.Major(st.Dev), unix.Minor(st.Dev))
	if !served {
		return nil
	}
	return fmt.Errorf("%s is on %s, which iscsifs serves: under memory pressure the daemon could wait on its own log's writeback; log to a local file system", what, why)
}

// servedByIscsifs reports whether the file system on device major:minor is
// an iscsifs mount or sits on a loop device backed by a file in one.
func servedByIscsifs(mounts []fusefs.MountInfo, major, minor uint32) (bool, string) {
	for _, m := range mounts {
		if m.Major != major || m.Minor != minor {
			continue
		}
		if m.FSType == "fuse.iscsifs" {
			return true, "the iscsifs mount " + m.Dir
		}
		backing, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/loop/backing_file", major, minor))
		if err != nil {
			return false, ""
		}
		file := strings.TrimSpace(string(backing))
		if owner := mountOf(mounts, file); owner != nil && owner.FSType == "fuse.iscsifs" {
			return true, fmt.Sprintf("%s (%s on %s, a file of the iscsifs mount %s)", m.Dir, m.Source, file, owner.Dir)
		}
		return false, ""
	}
	return false, ""
}

// mountOf returns the mount holding path: the longest mount directory that
// is path or one of its parents.
func mountOf(mounts []fusefs.MountInfo, path string) *fusefs.MountInfo {
	var best *fusefs.MountInfo
	for i := range mounts {
		d := mounts[i].Dir
		if (path == d || strings.HasPrefix(path, strings.TrimSuffix(d, "/")+"/")) && (best == nil || len(d) >= len(best.Dir)) {
			best = &mounts[i]
		}
	}
	return best
}
