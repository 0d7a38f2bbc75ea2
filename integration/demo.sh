#!/usr/bin/env bash
# make demo: the main job of iscsifs on a throwaway local target.
# Builds iscsifs, starts tgtd on 127.0.0.1 with a small disk image from
# testdata, mounts it, shows the mount and the first sector, then unmounts and
# stops the target. Needs root (tgtd, FUSE); installs tgt and fuse3 if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
	echo "demo: run as root (tgtd and FUSE mounts need it)" >&2
	exit 1
fi
missing=()
command -v tgtd >/dev/null || missing+=(tgt)
command -v fusermount3 >/dev/null || missing+=(fuse3)
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]}"
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

say "building iscsifs"
CGO_ENABLED=0 go build -o bin/iscsifs ./cmd/iscsifs

work=$(mktemp -d /tmp/iscsifs-demo.XXXXXX)
ctl=$(( (RANDOM % 20000) + 10000 ))
tgtd_pid= mount_pid=
cleanup() {
	set +e
	if [ -n "$mount_pid" ] && kill -0 "$mount_pid" 2>/dev/null; then
		kill -TERM "$mount_pid"; wait "$mount_pid"
	fi
	mountpoint -q "$work/mnt" 2>/dev/null && fusermount3 -u -z "$work/mnt"
	if [ -n "$tgtd_pid" ]; then
		tgtadm -C "$ctl" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1
		tgtadm -C "$ctl" --op delete --mode system >/dev/null 2>&1
		for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$tgtd_pid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$tgtd_pid" 2>/dev/null; wait "$tgtd_pid" 2>/dev/null
		rm -f "/var/run/tgtd/socket.$ctl" "/var/run/tgtd/socket.$ctl.lock"
	fi
	rm -rf "$work"
}
trap cleanup EXIT

# A free port on loopback.
for _ in $(seq 50); do
	port=$(( (RANDOM % 20000) + 30000 ))
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
done
portal=127.0.0.1:$port
iqn=iqn.2026-11.io.iscsifs:demo

say "starting tgtd on $portal with testdata/demo-disk.img.gz (16 MiB)"
gzip -dc testdata/demo-disk.img.gz > "$work/disk.img"
tgtd -f -C "$ctl" --iscsi "portal=$portal" >"$work/tgtd.log" 2>&1 &
tgtd_pid=$!
for _ in $(seq 50); do tgtadm -C "$ctl" --op show --mode sys >/dev/null 2>&1 && break; sleep 0.1; done
tgtadm -C "$ctl" --lld iscsi --op new --mode target --tid 1 -T "$iqn"
tgtadm -C "$ctl" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$work/disk.img"
tgtadm -C "$ctl" --lld iscsi --op bind --mode target --tid 1 -I ALL

say "iscsifs discover $portal"
bin/iscsifs discover "$portal"
say "iscsifs ls iscsi://$portal/$iqn"
bin/iscsifs ls "iscsi://$portal/$iqn"

say "iscsifs mount iscsi://$portal/$iqn $work/mnt"
mkdir "$work/mnt"
bin/iscsifs mount --log-format console "iscsi://$portal/$iqn" "$work/mnt" &
mount_pid=$!
for _ in $(seq 100); do [ -e "$work/mnt/lun1" ] && break; sleep 0.1; done
ls -l "$work/mnt"

say "first sector of $work/mnt/lun1"
od -A d -t x1z -N 512 "$work/mnt/lun1"

say "sha256 of the mounted file and of the target's backing file"
sha256sum "$work/mnt/lun1" "$work/disk.img"

say "unmounting (SIGTERM flushes, unmounts and logs out)"
kill -TERM "$mount_pid"; wait "$mount_pid"; mount_pid=
echo "done."
