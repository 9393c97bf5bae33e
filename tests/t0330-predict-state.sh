#!/bin/bash
# ip-predict --state DIR (per-user history and recalibration across runs,
# safe with two processes at once), --recalibrate, the default model (IPKIT_MODEL, source tree), --plot
# with gnuplot, and --device cuda: equal to the CPU on a GPU host, refused
# with a clear error without a CUDA kernel or GPU.
. "$(dirname "$0")/lib.sh"
need_cmd ip-train ip-predict python3

gen() { # gen SEED USER SESSIONS SECONDS: bursts and idle gaps of one user
	awk -v seed="$1" -v user="$2" -v sess="$3" -v secs="$4" 'BEGIN {
		srand(seed)
		for (s = 1; s <= sess; s++) {
			active = 1; left = 5
			for (i = 1; i <= secs; i++) {
				if (left <= 0) {
					active = !active
					if (active) left = 1 + int(rand() * 20)
					else { r = rand(); left = r < 0.6 ? 1 + int(rand() * 5) : r < 0.9 ? 5 + int(rand() * 35) : 40 + int(rand() * 100) }
				}
				ev = active ? 1 + int(rand() * 30) : 0
				printf "{\"type\":\"sample\",\"v\":1,\"ts\":%d,\"session\":\"%s/s%d\",\"interval\":1,\"user\":\"%s\",\"events\":%d,\"clicks\":%d}\n", 1000 + i, user, s, user, ev, (ev > 25)
				left--
			}
		}
	}'
}
{ gen 1 u1 2 600; gen 2 u2 2 600; gen 3 u3 1 600; } >"$TMP/train.jsonl"
check "train a small model" ip-train -o "$TMP/m" --epochs 1 --hidden 8 --batch 4 --bptt 32 --val-users u3 "$TMP/train.jsonl"
gen 11 alice 2 500 >"$TMP/a1.jsonl"
gen 12 alice 2 500 | sed 's,alice/s,alice/t,' >"$TMP/a2.jsonl"

gaps() { # gaps DIR USER: the gap count the state file holds for USER
	python3 -c 'import json,sys
for l in open(sys.argv[1] + "/history.jsonl"):
    r = json.loads(l)
    if r["user"] == sys.argv[2]:
        assert r["type"] == "history" and r["v"] == 1 and sum(c for b, c in r["bins"]) == r["gaps"]
        print("%g %g %g" % (r["gaps"], r["intervals"], r["active"]))' "$@"
}
# one run at a time, each into its own state
check "state: first run" ip-predict -m "$TMP/m" --state "$TMP/s1" "$TMP/a1.jsonl"
check "state: history file written" test -s "$TMP/s1/history.jsonl"
c1=$(python3 -c 'import json,sys; print(json.dumps(json.loads(open(sys.argv[1]).readline())["calibration"]))' "$TMP/s1/history.jsonl")
ip-predict -m "$TMP/m" --state "$TMP/s2" "$TMP/a2.jsonl" >/dev/null
one=$(gaps "$TMP/s1" alice) two=$(gaps "$TMP/s2" alice)
python3 -c 'import sys; a=sys.argv[1].split(); assert float(a[0]) > 10 and float(a[1]) == 1000' "$one" &&
	ok "state: gaps and intervals counted ($one)" || fail "state: gaps and intervals counted" "$one"
sum=$(python3 -c 'import sys; a=list(map(float,sys.argv[1].split())); b=list(map(float,sys.argv[2].split())); print("%g %g %g" % tuple(x+y for x,y in zip(a,b)))' "$one" "$two")

# two processes on one state directory at once: nothing lost, nothing twice
for round in 1 2 3; do
	rm -rf "$TMP/sc"
	ip-predict -m "$TMP/m" --state "$TMP/sc" "$TMP/a1.jsonl" >/dev/null 2>"$TMP/e1" &
	p1=$!
	ip-predict -m "$TMP/m" --state "$TMP/sc" "$TMP/a2.jsonl" >/dev/null 2>"$TMP/e2" &
	p2=$!
	wait $p1; r1=$?
	wait $p2; r2=$?
	[ $r1 = 0 ] && [ $r2 = 0 ] && [ "$(gaps "$TMP/sc" alice)" = "$sum" ] || break
done
check_eq "state: two concurrent processes merge their counts" "$sum" "$(gaps "$TMP/sc" alice)"
check_eq "state: no temporary file left" "" "$(ls "$TMP/sc" | grep tmp)"

# a later run starts from the stored history: its predictions differ
ip-predict -m "$TMP/m" "$TMP/a2.jsonl" >"$TMP/fresh" 2>/dev/null
ip-predict -m "$TMP/m" --state "$TMP/s1" "$TMP/a2.jsonl" >"$TMP/hist" 2>/dev/null
check_eq "state: same number of predictions" "$(wc -l <"$TMP/fresh")" "$(wc -l <"$TMP/hist")"
if cmp -s <(head -5 "$TMP/fresh") <(head -5 "$TMP/hist"); then
	fail "state: stored history changes the first predictions" "identical"
else
	ok "state: stored history changes the first predictions"
fi
check_eq "state: the run added its own counts" \
	"$(python3 -c 'import sys; a=list(map(float,sys.argv[1].split())); b=list(map(float,sys.argv[2].split())); print("%g %g %g" % tuple(x+y for x,y in zip(a,b)))' "$one" "$two")" \
	"$(gaps "$TMP/s1" alice)"

# per-user recalibration (ip-predict(1)): kept with the history, for the model
calib() { # calib DIR USER: the model and labels of the user's stored calibration
	python3 -c 'import json,sys
for l in open(sys.argv[1] + "/history.jsonl"):
    r = json.loads(l)
    if r["user"] == sys.argv[2] and "calibration" in r:
        c = r["calibration"]
        print(c["model"], " ".join("%g" % x for x in c["windows"] + c["labels"]))' "$@"
}
model_id=$(head -1 "$TMP/fresh" | python3 -c 'import json,sys; print(json.load(sys.stdin)["model"])')
c2=$(calib "$TMP/s2" alice)
python3 -c 'import sys; w=sys.argv[1].split(); assert w[0] == sys.argv[2] and w[1:4] == ["5","10","30"] and min(map(float, w[4:])) > 500' \
	"$c2" "$model_id" && ok "recalibration: stored for the model and its windows, learned from the run ($c2)" ||
	fail "recalibration: stored for the model and its windows, learned from the run" "$c2 (model $model_id)"
check_eq "recalibration: two concurrent processes add what each learned" \
	"$(python3 -c 'import json,sys; a=json.loads(sys.argv[1]); b=sys.argv[2].split(); print(a["model"], " ".join("%g" % x for x in a["windows"]), " ".join("%g" % (x+float(y)) for x,y in zip(a["labels"],b[4:])))' "$c1" "$c2")" \
	"$(calib "$TMP/sc" alice)"
check "--recalibrate 0" ip-predict -m "$TMP/m" --recalibrate 0 --state "$TMP/s0" "$TMP/a2.jsonl"
cp "$TMP/.out" "$TMP/plain"
check_eq "--recalibrate 0: nothing stored" "" "$(calib "$TMP/s0" alice)"
check "--recalibrate 0: the model's probabilities differ from the recalibrated ones" \
	python3 -c 'import json,sys
a = [json.loads(l)["p"]["10"] for l in open(sys.argv[1])]
b = [json.loads(l)["p"]["10"] for l in open(sys.argv[2])]
moved = sum(abs(x - y) > 1e-3 for x, y in zip(a, b))
assert len(a) == len(b) and a[0] == b[0] and moved > len(a) / 10, (len(a), moved)' "$TMP/plain" "$TMP/fresh"
check_exit "--recalibrate out of range" 64 ip-predict -m "$TMP/m" --recalibrate 2 "$TMP/a2.jsonl"
# --eval scores what the stream predicted: the Brier score of the streamed
# predictions, labelled here, is the model's in --eval
brier() { # brier PREDICTIONS SAMPLES: W=10 Brier score over the labelled steps
	python3 -c 'import json,sys,collections
ev = collections.defaultdict(dict)
for l in open(sys.argv[2]):
    r = json.loads(l); ev[r["session"]][r["ts"]] = r["events"]
se = n = 0
for l in open(sys.argv[1]):
    r = json.loads(l); s, t = r["session"], r["ts"]; d = ev[s]
    if t + 10 > max(d): continue
    y = int(all(d[t + k] == 0 for k in range(1, 11)))
    se += (r["p"]["10"] - y) ** 2; n += 1
print("%.4f" % (se / n))' "$@"
}
for rc in 0.001 0; do
	ip-predict -m "$TMP/m" --recalibrate $rc "$TMP/a2.jsonl" >"$TMP/st.out" 2>/dev/null
	ip-predict -m "$TMP/m" --recalibrate $rc --eval "$TMP/a2.jsonl" >"$TMP/ev.out" 2>/dev/null
	check_eq "--eval --recalibrate $rc: the model's Brier score is that of the streamed predictions" \
		"$(brier "$TMP/st.out" "$TMP/a2.jsonl")" \
		"$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["type"] == "eval" and r["predictor"] == "lstm" and r["window"] == 10 and r["steps"] == "all":
        print("%.4f" % r["brier"])' "$TMP/ev.out")"
done

echo '{"type":"history","v":2,"user":"x","gaps":1,"intervals":1,"active":1,"bins":[[1,1]]}' >"$TMP/bad/history.jsonl" 2>/dev/null ||
	{ mkdir -p "$TMP/bad"; echo '{"type":"history","v":2,"user":"x","gaps":1,"intervals":1,"active":1,"bins":[[1,1]]}' >"$TMP/bad/history.jsonl"; }
check_exit "state: a foreign history file is refused" 65 ip-predict -m "$TMP/m" --state "$TMP/bad" "$TMP/a1.jsonl"
check_grep "state: and named" "history.jsonl' line 1: history version is not 1" "$TMP/.err"
touch "$TMP/notdir"
check_exit "state: not a directory" 73 ip-predict -m "$TMP/m" --state "$TMP/notdir" "$TMP/a1.jsonl"

# the default model
IPKIT_MODEL=$TMP/m check "IPKIT_MODEL names the model" ip-predict -v "$TMP/a1.jsonl"
check_grep "-v says which model" "default model \(IPKIT_MODEL\): $TMP/m" "$TMP/.err"
top=$(cd "$IPKIT_TOP" && pwd)
if [ -f "$top/models/default.ipkm" ] && { [ "$(cd "$IPKIT_BIN/../.." 2>/dev/null && pwd)" = "$top" ] ||
	[ "$(cd "$IPKIT_BIN/../../.." 2>/dev/null && pwd)" = "$top" ]; }; then
	env -u IPKIT_MODEL "$IPKIT_BIN/ip-predict" -v "$TMP/a1.jsonl" >"$TMP/o" 2>"$TMP/e"
	check_grep "no --model: the source tree's default model" "default model \(source tree\): .*models/default.ipkm" "$TMP/e"
	check_eq "the default model predicts every sample" "$(wc -l <"$TMP/a1.jsonl")" "$(grep -c '"type":"prediction"' "$TMP/o")"
else
	skip "no --model: the source tree's default model" "programs not run from this tree's build or no models/default.ipkm"
fi

# --device: with an NVIDIA GPU the batched CUDA step must give the CPU's
# predictions (within 1e-5, decisions equal); without one, a clear refusal.
have_gpu=0
if nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then have_gpu=1; elif [ -e /dev/nvidia0 ]; then have_gpu=1; fi
if [ $have_gpu = 1 ]; then
	ip-predict -m "$TMP/m" "$TMP/a1.jsonl" >"$TMP/cpu.out" 2>"$TMP/cpu.err"
	check "gpu: --device cuda predicts" ip-predict -m "$TMP/m" --device cuda -v "$TMP/a1.jsonl"
	cp "$TMP/.out" "$TMP/gpu.out"
	check_grep "gpu: -v says each interval is one batched step" "device cuda: the samples of each interval in one batched step" "$TMP/.err"
	check_eq "gpu: same predictions as the CPU (count, sessions, times, decisions; probabilities within 1e-5)" ok \
		"$(python3 -c '
import json, sys
a = [json.loads(l) for l in open(sys.argv[1]) if "\"prediction\"" in l]
b = [json.loads(l) for l in open(sys.argv[2]) if "\"prediction\"" in l]
key = lambda r: (r["session"], r["ts"])
a.sort(key=key); b.sort(key=key)
if not a or len(a) != len(b): sys.exit("%d cpu, %d gpu predictions" % (len(a), len(b)))
d = 0.0
for x, y in zip(a, b):
	if key(x) != key(y) or x["decision"] != y["decision"]: sys.exit("differ at %s" % (key(x),))
	for w in x["p"]: d = max(d, abs(x["p"][w] - y["p"][w]))
print("ok" if d < 1e-5 else "max difference %g" % d)' "$TMP/cpu.out" "$TMP/gpu.out" 2>&1)"
else
	check_exit "--device cuda without a CUDA kernel or GPU" 69 ip-predict -m "$TMP/m" --device cuda "$TMP/a1.jsonl"
	check_grep "--device cuda: said why" "use device 'cuda'" "$TMP/.err"
fi
check_exit "--device bogus" 64 ip-predict -m "$TMP/m" --device tpu "$TMP/a1.jsonl"
check "--device cpu" ip-predict -m "$TMP/m" --device cpu "$TMP/a1.jsonl"

# --plot
check_exit "--plot needs .svg or .png" 64 ip-predict -m "$TMP/m" --plot "$TMP/p.pdf" "$TMP/a1.jsonl"
check_exit "--plot-session needs --plot" 64 ip-predict -m "$TMP/m" --plot-session alice/s1 "$TMP/a1.jsonl"
if command -v gnuplot >/dev/null; then
	check "--plot SVG" ip-predict -m "$TMP/m" --plot "$TMP/p.svg" "$TMP/a1.jsonl"
	check_grep "SVG drawn, titled with the session" "alice/s1" "$TMP/p.svg"
	check_eq "SVG: predictions still written" "$(wc -l <"$TMP/a1.jsonl")" "$(wc -l <"$TMP/.out")"
	check "--plot PNG with --eval and --plot-session" ip-predict -m "$TMP/m" --eval --plot "$TMP/p.png" --plot-session alice/s2 "$TMP/a1.jsonl"
	check_eq "PNG drawn" "$(printf '\211PNG')" "$(head -c 4 "$TMP/p.png")"
	check_exit "--plot-session that is not in the input" 65 ip-predict -m "$TMP/m" --plot "$TMP/q.svg" --plot-session nobody "$TMP/a1.jsonl"
	check_exit "--plot into a missing directory: refused before the input is read" 73 \
		ip-predict -m "$TMP/m" --plot "$TMP/no/such/p.svg" "$TMP/a1.jsonl"
	check_eq "... and nothing on stdout" 0 "$(wc -c <"$TMP/.out")"
	check_grep "... naming the plot and the directory" "plot '.*/no/such/p.svg': cannot write in '.*/no/such'" "$TMP/.err"
	mkdir -p "$TMP/q'dir"
	check "--plot to a name with a quote" ip-predict -m "$TMP/m" --plot "$TMP/q'dir/it's.svg" "$TMP/a1.jsonl"
	check_grep "... drawn" "alice/s1" "$TMP/q'dir/it's.svg"
	check_eq "... stdout holds only the predictions" "$(wc -l <"$TMP/a1.jsonl") 0" \
		"$(wc -l <"$TMP/.out") $(grep -vc '^{"type":"prediction"' "$TMP/.out")"
	check_eq "... no working file left beside it" "it's.svg" "$(ls -A "$TMP/q'dir")"
else
	skip "--plot" "gnuplot is not installed"
fi
