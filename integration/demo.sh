#!/usr/bin/env bash
# make demo: the whole workflow of iscsifs on a throwaway local target.
#
# Builds iscsifs; starts tgtd on a free 127.0.0.1 port with one target that
# requires one-way CHAP and has one blank 256 MiB LUN; runs discover and ls;
# mounts the target with --attach (a loop device per file); writes a GPT with
# one partition through the LUN's device; makes an ext4 file system on the
# partition's device, mounts it and writes files into it; then takes
# everything down in order (umount the ext4, SIGTERM the daemon, stop tgtd)
# and shows that nothing is left mounted or attached.
#
# Needs root (tgtd, FUSE, loop devices). Installs what it lacks: tgt, fuse3,
# fdisk (sfdisk), e2fsprogs (mkfs.ext4), mount (losetup), jq.
# It touches only what it created: its tgtd, its mounts, its loop devices.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
	echo "demo: run as root: tgtd (the throwaway iSCSI target) cannot start without it (it needs /run/tgtd), nor can --attach make loop devices" >&2
	exit 1
fi

.ci/install-deps # what the demo uses is among what the tests use

say "building iscsifs"
CGO_ENABLED=0 go build -o bin/iscsifs ./cmd/iscsifs
iscsifs=$PWD/bin/iscsifs

work=$(mktemp -d /tmp/iscsifs-demo.XXXXXX)
mnt=$work/mnt # the iscsifs mount
fs=$work/fs   # the ext4 file system on lun1-part1's device
mkdir "$mnt" "$fs"
tgtd_pid= tgt_ours= ctl= mount_pid=

# our_loops prints the loop devices whose backing file is in our mount.
our_loops() {
	local f b
	for f in /sys/block/loop*/loop/backing_file; do
		[ -r "$f" ] || continue
		b=$(cat "$f" 2>/dev/null) || continue
		case $b in "$mnt"/*) f=${f#/sys/block/}; echo "/dev/${f%%/*}" ;; esac
	done
}
mounted() { awk -v d="$1" '$2 == d { found = 1 } END { exit !found }' /proc/mounts; }

# stop_tgtd deletes our target and tells our tgtd to exit (it ignores
# SIGTERM), killing it if it does not. tgtadm is used only once we know the
# management socket $ctl is our daemon's.
stop_tgtd() {
	[ -n "$tgtd_pid" ] || return 0
	if [ -n "$tgt_ours" ] && kill -0 "$tgtd_pid" 2>/dev/null; then
		tgtadm -C "$ctl" --lld iscsi --op unbind --mode target --tid 1 -I ALL >/dev/null 2>&1 || true
		tgtadm -C "$ctl" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1 || true
		tgtadm -C "$ctl" --op delete --mode system >/dev/null 2>&1 || true
	fi
	for _ in $(seq 25); do kill -0 "$tgtd_pid" 2>/dev/null || break; sleep 0.2; done
	kill -KILL "$tgtd_pid" 2>/dev/null || true
	wait "$tgtd_pid" 2>/dev/null || true
	if [ -n "$tgt_ours" ]; then rm -f "/run/tgtd/socket.$ctl" "/run/tgtd/socket.$ctl.lock"; fi
	tgtd_pid=
}

# cleanup undoes whatever is left, in order: the ext4, our loop devices, the
# daemon, the FUSE mount, tgtd, the temporary directory.
cleanup() {
	local rc=$? dev
	set +e
	trap - INT TERM
	if [ "$rc" != 0 ]; then
		echo "demo: failed (exit $rc); cleaning up" >&2
		[ -s "$work/iscsifs.log" ] && { echo "-- last lines of the iscsifs log:" >&2; tail -n 15 "$work/iscsifs.log" >&2; }
	fi
	mounted "$fs" && umount -l "$fs"
	for dev in $(our_loops); do losetup -d "$dev" 2>/dev/null; done
	if [ -n "$mount_pid" ] && kill -0 "$mount_pid" 2>/dev/null; then
		kill -TERM "$mount_pid"
		for _ in $(seq 50); do kill -0 "$mount_pid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$mount_pid" 2>/dev/null
		wait "$mount_pid" 2>/dev/null
	fi
	mounted "$mnt" && fusermount3 -u -z "$mnt"
	stop_tgtd
	# --one-file-system: never descend into a mount that is still there.
	rm -rf --one-file-system "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# waitfor SECONDS WHAT COMMAND...: runs COMMAND until it succeeds; fails the
# demo after SECONDS, or at once if the mount daemon has exited.
waitfor() {
	local secs=$1 what=$2
	shift 2
	for _ in $(seq $((secs * 10))); do
		"$@" && return 0
		if [ -n "$mount_pid" ] && ! kill -0 "$mount_pid" 2>/dev/null; then
			die "iscsifs mount exited while waiting for $what"
		fi
		sleep 0.1
	done
	die "timed out after ${secs}s waiting for $what"
}

# The target: one blank (sparse) 256 MiB LUN behind one-way CHAP. The secret
# goes to tgtadm as an argument (tgtadm has no other way), and to iscsifs
# only through the environment or a file.
iqn=iqn.2026-11.io.iscsifs:demo
chap_user=demo
chap_secret=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
(umask 077 && printf '%s\n' "$chap_secret" >"$work/chap-secret")
truncate -s 256M "$work/lun1.img"

# A free port on loopback, and tgtd's management socket number derived from
# it as the test harness does (port%32767+1), so that two of them never
# share one. Another tgtd already on that number makes ours exit at once;
# a port taken meanwhile makes it fall back to 0.0.0.0:3260: both are
# detected before tgtadm is trusted, and retried on another port.
start_tgtd() {
	local port
	for _ in $(seq 50); do
		port=$(((RANDOM % 20000) + 30000))
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
	done
	ctl=$((port % 32767 + 1))
	portal=127.0.0.1:$port
	pgrep -f "tgtd .*-C $ctl( |\$)" >/dev/null && return 1
	tgtd -f -C "$ctl" --iscsi "portal=$portal" >"$work/tgtd.log" 2>&1 &
	tgtd_pid=$!
	for _ in $(seq 50); do
		kill -0 "$tgtd_pid" 2>/dev/null || break
		tgtadm -C "$ctl" --op show --mode sys >/dev/null 2>&1 && break
		sleep 0.1
	done
	sleep 0.2 # a daemon that lost the race for the socket's lock exits now
	if kill -0 "$tgtd_pid" 2>/dev/null &&
		tgtadm -C "$ctl" --lld iscsi --op show --mode portal 2>/dev/null | grep -q "Portal: $portal,"; then
		tgt_ours=1
		return 0
	fi
	kill -KILL "$tgtd_pid" 2>/dev/null
	wait "$tgtd_pid" 2>/dev/null
	tgtd_pid=
	return 1
}
say "starting tgtd on 127.0.0.1 with a 256 MiB blank LUN that requires CHAP (user $chap_user)"
for try in 1 2 3 4 5; do
	start_tgtd && break
	[ "$try" = 5 ] && die "could not start tgtd on a free port: $(tail -n 3 "$work/tgtd.log" 2>/dev/null)"
done
adm() { tgtadm -C "$ctl" --lld iscsi "$@"; }
adm --op new --mode target --tid 1 -T "$iqn"
adm --op new --mode logicalunit --tid 1 --lun 1 -b "$work/lun1.img"
adm --op new --mode account --user "$chap_user" --password "$chap_secret"
adm --op bind --mode account --tid 1 --user "$chap_user"
adm --op bind --mode target --tid 1 -I ALL
echo "tgtd (pid $tgtd_pid) serves $iqn at $portal"
url=iscsi://$portal/$iqn

say "iscsifs discover $portal"
"$iscsifs" discover "$portal"

say "iscsifs ls $url   (without credentials the target refuses the login)"
if "$iscsifs" ls "$url"; then
	die "the target accepted a login without CHAP"
fi

say "ISCSIFS_CHAP_SECRET=… iscsifs ls --chap-user $chap_user $url"
ISCSIFS_CHAP_SECRET=$chap_secret "$iscsifs" ls --chap-user "$chap_user" "$url"

say "iscsifs mount --attach --chap-user $chap_user --chap-secret-file $work/chap-secret $url $mnt &"
# Device lines go to stdout, the log to stderr: both into files outside the
# mount (the daemon refuses a log on a file system it serves).
"$iscsifs" mount --attach --log-format console --chap-user "$chap_user" \
	--chap-secret-file "$work/chap-secret" "$url" "$mnt" \
	>"$work/devices" 2>"$work/iscsifs.log" &
mount_pid=$!
status_json=$mnt/.iscsifs/status.json
all_attached() {
	jq -e '[.targets[].luns[]] | length > 0 and
		all(.device != null and all(.partitions[]; .device != null))' "$status_json" >/dev/null 2>&1
}
waitfor 30 "the LUN's loop device in $status_json" all_attached
echo "daemon pid $mount_pid; the device lines it printed on stdout:"
cat "$work/devices"
lun_dev=$(jq -r '.targets[0].luns[] | select(.path == "lun1") | .device' "$status_json")
[ -b "$lun_dev" ] || die "no loop device for lun1 in $status_json"
ls -l "$mnt"
losetup --list --output NAME,BACK-FILE,DIO,LOG-SEC,RO,AUTOCLEAR "$lun_dev"

say "iscsifs status $mnt"
"$iscsifs" status "$mnt"

say "sfdisk $lun_dev: a GPT with one Linux partition, written through the LUN's device"
printf 'label: gpt\nname=demo, type=L\n' | sfdisk "$lun_dev"
part_dev() {
	jq -r '.targets[].luns[].partitions[] | select(.path == "lun1-part1") | .device // empty' \
		"$status_json" 2>/dev/null
}
has_part_dev() { [ -e "$mnt/lun1-part1" ] && [ -n "$(part_dev)" ]; }
waitfor 30 "lun1-part1 and its device" has_part_dev
p1_dev=$(part_dev)
[ -b "$p1_dev" ] || die "$p1_dev is not a block device"
echo "(sfdisk's re-read fails: iscsifs attaches its devices without partition scanning, and"
echo " the daemon reads the table itself, giving each partition a file and a device of its own."
echo " It read the new table after sfdisk wrote it, and printed:)"
grep '^lun1-part1 ' "$work/devices"
ls -l "$mnt"
cp "$status_json" "$work/status.json"
jq '.targets[0].luns[0] | {path, device, partition_table, partitions}' "$work/status.json"

say "mkfs.ext4 $p1_dev   (lun1-part1)"
mkfs.ext4 -q -L iscsifs-demo "$p1_dev"

say "mount $p1_dev $fs, write some files"
mount "$p1_dev" "$fs"
cp -r README.md initiator "$fs/"
head -c 64M /dev/urandom >"$fs/random.bin"
sync -f "$fs"
(cd "$fs" && sha256sum random.bin README.md && find . -type f | wc -l | sed 's/$/ files/')
sum=$(sha256sum <"$fs/random.bin")

say "df -h $fs"
df -h "$fs"

say "umount $fs"
umount "$fs"

say "SIGTERM the daemon: it detaches its devices, flushes, unmounts and logs out"
start_line=$(($(wc -l <"$work/iscsifs.log") + 1))
kill -TERM "$mount_pid"
rc=0
wait "$mount_pid" || rc=$?
mount_pid=
tail -n "+$start_line" "$work/iscsifs.log"
echo "iscsifs mount exited with status $rc"
[ "$rc" = 0 ] || die "iscsifs mount exited with status $rc"

say "stopping tgtd"
pid=$tgtd_pid
stop_tgtd
kill -0 "$pid" 2>/dev/null && die "tgtd (pid $pid) is still running"
echo "tgtd (pid $pid) stopped"

say "the target's backing file holds the file system (e2fsck -fn, random.bin read back)"
off=$(jq -r '.targets[0].luns[0].partitions[0].start' "$work/status.json")
e2fsck -fn "$work/lun1.img?offset=$off"
back=$(debugfs -R 'cat /random.bin' "$work/lun1.img?offset=$off" 2>/dev/null | sha256sum)
echo "random.bin: ${back%% *}"
[ "$back" = "$sum" ] || die "random.bin on the target differs from what was written"

say "nothing left behind"
left=$(our_loops)
for dev in $(awk '{print $2}' "$work/devices"); do
	# A device still bound to any file of ours (the path as losetup shows it).
	losetup -n -O BACK-FILE "$dev" 2>/dev/null | grep -qF "$mnt/" && left="$left $dev"
done
echo "losetup -a: $(losetup -a | grep -cF "$mnt/" || true) devices backed by files in $mnt${left:+ ($left)}"
echo "/proc/mounts: $(grep -cF "$work/" /proc/mounts || true) mounts under $work (fuse.iscsifs or ext4)"
echo "tgtd: $(pgrep -f "tgtd .*-C $ctl( |\$)" | wc -l) daemons on management socket $ctl"
[ -z "$left" ] || die "loop devices still attached: $left"
if grep -F "$work/" /proc/mounts; then die "still mounted (above)"; fi
echo "done."
