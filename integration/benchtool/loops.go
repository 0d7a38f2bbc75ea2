package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Loop devices and the file systems on them (figures 9 to 11). The registry
// lists them for bench.sh, and its cleanup undoes them before it stops the
// FUSE daemons under them: file systems first, then loop devices.

// loopID is what a loop device is attached to: the inode and device of its
// backing file, as losetup lists them, "" if it is attached to nothing. (The
// path is no good: it changes when the FUSE mount holding the file goes.)
func loopID(dev string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "losetup", "--list", "--noheadings", "-O", "BACK-INO,BACK-MAJ:MIN", dev).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No such device") {
			return "", nil
		}
		return "", fmt.Errorf("losetup --list %s: %v: %s", dev, err, strings.TrimSpace(string(out)))
	}
	return strings.Join(strings.Fields(string(out)), " "), nil
}

// addLoop registers a loop device with what it is attached to now, so that
// the cleanup detaches it only while it still is.
func (r *registry) addLoop(dev string) error {
	id, err := loopID(dev)
	if err != nil {
		return err
	}
	if id == "" {
		return fmt.Errorf("%s is attached to nothing", dev)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loops[dev] = id
	r.save()
	return nil
}

// loopAttached reports whether dev is still attached to what it was when
// registered (false for a device the registry does not know).
func (r *registry) loopAttached(dev string) (bool, error) {
	r.mu.Lock()
	want, ok := r.loops[dev]
	r.mu.Unlock()
	if !ok {
		return false, nil
	}
	id, err := loopID(dev)
	return id == want, err
}

// detachLoop detaches dev if it is still attached to what it was registered
// with, waits until the kernel has let go of the backing file (a device
// still open elsewhere, by udev say, is detached on its last close) and
// forgets it.
func (r *registry) detachLoop(dev string) error {
	ours, err := r.loopAttached(dev)
	if err != nil || !ours {
		r.dropLoop(dev)
		return err
	}
	if _, err := r.run(context.Background(), time.Minute, "losetup", "-d", dev); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ours, err = r.loopAttached(dev); err != nil || !ours {
			r.dropLoop(dev)
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still attached 30 s after losetup -d", dev)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *registry) dropLoop(dev string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.loops, dev)
	r.save()
}

// loopDirectIO reports whether the loop device does direct I/O on its file.
func loopDirectIO(dev string) bool {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop/dio"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// mountFS mounts the ext4 on dev at dir with the options, registered before
// the mount so that a benchtool killed during it leaves nothing bench.sh
// does not know.
func (r *registry) mountFS(ctx context.Context, dev, dir, options string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	r.mu.Lock()
	r.fs[dir] = true
	r.save()
	r.mu.Unlock()
	if _, err := r.run(ctx, 2*time.Minute, "mount", "-t", "ext4", "-o", options, dev, dir); err != nil {
		return errors.Join(err, r.umountFS(dir))
	}
	return nil
}

// umountFS unmounts the file system at dir (lazily if umount fails: nothing
// may hold the device when the daemon under it is stopped) and forgets it.
func (r *registry) umountFS(dir string) error {
	defer func() {
		r.mu.Lock()
		delete(r.fs, dir)
		r.save()
		r.mu.Unlock()
	}()
	if !mounted(dir) {
		return nil
	}
	_, err := r.run(context.Background(), 2*time.Minute, "umount", dir)
	if err == nil {
		return nil
	}
	if _, lerr := r.run(context.Background(), time.Minute, "umount", "-l", dir); lerr != nil {
		return fmt.Errorf("%v; umount -l: %v", err, lerr)
	}
	return fmt.Errorf("%v (unmounted lazily)", err)
}
