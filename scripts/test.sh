#!/usr/bin/env bash
# Runs every check CI runs: formatting, vet, the test suite (including the
# interoperability tests against qemu-img/qemu-io, which fail when those are
# missing), and a short run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."
export ZQIMG_REQUIRE_QEMU=1
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi
go vet ./...
go test -count=1 ./...
# The concurrency contract (Image, Device and the mount serve parallel
# callers) under the race detector.
go test -race -count=1 -run 'Concurrent|Parallel|AllocationsOfOneCluster|InPlaceWriteIsSynced' ./pkg/image ./pkg/zone
go test -race -count=1 ./pkg/bench
go test -race -count=1 ./pkg/zonefs
# The mount server under the race detector, driven by real processes (it
# re-executes the test binary; a race makes it exit 66, which umount
# checks). The kill -9 rounds are left to the run above: they take a
# minute under -race.
go test -race -count=1 -skip 'TestKill9DuringAppends' ./tests/mount
# Each fuzz target for a fixed number of inputs: no panic on any of them.
# A count, not a duration: a time budget under CPU load spends itself on
# start-up and the seed corpus, and the run's length and coverage vary
# with the machine's load (FUZZTIME=30s or =100000x for a longer run).
fuzztime=${FUZZTIME:-2000x}
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
		echo "fuzz $pkg $target ($fuzztime)"
		go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$pkg"
	done
done
