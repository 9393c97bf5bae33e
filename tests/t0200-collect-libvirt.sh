#!/bin/bash
# ip-collect's libvirt source against real libvirtd + QEMU: the two-host lab
# (examples/lab/ipkit-lab) in a private state directory, the test guest
# (examples/guest) on host 1, collected over both hosts' TCP URIs.
# Asserts: the running guest's CPU and network counters move, they stop when
# it is paused, the session comes from metadata or --map, a destroyed domain
# and a dropped connection give diagnostics while the stream goes on (and no
# delta is ever negative), and unreachable/bogus URIs exit 69.
. "$(dirname "$0")/lib.sh"

need_root
need_cmd ip unshare virsh libvirtd virtlogd qemu-system-x86_64 python3 timeout
LAB=$IPKIT_TOP/examples/lab/ipkit-lab
GUEST=$IPKIT_TOP/examples/guest/ipkit-guest
[ -x "$LAB" ] || skip_all "the lab script examples/lab/ipkit-lab is absent"
[ -x "$GUEST" ] || skip_all "the guest script examples/guest/ipkit-guest is absent"
[ -c /dev/net/tun ] || skip_all "needs /dev/net/tun (guest NIC)"
unshare -n true 2>/dev/null || skip_all "network namespaces are unavailable"
if ip link show ipkit-br0 >/dev/null 2>&1; then
	skip_all "another ipkit lab is up on this machine ($(cat /sys/class/net/ipkit-br0/ifalias 2>/dev/null))"
fi
GDIR=$IPKIT_TOP/build/guest
if [ ! -r "$GDIR/vmlinuz" ] || [ ! -r "$GDIR/initramfs.cpio.gz" ]; then
	nice make -s -C "$IPKIT_TOP" -f examples/guest/guest.mk guest >"$TMP/guest-build.log" 2>&1 ||
		skip_all "cannot build the test guest: $(tail -n 1 "$TMP/guest-build.log")"
fi

export IPKIT_LAB_DIR=$TMP/lab
at_exit "'$LAB' down"
if ! "$LAB" up 2 >"$TMP/lab-up.log" 2>&1; then
	fail "lab up" "$(tail -n 5 "$TMP/lab-up.log" | tr '\n' ' ')"
	exit 0
fi
eval "$("$LAB" env)"
U1=$IPKIT_LAB_URI_1
U2=$IPKIT_LAB_URI_2
H1=${U1#*://}
H1=${H1%%/*}
G=ipk-t0200
NS=https://ipkit.dev/xmlns/session/1

at_exit "'$GUEST' undefine '$U1' $G"
if ! "$GUEST" define "$U1" $G --mem 128 --fill 48 --dirty 100 --ip 192.0.2.10/24 --xml "$TMP/g.xml" >/dev/null 2>"$TMP/g.err" ||
	! virsh -q -c "$U1" metadata $G --uri $NS --key ipk --set '<session>sess-meta</session>' --config >/dev/null 2>>"$TMP/g.err" ||
	! "$GUEST" start "$U1" $G 2>>"$TMP/g.err" ||
	! "$GUEST" wait-heartbeat "$U1" $G 2 40 >/dev/null 2>>"$TMP/g.err"; then
	fail "guest runs on host 1" "$(tail -c 400 "$TMP/g.err" | tr '\n' ' ')"
	exit 0
fi
ok "guest runs on host 1"

# re STRING: STRING as an ERE matching itself.
re() { printf '%s' "$1" | sed 's/[][\\.*^$+?(){}|]/\\&/g'; }

# stats FILE SESSION [AFTER_TS]: shell assignments summarising FILE's samples.
stats() {
	python3 - "$@" <<'PY'
import json, sys
path, sess = sys.argv[1], sys.argv[2]
after = float(sys.argv[3]) if len(sys.argv) > 3 else 0
recs = [json.loads(l) for l in open(path) if l.strip()]
mine = [r for r in recs if r.get("session") == sess]
num = lambda r, k: r.get(k) if isinstance(r.get(k), (int, float)) else None
neg = sum(1 for r in recs for k, v in r.items() if k not in ("v", "ts") and isinstance(v, (int, float)) and v < 0)
cpu = [num(r, "cpu") for r in mine if num(r, "cpu") is not None]
tx = [num(r, "tx_pkts") for r in mine if num(r, "tx_pkts") is not None]
rx = [num(r, "rx_pkts") for r in mine if num(r, "rx_pkts") is not None]
out = {
    "total": len(recs), "n": len(mine),
    "others": len(recs) - len(mine),
    "hosts": ",".join(sorted({r.get("host", "") for r in mine})),
    "ncpu": len(cpu), "ncpu_pos": sum(1 for c in cpu if c > 0),
    "cpu_max": max(cpu) if cpu else -1, "cpu_mean": sum(cpu) / len(cpu) if cpu else -1, "cpu_over1": sum(1 for c in cpu if c > 1),
    "ntx": len(tx), "ntx_pos": sum(1 for t in tx if t > 0), "tx_sum": int(sum(tx)),
    "rx_sum": int(sum(rx)),
    "mem": int(num(mine[-1], "mem_bytes") or -1) if mine else -1,
    "neg": neg,
    "late": sum(1 for r in mine if r["ts"] > after),
    "late_cpu": sum(1 for r in mine if r["ts"] > after and num(r, "cpu") is not None),
}
for k, v in out.items():
    print("%s=%s" % (k, v if not isinstance(v, float) else "%.6f" % v))
PY
}

# 1. Running: both hosts, ~6 intervals; the session comes from metadata.
ip-collect -v -c "$U1" -c "$U2" -n 6 >"$TMP/run.jsonl" 2>"$TMP/run.err"
check_eq "collect over both lab hosts exits 0" 0 $?
eval "$(stats "$TMP/run.jsonl" sess-meta)"
check_eq "one sample per interval for the metadata session" 6 "$n"
check_eq "no other sessions (host 2 has no domains)" 0 "$others"
check_eq "host field is the URI's host" "$H1" "$hosts"
if [ "$ncpu" = 6 ] && [ "$ncpu_pos" -ge 5 ] && [ "$cpu_over1" = 0 ]; then ok "running guest: cpu > 0"; else
	fail "running guest: cpu > 0" "cpu in $ncpu samples, > 0 in $ncpu_pos, max $cpu_max, > 1 in $cpu_over1"; fi
if [ "$ntx" = 6 ] && [ "$ntx_pos" -ge 4 ] && [ "$tx_sum" -ge 4 ]; then ok "running guest: tx_pkts > 0"; else
	fail "running guest: tx_pkts > 0" "tx_pkts in $ntx samples, > 0 in $ntx_pos, sum $tx_sum"; fi
check_eq "mem_bytes is the guest's 128 MiB" 134217728 "$mem"
check_eq "no negative value" 0 "$neg"
check_grep "metadata session announced" "domain '$G' is session 'sess-meta'" "$TMP/run.err"
no_sanitizer_report "no sanitizer report (running)" "$TMP/run.err"
echo "running: cpu mean $cpu_mean max $cpu_max, tx_pkts $tx_sum, rx_pkts $rx_sum" >&2
run_cpu_mean=$cpu_mean

# 2. Paused: samples go on, CPU near 0, packet counters stop; --map wins.
virsh -q -c "$U1" suspend $G >/dev/null
ip-collect -c "$U1" --map $G=sess-map -n 4 >"$TMP/paused.jsonl" 2>"$TMP/paused.err"
check_eq "collect of a paused guest exits 0" 0 $?
virsh -q -c "$U1" resume $G >/dev/null
eval "$(stats "$TMP/paused.jsonl" sess-map)"
check_eq "paused guest still gets samples, session from --map" 4 "$n"
if [ "$ncpu" = 4 ] && python3 -c "import sys; sys.exit(not $cpu_max <= 0.05)"; then ok "paused guest: cpu ~ 0"; else
	fail "paused guest: cpu ~ 0" "cpu in $ncpu samples, max $cpu_max"; fi
# Only what the guest sends stops: the host side may still deliver packets
# to a paused guest's NIC (IPv6 neighbour discovery on the tap), so rx_pkts
# can move.
if [ "$ntx" = 4 ] && [ "$tx_sum" = 0 ]; then ok "paused guest: sent-packet counter stops"; else
	fail "paused guest: sent-packet counter stops" "tx_pkts in $ntx samples, sum $tx_sum (rx_pkts sum $rx_sum)"; fi
if python3 -c "import sys; sys.exit(not ($run_cpu_mean >= 0.05 and $cpu_mean * 5 < $run_cpu_mean))"; then
	ok "paused guest's cpu far below the running guest's"
else
	fail "paused guest's cpu far below the running guest's" "running mean $run_cpu_mean, paused mean $cpu_mean"
fi
echo "paused: cpu mean $cpu_mean max $cpu_max" >&2

# 3. Mid-stream: host 2's libvirtd dies and comes back, the guest is destroyed
# and started again. The stream goes on, with a diagnostic for each event.
ip-collect -vv -c "$U1" -c "$U2" -n 12 >"$TMP/events.jsonl" 2>"$TMP/events.err" &
cpid=$!
sleep 2.3
lpid=$(cat "$IPKIT_LAB_DIR/h2/libvirtd.pid")
kill -TERM "$lpid"
(
	for _ in $(seq 50); do kill -0 "$lpid" 2>/dev/null || break; sleep 0.1; done
	"$LAB" up 2 >>"$TMP/lab-up.log" 2>&1 || echo "lab repair failed: $(tail -n 1 "$TMP/lab-up.log")" >&2
) &
rpid=$!
virsh -q -c "$U1" destroy $G >/dev/null
t_destroy=$(date +%s.%N)
sleep 1.6
virsh -q -c "$U1" start $G >/dev/null
wait $rpid
echo "libvirtd of host 2 back after $(python3 -c "import time; print('%.1f' % (time.time() - $t_destroy))") s" >&2
wait $cpid
check_eq "collect through the events exits 0 at --count" 0 $?
eval "$(stats "$TMP/events.jsonl" sess-meta "$t_destroy")"
check_grep "destroyed domain: diagnostic" "domain '$G' \(session 'sess-meta'\) is gone \(shut off\)" "$TMP/events.err"
check_grep "dropped connection: diagnostic" "'$(re "$U2")'.*connection lost" "$TMP/events.err"
check_grep "dropped connection: reconnected" "'$(re "$U2")': reconnected" "$TMP/events.err"
if [ "$late" -ge 3 ] && [ "$late_cpu" -ge 2 ]; then ok "stream goes on: the restarted guest's samples follow"; else
	fail "stream goes on: the restarted guest's samples follow" "$late samples after the destroy, $late_cpu with cpu"; fi
check_eq "no negative delta across the restart" 0 "$neg"
check_eq "cpu never above 1" 0 "$cpu_over1"
no_sanitizer_report "no sanitizer report (events)" "$TMP/events.err"

# 4. Error paths: exit 69 with the URI and libvirt's reason.
u=qemu+tcp://${IPKIT_LAB_NET}.99/system
check_exit "unreachable host: exit 69" 69 timeout 60 ip-collect -c "$u" -n 1
check_grep "unreachable host: message names the URI" "^ip-collect: cannot connect to libvirt '$(re "$u")': .+" "$TMP/.err"
check_exit "bogus URI: exit 69" 69 ip-collect -c bogus://x -n 1
check_grep "bogus URI: message names the URI" "^ip-collect: cannot connect to libvirt 'bogus://x': .+" "$TMP/.err"
if [ "$(wc -l <"$TMP/.err")" = 1 ]; then ok "bogus URI: one line on stderr (libvirt's printing silenced)"; else
	fail "bogus URI: one line on stderr (libvirt's printing silenced)" "$(head -c 300 "$TMP/.err")"; fi
# A host that never answers (SYNs vanish): bounded by the 10 s start probe,
# not the kernel's TCP timeout of minutes.
t0=$SECONDS
unshare -n sh -c 'ip link add v0 type veth peer name v1 && ip addr add 10.88.0.1/24 dev v0 &&
	ip link set v0 up && ip link set v1 up &&
	ip neigh add 10.88.0.2 lladdr 02:00:00:00:00:02 dev v0 nud permanent &&
	exec timeout 60 ip-collect -c qemu+tcp://10.88.0.2/system -n 1' >"$TMP/.out" 2>"$TMP/.err"
rc=$?
if [ $rc = 69 ] && [ $((SECONDS - t0)) -le 20 ] && grep -q "^ip-collect: cannot connect to libvirt 'qemu+tcp://10.88.0.2/system': .*no answer" "$TMP/.err"; then
	ok "silent host: exit 69 within the probe bound"
else
	fail "silent host: exit 69 within the probe bound" "exit $rc after $((SECONDS - t0)) s: $(head -c 300 "$TMP/.err")"
fi
