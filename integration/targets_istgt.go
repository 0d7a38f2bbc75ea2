package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// istgtOps runs istgt with a generated istgt.conf and auth.conf in the target's Dir.
//
// Facts this relies on (istgt 0.4 20111008, Debian's example configs in
// /usr/share/doc/istgt/examples):
//   - `istgt -c CONF -p PIDFILE -D` stays in the foreground and prints its log to stdout as
//     well as to syslog. It exits at once when a portal cannot be bound ("listen error").
//   - A [UnitControl] section must exist; without a Portal line it opens no control port.
//   - Each [LogicalUnitN] is one target; its LUNs are numbered from 0 ("LUN0 Storage FILE
//     SIZE", SIZE "Auto" = the file's size); BlockLength is per section.
//   - AuthMethod None / CHAP / "CHAP Mutual"; AuthGroup names an [AuthGroupN] of auth.conf,
//     whose lines are `Auth "user" "secret" ["mutual user" "mutual secret"]`.
//   - It stops on SIGTERM within a few seconds; each login takes about one second.
type istgtOps struct{}

var istgtTools = []string{"istgt"}

func (istgtOps) tools() []string { return istgtTools }

// istgtKeyPlace says where a TargetSpec key goes in istgt.conf.
var istgtKeyPlace = map[string]string{
	// [Global] only; the same value must be given by every spec that sets it.
	"NopInInterval": "global", "Timeout": "global", "MaxSessions": "global",
	"MaxConnections": "global", "MaxR2T": "global",
	// Per target (overriding the global negotiation defaults).
	"MaxOutstandingR2T": "lu", "DefaultTime2Wait": "lu", "DefaultTime2Retain": "lu",
	"FirstBurstLength": "lu", "MaxBurstLength": "lu", "MaxRecvDataSegmentLength": "lu",
	"InitialR2T": "lu", "ImmediateData": "lu", "DataPDUInOrder": "lu",
	"DataSequenceInOrder": "lu", "ErrorRecoveryLevel": "lu", "QueueDepth": "lu",
	"TargetAlias": "lu", "UnitOnline": "lu",
	// tgt-style digest keys: CRC32C becomes "UseDigest Header" / "Data" (required).
	"HeaderDigest": "digest", "DataDigest": "digest",
}

// istgtGlobals are the [Global] negotiation defaults (istgt's example values).
var istgtGlobals = [][2]string{
	{"Timeout", "30"},
	{"NopInInterval", "20"},
	{"MaxSessions", "16"},
	{"MaxConnections", "4"},
	{"MaxR2T", "32"},
	{"MaxOutstandingR2T", "16"},
	{"DefaultTime2Wait", "2"},
	{"DefaultTime2Retain", "60"},
	{"FirstBurstLength", "262144"},
	{"MaxBurstLength", "1048576"},
	{"MaxRecvDataSegmentLength", "262144"},
	{"InitialR2T", "Yes"},
	{"ImmediateData", "Yes"},
	{"DataPDUInOrder", "Yes"},
	{"DataSequenceInOrder", "Yes"},
	{"ErrorRecoveryLevel", "0"},
}

// istgtDiscoveryGroup is the auth group for discovery sessions: every account of every
// target, so that discovery with any target's credentials works (DiscoveryAuthMethod Auto
// also lets initiators without credentials discover).
const istgtDiscoveryGroup = 9999

func (istgtOps) validate(specs []TargetSpec) error {
	globals := map[string]string{}
	for _, s := range specs {
		bs := 0
		for _, l := range s.LUNs {
			if l.LUN > 63 {
				return fmt.Errorf("target %s: istgt LUNs go from 0 to 63, not %d", s.Name, l.LUN)
			}
			if l.BSType != "" {
				return fmt.Errorf("target %s LUN %d: BSType %q is tgt only", s.Name, l.LUN, l.BSType)
			}
			if l.Thin {
				return fmt.Errorf("target %s LUN %d: thin provisioning is tgt only (istgt has no UNMAP)", s.Name, l.LUN)
			}
			if bs != 0 && l.blockSize() != bs {
				return fmt.Errorf("target %s: istgt has one block size per target, got %d and %d", s.Name, bs, l.blockSize())
			}
			bs = l.blockSize()
			if l.ReadOnly != s.LUNs[0].ReadOnly {
				return fmt.Errorf("target %s: istgt's ReadOnly is per target: all LUNs must agree", s.Name)
			}
		}
		for k, v := range s.Keys {
			if strings.ContainsAny(v, "\"\\\n") {
				return fmt.Errorf("target %s: key %s: quotes, backslashes and newlines are not supported", s.Name, k)
			}
			switch istgtKeyPlace[k] {
			case "global":
				if prev, ok := globals[k]; ok && prev != v {
					return fmt.Errorf("target %s: %s is global in istgt and another target set %q", s.Name, k, prev)
				}
				globals[k] = v
			case "lu":
			case "digest":
				if v != "CRC32C" && v != "None" {
					return fmt.Errorf("target %s: %s=%s: istgt supports CRC32C or None", s.Name, k, v)
				}
			default:
				return fmt.Errorf("target %s: key %q has no istgt equivalent", s.Name, k)
			}
		}
	}
	return nil
}

func (o istgtOps) launch(tg *Target) (*daemon, error) {
	bin, err := findTool("istgt")
	if err != nil {
		return nil, err
	}
	conf, auth := o.configs(tg)
	confPath := filepath.Join(tg.Dir, "istgt.conf")
	authPath := filepath.Join(tg.Dir, "auth.conf")
	if err := os.WriteFile(authPath, []byte(auth), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	d, err := spawn(tg.LogPath, tg.Dir, bin, "-c", confPath, "-p", o.pidPath(tg), "-D")
	if err != nil {
		return nil, err
	}
	// Ready when our process (not whoever may have taken the port before us) has a socket
	// listening on the port: the kernel then accepts connections, and istgt opens its
	// portals only after loading every LU. A test connection would only make istgt log
	// "***ERROR*** conn->state = 2" for a connection closed without a login.
	err = d.waitUntil(startTimeout, 20*time.Millisecond, func(context.Context) error {
		if !listensOn(d.pid(), tg.Port) {
			return fmt.Errorf("pid %d does not listen on %s yet", d.pid(), tg.Portal)
		}
		return nil
	})
	if err != nil {
		_ = d.kill()
		o.cleanupFiles(tg)
		out := d.output()
		if strings.Contains(out, "listen error") || strings.Contains(out, "istgt_open_portal() failed") {
			err = fmt.Errorf("%w: %v", errPortBusy, err)
		}
		return nil, tg.withLog(fmt.Errorf("start istgt on %s: %w", tg.Portal, err))
	}
	return d, nil
}

func (istgtOps) pidPath(tg *Target) string { return filepath.Join(tg.Dir, "istgt.pid") }

// configs returns the contents of istgt.conf and auth.conf.
func (o istgtOps) configs(tg *Target) (conf, auth string) {
	var c, a strings.Builder
	globals := map[string]string{}
	for _, kv := range istgtGlobals {
		globals[kv[0]] = kv[1]
	}
	anyCHAP := false
	for _, s := range tg.specs {
		for k, v := range s.Keys {
			if istgtKeyPlace[k] == "global" {
				globals[k] = v
			}
		}
		anyCHAP = anyCHAP || s.CHAPUser != ""
	}

	fmt.Fprintf(&c, "# generated by the iscsifs integration harness\n[Global]\n")
	fmt.Fprintf(&c, "  NodeBase %q\n", "iqn.2026-11.iscsifs.harness")
	fmt.Fprintf(&c, "  PidFile %q\n", o.pidPath(tg))
	fmt.Fprintf(&c, "  AuthFile %q\n", filepath.Join(tg.Dir, "auth.conf"))
	fmt.Fprintf(&c, "  MediaDirectory %q\n", tg.Dir)
	fmt.Fprintf(&c, "  LogFacility %q\n", "local7")
	fmt.Fprintf(&c, "  DiscoveryAuthMethod Auto\n")
	if anyCHAP {
		fmt.Fprintf(&c, "  DiscoveryAuthGroup AuthGroup%d\n", istgtDiscoveryGroup)
	}
	for _, kv := range istgtGlobals {
		fmt.Fprintf(&c, "  %s %s\n", kv[0], istgtValue(globals[kv[0]]))
	}
	fmt.Fprintf(&c, "\n[UnitControl]\n  AuthMethod None\n")
	fmt.Fprintf(&c, "\n[PortalGroup1]\n  Portal DA1 %s\n", tg.Portal)
	extra := 1
	for _, s := range tg.specs {
		for _, h := range s.ExtraPortalHosts {
			extra++
			fmt.Fprintf(&c, "  Portal DA%d %s\n", extra, net.JoinHostPort(h, strconv.Itoa(tg.Port)))
		}
	}
	fmt.Fprintf(&c, "\n[InitiatorGroup1]\n  InitiatorName \"ALL\"\n  Netmask 127.0.0.0/8\n")

	fmt.Fprintf(&a, "# generated by the iscsifs integration harness\n")
	var discovery []string
	for i, s := range tg.specs {
		n := i + 1
		fmt.Fprintf(&c, "\n[LogicalUnit%d]\n", n)
		fmt.Fprintf(&c, "  TargetName %s\n", s.Name)
		fmt.Fprintf(&c, "  Mapping PortalGroup1 InitiatorGroup1\n")
		switch {
		case s.MutualUser != "":
			fmt.Fprintf(&c, "  AuthMethod CHAP Mutual\n  AuthGroup AuthGroup%d\n", n)
		case s.CHAPUser != "":
			fmt.Fprintf(&c, "  AuthMethod CHAP\n  AuthGroup AuthGroup%d\n", n)
		default:
			fmt.Fprintf(&c, "  AuthMethod None\n")
		}
		if s.CHAPUser != "" {
			line := fmt.Sprintf("  Auth %q %q", s.CHAPUser, s.CHAPSecret)
			if s.MutualUser != "" {
				line += fmt.Sprintf(" %q %q", s.MutualUser, s.MutualSecret)
			}
			fmt.Fprintf(&a, "\n[AuthGroup%d]\n%s\n", n, line)
			discovery = append(discovery, line)
		}
		var digest []string
		for _, k := range []string{"HeaderDigest", "DataDigest"} {
			if s.Keys[k] == "CRC32C" {
				digest = append(digest, strings.TrimSuffix(k, "Digest"))
			}
		}
		if len(digest) == 0 {
			digest = []string{"Auto"}
		}
		fmt.Fprintf(&c, "  UseDigest %s\n", strings.Join(digest, " "))
		fmt.Fprintf(&c, "  ReadOnly %s\n", yesNo(s.LUNs[0].ReadOnly))
		fmt.Fprintf(&c, "  UnitType Disk\n")
		fmt.Fprintf(&c, "  BlockLength %d\n", s.LUNs[0].blockSize())
		keys := make([]string, 0, len(s.Keys))
		for k := range s.Keys {
			if istgtKeyPlace[k] == "lu" {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&c, "  %s %s\n", k, istgtValue(s.Keys[k]))
		}
		for _, l := range s.LUNs {
			fmt.Fprintf(&c, "  LUN%d Storage %q Auto\n", l.LUN, tg.backing[lunKey{s.Name, l.LUN}])
		}
	}
	if len(discovery) > 0 {
		fmt.Fprintf(&a, "\n[AuthGroup%d]\n%s\n", istgtDiscoveryGroup, strings.Join(discovery, "\n"))
	}
	return c.String(), a.String()
}

// istgtValue quotes a value that contains white space.
func istgtValue(v string) string {
	if v == "" || strings.ContainsAny(v, " \t") {
		return strconv.Quote(v)
	}
	return v
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

// shutdown sends SIGTERM and waits for istgt to exit.
func (istgtOps) shutdown(tg *Target, d *daemon) error {
	if err := d.signal(syscall.SIGTERM); err != nil {
		return err
	}
	if !d.wait(stopTimeout) {
		return fmt.Errorf("istgt still running %v after SIGTERM", stopTimeout)
	}
	return nil
}

// cleanupFiles removes the pid file a killed istgt leaves behind.
func (o istgtOps) cleanupFiles(tg *Target) {
	if err := os.Remove(o.pidPath(tg)); err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(os.Stderr, "istgt harness: %v\n", err)
	}
}

// listensOn reports whether process pid holds a listening TCP socket on 127.0.0.1:port
// (read from /proc/net/tcp and /proc/PID/fd).
func listensOn(pid, port int) bool {
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	inodes := map[string]bool{}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		if len(f) >= 10 && f[1] == local && f[3] == "0A" {
			inodes["socket:["+f[9]+"]"] = true
		}
	}
	if len(inodes) == 0 {
		return false
	}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if link, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil && inodes[link] {
			return true
		}
	}
	return false
}
