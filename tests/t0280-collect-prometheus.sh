#!/bin/bash
# ip-collect --prometheus against a real HTTP server started here (python3's
# http.server on 127.0.0.1): metric mapping per session, counters as rates
# (baseline, increase, reset), label selectors, scale, the session label,
# unlabelled series, merging, malformed lines, and the error paths
# (unreachable endpoint, HTTP 404, redirect, bad --metric / URL).
. "$(dirname "$0")/lib.sh"
need_cmd ip-collect python3 timeout

# The server answers the Nth GET of /metrics with the file $dir/N (the last
# file repeats), so each scrape's content is known whatever the timing;
# /missing gives 404 and /moved a 302. It writes its port to $dir/port.
cat >"$TMP/server.py" <<'PY'
import http.server, os, sys
d, port = sys.argv[1], int(sys.argv[2])
n = [0]
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        if self.path == "/moved":
            self.send_response(302); self.send_header("Location", "/metrics")
            self.send_header("Content-Length", "0"); self.end_headers(); return
        if self.path != "/metrics":
            self.send_error(404); return
        n[0] += 1
        k = n[0]
        while k > 1 and not os.path.exists(os.path.join(d, str(k))):
            k -= 1
        with open(os.path.join(d, str(k)), "rb") as f:
            body = f.read()
        # The count is written (atomically) before the answer, so that a
        # client which has its answer and exits finds it complete.
        with open(os.path.join(d, "requests.tmp"), "w") as f:
            f.write(str(n[0]))
        os.rename(os.path.join(d, "requests.tmp"), os.path.join(d, "requests"))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
s = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
with open(os.path.join(d, "port.tmp"), "w") as f:
    f.write(str(s.server_address[1]))
os.rename(os.path.join(d, "port.tmp"), os.path.join(d, "port"))
s.serve_forever()
PY

# start_server DIR [PORT]: start the server on DIR, wait for its port.
start_server() {
	python3 "$TMP/server.py" "$1" "${2:-0}" 2>"$1/server.err" &
	local pid=$! i
	at_exit "kill $pid 2>/dev/null; wait $pid 2>/dev/null"
	for i in $(seq 100); do
		[ -s "$1/port" ] && return 0
		sleep 0.05
	done
	echo "server did not start: $(cat "$1/server.err")" >&2
	return 1
}

# free_port: a TCP port nothing listens on (bound, then released).
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# summarise FILE: one line per sample, "K SESSION field=value ..." with K the
# interval's number (1-based, by ts), fields sorted, sources listed.
cat >"$TMP/summarise.py" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ts = sorted({r["ts"] for r in recs})
skip = {"type", "v", "ts", "session", "interval", "user", "host", "sources"}
for r in recs:
    f = " ".join("%s=%.6g" % (k, r[k]) for k in sorted(r) if k not in skip)
    print(("%d %s %s [%s]" % (ts.index(r["ts"]) + 1, r["session"], f, ",".join(r.get("sources", [])))).replace("  ", " "))
PY

# --- Mapping, rates, resets, sessions ------------------------------------
mkdir "$TMP/m"
# Scrape 1 (the baseline taken at start) ...
cat >"$TMP/m/1" <<'EOF'
# HELP stream_frames_per_second Frames per second.
# TYPE stream_frames_per_second gauge
stream_frames_per_second{session="s1"} 59.9
stream_frames_per_second{session="s2"} 30
# TYPE stream_input_events_total counter
stream_input_events_total{session="s1",device="kbd"} 1000
stream_input_events_total{session="s1",device="mouse"} 200
stream_input_events_total{session="s2",device="kbd"} 50
encoder_load{session="s1"} 0.5
net_kbytes_total{dir="rx",client="s2"} 10
net_kbytes_total{dir="tx",client="s2"} 999
host_fps 24
EOF
# ... interval 1: +100 and +30 for s1 (summed), +30 for s2; rx +5 KiB.
# CRLF line ends, a timestamp and trailing blanks on some lines.
printf '%s\r\n' \
	'# TYPE stream_frames_per_second gauge' \
	'stream_frames_per_second{session="s1"} 60 1764115200000' \
	'stream_frames_per_second{session="s2"} 29.5   ' \
	'stream_input_events_total{session="s1",device="kbd"} 1100' \
	'stream_input_events_total{device="mouse",session="s1"} 230' \
	'stream_input_events_total{session="s2",device="kbd"} 80' \
	'encoder_load{session="s1"} 0.75' \
	'encoder_load{session="s2"} 0.2' \
	'encoder_load{session="s2",engine="b"} 0.4' \
	'net_kbytes_total{dir="rx",client="s2"} 15' \
	'net_kbytes_total{dir="tx",client="s2"} 2000' \
	'host_fps 25' >"$TMP/m/2"
# Interval 2: s1's kbd counter was reset (5 is the increase), mouse +0,
# s2 +0; encoder load NaN for s1 (absent, not zero); a malformed line 4.
cat >"$TMP/m/3" <<'EOF'
stream_frames_per_second{session="s1"} 61
stream_input_events_total{session="s1",device="kbd"} 5
stream_input_events_total{session="s1",device="mouse"} 230
this line is { not valid
stream_input_events_total{session="s2",device="kbd"} 80
encoder_load{session="s1"} NaN
net_kbytes_total{dir="rx",client="s2"} 15
host_fps 26
EOF
# Interval 3: s2's counter vanished; s1 +20 after the reset.
cat >"$TMP/m/4" <<'EOF'
stream_input_events_total{session="s1",device="kbd"} 25
stream_input_events_total{session="s1",device="mouse"} 230
host_fps +Inf
EOF
start_server "$TMP/m" || { fail "server starts" "see stderr"; exit 0; }
url="http://127.0.0.1:$(cat "$TMP/m/port")/metrics"
timeout 60 ip-collect --prometheus "$url" --session desk -i 0.3 -n 3 \
	--metric 'stream_frames_per_second=fps' \
	--metric 'stream_input_events_total=events:rate' \
	--metric 'encoder_load=gpu' \
	--metric 'net_kbytes_total{dir="rx"}=rx_bytes@client*1024:rate' \
	--metric 'host_fps=fps' >"$TMP/m.out" 2>"$TMP/m.err"
rc=$?
check_eq "prometheus: exit 0" 0 "$rc"
check_eq "prometheus: 4 scrapes (baseline + 3 intervals)" 4 "$(cat "$TMP/m/requests" 2>/dev/null)"
python3 "$TMP/summarise.py" "$TMP/m.out" >"$TMP/m.sum" 2>&1
cat "$TMP/m.sum" >&2
check_eq "prometheus: 8 samples (3 sessions x 3 intervals, s2 gone in the last)" 8 "$(wc -l <"$TMP/m.sum")"
check_grep "interval 1 s1: fps, events summed over 2 series (+100 +30), gpu" \
	'^1 s1 events=130 fps=60 gpu=0.75 \[prometheus\]$' "$TMP/m.sum"
check_grep "interval 1 s2: events +30, gpu max of 2 series, rx_bytes from label 'client' scaled" \
	'^1 s2 events=30 fps=29.5 gpu=0.4 rx_bytes=5120 \[prometheus\]$' "$TMP/m.sum"
check_grep "interval 1: unlabelled series go to --session" '^1 desk fps=25 \[prometheus\]$' "$TMP/m.sum"
check_grep "interval 2 s1: counter reset gives the new value (5 + 0), NaN gpu absent" \
	'^2 s1 events=5 fps=61 \[prometheus\]$' "$TMP/m.sum"
check_grep "interval 2 s2: unchanged counter gives 0" '^2 s2 events=0 rx_bytes=0 \[prometheus\]$' "$TMP/m.sum"
check_grep "interval 3 s1: increase after the reset" '^3 s1 events=20 \[prometheus\]$' "$TMP/m.sum"
check_grep "interval 3: infinite value skipped, session still there" '^3 desk \[prometheus\]$' "$TMP/m.sum"
if grep -q '^3 s2' "$TMP/m.sum"; then fail "interval 3: vanished series give no sample" "$(grep '^3 s2' "$TMP/m.sum")"; else
	ok "interval 3: vanished series give no sample"; fi
check_grep "malformed line: warning names URL and line 4" \
	"ip-collect: cannot parse '$url' line 4: .*\\(1 malformed line skipped\\)" "$TMP/m.err"
check_eq "malformed line: one warning, nothing else on stderr" 1 "$(grep -c . "$TMP/m.err")"
no_sanitizer_report "prometheus: no sanitizer report" "$TMP/m.err"

# --- Endpoint down at start, up later: not fatal --------------------------
mkdir "$TMP/late"
printf 'stream_input_events_total{session="s1"} 10\n' >"$TMP/late/1"
printf 'stream_input_events_total{session="s1"} 17\n' >"$TMP/late/2"
port=$(free_port)
timeout 60 ip-collect --prometheus "http://127.0.0.1:$port/metrics" --metric 'stream_input_events_total=events:rate' \
	-i 0.4 -n 8 -v >"$TMP/late.out" 2>"$TMP/late.err" &
cpid=$!
sleep 1
start_server "$TMP/late" "$port"
wait $cpid
rc=$?
check_eq "endpoint down at start: exit 0 once it comes up" 0 "$rc"
python3 "$TMP/summarise.py" "$TMP/late.out" >"$TMP/late.sum" 2>&1
check_grep "endpoint down at start: first scrape after it is up is a baseline, the next a rate" \
	'^[0-9]+ s1 events=7 ' "$TMP/late.sum"
check_eq "endpoint down at start: one warning for the repeated failure" 1 \
	"$(grep -c "warning\|cannot scrape" "$TMP/late.err")"
check_grep "endpoint down at start: recovery reported with -v" "scrape of '.*' works again" "$TMP/late.err"
no_sanitizer_report "endpoint down at start: no sanitizer report" "$TMP/late.err"

# --- Error paths -----------------------------------------------------------
port=$(free_port)
dead="http://127.0.0.1:$port/metrics"
check_exit "unreachable endpoint, every interval fails: exit 69" 69 \
	timeout 60 ip-collect --prometheus "$dead" --metric 'x=fps' -i 0.2 -n 3
check_grep "unreachable endpoint: warning names the URL" "^ip-collect: cannot scrape '$dead': .*(refused|connect)" "$TMP/.err"
check_grep "unreachable endpoint: final error says no data in 3 intervals" \
	"^ip-collect: no data from any source in 3 intervals: cannot scrape '$dead'" "$TMP/.err"
check_eq "unreachable endpoint: the repeated failure is warned once (and named in the error)" 2 \
	"$(grep -c "cannot scrape" "$TMP/.err")"
check_eq "unreachable endpoint: no sample written" 0 "$(wc -l <"$TMP/.out")"

# A server that accepts connections and never answers: each scrape times out
# after the interval, so the run keeps its pace.
python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
time.sleep(60)' "$TMP/mute.port" &
mute=$!
at_exit "kill $mute 2>/dev/null"
for i in $(seq 100); do [ -s "$TMP/mute.port" ] && break; sleep 0.05; done
t0=$(date +%s.%N)
check_exit "silent server: every scrape times out, exit 69" 69 \
	timeout 60 ip-collect --prometheus "http://127.0.0.1:$(cat "$TMP/mute.port")/metrics" --metric 'x=fps' -i 0.3 -n 2
t1=$(date +%s.%N)
check_grep "silent server: the warning says it timed out" "cannot scrape '.*': .*[Tt]imed out" "$TMP/.err"
if python3 -c "import sys; sys.exit(not $t1 - $t0 < 5)"; then ok "silent server: timeout bounded by the interval (3 scrapes in < 5 s)"; else
	fail "silent server: timeout bounded by the interval (3 scrapes in < 5 s)" "took $(python3 -c "print($t1 - $t0)") s"; fi
kill $mute 2>/dev/null

base="http://127.0.0.1:$(cat "$TMP/m/port")"
check_exit "HTTP 404: exit 69" 69 timeout 60 ip-collect --prometheus "$base/missing" --metric 'x=fps' -i 0.2 -n 2
check_grep "HTTP 404: message has the status and URL" "cannot scrape '$base/missing': HTTP status 404" "$TMP/.err"
check_exit "redirect: not followed, exit 69" 69 timeout 60 ip-collect --prometheus "$base/moved" --metric 'x=fps' -i 0.2 -n 1
check_grep "redirect: message names the status and the target" "HTTP status 302, redirected to '$base/metrics'" "$TMP/.err"

for spec in 'x=nosuchfield' 'x' '=fps' 'x{a=1}=fps' 'x{a="1"=fps' 'x=fps:ratex' 'x=fps*abc' 'x=fps@9bad' \
	'x=fps:rate:rate' 'bad-name=fps'; do
	check_exit "bad --metric '$spec': exit 64" 64 ip-collect --prometheus "$base/metrics" --metric "$spec" -n 1
	if grep -qF "invalid metric mapping '$spec'" "$TMP/.err"; then ok "bad --metric '$spec': named in the message"; else
		fail "bad --metric '$spec': named in the message" "$(head -c 300 "$TMP/.err")"; fi
done
check_exit "--prometheus without --metric: exit 64" 64 ip-collect --prometheus "$base/metrics" -n 1
for u in 'ftp://127.0.0.1/metrics' 'not a url' 'http://'; do
	check_exit "bad URL '$u': exit 64" 64 ip-collect --prometheus "$u" --metric 'x=fps' -n 1
	check_grep "bad URL '$u': named in the message" "invalid Prometheus URL '$u'" "$TMP/.err"
done
