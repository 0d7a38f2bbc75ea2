package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/iscsifs/iscsifs/initiator"
)

// run executes the command line and returns the exit status. Errors are
// printed as one line on stderr, never as a stack trace.
func run(args []string, stdout, stderr io.Writer) int {
	args, err := mountHelperArgs(args) // mount.fuse3's and mount(8)'s form (fstab.go)
	runArgs = args
	app := newApp(stdout, stderr)
	if err == nil && args != nil { // nil: mount -f, nothing to do
		err = app.Run(args)
	}
	if err != nil {
		if msg := oneLine(err); msg != "" {
			fmt.Fprintf(stderr, "iscsifs: %s\n", msg)
		}
		var ec cli.ExitCoder
		if errors.As(err, &ec) && ec.ExitCode() != 0 {
			return ec.ExitCode()
		}
		return 1
	}
	return 0
}

// runArgs is the command line being run, for mount --daemon to re-execute.
var runArgs []string

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:                 "iscsifs",
		Usage:                "a pure-Go iSCSI initiator: discover targets, list LUNs, mount them as files",
		Writer:               stdout,
		ErrWriter:            stderr,
		HideHelpCommand:      true,
		EnableBashCompletion: false,
		ExitErrHandler:       func(*cli.Context, error) {}, // run prints errors itself
		Commands: []*cli.Command{
			discoverCommand(),
			lsCommand(),
			mountCommand(),
			statusCommand(),
			umountCommand(),
			cpCommand(),
			benchCommand(),
		},
	}
}

// busyPollFlag is --busy-poll (initiator.Config.BusyPoll) with the
// command's default: on for cp and bench, whose goroutines do all the work,
// off for mount, which shares the CPU with the kernel and the application.
func busyPollFlag(def time.Duration) cli.Flag {
	return &cli.DurationFlag{Name: "busy-poll", Value: def,
		Usage: "poll the socket this long before sleeping while commands are outstanding (0 = never; trades CPU for latency)"}
}

// commonFlags are accepted by every command that talks to a target.
func commonFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "initiator-name", Usage: "our iSCSI name (IQN)", Value: initiator.DefaultInitiatorName, EnvVars: []string{"ISCSIFS_INITIATOR_NAME"}},
		&cli.StringSliceFlag{Name: "portal", Usage: "another portal (HOST[:PORT]) of the same target, used when the URL's portal is lost (failover; repeat for more)"},
		&cli.BoolFlag{Name: "discover-portals", Usage: "also fail over to the portals the target lists for itself (SendTargets at login)"},
		&cli.StringFlag{Name: "chap-user", Usage: "CHAP user name"},
		&cli.StringFlag{Name: "chap-secret", Usage: "CHAP secret (visible in ps: prefer --chap-secret-file or ISCSIFS_CHAP_SECRET)"},
		&cli.StringFlag{Name: "chap-secret-file", Usage: "file holding the CHAP secret"},
		&cli.StringFlag{Name: "mutual-user", Usage: "the target's CHAP user name for mutual CHAP"},
		&cli.StringFlag{Name: "mutual-secret", Usage: "the target's CHAP secret for mutual CHAP"},
		&cli.StringFlag{Name: "mutual-secret-file", Usage: "file holding the target's CHAP secret"},
		&cli.StringFlag{Name: "chap-algorithms", Usage: "CHAP algorithms in preference order (sha3-256,sha256,sha1,md5)", Value: "md5"},
		&cli.StringFlag{Name: "header-digest", Usage: "none, crc32c, prefer-crc32c", Value: "none"},
		&cli.StringFlag{Name: "data-digest", Usage: "none, crc32c, prefer-crc32c", Value: "none"},
		&cli.DurationFlag{Name: "timeout", Usage: "login and command timeout", Value: 30 * time.Second},
		&cli.DurationFlag{Name: "replacement-timeout", Usage: "how long I/O waits for a lost session to come back (0: fail at once; reconnecting goes on)", Value: 120 * time.Second},
		&cli.DurationFlag{Name: "keepalive", Usage: "idle time before a NOP-Out ping; no answer within twice that drops the connection (0 disables)", Value: 5 * time.Second},
		&cli.StringFlag{Name: "log-level", Usage: "debug, info, warn, error", Value: "info"},
		&cli.StringFlag{Name: "log-format", Usage: "console or json (default: console on a terminal, json otherwise)"},
	}
}

// multipathFlags are the flags of the commands that can use every portal at
// once (mount, bench).
func multipathFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "multipath", Usage: "use the URL's portal and every --portal at once, a session each (active-active) instead of failing over"},
		&cli.StringFlag{Name: "path-selector", Usage: "with --multipath: queue-length, round-robin or service-time", Value: "queue-length"},
	}
}

// multipathSpec is what --multipath asks for: the portals, the URL's first.
type multipathSpec struct {
	portals  []string
	selector initiator.PathSelector
}

// multipathPlan checks the multipath flags; nil without --multipath.
func multipathPlan(c *cli.Context, u *initiator.URL, cfg initiator.Config) (*multipathSpec, error) {
	if !c.Bool("multipath") {
		return nil, nil
	}
	sel, err := initiator.ParsePathSelector(c.String("path-selector"))
	if err != nil {
		return nil, fmt.Errorf("--path-selector: %w", err)
	}
	switch {
	case len(cfg.Portals) == 0:
		return nil, errors.New("--multipath needs at least one --portal besides the URL's")
	case cfg.DiscoverPortals:
		return nil, errors.New("--multipath uses the URL's portal and the --portal list; --discover-portals is for failover")
	case u.Target == "" || u.LUN < 0:
		// A session per path per LUN: with several LUNs the target would
		// have several sessions, and its metrics the same labels twice.
		return nil, errors.New("--multipath needs a URL that names a target and a LUN")
	}
	return &multipathSpec{portals: append([]string{u.Portal()}, cfg.Portals...), selector: sel}, nil
}

// newLogger builds the zerolog logger from --log-level and --log-format.
func newLogger(c *cli.Context) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(c.String("log-level"))
	if err != nil || c.String("log-level") == "" {
		return zerolog.Nop(), fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	var w io.Writer = c.App.ErrWriter
	format := c.String("log-format")
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "console"
		}
	}
	switch format {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	default:
		return zerolog.Nop(), fmt.Errorf("--log-format %q: want console or json", format)
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

// prepare builds the logger and the session configuration of a command.
func prepare(c *cli.Context, u *initiator.URL) (zerolog.Logger, initiator.Config, error) {
	log, err := newLogger(c)
	if err != nil {
		return log, initiator.Config{}, err
	}
	cfg, err := sessionConfig(c, u, log)
	return log, cfg, err
}

// sessionConfig turns the flags, the URL and the environment into the
// initiator's configuration: flags win over the URL, the URL over the
// environment.
func sessionConfig(c *cli.Context, u *initiator.URL, log zerolog.Logger) (initiator.Config, error) {
	var cfg initiator.Config
	cfg.InitiatorName = c.String("initiator-name")
	cfg.Negotiation = initiator.DefaultNegotiationConfig()
	creds, err := credentials(c, u)
	if err != nil {
		return cfg, err
	}
	if creds.Secret != "" && initiator.WeakSecret(creds.Secret) {
		log.Warn().Msg("CHAP secret is shorter than 12 bytes (RFC 7143 §9.2.1 asks for at least 96 bits)")
	}
	if err := creds.Validate(); err != nil {
		return cfg, err
	}
	cfg.Credentials = creds
	algs, err := initiator.ParseCHAPAlgorithms(c.String("chap-algorithms"))
	if err != nil {
		return cfg, fmt.Errorf("--chap-algorithms: %w", err)
	}
	if u != nil && len(u.CHAPAlgorithms) > 0 && !c.IsSet("chap-algorithms") {
		algs = u.CHAPAlgorithms
	}
	cfg.CHAPAlgorithms = algs
	hd := c.String("header-digest")
	if u != nil && u.HeaderDigest != "" && !c.IsSet("header-digest") {
		hd = u.HeaderDigest
	}
	if cfg.Negotiation.HeaderDigest, err = initiator.ParseDigestPolicy(hd); err != nil {
		return cfg, fmt.Errorf("--header-digest: %w", err)
	}
	dd := c.String("data-digest")
	if u != nil && u.DataDigest != "" && !c.IsSet("data-digest") {
		dd = u.DataDigest
	}
	if cfg.Negotiation.DataDigest, err = initiator.ParseDigestPolicy(dd); err != nil {
		return cfg, fmt.Errorf("--data-digest: %w", err)
	}
	for _, p := range c.StringSlice("portal") {
		if p = strings.TrimSpace(p); p != "" {
			cfg.Portals = append(cfg.Portals, p)
		}
	}
	cfg.DiscoverPortals = c.Bool("discover-portals")
	cfg.LoginTimeout = c.Duration("timeout")
	cfg.CommandTimeout = c.Duration("timeout")
	cfg.BusyPoll = c.Duration("busy-poll") // 0 for commands without the flag
	cfg.ReplacementTimeout = c.Duration("replacement-timeout")
	if cfg.ReplacementTimeout == 0 {
		cfg.ReplacementTimeout = -1 // fail fast; 0 means "default" to the library
	}
	cfg.KeepAlive, cfg.KeepAliveWait = c.Duration("keepalive"), 2*c.Duration("keepalive")
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = -1 // disabled; 0 means "default" to the library
	}
	cfg.Logger = slogTo(log)
	return cfg, nil
}

// credentials picks each credential from its flag, its file, the URL, or the
// environment (ISCSIFS_CHAP_USER ...), in that order.
func credentials(c *cli.Context, u *initiator.URL) (initiator.Credentials, error) {
	pick := func(flag, file, fromURL, env string) (string, error) {
		if c.IsSet(flag) {
			return c.String(flag), nil
		}
		if file != "" && c.String(file) != "" {
			b, err := os.ReadFile(c.String(file))
			if err != nil {
				return "", fmt.Errorf("--%s: %w", file, err)
			}
			return strings.TrimRight(string(b), "\r\n"), nil
		}
		if fromURL != "" {
			return fromURL, nil
		}
		return os.Getenv(env), nil
	}
	var cr initiator.Credentials
	var fromURL initiator.Credentials
	if u != nil {
		fromURL = u.Credentials()
	}
	var err error
	if cr.User, err = pick("chap-user", "", fromURL.User, "ISCSIFS_CHAP_USER"); err != nil {
		return cr, err
	}
	if cr.Secret, err = pick("chap-secret", "chap-secret-file", fromURL.Secret, "ISCSIFS_CHAP_SECRET"); err != nil {
		return cr, err
	}
	if cr.MutualUser, err = pick("mutual-user", "", fromURL.MutualUser, "ISCSIFS_MUTUAL_USER"); err != nil {
		return cr, err
	}
	if cr.MutualSecret, err = pick("mutual-secret", "mutual-secret-file", fromURL.MutualSecret, "ISCSIFS_MUTUAL_SECRET"); err != nil {
		return cr, err
	}
	return cr, nil
}

// signalContext is cancelled on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// targetsOf returns the target a URL names, or every target its portal
// offers (SendTargets) for a portal URL.
func targetsOf(ctx context.Context, u *initiator.URL, cfg initiator.Config) ([]string, error) {
	if u.Target != "" {
		return []string{u.Target}, nil
	}
	found, err := initiator.Discover(ctx, u.Portal(), cfg)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(found))
	for _, t := range found {
		names = append(names, t.Name)
	}
	return names, nil
}

// targetLUN is a LUN the URL names on a logged-in session: opened, or with
// the error opening it gave (ErrNotBlockDevice for a controller or a tape).
type targetLUN struct {
	n   uint64
	lun *initiator.LUN
	err error
}

// loginAndOpen logs in to target through the URL's portal and opens the LUN
// the URL names, or every LUN the target reports when it names none: how ls,
// cp, bench and mount reach their LUNs. When the login or the listing fails
// nothing stays open; a LUN that cannot be opened comes back with its error,
// for the caller to list, skip or fail on.
func loginAndOpen(ctx context.Context, u *initiator.URL, target string, cfg initiator.Config) (*initiator.Session, []targetLUN, error) {
	s, err := initiator.Login(ctx, u.Portal(), target, cfg)
	if err != nil {
		return nil, nil, err
	}
	numbers := []uint64{uint64(u.LUN)}
	if u.LUN < 0 || u.Target == "" {
		if numbers, err = s.ReportLUNs(ctx); err != nil {
			s.Close(context.WithoutCancel(ctx))
			return nil, nil, err
		}
	}
	luns := make([]targetLUN, len(numbers))
	for i, n := range numbers {
		luns[i].n = n
		luns[i].lun, luns[i].err = s.OpenLUN(ctx, n)
	}
	return s, luns, nil
}

// parseURLArg parses the command's single URL argument.
func parseURLArg(c *cli.Context, what string) (*initiator.URL, error) {
	if c.NArg() != 1 {
		return nil, fmt.Errorf("%s: want exactly one argument, %s", c.Command.Name, what)
	}
	return initiator.ParseURL(c.Args().First())
}
