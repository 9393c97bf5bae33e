#!/bin/bash
# tests/bench/run.sh - run the benchmarks and print their output.
#   tests/bench/run.sh               every tests/bench/b*.sh, in order
#   tests/bench/run.sh b0100 ...     only those whose names start with these
# Each benchmark prints one JSON line {"bench":NAME,...} and a human line, or
# "skip NAME: reason". Environment: IPKIT_BIN (programs, normally the
# optimised build/bin), IPKIT_TOP (source tree), IPKIT_BENCH_QEMU (a second
# QEMU for the test guest, default build/qemu-backports/qemu-system-x86_64,
# which `make qemu-backports` unpacks): when it exists, b0500-migrate runs
# once more with it, because QEMU before 9.0 under TCG, the system's on
# Debian 12, cannot be trusted with live captures (ip-migrate(1), CAVEATS).
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
	if [ "$name" = b0500-migrate ]; then
		alt=${IPKIT_BENCH_QEMU:-$top/build/qemu-backports/qemu-system-x86_64}
		if [ -x "$alt" ]; then
			echo "# $name, the guest on $alt" >&2
			IPKIT_GUEST_EMULATOR=$alt bash "$b" || { echo "bench $name on $alt failed (exit $?)"; rc=1; }
		fi
	fi
done
exit $rc
