#!/bin/bash
# t0100-lab: the two-host libvirt lab (examples/lab/ipkit-lab) and the test
# guest (examples/guest), run for real: lab up and idempotent, a TCG guest
# booted on host 1 answers heartbeats and verification, its stats move,
# suspend/resume stop and continue it, "virsh save" on host 1 + "virsh
# restore" on host 2 continue its counter, and "down" leaves nothing behind.
. "$(dirname "$0")/lib.sh"

need_root
need_cmd ip unshare libvirtd virtlogd virsh qemu-system-x86_64 python3 make gcc cpio gzip
[ -x /bin/busybox ] || skip_all "needs busybox-static"
ls /boot/vmlinuz-* >/dev/null 2>&1 || skip_all "needs linux-image-amd64"

LAB=$IPKIT_TOP/examples/lab/ipkit-lab
G=$IPKIT_TOP/examples/guest/ipkit-guest
# A lab of our own: own state dir, names and subnet, so that this test and a
# lab someone else has up (default names ipkit-br0, ipkit-h*) never meet.
export IPKIT_LAB_DIR=$TMP/lab
export IPKIT_LAB_NAME=ipkt$(($$ % 100000))
export IPKIT_LAB_NET=10.77.$((100 + $$ % 150))
export IPKIT_LAB_TIMEOUT=60 # a loaded CI machine may need more than 20 s
P=$IPKIT_LAB_NAME
NAME=t0100
U1=qemu+tcp://$IPKIT_LAB_NET.11/system
U2=qemu+tcp://$IPKIT_LAB_NET.12/system
T_START=$(date +%s%N)

log() { echo "# $*" >&2; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
hb() { "$G" last-heartbeat "$1" "$NAME" 2>/dev/null; }
stat_of() { # URI KEY
	virsh -q -c "$1" domstats "$NAME" 2>/dev/null | tr -d ' ' | sed -n "s/^$2=//p"
}
alive() { # PID: running and not a zombie
	local s
	s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[ -n "$s" ] && [ "${s#Z}" = "$s" ]
}

# Even if the script dies half way: no lab left behind.
at_exit '"$LAB" down'
run_netns_was_mount=0
mountpoint -q /run/netns 2>/dev/null && run_netns_was_mount=1

if make -s -C "$IPKIT_TOP" -f examples/guest/guest.mk guest >"$TMP/make.out" 2>&1; then
	ok "guest builds (make -f examples/guest/guest.mk)"
else
	fail "guest builds (make -f examples/guest/guest.mk)" "$(tail -c 300 "$TMP/make.out" | tr '\n' ' ')"
	exit 0
fi
EXPECT=$("$IPKIT_TOP/build/guest/renderer-host" --frame-checksum)
check_eq "renderer-host frame checksum is stable" "$EXPECT" "$("$IPKIT_TOP/build/guest/renderer-host" --frame-checksum)"

# ---- lab up ----------------------------------------------------------------
t=$(date +%s%N)
if "$LAB" up 2 >"$TMP/up.out" 2>"$TMP/up.err"; then
	log "lab up took $(ms_since "$t") ms"
	ok "lab up 2"
else
	fail "lab up 2" "$(tail -c 400 "$TMP/up.err" | tr '\n' ' ')"
	exit 0
fi
check "lab status: all hosts up" "$LAB" status
"$LAB" env >"$TMP/env" 2>&1
check "lab env names host 1" grep -qxF "IPKIT_LAB_URI_1=$U1" "$TMP/env"
check "lab env names host 2" grep -qxF "IPKIT_LAB_URI_2=$U2" "$TMP/env"
check "lab env names the state dir" grep -qxF "IPKIT_LAB_DIR=$IPKIT_LAB_DIR" "$TMP/env"
if ip netns exec "$P-h1" timeout 5 bash -c "exec 3<>/dev/tcp/$IPKIT_LAB_NET.12/16509" 2>/dev/null; then
	ok "host 1 reaches host 2's libvirtd over the bridge"
else
	fail "host 1 reaches host 2's libvirtd over the bridge" "no TCP to $IPKIT_LAB_NET.12:16509 from $P-h1"
fi

snapshot() {
	{
		cat "$IPKIT_LAB_DIR/state"
		ip netns list | grep "^$P-"
		ip -o link show | awk '{print $2}' | grep "^$P-"
		ip netns pids "$P-h1" | sort
		ip netns pids "$P-h2" | sort
	} 2>/dev/null
}
snapshot >"$TMP/snap1"
t=$(date +%s%N)
if "$LAB" up 2 >/dev/null 2>"$TMP/up2.err"; then
	snapshot >"$TMP/snap2"
	if cmp -s "$TMP/snap1" "$TMP/snap2"; then
		ok "second lab up succeeds and changes nothing ($(ms_since "$t") ms)"
	else
		fail "second lab up succeeds and changes nothing" "$(diff "$TMP/snap1" "$TMP/snap2" | tr '\n' ' ')"
	fi
else
	fail "second lab up succeeds and changes nothing" "$(tail -c 300 "$TMP/up2.err" | tr '\n' ' ')"
fi

# Half-up: host 2's libvirtd dies; "up" must bring it back.
pid2=$(sed -n 's/^pid libvirtd 2 //p' "$IPKIT_LAB_DIR/state" | tail -1)
if [ -n "$pid2" ]; then
	kill "$pid2"
	for _ in $(seq 50); do alive "$pid2" || break; sleep 0.1; done
	"$LAB" status >/dev/null 2>&1
	check_eq "lab status says partially up (exit 1)" 1 $?
	if "$LAB" up 2 >/dev/null 2>"$TMP/up3.err" && "$LAB" status >/dev/null 2>&1; then
		ok "lab up repairs a half-up lab"
	else
		fail "lab up repairs a half-up lab" "$(tail -c 300 "$TMP/up3.err" | tr '\n' ' ')"
	fi
else
	fail "lab records libvirtd pids" "no 'pid libvirtd 2' in state"
fi

# ---- guest on host 1 --------------------------------------------------------
# 192 MiB of guest RAM: Debian's kernel keeps ~75 MiB of a small guest, so a
# 128 MiB guest cannot hold a 64 MiB buffer (the renderer gets OOM-killed).
if "$G" define "$U1" "$NAME" --mem 192 --fill 64 --dirty 2 --ip 10.78.1.2/24 \
	--xml "$TMP/$NAME.xml" >/dev/null 2>"$TMP/define.err"; then
	ok "guest defined on host 1"
else
	fail "guest defined on host 1" "$(tail -c 300 "$TMP/define.err" | tr '\n' ' ')"
	exit 0
fi
t=$(date +%s%N)
check "guest starts on host 1" "$G" start "$U1" "$NAME"
if "$G" wait-heartbeat "$U1" "$NAME" 1 90 >/dev/null 2>"$TMP/hb.err"; then
	log "guest start to first heartbeat: $(ms_since "$t") ms"
	ok "guest heartbeat 1"
else
	fail "guest heartbeat 1" "$(tail -c 400 "$TMP/hb.err" | tr '\n' ' ')"
	exit 0
fi
check "guest heartbeat reaches 3" "$G" wait-heartbeat "$U1" "$NAME" 3 30
if "$G" verify "$U1" "$NAME" >"$TMP/verify1" 2>&1; then
	ok "verify over ttyS1: frame checksum $EXPECT"
else
	fail "verify over ttyS1: frame checksum $EXPECT" "$(tr '\n' ' ' <"$TMP/verify1")"
fi
t=$(date +%s%N)
check_eq "a 300 ms timer fires and answers with the counter" "ipkit-timer" \
	"$("$G" ctl "$U1" "$NAME" 'timer 300' 2>&1 | awk '{print $1}')"
waited=$(( ($(date +%s%N) - t) / 1000000 ))
if [ "$waited" -ge 300 ]; then ok "the timer's answer came after its 300 ms ($waited ms)"; else
	fail "the timer's answer came after its 300 ms" "$waited ms"; fi
check_eq "a timer out of range is refused" "ipkit-error bad-timer" "$("$G" ctl "$U1" "$NAME" 'timer 0' 2>&1)"
check_eq "ping answers" "ipkit-pong" "$("$G" ctl "$U1" "$NAME" ping 2>&1 | awk '{print $1}')"
check_eq "dirty rate changes live" "ipkit-dirty 5" "$("$G" ctl "$U1" "$NAME" 'dirty 5' 2>&1)"

tx=0
for _ in $(seq 20); do
	tx=$(stat_of "$U1" net.0.tx.pkts)
	[ "${tx:-0}" -gt 0 ] && break
	sleep 0.5
done
if [ "${tx:-0}" -gt 0 ]; then ok "domstats: net tx packets move ($tx)"; else fail "domstats: net tx packets move" "net.0.tx.pkts=${tx:-missing}"; fi
cpu1=$(stat_of "$U1" cpu.time)
sleep 2
cpu2=$(stat_of "$U1" cpu.time)
if [ -n "$cpu1" ] && [ -n "$cpu2" ] && [ "$cpu2" -gt "$cpu1" ]; then
	ok "domstats: cpu time increases"
else
	fail "domstats: cpu time increases" "cpu.time $cpu1 -> $cpu2"
fi

# ---- suspend / resume -----------------------------------------------------
if virsh -q -c "$U1" suspend "$NAME" >/dev/null 2>"$TMP/err"; then
	sleep 0.5
	c1=$(hb "$U1")
	sleep 3
	c2=$(hb "$U1")
	check_eq "suspended guest stops its heartbeat" "$c1" "$c2"
	check "resume" virsh -q -c "$U1" resume "$NAME"
	if c3=$("$G" wait-heartbeat "$U1" "$NAME" $((c1 + 2)) 20 2>"$TMP/err"); then
		ok "resumed guest continues its heartbeat ($c1 -> $c3)"
	else
		fail "resumed guest continues its heartbeat" "$(tail -c 300 "$TMP/err" | tr '\n' ' ')"
	fi
else
	fail "suspend" "$(tail -c 300 "$TMP/err" | tr '\n' ' ')"
fi

# ---- save on host 1, restore on host 2 ------------------------------------
mkdir -p "$TMP/xfer"
t=$(date +%s%N)
if virsh -q -c "$U1" save "$NAME" "$TMP/xfer/h1.save" >/dev/null 2>"$TMP/err"; then
	log "virsh save: $(ms_since "$t") ms, $(stat -c %s "$TMP/xfer/h1.save") bytes"
	ok "virsh save on host 1"
else
	fail "virsh save on host 1" "$(tail -c 300 "$TMP/err" | tr '\n' ' ')"
	exit 0
fi
before=$(hb "$U1")
state=$(virsh -q -c "$U1" domstate "$NAME" 2>/dev/null)
check_eq "saved guest is shut off on host 1" "shut off" "$state"
cp "$TMP/xfer/h1.save" "$TMP/xfer/h2.save"
t=$(date +%s%N)
if virsh -q -c "$U2" restore "$TMP/xfer/h2.save" >/dev/null 2>"$TMP/err"; then
	log "virsh restore: $(ms_since "$t") ms"
	ok "virsh restore on host 2"
else
	fail "virsh restore on host 2" "$(tail -c 300 "$TMP/err" | tr '\n' ' ')"
	exit 0
fi
if after=$("$G" wait-heartbeat "$U2" "$NAME" 1 30 2>"$TMP/err"); then
	first=$(tr -d '\r' <"$("$G" console-log "$U2" "$NAME")" | grep -aoE 'ipkit-heartbeat [0-9]+ ' | head -1 | awk '{print $2}')
	if [ "${first:-0}" -ge "${before:-1}" ] && [ "$first" -le $((before + 3)) ]; then
		ok "restored guest continues its counter on host 2 ($before -> $first)"
	else
		fail "restored guest continues its counter on host 2" "last on host 1: $before, first on host 2: $first"
	fi
else
	fail "restored guest continues its counter on host 2" "$(tail -c 300 "$TMP/err" | tr '\n' ' ')"
fi
check "restored guest keeps counting" "$G" wait-heartbeat "$U2" "$NAME" $((${after:-0} + 2)) 20
if "$G" verify "$U2" "$NAME" >"$TMP/verify2" 2>&1; then
	n=$(awk '{print $3}' "$TMP/verify2")
	if [ "${n:-0}" -ge "${before:-1}" ]; then
		ok "verify on host 2 after restore ($(cat "$TMP/verify2"))"
	else
		fail "verify on host 2 after restore" "counter $n < $before"
	fi
else
	fail "verify on host 2 after restore" "$(tr '\n' ' ' <"$TMP/verify2")"
fi
check_eq "restored guest runs on host 2" "running" "$(virsh -q -c "$U2" domstate "$NAME" 2>/dev/null)"

# ---- down: nothing left behind --------------------------------------------
lab_pids=$(for ns in "$P-h1" "$P-h2"; do ip netns pids "$ns" 2>/dev/null; done | sort -u | tr '\n' ' ')
lab_comms=$(for p in $lab_pids; do cat "/proc/$p/comm" 2>/dev/null; done | sort | uniq -c | tr -s ' \n' ' ')
log "processes in the lab before down: $lab_comms"
case $lab_comms in
*libvirtd*virtlogd*) ok "lab processes found before down" ;;
*) fail "lab processes found before down" "ip netns pids gave: $lab_comms" ;;
esac
"$G" undefine "$U1" "$NAME" >/dev/null 2>&1
t=$(date +%s%N)
if "$LAB" down >/dev/null 2>"$TMP/down.err"; then
	log "lab down: $(ms_since "$t") ms"
	ok "lab down"
else
	fail "lab down" "$(tail -c 300 "$TMP/down.err" | tr '\n' ' ')"
fi
left=$(ip netns list 2>/dev/null | grep "^$P-h" | tr '\n' ' ')
check_eq "no lab netns ($P-h*) left" "" "$left"
left=$(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | grep -E "^$P-(br0|v[0-9])" | tr '\n' ' ')
check_eq "no lab bridge / veth ($P-br0, $P-v*) left" "" "$left"
left=""
for p in $lab_pids; do alive "$p" && left="$left $p($(cat "/proc/$p/comm" 2>/dev/null))"; done
check_eq "no lab processes (libvirtd, virtlogd, qemu) left" "" "$left"
left=$(ps -eo pid=,args= | grep -F -- "$IPKIT_LAB_DIR" | grep -v grep | tr '\n' ' ')
check_eq "no process mentions the lab dir" "" "$left"
left=$(findmnt -rn -o TARGET 2>/dev/null | grep -E "^$IPKIT_LAB_DIR|^/run/netns/$P-" | tr '\n' ' ')
if [ $run_netns_was_mount = 0 ] && mountpoint -q /run/netns 2>/dev/null && [ -z "$(ls -A /run/netns)" ]; then
	left="$left /run/netns"
fi
check_eq "no lab mounts left" "" "$left"
if [ -e "$IPKIT_LAB_DIR" ]; then
	fail "lab state dir removed" "$(ls -A "$IPKIT_LAB_DIR" | tr '\n' ' ')"
else
	ok "lab state dir removed"
fi
log "t0100 total: $(ms_since "$T_START") ms"
