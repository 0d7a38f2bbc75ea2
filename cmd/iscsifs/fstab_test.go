package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/iscsifs/iscsifs/initiator"
)

const (
	fstabURL = "iscsi://127.0.0.1:3260/iqn.2026-11.lab:plain/1"
	fstabMnt = "/mnt/lun"
)

// TestMountHelperDetection: a URL where the command goes, or mount.iscsifs
// before anything but a command or a flag.
func TestMountHelperDetection(t *testing.T) {
	cmds := newApp(io.Discard, io.Discard).Commands
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"iscsifs", fstabURL, fstabMnt, "-o", "ro"}, true},
		{[]string{"/usr/local/bin/iscsifs", "ISCSI://host/iqn.x/1", fstabMnt}, true},
		{[]string{"/sbin/mount.iscsifs", fstabURL, fstabMnt, "-o", "rw"}, true},
		{[]string{"mount.iscsifs", "LABEL=x", fstabMnt}, true}, // mount reports the URL
		{[]string{"iscsifs", "mount", "--daemon", fstabURL, fstabMnt}, false},
		{[]string{"/sbin/mount.iscsifs", "mount", "--daemon", fstabURL, fstabMnt}, false}, // the daemon
		{[]string{"mount.iscsifs", "--help"}, false},
		{[]string{"mount.iscsifs", "help"}, false},
		{[]string{"mount.iscsifs"}, false},
		{[]string{"iscsifs", "ls", fstabURL}, false},
		{[]string{"iscsifs", "/mnt/lun"}, false},
	} {
		if got := isMountHelper(tc.args, cmds); got != tc.want {
			t.Errorf("isMountHelper(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

// TestMountHelperArgs turns the command lines mount.fuse3 and mount(8) run
// (as observed with util-linux 2.38 and fuse3 3.14) into mount --daemon.
func TestMountHelperArgs(t *testing.T) {
	opts := mountOptions(mountCommand())
	daemon := []string{"iscsifs", "mount", "--daemon"}
	secretFile := filepath.Join(t.TempDir(), "secret") // chap_secret_file and mutual_secret_file
	if err := os.WriteFile(secretFile, []byte("s3cret-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opt := func(list string) []string { return []string{fstabURL, fstabMnt, "-o", list} }
	with := func(flags ...string) []string {
		return append(append(slices.Clone(daemon), flags...), fstabURL, fstabMnt)
	}
	for _, tc := range []struct {
		name string
		args []string // after argv0
		want []string // the command line, unless err
		env  map[string]string
		err  string // want an error with this in it
		fake bool
	}{
		{name: "mount.fuse3 as root, fstab defaults",
			args: opt("rw,dev,suid"),
			want: with()},
		{name: "mount(8) canonical flags first, then ours",
			args: opt("rw,nosuid,nodev,noexec,noatime,cache_size=64MiB,chap_user=U,chap_secret_file=" + secretFile + ",allow_other,default_permissions"),
			want: with("--cache-size=64MiB", "--chap-user=U", "--chap-secret-file="+secretFile, "--allow-other")},
		{name: "ro",
			args: opt("ro,cache_size=64MiB,dev,suid"),
			want: with("--cache-size=64MiB", "--read-only")},
		{name: "rw after ro wins",
			args: opt("ro,rw"),
			want: with()},
		{name: "read_only",
			args: opt("read_only,queue_depth=16"),
			want: with("--queue-depth=16", "--read-only")},
		{name: "read_only=false after ro",
			args: opt("ro,read_only=false"),
			want: with()},
		{name: "sync is write-through",
			args: opt("rw,sync,flush_interval=1s"),
			want: with("--flush-interval=1s", "--write-through")},
		{name: "booleans as bare words and =false",
			args: opt("attach,allow_other=false,write_through,daemon"),
			want: with("--attach", "--allow-other=false", "--write-through")},
		{name: "quoted values keep their commas",
			args: opt(`chap_algorithms="sha256,md5",log_file="/var/log/a,b.log",readahead=0`),
			want: with("--chap-algorithms=sha256,md5", "--log-file=/var/log/a,b.log", "--readahead=0")},
		{name: "fstab-only and userspace options",
			args: opt("defaults,_netdev,nofail,auto,noauto,user,nouser,users,x-systemd.automount,x-systemd.mount-timeout=30,X-mount.mkdir,comment=systemd.automount,relatime,lazytime,,"),
			want: with()},
		{name: "every flag, - as _",
			args: opt("initiator_name=iqn.2026-11.lab:init,header_digest=crc32c,data_digest=none,timeout=10s,replacement_timeout=0,keepalive=1s,log_level=debug,log_format=json,busy_poll=0,memory_limit=1GiB,metrics_addr=127.0.0.1:9420,mutual_user=T,mutual_secret_file=" + secretFile),
			want: with("--initiator-name=iqn.2026-11.lab:init", "--header-digest=crc32c", "--data-digest=none", "--timeout=10s", "--replacement-timeout=0", "--keepalive=1s", "--log-level=debug", "--log-format=json", "--busy-poll=0", "--memory-limit=1GiB", "--metrics-addr=127.0.0.1:9420", "--mutual-user=T", "--mutual-secret-file="+secretFile)},
		{name: "no options at all",
			args: []string{fstabURL, fstabMnt},
			want: with()},
		{name: "mount.iscsifs from mount(8): -s -n -v -t, -s ignores unknown options",
			args: []string{fstabURL, fstabMnt, "-s", "-n", "-v", "-o", "ro,noexec,nosuid,nodev,cache_size=64MiB,bogus,_netdev,nofail,user", "-t", "iscsifs.lab"},
			want: with("--cache-size=64MiB", "--read-only")},
		{name: "-oOPTS and two -o",
			args: []string{fstabURL, "-oro", fstabMnt, "-o", "attach"},
			want: with("--attach", "--read-only")},
		{name: "mount -f checks and does nothing",
			args: []string{fstabURL, fstabMnt, "-fv", "-o", "ro"},
			want: with("--read-only"), fake: true},

		// Secrets: in the environment, never in the arguments.
		{name: "chap_secret and mutual_secret go to the environment",
			args: opt("chap_user=U,chap_secret=s3cret-chap-1,mutual_user=T,mutual_secret=s3cret-mutual-2"),
			want: with("--chap-user=U", "--mutual-user=T"),
			env:  map[string]string{"ISCSIFS_CHAP_SECRET": "s3cret-chap-1", "ISCSIFS_MUTUAL_SECRET": "s3cret-mutual-2"}},
		{name: "a quoted secret with a comma",
			args: opt(`chap_user=U,chap_secret="s3cret,with,commas"`),
			want: with("--chap-user=U"),
			env:  map[string]string{"ISCSIFS_CHAP_SECRET": "s3cret,with,commas"}},
		{name: "the URL's secrets move to the environment",
			args: []string{"iscsi://U%s3cret-url@127.0.0.1/iqn.2026-11.lab:plain/1?target_user=T&target_password=s3cret-tp", fstabMnt, "-o", "ro"},
			want: []string{"iscsifs", "mount", "--daemon", "--read-only", "iscsi://U@127.0.0.1:3260/iqn.2026-11.lab:plain/1?target_user=T", fstabMnt},
			env:  map[string]string{"ISCSIFS_CHAP_SECRET": "s3cret-url", "ISCSIFS_MUTUAL_SECRET": "s3cret-tp"}},
		{name: "chap_secret wins over the URL's, as the flag would",
			args: []string{"iscsi://U%s3cret-url@127.0.0.1/iqn.2026-11.lab:plain/1", fstabMnt, "-o", "chap_secret=s3cret-opt"},
			want: []string{"iscsifs", "mount", "--daemon", "iscsi://U@127.0.0.1:3260/iqn.2026-11.lab:plain/1", fstabMnt},
			env:  map[string]string{"ISCSIFS_CHAP_SECRET": "s3cret-opt"}},

		// Errors: one line naming the option, never its value.
		{name: "unknown option", args: opt("ro,bogus=s3cret-typo"), err: "unknown mount option bogus "},
		{name: "unknown quoted item", args: opt(`"a,b"`), err: `unknown mount option "\"a,b\""`},
		{name: "FUSE option iscsifs does not take", args: opt("allow_root"), err: "unknown mount option allow_root"},
		{name: "single-letter alias is no option", args: opt("d"), err: "unknown mount option d "},
		{name: "hidden flag is no option", args: opt("cpuprofile=/x"), err: "unknown mount option cpuprofile"},
		{name: "ignored word with a value", args: opt("nodev=1"), err: "unknown mount option nodev"},
		{name: "value missing", args: opt("cache_size"), err: "mount option cache_size needs a value"},
		{name: "secret without value", args: opt("chap_secret"), err: "mount option chap_secret needs a value"},
		{name: "bad boolean", args: opt("read_only=maybe"), err: "mount option read_only: want read_only or read_only=true|false"},
		{name: "secret twice", args: opt("chap_secret=s3cret-x,chap_secret_file=/f"), err: "mount options chap_secret and chap_secret_file: give one"},
		{name: "remount", args: opt("remount,ro"), err: "remount: not supported"},
		{name: "unbalanced quote", args: opt(`log_file="/a`), err: "unbalanced double quote"},
		{name: "drop_privileges", args: []string{fstabURL, "/dev/fd/3", "-o", "rw"}, err: "drop_privileges is not supported"},
		{name: "-N", args: []string{fstabURL, fstabMnt, "-N", "/proc/1/ns/mnt"}, err: "another namespace is not supported"},
		{name: "-o without list", args: []string{fstabURL, fstabMnt, "-o"}, err: "-o needs a value"},
		{name: "unknown flag", args: []string{fstabURL, fstabMnt, "--daemon"}, err: `unknown flag "--daemon"`},
		{name: "one argument", args: []string{fstabURL, "-o", "ro"}, err: "want two arguments"},
		{name: "three arguments", args: []string{fstabURL, fstabMnt, "extra"}, err: "want two arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hc, err := parseHelperArgs(append([]string{"iscsifs"}, tc.args...), opts)
			if tc.err != "" {
				if err == nil {
					t.Fatalf("no error, args %q", hc.args)
				}
				if !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "\n") {
					t.Fatalf("error %q, want one line with %q and no secret", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(hc.args, tc.want) {
				t.Errorf("args\n %q\nwant\n %q", hc.args, tc.want)
			}
			if hc.fake != tc.fake {
				t.Errorf("fake %v, want %v", hc.fake, tc.fake)
			}
			if len(hc.env) != len(tc.env) {
				t.Errorf("env %d variables, want %v", len(hc.env), tc.env)
			}
			for k, v := range tc.env {
				if hc.env[k] != v {
					t.Errorf("env %s: wrong or missing", k)
				}
			}
			for _, a := range hc.args {
				if strings.Contains(a, "s3cret") {
					t.Errorf("a secret in the arguments: %q", hc.args)
				}
			}
			checkMountParses(t, hc, tc.env)
		})
	}
}

// checkMountParses runs the produced command line through the mount
// command's own flags (not its action) and checks that credentials finds the
// secrets in the environment the daemon inherits.
func checkMountParses(t *testing.T, hc *helperCommand, env map[string]string) {
	t.Helper()
	for _, k := range []string{"ISCSIFS_CHAP_SECRET", "ISCSIFS_MUTUAL_SECRET", "ISCSIFS_CHAP_USER", "ISCSIFS_MUTUAL_USER"} {
		t.Setenv(k, env[k])
	}
	cmd := mountCommand()
	var creds initiator.Credentials
	cmd.Action = func(c *cli.Context) error {
		if c.NArg() != 2 || !c.Bool("daemon") {
			t.Errorf("mount sees %d arguments, daemon %v", c.NArg(), c.Bool("daemon"))
		}
		u, err := initiator.ParseURL(c.Args().First())
		if err != nil {
			return err
		}
		creds, err = credentials(c, u)
		return err
	}
	var stderr bytes.Buffer
	app := &cli.App{Name: "iscsifs", Writer: io.Discard, ErrWriter: &stderr, Commands: []*cli.Command{cmd},
		ExitErrHandler: func(*cli.Context, error) {}}
	if err := app.Run(hc.args); err != nil {
		t.Fatalf("mount %q: %v %s", hc.args, err, stderr.String())
	}
	if v, ok := env["ISCSIFS_CHAP_SECRET"]; ok && creds.Secret != v {
		t.Errorf("credentials: CHAP secret not the environment's")
	}
	if v, ok := env["ISCSIFS_MUTUAL_SECRET"]; ok && creds.MutualSecret != v {
		t.Errorf("credentials: mutual secret not the environment's")
	}
}

// TestMountOptionsCoverFlags: every visible flag of mount is an option, and
// the options of the contract are there.
func TestMountOptionsCoverFlags(t *testing.T) {
	opts := mountOptions(mountCommand())
	for _, f := range mountCommand().Flags {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		if o, ok := opts[strings.ReplaceAll(f.Names()[0], "-", "_")]; !ok || o.flag != f.Names()[0] {
			t.Errorf("flag --%s has no option", f.Names()[0])
		}
	}
	for name, isBool := range map[string]bool{
		"cache_size": false, "chap_user": false, "chap_secret": false, "chap_secret_file": false,
		"read_only": true, "attach": true, "allow_other": true, "write_through": true, "daemon": true,
		"queue_depth": false, "log_file": false, "readahead": false,
	} {
		if o, ok := opts[name]; !ok || o.isBool != isBool {
			t.Errorf("option %s: %+v, %v; want a boolean: %v", name, o, ok, isBool)
		}
	}
	if opts["chap_secret"].env != "ISCSIFS_CHAP_SECRET" || opts["mutual_secret"].env != "ISCSIFS_MUTUAL_SECRET" {
		t.Errorf("secrets not passed through the environment: %+v %+v", opts["chap_secret"], opts["mutual_secret"])
	}
}

// TestRunMountHelper: run takes the helper's form; mount -f does nothing,
// an unknown option is one line and exit status 1; the secret goes to the
// environment.
func TestRunMountHelper(t *testing.T) {
	t.Setenv("ISCSIFS_CHAP_SECRET", "")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"iscsifs", fstabURL, fstabMnt, "-f", "-o", "ro,chap_secret=s3cret-run"}, &stdout, &stderr); code != 0 || stdout.Len()+stderr.Len() != 0 {
		t.Errorf("mount -f: exit %d, output %q %q", code, stdout.String(), stderr.String())
	}
	if code := run([]string{"/sbin/mount.iscsifs", fstabURL, fstabMnt, "-o", "ro,bogus=s3cret-x"}, &stdout, &stderr); code != 1 {
		t.Errorf("unknown option: exit %d", code)
	}
	if got := stderr.String(); strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, "iscsifs: unknown mount option bogus ") || strings.Contains(got, "s3cret") {
		t.Errorf("unknown option: stderr %q", got)
	}
	args, err := mountHelperArgs([]string{"iscsifs", fstabURL, fstabMnt, "-o", "chap_user=U,chap_secret=s3cret-env"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"iscsifs", "mount", "--daemon", "--chap-user=U", fstabURL, fstabMnt}; !slices.Equal(args, want) {
		t.Errorf("args %q, want %q", args, want)
	}
	if v, _ := os.LookupEnv("ISCSIFS_CHAP_SECRET"); v != "s3cret-env" {
		t.Errorf("ISCSIFS_CHAP_SECRET not set for the daemon")
	}
	if args, err := mountHelperArgs([]string{"iscsifs", "ls", fstabURL}); err != nil || !slices.Equal(args, []string{"iscsifs", "ls", fstabURL}) {
		t.Errorf("a command's arguments changed: %q %v", args, err)
	}
}
