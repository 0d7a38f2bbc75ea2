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
			&cli.StringFlag{Name: "block-size", Usage: "bytes per request (a multiple of the LUN's block size)", Value: "1MiB"},
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
	if o.bs, err = parseSize(c.String("block-size")); err != nil {
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

func cpAction(c *cli.Context) error {
	if c.NArg() != 2 {
		return errors.New("cp: want two arguments, SRC and DST")
	}
	srcArg, dstArg := c.Args().Get(0), c.Args().Get(1)
	srcIsURL, dstIsURL := strings.HasPrefix(srcArg, "iscsi://"), strings.HasPrefix(dstArg, "iscsi://")
	if srcIsURL == dstIsURL {
		return errors.New("cp: exactly one of SRC and DST must be an iscsi:// URL, the other a local path or '-'")
	}
	urlArg := srcArg
	if dstIsURL {
		urlArg = dstArg
	}
	u, err := initiator.ParseURL(urlArg)
	if err != nil {
		return err
	}
	if u.Target == "" || u.LUN < 0 {
		return fmt.Errorf("cp: %s names no LUN: want iscsi://host[:port]/iqn/lun", u)
	}
	opts, err := cpFlags(c)
	if err != nil {
		return err
	}
	if opts.verify && dstArg == "-" {
		return errors.New("cp: --verify cannot read back standard output")
	}
	log, cfg, err := prepare(c, u)
	if err != nil {
		return err
	}
	cfg.QueueDepth = queueDepthFor(opts.parallel, opts.bs)

	// SIGINT/SIGTERM: the first stops issuing requests (those in flight
	// complete and the prefix copied is reported), the second aborts.
	stop := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			close(stop)
		case <-ctx.Done():
			return
		}
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	loginCtx, loginCancel := context.WithCancel(ctx)
	defer loginCancel()
	go func() {
		select {
		case <-stop:
			loginCancel()
		case <-loginCtx.Done():
		}
	}()

	lun, sess, err := openOneLUN(loginCtx, u, cfg)
	if err != nil {
		if loginCtx.Err() != nil && ctx.Err() == nil {
			return cli.Exit("cp: interrupted before copying anything", 130)
		}
		return err
	}
	defer sess.Close(context.WithoutCancel(ctx))
	lunSide := &cpSide{name: u.String(), lun: lun, size: lun.Size()}
	if opts.bs%int64(lun.BlockSize()) != 0 {
		return fmt.Errorf("--block-size %d is not a multiple of the %d-byte blocks of %s", opts.bs, lun.BlockSize(), u)
	}

	cp := &copier{opts: opts, stderr: c.App.ErrWriter, log: log}
	if srcIsURL {
		cp.src = lunSide
		if cp.dst, err = openDst(dstArg, opts.verify); err != nil {
			return err
		}
	} else {
		cp.dst = lunSide
		if lun.ReadOnly() {
			return fmt.Errorf("cp: %s is read-only (write-protected): nothing written", u)
		}
		if cp.src, err = openSrc(srcArg); err != nil {
			return err
		}
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

// queueDepthFor is the session queue depth that keeps parallel requests of
// bs bytes in flight when the initiator splits them into 256 KiB commands
// (tgt's default MaxBurstLength).
func queueDepthFor(parallel int, bs int64) int {
	return max(64, parallel*int((bs+256<<10-1)/(256<<10)))
}

// urlLUNs is the LUN the URL names, or every LUN the target reports for a
// URL that names none (or only a portal): what ls lists and mount serves.
func urlLUNs(ctx context.Context, s *initiator.Session, u *initiator.URL) ([]uint64, error) {
	if u.LUN >= 0 && u.Target != "" {
		return []uint64{uint64(u.LUN)}, nil
	}
	return s.ReportLUNs(ctx)
}

// openOneLUN logs in to the URL's target and opens its LUN.
func openOneLUN(ctx context.Context, u *initiator.URL, cfg initiator.Config) (*initiator.LUN, *initiator.Session, error) {
	s, err := initiator.Login(ctx, u.Portal(), u.Target, cfg)
	if err != nil {
		return nil, nil, err
	}
	l, err := s.OpenLUN(ctx, uint64(u.LUN))
	if err != nil {
		s.Close(context.WithoutCancel(ctx))
		return nil, nil, err
	}
	return l, s, nil
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
	zeroSkip *sparseWriter // non-nil: regular DST with holes for zeros
	srcHash  hash.Hash     // --verify with a stream SRC: hashed as read
	log      zerolog.Logger
}

// plan checks the range against both sides before anything is written and
// returns its end; a stream SRC may end before it.
func (cp *copier) plan() (end int64, err error) {
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

func (cp *copier) run(ctx context.Context, stop <-chan struct{}) error {
	end, err := cp.plan()
	if err != nil {
		if cp.dst.created {
			os.Remove(cp.dst.name)
		}
		return err
	}
	o := cp.opts
	if cp.dst.regular {
		if err := cp.prepareFile(end); err != nil {
			return err
		}
	}
	if o.verify && cp.src.stream {
		cp.srcHash = sha256.New()
	}
	total := end - o.off
	if o.progress {
		max := total
		if cp.src.stream {
			max = -1
		}
		cp.bar = newBar(max, cp.stderr, "cp")
	}

	e := &engine{bs: o.bs, parallel: o.parallel}
	var skip *unmappedSkipper
	switch {
	case cp.src.stream:
		e.stream = cp.src.file
	case cp.src.lun != nil && cp.zeroSkip != nil && cp.src.lun.Provisioning.LBPRZ:
		// A sparse image of a thin LUN: deallocated ranges become holes
		// without being read.
		skip = newUnmappedSkipper(cp.src.lun, cp.src.readAt)
		e.read = skip.readAt
	default:
		e.read = cp.src.readAt
	}
	if skip != nil {
		defer func() {
			cp.log.Debug().Int64("bytes", skip.skipped.Load()).Msg("deallocated ranges not read (GET LBA STATUS)")
		}()
	}
	switch {
	case cp.dst.lun != nil:
		e.work = func(ctx context.Context, p []byte, off int64) error {
			if _, err := cp.dst.lun.WriteAtContext(ctx, p, off); err != nil {
				return fmt.Errorf("write %s: %w", cp.dst.name, err)
			}
			return nil
		}
	case cp.dst.stream || cp.dst.regular:
		// Written in order below. Parallel pwrites into one regular file
		// gain nothing: they serialise on the inode lock, and the kernel
		// spins on it (rwsem_spin_on_owner was 9 % of an imaging run's
		// CPU on tmpfs), CPU the target on the same machine lacks.
	default:
		e.work = func(_ context.Context, p []byte, off int64) error {
			if _, err := cp.dst.file.WriteAt(p, off); err != nil {
				return fmt.Errorf("write %s: %w", cp.dst.name, err)
			}
			return nil
		}
	}
	e.inOrder = func(p []byte, off int64) error {
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
			if _, err := cp.dst.file.WriteAt(p, off); err != nil {
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

	start := time.Now()
	reached, copyErr := e.run(ctx, stop, o.off, end)
	// Make what was written durable, also after an interruption, so that
	// the reported prefix can be trusted.
	syncErr := cp.sync(context.WithoutCancel(ctx))
	if copyErr == nil && cp.src.stream && cp.dst.lun != nil && reached == end && o.length < 0 {
		// A stream that fills the LUN must end there.
		var one [1]byte
		if n, _ := io.ReadFull(cp.src.file, one[:]); n > 0 {
			if cp.bar != nil {
				cp.bar.Exit()
				fmt.Fprintln(cp.stderr)
			}
			return fmt.Errorf("cp: %s holds more than the %d bytes that fit into %s from byte %d; those were copied, the rest was not", cp.src.name, end-o.off, cp.dst.name, o.off)
		}
	}
	if cp.bar != nil {
		if copyErr == nil && !stopped(stop) {
			cp.bar.Finish()
		} else {
			cp.bar.Exit()
			fmt.Fprintln(cp.stderr)
		}
	}
	copied := reached - o.off
	resume := fmt.Sprintf("copied %d of %d bytes; resume with --offset %d", copied, total, reached)
	if cp.src.stream {
		resume = fmt.Sprintf("copied %d bytes; resume with --offset %d", copied, reached)
	}
	switch {
	case copyErr != nil && ctx.Err() != nil:
		return cli.Exit("cp: aborted: "+resume, 130)
	case copyErr != nil:
		return fmt.Errorf("cp: %w (%s)", copyErr, resume)
	case syncErr != nil:
		return fmt.Errorf("cp: %w", syncErr)
	case stopped(stop) && (reached < end && !(cp.src.stream && e.eof)):
		return cli.Exit("cp: interrupted: "+resume, 130)
	}
	if cp.bar != nil {
		el := time.Since(start)
		fmt.Fprintf(cp.stderr, "copied %d bytes in %.1f s (%.1f MB/s)\n", copied, el.Seconds(), float64(copied)/el.Seconds()/1e6)
	}
	if o.verify {
		return cp.verify(ctx, stop, o.off, reached)
	}
	return nil
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

// prepareFile sizes a regular DST: a whole-LUN copy replaces its contents;
// a range copy keeps the rest and grows the file to the range's end.
func (cp *copier) prepareFile(end int64) error {
	f := cp.dst.file
	old := cp.dst.size
	if cp.opts.off == 0 && cp.opts.length < 0 {
		if err := f.Truncate(0); err != nil {
			return fmt.Errorf("cp: truncate %s: %w", cp.dst.name, err)
		}
		old = 0
	}
	if end > old {
		if err := f.Truncate(end); err != nil {
			return fmt.Errorf("cp: size %s: %w", cp.dst.name, err)
		}
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
