#!/bin/bash
# ip-redirect --lb webhook: against a real HTTP(S) server started here that
# records every body it receives: the JSON body (asserted field by field),
# 2xx = success, an error answer named and not retried, retries with backoff
# on 503, the timeout, an unreachable URL, TLS with a CA file and a client
# certificate, stream mode, and --dry-run (nothing sent).
. "$(dirname "$0")/lib.sh"
need_cmd ip-redirect python3 timeout
. "$IPKIT_TOP/tests/redirect-lib.sh"

# The hook: POST /ok -> 200; /reject -> 400 {"error":...}; /flakyN -> 503
# for the first two requests, then 200; /slow -> answers after 3 s. Each
# body is appended to $dir/bodies.PATH (one per line), the request count to
# $dir/count.PATH. With a certificate it serves TLS and requires a client
# certificate signed by the CA. It writes its port to $dir/hookport.
cat >"$TMP/hook.py" <<'PY'
import http.server, os, ssl, sys, time
d = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        name = self.path.strip("/")
        with open(os.path.join(d, "bodies." + name), "ab") as f:
            f.write(body + b"\n")
        cf = os.path.join(d, "count." + name)
        n = int(open(cf).read()) + 1 if os.path.exists(cf) else 1
        with open(cf, "w") as f:
            f.write(str(n))
        with open(os.path.join(d, "ctype." + name), "w") as f:
            f.write(self.headers.get("Content-Type", ""))
        status, reply = 200, b'{"ok":true}'
        if name == "reject":
            status, reply = 400, b'{"error":"session not known here"}'
        elif name.startswith("flaky") and n <= 2:
            status, reply = 503, b"overloaded"
        elif name == "slow":
            time.sleep(3)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
s.daemon_threads = True
tag = ""
if len(sys.argv) > 2:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    ctx.load_verify_locations(sys.argv[4])
    ctx.verify_mode = ssl.CERT_REQUIRED
    s.socket = ctx.wrap_socket(s.socket, server_side=True)
    tag = "tls"
with open(os.path.join(d, "hookport%s.tmp" % tag), "w") as f:
    f.write(str(s.server_address[1]))
os.rename(os.path.join(d, "hookport%s.tmp" % tag), os.path.join(d, "hookport%s" % tag))
s.serve_forever()
PY

# start_hook DIR [CERT KEY CA]: start the hook; its port goes to $HOOKPORT.
start_hook() {
	local dir=$1 tag=""
	shift
	[ $# -gt 0 ] && tag=tls
	python3 "$TMP/hook.py" "$dir" "$@" >/dev/null 2>"$dir/hook$tag.err" &
	at_exit "kill $! 2>/dev/null; wait $! 2>/dev/null"
	for _ in $(seq 200); do
		[ -s "$dir/hookport$tag" ] && { HOOKPORT=$(cat "$dir/hookport$tag"); return 0; }
		sleep 0.05
	done
	echo "hook did not start: $(cat "$dir/hook$tag.err")" >&2
	return 1
}

mkdir "$TMP/h"
start_hook "$TMP/h" || skip_all "the webhook server did not start"
URL=http://127.0.0.1:$HOOKPORT

# --- The body -------------------------------------------------------------------
before=$(date +%s)
ip-redirect --lb "webhook:$URL/ok" --session s42 --to 10.0.0.7:8443 >"$TMP/r1.out" 2>"$TMP/r1.err"
check_eq "webhook 2xx: exit 0" "0" "$?"
check_eq "webhook received one POST" "1" "$(cat "$TMP/h/count.ok" 2>/dev/null)"
check_eq "webhook body: Content-Type" "application/json" "$(cat "$TMP/h/ctype.ok" 2>/dev/null)"
python3 - "$TMP/h/bodies.ok" "$before" >"$TMP/body.check" 2>&1 <<'PY'
import json, sys, time
b = json.loads(open(sys.argv[1]).readline())
ts = b.pop("ts")
assert isinstance(ts, (int, float)) and float(sys.argv[2]) - 1 <= ts <= time.time() + 1, ts
want = {"event": "redirect", "v": 1, "session": "s42", "to": "10.0.0.7:8443", "host": "10.0.0.7", "port": 8443}
assert b == want, b
PY
check_eq "webhook body: documented fields and values" "" "$(cat "$TMP/body.check")"
check_eq "webhook record: confirmed by the 2xx" "true http-2xx webhook s42 10.0.0.7:8443" \
	"$(jfield "$TMP/r1.out" 1 confirmed) $(jfield "$TMP/r1.out" 1 check) $(jfield "$TMP/r1.out" 1 driver) $(jfield "$TMP/r1.out" 1 session) $(jfield "$TMP/r1.out" 1 to)"
ip-redirect --lb "webhook:$URL/ok" --session 's"6' --to '[2001:db8::7]:443' >/dev/null 2>>"$TMP/r1.err"
check_eq "webhook body: IPv6 address, quoting" '{"session": "s\"6", "to": "[2001:db8::7]:443", "host": "2001:db8::7", "port": 443}' \
	"$(sed -n 2p "$TMP/h/bodies.ok" | python3 -c 'import json,sys; b=json.load(sys.stdin); print(json.dumps({k: b[k] for k in ("session","to","host","port")}))')"

# --- Error answers, retries, timeout ----------------------------------------------
ip-redirect --lb "webhook:$URL/reject" --session s42 --to 10.0.0.7:8443 >"$TMP/r2.out" 2>"$TMP/r2.err"
check_eq "webhook 400: exit 65" "65" "$?"
check_grep "webhook 400: the error body is named" "webhook '$URL/reject' answered 400: session not known here" "$TMP/r2.err"
check_eq "webhook 400: not retried" "1" "$(cat "$TMP/h/count.reject")"
check_eq "webhook 400: record confirmed false" "false" "$(jfield "$TMP/r2.out" 1 confirmed)"

t0=$(date +%s.%N)
ip-redirect --lb "webhook:$URL/flaky1" --session s42 --to 10.0.0.7:8443 --retries 2 >"$TMP/r3.out" 2>"$TMP/r3.err"
rc=$?
t1=$(date +%s.%N)
check_eq "webhook 503 twice then 200 with --retries 2: exit 0" "0" "$rc"
check_eq "webhook 503 twice then 200: three tries" "3" "$(cat "$TMP/h/count.flaky1")"
check_eq "webhook retries back off (0.5 s + 1 s)" "1" "$(python3 -c "print(int($t1 - $t0 >= 1.4))")"
ip-redirect --lb "webhook:$URL/flaky2" --session s42 --to 10.0.0.7:8443 --retries 1 >"$TMP/r4.out" 2>"$TMP/r4.err"
check_eq "webhook 503 with --retries 1: exit 69" "69" "$?"
check_grep "webhook 503: status, body and tries named" "answered 503: overloaded \(after 2 tries\)" "$TMP/r4.err"

ip-redirect --lb "webhook:$URL/slow" --session s42 --to 10.0.0.7:8443 --timeout 0.5 --retries 0 >"$TMP/r5.out" 2>"$TMP/r5.err"
check_eq "webhook timeout: exit 69" "69" "$?"
check_grep "webhook timeout: named" "POST '$URL/slow' failed: .*[Tt]imed? ?out" "$TMP/r5.err"

DEAD=$(free_port)
check_exit "webhook unreachable: exit 69" 69 ip-redirect --lb "webhook:http://127.0.0.1:$DEAD/x" --session s42 --to 10.0.0.7:8443 --retries 0
check_grep "webhook unreachable: named" "POST 'http://127.0.0.1:$DEAD/x' failed: .*(refused|connect)" "$TMP/.err"
check_exit "webhook malformed address: exit 64" 64 ip-redirect --lb "webhook:$URL/ok" --session s42 --to 10.0.0.7
check_exit "webhook without --session: exit 64" 64 ip-redirect --lb "webhook:$URL/ok" --to 10.0.0.7:1
check_exit "webhook with a non-HTTP URL: exit 64" 64 ip-redirect --lb "webhook:ftp://x/y" --session s --to 10.0.0.7:1
for u in "http://" "http://127.0.0.1:99999/x" "http://[::1/x" "http://a b/"; do
	check_exit "webhook URL '$u' refused up front: exit 64" 64 ip-redirect --lb "webhook:$u" --session s --to 10.0.0.7:1
	check_eq "... nothing sent, no record" "0" "$(wc -c <"$TMP/.out")"
	grep -qF "invalid webhook URL '$u'" "$TMP/.err" && ok "... the URL named" || fail "... the URL named" "$(head -c 200 "$TMP/.err")"
done

# --- Stream mode -----------------------------------------------------------------
now=$(date +%s)
{
	echo '{"type":"sample","v":1,"ts":'"$now"',"session":"s1","interval":1}'
	echo '{"type":"migration","v":1,"ts":'"$now"',"session":"s1","from":"h1","to":"h2","outcome":"success","address":"10.0.0.8:5900"}'
	echo 'not json'
	echo '{"type":"migration","v":1,"ts":'"$now"',"session":"s2","from":"h1","to":"h2","outcome":"success","address":"render.example:5901"}'
	echo '{"type":"migration","v":1,"ts":'"$now"',"session":"s3","from":"h1","to":"h2","outcome":"success"}'
} >"$TMP/stream.in"
ip-redirect --lb "webhook:$URL/stream" --map s2=route-s2 <"$TMP/stream.in" >"$TMP/stream.out" 2>"$TMP/stream.err"
check_eq "stream mode exits 0" "0" "$?"
check_eq "stream mode: bodies for s1 and s2, in order" '["s1", null, "10.0.0.8:5900"] ["s2", "route-s2", "render.example:5901"]' \
	"$(python3 -c 'import json,sys
print(" ".join(json.dumps([b["session"], b.get("target"), b["to"]]) for b in map(json.loads, open(sys.argv[1]))))' "$TMP/h/bodies.stream")"
check_eq "stream mode: records out" "sample redirect redirect redirect" \
	"$(python3 -c 'import json,sys; print(" ".join(json.loads(l)["type"] for l in open(sys.argv[1])))' "$TMP/stream.out")"
check_grep "stream mode: a record without address is named" \
	'"session":"s3".*"confirmed":false.*gives no address' "$TMP/stream.out"
check_grep "stream mode: the bad line is reported" "input '<stdin>' line 3: invalid JSON" "$TMP/stream.err"
check_exit "stream mode --strict: bad line exits 65" 65 ip-redirect --strict --lb "webhook:$URL/stream" <"$TMP/stream.in"

printf 'ip-redirect.lb = webhook:%s/conf\nip-redirect.map = s1=from-config\nmap = s9=other\n' "$URL" >"$TMP/ipkit.conf"
sed -n 2p "$TMP/stream.in" | IPKIT_CONFIG=$TMP/ipkit.conf ip-redirect >"$TMP/conf.out" 2>"$TMP/conf.err"
check_eq "stream mode: --lb and --map from the config file" "0 s1 from-config" \
	"$? $(jfield "$TMP/h/bodies.conf" 1 session) $(jfield "$TMP/h/bodies.conf" 1 target)"

# --- Dry run ----------------------------------------------------------------------
ip-redirect --lb "webhook:$URL/dry" --session s42 --to 10.0.0.7:8443 --dry-run >"$TMP/d.out" 2>"$TMP/d.err"
check_eq "dry run exits 0" "0" "$?"
check_grep "dry run shows the body" '^  \{"event":"redirect","v":1,"ts":[0-9.]+,"session":"s42","to":"10.0.0.7:8443","host":"10.0.0.7","port":8443\}$' "$TMP/d.err"
check_eq "dry run sent nothing" "absent" "$([ -e "$TMP/h/count.dry" ] && echo present || echo absent)"

# --- TLS: CA file and client certificate -------------------------------------------
if command -v openssl >/dev/null; then
	cd "$TMP" || exit 1
	ossl() { openssl "$@" >>"$TMP/openssl.log" 2>&1; }
	ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=ipkit-test-ca \
		-keyout ca.key -out ca.pem &&
	ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 -keyout srv.key -out srv.csr &&
	printf 'subjectAltName=IP:127.0.0.1\n' >srv.ext &&
	ossl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile srv.ext -out srv.pem &&
	ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=ipkit-client -keyout cli.key -out cli.csr &&
	ossl x509 -req -in cli.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out cli.pem
	tls_ok=$?
	cd "$IPKIT_TOP" || exit 1
	if [ $tls_ok = 0 ] && start_hook "$TMP/h" "$TMP/srv.pem" "$TMP/srv.key" "$TMP/ca.pem"; then
		TURL=https://127.0.0.1:$HOOKPORT/tls
		check "TLS with --cacert, --cert and --key" ip-redirect --lb "webhook:$TURL" --session s42 --to 10.0.0.7:8443 \
			--cacert "$TMP/ca.pem" --cert "$TMP/cli.pem" --key "$TMP/cli.key"
		check_eq "TLS: the server received the body" "1" "$(cat "$TMP/h/count.tls" 2>/dev/null)"
		check_exit "TLS without the CA file: exit 69" 69 ip-redirect --lb "webhook:$TURL" --session s42 --to 10.0.0.7:8443 \
			--retries 0 --cert "$TMP/cli.pem" --key "$TMP/cli.key"
		check_grep "TLS without the CA file: certificate problem named" "certificate" "$TMP/.err"
		check_exit "TLS without a client certificate: exit 69" 69 ip-redirect --lb "webhook:$TURL" --session s42 \
			--to 10.0.0.7:8443 --retries 0 --cacert "$TMP/ca.pem"
		check_eq "TLS: refused requests never reached the handler" "1" "$(cat "$TMP/h/count.tls" 2>/dev/null)"
		check_exit "--key without --cert: exit 64" 64 ip-redirect --lb "webhook:$TURL" --session s42 --to 10.0.0.7:8443 \
			--key "$TMP/cli.key"
	else
		skip "webhook TLS" "could not make test certificates or start the TLS server: $(tail -c 200 "$TMP/openssl.log")"
	fi
else
	skip "webhook TLS" "needs openssl"
fi

cat "$TMP"/r*.err "$TMP/stream.err" "$TMP/conf.err" "$TMP/d.err" >"$TMP/all.err"
no_sanitizer_report "no sanitizer report" "$TMP/all.err"
