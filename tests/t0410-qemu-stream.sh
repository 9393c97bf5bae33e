#!/bin/bash
# Real QEMU migration streams: a small TCG guest (Debian's kernel, no disk)
# is migrated to a file twice, one second apart (the guest resumes in
# between). test-delta then checks on those two real streams that parsing
# and rebuilding gives identical bytes, and that a delta from the first to
# the second applies back to the second bit for bit.
. "$(dirname "$0")/lib.sh"
need_cmd qemu-system-x86_64 socat
unit=${IPKIT_UNIT:-$IPKIT_TOP/build/san/unit}
[ -x "$unit/test-delta" ] || skip_all "needs $unit/test-delta (make build/san/unit/test-delta)"
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | head -1)
[ -n "$kernel" ] || skip_all "needs a kernel in /boot (linux-image-amd64)"

mon="$TMP/mon"
qemu-system-x86_64 -machine q35 -accel tcg -m 64 -display none -serial null -nodefaults \
	-kernel "$kernel" -append console=ttyS0 -monitor "unix:$mon,server,nowait" \
	-daemonize -pidfile "$TMP/qemu.pid" 2>"$TMP/qemu.err" || skip_all "qemu does not start: $(head -c 200 "$TMP/qemu.err")"
at_exit 'kill $(cat "$TMP/qemu.pid") 2>/dev/null'
hmp() { printf '%s\n' "$1" | socat - "UNIX-CONNECT:$mon"; }
migrate_to() { # migrate_to FILE: migrate into FILE, wait until completed
	hmp "migrate \"exec:cat > $1\"" >/dev/null
	local i
	for i in $(seq 100); do
		hmp "info migrate" | grep -q "status: completed" && return 0
		sleep 0.1
	done
	return 1
}
sleep 2
check "first migration stream written" migrate_to "$TMP/a.qemu"
hmp cont >/dev/null
sleep 1
check "second migration stream written" migrate_to "$TMP/b.qemu"
hmp quit >/dev/null 2>&1
IPKIT_QEMU_IMAGES="$TMP/a.qemu $TMP/b.qemu" "$unit/test-delta" >"$TMP/unit.out" 2>"$TMP/unit.err"
rc=$?
grep -E '^(ok|not ok|skip) real' "$TMP/unit.out"
grep -E '^# real' "$TMP/unit.out" >&2
check_eq "test-delta on real streams exits 0" 0 "$rc"
n=$(grep -c '^ok real' "$TMP/unit.out")
[ "$n" -ge 6 ] && ok "all real-stream checks ran ($n)" || fail "all real-stream checks ran" "only $n ok lines; $(tail -c 300 "$TMP/unit.err")"
