#!/bin/bash
# ip-snapshot without a lab: files captured into ipkit images that decode to
# the same bytes; a running process captured (stopped while read, resumed
# after) whose memory holds what it wrote; --inspect records and summaries;
# libvirt's test driver for the domain path's errors; exit codes.
. "$(dirname "$0")/lib.sh"
need_cmd ip-snapshot ip-delta python3 cmp

python3 - "$TMP" <<'PY'
import random, sys
d = sys.argv[1]
rng = random.Random(9)
b = bytearray()
for i in range(200):
    b += bytes(4096) if i % 3 == 0 else rng.randbytes(4096) if i % 3 == 1 else (b"text %d " % i * 700)[:4096]
b += b"end"
open(f"{d}/mem.bin", "wb").write(b)
PY

check "capture a file" ip-snapshot --file "$TMP/mem.bin" -o "$TMP/mem.ipki" --session s1
check_grep "snapshot record" '"type":"snapshot".*"source":"file:.*mem.bin".*"session":"s1".*"format":"plain".*"bytes":819203,"pages":201,"zero_pages":67' "$TMP/.out"
id=$(sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p' "$TMP/.out")
check "decode the image" ip-delta --image --apply "$TMP/mem.ipki" -o "$TMP/mem.back"
check "decoded image is the file" cmp "$TMP/mem.bin" "$TMP/mem.back"
check "inspect the image" ip-snapshot --inspect "$TMP/mem.ipki"
check_grep "inspect: same id, verified, source and session kept" "\"id\":\"$id\".*\"source\":\"file:.*mem.bin\".*\"session\":\"s1\".*\"container\":\"ipkit-image\".*\"verified\":true" "$TMP/.out"
check "inspect the raw file" ip-snapshot --inspect "$TMP/mem.bin"
check_grep "inspect raw: same id, not an ipkit image" "\"id\":\"$id\".*\"container\":\"none\"" "$TMP/.out"
check_grep "inspect raw: source as a capture of the file says" "\"source\":\"file:$TMP/mem.bin\"" "$TMP/.out"
check_exit "--inspect with --output: usage (64)" 64 ip-snapshot --inspect "$TMP/mem.bin" -o "$TMP/insp.out"
check_exit "--inspect with --threads: usage (64)" 64 ip-snapshot --inspect "$TMP/mem.bin" -j 2
if command -v script >/dev/null; then
	script -qc "ip-snapshot --inspect '$TMP/mem.ipki'" /dev/null >"$TMP/tty.out" 2>&1
	check_grep "on a terminal: a readable summary" '^zero_pages +67' "$TMP/tty.out"
fi
ip-snapshot --file "$TMP/mem.bin" -o - | ip-delta --image --apply - -o "$TMP/mem.back2" >/dev/null
check "image to stdout, decoded from stdin" cmp "$TMP/mem.bin" "$TMP/mem.back2"
# A running process: 60000 copies of a marker in a buffer, a counter file
# updated every 50 ms.
python3 -c '
import os, sys, time
buf = bytearray(b"IPKIT-MARKER-7731!" * 60000)
print(os.getpid(), flush=True)
n = 0
while True:
    n += 1
    open(sys.argv[1] + ".tmp", "w").write(str(n)); os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(0.05)
' "$TMP/counter" >"$TMP/pid" &
ppid=$!
at_exit "kill $ppid 2>/dev/null"
for _ in $(seq 50); do [ -s "$TMP/counter" ] && break; sleep 0.1; done
if [ "$(id -u)" = 0 ]; then
	check "capture a running process" ip-snapshot --pid "$(cat "$TMP/pid")" -o "$TMP/proc.ipki"
	check_grep "process record" '"source":"pid:[0-9]+".*"format":"process".*"seconds":\{.*"stopped":.*"threads":1' "$TMP/.out"
	c1=$(cat "$TMP/counter"); sleep 0.5; c2=$(cat "$TMP/counter")
	[ "$c2" -gt "$c1" ] && ok "the process runs on after the capture ($c1 -> $c2)" || fail "the process runs on after the capture" "$c1 -> $c2"
	check "decode the process image" ip-delta --image --apply "$TMP/proc.ipki" -o "$TMP/proc.dump"
	n=$(python3 -c 'import sys; print(open(sys.argv[1], "rb").read().count(b"IPKIT-MARKER-7731!"))' "$TMP/proc.dump")
	# Markers cut by a page boundary may be split by the dump's page headers.
	[ "$n" -ge 59700 ] && ok "the captured memory holds the markers ($n of 60000)" || fail "the captured memory holds the markers" "$n of 60000"
	check_exit "no such process (66)" 66 ip-snapshot --pid 999999999 -o "$TMP/x.ipki"

	# Incremental: full capture, the process rewrites part of one buffer and
	# pauses, incremental capture against the first, full capture: the two
	# last must hold the same bytes.
	cat >"$TMP/inc.py" <<'PY'
import os, signal, sys
a = bytearray(b"IPKIT-A-UNCHANGED!" * 100000)
b = bytearray(b"IPKIT-B-BEFORE-00!" * 100000)
def mod(sig, frame):
    b[0:18 * 5000] = b"IPKIT-B-AFTER-111!" * 5000
    open(sys.argv[1], "w").write("modified")
signal.signal(signal.SIGUSR1, mod)
print(os.getpid(), flush=True)
while True:
    signal.pause()
PY
	python3 "$TMP/inc.py" "$TMP/inc.flag" >"$TMP/inc.pid" &
	ipid=$!
	at_exit "kill $ipid 2>/dev/null"
	for _ in $(seq 50); do [ -s "$TMP/inc.pid" ] && break; sleep 0.1; done
	check "full capture" ip-snapshot --pid "$ipid" -o "$TMP/f1.ipki"
	kill -USR1 "$ipid"
	for _ in $(seq 50); do [ -s "$TMP/inc.flag" ] && break; sleep 0.1; done
	# The flag is written inside the handler: let the interpreter finish it
	# and go back to sleep in pause(), so that its memory holds still.
	sleep 0.3
	for _ in $(seq 50); do [ "$(cut -d' ' -f3 "/proc/$ipid/stat" 2>/dev/null)" = S ] && break; sleep 0.1; done
	# The interpreter, stopped and resumed by each capture, may still flip
	# a word of its own state now and then (seen: 2 bytes of 22 MB once in
	# six runs): up to three incremental + full pairs, one must be identical.
	same=0
	for try in 1 2 3; do
		check "incremental capture" ip-snapshot --pid "$ipid" --parent "$TMP/f1.ipki" -o "$TMP/i2.ipki"
		cp "$TMP/.out" "$TMP/i2.rec"
		check "full capture after it" ip-snapshot --pid "$ipid" -o "$TMP/f3.ipki"
		ip-delta --image --apply "$TMP/i2.ipki" -o "$TMP/i2.dump" >/dev/null
		ip-delta --image --apply "$TMP/f3.ipki" -o "$TMP/f3.dump" >/dev/null
		cmp -s "$TMP/i2.dump" "$TMP/f3.dump" && { same=$try; break; }
		echo "# try $try: $(cmp -l "$TMP/i2.dump" "$TMP/f3.dump" | wc -l) bytes differ" >&2
	done
	[ "$same" -gt 0 ] && ok "incremental capture holds the same bytes as a full one (try $same)" ||
		fail "incremental capture holds the same bytes as a full one" "3 tries differ"
	n=$(python3 -c 'import sys; print(open(sys.argv[1], "rb").read().count(b"IPKIT-B-AFTER-111!"))' "$TMP/i2.dump")
	[ "$n" -ge 4900 ] && ok "incremental capture has the rewritten data ($n)" || fail "incremental capture has the rewritten data" "$n"
	check_grep "incremental record names its parent" '"parent":"[0-9a-f]{32}"' "$TMP/i2.rec"
	if grep -q '"tracking":true' "$TMP/i2.rec"; then
		read -r pr pg < <(sed 's/.*"pages":\([0-9]*\).*"pages_read":\([0-9]*\).*/\2 \1/' "$TMP/i2.rec")
		[ "$pr" -lt $((pg / 4)) ] && ok "incremental capture read only dirtied pages ($pr of $pg)" ||
			fail "incremental capture read only dirtied pages" "$pr of $pg"
	else
		skip "incremental capture reads only dirtied pages" "this kernel does not track soft-dirty pages"
	fi
else
	skip "process capture" "needs root (ptrace)"
fi

# A truncated image is refused by --inspect.
head -c 5000 "$TMP/mem.ipki" >"$TMP/cut.ipki"
check_exit "inspect a truncated image (65)" 65 ip-snapshot --inspect "$TMP/cut.ipki"
check_grep "... the message reads an image, not a delta" "^ip-snapshot: read image '.*cut.ipki': truncated" "$TMP/.err"
check_exit "missing file (66)" 66 ip-snapshot --file "$TMP/nope" -o "$TMP/x.ipki"
check_exit "--pid past the largest process id: usage (64)" 64 ip-snapshot --pid 2147483648 -o "$TMP/x.ipki"
check_exit "--pid into a missing directory: 73 before the process is read" 73 ip-snapshot --pid $$ -o "$TMP/no/x.ipki"
check_grep "... naming the output" "create '.*/no/x.ipki'" "$TMP/.err"
if [ -w /dev/full ]; then
	check_exit "image to a full device: 74" 74 ip-snapshot --file "$TMP/mem.bin" -o /dev/full
	check_grep "... naming the output" "write '/dev/full': No space left" "$TMP/.err"
fi
[ -e "$TMP/x.ipki" ] && fail "nothing written for a missing file" || ok "nothing written for a missing file"
check_exit "no source (64)" 64 ip-snapshot -o "$TMP/x.ipki"
check_exit "two sources (64)" 64 ip-snapshot --file "$TMP/mem.bin" --domain d
check_exit "--raw needs an absolute path (64)" 64 ip-snapshot --domain d --raw -o rel.save
if command -v virsh >/dev/null; then
	check_exit "unknown libvirt domain (69)" 69 ip-snapshot --connect test:///default --domain nosuch -o "$TMP/x.ipki"
	check_grep "libvirt's message" "find domain 'nosuch'" "$TMP/.err"
	ls -A "$TMP" | grep -q '^\.ipkit-snapshot' && fail "no temporary directory left" "$(ls -A "$TMP")" || ok "no temporary directory left"
fi
