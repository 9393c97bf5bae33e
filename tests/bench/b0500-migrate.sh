#!/bin/bash
# b0500-migrate: moving the running test guest between the two lab hosts,
# three ways, same guest, same run:
#   native  libvirt's live migration (virsh migrate --live --p2p), its
#           downtime from `virsh domjobinfo --completed`
#   naive   virsh save on A, copy of the file to B's directory, virsh restore
#           on B (the guest is down for all three)
#   ipkit   ip-migrate: --precopy, IPKIT_BENCH_GAP seconds (default 30) of
#           the guest running, then the cut-over (final save, delta against
#           the pre-copied base, transfer, apply, restore, verification)
# Guest: IPKIT_BENCH_MEM MiB (default 1024) with IPKIT_BENCH_FILL MiB
# (default 768) filled, IPKIT_BENCH_DIRTY %/s rewritten (default 1);
# ip-migrate's final image by IPKIT_BENCH_CAPTURE (auto, the default: live
# unless the guest's QEMU loses writes during a live capture, QEMU before 9.0
# under TCG, then saved; or live, or save). IPKIT_GUEST_EMULATOR names
# another QEMU binary for the guest (examples/guest/ipkit-guest); the QEMU
# that ran it is printed. Native live migration relies on the same dirty
# tracking as a live capture: on QEMU before 9.0 under TCG it can also move
# stale pages (it is measured as it is).
# Each path moves the guest A -> B; it is moved back between paths. Prints
# one JSON line {"bench":"migrate",...}, a table and the issue's ratios:
# downtime vs naive (goal <= 0.5), bytes on the wire at cut-over vs naive
# (goal <= 0.15), cut-over to verified vs native total (goal <= 1): from
# the cut-over command's start to its record's verified_ts (what follows the
# verified guest on B, the source's capture call returning and the release,
# is left out).
set -u
top=${IPKIT_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${IPKIT_BIN:-$top/build/bin}
name=migrate
mem=${IPKIT_BENCH_MEM:-1024}
fill=${IPKIT_BENCH_FILL:-768}
dirty=${IPKIT_BENCH_DIRTY:-1}
gap=${IPKIT_BENCH_GAP:-30}
capture=${IPKIT_BENCH_CAPTURE:-auto}
[ -x "$bin/ip-migrate" ] || { echo "skip b0500-$name: $bin/ip-migrate not built"; exit 0; }
[ "$(id -u)" = 0 ] || { echo "skip b0500-$name: needs root"; exit 0; }
for c in ip libvirtd virsh qemu-system-x86_64 python3; do
	command -v "$c" >/dev/null || { echo "skip b0500-$name: needs $c"; exit 0; }
done
LAB=$top/examples/lab/ipkit-lab
G=$top/examples/guest/ipkit-guest
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ipkit-bench.XXXXXX")
export IPKIT_LAB_DIR=$tmp/lab IPKIT_LAB_NAME=ipkg$(($$ % 100000)) IPKIT_LAB_NET=10.81.$((100 + $$ % 150)) IPKIT_LAB_TIMEOUT=60
N=$IPKIT_LAB_NET P=$IPKIT_LAB_NAME D=b0500
U1=qemu+tcp://$N.11/system U2=qemu+tcp://$N.12/system
RPID=""
cleanup() {
	[ -n "$RPID" ] && kill $RPID 2>/dev/null
	"$LAB" down >/dev/null 2>&1
	rm -rf "$tmp"
}
trap cleanup EXIT
now() { date +%s.%N; }
since() { python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 3))" "$1" "$(now)"; }
die() {
	echo "bench b0500-$name failed: $*"
	local u
	for u in "${U1:-}" "${U2:-}"; do
		[ -n "$u" ] && [ -r "$("$G" console-log "$u" "$D" 2>/dev/null)" ] || continue
		echo "# console of $D on $u (last lines):"
		tr -d '\r' <"$("$G" console-log "$u" "$D")" | grep -av 'ipkit-heartbeat' | tail -n 40 | sed 's/^/#   /'
	done
	exit 1
}

make -s -C "$top" -f examples/guest/guest.mk guest >/dev/null 2>&1 || die "make guest"
"$LAB" up 2 >/dev/null 2>"$tmp/up.err" || die "lab up: $(tail -c 300 "$tmp/up.err")"
mkdir -p "$tmp/a" "$tmp/b"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tmp/key"
"$G" define "$U1" "$D" --mem "$mem" --fill "$fill" --dirty "$dirty" >/dev/null &&
	"$G" start "$U1" "$D" && "$G" wait-heartbeat "$U1" "$D" 3 180 >/dev/null || die "guest does not start"
qemu_version=$("${IPKIT_GUEST_EMULATOR:-qemu-system-x86_64}" --version | sed -n '1s/.*version \([^ ]*\).*/\1/p')
# let the renderer fill its buffer
sleep 10
ip netns exec "$P-h2" "$bin/ip-migrate" --listen "$N.12:7300" --key-file "$tmp/key" --image-dir "$tmp/b" 2>"$tmp/recv.log" &
RPID=$!
ip netns exec "$P-h1" "$bin/ip-migrate" --listen "$N.11:7300" --key-file "$tmp/key" --image-dir "$tmp/a" 2>"$tmp/recv1.log" &
RPID="$RPID $!"
sleep 1
back() { # move the guest from B to A again (not measured)
	ip netns exec "$P-h2" "$bin/ip-migrate" --to "tcp://$N.11:7300" --key-file "$tmp/key" -d "$D" -c "$U2" \
		--target-uri "$U1" --image-dir "$tmp/b" --no-delta >/dev/null 2>>"$tmp/back.err" || die "move back: $(tail -c 300 "$tmp/back.err")"
	rm -f "$tmp/a"/*.save "$tmp/b"/*.save
}

# ---- native live migration ------------------------------------------------------
t=$(now)
virsh -q -c "$U1" migrate --live --p2p --persistent "$D" "$U2" --migrateuri "tcp://$N.12" >/dev/null 2>"$tmp/err" ||
	die "virsh migrate: $(cat "$tmp/err")"
native_total=$(since "$t")
virsh -q -c "$U1" domjobinfo "$D" --completed >"$tmp/job" 2>/dev/null
native_down=$(awk -F: '/^Total downtime/ {gsub(/[^0-9]/, "", $2); print $2 / 1000}' "$tmp/job")
native_bytes=$(awk -F: '/^Memory processed|^Data processed/ {print $2}' "$tmp/job" | head -1 | python3 -c '
import sys
t = sys.stdin.read().split()
u = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
print(int(float(t[0]) * u.get(t[1], 1)) if len(t) >= 2 else "")')
"$G" wait-heartbeat "$U2" "$D" 1 30 >/dev/null || die "guest does not run on B after native migration"
back

# ---- naive: save, copy, restore -------------------------------------------------
# timestamps only between the steps (no python start-up inside the downtime)
t=$(now)
virsh -q -c "$U1" save "$D" "$tmp/a/naive.save" >/dev/null 2>"$tmp/err" || die "virsh save: $(cat "$tmp/err")"
t2=$(now)
cp "$tmp/a/naive.save" "$tmp/b/naive.save"
sync "$tmp/b/naive.save"
t3=$(now)
virsh -q -c "$U2" restore "$tmp/b/naive.save" >/dev/null 2>"$tmp/err" || die "virsh restore: $(cat "$tmp/err")"
t4=$(now)
diff_s() { python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 3))" "$1" "$2"; }
naive_save=$(diff_s "$t" "$t2")
naive_copy=$(diff_s "$t2" "$t3")
naive_restore=$(diff_s "$t3" "$t4")
naive_down=$(diff_s "$t" "$t4")
naive_bytes=$(stat -c %s "$tmp/a/naive.save")
rm -f "$tmp/a/naive.save" "$tmp/b/naive.save"
virsh -q -c "$U2" define <(virsh -q -c "$U2" dumpxml "$D") >/dev/null 2>&1
back

# ---- ipkit: pre-copy, then cut-over ------------------------------------------------
S1=$("$G" sock-path "$U1" "$D")
S2=$("$G" sock-path "$U2" "$D")
mig() { ip netns exec "$P-h1" "$bin/ip-migrate" --to "tcp://$N.12:7300" --key-file "$tmp/key" -d "$D" -c "$U1" \
	--target-uri "$U2" --image-dir "$tmp/a" --source-sock "$S1" --target-sock "$S2" "$@"; }
t=$(now)
mig --precopy >"$tmp/pre.json" 2>"$tmp/err" || die "precopy: $(cat "$tmp/err")"
pre_s=$(since "$t")
sleep "$gap"
t=$(now)
mig --capture "$capture" >"$tmp/cut.json" 2>"$tmp/err" || die "cut-over: $(cat "$tmp/err")"
ipkit_total=$(since "$t")
cut_t0=$t

python3 - "$tmp/pre.json" "$tmp/cut.json" <<PY
import json, sys
pre = json.loads(open(sys.argv[1]).readline())
cut = json.loads(open(sys.argv[2]).readline())
native = {"total_s": $native_total, "downtime_s": float("${native_down:-nan}"), "bytes": ${native_bytes:-0}}
naive = {"save_s": $naive_save, "copy_s": $naive_copy, "restore_s": $naive_restore, "downtime_s": $naive_down, "bytes": $naive_bytes}
ipkit = {"precopy_s": $pre_s, "precopy_bytes_wire": pre["bytes_wire"], "gap_s": $gap, "total_s": $ipkit_total,
         "downtime_s": cut["downtime_s"], "bytes_wire": cut["bytes_wire"], "image_bytes": cut.get("image_bytes"),
         "delta_bytes": cut.get("delta_bytes"), "full_image": cut["full_image"], "capture": cut.get("capture"),
         "capture_pause_s": cut.get("capture_pause_s"), "capture_stopped_s": cut.get("capture_stopped_s"), "phases": cut["seconds"],
         "target_seconds": cut.get("target_seconds"), "streamed": cut.get("streamed"),
         "after_verified_s": cut.get("after_verified_s", 0), "capture_untrusted": cut.get("capture_untrusted")}
# a verified guest on B: from the command's start to the verification
ipkit["to_verified_s"] = round(cut["verified_ts"] - $cut_t0, 3)
ratios = {"downtime_vs_naive": round(ipkit["downtime_s"] / naive["downtime_s"], 3),
          "bytes_vs_naive": round(ipkit["bytes_wire"] / naive["bytes"], 4),
          "time_vs_native": round(ipkit["to_verified_s"] / native["total_s"], 3)}
print(json.dumps({"bench": "migrate", "qemu": "$qemu_version", "mem_mib": $mem, "fill_mib": $fill, "dirty_pct": $dirty, "native": native,
                  "naive": naive, "ipkit": ipkit, "ratios": ratios}))
print("%-8s %10s %12s %12s %14s" % ("path", "total s", "verified s", "downtime s", "bytes (cut)"))
print("%-8s %10.2f %12s %12.3f %14d" % ("native", native["total_s"], "-", native["downtime_s"], native["bytes"]))
print("%-8s %10.2f %12s %12.3f %14d" % ("naive", naive["downtime_s"], "-", naive["downtime_s"], naive["bytes"]))
print("%-8s %10.2f %12.2f %12.3f %14d" % ("ip-migr", ipkit["total_s"], ipkit["to_verified_s"], ipkit["downtime_s"],
      ipkit["bytes_wire"]))
print("phases (s): %s; on the target: %s%s" % (ipkit["phases"], ipkit["target_seconds"],
      " (apply streamed into the restore)" if ipkit["streamed"] else ""))
print("naive: save %.2f s, copy %.2f s, restore %.2f s" % (naive["save_s"], naive["copy_s"], naive["restore_s"]))
print("guest's QEMU: $qemu_version; ip-migrate's final image: %s%s" % (ipkit["capture"],
      " (%s)" % ipkit["capture_untrusted"] if ipkit["capture_untrusted"] else ""))
print("downtime/naive %.3f (goal <= 0.5), bytes/naive %.4f (goal <= 0.15), cut-over-to-verified/native %.3f (goal <= 1)"
      % (ratios["downtime_vs_naive"], ratios["bytes_vs_naive"], ratios["time_vs_native"]))
PY
