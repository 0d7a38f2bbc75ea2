package main

// Figures 9 to 11: a file system on the disk. Each run of each contestant
// turns the third LUN into a loop device (iscsifs mount --attach; or
// qemu-storage-daemon's FUSE export under losetup --direct-io=on), makes
// ext4 on it, mounts it, runs the job, and takes everything down again:
// umount, the loop device, the FUSE mount, the daemon; also when the run
// fails.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

const (
	fsLUN       = 3         // the LUN figures 9 to 11 make ext4 on
	fsWriteSize = 128 << 20 // the file figure 10 writes into
	fsReadSize  = 512 << 20 // the file figure 11 reads
)

// qsdName is the peer of figures 9 to 11.
const qsdName = "qemu-storage-daemon+loop"

// blockDev is a LUN as a loop device.
type blockDev struct {
	dev   string
	close func() error // takes the device and everything under it down
	// stats, for iscsifs, reads the cache counters of the LUN file.
	stats func() (cacheCounters, error)
}

type cacheCounters struct {
	Hits          int64 `json:"hits"`
	Misses        int64 `json:"misses"`
	UncachedReads int64 `json:"uncached_reads"`
	DeviceReads   int64 `json:"device_reads"`
}

type attachFunc func(ctx context.Context, lun int) (*blockDev, error)

// attachQSD exports the LUN with qemu-storage-daemon's FUSE export and
// attaches the file to a loop device, with direct I/O unless qsdPeer found
// that it loses data.
func (b *bench) attachQSD(ctx context.Context, lun int) (*blockDev, error) {
	b.qsdPeer()
	if b.qsdErr != nil {
		return nil, b.qsdErr
	}
	return b.attachQSDLoop(ctx, lun, *b.qsdDIO)
}

func (b *bench) attachQSDLoop(ctx context.Context, lun int, dio bool) (*blockDev, error) {
	m, err := b.mountQSD(ctx, lun, true)
	if err != nil {
		return nil, err
	}
	opt := map[bool]string{true: "--direct-io=on", false: "--direct-io=off"}[dio]
	p, err := b.reg.run(ctx, time.Minute, "losetup", "-f", "--show", opt, m.file)
	if err != nil {
		return nil, errors.Join(err, m.close())
	}
	dev := lastLine(p.stdout.String())
	if err := b.reg.addLoop(dev); err != nil {
		return nil, errors.Join(err, m.close())
	}
	if dio && !loopDirectIO(dev) {
		logf("losetup --direct-io=on %s: %s has no direct I/O: %s", m.file, dev, lastLine(p.stderr.String()))
	}
	return &blockDev{dev: dev, close: func() error {
		return errors.Join(b.reg.detachLoop(dev), m.close())
	}}, nil
}

// qsdPeer returns the name of the peer of figures 9 to 11, deciding first
// (once) how its loop device does I/O. Direct I/O, as iscsifs --attach
// does, if 32 MiB written through the device land on the LUN as they
// should; else buffered. (qemu-storage-daemon's FUSE export, as in Debian
// 12's qemu 7.2, writes the wrong data when writes come in parallel, as they
// do from a loop device with direct I/O: its fuse_write hands the request
// buffer to the block layer, which polls, and the next request is read into
// the same buffer meanwhile. Fixed upstream in 2025 by "fuse: Copy write
// buffer content before polling".)
func (b *bench) qsdPeer() string {
	if b.qsdDIO == nil {
		dio := true
		if err := b.probeQSD(true); err != nil {
			logf("figures 9-11: qemu-storage-daemon's FUSE export under a loop device with direct I/O: %v; its loop device does buffered I/O", err)
			dio = false
			if err := b.probeQSD(false); err != nil {
				b.qsdErr = fmt.Errorf("the data written through the loop device is lost with and without direct I/O: %w", err)
			}
		}
		b.qsdDIO = &dio
	}
	if !*b.qsdDIO {
		return qsdName + " (no dio)"
	}
	return qsdName
}

// probeQSD writes 32 MiB of the first LUN through the peer's loop device
// onto the file system LUN (buffered, so that the kernel writes back in
// parallel) and compares the LUN's backing file with them.
func (b *bench) probeQSD(dio bool) error {
	const size = 32 * mib
	d, err := b.attachQSDLoop(b.ctx, fsLUN, dio)
	if err != nil {
		return err
	}
	src := b.tg.BackingFile(diskIQN, 1)
	_, err = b.reg.run(b.ctx, time.Minute, "dd", "if="+src, "of="+d.dev, "bs=1M", fmt.Sprintf("count=%d", size/mib), "conv=fsync")
	if err == nil {
		if err = sameBytes(src, b.tg.BackingFile(diskIQN, fsLUN), size); err != nil {
			err = fmt.Errorf("the LUN differs from what was written: %w", err)
		}
	}
	return errors.Join(err, d.close())
}

// attachOurs runs `iscsifs mount --attach` and takes the LUN file's device
// from status.json.
func (b *bench) attachOurs(ctx context.Context, lun int) (*blockDev, error) {
	m, err := b.startOurs(ctx, lun, true, b.cfg.cacheMiB, "--attach")
	if err != nil {
		return nil, err
	}
	file := fmt.Sprintf("lun%d", lun)
	status := filepath.Join(m.mountpoint, ".iscsifs", "status.json")
	var dev string
	for deadline := time.Now().Add(30 * time.Second); dev == ""; {
		var st struct {
			Targets []struct {
				LUNs []struct {
					Path   string `json:"path"`
					Device string `json:"device"`
				} `json:"luns"`
			} `json:"targets"`
		}
		data, err := os.ReadFile(status)
		if err == nil {
			err = json.Unmarshal(data, &st)
		}
		for _, t := range st.Targets {
			for _, l := range t.LUNs {
				if l.Path == file {
					dev = l.Device
				}
			}
		}
		if dev != "" {
			break
		}
		if m.daemon.exited() {
			return nil, errors.Join(fmt.Errorf("iscsifs mount --attach exited: %s", lastLine(m.daemon.output())), m.close())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, errors.Join(fmt.Errorf("%s: no device for %s within 30 s (%v)", status, file, err), ctx.Err(), m.close())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := b.reg.addLoop(dev); err != nil {
		return nil, errors.Join(err, m.close())
	}
	if !loopDirectIO(dev) {
		logf("iscsifs --attach: %s has no direct I/O", dev)
	}
	stats := func() (cacheCounters, error) {
		var st struct {
			Files map[string]cacheCounters `json:"files"`
		}
		data, err := os.ReadFile(filepath.Join(m.mountpoint, ".iscsifs", "stats.json"))
		if err == nil {
			err = json.Unmarshal(data, &st)
		}
		return st.Files[file], err
	}
	return &blockDev{dev: dev, stats: stats, close: func() error {
		// iscsifs detaches its devices (autoclear) once no file system
		// holds them, then flushes and unmounts.
		err := m.close()
		if ours, lerr := b.reg.loopAttached(dev); ours || lerr != nil {
			return errors.Join(err, lerr, fmt.Errorf("%s still attached after iscsifs exited", dev), b.reg.detachLoop(dev))
		}
		b.reg.dropLoop(dev)
		return err
	}}, nil
}

// onExt4 attaches the LUN, makes ext4 on the device, mounts it, runs fn on
// the mount point and takes it all down.
//
// Neither mkfs nor the kernel zeroes anything: no inode tables, no journal
// (lazy_itable_init, lazy_journal_init, noinit_itable), so that the devices
// see the same writes and no background thread competes with the run. It is
// also what makes ext4 work on qemu-storage-daemon's export: a loop device
// turns a zeroing request into a hole punched in its file, which that export
// passes on as a discard, a mere hint that the LUN (tgt without thin
// provisioning) ignores.
func (b *bench) onExt4(ctx context.Context, attach attachFunc, fn func(dir string, d *blockDev) (float64, error)) (float64, error) {
	return b.withFS(ctx, attach, true, "noinit_itable", fn)
}

// withFS attaches the LUN, makes ext4 on the device if mkfs is set, mounts
// it with the options, runs fn on the mount point and takes it all down.
func (b *bench) withFS(ctx context.Context, attach attachFunc, mkfs bool, options string, fn func(dir string, d *blockDev) (float64, error)) (v float64, err error) {
	d, err := attach(ctx, fsLUN)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := d.close(); cerr != nil && err == nil {
			err = fmt.Errorf("taking %s down: %w", d.dev, cerr)
		}
	}()
	if mkfs {
		if _, err := b.reg.run(ctx, 5*time.Minute, "mkfs.ext4", "-F", "-q",
			"-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", d.dev); err != nil {
			return 0, err
		}
	}
	dir := filepath.Join(b.cfg.dir, "ext4")
	if err := b.reg.mountFS(ctx, d.dev, dir, options); err != nil {
		return 0, err
	}
	defer func() {
		if uerr := b.reg.umountFS(dir); uerr != nil && err == nil {
			err = uerr
		}
	}()
	return fn(dir, d)
}

// dropCaches writes back and drops the kernel's page cache, dentries and
// inodes.
func dropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
}

// fsCopy is figure 9: cp -a of a tree (in memory) onto the ext4, then sync
// of that file system, in seconds. The first run of each contestant
// compares the copy with the tree after dropping the caches.
func (b *bench) fsCopy() []row {
	tree := filepath.Join(b.cfg.dir, "tree")
	peer := b.qsdPeer()
	fail := func(err error) []row {
		return failedRows("9", "ext4 on loop: copy of a tree + sync", "s", 1.2, true, err, peer)
	}
	if b.cfg.tree == "" {
		return fail(errors.New("no tree to copy (-tree)"))
	}
	defer os.RemoveAll(tree)
	if _, err := b.reg.run(b.ctx, 10*time.Minute, "cp", "-a", b.cfg.tree, tree); err != nil {
		return fail(err)
	}
	files, size, err := treeSize(tree)
	if err != nil {
		return fail(err)
	}
	copyRun := func(attach attachFunc) func(context.Context) (float64, error) {
		checked := false
		return func(ctx context.Context) (float64, error) {
			return b.onExt4(ctx, attach, func(dir string, _ *blockDev) (float64, error) {
				dst := filepath.Join(dir, "tree")
				syscall.Sync()
				d1, err := b.reg.timed(ctx, 10*time.Minute, "cp", "-a", tree, dst)
				if err != nil {
					return 0, err
				}
				d2, err := b.reg.timed(ctx, 10*time.Minute, "sync", "-f", dir)
				if err != nil {
					return 0, err
				}
				if !checked {
					if err := dropCaches(); err != nil {
						return 0, err
					}
					if _, err := b.reg.run(ctx, 10*time.Minute, "diff", "-r", "-q", "--no-dereference", tree, dst); err != nil {
						return 0, fmt.Errorf("the copy differs: %v", err)
					}
					checked = true
				}
				return (d1 + d2).Seconds(), nil
			})
		}
	}
	r := b.contest("9", "s",
		contestant{peer, copyRun(b.attachQSD)},
		contestant{"iscsifs --attach", copyRun(b.attachOurs)})
	what := fmt.Sprintf("ext4 on loop: copy %.0f MB in %d files + sync", float64(size)/1e6, files)
	return compareRows("9", what, "s", r, 1.2, true)
}

// treeSize counts the regular files under dir and their bytes.
func treeSize(dir string) (files int, size int64, err error) {
	err = filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		files++
		size += info.Size()
		return nil
	})
	return files, size, err
}

// fsRandWrite is figure 10: fio 4 KiB random overwrites of a file on the
// ext4, one job, psync, fsync after every write.
func (b *bench) fsRandWrite(attach attachFunc) func(context.Context) (float64, error) {
	return func(ctx context.Context) (float64, error) {
		return b.onExt4(ctx, attach, func(dir string, _ *blockDev) (float64, error) {
			return b.fio(ctx, "write", fioArgs("randwrite", filepath.Join(dir, "fio-write"), b.cfg.seconds,
				fmt.Sprintf("--size=%d", fsWriteSize), "--overwrite=1", "--ioengine=psync", "--numjobs=1", "--fsync=1")...)
		})
	}
}

// fsRandRead is figure 11: fio lays a file out on the ext4 and everything
// is taken down; on a fresh stack (attached by reattach, nothing in any
// cache), with the file system mounted read-only, after drop_caches: 4 KiB
// O_DIRECT random reads of the file, one job, psync. Read-only, the peer's
// loop device can do direct I/O even where qsdPeer found that it loses
// writes with it.
func (b *bench) fsRandRead(attach, reattach attachFunc) func(context.Context) (float64, error) {
	return func(ctx context.Context) (float64, error) {
		const name = "fio-read"
		size := fmt.Sprintf("--size=%d", fsReadSize)
		if _, err := b.onExt4(ctx, attach, func(dir string, _ *blockDev) (float64, error) {
			_, err := b.reg.run(ctx, 10*time.Minute, "fio", "--name=layout", "--filename="+filepath.Join(dir, name), size,
				"--rw=read", "--bs=1M", "--create_only=1")
			return 0, err
		}); err != nil {
			return 0, fmt.Errorf("laying the file out: %w", err)
		}
		return b.withFS(ctx, reattach, false, "ro", func(dir string, d *blockDev) (float64, error) {
			if !loopDirectIO(d.dev) {
				return 0, fmt.Errorf("%s does no direct I/O", d.dev)
			}
			if err := dropCaches(); err != nil {
				return 0, err
			}
			var before cacheCounters
			if d.stats != nil {
				before, _ = d.stats()
			}
			v, err := b.fio(ctx, "read", fioArgs("randread", filepath.Join(dir, name), b.cfg.seconds,
				size, "--direct=1", "--ioengine=psync", "--numjobs=1")...)
			if d.stats != nil && err == nil {
				if after, serr := d.stats(); serr == nil {
					logf("figure 11: iscsifs cache during the reads: %d hits, %d misses (%d read around the cache), %d device reads",
						after.Hits-before.Hits, after.Misses-before.Misses, after.UncachedReads-before.UncachedReads, after.DeviceReads-before.DeviceReads)
				}
			}
			return v, err
		})
	}
}

// attachQSDDirect is attachQSD with direct I/O whatever qsdPeer found.
func (b *bench) attachQSDDirect(ctx context.Context, lun int) (*blockDev, error) {
	return b.attachQSDLoop(ctx, lun, true)
}
