package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/iscsifs/iscsifs/initiator"
)

func cpCommand() *cli.Command {
	return &cli.Command{
		Name:  "cp",
		Usage: "copy a LUN to a local file, block device or '-' (stdout), or one of those to a LUN",
		ArgsUsage: "SRC DST   (one an iscsi://host[:port]/iqn/lun URL, the other a path or '-')\n\n" +
			"An interrupted copy (Ctrl-C) finishes the requests in flight, reports how far it got and\n" +
			"the --offset to resume with. Copying into a LUN ends with SYNCHRONIZE CACHE; into a file\n" +
			"or block device with fsync only with --fsync (as cp, dd and qemu-img convert).",
		Flags: append(commonFlags(), busyPollFlag(0),
			&cli.IntFlag{Name: "parallel", Usage: "requests in flight", Value: 16},
			&cli.StringFlag{Name: "block-size", Usage: "bytes per request (a multiple of the LUN's block size); default: the LUN's largest command (its MaxBurstLength, 256KiB on tgt), within 256KiB to 1MiB"},
			&cli.BoolFlag{Name: "progress", Usage: "show a progress bar with rate and ETA (default: when stderr is a terminal)", DisableDefaultText: true},
			&cli.BoolFlag{Name: "no-progress", Usage: "never show a progress bar"},
			&cli.BoolFlag{Name: "sparse", Usage: "leave holes for all-zero blocks in a regular DST file (default on for regular files; --sparse=false writes every block)", DisableDefaultText: true},
			&cli.BoolFlag{Name: "fsync", Usage: "make a local DST durable (fsync) before exiting"},
			&cli.BoolFlag{Name: "verify", Usage: "compare SHA-256 checksums of the copied range of both sides afterwards"},
			&cli.StringFlag{Name: "offset", Usage: "first byte to copy, the same on both sides (a '-' stream carries only the range)", Value: "0"},
			&cli.StringFlag{Name: "length", Usage: "bytes to copy (default: to the end of SRC)"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile to this file", Hidden: true},
		),
		Action: cpAction,
	}
}

// cpSide is one end of a copy: a LUN, a seekable local file (regular file
// or block device) or a stream (stdin, stdout, a pipe, a character device).
type cpSide struct {
	name    string // for messages; a URL without its secrets
	lun     *initiator.LUN
	file    *os.File
	stream  bool  // read or written strictly in order
	regular bool  // a regular file
	created bool  // the file did not exist before
	size    int64 // bytes; -1 for a stream
}

func (s *cpSide) readAt(ctx context.Context, p []byte, off int64) error {
	var n int
	var err error
	if s.lun != nil {
		n, err = s.lun.ReadAtContext(ctx, p, off)
	} else {
		n, err = s.file.ReadAt(p, off)
	}
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("read %s: ended at byte %d, before byte %d", s.name, off+int64(n), off+int64(len(p)))
	}
	return fmt.Errorf("read %s: %w", s.name, err)
}

func (s *cpSide) close() error {
	if s.file != nil && s.file != os.Stdin && s.file != os.Stdout {
		return s.file.Close()
	}
	return nil
}

type cpOptions struct {
	parallel int
	bs       int64
	bsAuto   bool // no --block-size: autoBlockSize picks it once the LUN is open
	off      int64
	length   int64 // -1: to the end of SRC
	sparse   bool
	sparseOK bool // --sparse given explicitly
	verify   bool
	fsync    bool
	progress bool
}

func cpFlags(c *cli.Context) (cpOptions, error) {
	o := cpOptions{parallel: c.Int("parallel"), verify: c.Bool("verify"), fsync: c.Bool("fsync"), length: -1}
	if o.parallel < 1 || o.parallel > 1024 {
		return o, fmt.Errorf("--parallel %d: want 1 to 1024", o.parallel)
	}
	var err error
	if !c.IsSet("block-size") {
		o.bs, o.bsAuto = maxAutoBlockSize, true
	} else if o.bs, err = parseSize(c.String("block-size")); err != nil {
		return o, fmt.Errorf("--block-size: %w", err)
	}
	if o.bs < 512 || o.bs > 64<<20 || o.bs%512 != 0 {
		return o, fmt.Errorf("--block-size %d: want a multiple of 512 up to 64MiB", o.bs)
	}
	if o.off, err = parseSize(c.String("offset")); err != nil {
		return o, fmt.Errorf("--offset: %w", err)
	}
	if c.IsSet("length") {
		if o.length, err = parseSize(c.String("length")); err != nil {
			return o, fmt.Errorf("--length: %w", err)
		}
	}
	if c.Bool("progress") && c.Bool("no-progress") {
		return o, errors.New("--progress and --no-progress contradict each other")
	}
	o.progress = c.Bool("progress")
	if !c.IsSet("progress") && !c.Bool("no-progress") {
		if f, ok := c.App.ErrWriter.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			o.progress = true
		}
	}
	o.sparse, o.sparseOK = c.Bool("sparse"), c.IsSet("sparse")
	return o, nil
}

// cpAction copies between a LUN and a local path: plan (arguments and
// flags), open both sides, then copy and report (copier.run).
func cpAction(c *cli.Context) error {
	p, err := planCP(c)
	if err != nil {
		return err
	}
	log, cfg, err := prepare(c, p.url)
	if err != nil {
		return err
	}
	cfg.QueueDepth = queueDepthFor(p.opts.parallel, p.opts.bs)
	ctx, stop, done := cpSignals()
	defer done()

	lun, sess, err := p.openLUN(ctx, stop, cfg)
	if err != nil {
		return err
	}
	defer sess.Close(context.WithoutCancel(ctx))
	cp, err := p.newCopier(lun, c.App.ErrWriter, log)
	if err != nil {
		return err
	}
	defer cp.src.close()
	defer cp.dst.close()
	stopProfile, err := startCPUProfile(c.String("cpuprofile"))
	if err != nil {
		return err
	}
	defer stopProfile()
	return cp.run(ctx, stop)
}

// cpPlan is the copy the command line asks for, before anything is opened.
type cpPlan struct {
	url   *initiator.URL // the LUN
	local string         // the other side: a path, or '-'
	toLUN bool           // local → LUN; else LUN → local
	opts  cpOptions
}

// planCP reads the arguments and flags and checks what needs no login.
func planCP(c *cli.Context) (cpPlan, error) {
	var p cpPlan
	if c.NArg() != 2 {
		return p, errors.New("cp: want two arguments, SRC and DST")
	}
	srcArg, dstArg := c.Args().Get(0), c.Args().Get(1)
	srcIsURL, dstIsURL := strings.HasPrefix(srcArg, "iscsi://"), strings.HasPrefix(dstArg, "iscsi://")
	if srcIsURL == dstIsURL {
		return p, errors.New("cp: exactly one of SRC and DST must be an iscsi:// URL, the other a local path or '-'")
	}
	urlArg := srcArg
	p.local = dstArg
	if dstIsURL {
		urlArg, p.local, p.toLUN = dstArg, srcArg, true
	}
	var err error
	if p.url, err = initiator.ParseURL(urlArg); err != nil {
		return p, err
	}
	if p.url.Target == "" || p.url.LUN < 0 {
		return p, fmt.Errorf("cp: %s names no LUN: want iscsi://host[:port]/iqn/lun", p.url)
	}
	if p.opts, err = cpFlags(c); err != nil {
		return p, err
	}
	if p.opts.verify && dstArg == "-" {
		return p, errors.New("cp: --verify cannot read back standard output")
	}
	return p, nil
}

// cpSignals handles SIGINT and SIGTERM: the first closes stop (no new
// request is issued, those in flight complete and the prefix copied is
// reported), the second cancels ctx (aborts). done undoes it.
func cpSignals() (ctx context.Context, stop <-chan struct{}, done func()) {
	stopCh := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-sigs:
			close(stopCh)
		case <-ctx.Done():
			return
		}
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, stopCh, func() {
		signal.Stop(sigs)
		cancel()
	}
}

// openLUN logs in and opens the LUN. A stop gives up the login too: nothing
// has been copied, so there is nothing to finish.
func (p cpPlan) openLUN(ctx context.Context, stop <-chan struct{}, cfg initiator.Config) (*initiator.LUN, *initiator.Session, error) {
	loginCtx, loginCancel := context.WithCancel(ctx)
	defer loginCancel()
	go func() {
		select {
		case <-stop:
			loginCancel()
		case <-loginCtx.Done():
		}
	}()
	lun, sess, err := openOneLUN(loginCtx, p.url, cfg)
	if err != nil {
		if loginCtx.Err() != nil && ctx.Err() == nil {
			return nil, nil, cli.Exit("cp: interrupted before copying anything", 130)
		}
		return nil, nil, err
	}
	return lun, sess, nil
}

// newCopier pairs the LUN with the local side, which it opens (DST perhaps
// created) only once the LUN is known to fit the block size and, as DST, to
// be writable.
func (p cpPlan) newCopier(lun *initiator.LUN, stderr io.Writer, log zerolog.Logger) (*copier, error) {
	if p.opts.bsAuto {
		p.opts.bs = autoBlockSize(lun.MaxTransfer())
	}
	log.Debug().Int64("block_size", p.opts.bs).Int("parallel", p.opts.parallel).Bool("auto", p.opts.bsAuto).Msg("requests")
	if p.opts.bs%int64(lun.BlockSize()) != 0 {
		return nil, fmt.Errorf("--block-size %d is not a multiple of the %d-byte blocks of %s", p.opts.bs, lun.BlockSize(), p.url)
	}
	lunSide := &cpSide{name: p.url.String(), lun: lun, size: lun.Size()}
	cp := &copier{opts: p.opts, stderr: stderr, log: log}
	var err error
	if p.toLUN {
		if lun.ReadOnly() {
			return nil, fmt.Errorf("cp: %s is read-only (write-protected): nothing written", p.url)
		}
		cp.dst = lunSide
		cp.src, err = openSrc(p.local)
	} else {
		cp.src = lunSide
		cp.dst, err = openDst(p.local, p.opts.verify)
	}
	if err != nil {
		return nil, err
	}
	return cp, nil
}

// Requests of one SCSI command each keep --parallel commands in flight,
// whatever the target's transfer limit. More than that cost tgt: restoring
// 1 GiB with 64 commands of 256 KiB in flight (16 requests of 1 MiB) made
// tgtd take 136-194k page faults, with 16 in flight 0-553, and the copy
// took 1.7-2.4 s instead of 1.2-1.6 s (README, Performance). Reading was
// the same at both sizes. A target whose commands are smaller than
// 256 KiB gets several per request, so that the bytes in flight stay up.
const (
	minAutoBlockSize = 256 << 10
	maxAutoBlockSize = 1 << 20
)

// autoBlockSize is the request size without --block-size: the LUN's largest
// command (LUN.MaxTransfer, a multiple of its block size), within
// [minAutoBlockSize, maxAutoBlockSize].
func autoBlockSize(maxTransfer int) int64 {
	bs := int64(maxTransfer)
	if bs < minAutoBlockSize {
		bs = (minAutoBlockSize + bs - 1) / bs * bs
	}
	return min(bs, maxAutoBlockSize)
}

// queueDepthFor is the session queue depth that keeps parallel requests of
// bs bytes in flight when the initiator splits them into 256 KiB commands
// (tgt's default MaxBurstLength).
func queueDepthFor(parallel int, bs int64) int {
	return max(64, parallel*int((bs+256<<10-1)/(256<<10)))
}

// openOneLUN logs in to the URL's target and opens its LUN.
func openOneLUN(ctx context.Context, u *initiator.URL, cfg initiator.Config) (*initiator.LUN, *initiator.Session, error) {
	s, luns, err := loginAndOpen(ctx, u, u.Target, cfg)
	if err != nil {
		return nil, nil, err
	}
	if luns[0].err != nil {
		s.Close(context.WithoutCancel(ctx))
		return nil, nil, luns[0].err
	}
	return luns[0].lun, s, nil
}

func openSrc(path string) (*cpSide, error) {
	if path == "-" {
		return &cpSide{name: "standard input", file: os.Stdin, stream: true, size: -1}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cp: %w", err)
	}
	return describeFile(f, path)
}

// openDst opens DST for writing, and for reading back with --verify.
func openDst(path string, verify bool) (*cpSide, error) {
	if path == "-" {
		return &cpSide{name: "standard output", file: os.Stdout, stream: true, size: -1}, nil
	}
	mode := os.O_WRONLY
	if verify {
		mode = os.O_RDWR
	}
	f, err := os.OpenFile(path, mode, 0)
	created := false
	if errors.Is(err, fs.ErrNotExist) {
		f, err = os.OpenFile(path, mode|os.O_CREATE|os.O_EXCL, 0o644)
		created = true
	}
	if err != nil {
		return nil, fmt.Errorf("cp: %w", err)
	}
	s, err := describeFile(f, path)
	if s != nil {
		s.created = created
	}
	return s, err
}

// describeFile tells a regular file, a block device and a stream apart.
func describeFile(f *os.File, path string) (*cpSide, error) {
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("cp: %w", err)
	}
	s := &cpSide{name: path, file: f, size: -1}
	switch m := st.Mode(); {
	case m.IsRegular():
		s.regular, s.size = true, st.Size()
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("cp: size of block device %s: %w", path, err)
		}
		s.size = end
	default:
		s.stream = true
	}
	return s, nil
}

// copier moves [off, off+length) from src to dst.
type copier struct {
	src, dst *cpSide
	opts     cpOptions
	stderr   io.Writer
	bar      *progressbar.ProgressBar
	zeroSkip *sparseWriter    // non-nil: regular DST with holes for zeros
	srcHash  hash.Hash        // --verify with a stream SRC: hashed as read
	skip     *unmappedSkipper // non-nil: deallocated ranges of a thin SRC not read
	log      zerolog.Logger
}

// run copies the range and reports how it went: plan (the range, DST and
// engine), execute, report, then --verify.
func (cp *copier) run(ctx context.Context, stop <-chan struct{}) error {
	e, end, err := cp.plan()
	if err != nil {
		return err
	}
	if cp.skip != nil {
		defer func() {
			cp.log.Debug().Int64("bytes", cp.skip.skipped.Load()).Msg("deallocated ranges not read (GET LBA STATUS)")
		}()
	}
	res := cp.execute(ctx, stop, e, end)
	if err := cp.report(ctx, stop, res); err != nil {
		return err
	}
	if cp.opts.verify {
		return cp.verify(ctx, stop, cp.opts.off, res.reached)
	}
	return nil
}

// checkRange checks the range against both sides before anything is
// written and returns its end; a stream SRC may end before it.
func (cp *copier) checkRange() (end int64, err error) {
	o := cp.opts
	if o.off < 0 {
		return 0, fmt.Errorf("--offset %d is negative", o.off)
	}
	if cp.src.lun != nil {
		// LUN → local.
		size := cp.src.size
		if o.off > size {
			return 0, fmt.Errorf("cp: --offset %d is beyond the end of the %d-byte LUN %s", o.off, size, cp.src.name)
		}
		end = size
		if o.length >= 0 {
			if o.off+o.length > size {
				return 0, fmt.Errorf("cp: --offset %d --length %d runs past the end of the %d-byte LUN %s", o.off, o.length, size, cp.src.name)
			}
			end = o.off + o.length
		}
		if o.sparseOK && o.sparse && !cp.dst.regular {
			return 0, fmt.Errorf("cp: --sparse needs a regular file as DST; %s is not one", cp.dst.name)
		}
		return end, nil
	}
	// local → LUN.
	if o.sparseOK && o.sparse {
		return 0, errors.New("cp: --sparse needs a regular file as DST, not a LUN")
	}
	lunSize := cp.dst.size
	if cp.src.stream {
		end = lunSize
		if o.length >= 0 {
			end = o.off + o.length
		}
	} else {
		if o.off > cp.src.size {
			return 0, fmt.Errorf("cp: --offset %d is beyond the end of the %d-byte %s", o.off, cp.src.size, cp.src.name)
		}
		end = cp.src.size
		if o.length >= 0 {
			if o.off+o.length > cp.src.size {
				return 0, fmt.Errorf("cp: --offset %d --length %d runs past the end of the %d-byte %s", o.off, o.length, cp.src.size, cp.src.name)
			}
			end = o.off + o.length
		}
	}
	if end > lunSize {
		what := fmt.Sprintf("%s is %d bytes", cp.src.name, cp.src.size)
		if cp.src.stream || o.length >= 0 || o.off > 0 {
			what = fmt.Sprintf("bytes %d to %d", o.off, end)
		}
		return 0, fmt.Errorf("cp: %s, larger than the %d-byte LUN %s: nothing written", what, lunSize, cp.dst.name)
	}
	return end, nil
}

// plan gets everything ready before the first byte moves: the range
// (a DST the copy created is removed again when it does not fit), a regular
// DST sized for it, the progress bar and the engine.
func (cp *copier) plan() (*engine, int64, error) {
	end, err := cp.checkRange()
	if err != nil {
		if cp.dst.created {
			os.Remove(cp.dst.name)
		}
		return nil, 0, err
	}
	o := cp.opts
	if cp.dst.regular {
		if err := cp.prepareFile(end); err != nil {
			return nil, 0, err
		}
	}
	if o.verify && cp.src.stream {
		cp.srcHash = sha256.New()
	}
	if o.progress {
		max := end - o.off
		if cp.src.stream {
			max = -1
		}
		cp.bar = newBar(max, cp.stderr, "cp")
	}
	e := &engine{bs: o.bs, parallel: o.parallel, work: cp.writer(), inOrder: cp.inOrder}
	if cp.src.stream {
		e.stream = cp.src.file
	} else {
		e.read = cp.reader()
	}
	return e, end, nil
}

// reader is how the engine reads a random-access SRC.
func (cp *copier) reader() func(ctx context.Context, p []byte, off int64) error {
	if cp.src.lun != nil && cp.zeroSkip != nil && cp.src.lun.Provisioning.LBPRZ {
		// A sparse image of a thin LUN: deallocated ranges become holes
		// without being read.
		cp.skip = newUnmappedSkipper(cp.src.lun, cp.src.readAt)
		return cp.skip.readAt
	}
	return cp.src.readAt
}

// writer is the engine's parallel write, or nil for a DST that inOrder
// writes.
func (cp *copier) writer() func(ctx context.Context, p []byte, off int64) error {
	switch {
	case cp.dst.lun != nil:
		return func(ctx context.Context, p []byte, off int64) error {
			if _, err := cp.dst.lun.WriteAtContext(ctx, p, off); err != nil {
				return fmt.Errorf("write %s: %w", cp.dst.name, err)
			}
			return nil
		}
	case cp.dst.stream || cp.dst.regular:
		// Written in order (inOrder). Parallel pwrites into one regular
		// file gain nothing: they serialise on the inode lock, and the
		// kernel spins on it (rwsem_spin_on_owner was 9 % of an imaging
		// run's CPU on tmpfs), CPU the target on the same machine lacks.
		return nil
	default:
		return func(_ context.Context, p []byte, off int64) error {
			if _, err := cp.dst.file.WriteAt(p, off); err != nil {
				return fmt.Errorf("write %s: %w", cp.dst.name, err)
			}
			return nil
		}
	}
}

// inOrder sees every chunk in order: it writes a stream or regular DST,
// hashes a stream SRC for --verify and moves the progress bar.
func (cp *copier) inOrder(p []byte, off int64) error {
	switch {
	case cp.dst.stream:
		if _, err := cp.dst.file.Write(p); err != nil {
			return fmt.Errorf("write %s: %w", cp.dst.name, err)
		}
	case cp.zeroSkip != nil:
		if err := cp.zeroSkip.writeAt(p, off); err != nil {
			return err
		}
	case cp.dst.regular:
		if err := writeFileAt(cp.dst.file, p, off); err != nil {
			return fmt.Errorf("write %s: %w", cp.dst.name, err)
		}
	}
	if cp.srcHash != nil {
		cp.srcHash.Write(p)
	}
	if cp.bar != nil {
		cp.bar.Add64(int64(len(p)))
	}
	return nil
}

// cpResult is how far a copy got and how it ended.
type cpResult struct {
	start    time.Time
	end      int64 // of the range
	reached  int64 // the end of the prefix copied
	eof      bool  // a stream SRC ended before end
	overflow bool  // a stream SRC holds more than fits into the LUN
	copyErr  error
	syncErr  error
}

// execute copies the range and makes what was written durable, also after
// an interruption, so that the reported prefix can be trusted.
func (cp *copier) execute(ctx context.Context, stop <-chan struct{}, e *engine, end int64) cpResult {
	res := cpResult{start: time.Now(), end: end}
	res.reached, res.copyErr = e.run(ctx, stop, cp.opts.off, end)
	res.eof = e.eof
	res.syncErr = cp.sync(context.WithoutCancel(ctx))
	if res.copyErr == nil && cp.src.stream && cp.dst.lun != nil && res.reached == end && cp.opts.length < 0 {
		// A stream that fills the LUN must end there.
		var one [1]byte
		n, _ := io.ReadFull(cp.src.file, one[:])
		res.overflow = n > 0
	}
	return res
}

// report ends the progress bar and turns the result into the exit error,
// with the --offset to resume from, or the summary line.
func (cp *copier) report(ctx context.Context, stop <-chan struct{}, res cpResult) error {
	o := cp.opts
	if res.overflow {
		cp.endBar(false)
		return fmt.Errorf("cp: %s holds more than the %d bytes that fit into %s from byte %d; those were copied, the rest was not", cp.src.name, res.end-o.off, cp.dst.name, o.off)
	}
	cp.endBar(res.copyErr == nil && !stopped(stop))
	copied := res.reached - o.off
	resume := fmt.Sprintf("copied %d of %d bytes; resume with --offset %d", copied, res.end-o.off, res.reached)
	if cp.src.stream {
		resume = fmt.Sprintf("copied %d bytes; resume with --offset %d", copied, res.reached)
	}
	switch {
	case res.copyErr != nil && ctx.Err() != nil:
		return cli.Exit("cp: aborted: "+resume, 130)
	case res.copyErr != nil:
		return fmt.Errorf("cp: %w (%s)", res.copyErr, resume)
	case res.syncErr != nil:
		return fmt.Errorf("cp: %w", res.syncErr)
	case stopped(stop) && (res.reached < res.end && !(cp.src.stream && res.eof)):
		return cli.Exit("cp: interrupted: "+resume, 130)
	}
	if cp.bar != nil {
		el := time.Since(res.start)
		fmt.Fprintf(cp.stderr, "copied %d bytes in %.1f s (%.1f MB/s)\n", copied, el.Seconds(), float64(copied)/el.Seconds()/1e6)
	}
	return nil
}

// endBar finishes the progress bar at 100 %, or leaves it where the copy
// stopped and moves below it.
func (cp *copier) endBar(finished bool) {
	switch {
	case cp.bar == nil:
	case finished:
		cp.bar.Finish()
	default:
		cp.bar.Exit()
		fmt.Fprintln(cp.stderr)
	}
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

func newBar(max int64, w io.Writer, what string) *progressbar.ProgressBar {
	return progressbar.NewOptions64(max,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionFullWidth(),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
}

// prepareFile sizes a regular DST: a whole-LUN copy replaces its contents
// (the file ends where the LUN ends, and old data under zeros is punched
// out as it is reached); a range copy keeps the rest and grows the file to
// the range's end. It never truncates to zero first: ext4 takes that for a
// "replace via truncate" and writes the whole file back when it is closed
// (auto_da_alloc), which held close(2) for 0.3 s to several seconds after
// imaging 1 GiB onto a new file.
func (cp *copier) prepareFile(end int64) error {
	f := cp.dst.file
	old := cp.dst.size
	whole := cp.opts.off == 0 && cp.opts.length < 0
	if end > old || whole && end != old {
		if err := f.Truncate(end); err != nil {
			return fmt.Errorf("cp: size %s: %w", cp.dst.name, err)
		}
	}
	if whole {
		old = min(old, end)
	}
	sparse := !cp.opts.sparseOK || cp.opts.sparse
	if sparse {
		cp.zeroSkip = &sparseWriter{f: f, name: cp.dst.name, dataBelow: old}
	}
	return nil
}

func (cp *copier) sync(ctx context.Context) error {
	switch {
	case cp.dst.lun != nil:
		if err := cp.dst.lun.SyncContext(ctx); err != nil {
			return fmt.Errorf("sync %s: %w", cp.dst.name, err)
		}
	case !cp.dst.stream && cp.opts.fsync:
		if err := cp.dst.file.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", cp.dst.name, err)
		}
	}
	return nil
}

// verify compares SHA-256 checksums of [off, end) on both sides.
func (cp *copier) verify(ctx context.Context, stop <-chan struct{}, off, end int64) error {
	type result struct {
		sum []byte
		err error
	}
	sum := func(s *cpSide) <-chan result {
		ch := make(chan result, 1)
		go func() {
			h := sha256.New()
			e := &engine{bs: cp.opts.bs, parallel: cp.opts.parallel, read: s.readAt,
				inOrder: func(p []byte, _ int64) error { h.Write(p); return nil }}
			reached, err := e.run(ctx, stop, off, end)
			if err == nil && reached < end {
				err = errors.New("interrupted")
			}
			ch <- result{h.Sum(nil), err}
		}()
		return ch
	}
	var srcCh <-chan result
	if cp.srcHash != nil {
		c := make(chan result, 1)
		c <- result{cp.srcHash.Sum(nil), nil}
		srcCh = c
	} else {
		srcCh = sum(cp.src)
	}
	dstCh := sum(cp.dst)
	a, b := <-srcCh, <-dstCh
	if err := errors.Join(a.err, b.err); err != nil {
		return fmt.Errorf("cp: verify: %w", err)
	}
	if string(a.sum) != string(b.sum) {
		return fmt.Errorf("cp: verify: bytes %d to %d differ: sha256 %x in %s, %x in %s", off, end, a.sum, cp.src.name, b.sum, cp.dst.name)
	}
	fmt.Fprintf(cp.stderr, "verified: %d bytes from byte %d match, sha256 %x\n", end-off, off, a.sum)
	return nil
}
