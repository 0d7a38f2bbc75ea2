package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/iscsifs/iscsifs/initiator"
)

// Mounting from mount(8) and /etc/fstab. Two helpers run iscsifs:
//
//   - mount.fuse3, for `mount -t fuse.iscsifs URL DIR -o OPTS` and the fstab
//     line `URL DIR fuse.iscsifs _netdev,OPTS 0 0`, runs (through /bin/sh, with
//     the PATH mount(8) leaves, i.e. sh's default: /usr/local/sbin,
//     /usr/local/bin, /usr/sbin, /usr/bin, /sbin, /bin)
//     `iscsifs URL DIR -o OPTS`, having dropped _netdev, nofail, user(s),
//     (no)auto, setuid= and drop_privileges (which mounts by itself and
//     passes DIR as /dev/fd/N), and added dev,suid when root;
//   - mount(8) itself, for `mount -t iscsifs` (type iscsifs in fstab), runs
//     `/sbin/mount.iscsifs URL DIR [-s] [-f] [-n] [-v] [-o OPTS]
//     [-t iscsifs.SUBTYPE] [-N NAMESPACE]`, mount.iscsifs being a link to
//     iscsifs.
//
// OPTS is mount(8)'s comma list: VFS flags first in canonical form
// (rw,nosuid,nodev,noexec,noatime,sync...), then the rest, "quoted" items
// keeping their commas and quotes. Either form becomes
// `iscsifs mount --daemon [FLAGS] URL DIR`, which returns once the mount
// serves, as a mount helper must.

// mountHelperName is what mount(8) runs for file system type iscsifs.
const mountHelperName = "mount.iscsifs"

// Secrets never go on the daemon's command line (ps shows it to everyone):
// they reach it through the environment, which credentials reads.
var secretOptionEnv = map[string]string{
	"chap-secret":   "ISCSIFS_CHAP_SECRET",
	"mutual-secret": "ISCSIFS_MUTUAL_SECRET",
}

// ignoredMountOptions are mount(8)'s and FUSE's options that an iscsifs mount
// has no use for: FUSE mounts are nosuid,nodev whatever is asked, nothing
// can be executed from or linked in a tree of LUN files, atimes are not
// kept, fstab-only options (auto, user, _netdev, nofail, ...) concern
// mount(8) alone, and default_permissions is always on. rw, ro, sync and
// async are read by helperCommand.option; x-* and X-* (systemd and other
// userspace tools) and comment= are ignored as well.
var ignoredMountOptions = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "user": true, "nouser": true, "users": true,
	"owner": true, "group": true, "_netdev": true, "nofail": true,
	"dev": true, "nodev": true, "suid": true, "nosuid": true, "exec": true, "noexec": true,
	"atime": true, "noatime": true, "relatime": true, "norelatime": true,
	"strictatime": true, "nostrictatime": true, "lazytime": true, "nolazytime": true,
	"diratime": true, "nodiratime": true, "dirsync": true,
	"iversion": true, "noiversion": true, "mand": true, "nomand": true,
	"silent": true, "loud": true, "symfollow": true, "nosymfollow": true,
	"default_permissions": true,
}

// mountOption is one flag of the mount command as an -o option.
type mountOption struct {
	flag   string // long flag name: cache-size
	isBool bool   // a bare word (read_only), or read_only=false
	env    string // a secret: passed in this environment variable instead
}

// mountOptions maps each option name (the flags of cmd and their long
// aliases, '-' written '_') to its flag. Hidden flags are left out.
func mountOptions(cmd *cli.Command) map[string]mountOption {
	opts := make(map[string]mountOption)
	for _, f := range cmd.Flags {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		names := f.Names()
		o := mountOption{flag: names[0], env: secretOptionEnv[names[0]]}
		if d, ok := f.(cli.DocGenerationFlag); ok {
			o.isBool = !d.TakesValue()
		}
		for _, n := range names {
			if len(n) > 1 {
				opts[strings.ReplaceAll(n, "-", "_")] = o
			}
		}
	}
	return opts
}

// helperCommand is a mount helper's command line turned into iscsifs's own.
type helperCommand struct {
	args []string          // argv0 mount --daemon [FLAGS], then URL DIR
	env  map[string]string // secrets for the daemon, by variable
	fake bool              // mount -f: check, then do nothing

	opts         map[string]mountOption
	sloppy       bool            // mount -s: ignore unknown options
	readOnly     bool            // ro, rw, read_only: the last one wins
	writeThrough bool            // sync, async, write_through: likewise
	given        map[string]bool // flags given, to refuse a secret twice
}

// isMountHelper reports whether args is a mount helper's command line: run
// as mount.iscsifs, or with an iscsi:// URL where the command goes. A
// command after mount.iscsifs (the re-executed daemon's "mount") is not.
func isMountHelper(args []string, commands []*cli.Command) bool {
	if len(args) < 2 {
		return false
	}
	if len(args[1]) >= len("iscsi://") && strings.EqualFold(args[1][:len("iscsi://")], "iscsi://") {
		return true
	}
	if filepath.Base(args[0]) != mountHelperName || strings.HasPrefix(args[1], "-") {
		return false
	}
	for _, c := range commands {
		if c.HasName(args[1]) {
			return false
		}
	}
	return args[1] != "help" && args[1] != "h"
}

// parseHelperArgs reads `URL DIR [-sfnv] [-o OPTS]... [-t TYPE] [-N NS]` (in
// any order, as helpers are called) into the mount command.
func parseHelperArgs(args []string, opts map[string]mountOption) (*helperCommand, error) {
	hc := &helperCommand{
		args: []string{args[0], "mount", "--daemon"},
		env:  map[string]string{},
		opts: opts, given: map[string]bool{},
	}
	var pos, optLists []string
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" || a == "-t" || a == "-N":
			if i+1 == len(args) {
				return nil, fmt.Errorf("%s needs a value", a)
			}
			i++
			switch a {
			case "-o":
				optLists = append(optLists, args[i])
			case "-N":
				return nil, fmt.Errorf("-N %s: mounting in another namespace is not supported", args[i])
			}
		case strings.HasPrefix(a, "-o"):
			optLists = append(optLists, a[2:])
		case len(a) > 1 && a[0] == '-' && strings.Trim(a[1:], "sfnv") == "":
			// -n (no mtab) and -v (verbose) change nothing here.
			hc.sloppy = hc.sloppy || strings.Contains(a, "s")
			hc.fake = hc.fake || strings.Contains(a, "f")
		case strings.HasPrefix(a, "-"):
			return nil, fmt.Errorf("unknown flag %q (a mount helper takes URL MOUNTPOINT [-sfnv] [-o OPTIONS])", a)
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		return nil, fmt.Errorf("want two arguments, URL and MOUNTPOINT, and -o OPTIONS (got %d arguments)", len(pos))
	}
	if strings.HasPrefix(pos[1], "/dev/fd/") {
		return nil, fmt.Errorf("mountpoint %s: mount.fuse3's drop_privileges is not supported", pos[1])
	}
	url := hc.moveURLSecrets(pos[0])
	for _, list := range optLists {
		items, err := splitMountOptions(list)
		if err != nil {
			return nil, err
		}
		for _, item := range items {
			if err := hc.option(item); err != nil {
				return nil, err
			}
		}
	}
	for secret, file := range map[string]string{"chap-secret": "chap-secret-file", "mutual-secret": "mutual-secret-file"} {
		if hc.given[secret] && hc.given[file] {
			return nil, fmt.Errorf("mount options %s and %s: give one", optionName(secret), optionName(file))
		}
	}
	if hc.readOnly {
		hc.args = append(hc.args, "--read-only")
	}
	if hc.writeThrough {
		hc.args = append(hc.args, "--write-through")
	}
	hc.args = append(hc.args, url, pos[1])
	return hc, nil
}

// option reads one item of an -o list.
func (hc *helperCommand) option(item string) error {
	name, value, hasValue := strings.Cut(item, "=")
	value = unquoteOption(value)
	switch {
	case name == "ro" || name == "rw":
		hc.readOnly = name == "ro"
		return nil
	case name == "sync" || name == "async":
		hc.writeThrough = name == "sync"
		return nil
	case name == "remount":
		return fmt.Errorf("mount option remount: not supported (unmount and mount again)")
	case ignoredMountOptions[name] && !hasValue,
		name == "comment" || strings.HasPrefix(name, "x-") || strings.HasPrefix(name, "X-"):
		return nil
	}
	o, ok := hc.opts[name]
	switch {
	case !ok && hc.sloppy:
		return nil
	case !ok:
		return fmt.Errorf("unknown mount option %s (want mount's flags with _ for -, e.g. cache_size=128MiB, read_only, chap_secret_file=PATH; see iscsifs mount --help)", optionName(name))
	case o.isBool:
		on := true
		if hasValue {
			var err error
			if on, err = strconv.ParseBool(value); err != nil {
				return fmt.Errorf("mount option %s: want %s or %s=true|false", name, name, name)
			}
		}
		hc.boolFlag(o.flag, on)
		return nil
	case !hasValue:
		return fmt.Errorf("mount option %s needs a value (%s=...)", name, name)
	}
	hc.given[o.flag] = true
	if o.env != "" {
		hc.env[o.env] = value
	} else {
		hc.args = append(hc.args, "--"+o.flag+"="+value)
	}
	return nil
}

// boolFlag sets a boolean flag; read-only and write-through are kept apart
// for ro/rw and sync/async, and --daemon is always on.
func (hc *helperCommand) boolFlag(flag string, on bool) {
	switch {
	case flag == "daemon":
	case flag == "read-only":
		hc.readOnly = on
	case flag == "write-through":
		hc.writeThrough = on
	case on:
		hc.args = append(hc.args, "--"+flag)
	default:
		hc.args = append(hc.args, "--"+flag+"=false")
	}
}

// moveURLSecrets returns the URL without its CHAP secrets, which go to the
// environment instead (the options' chap_secret, read later, still wins as
// a flag would). A URL that does not parse is left for mount to report.
func (hc *helperCommand) moveURLSecrets(raw string) string {
	u, err := initiator.ParseURL(raw)
	if err != nil || (u.Secret == "" && u.MutualSecret == "") {
		return raw
	}
	if u.Secret != "" {
		hc.env[secretOptionEnv["chap-secret"]] = u.Secret
	}
	if u.MutualSecret != "" {
		hc.env[secretOptionEnv["mutual-secret"]] = u.MutualSecret
	}
	u.Secret, u.MutualSecret = "", ""
	return u.String() // unredacted: nothing left to redact
}

// splitMountOptions splits a mount(8) option list at the commas outside
// double quotes, as libmount does; empty items are dropped.
func splitMountOptions(s string) ([]string, error) {
	var items []string
	start, quoted := 0, false
	for i := 0; i <= len(s); i++ {
		switch {
		case i < len(s) && s[i] == '"':
			quoted = !quoted
		case i == len(s) || (s[i] == ',' && !quoted):
			if i > start {
				items = append(items, s[start:i])
			}
			start = i + 1
		}
	}
	if quoted {
		return nil, fmt.Errorf("mount options: unbalanced double quote")
	}
	return items, nil
}

// unquoteOption removes the double quotes around an option's value.
func unquoteOption(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	return v
}

// optionName is a flag or option name as the -o list spells it, quoted when
// it is not a plain word. Values are never shown: one may be a secret.
func optionName(name string) string {
	name = strings.ReplaceAll(name, "-", "_")
	for _, r := range name {
		if !(r == '_' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return strconv.Quote(name)
		}
	}
	return name
}

// mountHelperArgs returns the command line to run: args itself, or for a
// mount helper's command line the mount --daemon command, having put the
// secrets in the environment for the daemon to inherit. It returns nil (and
// no error) when there is nothing to do (mount -f).
func mountHelperArgs(args []string) ([]string, error) {
	app := newApp(io.Discard, io.Discard)
	if !isMountHelper(args, app.Commands) {
		return args, nil
	}
	hc, err := parseHelperArgs(args, mountOptions(mountCommand()))
	if err != nil || hc.fake {
		return nil, err
	}
	for k, v := range hc.env {
		if err := os.Setenv(k, v); err != nil {
			return nil, err
		}
	}
	return hc.args, nil
}
