#!/usr/bin/env bash
# make bench: iscsifs against the tools people would use instead, on the same
# target and LUNs, in one run (issues 4 and 13, DESIGN.md "Performance
# method").
#
# Starts its own tgtd on 127.0.0.1 with a 1 GiB LUN of random data, two 1 GiB
# LUNs to write to and a --bstype null LUN; runs the fifteen figures (figure
# 3 in two variants: 3a images to a file in the work directory, on tmpfs where
# there is room, 3b to one on the local disk, under BENCH_DISK_DIR, default
# /var/tmp) with alternating runs (median and min–max of BENCH_RUNS, default
# 5); prints one table and writes it as JSON (BENCH_JSON, default
# bin/bench-results.json). A run during which the host stole more than
# BENCH_MAX_STEAL percent of the CPU time (default 10; 0: never) is repeated,
# at most twice, keeping the least disturbed try. Figures 9 to 11 put ext4 on a loop device over the
# LUN; 9 copies BENCH_TREE (default the Go source tree,
# $(go env GOROOT)/src) onto it. Figures 12 to 14 run fio with O_DIRECT on
# the FUSE files; 15 is random reads at queue depth 1.
# Needs root (tgtd, FUSE, loop devices). Installs missing peers from Debian
# packages.
#
# BENCH_ONLY selects figures: a figure's number (with its variants), a
# variant (3b), or a string of one-digit figures (125 is 1, 2 and 5).
#
#   BENCH_RUNS=5 BENCH_SECONDS=5 BENCH_ONLY=125 BENCH_DIR=/dev/shm make bench
#   BENCH_ONLY=9,10,11 BENCH_TREE=/usr/local/go/src/net make bench
#   BENCH_ONLY=3b BENCH_DISK_DIR=/srv/scratch make bench
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "bench: run as root (tgtd and FUSE mounts need it)" >&2
	exit 1
fi

# command → Debian package
declare -A need=(
	[tgtd]=tgt [fusermount3]=fuse3 [iscsi-perf]=libiscsi-bin [qemu-img]=qemu-utils
	[qemu-nbd]=qemu-utils [qemu-storage-daemon]=qemu-system-common [nbdfuse]=libnbd-bin [fio]=fio
	[losetup]=mount [mkfs.ext4]=e2fsprogs
)
missing=()
for cmd in "${!need[@]}"; do
	command -v "$cmd" >/dev/null || missing+=("${need[$cmd]}")
done
# qemu's iscsi block driver is a module of its own package.
dpkg-query -W -f='${Status}' qemu-block-extra 2>/dev/null | grep -q 'ok installed' || missing+=(qemu-block-extra)
if [ ${#missing[@]} -gt 0 ]; then
	pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
	echo "bench: installing $pkgs" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs >&2 ||
		{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs >&2; }
fi

# Backing files, images and mount points go to memory when there is room, so
# that the local disk bounds neither side.
base=${BENCH_DIR:-}
if [ -z "$base" ]; then
	base=/tmp
	avail=$(df -k --output=avail /dev/shm 2>/dev/null | tail -1 || echo 0)
	[ "${avail:-0}" -gt $((5 * 1024 * 1024)) ] && base=/dev/shm
fi
work=$(mktemp -d "$base/iscsifs-bench.XXXXXX")
disk=
tool_pid=
cleanup() {
	set +e
	if [ -n "$tool_pid" ] && kill -0 "$tool_pid" 2>/dev/null; then
		kill -TERM "$tool_pid"
		wait "$tool_pid"
	fi
	# What a killed benchtool left behind (listed in $work/pids), top of each
	# stack first: file systems on loop devices; loop devices still attached
	# to what they were attached to (the number may be someone else's by
	# now); its children's process groups; its FUSE mounts. Then anything
	# still mounted below $work.
	if [ -f "$work/pids" ]; then
		local kind what id
		while read -r kind what; do
			[ "$kind" = fs ] && { timeout 60 umount "$what" 2>/dev/null || umount -l "$what" 2>/dev/null; }
		done <"$work/pids"
		while read -r kind what id; do
			[ "$kind" = loop ] || continue
			[ "$(losetup --list --noheadings -O BACK-INO,BACK-MAJ:MIN "$what" 2>/dev/null | xargs)" = "$id" ] &&
				timeout 60 losetup -d "$what"
		done <"$work/pids"
		while read -r kind what; do
			case $kind in
			pid) kill -KILL -- "-$what" 2>/dev/null; kill -KILL "$what" 2>/dev/null ;;
			mount) fusermount3 -u -z "$what" 2>/dev/null ;;
			esac
		done <"$work/pids"
	fi
	awk -v w="$work" 'index($2, w) == 1 { print $2 }' /proc/mounts | while read -r m; do
		fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done
	rm -rf "$work" ${disk:+"$disk"}
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Figure 3b's image goes to the local disk.
disk=$(mktemp -d "${BENCH_DISK_DIR:-/var/tmp}/iscsifs-bench.XXXXXX")

echo "bench: building iscsifs and benchtool into $work" >&2
CGO_ENABLED=0 go build -o "$work/iscsifs" ./cmd/iscsifs
go build -o "$work/benchtool" ./integration/benchtool

"$work/benchtool" -iscsifs "$work/iscsifs" -dir "$work" -disk-dir "$disk" \
	-json "${BENCH_JSON:-bin/bench-results.json}" \
	-runs "${BENCH_RUNS:-5}" -seconds "${BENCH_SECONDS:-5}" -only "${BENCH_ONLY:-}" \
	-max-steal "${BENCH_MAX_STEAL:-10}" \
	-tree "${BENCH_TREE:-$(go env GOROOT)/src}" &
tool_pid=$!
status=0
wait "$tool_pid" || status=$?
tool_pid=
exit "$status"
