package fusefs

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

const (
	// maxRequestSize is go-fuse's MaxWrite, which also sets max_read and
	// max_pages: reads and writes of up to 1 MiB reach us as one request
	// (the go-fuse default is 128 KiB). 1 MiB is the kernel's limit.
	maxRequestSize = 1 << 20
	// maxBackground raises the kernel's limit on asynchronous requests in
	// flight (12 by default), so that many reads can wait on the target at
	// once.
	maxBackground = 128
	// cacheTimeout is how long the kernel may cache entries and attributes.
	// The tree never changes, and size changes are pushed with NotifySize;
	// go-fuse would otherwise default to 0 (a LOOKUP per access).
	cacheTimeout = time.Hour
	// mountInitTimeout bounds the wait for the kernel's INIT after the
	// mount (it comes at once).
	mountInitTimeout = 30 * time.Second
)

// Options configure a mount.
type Options struct {
	// AllowOther lets other users than the mounting one use the mount (the
	// allow_other mount option; needs user_allow_other in /etc/fuse.conf for
	// non-root). The kernel then checks the files' modes (default_permissions
	// is always set).
	AllowOther bool
	// ReadOnly mounts read-only ("ro"): every file is 0444 and any write or
	// write open fails with EROFS.
	ReadOnly bool
	// Logger receives the warnings about failed requests and go-fuse's own
	// messages. The zero Logger discards everything.
	Logger *slog.Logger
	// FSName is the source column of mount(8) and df(1); "iscsifs" if empty.
	// The type is always fuse.iscsifs.
	FSName string
	// Debug logs every FUSE request and reply at debug level (Logger's
	// level must let debug through).
	Debug bool
	// StatusFiles are served as read-only files under a ".iscsifs" directory
	// at the top; each function is called on every open of its file.
	StatusFiles map[string]func() ([]byte, error)
	// ErrnoMappers turn errors of the Files into errnos; they run in order
	// before the defaults (see ErrnoMapper).
	ErrnoMappers []ErrnoMapper
	// LazyDirs are directories whose files are made on first use.
	LazyDirs []LazyDir
	// PollAfterWrite is how long the loop polls /dev/fuse after answering
	// a WRITE or FSYNC with no other request in flight, before it sleeps
	// in the netpoller; 0 never polls. See pollAfterWrite in serve.go.
	PollAfterWrite time.Duration
}

// Server is a mounted tree, from Mount until it is unmounted (by Unmount or
// from outside, e.g. fusermount3 -u).
type Server struct {
	dir      string
	server   *fuseConn // nil until mounted
	log      *slog.Logger
	mappers  []ErrnoMapper
	readOnly bool
	uid, gid uint32
	start    time.Time
	lunsMu   sync.RWMutex
	luns     map[string]*lunNode // by path in the mount; lazy directories and AddFile add to it
	byNode   map[uint64]*lunNode // the same files by FUSE node ID (see readFile); lunsMu
	root     *fs.Inode           // set by OnAdd, before the mount serves
	done     chan struct{}       // closed when the serve loop has ended
	dev      [2]uint32           // the mount's device (major, minor), once mounted
}

// Mount mounts entries at mountpoint and serves them until unmounted. The
// mountpoint must be an existing directory that is not a mount point already.
func Mount(mountpoint string, entries []Entry, opts Options) (*Server, error) {
	if err := checkEntries(entries, opts.LazyDirs, opts.StatusFiles); err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	dir, err := CheckMountpoint(mountpoint)
	if err != nil {
		return nil, err
	}
	m := &Server{
		dir:      dir,
		log:      orDiscard(opts.Logger),
		mappers:  opts.ErrnoMappers,
		readOnly: opts.ReadOnly,
		uid:      uint32(os.Geteuid()),
		gid:      uint32(os.Getegid()),
		start:    time.Now(),
		luns:     make(map[string]*lunNode, len(entries)),
		byNode:   make(map[uint64]*lunNode, len(entries)),
		done:     make(chan struct{}),
	}
	root := &dirNode{node: node{m: m}, perm: 0o755}
	fsOpts := m.fsOptions(opts)
	fsOpts.OnAdd = func(ctx context.Context) {
		m.root = root.EmbeddedInode()
		m.build(ctx, root.EmbeddedInode(), entries, opts.LazyDirs, opts.StatusFiles)
	}
	notes := &notifier{}
	fsOpts.ServerCallbacks = notes
	ps := fuse.NewProtocolServer(fs.NewNodeFS(root, fsOpts), &fsOpts.MountOptions)
	fd, err := mountFUSE(dir, &fsOpts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	conn, err := newFuseConn(fd, ps, func(msg string, args ...any) { m.log.Warn(msg, args...) })
	if conn != nil {
		conn.pollAfterWrite = opts.PollAfterWrite
		if !opts.Debug { // go-fuse logs every request it answers
			conn.readFile = m.readFile
		}
	}
	if err != nil {
		_ = unmountFUSE(dir)
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	notes.conn.Store(conn)
	conn.serve()
	go func() {
		conn.wait()
		close(m.done)
	}()
	select {
	case <-conn.inited:
	case <-m.done:
		// An abort through fusectl leaves the mountpoint in place: take it
		// down, as every other failure after mountFUSE does.
		_ = unmountFUSE(dir)
		return nil, fmt.Errorf("mount %s: the kernel closed the connection before INIT", dir)
	case <-time.After(mountInitTimeout):
		_ = unmountFUSE(dir)
		return nil, fmt.Errorf("mount %s: no INIT from the kernel within %v", dir, mountInitTimeout)
	}
	m.server = conn
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err == nil {
		m.dev = [2]uint32{unix.Major(st.Dev), unix.Minor(st.Dev)}
	}
	if err := pollHack(dir); err != nil {
		m.log.Warn("could not tell the kernel that the mount does not poll", "err", err)
	}
	m.log.Info("mounted", "mountpoint", dir, "files", len(entries), "read_only", opts.ReadOnly)
	return m, nil
}

// fsOptions are the go-fuse settings; the reasons are in DESIGN.md
// ("Settings and pitfalls that matter") and next to the constants.
func (m *Server) fsOptions(opts Options) *fs.Options {
	timeout := cacheTimeout
	name := opts.FSName
	if name == "" {
		name = "iscsifs"
	}
	level := slog.LevelWarn
	if opts.Debug {
		level = slog.LevelDebug
	}
	stdlog := log.New(logWriter{log: m.log, level: level}, "", 0)
	mountOpts := []string{"default_permissions"}
	if opts.ReadOnly {
		mountOpts = append(mountOpts, "ro")
	}
	return &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:    opts.AllowOther,
			Options:       mountOpts,
			MaxBackground: maxBackground,
			MaxWrite:      maxRequestSize,
			FsName:        name,
			Name:          "iscsifs",
			// No xattrs: otherwise the kernel asks for security.capability
			// before every write.
			DisableXAttrs: true,
			// No splice: every reply comes from memory (ReadResultData),
			// never from a file descriptor, so go-fuse's splice attempt
			// only costs a pipe round trip and then falls back; for a 1 MiB
			// read it cannot even grow the pipe past pipe-max-size (1 MiB)
			// and logs a warning on every read.
			DisableSplice: true,
			Debug:         opts.Debug,
			Logger:        stdlog,
			// Reads stay asynchronous (SyncRead false): the kernel may
			// send many reads of one file at once.
			//
			// DIRECT_IO_ALLOW_MMAP (Linux 6.6+) keeps shared mmap working
			// on our FOPEN_DIRECT_IO files (without it mmap(MAP_SHARED)
			// fails with ENODEV). ASYNC_DIO lets the kernel split an
			// O_DIRECT or AIO request larger than 1 MiB into concurrent
			// requests. go-fuse only keeps the ones the kernel offers.
			ExtraCapabilities: fuse.CAP_DIRECT_IO_ALLOW_MMAP | fuse.CAP_ASYNC_DIO,
		},
		// The kernel's node IDs are our inode numbers, which never
		// change for a node's life: readFile finds a file by the node ID
		// of a READ without asking go-fuse.
		ExternalNodeID:  true,
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		UID:             m.uid,
		GID:             m.gid,
		Logger:          stdlog,
	}
}

// logWriter turns go-fuse's log.Logger lines into log records.
type logWriter struct {
	log   *slog.Logger
	level slog.Level
}

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Log(context.Background(), w.level, strings.TrimRight(string(p), "\n"), "component", "go-fuse")
	return len(p), nil
}

// Dir is the absolute mountpoint.
func (m *Server) Dir() string {
	return m.dir
}

// Wait returns when the file system has been unmounted, by Unmount or from
// outside (fusermount3 -u).
func (m *Server) Wait() {
	<-m.done
}

// Mounted reports whether the file system is still attached at its
// mountpoint: a lazy unmount from outside (fusermount3 -u -z, umount -l)
// detaches it while open files, such as a loop device's, keep it served and
// Wait waiting.
func (m *Server) Mounted() bool {
	ok, err := isMountPoint(m.dir)
	return ok || err != nil
}

// Unmount unmounts cleanly (it fails while files are open). Flushing dirty
// data is the caller's job, through the Files, before Unmount. Unmounting an
// already unmounted file system is not an error.
func (m *Server) Unmount() error {
	select {
	case <-m.done:
		// The connection is gone. After an abort (fusectl, or the kernel
		// giving up on us) the mount stays, dead ("transport endpoint is
		// not connected"), until it is unmounted: do that, as long as
		// the mount at dir is still ours.
		if !m.deadMountLeft() {
			return nil
		}
		if err := unmountFUSE(m.dir); err != nil {
			return fmt.Errorf("unmount %s: %w", m.dir, err)
		}
		m.log.Info("unmounted the mount whose connection was gone", "mountpoint", m.dir)
		return nil
	default:
	}
	if err := unmountFUSE(m.dir); err != nil {
		return fmt.Errorf("unmount %s: %w", m.dir, err)
	}
	<-m.done
	m.log.Info("unmounted", "mountpoint", m.dir)
	return nil
}

// deadMountLeft reports whether the mount at dir is still the one Mount
// made (its device), after its connection has ended.
func (m *Server) deadMountLeft() bool {
	if m.dev == [2]uint32{} {
		return false
	}
	mounts, err := ReadMountInfo()
	if err != nil {
		return false
	}
	for _, mi := range mounts {
		if mi.Dir == m.dir && mi.Major == m.dev[0] && mi.Minor == m.dev[1] {
			return true
		}
	}
	return false
}

// NotifySize makes the kernel forget the attributes (and any mmap pages) of
// the file at path, so that the next stat sees the File's new Size.
func (m *Server) NotifySize(path string) error {
	m.lunsMu.RLock()
	n, ok := m.luns[path]
	m.lunsMu.RUnlock()
	if !ok {
		return fmt.Errorf("fusefs: no file %q in the mount", path)
	}
	switch errno := n.NotifyContent(0, 0); errno {
	case 0, syscall.ENOENT: // ENOENT: the kernel has never looked it up
		return nil
	default:
		return fmt.Errorf("fusefs: refresh size of %s: %w", path, errno)
	}
}

// AddFile adds a file while the mount serves, e.g. a partition that a new
// partition table defines. Its directory must exist: the root or a target
// directory that has been loaded. The kernel forgets any cached "no such
// file" for the name.
func (m *Server) AddFile(p string, f File) error {
	if err := checkEntries([]Entry{{Path: p, File: f}}, nil, nil); err != nil {
		return fmt.Errorf("fusefs: add %s: %w", p, err)
	}
	parent, err := m.dirOf(p)
	if err != nil {
		return err
	}
	name := path.Base(p)
	ln := &lunNode{node: node{m: m}, path: p, file: f}
	m.lunsMu.Lock()
	if _, ok := m.luns[p]; ok || parent.GetChild(name) != nil {
		m.lunsMu.Unlock()
		return fmt.Errorf("fusefs: add %s: the name is taken", p)
	}
	parent.AddChild(name, parent.NewPersistentInode(context.Background(), ln, fs.StableAttr{Mode: syscall.S_IFREG}), false)
	m.addLunLocked(p, ln)
	m.lunsMu.Unlock()
	m.forgetEntry(parent, name)
	return nil
}

// RemoveFile takes a file added by Mount, a LazyDir or AddFile out of the
// tree. Handles open on it keep working (the File stays in use until they
// are closed); new lookups get ENOENT.
func (m *Server) RemoveFile(p string) error {
	parent, err := m.dirOf(p)
	if err != nil {
		return err
	}
	name := path.Base(p)
	m.lunsMu.Lock()
	ln, ok := m.luns[p]
	if !ok {
		m.lunsMu.Unlock()
		return fmt.Errorf("fusefs: remove %s: no such file in the mount", p)
	}
	delete(m.luns, p)
	// Handles still open on it are served by go-fuse from now on.
	delete(m.byNode, ln.StableAttr().Ino)
	parent.RmChild(name)
	m.lunsMu.Unlock()
	m.forgetEntry(parent, name)
	return nil
}

// ServeStats counts what the serving loop has done since the mount.
type ServeStats struct {
	Requests int64 `json:"requests"` // read from the kernel
	// ReadsByLoop are the READs of LUN and partition files the loop
	// answered itself, without go-fuse's ProtocolServer.
	ReadsByLoop int64 `json:"reads_answered_by_loop"`
	// TakenAfterReply were read right after a reply, while other requests
	// were in flight, without waiting in the netpoller.
	TakenAfterReply int64 `json:"taken_after_reply"`
	// ReadWhilePolling came while the loop polled after a WRITE or FSYNC
	// (Options.PollAfterWrite).
	ReadWhilePolling int64 `json:"read_while_polling"`
}

// ServeStats returns the serving loop's counters (zero before Mount has
// returned).
func (m *Server) ServeStats() ServeStats {
	c := m.server
	if c == nil {
		return ServeStats{}
	}
	return ServeStats{
		Requests:         c.requests.Load(),
		ReadsByLoop:      c.fastReads.Load(),
		TakenAfterReply:  c.grabbed.Load(),
		ReadWhilePolling: c.polled.Load(),
	}
}

// addLunLocked registers a file just added to the tree; lunsMu is held.
func (m *Server) addLunLocked(p string, ln *lunNode) {
	m.luns[p] = ln
	m.byNode[ln.StableAttr().Ino] = ln
}

// readFile returns the LUN or partition file whose FUSE node ID is id, or
// nil (a directory, a status file, a file removed since): go-fuse then
// answers the request.
func (m *Server) readFile(id uint64) *lunNode {
	m.lunsMu.RLock()
	ln := m.byNode[id]
	m.lunsMu.RUnlock()
	return ln
}

// dirOf returns the directory inode that holds (or will hold) the file at p.
func (m *Server) dirOf(p string) (*fs.Inode, error) {
	if m.root == nil {
		return nil, fmt.Errorf("fusefs: %s: not mounted", p)
	}
	dir := m.root
	if d := path.Dir(p); d != "." {
		for _, c := range strings.Split(d, "/") {
			if dir = dir.GetChild(c); dir == nil || !dir.IsDir() {
				return nil, fmt.Errorf("fusefs: %s: no directory %s in the mount", p, d)
			}
		}
	}
	return dir, nil
}

// forgetEntry makes the kernel drop its cached lookup of name in parent
// (entries and negative entries are cached for cacheTimeout). It must not
// run from a request that holds parent's lock (LOOKUP, CREATE); FLUSH, FSYNC
// and WRITE do not.
func (m *Server) forgetEntry(parent *fs.Inode, name string) {
	if m.server == nil {
		return // still in Mount: the kernel has seen nothing yet
	}
	switch errno := parent.NotifyEntry(name); errno {
	case 0, syscall.ENOENT:
	default:
		m.log.Debug("invalidating a directory entry", "name", name, "err", errno)
	}
}

// fillAttr sets what all nodes share: permissions, the mounting user as
// owner, and the mount time as every timestamp.
func (m *Server) fillAttr(a *fuse.Attr, perm uint32) {
	a.Mode = perm
	a.Uid, a.Gid = m.uid, m.gid
	a.Nlink = 1
	a.SetTimes(&m.start, &m.start, &m.start)
}

// statfs reports the total size of the files in 4 KiB blocks, none free.
func (m *Server) statfs(out *fuse.StatfsOut) {
	const bsize = 4096
	var total int64
	m.lunsMu.RLock()
	files := len(m.luns)
	for _, n := range m.luns {
		total += n.file.Size()
	}
	m.lunsMu.RUnlock()
	*out = fuse.StatfsOut{
		Blocks:  uint64(total / bsize),
		Files:   uint64(files),
		Bsize:   bsize,
		NameLen: maxNameLen,
		Frsize:  bsize,
	}
}

// orDiscard is l, or a logger that drops everything when l is nil.
func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
