#!/bin/bash
# t0531-migrate-gpu: the GPU check inside a real migration in the two-host
# lab: in the verify state the sender asks the receiver to run it, judges
# its result and puts it in the migration record. Here (no GPU, the CI
# case): --verify-gpu auto (the default) migrates and records "skipped: no
# GPU"; --verify-gpu yes fails the verification with exit 69 and rolls
# back, the guest intact on its source; --verify-gpu no records nothing. On a host with an NVIDIA GPU
# both auto and yes migrate with status "pass".
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/migrate-lib.sh"
migrate_lab ipkg 10.79 t0531
have_gpu=0
if nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then have_gpu=1; elif [ -e /dev/nvidia0 ]; then have_gpu=1; fi

mkdir -p "$TMP/a" "$TMP/b"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/key"
start_receiver 1 7300 "$TMP/a" && start_receiver 2 7300 "$TMP/b" ||
	{ fail "receivers listen" "$(cat "$TMP"/recv-*.log | tail -c 300)"; exit 0; }

# migrate FROM TO [OPTIONS]: output in $TMP/out, stderr in $TMP/mig.err, exit in $RC
migrate() {
	local from=$1 to=$2 uf ut
	shift 2
	eval "uf=\$U$from ut=\$U$to"
	ip netns exec "$P-h$from" "$MIG" --to "tcp://$N.1$to:7300" --key-file "$TMP/key" --domain "$NAME" -c "$uf" \
		--target-uri "$ut" --image-dir "$TMP/$([ "$from" = 1 ] && echo a || echo b)" \
		--source-sock "$("$G" sock-path "$uf" "$NAME")" --target-sock "$("$G" sock-path "$ut" "$NAME")" \
		--expect-checksum "$EXPECT" --verify-timeout 30 --timeout 5 "$@" >"$TMP/out" 2>"$TMP/mig.err"
	RC=$?
	log "migrate $from -> $to $*: exit $RC, $(tail -c 300 "$TMP/mig.err" | tr '\n' ' ')"
	log "record: $(cat "$TMP/out")"
}
field() { python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readline()); v=r
for k in sys.argv[2].split("."): v=v.get(k) if isinstance(v,dict) else None
print("" if v is None else v)' "$TMP/out" "$1"; }

# ---- auto (the default option value) -------------------------------------------
migrate 1 2
check_eq "auto 1->2: exit 0, success, runs on host 2" "0 success 2" "$RC $(field outcome) $(where)"
if [ $have_gpu = 1 ]; then
	check_eq "auto 1->2: the target's GPU check passed" "pass 0" "$(field gpu.status) $(field gpu.bad_pixels)"
else
	check_eq "auto 1->2: no GPU on the target: skipped" skipped "$(field gpu.status)"
	check_grep "auto 1->2: the record says why" '"message":"skipped: no GPU \(run the gpu check .cuda.: ' "$TMP/out"
fi
check_eq "auto 1->2: the target's check rendered 6291456 pixels (or would have)" 6291456 "$(field gpu.pixels)"
no_sanitizer_report "auto 1->2: no sanitizer report" "$TMP/mig.err"

# ---- yes ---------------------------------------------------------------------------
migrate 2 1 --verify-gpu yes
if [ $have_gpu = 1 ]; then
	check_eq "yes 2->1 with a GPU: exit 0, pass, runs on host 1" "0 pass 1" "$RC $(field gpu.status) $(where)"
else
	check_eq "yes 2->1 without a GPU: exit 69, rolled back, in phase verify" "69 rolled-back verify source" \
		"$RC $(field outcome) $(field phase) $(field where)"
	check_eq "yes 2->1: the session runs on host 2 only" 2 "$(where)"
	if r=$(intact "$U2"); then ok "yes 2->1: intact on host 2 ($r)"; else fail "yes 2->1: intact on host 2" "$r"; fi
	check_grep "yes 2->1: clear error" "^ip-migrate: verify gpu on the target: no usable gpu \(run the gpu check 'cuda': " "$TMP/mig.err"
	check_eq "yes 2->1: record carries the target's result" unavailable "$(field gpu.status)"
	[ -z "$(ls "$TMP/a"/*.save 2>/dev/null)" ] && ok "yes 2->1: no image left on host 1" ||
		fail "yes 2->1: no image left on host 1" "$(ls "$TMP/a")"
	migrate 2 1 --verify-gpu no
	check_eq "no 2->1: exit 0, runs on host 1, no gpu in the record" "0 1 " "$RC $(where) $(field gpu)"
fi
no_sanitizer_report "receivers: no sanitizer report" <(cat "$TMP"/recv-*.log)
