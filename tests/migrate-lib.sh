# migrate-lib.sh - set-up shared by the tests that move the test guest
# between the two lab hosts with ip-migrate (sourced after lib.sh).
#
# migrate_lab PREFIX NET NAME: skips the test without its prerequisites;
# exports the lab's IPKIT_LAB_* (name PREFIX<pid>, addresses NET.<100..249>)
# and sets LAB G P N NAME U1 U2 MIG EXPECT; builds the guest, brings two
# hosts up and starts the guest NAME on host 1. On a failure it reports
# it and exits the test. Then:
#   start_receiver HOST PORT DIR   an ip-migrate receiver in HOST's namespace
#                                  (log $TMP/recv-hHOST-PORT.log), stopped at exit
#   state URI, where               the guest's state; "1" or "2" when it
#                                  runs on exactly that host, else a description
#   intact URI                     the expected checksum and a moving counter
#   log TEXT                       a comment line on stderr

log() { echo "# $*" >&2; }

migrate_lab() {
	need_root
	need_cmd ip unshare libvirtd virtlogd virsh qemu-system-x86_64 python3 make gcc cpio gzip ip-migrate
	[ -x /bin/busybox ] || skip_all "needs busybox-static"
	ls /boot/vmlinuz-* >/dev/null 2>&1 || skip_all "needs linux-image-amd64"
	LAB=$IPKIT_TOP/examples/lab/ipkit-lab
	G=$IPKIT_TOP/examples/guest/ipkit-guest
	export IPKIT_LAB_DIR=$TMP/lab
	export IPKIT_LAB_NAME=$1$(($$ % 100000))
	export IPKIT_LAB_NET=$2.$((100 + $$ % 150))
	export IPKIT_LAB_TIMEOUT=60
	P=$IPKIT_LAB_NAME
	N=$IPKIT_LAB_NET
	NAME=$3
	U1=qemu+tcp://$N.11/system
	U2=qemu+tcp://$N.12/system
	MIG=$(command -v ip-migrate)
	at_exit '"$LAB" down >/dev/null 2>&1'
	if ! make -s -C "$IPKIT_TOP" -f examples/guest/guest.mk guest >"$TMP/make.out" 2>&1; then
		fail "guest builds" "$(tail -c 300 "$TMP/make.out" | tr '\n' ' ')"
		exit 0
	fi
	EXPECT=$("$IPKIT_TOP/build/guest/renderer-host" --frame-checksum)
	if ! "$LAB" up 2 >"$TMP/up.out" 2>"$TMP/up.err"; then
		fail "lab up 2" "$(tail -c 400 "$TMP/up.err" | tr '\n' ' ')"
		exit 0
	fi
	"$G" define "$U1" "$NAME" --mem 192 --fill 64 --dirty 1 >/dev/null 2>"$TMP/err" &&
		"$G" start "$U1" "$NAME" 2>>"$TMP/err" &&
		"$G" wait-heartbeat "$U1" "$NAME" 3 120 >/dev/null 2>>"$TMP/err"
	if [ $? != 0 ]; then
		fail "test guest runs on host 1" "$(tail -c 300 "$TMP/err" | tr '\n' ' ')"
		exit 0
	fi
	at_exit stop_receivers
}

declare -A RPID
start_receiver() { # HOST PORT DIR
	ip netns exec "$P-h$1" "$MIG" --listen "$N.1$1:$2" --key-file "$TMP/key" --image-dir "$3" \
		--timeout 10 -v 2>>"$TMP/recv-h$1-$2.log" &
	RPID[$1-$2]=$!
	local i
	for i in $(seq 50); do
		ip netns exec "$P-h$1" bash -c "exec 3<>/dev/tcp/$N.1$1/$2" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}
stop_receivers() { local p; for p in "${RPID[@]}"; do kill "$p" 2>/dev/null; done; }

state() { virsh -q -c "$1" domstate "$NAME" 2>/dev/null | head -n 1; }
where() {
	local s1 s2
	s1=$(state "$U1")
	s2=$(state "$U2")
	if [ "$s1" = running ] && [ "$s2" != running ]; then echo 1
	elif [ "$s2" = running ] && [ "$s1" != running ]; then echo 2
	else echo "h1=$s1 h2=$s2"; fi
}
intact() {
	local a b
	a=$("$G" verify "$1" "$NAME" 2>&1) || { echo "verify: $a"; return 1; }
	sleep 1.5
	b=$("$G" verify "$1" "$NAME" 2>&1) || { echo "verify: $b"; return 1; }
	[ "$(awk '{print $2}' <<<"$a")" = "$EXPECT" ] || { echo "checksum $a"; return 1; }
	[ "$(awk '{print $3}' <<<"$b")" -gt "$(awk '{print $3}' <<<"$a")" ] || { echo "counter stuck: $a / $b"; return 1; }
	echo "$b"
}
