#!/usr/bin/env bash
# Run QEMU's own qcow2 iotests with zqimg behind the names qemu-img and
# qemu-io, and print how many pass.
#
# Usage: scripts/iotests.sh [--stock] [--scan] [-j N] QEMU_SRC [TEST]...
#
#   QEMU_SRC  a QEMU source tree (a git checkout or an unpacked release,
#             7.2 is the one measured) holding tests/qemu-iotests/check
#   TEST      run only these tests of the selection (default: all of it)
#   --stock   run the same selection with the stock /usr/bin/qemu-img and
#             /usr/bin/qemu-io (the baseline); ZQIMG=stock does the same
#   --scan    print the tests of QEMU_SRC that qualify for the selection
#             (scanned from their source, see below) and exit
#   -j N      run N tests at once (default 1)
#
# The selection (SELECTION below) is the qcow2 tests of QEMU 7.2 that use
# only qemu-img and qemu-io: no system emulator, no qemu-nbd, no
# qemu-storage-daemon, no rbd. --scan derives it: a test qualifies when it
# supports the qcow2 format (bash: `_supported_fmt` names qcow2 or generic;
# python: supported_fmts names qcow2) and its source mentions none of
# _launch_qemu, QEMU_PROG, $QEMU, common.qemu, common.nbd, common.tls, nbd,
# iotests.VM, VM(, qemu_prog, QSD, qemu_storage_daemon, _send_qemu_cmd,
# _require_devices, nor supports only rbd; 297 (the python linters) is left
# out too.
#
# How it runs: QEMU's check expects a build tree. The script makes one in a
# temporary directory: tests/qemu-iotests/check is a symbolic link to
# QEMU_SRC's (so check finds its sources there and the build root beside
# the link), qemu-img and qemu-io are symbolic links to a freshly built
# zqimg (it dispatches on its name), and qemu-system-x86_64, qemu-nbd and
# storage-daemon/qemu-storage-daemon are stand-ins that fail (check asks
# qemu-system for its machine list, python tests for the formats the
# qemu-img under test supports: its `--help` line, or qcow2 raw file). QEMU_SRC is not written to; the
# scratch images go to the temporary directory, removed at the end
# (KEEP=1 keeps it: scratch/NNN.out.bad is a failing test's output).
#
# Output: one line per test (pass, FAIL or skip), then
#   passed N/M
#   failed: NAMES
# where M counts the tests run (not skipped). The exit status is 0 whether
# or not tests fail; 2 on a usage or set-up error.
set -euo pipefail

SELECTION="
001 002 003 004 005 008 009 010 011 012 013 014 015 017 018 019 020 021 022
023 024 025 026 027 029 031 032 033 034 035 036 037 038 039 042 043 044 046
047 048 049 050 052 053 054 061 062 063 066 069 072 073 074 079 080 082 086
089 090 097 098 103 104 105 107 110 111 112 114 115 121 122 125 126 133 134
138 150 154 158 159 163 170 177 178 179 187 188 189 190 197 198 204 214 215
217 220 226 243 250 252 261 263 265 268 270 271 272 279 284 287 289 290 292
293 303 305 313
"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }

stock=0
[ "${ZQIMG:-}" = stock ] && stock=1
scan=0
jobs=1
while [ $# -gt 0 ]; do
	case $1 in
	--stock) stock=1; shift ;;
	--scan) scan=1; shift ;;
	-j) [ $# -ge 2 ] || usage; jobs=$2; shift 2 ;;
	-h | --help) usage ;;
	-*) echo "iotests.sh: unknown option $1" >&2; usage ;;
	*) break ;;
	esac
done
[ $# -ge 1 ] || usage
src=$(cd "$1" && pwd) || exit 2
shift
iot=$src/tests/qemu-iotests
if [ ! -x "$iot/check" ]; then
	echo "iotests.sh: $iot/check not found: QEMU_SRC must be a QEMU source tree" >&2
	exit 2
fi

# qualifies TEST: whether the test's source passes the selection rules.
qualifies() {
	local f=$iot/$1
	[ "$1" = 297 ] && return 1
	if head -1 "$f" | grep -q python; then
		grep -qE "supported_fmts=\[[^]]*'qcow2'" "$f" || return 1
	else
		grep -qE '^_supported_fmt .*\b(qcow2|generic)\b' "$f" || return 1
		grep -qE '^_supported_proto rbd$' "$f" && return 1
	fi
	! grep -qiE '_launch_qemu|QEMU_PROG|\$QEMU\b|\$\{QEMU\}|common\.(qemu|nbd|tls)|nbd|iotests\.VM|\bVM\(|qemu_prog|QSD|qemu_storage_daemon|_send_qemu_cmd|_require_devices' "$f"
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/zqimg-iotests.XXXXXX")
cleanup() {
	if [ "${KEEP:-0}" = 1 ]; then
		echo "kept $tmp" >&2
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT

build=$tmp/build
mkdir -p "$build/tests/qemu-iotests" "$build/storage-daemon" "$tmp/scratch" "$tmp/sock"
ln -s "$iot/check" "$build/tests/qemu-iotests/check"
cat >"$build/qemu-system-x86_64" <<'EOF'
#!/bin/sh
# Stand-in for the system emulator: check asks it for its machine list,
# python tests (iotests.supported_formats) for the block formats, which
# are those of the qemu-img under test, and for its devices.
if [ "$1 $2" = "-machine help" ]; then echo "pc (default)"; exit 0; fi
case " $* " in *" -drive format=help "*)
	f=$("$(dirname "$0")/qemu-img" --help 2>/dev/null | sed -n 's/^Supported formats: //p')
	[ -n "$f" ] || f="file qcow2 raw"
	printf 'Supported formats: %s\nSupported formats (read-only): %s\n' "$f" "$f"
	exit 0;;
*" -device help "*)
	# Python tests refuse to start without virtio-blk; those of the
	# selection never launch a machine.
	echo 'name "virtio-blk-pci", bus PCI'
	exit 0;;
esac
echo "qemu-system is not available to these tests" >&2
exit 1
EOF
chmod +x "$build/qemu-system-x86_64"
cp "$build/qemu-system-x86_64" "$build/qemu-nbd"
cp "$build/qemu-system-x86_64" "$build/storage-daemon/qemu-storage-daemon"

if [ "$scan" = 1 ]; then
	# check wants every program in place even to list its tests.
	cp "$build/qemu-nbd" "$build/qemu-img"
	cp "$build/qemu-nbd" "$build/qemu-io"
	(cd "$build/tests/qemu-iotests" && ./check -qcow2 -n) 2>/dev/null | while read -r t; do
		if qualifies "$t"; then echo "$t"; fi
	done | tr '\n' ' ' | fold -s -w 76
	echo
	exit 0
fi

if [ "$stock" = 1 ]; then
	ln -s /usr/bin/qemu-img "$build/qemu-img"
	ln -s /usr/bin/qemu-io "$build/qemu-io"
	what="stock $(/usr/bin/qemu-img --version | head -1)"
else
	repo=$(cd "$(dirname "$0")/.." && pwd)
	(cd "$repo" && go build -o "$build/zqimg" ./cmd/zqimg)
	ln -s zqimg "$build/qemu-img"
	ln -s zqimg "$build/qemu-io"
	what="zqimg $(cd "$repo" && git describe --always --dirty 2>/dev/null || echo unknown)"
fi

tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
	read -r -a tests <<<"$(echo $SELECTION)"
fi

echo "QEMU iotests (-qcow2) of $src with $what: ${#tests[@]} tests" >&2
out=$tmp/tap
set +e
(cd "$build/tests/qemu-iotests" &&
	TEST_DIR=$tmp/scratch SOCK_DIR=$tmp/sock ./check -qcow2 -tap -j "$jobs" "${tests[@]}") >"$out" 2>"$tmp/check.err"
set -e
if ! grep -qE '^(not )?ok ' "$out"; then
	echo "iotests.sh: check did not run:" >&2
	cat "$tmp/check.err" "$out" >&2
	exit 2
fi

pass=0 fail=0 skip=0 failed=""
while read -r line; do
	case $line in
	"ok "*"# SKIP"*) skip=$((skip + 1)); t=${line#ok * }; echo "skip ${t%% *}" ;;
	"ok "*) pass=$((pass + 1)); echo "pass ${line#ok * }" ;;
	"not ok "*)
		fail=$((fail + 1))
		t=${line#not ok * }
		failed="$failed $t"
		echo "FAIL $t"
		;;
	esac
done <"$out"
echo "passed $pass/$((pass + fail)) (skipped $skip)"
echo "failed:${failed:- none}"
