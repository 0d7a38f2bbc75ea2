package fusefs

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// statusDirName is the top-level directory that holds Options.StatusFiles.
const statusDirName = ".iscsifs"

// maxNameLen is the longest path component (NAME_MAX).
const maxNameLen = 255

// node is what every node of the tree has: its inode and the mount.
type node struct {
	fs.Inode
	m *Server
}

// Statfs answers for every node: the kernel sends STATFS for the inode of the
// path given to statfs(2).
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	n.m.statfs(out)
	return 0
}

// dirNode is a directory: the root, one per target IQN, or the status dir.
type dirNode struct {
	node
	perm uint32
}

var (
	_ = (fs.NodeGetattrer)((*dirNode)(nil))
	_ = (fs.NodeStatfser)((*dirNode)(nil))
)

func (n *dirNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.m.fillAttr(&out.Attr, n.perm)
	out.Nlink = 2
	return 0
}

// checkEntries validates the entry and lazy directory paths: relative, clean,
// no "." or ".." components, no duplicates, nothing below a file or a lazy
// directory, and the status directory name kept free when status files are
// served.
func checkEntries(entries []Entry, lazy []LazyDir, status map[string]func() ([]byte, error)) error {
	leaves := make(map[string]string, len(entries)+len(lazy)) // path: "file" or "lazy directory"
	dirs := make(map[string]bool)
	add := func(p, kind string) error {
		if p == "" || path.IsAbs(p) || path.Clean(p) != p {
			return fmt.Errorf("entry path %q is not a clean relative path", p)
		}
		for _, c := range strings.Split(p, "/") {
			if c == "." || c == ".." || len(c) > maxNameLen {
				return fmt.Errorf("entry path %q has an invalid component %q", p, c)
			}
		}
		if len(status) > 0 && strings.Split(p, "/")[0] == statusDirName {
			return fmt.Errorf("entry path %q collides with the status directory %s", p, statusDirName)
		}
		if leaves[p] != "" {
			return fmt.Errorf("entry path %q is used twice", p)
		}
		if dirs[p] {
			return fmt.Errorf("entry path %q is also the directory of another entry", p)
		}
		leaves[p] = kind
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if k := leaves[d]; k != "" {
				return fmt.Errorf("entry path %q is below the %s %q", p, k, d)
			}
			dirs[d] = true
		}
		return nil
	}
	for _, e := range entries {
		if e.File == nil {
			return fmt.Errorf("entry %q has no File", e.Path)
		}
		if err := add(e.Path, "file"); err != nil {
			return err
		}
	}
	for _, ld := range lazy {
		if ld.Load == nil {
			return fmt.Errorf("lazy directory %q has no Load", ld.Path)
		}
		if err := add(ld.Path, "lazy directory"); err != nil {
			return err
		}
	}
	for name := range status {
		if name == "" || name == "." || name == ".." || strings.Contains(name, "/") || len(name) > maxNameLen {
			return fmt.Errorf("status file name %q is not a plain file name", name)
		}
	}
	return nil
}

// build creates the tree below root; it runs from the root's OnAdd, before
// the mount serves any request. Lazy directories are empty until loaded.
func (m *Server) build(ctx context.Context, root *fs.Inode, entries []Entry, lazy []LazyDir, status map[string]func() ([]byte, error)) {
	dirs := m.addEntries(ctx, root, "", entries)
	for _, ld := range lazy {
		parent := mkdirAll(ctx, m, dirs, path.Dir(ld.Path))
		n := &lazyDirNode{dirNode: dirNode{node: node{m: m}, perm: 0o755}, path: ld.Path, load: ld.Load}
		parent.AddChild(path.Base(ld.Path), parent.NewPersistentInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFDIR}), false)
	}
	if len(status) == 0 {
		return
	}
	sd := root.NewPersistentInode(ctx, &dirNode{node: node{m: m}, perm: 0o555}, fs.StableAttr{Mode: syscall.S_IFDIR})
	root.AddChild(statusDirName, sd, false)
	names := make([]string, 0, len(status))
	for name := range status {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		sn := &statusNode{node: node{m: m}, path: statusDirName + "/" + name, gen: status[name]}
		sd.AddChild(name, sd.NewPersistentInode(ctx, sn, fs.StableAttr{Mode: syscall.S_IFREG}), false)
	}
}

// addEntries creates the files of entries (paths relative to base, whose own
// path in the mount is basePath) and the directories they need. It returns
// the directories by relative path ("." is base).
func (m *Server) addEntries(ctx context.Context, base *fs.Inode, basePath string, entries []Entry) map[string]*fs.Inode {
	dirs := map[string]*fs.Inode{".": base}
	m.lunsMu.Lock()
	defer m.lunsMu.Unlock()
	for _, e := range entries {
		full := path.Join(basePath, e.Path)
		ln := &lunNode{node: node{m: m}, path: full, file: e.File}
		parent := mkdirAll(ctx, m, dirs, path.Dir(e.Path))
		parent.AddChild(path.Base(e.Path), parent.NewPersistentInode(ctx, ln, fs.StableAttr{Mode: syscall.S_IFREG}), false)
		m.addLunLocked(full, ln)
	}
	return dirs
}

// mkdirAll returns the directory at relative path p, creating it and its
// parents in dirs as needed.
func mkdirAll(ctx context.Context, m *Server, dirs map[string]*fs.Inode, p string) *fs.Inode {
	if d, ok := dirs[p]; ok {
		return d
	}
	parent := mkdirAll(ctx, m, dirs, path.Dir(p))
	d := parent.NewPersistentInode(ctx, &dirNode{node: node{m: m}, perm: 0o755}, fs.StableAttr{Mode: syscall.S_IFDIR})
	parent.AddChild(path.Base(p), d, false)
	dirs[p] = d
	return d
}

// lazyDirNode is a LazyDir: Load runs at the first lookup in it or listing of
// it, and again at the next one if it failed.
type lazyDirNode struct {
	dirNode
	path string
	load func(ctx context.Context) ([]Entry, error)

	mu     sync.Mutex // held while loading, so concurrent first uses wait for one Load
	loaded bool
}

var (
	_ = (fs.NodeLookuper)((*lazyDirNode)(nil))
	_ = (fs.NodeOpendirer)((*lazyDirNode)(nil))
)

func (n *lazyDirNode) ensureLoaded(ctx context.Context) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.loaded {
		return 0
	}
	entries, err := n.load(ctx)
	if err == nil {
		err = checkEntries(entries, nil, nil)
	}
	if err != nil {
		return n.m.fail(ctx, "load directory", n.path, err)
	}
	n.m.addEntries(ctx, n.EmbeddedInode(), n.path, entries)
	n.loaded = true
	return 0
}

func (n *lazyDirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.ensureLoaded(ctx); errno != 0 {
		return nil, errno
	}
	ch := n.GetChild(name)
	if ch == nil {
		return nil, syscall.ENOENT
	}
	if ga, ok := ch.Operations().(fs.NodeGetattrer); ok {
		var a fuse.AttrOut
		if errno := ga.Getattr(ctx, nil, &a); errno == 0 {
			out.Attr = a.Attr
		}
	}
	return ch, 0
}

func (n *lazyDirNode) Opendir(ctx context.Context) syscall.Errno {
	return n.ensureLoaded(ctx)
}
