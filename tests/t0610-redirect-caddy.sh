#!/bin/bash
# ip-redirect against a real Caddy (Debian's caddy) started here on loopback
# with its admin API on a random port, in front of two real backends that
# answer with their own name: before the redirect a client gets A, after it
# B; an idle keep-alive connection to A is closed by the config reload so the
# client's reconnect lands on B; route by @id and by config path; stream
# mode; a dead new port refused before anything changes; the error paths
# (unknown route, API error body, unreachable admin API, malformed address).
. "$(dirname "$0")/lib.sh"
need_cmd ip-redirect caddy python3 curl timeout
. "$IPKIT_TOP/tests/redirect-lib.sh"

start_backends A B || skip_all "backends did not start"
A=$(cat "$TMP/port.A") B=$(cat "$TMP/port.B")
FE=$(free_port) ADMIN=$(free_port) DEAD=$(free_port)

cat >"$TMP/caddy.json" <<EOF
{"admin": {"listen": "127.0.0.1:$ADMIN"},
 "apps": {"http": {"servers": {"fe": {
   "listen": ["127.0.0.1:$FE"],
   "automatic_https": {"disable": true},
   "routes": [{"handle": [{"handler": "reverse_proxy", "@id": "sess42",
                           "upstreams": [{"dial": "127.0.0.1:$A"}]}]}]}}}}}
EOF
# Caddy keeps its autosave and storage under these.
mkdir -p "$TMP/xdg-data" "$TMP/xdg-config"
XDG_DATA_HOME=$TMP/xdg-data XDG_CONFIG_HOME=$TMP/xdg-config HOME=$TMP \
	caddy run --config "$TMP/caddy.json" >"$TMP/caddy.log" 2>&1 &
cpid=$!
at_exit "kill $cpid 2>/dev/null; wait $cpid 2>/dev/null"
{ wait_port "$FE" && wait_port "$ADMIN"; } || skip_all "caddy did not start: $(tail -c 300 "$TMP/caddy.log")"
API=http://127.0.0.1:$ADMIN
upstreams() { curl -s --max-time 5 "$API/id/sess42/upstreams"; }

check_eq "before the redirect a client gets backend A" "A" "$(fetch "$FE")"

# --- Standalone by @id, with an idle keep-alive client --------------------
ka_start c "$FE" || fail "keep-alive client connected" "$(cat "$TMP/ka.c.err")"
check_eq "keep-alive client's first answer is A" "first A" "$(head -1 "$TMP/ka.c.out")"
ip-redirect --lb "caddy:$API" --route sess42 --to "127.0.0.1:$B" -v >"$TMP/r1.out" 2>"$TMP/r1.err"
check_eq "redirect by @id exits 0" "0" "$?"
check_eq "redirect record: confirmed, from A, to B" "true 127.0.0.1:$A 127.0.0.1:$B caddy" \
	"$(jfield "$TMP/r1.out" 1 confirmed) $(jfield "$TMP/r1.out" 1 from) $(jfield "$TMP/r1.out" 1 to) $(jfield "$TMP/r1.out" 1 driver)"
check_grep "the PATCH carried Caddy's ETag as If-Match" '^  If-Match: "/config/apps/http/servers/fe/routes/0/handle/0/upstreams [0-9a-f]+"$' "$TMP/r1.err"
check_eq "caddy reads back the new upstream" "[{\"dial\":\"127.0.0.1:$B\"}]" "$(upstreams)"
ka_finish c
check_eq "the idle keep-alive connection to A was closed" "old closed" "$(sed -n 2p "$TMP/ka.c.out")"
check_eq "the client's reconnect lands on B" "reconnect B" "$(sed -n 3p "$TMP/ka.c.out")"
check_eq "after the redirect a client gets backend B" "B" "$(fetch "$FE")"

# --- By config path -----------------------------------------------------------
check "redirect by config path" ip-redirect --lb "caddy:$API" --route /config/apps/http/servers/fe/routes/0/handle/0 --to "127.0.0.1:$A"
check_eq "after the config-path redirect a client gets A" "A" "$(fetch "$FE")"

# --- A dead new port: refused before anything changes --------------------------
ip-redirect --lb "caddy:$API" --route sess42 --to "127.0.0.1:$DEAD" >"$TMP/r2.out" 2>"$TMP/r2.err"
check_eq "dead new port: exit 75" "75" "$?"
check_grep "dead new port: named, routing unchanged" \
	"new address '127.0.0.1:$DEAD' does not accept connections: Connection refused \(routing unchanged\)" "$TMP/r2.err"
check_eq "dead new port: upstream unchanged" "[{\"dial\":\"127.0.0.1:$A\"}]" "$(upstreams)"
check_eq "dead new port: record confirmed false" "false" "$(jfield "$TMP/r2.out" 1 confirmed)"

# --- Stream mode ---------------------------------------------------------------
now=$(date +%s)
{
	echo '{"type":"sample","v":1,"ts":'"$now"',"session":"s42","interval":1}'
	echo '{"type":"migration","v":1,"ts":'"$now"',"session":"s42","from":"h1","to":"127.0.0.1","outcome":"success"}'
	echo '{"type":"migration","v":1,"ts":'"$now"',"session":"s7","from":"h1","to":"h2","outcome":"failed","error":"x"}'
	echo '{"type":"migration","v":1,"ts":'"$now"',"session":"s43","from":"h1","to":"h2","outcome":"success","address":"127.0.0.1:'"$A"'","redirect_target":"nosuch"}'
} >"$TMP/stream.in"
ip-redirect --lb "caddy:$API" --map s42=sess42 --port "$B" <"$TMP/stream.in" >"$TMP/stream.out" 2>"$TMP/stream.err"
check_eq "stream mode exits 0" "0" "$?"
check_eq "stream mode: other records pass through unchanged" "$(sed -n '1p;3p' "$TMP/stream.in")" "$(sed -n '1p;3p' "$TMP/stream.out")"
check_eq "stream mode: 'to' host with --port, mapped route" "s42 sess42 127.0.0.1:$B true" \
	"$(jfield "$TMP/stream.out" 2 session) $(jfield "$TMP/stream.out" 2 target) $(jfield "$TMP/stream.out" 2 to) $(jfield "$TMP/stream.out" 2 confirmed)"
check_eq "stream mode: a client now gets B" "B" "$(fetch "$FE")"
check_grep "stream mode: unknown route named in the record" \
	"\"session\":\"s43\".*\"confirmed\":false.*\"error\":\"unknown caddy route 'nosuch': 404 unknown object ID 'nosuch'\"" "$TMP/stream.out"

# --- Error paths ---------------------------------------------------------------
check_exit "unknown route: exit 65" 65 ip-redirect --lb "caddy:$API" --route nosuch --to "127.0.0.1:$A"
check_grep "unknown route: Caddy's error named" "unknown caddy route 'nosuch': 404 unknown object ID 'nosuch'" "$TMP/.err"
check_exit "API error body: exit 65" 65 ip-redirect --lb "caddy:$API" --route /config/apps/http/servers/fe/routes/9/handle/0 --to "127.0.0.1:$A"
check_grep "API error body: Caddy's error text named" "caddy refused GET .*: 400 .*array index out of bounds: 9" "$TMP/.err"
check_exit "unreachable admin API: exit 69" 69 ip-redirect --lb "caddy:http://127.0.0.1:$DEAD" --route sess42 --to "127.0.0.1:$A"
check_grep "unreachable admin API: named" "cannot reach caddy admin API 'http://127.0.0.1:$DEAD'" "$TMP/.err"
check_exit "malformed address: exit 64" 64 ip-redirect --lb "caddy:$API" --route sess42 --to "127.0.0.1:notaport"
check_grep "malformed address: named" "invalid address '127.0.0.1:notaport': port 'notaport' is not a number" "$TMP/.err"
check_exit "bad route id: exit 65" 65 ip-redirect --lb "caddy:$API" --route "a/b" --to "127.0.0.1:$A"
check_exit "--to without --route: exit 64" 64 ip-redirect --lb "caddy:$API" --to "127.0.0.1:$A"
check_eq "error paths left the upstream on B" "[{\"dial\":\"127.0.0.1:$B\"}]" "$(upstreams)"

# --- Dry run -------------------------------------------------------------------
ip-redirect --lb "caddy:$API" --route sess42 --to "127.0.0.1:$A" --dry-run >"$TMP/d.out" 2>"$TMP/d.err"
check_eq "dry run exits 0" "0" "$?"
check_grep "dry run shows the PATCH body" "^  \[\{\"dial\":\"127.0.0.1:$A\"\}\]$" "$TMP/d.err"
check_eq "dry run changed nothing" "[{\"dial\":\"127.0.0.1:$B\"}]" "$(upstreams)"

cat "$TMP"/r*.err "$TMP/stream.err" "$TMP/d.err" >"$TMP/all.err"
no_sanitizer_report "no sanitizer report" "$TMP/all.err"
