#!/bin/bash
# Stream behaviour every program shares, shown on ip-collect: a reader that
# closes the pipe early ends the program quietly with status 0; SIGTERM ends
# it cleanly with everything written so far flushed; records appear while
# the program runs (not only at exit).
. "$(dirname "$0")/lib.sh"
trace=$(ls -d "$IPKIT_TOP"/tests/data/balabit/user* 2>/dev/null | head -1)
[ -n "$trace" ] || skip_all "no replay excerpt in tests/data/balabit"

set -o pipefail
ip-collect --replay "$trace" --speed 0 2>"$TMP/err" | head -1 >"$TMP/one"
check_eq "closed pipe downstream: exit 0" 0 "$?"
check_eq "closed pipe downstream: nothing on stderr" "" "$(grep -v '^ip-collect: replay' "$TMP/err")"
set +o pipefail

ip-collect --replay "$trace" -q >"$TMP/live" 2>"$TMP/err" &
pid=$!
sleep 2.6
n_live=$(wc -l <"$TMP/live")
kill -TERM $pid
wait $pid
rc=$?
check_eq "SIGTERM: exit 0" 0 "$rc"
[ "$n_live" -ge 2 ] && ok "records appear while running ($n_live after 2.6 s at recorded pace)" ||
	fail "records appear while running" "only $n_live lines after 2.6 s"
n_end=$(wc -l <"$TMP/live")
[ "$n_end" -ge "$n_live" ] && tail -1 "$TMP/live" | grep -q '}$' && ok "SIGTERM: output complete up to the last record" ||
	fail "SIGTERM: output complete up to the last record" "$(tail -c 100 "$TMP/live")"
no_sanitizer_report "no sanitizer report" "$TMP/err"
