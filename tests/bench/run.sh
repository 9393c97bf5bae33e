#!/bin/bash
# tests/bench/run.sh - run the benchmarks and print their output.
#   tests/bench/run.sh               every tests/bench/b*.sh, in order
#   tests/bench/run.sh b0100 ...     only those whose names start with these
# Each benchmark prints one JSON line {"bench":NAME,...} and a human line, or
# "skip NAME: reason". Environment: IPKIT_BIN (programs, normally the
# optimised build/bin), IPKIT_TOP (source tree).
set -u
top=${IPKIT_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
export IPKIT_TOP=$top
export IPKIT_BIN=${IPKIT_BIN:-$top/build/bin}
rc=0
for b in "$top"/tests/bench/b[0-9]*.sh; do
	name=$(basename "$b" .sh)
	if [ $# -gt 0 ]; then
		want=0
		for f in "$@"; do case $name in "$f"*) want=1 ;; esac; done
		[ $want = 1 ] || continue
	fi
	echo "# $name" >&2
	bash "$b" || { echo "bench $name failed (exit $?)"; rc=1; }
done
exit $rc
