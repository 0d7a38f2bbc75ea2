package fusefs

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// CheckMountpoint returns the absolute, symlink-free form of dir, or an error
// that names dir and says why nothing can be mounted there: it does not exist,
// is not a directory, or is a mount point already (fusermount3 happily stacks a
// second mount on a busy directory, hiding the first one). [Mount] checks
// this itself; callers with slow work to do before Mount (logging in to
// targets) call it first to fail fast.
func CheckMountpoint(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("mountpoint %s does not exist", dir)
	case errors.Is(err, syscall.ENOTCONN):
		return "", fmt.Errorf("mountpoint %s is a FUSE mount whose server has gone away; unmount it first with fusermount3 -u %s", dir, abs)
	case err != nil:
		return "", fmt.Errorf("mountpoint %s: %w", dir, err)
	case !fi.IsDir():
		return "", fmt.Errorf("mountpoint %s is not a directory", dir)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	busy, err := isMountPoint(real)
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	if busy {
		return "", fmt.Errorf("mountpoint %s is busy: a file system is already mounted there (unmount it first, e.g. fusermount3 -u %s)", dir, real)
	}
	return real, nil
}

// isMountPoint reports whether the clean absolute path dir is the root of a
// mount: its device differs from its parent's, or (for bind mounts and mounts
// of the same device) /proc/self/mountinfo lists it.
func isMountPoint(dir string) (bool, error) {
	if dir == "/" {
		return true, nil
	}
	var st, parent syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return false, err
	}
	if err := syscall.Stat(filepath.Dir(dir), &parent); err != nil {
		return false, err
	}
	if st.Dev != parent.Dev {
		return true, nil
	}
	mounts, err := ReadMountInfo()
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // no procfs: the device comparison is all we have
	}
	if err != nil {
		return false, err
	}
	for _, m := range mounts {
		if m.Dir == dir {
			return true, nil
		}
	}
	return false, nil
}

// MountInfo is one mount of /proc/self/mountinfo.
type MountInfo struct {
	Major, Minor uint32 // the device of the file system
	Dir          string // the mount point
	FSType       string // e.g. "ext4", "fuse.iscsifs"
	Source       string // e.g. "/dev/loop3", "iscsifs"
}

// ReadMountInfo lists this process's mounts.
func ReadMountInfo() ([]MountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []MountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(tail) < 2 {
			continue
		}
		maj, min, ok := strings.Cut(fields[2], ":")
		major, err1 := strconv.ParseUint(maj, 10, 32)
		minor, err2 := strconv.ParseUint(min, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		out = append(out, MountInfo{
			Major: uint32(major), Minor: uint32(minor),
			Dir: unescapeMountinfo(fields[4]), FSType: tail[0], Source: unescapeMountinfo(tail[1]),
		})
	}
	return out, sc.Err()
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space, \011,
// \012, \134) in a mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
