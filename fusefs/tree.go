package fusefs

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"
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

// checkEntries validates the entry paths: relative, clean, no "." or ".."
// components, no duplicates, no file that is also a directory, and the status
// directory name kept free when status files are served.
func checkEntries(entries []Entry, status map[string]func() ([]byte, error)) error {
	files := make(map[string]bool, len(entries))
	dirs := make(map[string]bool)
	for _, e := range entries {
		p := e.Path
		if e.File == nil {
			return fmt.Errorf("entry %q has no File", p)
		}
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
		if files[p] {
			return fmt.Errorf("entry path %q is used twice", p)
		}
		if dirs[p] {
			return fmt.Errorf("entry path %q is also the directory of another entry", p)
		}
		files[p] = true
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if files[d] {
				return fmt.Errorf("entry path %q is below the file %q", p, d)
			}
			dirs[d] = true
		}
	}
	for name := range status {
		if name == "" || name == "." || name == ".." || strings.Contains(name, "/") || len(name) > maxNameLen {
			return fmt.Errorf("status file name %q is not a plain file name", name)
		}
	}
	return nil
}

// build creates the static tree below root; it runs from the root's OnAdd,
// before the mount serves any request.
func (m *Server) build(ctx context.Context, root *fs.Inode, entries []Entry, status map[string]func() ([]byte, error)) {
	dirs := map[string]*fs.Inode{".": root}
	var mkdirAll func(p string) *fs.Inode
	mkdirAll = func(p string) *fs.Inode {
		if d, ok := dirs[p]; ok {
			return d
		}
		parent := mkdirAll(path.Dir(p))
		d := parent.NewPersistentInode(ctx, &dirNode{node: node{m: m}, perm: 0o755}, fs.StableAttr{Mode: syscall.S_IFDIR})
		parent.AddChild(path.Base(p), d, false)
		dirs[p] = d
		return d
	}
	for _, e := range entries {
		ln := &lunNode{node: node{m: m}, path: e.Path, file: e.File}
		ch := mkdirAll(path.Dir(e.Path)).NewPersistentInode(ctx, ln, fs.StableAttr{Mode: syscall.S_IFREG})
		dirs[path.Dir(e.Path)].AddChild(path.Base(e.Path), ch, false)
		m.luns[e.Path] = ln
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
