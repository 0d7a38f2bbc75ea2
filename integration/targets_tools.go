package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// toolPackages names the Debian package that installs each tool the integration tests use.
var toolPackages = map[string]string{
	"tgtd":                 "tgt",
	"tgtadm":               "tgt",
	"istgt":                "istgt",
	"istgtcontrol":         "istgt",
	"iscsi-ls":             "libiscsi-bin",
	"iscsi-inq":            "libiscsi-bin",
	"iscsi-perf":           "libiscsi-bin",
	"iscsi-readcapacity16": "libiscsi-bin",
	"iscsi-swp":            "libiscsi-bin",
	"iscsi-test-cu":        "libiscsi-bin",
	"qemu-img":             "qemu-utils (and qemu-block-extra for iscsi:// URLs)",
	"qemu-io":              "qemu-utils (and qemu-block-extra for iscsi:// URLs)",
	"qemu-nbd":             "qemu-utils (and qemu-block-extra for iscsi:// URLs)",
	"qemu-storage-daemon":  "qemu-system-common (and qemu-block-extra)",
	"nbdfuse":              "libnbd-bin",
	"fio":                  "fio",
	"fusermount3":          "fuse3",
	"mount.fuse3":          "fuse3",
	"nsenter":              "util-linux",
	"mkfs.ext4":            "e2fsprogs",
	"e2fsck":               "e2fsprogs",
	"stdbuf":               "coreutils",
	"timeout":              "coreutils",
	"tshark":               "tshark",
	"mount":                "mount",
	"umount":               "mount",
	"debugfs":              "e2fsprogs",
	"sha256sum":            "coreutils",
	"sfdisk":               "fdisk",
	"losetup":              "mount",
	"mkfs.xfs":             "xfsprogs",
	"xfs_repair":           "xfsprogs",
	"fuse2fs":              "fuse2fs",
}

// sbinDirs are searched after $PATH: tgtd and istgt live in /usr/sbin, which a non-root
// PATH may lack.
var sbinDirs = []string{"/usr/sbin", "/sbin", "/usr/local/sbin"}

// findTool returns the path of an executable from $PATH or the sbin directories.
func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range sbinDirs {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", missingToolError(name)
}

func missingToolError(name string) error {
	if pkg := toolPackages[name]; pkg != "" {
		return fmt.Errorf("%s not found: install the Debian package %s (apt-get install %s)", name, pkg, firstWord(pkg))
	}
	return fmt.Errorf("%s not found in $PATH or %v", name, sbinDirs)
}

func firstWord(s string) string {
	for i, r := range s {
		if r == ' ' {
			return s[:i]
		}
	}
	return s
}

// inCI reports whether missing tools must fail the test instead of skipping it.
func inCI() bool { return os.Getenv("CI") == "true" }

// skipOrFail skips the test with msg, or fails it when running in CI (CI=true), where
// every tool must be installed (.ci/run installs them).
func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	if inCI() {
		t.Fatal(msg + " (CI=true: required)")
		return
	}
	t.Skip(msg)
}

// RequireTools skips the test when one of the tools is missing, naming the Debian package
// to install; with CI=true it fails the test instead.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	var errs []error
	for _, tool := range tools {
		if _, err := findTool(tool); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		skipOrFail(t, errors.Join(errs...).Error())
	}
}

// Tool returns the path of a tool, with RequireTools' skip/fail rule when it is missing.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := findTool(name)
	if err != nil {
		skipOrFail(t, err.Error())
	}
	return p
}

// RequireFUSE skips the test when FUSE mounts cannot work here: /dev/fuse missing or not
// openable, or fusermount3 missing (Debian package fuse3). With CI=true it fails instead.
func RequireFUSE(t testing.TB) {
	t.Helper()
	st, err := os.Stat("/dev/fuse")
	if err != nil {
		skipOrFail(t, "FUSE: /dev/fuse missing (modprobe fuse; in a container pass --device /dev/fuse)")
		return
	}
	if st.Mode()&os.ModeCharDevice == 0 {
		skipOrFail(t, "FUSE: /dev/fuse is not a character device")
		return
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		skipOrFail(t, fmt.Sprintf("FUSE: cannot open /dev/fuse: %v", err))
		return
	}
	f.Close()
	RequireTools(t, "fusermount3")
}
