#!/bin/bash
# b0100-collect-replay: replay throughput of `ip-collect --replay DIR --speed 0`
# on the full shared Balabit data against a plain awk program doing the same
# per-second aggregation (events, clicks, scrolls, mouse distance and input
# age per session per interval, one line per session-interval, with the same
# defect handling: repeated rows dropped, timestamps clamped, jumps capped at
# 3600 s, Scroll and off-screen rows carrying no position). Both read the same
# files in the same run, each timed best of 3; outputs are checked to agree.
set -u
top=${IPKIT_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${IPKIT_BIN:-$top/build/bin}
data=$top/../shared/data/balabit-mouse
name=collect-replay
[ -d "$data" ] || { echo "skip b0100-$name: data set $data absent"; exit 0; }
[ -x "$bin/ip-collect" ] || { echo "skip b0100-$name: $bin/ip-collect not built (make build/bin/ip-collect)"; exit 0; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ipkit-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

find "$data" -type f -name 'session_*' | LC_ALL=C sort >"$tmp/files"
mapfile -t files <"$tmp/files"
[ ${#files[@]} -gt 0 ] || { echo "skip b0100-$name: no session files in $data"; exit 0; }

cat >"$tmp/agg.awk" <<'AWK'
# One line per session-interval: session k events clicks scrolls mouse_px input_age_s
function flush_to(kk) {
	while (k < kk) {
		printf "%s %d %d %d %d %.9f %.9f\n", sess, k, ev, cl, sc, px, (k + 1) * I - (last - origin)
		ev = cl = sc = 0; px = 0; k++
	}
}
function end_file() { if (started) flush_to(k + 1) }
BEGIN { FS = ","; I = 1; mj = 3600 }
FNR == 1 {
	end_file()
	n = split(FILENAME, part, "/")
	sess = (part[n - 1] ~ /^user[0-9]+$/) ? part[n - 1] "/" part[n] : part[n]
	started = 0; prev = ""; shift = 0; havepos = 0; k = 0; ev = cl = sc = 0; px = 0
	sub(/\r$/, "")
	if ($0 != "record timestamp,client timestamp,button,state,x,y") nextfile
	next
}
{
	sub(/\r$/, "")
	if (NF != 6) next
	if ($0 == prev) next
	prev = $0
	t = $2 + shift
	if (started) {
		gap = t - last
		if (gap > mj) { shift -= gap - mj; t = last + mj }
		else if (gap < -mj) { shift -= gap; t = last }
		else if (gap < 0) t = last
	} else { started = 1; origin = t }
	idx = int((t - origin) / I)
	if (idx > k) flush_to(idx)
	ev++
	if ($4 == "Pressed") cl++
	if ($3 == "Scroll") sc++
	else if (!($5 == 65535 && $6 == 65535)) {
		if (havepos) { dx = $5 - x0; dy = $6 - y0; px += sqrt(dx * dx + dy * dy) }
		x0 = $5; y0 = $6; havepos = 1
	}
	last = t
}
END { end_file() }
AWK

# best_of_3 OUT CMD...: run CMD three times with stdout to OUT; prints the best wall time.
best_of_3() {
	local out=$1 best="" i s e t
	shift
	for i in 1 2 3; do
		s=$(date +%s.%N)
		"$@" >"$out" 2>"$tmp/err" || { echo "FAILED: $* ($(head -c 300 "$tmp/err"))" >&2; return 1; }
		e=$(date +%s.%N)
		t=$(echo "$e - $s" | bc -l 2>/dev/null || awk -v a="$s" -v b="$e" 'BEGIN{print b-a}')
		best=$(awk -v a="$best" -v b="$t" 'BEGIN{print (a == "" || b < a) ? b : a}')
	done
	echo "$best"
}

# The faster awk on this machine is the peer (measured once on the data).
awk_bin=""
awk_best=""
for a in mawk gawk; do
	command -v "$a" >/dev/null || continue
	s=$(date +%s.%N); "$a" -f "$tmp/agg.awk" "${files[@]}" >/dev/null; e=$(date +%s.%N)
	t=$(awk -v a="$s" -v b="$e" 'BEGIN{print b-a}')
	if [ -z "$awk_best" ] || awk -v a="$t" -v b="$awk_best" 'BEGIN{exit !(a < b)}'; then awk_bin=$a awk_best=$t; fi
done
[ -n "$awk_bin" ] || { echo "skip b0100-$name: no awk"; exit 0; }

ipk_s=$(best_of_3 "$tmp/ipk.out" "$bin/ip-collect" --replay "$data" --speed 0 --start 1000 -q) || exit 1
awk_s=$(best_of_3 "$tmp/awk.out" "$awk_bin" -f "$tmp/agg.awk" "${files[@]}") || exit 1

# Agreement: total events, number of session-intervals, and every line.
ipk_events=$(awk '{ if (match($0, /"events":[0-9]+/)) n += substr($0, RSTART + 9, RLENGTH - 9) } END { print n + 0 }' "$tmp/ipk.out")
awk_events=$(awk '{ n += $3 } END { print n + 0 }' "$tmp/awk.out")
if [ "$ipk_events" != "$awk_events" ] || [ "$(wc -l <"$tmp/ipk.out")" != "$(wc -l <"$tmp/awk.out")" ]; then
	echo "bench $name: outputs disagree: ipkit $ipk_events events in $(wc -l <"$tmp/ipk.out") records, awk $awk_events in $(wc -l <"$tmp/awk.out") lines" >&2
	exit 1
fi
if command -v python3 >/dev/null; then
	python3 - "$tmp/ipk.out" "$tmp/awk.out" <<'PY' || exit 1
import json, sys
want = {}
for l in open(sys.argv[2]):
    s, k, ev, cl, sc, px, age = l.split()
    want[(s, int(k))] = (int(ev), int(cl), int(sc), float(px), float(age))
for l in open(sys.argv[1]):
    r = json.loads(l)
    key = (r['session'], round(r['ts'] - 1001))
    w = want.pop(key, None)
    got = (r['events'], r['clicks'], r['scrolls'], r['mouse_px'], r['input_age_s'])
    if w is None or w[:3] != got[:3] or abs(w[3] - got[3]) > 1e-5 or abs(w[4] - got[4]) > 1e-5:
        sys.exit('bench collect-replay: %s: ipkit %s, awk %s' % (key, got, w))
if want:
    sys.exit('bench collect-replay: %d session-intervals only in the awk output' % len(want))
PY
fi

awk -v ev="$ipk_events" -v i="$ipk_s" -v a="$awk_s" -v peer="$awk_bin" -v nf=${#files[@]} -v recs="$(wc -l <"$tmp/ipk.out")" 'BEGIN {
	printf "{\"bench\":\"collect-replay\",\"events\":%d,\"sessions\":%d,\"records\":%d,\"ipkit_s\":%.3f,\"awk_s\":%.3f,\"awk\":\"%s\",\"ipkit_events_per_s\":%.0f,\"awk_events_per_s\":%.0f,\"ratio\":%.2f}\n", ev, nf, recs, i, a, peer, ev / i, ev / a, a / i
	printf "collect-replay: %d events, %d sessions, %d session-intervals: ip-collect %.2f s (%.0f events/s), %s %.2f s (%.0f events/s); ip-collect is %.2fx the speed of %s (best of 3, outputs agree)\n", ev, nf, recs, i, ev / i, peer, a, ev / a, a / i, peer
}'
