#!/usr/bin/env bash
# Sequential appends through `zqimg mount` against `zqimg io` zone appends
# on the same image geometry.
#
# Usage: scripts/bench-mount.sh        (as root: the mount needs /dev/fuse)
#
# Environment:
#   RUNS=5         runs per measurement; the table shows the median
#   MIB=256        MiB written per run (split over the writers)
#   BENCH_DIR=DIR  where the images go (default /var/tmp, or the repository's
#                  file system if /var/tmp is a tmpfs: tmpfs has no real
#                  fdatasync and would flatter everything)
#   ZQIMG=PATH     use this zqimg binary instead of building one
#
# What is measured, each on a fresh 1 GiB image with four 256 MiB
# sequential zones (zone.max_open_zones=4), with 64 KiB writes:
#   mount-1  one dd appending MIB MiB to seq/0 through the mount
#            (oflag=append conv=notrunc,fsync)
#   mount-4  four dd at once, MIB/4 MiB each, to seq/0..3
#   io-1     zqimg io: MIB MiB of `zap 0 64k` into zone 0, then flush
#   io-4     zqimg io: the same amount as 64 KiB zaps into zones 0..3
#            round-robin (one session: the image lock admits one writer)
# The mount runs with its default cache mode (writeback), zqimg io with
# its own (writeback in this version), and every run ends durable (dd's
# fsync, io's flush): like for like. The mount is set up before the timer
# starts and taken down after it stops; the io runs include opening and
# closing the image (a few milliseconds). The dd input is a random file
# in the page cache. Runs are interleaved and the order rotates from one
# run to the next, so drift on a shared machine hits every variant alike.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-5}
MIB=${MIB:-256}

die() { echo "bench-mount.sh: $*" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ $MIB =~ ^[1-9][0-9]*$ ]] && [ $((MIB % 4)) -eq 0 ] && [ "$MIB" -le 1024 ] || die "MIB must be a multiple of 4, at most 1024"
[ "$(id -u)" -eq 0 ] || die "run as root (the mount needs /dev/fuse without fusermount)"
[ -e /dev/fuse ] || die "/dev/fuse is missing"
for tool in dd umount mountpoint; do
	command -v "$tool" >/dev/null || die "$tool is required"
done

fstype() { df --output=fstype "$1" 2>/dev/null | tail -n 1 | tr -d ' '; }
if [ -n "${BENCH_DIR:-}" ]; then
	mkdir -p "$BENCH_DIR"
	base=$BENCH_DIR
elif [ -d /var/tmp ] && [ -w /var/tmp ] && [ "$(fstype /var/tmp)" != tmpfs ]; then
	base=/var/tmp
else
	base=$REPO
fi
WORK=$(mktemp -d "$base/.zqimg-bench-mount.XXXXXX")
MNT=$WORK/mnt
MPID=
cleanup() {
	if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" 2>/dev/null || umount -l "$MNT"; fi
	[ -n "$MPID" ] && kill "$MPID" 2>/dev/null || true
	rm -rf -- "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir "$MNT"

if [ -n "${ZQIMG:-}" ]; then
	ZQ=$ZQIMG
else
	ZQ=$WORK/zqimg
	GO=$(command -v go || echo /usr/local/go/bin/go)
	[ -x "$GO" ] || die "go not found (set ZQIMG to a built zqimg instead)"
	(cd "$REPO" && "$GO" build -o "$ZQ" ./cmd/zqimg)
fi

IMG=$WORK/zbc.qcow2
PER=$((MIB / 4))              # MiB per writer with four writers
N1=$((MIB * 16))              # 64 KiB writes with one writer
N4=$((PER * 16))              # 64 KiB writes per writer with four
head -c $((PER << 20)) /dev/urandom >"$WORK/rand"

fresh() {
	rm -f "$IMG"
	"$ZQ" create -q -f qcow2 -o zone.mode=host-managed,zone.size=256M,zone.max_open_zones=4 "$IMG" 1G
	sync
}

mount_up() {
	"$ZQ" mount "$IMG" "$MNT" &
	MPID=$!
	for _ in $(seq 200); do
		mountpoint -q "$MNT" && return 0
		sleep 0.01
	done
	die "mount did not come up"
}

mount_down() {
	umount "$MNT"
	wait "$MPID" || die "zqimg mount failed"
	MPID=
}

# Command files for zqimg io.
for ((i = 0; i < N1; i++)); do echo "zap 0 64k"; done >"$WORK/io1.cmds"
echo flush >>"$WORK/io1.cmds"
for ((i = 0; i < N4; i++)); do printf 'zap 0 64k\nzap 256M 64k\nzap 512M 64k\nzap 768M 64k\n'; done >"$WORK/io4.cmds"
echo flush >>"$WORK/io4.cmds"

prep_mount1() { fresh; mount_up; }
run_mount1() {
	for _ in 1 2 3 4; do cat "$WORK/rand"; done |
		dd of="$MNT/seq/0" bs=64k iflag=fullblock oflag=append conv=notrunc,fsync status=none
}
post_mount1() { mount_down; }

prep_mount4() { fresh; mount_up; }
run_mount4() {
	local z pids=()
	for z in 0 1 2 3; do
		dd if="$WORK/rand" of="$MNT/seq/$z" bs=64k oflag=append conv=notrunc,fsync status=none &
		pids+=($!)
	done
	for z in "${pids[@]}"; do wait "$z" || return 1; done
}
post_mount4() { mount_down; }

prep_io1() { fresh; }
run_io1() { "$ZQ" io "$IMG" <"$WORK/io1.cmds" >/dev/null; }
post_io1() { :; }

prep_io4() { fresh; }
run_io4() { "$ZQ" io "$IMG" <"$WORK/io4.cmds" >/dev/null; }
post_io4() { :; }

# verify: the image holds MIB MiB in its write pointers, and check is clean.
verify() {
	local sectors=0 start wp
	while read -r start wp; do
		sectors=$((sectors + wp - start))
	done < <("$ZQ" zrp "$IMG" 0 4 | sed -n 's/^start: \(0x[0-9a-f]*\),.* wptr \(0x[0-9a-f]*\),.*/\1 \2/p')
	[ "$sectors" -eq $((MIB * 2048)) ] || die "$1: write pointers hold $sectors sectors, want $((MIB * 2048))"
	"$ZQ" check -q "$IMG" || die "$1: check failed"
}

elapsed() { awk -v a="${1/,/.}" -v b="${2/,/.}" 'BEGIN { printf "%.6f", b - a }'; }
stats() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		printf "%.3f %.3f %.3f", m, v[1], v[NR] }'
}

labels=(mount1 io1 mount4 io4)
declare -A SAMP
echo "zqimg mount vs zqimg io: ${MIB} MiB of 64 KiB appends, ${RUNS} runs, $(fstype "$WORK") at $WORK"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 0; r < RUNS; r++)); do
	for ((i = 0; i < ${#labels[@]}; i++)); do
		l=${labels[$(((i + r) % ${#labels[@]}))]}
		"prep_$l"
		t0=$EPOCHREALTIME
		"run_$l" || die "$l failed"
		t1=$EPOCHREALTIME
		"post_$l"
		verify "$l"
		SAMP[$l]+=" $(elapsed "$t0" "$t1")"
	done
done
printf '\n%-8s %-48s %9s %9s %9s %10s\n' variant what median min max MiB/s
for l in "${labels[@]}"; do
	read -r med lo hi <<<"$(stats ${SAMP[$l]})"
	case $l in
	mount1) what="dd 64k oflag=append -> mnt/seq/0 (1 writer)" ;;
	mount4) what="4 x dd 64k oflag=append -> mnt/seq/0..3" ;;
	io1) what="zqimg io: zap 0 64k, zone 0" ;;
	io4) what="zqimg io: zap 64k, zones 0..3 round-robin" ;;
	esac
	printf '%-8s %-48s %8.3fs %8.3fs %8.3fs %10.1f\n' "$l" "$what" "$med" "$lo" "$hi" "$(awk -v m="$MIB" -v t="$med" 'BEGIN { print m / t }')"
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
