package fusefs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The serving loop. go-fuse's own Server reads /dev/fuse with blocking
// read(2)s, each holding an OS thread (and its P until sysmon takes it back);
// every request then costs thread hand-offs: the woken reader, the goroutine
// that receives the iSCSI answer, the one that replies. On a small machine
// that shares its CPUs with the target and the application, those wake-ups
// were most of the daemon's CPU per request and twice qemu's context
// switches (measured in DESIGN.md, "The serving loop").
//
// Here /dev/fuse is non-blocking and read through Go's netpoller, like a
// socket: a goroutine waiting for a request is parked, not a thread in a
// system call, so a FUSE request, the iSCSI command it becomes, its answer
// and the reply can all run on one thread, goroutine to goroutine. go-fuse
// does the protocol work (a fuse.ProtocolServer over the same node tree) for
// every request but the READs of LUN and partition files, which the loop
// answers itself (readFast).

const (
	// fuseReadBufSize holds any request: a WRITE of maxRequestSize plus its
	// headers (the kernel refuses reads into smaller buffers).
	fuseReadBufSize = maxRequestSize + 64<<10
	// maxIdleReaders bounds the goroutines kept waiting for requests.
	maxIdleReaders = 16
	// fuseOutHeaderSize is struct fuse_out_header.
	fuseOutHeaderSize = 16
	// replyHeadroom covers any fixed-size reply struct before the payload.
	replyHeadroom = 4096
)

// FUSE opcodes and notify codes the loop itself looks at (linux/fuse.h).
const (
	opInit        = 26
	opInterrupt   = 36
	opRead        = 15
	opWrite       = 16
	opFsync       = 20
	opReaddir     = 28
	opReaddirPlus = 44
	opGetXattr    = 22
	opListXattr   = 23

	notifyInvalInode = 2
	notifyInvalEntry = 3
	notifyDelete     = 6
)

// fuseConn serves one mounted FUSE connection.
type fuseConn struct {
	file *os.File // non-blocking /dev/fuse, in the netpoller
	fd   int      // file's descriptor (File.Fd would make it blocking)
	raw  syscall.RawConn
	ps   *fuse.ProtocolServer
	log  func(msg string, args ...any)

	// readFile finds the file a READ is for, which the loop then answers
	// itself (readFast); nil, or a nil result: go-fuse answers.
	readFile  func(nodeID uint64) *lunNode
	fastReads atomic.Int64 // READs answered by readFast (tests)

	mu      sync.Mutex
	readers int // goroutines reading or about to read
	// inflight holds the uniques being handled, with the cancel function
	// of a readFast's context (nil for go-fuse's requests).
	inflight map[uint64]context.CancelFunc
	dead     bool // the connection has gone (ENODEV)
	initDone bool // INIT is answered: more readers may start
	loops    sync.WaitGroup

	inited   chan struct{} // closed once INIT is answered
	initOnce sync.Once

	readBufs sync.Pool
	outBufs  [6]sync.Pool // by size class, see outBuf

	pollAfterWrite time.Duration // Options.PollAfterWrite
	requests       atomic.Int64  // requests read (ServeStats)
	polled         atomic.Int64  // requests read while polling
	grabbed        atomic.Int64  // requests read at once after a reply
}

func newFuseConn(fd int, ps *fuse.ProtocolServer, logf func(string, ...any)) (*fuseConn, error) {
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("/dev/fuse: %w", err)
	}
	c := &fuseConn{
		file:     os.NewFile(uintptr(fd), "/dev/fuse"),
		fd:       fd,
		ps:       ps,
		log:      logf,
		inflight: make(map[uint64]context.CancelFunc),
		inited:   make(chan struct{}),
	}
	raw, err := c.file.SyscallConn()
	if err != nil {
		_ = c.file.Close()
		return nil, fmt.Errorf("/dev/fuse: %w", err)
	}
	c.raw = raw
	c.readBufs.New = func() any { b := make([]byte, fuseReadBufSize); return &b }
	return c, nil
}

// serve starts the loop.
func (c *fuseConn) serve() {
	c.mu.Lock()
	c.readers++
	c.loops.Add(1)
	c.mu.Unlock()
	go c.loop()
}

// wait returns once the connection is gone and every request read has been
// handled, and closes the descriptor.
func (c *fuseConn) wait() {
	c.loops.Wait()
	_ = c.file.Close()
}

// loop reads a request, makes sure another goroutine reads the next one,
// and handles it; it stays a reader while few others wait.
func (c *fuseConn) loop() {
	defer c.loops.Done()
	bufp := c.readBufs.Get().(*[]byte)
	defer c.readBufs.Put(bufp)
	poll := false // the request just handled was a WRITE or FSYNC
	busy := false // other requests were in flight when it was answered
	for {
		n, err := c.readRequest(*bufp, poll, busy)
		if err == nil && n == 0 {
			err = io.ErrUnexpectedEOF // /dev/fuse never reads empty; do not spin on it
		}
		c.mu.Lock()
		c.readers--
		if err != nil {
			errno := errnoOf(err)
			if errno == syscall.ENOENT || errno == syscall.EINTR {
				c.readers++ // the request was interrupted before we read it
				c.mu.Unlock()
				continue
			}
			if !c.dead {
				c.dead = true
				if errno != syscall.ENODEV {
					c.log("reading /dev/fuse", "err", err)
				}
				c.cancelInflightLocked()
			}
			c.mu.Unlock()
			return
		}
		c.requests.Add(1)
		req := (*bufp)[:n]
		unique, opcode := requestID(req)
		var (
			fast        *lunNode
			ctx         context.Context
			cancel      context.CancelFunc
			interrupted bool // an INTERRUPT for a readFast: answered here
		)
		switch {
		case opcode == opRead && c.readFile != nil && len(req) >= int(unsafe.Sizeof(fuse.ReadIn{})):
			if fast = c.readFile(nodeID(req)); fast != nil {
				ctx, cancel = context.WithCancel(context.Background())
			}
		case opcode == opInterrupt && len(req) >= int(unsafe.Sizeof(fuse.InterruptIn{})):
			if cancelRead := c.inflight[(*fuse.InterruptIn)(unsafe.Pointer(&req[0])).Unique]; cancelRead != nil {
				cancelRead()
				interrupted = true
			}
		}
		c.inflight[unique] = cancel
		// No second reader before INIT is answered: go-fuse's
		// ProtocolServer keeps what INIT negotiated in plain fields that
		// every later request reads, so INIT must happen before the go
		// statement that starts any other reader.
		if c.readers == 0 && !c.dead && c.initDone {
			c.readers++
			c.loops.Add(1)
			go c.loop()
		}
		c.mu.Unlock()

		switch {
		case fast != nil:
			c.readFast(fast, req, unique, ctx)
			cancel()
		case !interrupted:
			c.handle(req, unique, opcode)
		}
		poll = c.pollAfterWrite > 0 && (opcode == opWrite || opcode == opFsync)

		c.mu.Lock()
		delete(c.inflight, unique)
		if c.dead || c.readers >= maxIdleReaders {
			c.mu.Unlock()
			return
		}
		busy = len(c.inflight) > 0
		c.readers++
		c.mu.Unlock()
	}
}

// readRequest waits in the netpoller for a request and reads it with a raw
// read(2): entering a system call the runtime's way wakes sysmon from its
// deep sleep, and sysmon then polls every 20 µs for a while; on a virtual
// machine those timer wake-ups cost as much CPU as the requests. With poll,
// it first polls for pollAfterWrite (see there).
func (c *fuseConn) readRequest(buf []byte, poll, busy bool) (int, error) {
	if poll {
		if n, ok, err := c.pollRequest(buf); ok {
			return n, err
		}
	} else if busy {
		// Requests from other threads are coming in: one may be queued
		// already. Taking it now saves the hand-over to the goroutine
		// waiting in the netpoller (and that one's wake-up, which with
		// the P busy waits for the run queue to empty). At queue depth 1
		// nothing is queued after a reply, so there is no try.
		if r, e := rawRead(uintptr(c.fd), buf); e == 0 {
			c.grabbed.Add(1)
			return r, nil
		}
	}
	var (
		n    int
		rerr error
	)
	err := c.raw.Read(func(fd uintptr) bool {
		for {
			r, e := rawRead(fd, buf)
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			case 0:
				n, rerr = r, nil
			default:
				rerr = e
			}
			return true
		}
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// rawRead is one read(2) of the non-blocking /dev/fuse (see readRequest for
// why raw).
func rawRead(fd uintptr, buf []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
	return int(r), e
}

// Polling after a write. A file system on the LUN (through a loop device)
// or a database makes durable writes as a chain: WRITE, answer, FSYNC,
// answer, the next WRITE, each request sent by the kernel a few tens of
// microseconds after the previous answer. Between two of them the loop's
// thread sleeps in the netpoller, and on a virtual machine whose idle CPUs
// halt (this one: haltpoll with guest_halt_poll_ns 0) waking it on its idle
// CPU costs about 26 µs (sched_wakeup traced against fuse_request_send), a
// request's own work being about 10. So after answering a WRITE or FSYNC
// with no other request in flight the loop polls /dev/fuse for a while
// before it sleeps. Reads do not poll: at queue depth 1 polling made their
// 99th percentile worse (about 300 µs against 270), and with requests in
// flight there is always a reader coming.

// pollRequest polls /dev/fuse for up to pollAfterWrite while no request is
// in flight, yielding the P between polls. ok is false when nothing came (or
// another request is being handled: its reader takes the next one).
func (c *fuseConn) pollRequest(buf []byte) (n int, ok bool, err error) {
	for start := time.Now(); time.Since(start) < c.pollAfterWrite; {
		c.mu.Lock()
		busy := len(c.inflight) > 0 || c.dead
		c.mu.Unlock()
		if busy {
			return 0, false, nil
		}
		r, e := rawRead(uintptr(c.fd), buf)
		switch e {
		case 0:
			c.polled.Add(1)
			return r, true, nil
		case syscall.EAGAIN, syscall.EINTR:
		default:
			return 0, true, e
		}
		runtime.Gosched()
	}
	return 0, false, nil
}

// handle has go-fuse answer one request and writes the reply.
func (c *fuseConn) handle(req []byte, unique uint64, opcode uint32) {
	outp := c.outBuf(replySize(req))
	n, status := c.ps.HandleRequest([][]byte{req}, [][]byte{*outp})
	if !status.Ok() {
		c.log("bad FUSE request", "opcode", opcode, "status", status)
		if n == 0 && opcode != opInterrupt && len(req) >= int(unsafe.Sizeof(fuse.InHeader{})) {
			// go-fuse wrote nothing (a request it could not parse, or a
			// reply larger than replySize): answer with the error, or the
			// caller would wait for ever.
			n = errorReply(*outp, unique, status)
		}
	}
	if n > 0 {
		c.reply((*outp)[:n], opcode)
	}
	c.putOutBuf(outp)
	if opcode == opInit {
		c.mu.Lock()
		c.initDone = true
		c.mu.Unlock()
		c.initOnce.Do(func() { close(c.inited) })
	}
}

// The loop answers READs of LUN and partition files itself: go-fuse's
// ProtocolServer decodes the request, looks the node and the handle up under
// its locks, builds a request context and a ReadResult, and encodes the
// reply. Measured on 4 KiB O_DIRECT random reads that miss the cache (8 fio
// jobs, tgtd): 28 µs of the daemon's CPU per read against 31-34 through
// go-fuse. The read itself is the same (lunNode.readInto); the handle is not
// needed (a lunHandle only says whether it may write).

// readFast answers a READ of ln, with ctx as its context, which an INTERRUPT
// for it or the connection's end cancels (loop).
func (c *fuseConn) readFast(ln *lunNode, req []byte, unique uint64, ctx context.Context) {
	in := (*fuse.ReadIn)(unsafe.Pointer(&req[0]))
	size := min(int(in.Size), maxRequestSize)
	outp := c.outBuf(fuseOutHeaderSize + size)
	out := *outp
	got, errno := c.readRecovering(ln, ctx, out[fuseOutHeaderSize:fuseOutHeaderSize+size], int64(in.Offset))
	n := fuseOutHeaderSize + got
	if errno != 0 {
		n = errorReply(out, unique, fuse.Status(errno))
	} else {
		putOutHeader(out, n, unique, fuse.OK)
	}
	c.fastReads.Add(1)
	c.reply(out[:n], opRead)
	c.putOutBuf(outp)
}

// readRecovering is lunNode.readInto, with a panic below turned into EIO
// and logged with its stack, as go-fuse's ProtocolServer does for the
// requests it answers: one broken read must not take the mount down.
func (c *fuseConn) readRecovering(ln *lunNode, ctx context.Context, dest []byte, off int64) (got int, errno syscall.Errno) {
	defer func() {
		if r := recover(); r != nil {
			stack := make([]byte, 64<<10)
			stack = stack[:runtime.Stack(stack, false)]
			c.log("panic in a READ", "path", ln.path, "panic", r, "stack", string(stack))
			got, errno = 0, syscall.EIO
		}
	}()
	return ln.readInto(ctx, dest, off)
}

// nodeID reads the node ID of a request (at least a header long).
func nodeID(req []byte) uint64 {
	return (*fuse.InHeader)(unsafe.Pointer(&req[0])).NodeId
}

// reply writes a reply; a request the kernel no longer waits for is no error.
func (c *fuseConn) reply(b []byte, opcode uint32) {
	if err := c.writeReply(b); err != nil {
		// ENOENT: the request was interrupted and the kernel has
		// forgotten it; ENODEV: unmounted meanwhile.
		if e := errnoOf(err); e != syscall.ENOENT && e != syscall.ENODEV {
			c.log("writing a FUSE reply", "opcode", opcode, "err", err)
		}
	}
}

// writeReply writes one reply. A write to /dev/fuse never blocks, so it
// skips the runtime's system call bookkeeping (see rawWritev in the
// initiator): with it, sysmon hands the P to another thread whenever the
// write (which wakes the application) outlasts a sysmon tick.
func (c *fuseConn) writeReply(b []byte) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(c.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return e
	}
	return nil
}

// cancelInflightLocked interrupts every request being handled, as the kernel
// would one by one: once the connection is gone (aborted through fusectl,
// unmounted by force) nobody waits for their replies, and a request stuck on
// an unreachable target must not keep the daemon from exiting.
func (c *fuseConn) cancelInflightLocked() {
	for unique, cancel := range c.inflight {
		if cancel != nil {
			cancel()
			continue
		}
		var msg [int(unsafe.Sizeof(fuse.InHeader{})) + 8]byte
		h := (*fuse.InHeader)(unsafe.Pointer(&msg[0]))
		h.Length = uint32(len(msg))
		h.Opcode = opInterrupt
		binary.LittleEndian.PutUint64(msg[unsafe.Sizeof(fuse.InHeader{}):], unique)
		var out [fuseOutHeaderSize]byte
		_, _ = c.ps.HandleRequest([][]byte{msg[:]}, [][]byte{out[:]})
	}
}

// errorReply writes a reply carrying only status into out and returns its
// length.
func errorReply(out []byte, unique uint64, status fuse.Status) int {
	putOutHeader(out, fuseOutHeaderSize, unique, status)
	return fuseOutHeaderSize
}

// putOutHeader writes struct fuse_out_header: the reply's length, the
// status as a negative errno, the request's unique.
func putOutHeader(out []byte, length int, unique uint64, status fuse.Status) {
	binary.LittleEndian.PutUint32(out[0:], uint32(length))
	binary.LittleEndian.PutUint32(out[4:], uint32(-int32(status)))
	binary.LittleEndian.PutUint64(out[8:], unique)
}

// requestID reads the unique and the opcode of a request (the kernel never
// sends less than a header).
func requestID(req []byte) (uint64, uint32) {
	if len(req) < int(unsafe.Sizeof(fuse.InHeader{})) {
		return 0, 0
	}
	h := (*fuse.InHeader)(unsafe.Pointer(&req[0]))
	return h.Unique, h.Opcode
}

// replySize is the largest reply req can get: the fixed part plus the
// payload the kernel asked for.
func replySize(req []byte) int {
	_, opcode := requestID(req)
	const hdr = int(unsafe.Sizeof(fuse.InHeader{}))
	payload := 0
	switch opcode {
	case opRead, opReaddir, opReaddirPlus:
		if len(req) >= int(unsafe.Sizeof(fuse.ReadIn{})) {
			payload = int((*fuse.ReadIn)(unsafe.Pointer(&req[0])).Size)
		}
	case opGetXattr, opListXattr:
		if len(req) >= hdr+4 {
			payload = int(binary.LittleEndian.Uint32(req[hdr:]))
		}
	}
	return fuseOutHeaderSize + replyHeadroom + min(payload, maxRequestSize)
}

// outBuf returns a buffer of at least n bytes from the pools: 8 KiB up to
// 2 MiB in powers of four.
func (c *fuseConn) outBuf(n int) *[]byte {
	size, class := 8<<10, 0
	for size < n && class < len(c.outBufs)-1 {
		size, class = size*4, class+1
	}
	if size < n {
		b := make([]byte, n)
		return &b
	}
	if p, ok := c.outBufs[class].Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, size)
	return &b
}

func (c *fuseConn) putOutBuf(p *[]byte) {
	size, class := 8<<10, 0
	for size < len(*p) && class < len(c.outBufs)-1 {
		size, class = size*4, class+1
	}
	if size == len(*p) {
		c.outBufs[class].Put(p)
	}
}

func errnoOf(err error) syscall.Errno {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return 0
}

// notify writes an unsolicited message (unique 0, the code in the error
// field) to the kernel.
func (c *fuseConn) notify(code int32, body ...[]byte) fuse.Status {
	select {
	case <-c.inited:
	default:
		return fuse.ENOSYS // the kernel has not even sent INIT
	}
	var msg bytes.Buffer
	size := fuseOutHeaderSize
	for _, b := range body {
		size += len(b)
	}
	var hdr [fuseOutHeaderSize]byte
	binary.LittleEndian.PutUint32(hdr[0:], uint32(size))
	binary.LittleEndian.PutUint32(hdr[4:], uint32(code))
	msg.Write(hdr[:])
	for _, b := range body {
		msg.Write(b)
	}
	if _, err := c.file.Write(msg.Bytes()); err != nil {
		if e := errnoOf(err); e != 0 {
			return fuse.Status(e)
		}
		return fuse.EIO
	}
	return fuse.OK
}

// notifier gives the node tree (fs.Options.ServerCallbacks) the kernel
// notifications it uses. The tree is built before the connection exists, so
// the connection is set once it does; until then every notification is
// ENOSYS, as it is before INIT.
type notifier struct{ conn atomic.Pointer[fuseConn] }

func (n *notifier) send(code int32, body ...[]byte) fuse.Status {
	c := n.conn.Load()
	if c == nil {
		return fuse.ENOSYS
	}
	return c.notify(code, body...)
}

func (n *notifier) InodeNotify(node uint64, off int64, length int64) fuse.Status {
	var b [24]byte
	binary.LittleEndian.PutUint64(b[0:], node)
	binary.LittleEndian.PutUint64(b[8:], uint64(off))
	binary.LittleEndian.PutUint64(b[16:], uint64(length))
	return n.send(notifyInvalInode, b[:])
}

func (n *notifier) EntryNotify(parent uint64, name string) fuse.Status {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], parent)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(name)))
	return n.send(notifyInvalEntry, b[:], append([]byte(name), 0))
}

func (n *notifier) DeleteNotify(parent uint64, child uint64, name string) fuse.Status {
	var b [24]byte
	binary.LittleEndian.PutUint64(b[0:], parent)
	binary.LittleEndian.PutUint64(b[8:], child)
	binary.LittleEndian.PutUint32(b[16:], uint32(len(name)))
	return n.send(notifyDelete, b[:], append([]byte(name), 0))
}

func (n *notifier) InodeRetrieveCache(uint64, int64, []byte) (int, fuse.Status) {
	return 0, fuse.ENOSYS
}

func (n *notifier) InodeNotifyStoreCache(uint64, int64, []byte) fuse.Status {
	return fuse.ENOSYS
}

// pollHackName is the file go-fuse's ProtocolServer serves for pollHack.
const pollHackName = ".go-fuse-epoll-hack"

// pollHack makes the kernel ask the mount for POLL once, which go-fuse
// answers ENOSYS, so that it never asks again. Otherwise the first
// epoll_ctl on one of the mount's files (the runtime adds every file this
// process opens, e.g. the loop device's backing file for --attach, to its
// epoll set) sends a POLL and waits for its answer, holding the epoll set
// that the request loop waits in: a deadlock.
func pollHack(dir string) error {
	fd, err := syscall.Open(dir+"/"+pollHackName, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}
	_, err = unix.Poll(fds, 0)
	return err
}

// mountFUSE mounts dir with fusermount3 (as go-fuse does: root or not, the
// setuid helper does the mount and hands back the /dev/fuse descriptor).
func mountFUSE(dir string, opts *fuse.MountOptions) (int, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socketpair", err)
	}
	local := os.NewFile(uintptr(fds[0]), "fusermount-local")
	remote := os.NewFile(uintptr(fds[1]), "fusermount-remote")
	defer local.Close()
	defer remote.Close()
	bin, err := fusermountBinary()
	if err != nil {
		return -1, err
	}
	cmd := exec.Command(bin, "-o", strings.Join(mountOptionStrings(opts), ","), "--", dir)
	cmd.Env = []string{"_FUSE_COMMFD=3"}
	cmd.ExtraFiles = []*os.File{remote}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return -1, fmt.Errorf("%s: %s", bin, msg)
		}
		return -1, fmt.Errorf("%s: %w", bin, err)
	}
	return receiveFD(local)
}

// receiveFD reads the descriptor fusermount3 sends over the socket.
func receiveFD(sock *os.File) (int, error) {
	var data [4]byte
	oob := make([]byte, syscall.CmsgSpace(4))
	n, oobn, _, _, err := syscall.Recvmsg(int(sock.Fd()), data[:], oob, 0)
	if err != nil {
		return -1, os.NewSyscallError("recvmsg", err)
	}
	if n == 0 || oobn == 0 {
		return -1, errors.New("fusermount3 sent no /dev/fuse descriptor")
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return -1, fmt.Errorf("fusermount3's message: %v", err)
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return -1, fmt.Errorf("fusermount3's descriptor: %v", err)
	}
	syscall.CloseOnExec(fds[0])
	return fds[0], nil
}

// mountOptionStrings are the -o options for fusermount3, escaped.
func mountOptionStrings(o *fuse.MountOptions) []string {
	r := append([]string(nil), o.Options...)
	if o.AllowOther {
		r = append(r, "allow_other")
	}
	if o.FsName != "" {
		r = append(r, "fsname="+o.FsName)
	}
	if o.Name != "" {
		r = append(r, "subtype="+o.Name)
	}
	r = append(r, fmt.Sprintf("max_read=%d", o.MaxWrite))
	for i, s := range r {
		r[i] = strings.NewReplacer(`\`, `\\`, `,`, `\,`).Replace(s)
	}
	return r
}

// unmountFUSE unmounts dir with fusermount3 -u, retrying a few times: the
// kernel may not have processed the last close of a file yet.
func unmountFUSE(dir string) error {
	bin, err := fusermountBinary()
	if err != nil {
		return err
	}
	delay := time.Duration(0)
	for try := 0; ; try++ {
		var stderr bytes.Buffer
		cmd := exec.Command(bin, "-u", dir)
		cmd.Stderr = &stderr
		err = cmd.Run()
		if err == nil {
			return nil
		}
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			err = errors.New(msg)
		}
		if try == 4 {
			return err
		}
		delay = 2*delay + 5*time.Millisecond
		time.Sleep(delay)
	}
}

func fusermountBinary() (string, error) {
	for _, name := range []string{"fusermount3", "/bin/fusermount3", "fusermount", "/bin/fusermount"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("fusermount3 not found (Debian package fuse3)")
}
