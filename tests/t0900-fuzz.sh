#!/bin/bash
# libFuzzer targets: replay the committed corpus, then fuzz each target for a
# bounded time (IPKIT_FUZZ_TIME seconds, default 20). A crash, leak or UB
# report fails the check and leaves the input in the log folder.
. "$(dirname "$0")/lib.sh"
need_cmd clang make
secs=${IPKIT_FUZZ_TIME:-20}
# Seeds that are generated rather than committed (binary images and deltas).
"$IPKIT_TOP/tests/fuzz/make-seeds.sh" "$TMP/seeds" >/dev/null 2>&1 || fail "fuzz seeds generated" "make-seeds.sh failed"
for src in "$IPKIT_TOP"/tests/fuzz/fuzz-*.c; do
	[ -f "$src" ] || skip_all "no fuzz targets"
	n=$(basename "$src" .c)
	if ! make -s -C "$IPKIT_TOP" "build/fuzz/$n" >"$TMP/build.log" 2>&1; then
		if grep -q "fsanitize=fuzzer" "$TMP/build.log" && grep -qi "unsupported\|cannot find" "$TMP/build.log"; then
			skip "$n" "clang cannot build libFuzzer targets here"
		else
			fail "$n builds" "$(tail -3 "$TMP/build.log")"
		fi
		continue
	fi
	f=$IPKIT_TOP/build/fuzz/$n
	corpora=()
	for c in "$IPKIT_TOP/tests/fuzz/corpus/$n" "$TMP/seeds/corpus-$n"; do [ -d "$c" ] && corpora+=("$c"); done
	if [ ${#corpora[@]} -gt 0 ]; then
		if (cd "$TMP" && "$f" -runs=0 "${corpora[@]}") >"$TMP/$n.replay" 2>&1; then
			ok "$n replays its corpus"
		else
			fail "$n replays its corpus" "$(grep -m1 -E 'ERROR|runtime error' "$TMP/$n.replay")"
		fi
	fi
	mkdir -p "$TMP/work-$n"
	if (cd "$TMP" && "$f" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 "$TMP/work-$n" "${corpora[@]}") >"$TMP/$n.log" 2>&1; then
		ok "$n: $(grep -oE 'Done [0-9]+ runs' "$TMP/$n.log" | head -1) in ${secs}s without a finding"
	else
		dest=${IPKIT_TEST_LOG:-$IPKIT_TOP/build/test-logs}
		mkdir -p "$dest" && cp "$TMP"/crash-* "$TMP"/leak-* "$TMP"/timeout-* "$dest"/ 2>/dev/null
		fail "$n fuzzing" "$(grep -m1 -E 'ERROR|runtime error' "$TMP/$n.log") (inputs copied to $dest)"
	fi
done
