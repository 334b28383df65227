#!/usr/bin/env bash
# Wall-clock benchmarks of zqimg against stock qemu-io / qemu-img and dd.
#
# Usage: scripts/bench.sh [SECTION]...
#   SECTION is one of seq-write, rand-read, zap-fill, zrp-1m, check
#   (default: all of them, in that order). Works from any directory.
#
# Environment:
#   RUNS=5            runs per measurement; the table shows the median
#   BENCH_DIR=DIR     where to put the temporary images (a fresh
#                     subdirectory is made there and removed at exit).
#                     Default: /var/tmp, or the repository's filesystem if
#                     /var/tmp is a tmpfs. Avoid tmpfs: it has no real
#                     fdatasync and would flatter everything.
#   QEMU_IO_CACHE=writeback
#                     cache mode passed to qemu-io with -t. qemu-io's own
#                     default is writethrough, which fdatasyncs after every
#                     request; zqimg io and dd conv=fdatasync sync once at
#                     the end, so writeback is the like-for-like mode.
#   CHECK_CLUSTER_SIZES="64k 4k"
#                     cluster sizes of the 4 GiB images the check section
#                     checks (64k: qemu-img's default, where both tools take
#                     ~10-20 ms, mostly process start-up; 4k: 16 times the
#                     metadata, where the check itself dominates).
#   ZQIMG=PATH        use this zqimg binary instead of building one.
#   BENCH_RUSAGE=gnu-time|python3|none
#                     how CPU time and max RSS are taken (default: GNU
#                     time if installed, else python3, else not at all).
#
# Method. Every figure is the median of RUNS wall-clock measurements
# ($EPOCHREALTIME around the command, which includes process start-up and
# the final fdatasync); the table also gives min and max, the median CPU
# time (user + system) and the largest maximum resident set size. CPU time
# is the steadier figure on a busy machine: the wall time of 1 GiB
# fdatasync'd writes on a shared virtual disk can vary several-fold between
# runs, so read wall ratios together with min/max and the load averages
# printed at the start and end. Caches are NOT dropped (that needs root): runs are
# warm-cache for whatever is read, and every write run starts from a fresh
# file, created (untimed) just before, after a `sync` so that write-back of
# earlier runs does not land in the timed window. Within a section the
# tools are interleaved and the order is rotated from one run to the next
# (run 1: A B C, run 2: B C A, ...), so drift on a shared machine hits every
# tool alike. All comparisons are made in the same invocation on the same
# machine. Ratios are zqimg / other: below 1.00 means zqimg is faster.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-5}
QEMU_IO_CACHE=${QEMU_IO_CACHE:-writeback}
ALL_SECTIONS=(seq-write rand-read zap-fill zrp-1m check)
CHECK_CLUSTER_SIZES=${CHECK_CLUSTER_SIZES:-64k 4k}

die() { echo "bench.sh: $*" >&2; exit 1; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
sections=("$@")
if [ ${#sections[@]} -eq 0 ]; then
	sections=("${ALL_SECTIONS[@]}")
fi
for s in "${sections[@]}"; do
	case $s in
	seq-write | rand-read | zap-fill | zrp-1m | check) ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown section '$s' (sections: ${ALL_SECTIONS[*]})" ;;
	esac
done

for tool in qemu-img qemu-io dd sync; do
	command -v "$tool" >/dev/null || die "$tool is required"
done

fstype() { df --output=fstype "$1" 2>/dev/null | tail -n 1 | tr -d ' '; }

# ---- scratch directory --------------------------------------------------
if [ -n "${BENCH_DIR:-}" ]; then
	mkdir -p "$BENCH_DIR"
	base=$BENCH_DIR
elif [ -d /var/tmp ] && [ -w /var/tmp ] && [ "$(fstype /var/tmp)" != tmpfs ]; then
	base=/var/tmp
else
	base=$REPO
fi
WORK=$(mktemp -d "$base/.zqimg-bench.XXXXXX")
cleanup() { rm -rf -- "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
FS=$(fstype "$WORK")
if [ "$FS" = tmpfs ]; then
	echo "warning: $WORK is on tmpfs; fdatasync is free there and the figures mean little" >&2
fi

# ---- zqimg binary -------------------------------------------------------
if [ -n "${ZQIMG:-}" ]; then
	ZQ=$ZQIMG
else
	ZQ=$WORK/zqimg
	GO=$(command -v go || echo /usr/local/go/bin/go)
	[ -x "$GO" ] || die "go not found (set ZQIMG to a built zqimg instead)"
	(cd "$REPO" && "$GO" build -o "$ZQ" ./cmd/zqimg)
fi

# ---- helpers ------------------------------------------------------------
# elapsed START END: END - START in seconds ($EPOCHREALTIME values).
elapsed() { awk -v a="${1/,/.}" -v b="${2/,/.}" 'BEGIN { printf "%.6f", b - a }'; }

# median/min/max of the arguments.
stats() {
	printf '%s\n' "$@" | sort -g | awk '
		{ v[NR] = $1 }
		END {
			m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf "%.3f %.3f %.3f", m, v[1], v[NR]
		}'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# CPU time (user + system) and maximum resident set size of each timed
# command come from GNU time when installed, else from a python3 wrapper
# (wait4 of the child); without either those columns read n/a. With GNU
# time, wall time is measured around it (its exec adds about a millisecond
# to every tool alike); the python3 wrapper measures wall time itself,
# around fork and wait, so that its own start-up is not counted.
RUSAGE=$WORK/rusage
RUSAGE_TOOL=${BENCH_RUSAGE:-}
if [ -z "$RUSAGE_TOOL" ]; then
	if /usr/bin/time -f '%U %S %M' -o /dev/null true >/dev/null 2>&1; then
		RUSAGE_TOOL=gnu-time
	elif command -v python3 >/dev/null; then
		RUSAGE_TOOL=python3
	else
		RUSAGE_TOOL=none
	fi
fi
case $RUSAGE_TOOL in
gnu-time | python3 | none) ;;
*) die "BENCH_RUSAGE must be gnu-time, python3 or none" ;;
esac

# timed CMD...: runs CMD, leaving "CPU-seconds RSS-KiB [wall-seconds]" in
# $RUSAGE.
timed() {
	rm -f "$RUSAGE"
	case $RUSAGE_TOOL in
	gnu-time)
		local rc=0
		/usr/bin/time -f '%U %S %M' -o "$RUSAGE.raw" "$@" || rc=$?
		# GNU time prefixes "Command exited with non-zero status N".
		tail -n 1 "$RUSAGE.raw" | awk '{ printf "%.2f %d\n", $1 + $2, $3 }' >"$RUSAGE"
		return $rc
		;;
	python3)
		python3 -c 'import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    f.write("%.3f %d %.6f\n" % (ru.ru_utime + ru.ru_stime, ru.ru_maxrss, wall))
sys.exit(os.waitstatus_to_exitcode(status) & 255)' "$RUSAGE" "$@"
		;;
	*) "$@" ;;
	esac
}

declare -A MED     # label -> median wall seconds
declare -A SAMP    # label -> wall samples
declare -A CPUS    # label -> CPU samples
declare -A RSSMAX  # label -> largest max-RSS seen, KiB

# bench SECTION LABEL... : for each label, prep_LABEL (untimed), run_LABEL
# (timed; it runs its command under `timed`), post_LABEL (untimed),
# RUNS times, rotating the order of the labels from one run to the next.
bench() {
	local section=$1
	shift
	local labels=("$@") n=$# r i label t0 t1 t cpu rss wall
	for label in "${labels[@]}"; do
		SAMP[$label]=""
		CPUS[$label]=""
		RSSMAX[$label]=0
	done
	for ((r = 0; r < RUNS; r++)); do
		for ((i = 0; i < n; i++)); do
			label=${labels[$(((i + r) % n))]}
			"prep_$label"
			t0=$EPOCHREALTIME
			"run_$label" || die "$section: $label failed (run $((r + 1))); output: $(tail -n 3 "$WORK/out" 2>/dev/null)"
			t1=$EPOCHREALTIME
			t=$(elapsed "$t0" "$t1")
			if [ -s "$RUSAGE" ]; then
				read -r cpu rss wall <"$RUSAGE"
				CPUS[$label]+="$cpu "
				((rss > RSSMAX[$label])) && RSSMAX[$label]=$rss
				[ -n "$wall" ] && t=$wall
			fi
			SAMP[$label]+="$t "
			"post_$label"
		done
		printf '.' >&2
	done
	echo >&2
	for label in "${labels[@]}"; do
		# shellcheck disable=SC2086
		read -r "MED[$label]" _ _ <<<"$(stats ${SAMP[$label]})"
	done
}

# cpu_med LABEL: median CPU seconds, or n/a.
cpu_med() {
	local c=${CPUS[$1]:-}
	if [ -z "$c" ]; then
		echo n/a
		return
	fi
	# shellcheck disable=SC2086
	stats $c | awk '{ print ($1 > 0) ? $1 : "<0.01" }' # GNU time counts in 10 ms
}

# ratios A B: "wall W (cpu C)" for labels A and B.
ratios() {
	local ca cb
	ca=$(cpu_med "$1")
	cb=$(cpu_med "$2")
	if [[ $ca == n/a || $cb == n/a || $ca == "<"* || $cb == "<"* ]]; then
		echo "$(ratio "${MED[$1]}" "${MED[$2]}") (cpu n/a)"
	else
		echo "$(ratio "${MED[$1]}" "${MED[$2]}") (cpu $(ratio "$ca" "$cb"))"
	fi
}

ROWS=()
# row SECTION LABEL DESCRIPTION RATIO-TEXT
row() {
	local label=$2 st rss=n/a
	# shellcheck disable=SC2086
	st=$(stats ${SAMP[$label]})
	if [ "${RSSMAX[$label]:-0}" -gt 0 ]; then
		rss=$(awk -v k="${RSSMAX[$label]}" 'BEGIN { printf "%.1f MiB", k / 1024 }')
	fi
	ROWS+=("$1|$3|$st|$(cpu_med "$label")|$rss|$4")
}

print_table() {
	echo
	echo "wall = elapsed seconds (median, min, max of $RUNS); cpu = user+system seconds of the process (median); RSS = largest max-RSS over the runs"
	printf '%-10s %-44s %8s %8s %8s %8s %10s  %s\n' section measurement "wall s" "min s" "max s" "cpu s" "max RSS" "ratio wall (cpu)"
	printf '%.0s-' {1..130}
	echo
	local r sec desc st cpu rss rat med mn mx
	for r in "${ROWS[@]}"; do
		IFS='|' read -r sec desc st cpu rss rat <<<"$r"
		read -r med mn mx <<<"$st"
		printf '%-10s %-44s %8s %8s %8s %8s %10s  %s\n' "$sec" "$desc" "$med" "$mn" "$mx" "$cpu" "$rss" "$rat"
	done
}

verdict() { # verdict VALUE LIMIT -> "ok" if VALUE <= LIMIT
	awk -v v="$1" -v l="$2" 'BEGIN { print (v <= l) ? "ok" : "MISSED" }'
}

SUMMARY=()

# Untimed sync before each timed write run: earlier runs' write-back and
# the discards of deleted files must not fall into the timed window.
settle() { sync; }

PATTERN_SRC=$WORK/pattern-0x5a.1g
make_pattern_src() {
	[ -f "$PATTERN_SRC" ] && return
	head -c 1G /dev/zero | LC_ALL=C tr '\0' '\132' >"$PATTERN_SRC"
}

WRITE_CMDS=$WORK/write64k.cmds
make_write_cmds() {
	[ -f "$WRITE_CMDS" ] && return
	local i
	for ((i = 0; i < 16384; i++)); do
		echo "write -q -P 0x5a $((i * 65536)) 64k"
	done >"$WRITE_CMDS"
}

# ---- seq-write ----------------------------------------------------------
IMG=$WORK/img.qcow2
RAW=$WORK/img.raw
ZIMG=$WORK/zoned.qcow2

prep_zq_write() { rm -f "$IMG"; "$ZQ" create -q "$IMG" 1G; settle; }
run_zq_write() { timed "$ZQ" io "$IMG" <"$WRITE_CMDS" >"$WORK/out" 2>&1; }
WRITE_VERIFIED=
post_zq_write() {
	# Once per invocation: the image must hold exactly the bytes dd writes.
	if [ -z "$WRITE_VERIFIED" ]; then
		qemu-img compare -q -f qcow2 -F raw "$IMG" "$PATTERN_SRC" ||
			die "zqimg's image does not hold 1 GiB of 0x5a"
		WRITE_VERIFIED=1
	fi
	rm -f "$IMG"
}

prep_qemu_write() { rm -f "$IMG"; qemu-img create -q -f qcow2 "$IMG" 1G; settle; }
run_qemu_write() { timed qemu-io -f qcow2 -t "$QEMU_IO_CACHE" "$IMG" <"$WRITE_CMDS" >"$WORK/out" 2>&1; }
post_qemu_write() { rm -f "$IMG"; }

# dd reads the pattern from a 1 GiB file kept in the page cache (warmed
# before each run), so the source costs a memcpy, not a disk read.
prep_dd_write() { rm -f "$RAW"; settle; cat "$PATTERN_SRC" >/dev/null; }
run_dd_write() { timed dd if="$PATTERN_SRC" of="$RAW" bs=64k count=16384 conv=fdatasync status=none; }
post_dd_write() { rm -f "$RAW"; }

section_seq_write() {
	echo "seq-write: 16384 x 64 KiB writes of 0x5a into a fresh 1 GiB image, one session; dd bs=64k conv=fdatasync" >&2
	make_write_cmds
	make_pattern_src
	bench seq-write zq_write qemu_write dd_write
	local rq rd
	rq=$(ratios zq_write qemu_write)
	rd=$(ratios zq_write dd_write)
	row seq-write zq_write "zqimg io (64k writes, 1 GiB)" "zqimg/qemu-io $rq; zqimg/dd $rd"
	row seq-write qemu_write "qemu-io -t $QEMU_IO_CACHE (same commands)" ""
	row seq-write dd_write "dd bs=64k conv=fdatasync (raw file)" ""
	SUMMARY+=("seq-write: zqimg/qemu-io = $rq, target <= 1.00: ${rq%% *} $(verdict "${rq%% *}" 1.00)")
	SUMMARY+=("seq-write: zqimg/dd = $rd, target <= 1.20: ${rd%% *} $(verdict "${rd%% *}" 1.20)")
}

# ---- rand-read ----------------------------------------------------------
READ_CMDS=$WORK/read4k.cmds
make_read_cmds() {
	local i
	RANDOM=20240611 # fixed seed: the same offsets every time
	for ((i = 0; i < 20000; i++)); do
		# 262144 blocks of 4 KiB in 1 GiB
		echo "read -q -P 0x5a $(((((RANDOM << 15) | RANDOM) % 262144) * 4096)) 4k"
	done >"$READ_CMDS"
}

prep_zq_read() { :; }
run_zq_read() { timed "$ZQ" io -r "$IMG" <"$READ_CMDS" >"$WORK/out" 2>&1; }
post_zq_read() { ! grep -qi -e fail -e error "$WORK/out" || die "rand-read: zqimg: $(grep -i -m1 -e fail -e error "$WORK/out")"; }

prep_qemu_read() { :; }
run_qemu_read() { timed qemu-io -r -f qcow2 -t "$QEMU_IO_CACHE" "$IMG" <"$READ_CMDS" >"$WORK/out" 2>&1; }
post_qemu_read() { ! grep -qi -e fail -e error "$WORK/out" || die "rand-read: qemu-io: $(grep -i -m1 -e fail -e error "$WORK/out")"; }

section_rand_read() {
	echo "rand-read: 20000 random 4 KiB reads (seeded, aligned, pattern-checked) over a filled 1 GiB image, one session" >&2
	make_write_cmds
	make_read_cmds
	rm -f "$IMG"
	"$ZQ" create -q "$IMG" 1G
	"$ZQ" io "$IMG" <"$WRITE_CMDS" >/dev/null
	cat "$IMG" >/dev/null # warm cache for both tools
	bench rand-read zq_read qemu_read
	rm -f "$IMG"
	local rq
	rq=$(ratios zq_read qemu_read)
	row rand-read zq_read "zqimg io -r (20000 x 4k reads)" "zqimg/qemu-io $rq"
	row rand-read qemu_read "qemu-io -r (same commands)" ""
	SUMMARY+=("rand-read: zqimg/qemu-io = $rq (no target)")
}

# ---- zap-fill -----------------------------------------------------------
ZONE_SIZE=$((256 << 20))
ZAP_CMDS=$WORK/zap64k.cmds
make_zap_cmds() {
	local i per=$((ZONE_SIZE / 65536))
	for ((i = 0; i < 16384; i++)); do
		echo "zap $(((i / per) * ZONE_SIZE)) 64k"
	done >"$ZAP_CMDS"
}

prep_zq_zap() {
	rm -f "$ZIMG"
	"$ZQ" create -q -o zone.mode=host-managed,zone.size=$ZONE_SIZE,zone.max_append_bytes=64k "$ZIMG" 1G
	settle
}
run_zq_zap() { timed "$ZQ" io "$ZIMG" <"$ZAP_CMDS" >"$WORK/out" 2>&1; }
post_zq_zap() {
	# Every zone must be full (condition 14) after the appends.
	local nfull
	nfull=$("$ZQ" zrp "$ZIMG" 0 4 | grep -c 'zcond:14,' || true)
	[ "$nfull" = 4 ] || die "zap-fill: expected 4 full zones, got $nfull"
	rm -f "$ZIMG"
}

section_zap_fill() {
	echo "zap-fill: 16384 x 64 KiB zone appends filling a 1 GiB zoned image (zone.size=$((ZONE_SIZE >> 20))M), interleaved with plain zqimg writes and dd" >&2
	make_write_cmds
	make_zap_cmds
	make_pattern_src
	# The plain-write and dd figures are re-measured here, interleaved
	# with the zap runs, so that all three see the same conditions.
	bench zap-fill zq_zap zq_write dd_write
	local rw rd
	rw=$(ratios zq_zap zq_write)
	rd=$(ratios zq_zap dd_write)
	row zap-fill zq_zap "zqimg io zap (64k appends, 1 GiB zoned)" "zap/plain-write $rw; zap/dd $rd"
	row zap-fill zq_write "zqimg io write (plain, re-measured)" ""
	row zap-fill dd_write "dd bs=64k conv=fdatasync (re-measured)" ""
	SUMMARY+=("zap-fill: zap/plain-write = $rw, target < 1.10: ${rw%% *} $(verdict "${rw%% *}" 1.0999)")
	SUMMARY+=("zap-fill: zap/dd = $rd, target <= 1.30: ${rd%% *} $(verdict "${rd%% *}" 1.30)")
}

# ---- zrp-1m -------------------------------------------------------------
prep_zq_zrp() { :; }
run_zq_zrp() { timed "$ZQ" zrp "$ZIMG" 0 1048576 >/dev/null; }
post_zq_zrp() { :; }

section_zrp_1m() {
	echo "zrp-1m: zqimg zrp FILE 0 1048576 on a 4 GiB image with 4 KiB zones (1,048,576 zones)" >&2
	rm -f "$ZIMG"
	"$ZQ" create -q -o zone.mode=host-managed,zone.size=4k,zone.max_append_bytes=2k "$ZIMG" 4G
	local lines
	lines=$("$ZQ" zrp "$ZIMG" 0 1048576 | wc -l)
	[ "$lines" = 1048576 ] || die "zrp-1m: report has $lines lines, expected 1048576"
	bench zrp-1m zq_zrp
	rm -f "$ZIMG"
	row zrp-1m zq_zrp "zqimg zrp FILE 0 1048576 >/dev/null" "(RSS via $RUSAGE_TOOL)"
	local mib=n/a rv=n/a
	if [ "${RSSMAX[zq_zrp]}" -gt 0 ]; then
		mib=$(awk -v k="${RSSMAX[zq_zrp]}" 'BEGIN { printf "%.1f", k / 1024 }')
		rv=$(verdict "$mib" 63.999)
		mib+=" MiB"
	fi
	SUMMARY+=("zrp-1m: median wall ${MED[zq_zrp]} s (cpu $(cpu_med zq_zrp) s), target < 0.5: $(verdict "${MED[zq_zrp]}" 0.4999)")
	SUMMARY+=("zrp-1m: max RSS $mib, target < 64 MiB: $rv")
}

# ---- check --------------------------------------------------------------
prep_zq_check() { :; }
run_zq_check() { timed "$ZQ" check "$IMG" >"$WORK/out" 2>&1; }
post_zq_check() { :; }

prep_qemu_check() { :; }
run_qemu_check() { timed qemu-img check -f qcow2 "$IMG" >"$WORK/out" 2>&1; }
post_qemu_check() { :; }

section_check() {
	if ! "$ZQ" check --help >/dev/null 2>&1; then
		echo "check: skipped: 'zqimg check' does not exist yet" >&2
		SUMMARY+=("check: skipped ('zqimg check --help' failed: the command does not exist yet)")
		return
	fi
	local cs i rq
	for cs in $CHECK_CLUSTER_SIZES; do
		echo "check: zqimg check vs qemu-img check on a fully written 4 GiB image, cluster_size=$cs" >&2
		rm -f "$IMG"
		"$ZQ" create -q -o cluster_size="$cs" "$IMG" 4G
		for ((i = 0; i < 4096; i++)); do
			echo "write -q -P 0x5a $((i << 20)) 1M"
		done | "$ZQ" io "$IMG" >/dev/null
		qemu-img check -q -f qcow2 "$IMG" || die "check: qemu-img check reports problems on the test image"
		cat "$IMG" >/dev/null # warm cache for both tools
		bench check zq_check qemu_check
		rm -f "$IMG"
		rq=$(ratios zq_check qemu_check)
		row check zq_check "zqimg check (4 GiB full, cluster $cs)" "zqimg/qemu-img $rq"
		row check qemu_check "qemu-img check (same image)" ""
		SUMMARY+=("check ($cs clusters): zqimg/qemu-img = $rq, target <= 1.00: ${rq%% *} $(verdict "${rq%% *}" 1.00)")
	done
}

# ---- main ---------------------------------------------------------------
echo "zqimg benchmarks — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "host: $(uname -srm), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
echo "scratch: $WORK ($FS)"
echo "zqimg: $ZQ ($(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo 'no git')$(cd "$REPO" && [ -n "$(git status --porcelain 2>/dev/null)" ] && echo ', dirty tree' || true))"
echo "$(qemu-img --version | head -n 1); $(qemu-io --version | head -n 1); $(dd --version | head -n 1)"
echo "RUNS=$RUNS (median shown), warm page cache, qemu-io -t $QEMU_IO_CACHE, rusage via $RUSAGE_TOOL"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

for s in "${sections[@]}"; do
	"section_${s//-/_}"
done

print_table
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg) (a load above $(nproc) means other work competed for the CPUs)"
for s in "${SUMMARY[@]}"; do
	echo "$s"
done
