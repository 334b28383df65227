#!/usr/bin/env bash
# Convert throughput of zqimg against stock qemu-img on a plain 1 GiB image
# of random data: `convert -O qcow2` (and `-c -O qcow2`, compressed), run
# alternately by the tools on the same machine in the same run, RUNS times
# each (default 5); prints every time and the medians. Every run starts
# after a sync. zqimg flushes its output before it renames it into place;
# qemu-img convert's default cache mode for the output is "unsafe" (no
# flush: the data may still be in the page cache when it exits), so it is
# also timed with -t writeback, which flushes at the end like zqimg.
#
#   RUNS=5 SIZE=1G BENCH_DIR=/var/tmp scripts/bench-convert.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
size=${SIZE:-1G}
dir=$(mktemp -d -p "${BENCH_DIR:-/var/tmp}" zqimg-bench-convert.XXXXXX)
trap 'rm -rf "$dir"' EXIT
go build -o "$dir/zqimg" ./cmd/zqimg
head -c "$size" /dev/urandom >"$dir/src.raw"
qemu-img convert -f raw -O qcow2 "$dir/src.raw" "$dir/src.qcow2"
rm "$dir/src.raw"
bytes=$(qemu-img info --output=json "$dir/src.qcow2" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')

# timeit TOOL ARGS...: seconds for one conversion into $dir/out.qcow2.
timeit() {
	rm -f "$dir/out.qcow2"
	sync
	local t0 t1
	t0=$(date +%s.%N)
	"$@" "$dir/src.qcow2" "$dir/out.qcow2"
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for mode in plain compressed; do
	flags=(-O qcow2)
	[ "$mode" = compressed ] && flags=(-c -O qcow2)
	: >"$dir/z.times"
	: >"$dir/q.times"
	: >"$dir/w.times"
	for i in $(seq "$runs"); do
		z=$(timeit "$dir/zqimg" convert "${flags[@]}")
		q=$(timeit qemu-img convert "${flags[@]}")
		w=$(timeit qemu-img convert -t writeback "${flags[@]}")
		echo "$z" >>"$dir/z.times"
		echo "$q" >>"$dir/q.times"
		echo "$w" >>"$dir/w.times"
		printf '%-10s run %d: zqimg %.3f s, qemu-img %.3f s, qemu-img -t writeback %.3f s\n' "$mode" "$i" "$z" "$q" "$w"
	done
	zm=$(median <"$dir/z.times")
	qm=$(median <"$dir/q.times")
	wm=$(median <"$dir/w.times")
	mibs() { echo "$bytes / 1048576 / $1" | bc -l; }
	printf '%-10s median of %d: zqimg %.3f s (%.0f MiB/s); qemu-img %.3f s (%.0f MiB/s), ratio %.2f; qemu-img -t writeback %.3f s (%.0f MiB/s), ratio %.2f\n' \
		"$mode" "$runs" "$zm" "$(mibs "$zm")" "$qm" "$(mibs "$qm")" "$(echo "$zm / $qm" | bc -l)" \
		"$wm" "$(mibs "$wm")" "$(echo "$zm / $wm" | bc -l)"
done
