package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/iscsifs/iscsifs/fusefs"
	"github.com/iscsifs/iscsifs/initiator"
	"github.com/iscsifs/iscsifs/loopdev"
	"github.com/iscsifs/iscsifs/partition"
)

// tableArea is how much of each end of a LUN a partition table may occupy:
// the MBR and the primary GPT (header and 128 entries: 34 sectors of 512
// bytes, 6 of 4096) at the start, the backup GPT at the end. A write there
// makes the next flush, fsync or close read the table again.
const tableArea = 64 << 10

// diskState is what a LUN file knows about its partition table and its
// partition files.
type diskState struct {
	mu    sync.Mutex // serialises reading the table and changing the files
	parts map[int]*partFile
	// areas are the byte ranges where a write can change the table: both
	// ends of the LUN, and extended partitions outside their logical ones
	// (the chain of extended boot records lives there).
	areas      atomic.Pointer[tableAreas]
	tableDirty atomic.Bool
	scheme     partition.Scheme
}

type tableAreas struct {
	extended [][2]int64 // [start, end)
	logical  [][2]int64
}

// WriteAt writes through the cache and notes a write where a partition
// table lives.
func (f *lunFile) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := f.Cache.WriteAtContext(ctx, p, off)
	if n > 0 && f.touchesTable(off, off+int64(n)) {
		f.disk.tableDirty.Store(true)
	}
	return n, err
}

func (f *lunFile) touchesTable(off, end int64) bool {
	if off < tableArea || end > f.Cache.Size()-tableArea {
		return true
	}
	a := f.disk.areas.Load()
	if a == nil {
		return false
	}
	inside := func(rs [][2]int64) bool {
		for _, r := range rs {
			if off >= r[0] && end <= r[1] {
				return true
			}
		}
		return false
	}
	for _, r := range a.extended {
		if off < r[1] && end > r[0] && !inside(a.logical) {
			return true
		}
	}
	return false
}

// Flush writes back dirty data (every close of a writable handle does it),
// then reads the partition table again if a write may have changed it: this
// is how the part files follow sfdisk or parted, which close the disk after
// writing a table.
func (f *lunFile) Flush(ctx context.Context) error {
	err := f.Cache.Flush(ctx)
	f.rescanIfDirty(ctx)
	return err
}

// Sync is Flush made durable; tools that write a table also fsync it.
func (f *lunFile) SyncContext(ctx context.Context) error {
	err := f.Cache.SyncContext(ctx)
	f.rescanIfDirty(ctx)
	return err
}

func (f *lunFile) rescanIfDirty(ctx context.Context) {
	if f.disk.tableDirty.Swap(false) {
		f.m.rescan(ctx, f, "partition table written")
	}
}

// cacheReader reads through a LUN file's cache with a context, for the
// partition parser.
type cacheReader struct {
	ctx context.Context
	f   *lunFile
}

func (r cacheReader) ReadAt(p []byte, off int64) (int, error) {
	return r.f.Cache.ReadAtContext(r.ctx, p, off)
}

// readTable reads f's partition table. A table that cannot be read leaves
// the LUN without part files (a warning), never fails the mount.
func (m *mounted) readTable(ctx context.Context, f *lunFile) *partition.Table {
	t, err := partition.Read(cacheReader{ctx, f}, f.Cache.Size(), f.lun.BlockSize())
	if err != nil {
		m.log.Warn().Err(err).Str("file", f.path).Msg("reading the partition table")
		return &partition.Table{}
	}
	for _, w := range t.Warnings {
		m.log.Warn().Str("file", f.path).Str("table", string(t.Scheme)).Msg(w)
	}
	if t.BackupGPT {
		m.log.Warn().Str("file", f.path).Msg("primary GPT damaged; using the backup GPT")
	}
	return t
}

// wantedParts are the partitions that get a file: primary and logical ones
// (an extended partition only holds others).
func wantedParts(t *partition.Table) map[int]partition.Partition {
	out := map[int]partition.Partition{}
	for _, p := range t.Partitions {
		if p.Kind != partition.Extended && p.Size > 0 {
			out[p.Number] = p
		}
	}
	return out
}

func (d *diskState) setAreas(t *partition.Table) {
	a := &tableAreas{}
	for _, p := range t.Partitions {
		r := [2]int64{p.Start, p.Start + p.Size}
		switch p.Kind {
		case partition.Extended:
			a.extended = append(a.extended, r)
		case partition.Logical:
			a.logical = append(a.logical, r)
		}
	}
	d.areas.Store(a)
}

// initParts reads f's table when the LUN is opened and returns the part
// files' entries (paths relative like the LUN's, e.g. "lun1-part1").
func (m *mounted) initParts(ctx context.Context, f *lunFile, name string) []fusefs.Entry {
	t := m.readTable(ctx, f)
	f.disk.mu.Lock()
	defer f.disk.mu.Unlock()
	f.disk.setAreas(t)
	f.disk.scheme = t.Scheme
	f.disk.parts = map[int]*partFile{}
	var entries []fusefs.Entry
	want := wantedParts(t)
	for _, n := range sortedKeys(want) {
		pf := f.newPartFile(want[n])
		f.disk.parts[n] = pf
		entries = append(entries, fusefs.Entry{Path: fmt.Sprintf("%s-part%d", name, n), File: pf})
	}
	if len(entries) > 0 {
		m.log.Info().Str("file", f.path).Str("table", string(t.Scheme)).Int("partitions", len(entries)).Msg("partition table")
	}
	return entries
}

func sortedKeys[V any](m map[int]V) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// rescan reads f's table again and makes the part files (and with --attach
// their devices) follow: a partition that went away or moved loses its file
// and device, unless the device is busy (then both stay, with a warning); a
// new one gets both. The files change before rescan returns, so they are
// there when the close(2) or fsync(2) that triggered it returns; devices
// follow in the background (attaching opens files in this mount, which must
// not wait inside the request that triggered the rescan).
func (m *mounted) rescan(ctx context.Context, f *lunFile, why string) {
	srv := m.srv.Load()
	if srv == nil {
		return // still opening: initParts runs after the open
	}
	t := m.readTable(ctx, f)
	want := wantedParts(t)
	f.disk.mu.Lock()
	defer f.disk.mu.Unlock()
	f.disk.setAreas(t)
	f.disk.scheme = t.Scheme
	var gone, added []*partFile
	for n, pf := range f.disk.parts {
		if p, ok := want[n]; ok && p.Start == pf.part.Start && p.Size == pf.part.Size {
			pf.part = p // type or name may change in place
			delete(want, n)
			continue
		}
		if dev := pf.device(); dev != nil {
			if busy, _ := dev.Busy(); busy {
				m.log.Warn().Str("file", pf.path).Str("device", dev.Path()).Strs("held_by", dev.Holders()).
					Msg("partition changed in the table but its device is busy; keeping the old one until it is free and the table is read again")
				delete(want, n)
				continue
			}
		}
		gone = append(gone, pf)
		delete(f.disk.parts, n)
		if err := srv.RemoveFile(pf.path); err != nil {
			m.log.Warn().Err(err).Str("file", pf.path).Msg("removing a partition file")
		}
	}
	for _, n := range sortedKeys(want) {
		pf := f.newPartFile(want[n])
		if err := srv.AddFile(pf.path, pf); err != nil {
			m.log.Warn().Err(err).Str("file", pf.path).Msg("adding a partition file")
			continue
		}
		f.disk.parts[n] = pf
		added = append(added, pf)
	}
	if len(gone)+len(added) == 0 {
		return
	}
	m.log.Info().Str("file", f.path).Str("why", why).Str("table", string(t.Scheme)).
		Int("added", len(added)).Int("removed", len(gone)).Msg("partition files changed")
	if m.devs != nil {
		go m.devs.follow(gone, added)
	}
}

// newPartFile is the file of partition p of f, at "lunN-partM" beside f.
func (f *lunFile) newPartFile(p partition.Partition) *partFile {
	return &partFile{lun: f, part: p, path: fmt.Sprintf("%s-part%d", f.path, p.Number)}
}

// partitions returns f's part files by number.
func (f *lunFile) partitions() []*partFile {
	f.disk.mu.Lock()
	defer f.disk.mu.Unlock()
	out := make([]*partFile, 0, len(f.disk.parts))
	for _, n := range sortedKeys(f.disk.parts) {
		out = append(out, f.disk.parts[n])
	}
	return out
}

// partFile is one partition of a LUN: a window on the LUN file's cache, so
// that lunN and lunN-partM always agree.
type partFile struct {
	lun  *lunFile
	part partition.Partition // fixed while the file is in the mount
	path string              // in the mount, e.g. "lun1-part2"
	dev  atomic.Pointer[loopdev.Device]
}

var (
	_ fusefs.File      = (*partFile)(nil)
	_ fusefs.Discarder = (*partFile)(nil)
	_ fusefs.Seeker    = (*partFile)(nil)
)

func (p *partFile) device() *loopdev.Device { return p.dev.Load() }

func (p *partFile) Size() int64    { return p.part.Size }
func (p *partFile) ReadOnly() bool { return p.lun.ReadOnly() }

// within checks a request against the partition's bounds; fusefs already cuts
// requests at Size, so this guards against a shrunken LUN.
func (p *partFile) within(off, n int64) error {
	if off < 0 || off+n > p.part.Size || p.part.Start+off+n > p.lun.Cache.Size() {
		return &initiator.RangeError{Off: off, Len: n, Size: p.part.Size}
	}
	return nil
}

func (p *partFile) ReadAtContext(ctx context.Context, b []byte, off int64) (int, error) {
	if off >= p.part.Size {
		return 0, io.EOF
	}
	var eof error
	if rest := p.part.Size - off; int64(len(b)) > rest {
		b, eof = b[:rest], io.EOF
	}
	if err := p.within(off, int64(len(b))); err != nil {
		return 0, err
	}
	n, err := p.lun.Cache.ReadAtContext(ctx, b, p.part.Start+off)
	if err == nil {
		err = eof
	}
	return n, err
}

func (p *partFile) WriteAtContext(ctx context.Context, b []byte, off int64) (int, error) {
	if err := p.within(off, int64(len(b))); err != nil {
		return 0, err
	}
	return p.lun.WriteAtContext(ctx, b, p.part.Start+off)
}

func (p *partFile) Flush(ctx context.Context) error       { return p.lun.Flush(ctx) }
func (p *partFile) SyncContext(ctx context.Context) error { return p.lun.SyncContext(ctx) }

func (p *partFile) Discard(ctx context.Context, off, length int64) error {
	if err := p.within(off, length); err != nil {
		return err
	}
	return p.lun.Discard(ctx, p.part.Start+off, length)
}

func (p *partFile) Seek(ctx context.Context, off int64, hole bool) (int64, error) {
	pos, err := p.lun.Seek(ctx, p.part.Start+off, hole)
	if err != nil {
		return 0, err
	}
	return min(max(pos-p.part.Start, off), p.part.Size), nil
}
