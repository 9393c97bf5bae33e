#!/bin/bash
# ip-redirect against a real HAProxy (Debian's haproxy) started here on
# loopback in TCP mode, in front of two real backends that answer with their
# own name: before the redirect a client gets A, after it B; an idle
# keep-alive connection held on A is closed so the client's reconnect lands
# on B; the runtime API over a Unix socket and over TCP; a dead new port is
# caught by the health check and undone; stream mode; the error paths.
. "$(dirname "$0")/lib.sh"
need_cmd ip-redirect haproxy python3 curl timeout
. "$IPKIT_TOP/tests/redirect-lib.sh"

start_backends A B || skip_all "backends did not start"
A=$(cat "$TMP/port.A") B=$(cat "$TMP/port.B")
FE=$(free_port) API=$(free_port) DEAD=$(free_port)
SOCK=$TMP/admin.sock

cat >"$TMP/haproxy.cfg" <<EOF
global
    stats socket $SOCK level admin
    stats socket ipv4@127.0.0.1:$API level admin
    pidfile $TMP/haproxy.pid
defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$FE
    default_backend be1
backend be1
    server sess42 127.0.0.1:$A check inter 100ms rise 1 fall 1
backend be2
    server nocheck 127.0.0.1:$A
backend be3
    server parked 127.0.0.1:$A check inter 100ms rise 1 fall 1 disabled
EOF
haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
hpid=$!
at_exit "kill $hpid 2>/dev/null; wait $hpid 2>/dev/null"
{ wait_port "$FE" && [ -S "$SOCK" ]; } || skip_all "haproxy did not start: $(head -c 300 "$TMP/haproxy.log")"

# state SERVER: "ADDR PORT OP_STATE" from "show servers state" over the socket.
state() {
	python3 - "$SOCK" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b"show servers state\n")
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
for line in data.decode().splitlines():
    f = line.split()
    if len(f) > 18 and f[3] == sys.argv[2]:
        print(f[4], f[18], f[5])
PY
}

# Wait until the first health check has seen A.
for _ in $(seq 100); do [ "$(state sess42 | cut -d' ' -f3)" = 2 ] && break; sleep 0.05; done
check_eq "before the redirect a client gets backend A" "A" "$(fetch "$FE")"

# --- Standalone over the Unix socket, with an idle keep-alive client ------
ka_start h "$FE" || fail "keep-alive client connected" "$(cat "$TMP/ka.h.err")"
check_eq "keep-alive client's first answer is A" "first A" "$(head -1 "$TMP/ka.h.out")"
ip-redirect --lb "haproxy:$SOCK" --server be1/sess42 --to "127.0.0.1:$B" >"$TMP/r1.out" 2>"$TMP/r1.err"
check_eq "redirect over the Unix socket exits 0" "0" "$?"
check_eq "redirect record: confirmed" "true" "$(jfield "$TMP/r1.out" 1 confirmed)"
check_eq "redirect record: from A" "127.0.0.1:$A" "$(jfield "$TMP/r1.out" 1 from)"
check_eq "redirect record: to B" "127.0.0.1:$B" "$(jfield "$TMP/r1.out" 1 to)"
check_eq "redirect record: confirmed through the health check" "health-check" "$(jfield "$TMP/r1.out" 1 check)"
check_eq "redirect record: driver and session" "haproxy be1/sess42" \
	"$(jfield "$TMP/r1.out" 1 driver) $(jfield "$TMP/r1.out" 1 session)"
check_eq "haproxy reads back the new address" "127.0.0.1 $B 2" "$(state sess42)"
ka_finish h
check_eq "the idle keep-alive connection to A was closed" "old closed" "$(sed -n 2p "$TMP/ka.h.out")"
check_eq "the client's reconnect lands on B" "reconnect B" "$(sed -n 3p "$TMP/ka.h.out")"
check_eq "after the redirect a client gets backend B" "B" "$(fetch "$FE")"

# --- A dead new port: the health check fails, the old address comes back --
ip-redirect --lb "haproxy:$SOCK" --server be1/sess42 --to "127.0.0.1:$DEAD" --timeout 1 >"$TMP/r2.out" 2>"$TMP/r2.err"
check_eq "unconfirmed redirect exits 75" "75" "$?"
check_grep "unconfirmed redirect names the failed health check" \
	"did not pass a health check within 1 s \(L4CON.*previous address '127.0.0.1:$B' restored" "$TMP/r2.err"
check_eq "unconfirmed redirect record: confirmed false, restored" "false true" \
	"$(jfield "$TMP/r2.out" 1 confirmed) $(jfield "$TMP/r2.out" 1 restored)"
check_eq "previous address restored in haproxy" "127.0.0.1 $B" "$(state sess42 | cut -d' ' -f1,2)"
for _ in $(seq 40); do [ "$(state sess42 | cut -d' ' -f3)" = 2 ] && break; sleep 0.05; done
check_eq "after the failed redirect clients still get B" "B" "$(fetch "$FE")"

# --- The runtime API over TCP ---------------------------------------------
check "redirect over the TCP runtime API" ip-redirect --lb "haproxy:127.0.0.1:$API" --server be1/sess42 --to "127.0.0.1:$A"
check_eq "after the TCP redirect a client gets A" "A" "$(fetch "$FE")"

# --- Server without health check: TCP probe first ------------------------
ip-redirect --lb "haproxy:$SOCK" --server be2/nocheck --to "127.0.0.1:$DEAD" >"$TMP/r3.out" 2>"$TMP/r3.err"
check_eq "no health check, dead new port: exit 75" "75" "$?"
check_grep "no health check, dead new port: named, routing unchanged" \
	"does not accept connections: Connection refused \(server has no health check; routing unchanged\)" "$TMP/r3.err"
check_eq "no health check, dead new port: address unchanged" "127.0.0.1 $A" "$(state nocheck | cut -d' ' -f1,2)"
ip-redirect --lb "haproxy:$SOCK" --server be2/nocheck --to "127.0.0.1:$B" >"$TMP/r4.out" 2>"$TMP/r4.err"
check_eq "no health check, live new port: confirmed by probe" "0 true probe" \
	"$? $(jfield "$TMP/r4.out" 1 confirmed) $(jfield "$TMP/r4.out" 1 check)"

# --- A server in maintenance is made ready at its new address -------------
ip-redirect --lb "haproxy:$SOCK" --server be3/parked --to "127.0.0.1:$B" >"$TMP/r5.out" 2>"$TMP/r5.err"
check_eq "parked server: redirect exits 0" "0" "$?"
check_eq "parked server: running at B" "127.0.0.1 $B 2" "$(state parked)"

# --- Stream mode ------------------------------------------------------------
now=$(date +%s)
{
	echo '{"type":"sample","v":1,"ts":'"$now"',"session":"s42","interval":1,"events":3}'
	echo '{"type":"migration","v":1,"ts":'"$now"',"session":"s42","from":"h1","to":"h2","outcome":"success","address":"127.0.0.1:'"$B"'"}'
	echo '{"type":"migration","v":1,"ts":'"$now"',"session":"s42","from":"h1","to":"h2","outcome":"rolled-back"}'
	echo '{"type":"migration","v":1,"ts":'"$now"',"session":"ghost","from":"h1","to":"h2","outcome":"success","address":"127.0.0.1:'"$B"'"}'
	echo '{"type":"migration","v":1,"ts":'"$now"',"session":"s42","from":"h1","to":"h2","outcome":"success","address":"127.0.0.1:99999"}'
	echo '{"type":"migration","v":1,"ts":'"$now"',"session":"s43","from":"h1","to":"h2","outcome":"success","address":"127.0.0.1:'"$B"'","redirect_target":"be2/nocheck"}'
	echo '{"type":"future-thing","v":3,"ts":'"$now"',"x":[1,2]}'
} >"$TMP/stream.in"
ip-redirect --lb "haproxy:$SOCK" --map s42=be1/sess42 <"$TMP/stream.in" >"$TMP/stream.out" 2>"$TMP/stream.err"
check_eq "stream mode exits 0" "0" "$?"
check_eq "stream mode: one line out per line in" "7" "$(wc -l <"$TMP/stream.out")"
check_eq "stream mode: other records pass through unchanged, in order" \
	"$(sed -n '1p;3p;7p' "$TMP/stream.in")" "$(sed -n '1p;3p;7p' "$TMP/stream.out")"
check_eq "stream mode: mapped session redirected" "redirect s42 true 127.0.0.1:$B" \
	"$(jfield "$TMP/stream.out" 2 type) $(jfield "$TMP/stream.out" 2 session) $(jfield "$TMP/stream.out" 2 confirmed) $(jfield "$TMP/stream.out" 2 to)"
check_eq "stream mode: a client now gets B" "B" "$(fetch "$FE")"
check_eq "stream mode: unknown session gives confirmed false" "redirect ghost false" \
	"$(jfield "$TMP/stream.out" 4 type) $(jfield "$TMP/stream.out" 4 session) $(jfield "$TMP/stream.out" 4 confirmed)"
check_grep "stream mode: unknown session named in the record" '"error":"unknown session .ghost.: no --map entry' "$TMP/stream.out"
check_grep "stream mode: malformed address named in the record" \
	'"error":"invalid address .127.0.0.1:99999.: port must be 1-65535","code":65' "$TMP/stream.out"
check_eq "stream mode: target from the migration record" "be2/nocheck true" \
	"$(jfield "$TMP/stream.out" 6 target) $(jfield "$TMP/stream.out" 6 confirmed)"
check_grep "stream mode: failures also on stderr" "unknown session 'ghost'" "$TMP/stream.err"
check_grep "... naming the input line and the session" "^ip-redirect: input '<stdin>' line 5 \(session '[^']+'\): invalid address '127.0.0.1:99999'" "$TMP/stream.err"

# --- Error paths --------------------------------------------------------------
check_exit "unknown server: exit 65" 65 ip-redirect --lb "haproxy:$SOCK" --server be1/nope --to "127.0.0.1:$B"
check_grep "unknown server: named with haproxy's message" "unknown haproxy server 'be1/nope': No such server" "$TMP/.err"
check_exit "unknown backend: exit 65" 65 ip-redirect --lb "haproxy:$SOCK" --server nobe/x --to "127.0.0.1:$B"
check_grep "unknown backend: haproxy's error text named" "unknown haproxy backend 'nobe': Can't find backend" "$TMP/.err"
check_exit "malformed address: exit 64" 64 ip-redirect --lb "haproxy:$SOCK" --server be1/sess42 --to "127.0.0.1:99999"
check_grep "malformed address: named" "invalid address '127.0.0.1:99999': port must be 1-65535" "$TMP/.err"
check_exit "host name refused for haproxy: exit 65" 65 ip-redirect --lb "haproxy:$SOCK" --server be1/sess42 --to "localhost:$B"
check_exit "unreachable socket: exit 69" 69 ip-redirect --lb "haproxy:$TMP/no.sock" --server be1/sess42 --to "127.0.0.1:$A"
check_grep "unreachable socket: named" "cannot connect to haproxy runtime API '$TMP/no.sock': No such file or directory" "$TMP/.err"
check_exit "unreachable TCP API: exit 69" 69 ip-redirect --lb "haproxy:127.0.0.1:$DEAD" --server be1/sess42 --to "127.0.0.1:$A"
check_exit "no --lb: exit 64" 64 ip-redirect --server be1/sess42 --to "127.0.0.1:$A"
check_exit "--route with haproxy: exit 64" 64 ip-redirect --lb "haproxy:$SOCK" --route r --to "127.0.0.1:$A"
check_exit "--server not BACKEND/SERVER: exit 64" 64 ip-redirect --lb "haproxy:$SOCK" --server be1 --to "127.0.0.1:$A"
check_eq "... no record written" 0 "$(wc -c <"$TMP/.out")"
check_exit "--map to a target not BACKEND/SERVER: exit 64 before any input" 64 \
	ip-redirect --lb "haproxy:$SOCK" --map s42=be1 </dev/null
check_grep "... naming --map and the target" "--map: invalid haproxy server 'be1'" "$TMP/.err"
check_eq "error paths left the routing on B" "127.0.0.1 $B" "$(state sess42 | cut -d' ' -f1,2)"

# --- Dry run ------------------------------------------------------------------
ip-redirect --lb "haproxy:$SOCK" --server be1/sess42 --to "127.0.0.1:$A" --dry-run >"$TMP/d.out" 2>"$TMP/d.err"
check_eq "dry run exits 0" "0" "$?"
check_grep "dry run shows the command" "^  set server be1/sess42 addr 127.0.0.1 port $A$" "$TMP/d.err"
check_eq "dry run record: dry_run, not confirmed" "true false" "$(jfield "$TMP/d.out" 1 dry_run) $(jfield "$TMP/d.out" 1 confirmed)"
check_eq "dry run changed nothing" "127.0.0.1 $B" "$(state sess42 | cut -d' ' -f1,2)"

# --- --keep-sessions: the idle connection stays on the old server -----------
ka_start k "$FE" || fail "second keep-alive client connected" "$(cat "$TMP/ka.k.err")"
check "redirect with --keep-sessions" ip-redirect --lb "haproxy:$SOCK" --server be1/sess42 --to "127.0.0.1:$A" --keep-sessions
ka_finish k
check_eq "--keep-sessions: the idle connection still reaches B" "first B old B reconnect A" "$(tr '\n' ' ' <"$TMP/ka.k.out" | sed 's/ $//')"

cat "$TMP"/r*.err "$TMP/stream.err" "$TMP/d.err" >"$TMP/all.err"
no_sanitizer_report "no sanitizer report" "$TMP/all.err"
