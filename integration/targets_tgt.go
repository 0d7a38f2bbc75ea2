package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"
)

// tgtOps runs tgtd (Linux SCSI target framework) and configures it with tgtadm.
//
// Facts this relies on (tgt 1.0.85):
//   - `tgtd -f -C N --iscsi portal=127.0.0.1:PORT` listens on PORT and takes management
//     requests on /var/run/tgtd/socket.N (N is a C short). The socket file and socket.N.lock
//     stay after tgtd exits; the lock is an advisory lock, so stale files do no harm, but
//     the harness removes them.
//   - A second tgtd with the same N exits at once ("another tgtd is using ...lock").
//   - When the portal cannot be bound tgtd keeps running and falls back to the default portals
//     0.0.0.0:3260 and [::]:3260; the harness checks the portal list and kills such a daemon.
//   - tgtd ignores SIGTERM. A target with a session cannot be deleted, not even with --force,
//     and an initiator that reconnects gets a new session at once: unbind the ACL first.
type tgtOps struct{}

var tgtTools = []string{"tgtd", "tgtadm"}

func (tgtOps) tools() []string { return tgtTools }

// tgtControlNumber derives tgtd's -C number from the portal port, so that the instances of
// the harness never share a management socket: 1..32767, one to one for the kernel's
// ephemeral port range (32768-60999), which 127.0.0.1:0 picks from.
func tgtControlNumber(port int) int { return port%32767 + 1 }

func (tgtOps) validate(specs []TargetSpec) error {
	accounts := map[string]string{}
	for _, s := range specs {
		if len(s.ExtraPortalHosts) > 0 {
			return fmt.Errorf("target %s: ExtraPortalHosts is for istgt; add tgt portals with tgtadm --op new --mode portal", s.Name)
		}
		for _, l := range s.LUNs {
			if l.LUN == 0 {
				return fmt.Errorf("target %s: LUN 0 of a tgt target is its controller; data LUNs start at 1", s.Name)
			}
		}
		for _, acct := range [][2]string{{s.CHAPUser, s.CHAPSecret}, {s.MutualUser, s.MutualSecret}} {
			if acct[0] == "" {
				continue
			}
			if prev, ok := accounts[acct[0]]; ok && prev != acct[1] {
				return fmt.Errorf("target %s: tgt accounts are global: user %q already has another secret", s.Name, acct[0])
			}
			accounts[acct[0]] = acct[1]
		}
		for k := range s.Keys {
			if k == "" || strings.ContainsAny(k, " \t\n=") {
				return fmt.Errorf("target %s: bad key %q", s.Name, k)
			}
		}
	}
	return nil
}

func (o tgtOps) launch(tg *Target) (*daemon, error) {
	tgtd, err := findTool("tgtd")
	if err != nil {
		return nil, err
	}
	d, err := spawn(tg.LogPath, tg.Dir, tgtd, "-f", "-C", strconv.Itoa(tg.Control), "--iscsi", "portal="+tg.Portal)
	if err != nil {
		return nil, err
	}
	err = d.waitUntil(startTimeout, 20*time.Millisecond, func(ctx context.Context) error {
		_, err := tgtadm(ctx, tg, "--op", "show", "--mode", "sys")
		return err
	})
	if err == nil {
		err = o.checkPortal(tg, d)
	}
	if err == nil {
		err = o.configure(tg)
	}
	if err != nil {
		_ = d.kill()
		// Only a daemon that got our socket may have its files removed: with the lock taken
		// by another tgtd, the files are that daemon's.
		if !strings.Contains(d.output(), "another tgtd is using") {
			o.cleanupFiles(tg)
		} else if !errors.Is(err, errPortBusy) {
			err = fmt.Errorf("%w: management socket %d taken by another tgtd (%v)", errPortBusy, tg.Control, err)
		}
		return nil, tg.withLog(fmt.Errorf("start tgtd on %s (-C %d): %w", tg.Portal, tg.Control, err))
	}
	return d, nil
}

// checkPortal makes sure that the tgtd answering on socket N is ours and listens on our
// port, not on the 0.0.0.0:3260 fallback.
func (tgtOps) checkPortal(tg *Target, d *daemon) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := tgtadm(ctx, tg, "--lld", "iscsi", "--op", "show", "--mode", "portal")
	if err != nil {
		return err
	}
	if d.exited() {
		return fmt.Errorf("%w: %v", errPortBusy, d.exitError())
	}
	if !listensOn(d.pid(), tg.Port) {
		return fmt.Errorf("%w: tgtd (pid %d) does not listen on %s", errPortBusy, d.pid(), tg.Portal)
	}
	want := "Portal: " + tg.Portal + ","
	for line := range strings.Lines(out) {
		if strings.HasPrefix(strings.TrimSpace(line), want) {
			return nil
		}
	}
	return fmt.Errorf("%w: tgtd portals are %q", errPortBusy, strings.TrimSpace(out))
}

// configure creates the targets, LUNs, accounts and parameters of the specs (tid = index+1).
func (tgtOps) configure(tg *Target) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := func(args ...string) error {
		_, err := tgtadm(ctx, tg, append([]string{"--lld", "iscsi"}, args...)...)
		return err
	}
	created := map[string]bool{}
	account := func(user, secret string) error {
		if created[user] {
			return nil
		}
		created[user] = true
		return run("--op", "new", "--mode", "account", "--user", user, "--password", secret)
	}
	for i, s := range tg.specs {
		tid := strconv.Itoa(i + 1)
		if err := run("--op", "new", "--mode", "target", "--tid", tid, "-T", s.Name); err != nil {
			return err
		}
		for _, l := range s.LUNs {
			lun := strconv.Itoa(l.LUN)
			args := []string{"--op", "new", "--mode", "logicalunit", "--tid", tid, "--lun", lun,
				"-b", tg.backing[lunKey{s.Name, l.LUN}]}
			if l.BSType != "" {
				args = append(args, "--bstype", l.BSType)
			}
			if l.BlockSize != 0 {
				args = append(args, "--blocksize", strconv.Itoa(l.BlockSize))
			}
			if err := run(args...); err != nil {
				return err
			}
			// readonly and thin_provisioning are refused on --op new; they are updates.
			for _, p := range []struct {
				on    bool
				param string
			}{{l.ReadOnly, "readonly=1"}, {l.Thin, "thin_provisioning=1"}} {
				if !p.on {
					continue
				}
				if err := run("--op", "update", "--mode", "logicalunit", "--tid", tid, "--lun", lun, "--params", p.param); err != nil {
					return err
				}
			}
		}
		if s.CHAPUser != "" {
			if err := account(s.CHAPUser, s.CHAPSecret); err != nil {
				return err
			}
			if err := run("--op", "bind", "--mode", "account", "--tid", tid, "--user", s.CHAPUser); err != nil {
				return err
			}
		}
		if s.MutualUser != "" {
			if err := account(s.MutualUser, s.MutualSecret); err != nil {
				return err
			}
			if err := run("--op", "bind", "--mode", "account", "--tid", tid, "--user", s.MutualUser, "--outgoing"); err != nil {
				return err
			}
		}
		keys := make([]string, 0, len(s.Keys))
		for k := range s.Keys {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := run("--op", "update", "--mode", "target", "--tid", tid, "-n", k, "-v", s.Keys[k]); err != nil {
				return err
			}
		}
		// Access last, so that no initiator logs in to a half-configured target.
		if err := run("--op", "bind", "--mode", "target", "--tid", tid, "-I", "ALL"); err != nil {
			return err
		}
	}
	return nil
}

// shutdown: for every target refuse new logins (unbind the ACL), drop its connections
// and delete it; then `--op delete --mode system`, which makes tgtd exit.
func (tgtOps) shutdown(tg *Target, d *daemon) error {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	var errs []error
	for i := range tg.specs {
		tid := strconv.Itoa(i + 1)
		if err := tgtDeleteTarget(ctx, tg, tid); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := tgtadm(ctx, tg, "--op", "delete", "--mode", "system"); err != nil {
		errs = append(errs, err)
	}
	select {
	case <-d.done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("tgtd still running %v after delete system", stopTimeout))
	}
	return errors.Join(errs...)
}

func tgtDeleteTarget(ctx context.Context, tg *Target, tid string) error {
	// Unbinding fails harmlessly when the ACL is already gone.
	_, _ = tgtadm(ctx, tg, "--lld", "iscsi", "--op", "unbind", "--mode", "target", "--tid", tid, "-I", "ALL")
	var err error
	for ctx.Err() == nil {
		var out string
		out, err = tgtadm(ctx, tg, "--lld", "iscsi", "--op", "show", "--mode", "conn", "--tid", tid)
		if err != nil {
			return err
		}
		for _, c := range parseTGTConns(out) {
			// A connection may go away by itself in the meantime.
			_, _ = tgtadm(ctx, tg, "--lld", "iscsi", "--op", "delete", "--mode", "conn",
				"--tid", tid, "--sid", c[0], "--cid", c[1])
		}
		if _, err = tgtadm(ctx, tg, "--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid", tid); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond) // connections are closed asynchronously
	}
	return fmt.Errorf("delete target %s: %w", tid, err)
}

// parseTGTConns reads `tgtadm --op show --mode conn` output:
//
//	Session: 8
//	    Connection: 0
//	        Initiator: iqn...
//
// and returns (sid, cid) pairs.
func parseTGTConns(out string) [][2]string {
	var conns [][2]string
	sid := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		switch f[0] {
		case "Session:":
			sid = f[1]
		case "Connection:":
			if sid != "" {
				conns = append(conns, [2]string{sid, f[1]})
			}
		}
	}
	return conns
}

// tgtSocketDir is where tgtd puts its management sockets.
const tgtSocketDir = "/var/run/tgtd"

func (tgtOps) cleanupFiles(tg *Target) {
	base := fmt.Sprintf("%s/socket.%d", tgtSocketDir, tg.Control)
	for _, p := range []string{base, base + ".lock"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "tgt harness: %v\n", err)
		}
	}
}

// TGTAdm runs tgtadm with this target's -C number and returns its combined output.
// Tests use it for things the specs cannot say (a LUN added live, online=0, a dropped
// connection, ...), e.g. tg.TGTAdm("--lld", "iscsi", "--op", "show", "--mode", "target").
func (tg *Target) TGTAdm(args ...string) (string, error) {
	if tg.Kind != "tgt" {
		return "", fmt.Errorf("TGTAdm on a %s target", tg.Kind)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return tgtadm(ctx, tg, args...)
}

// TID returns the tgt target id of the target named iqn (its position in the specs + 1).
func (tg *Target) TID(iqn string) int {
	for i, s := range tg.specs {
		if s.Name == iqn {
			return i + 1
		}
	}
	tg.fail(fmt.Sprintf("%s harness: no target %s", tg.Kind, iqn))
	return 0
}

func tgtadm(ctx context.Context, tg *Target, args ...string) (string, error) {
	path, err := findTool("tgtadm")
	if err != nil {
		return "", err
	}
	argv := append([]string{"-C", strconv.Itoa(tg.Control)}, args...)
	// tgtadm can block on a paused tgtd; the context bounds every call.
	cmd := exec.CommandContext(ctx, path, argv...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("tgtadm %s: %w: %s", redactArgs(argv), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// redactArgs hides passwords in a tgtadm command line that goes into an error message.
func redactArgs(argv []string) string {
	out := make([]string, len(argv))
	copy(out, argv)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == "--password" {
			out[i+1] = "***"
		}
	}
	return strings.Join(out, " ")
}
