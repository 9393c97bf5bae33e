# tests/redirect-lib.sh - helpers shared by the ip-redirect tests
# (t0600-redirect-haproxy.sh, t0610-redirect-caddy.sh,
# t0620-redirect-webhook.sh); sourced after lib.sh.
#
#   start_backends NAME...   one HTTP/1.1 server per NAME on 127.0.0.1 (random
#                            ports, keep-alive) answering "NAME"; the port of
#                            NAME is in $TMP/port.NAME
#   free_port                a TCP port nothing listens on
#   wait_port PORT           wait until something accepts on 127.0.0.1:PORT
#   fetch PORT               GET / on 127.0.0.1:PORT through a new connection
#   ka_start NAME PORT       a client that keeps one idle keep-alive
#                            connection to PORT (see keepalive.py below)
#   ka_finish NAME           let it go on; its report is in $TMP/ka.NAME.out
#   jfield FILE N FIELD      FIELD of the Nth JSON line of FILE (JSON text)

cat >"$TMP/backends.py" <<'PY'
import http.server, os, sys, threading
d = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        b = (self.server.name + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
for name in sys.argv[2:]:
    s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    s.daemon_threads = True
    s.name = name
    threading.Thread(target=s.serve_forever, daemon=True).start()
    with open(os.path.join(d, "port.%s.tmp" % name), "w") as f:
        f.write(str(s.server_address[1]))
    os.rename(os.path.join(d, "port.%s.tmp" % name), os.path.join(d, "port.%s" % name))
threading.Event().wait()
PY

# keepalive.py PORT OUT GO: GET / on one connection and write "first BODY"
# to OUT; wait for the file GO; then, on the idle connection, "old closed"
# when the server side closed it within 1.5 s, else "old BODY" from a second
# request on it; then "reconnect BODY" through a new connection.
cat >"$TMP/keepalive.py" <<'PY'
import http.client, os, select, socket, sys, time
port, out, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def log(s):
    with open(out, "a") as f:
        f.write(s + "\n")
c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
c.request("GET", "/")
log("first " + c.getresponse().read().decode().strip())
end = time.time() + 30
while not os.path.exists(go) and time.time() < end:
    time.sleep(0.02)
r, _, _ = select.select([c.sock], [], [], 1.5)
closed = False
if r:
    try:
        closed = c.sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        closed = True
if closed:
    log("old closed")
else:
    try:
        c.request("GET", "/")
        log("old " + c.getresponse().read().decode().strip())
    except Exception as e:
        log("old error " + type(e).__name__)
c.close()
n = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
n.request("GET", "/")
log("reconnect " + n.getresponse().read().decode().strip())
PY

start_backends() {
	python3 "$TMP/backends.py" "$TMP" "$@" >/dev/null 2>"$TMP/backends.err" &
	local pid=$! n
	at_exit "kill $pid 2>/dev/null; wait $pid 2>/dev/null"
	for n in "$@"; do
		for _ in $(seq 200); do
			[ -s "$TMP/port.$n" ] && break
			sleep 0.05
		done
		[ -s "$TMP/port.$n" ] || { echo "backend $n did not start: $(cat "$TMP/backends.err")" >&2; return 1; }
	done
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {
	for _ in $(seq 200); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

fetch() {
	curl -s --max-time 5 "http://127.0.0.1:$1/" 2>/dev/null
}

ka_start() {
	rm -f "$TMP/ka.$1.out" "$TMP/ka.$1.go"
	python3 "$TMP/keepalive.py" "$2" "$TMP/ka.$1.out" "$TMP/ka.$1.go" >/dev/null 2>"$TMP/ka.$1.err" &
	local pid=$!
	echo "$pid" >"$TMP/ka.$1.pid"
	at_exit "kill $pid 2>/dev/null; wait $pid 2>/dev/null"
	for _ in $(seq 200); do
		grep -q '^first' "$TMP/ka.$1.out" 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

ka_finish() {
	touch "$TMP/ka.$1.go"
	local pid
	pid=$(cat "$TMP/ka.$1.pid")
	timeout 15 tail --pid="$pid" -f /dev/null
	wait "$pid" 2>/dev/null
	cat "$TMP/ka.$1.err" >&2
}

jfield() {
	python3 -c 'import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
n = int(sys.argv[2])
if n > len(lines):
    print("(no line %d)" % n); sys.exit(0)
v = json.loads(lines[n - 1]).get(sys.argv[3], "(absent)")
print(json.dumps(v) if not isinstance(v, str) else v)' "$@"
}
