#!/bin/bash
# ip-predict: one prediction per sample with the required fields, idle time
# from events, other records passed through, sessions coming and going,
# refusal of corrupt/truncated/foreign models, --eval, and a real replayed
# trace through ip-collect when the shared data set is there.
. "$(dirname "$0")/lib.sh"
need_cmd ip-train ip-predict python3

gen() { # gen SEED USERS SESSIONS SECONDS (as in t0310-train.sh)
	awk -v seed="$1" -v users="$2" -v sess="$3" -v secs="$4" 'BEGIN {
		srand(seed)
		for (u = 1; u <= users; u++) for (s = 1; s <= sess; s++) {
			active = 1; left = 5
			for (i = 1; i <= secs; i++) {
				if (left <= 0) {
					active = !active
					if (active) left = 1 + int(rand() * 25)
					else { r = rand(); left = r < 0.6 ? 1 + int(rand() * 5) : r < 0.9 ? 5 + int(rand() * 35) : 40 + int(rand() * 160) }
				}
				ev = active ? 1 + int(rand() * 30) : 0
				printf "{\"type\":\"sample\",\"v\":1,\"ts\":%d,\"session\":\"u%d/s%d\",\"interval\":1,\"user\":\"u%d\",\"events\":%d}\n", 1000 + i, u, s, u, ev
				left--
			}
		}
	}'
}
gen 3 3 2 400 >"$TMP/s.jsonl"
check "train a small model" ip-train -o "$TMP/m" --epochs 2 --hidden 8 --batch 4 --bptt 32 "$TMP/s.jsonl"

# one prediction per sample, other records passed through unchanged
note='{"type":"note","v":1,"ts":5,"text":"keep me","n":[1,2]}'
{ echo "$note"; cat "$TMP/s.jsonl"; } >"$TMP/in.jsonl"
check "predict" ip-predict -m "$TMP/m" "$TMP/in.jsonl"
cp "$TMP/.out" "$TMP/pred"
check_eq "one prediction per sample" "$(wc -l <"$TMP/s.jsonl")" "$(grep -c '"type":"prediction"' "$TMP/pred")"
check_eq "other records passed through unchanged" "$note" "$(head -1 "$TMP/pred")"
python3 - "$TMP/pred" >"$TMP/chk" 2>&1 <<'PY'
import json, sys
n = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["type"] != "prediction":
        continue
    n += 1
    assert set(r["p"]) == {"5", "10", "30"}, r["p"]
    assert all(0 <= v <= 1 for v in r["p"].values())
    assert r["window"] == 5 and 0 <= r["threshold"] <= 1
    assert r["decision"] == ("above" if r["p"]["5"] >= r["threshold"] else "below"), r
    assert r["model"].startswith("lstm-h8-l1-") and r["user"] and r["session"] and r["idle_s"] >= 0
print("ok", n)
PY
check_grep "predictions carry p per window, idle_s, threshold, decision, model" '^ok [0-9]+' "$TMP/chk"
ip-predict -m "$TMP/m" "$TMP/in.jsonl" >"$TMP/pred2" 2>/dev/null
check "same input, same predictions" cmp "$TMP/pred" "$TMP/pred2"
check "standard input" ip-predict -m "$TMP/m" <"$TMP/in.jsonl"
check_eq "standard input gives the same" "$(md5sum <"$TMP/pred")" "$(md5sum <"$TMP/.out")"

# idle time from the events (input_age_s is not trusted), sessions expiring
s() { printf '{"type":"sample","v":1,"ts":%s,"session":"%s","interval":1,"events":%s,"input_age_s":%s}\n' "$@"; }
{
	s 1 a 3 0.1; s 2 a 1 50; s 3 a 0 0.2; s 4 a 0 0.2; s 5 a 0 9
	s 100 a 0 1
} >"$TMP/idle.jsonl"
ip-predict -m "$TMP/m" "$TMP/idle.jsonl" >"$TMP/o" 2>"$TMP/e"
check_eq "idle_s counted from events" "0 0 1 2 3 98" "$(python3 -c 'import json,sys; print(" ".join("%g" % json.loads(l)["idle_s"] for l in open(sys.argv[1])))' "$TMP/o")"
ip-predict -m "$TMP/m" --expire 10 "$TMP/idle.jsonl" >"$TMP/o" 2>"$TMP/e"
check_eq "a session silent past --expire starts afresh" "0 0 1 2 3 1" "$(python3 -c 'import json,sys; print(" ".join("%g" % json.loads(l)["idle_s"] for l in open(sys.argv[1])))' "$TMP/o")"
{ s 1 b 1 0; s 1 b 1 0; } >"$TMP/dup.jsonl"
ip-predict -m "$TMP/m" "$TMP/dup.jsonl" >"$TMP/o" 2>"$TMP/e"
check_eq "a repeated interval is skipped" 1 "$(wc -l <"$TMP/o")"
check_grep "and said so" "not after its previous one" "$TMP/e"
ip-predict -m "$TMP/m" --threshold 0 "$TMP/idle.jsonl" >"$TMP/o"
check_eq "--threshold 0: always above" 6 "$(grep -c '"decision":"above"' "$TMP/o")"
ip-predict -m "$TMP/m" --window 30 --threshold 1 "$TMP/idle.jsonl" >"$TMP/o"
check_eq "--window 30 --threshold 1: decided on window 30" 6 "$(grep -c '"window":30,"threshold":1,"decision":"below"' "$TMP/o")"

# models refused
len=$(stat -c %s "$TMP/m")
cp "$TMP/m" "$TMP/flip"
printf '\x55' | dd of="$TMP/flip" bs=1 seek=$((len / 2)) conv=notrunc status=none
check_exit "corrupt model refused" 65 ip-predict -m "$TMP/flip" "$TMP/s.jsonl"
check_grep "corrupt: file named, checksum mismatch" "flip': checksum mismatch" "$TMP/.err"
head -c $((len - 100)) "$TMP/m" >"$TMP/short"
check_exit "truncated model refused" 65 ip-predict -m "$TMP/short" "$TMP/s.jsonl"
check_grep "truncated: said so" "short': truncated" "$TMP/.err"
echo "not a model" >"$TMP/text"
check_exit "not a model refused" 65 ip-predict -m "$TMP/text" "$TMP/s.jsonl"
check_grep "not a model: said so" "bad magic" "$TMP/.err"
check_exit "missing model" 66 ip-predict -m "$TMP/none" "$TMP/s.jsonl"
IPKIT_MODEL=$TMP/none check_exit "default model missing (IPKIT_MODEL)" 66 ip-predict "$TMP/s.jsonl"
check_grep "default model missing: path named" "$TMP/none" "$TMP/.err"
check_exit "decision window the model lacks" 64 ip-predict -m "$TMP/m" --window 7 "$TMP/s.jsonl"
# --bench: the reference network (input 16, hidden 32), or with --model
# that model's network, one record per number of sessions
check "--bench" ip-predict --bench 1,3
check_eq "--bench: one record per size, the reference network" "2 2" \
	"$(grep -c '"sessions":[13],"n_in":16,"hidden":32,.*"steps_per_s":[1-9]' "$TMP/.out") $(grep -c '"type":"bench"' "$TMP/.out")"
check "--bench with --model" ip-predict -m "$TMP/m" --bench 2
check_grep "--bench with --model: that model's network, named" '"model":"lstm-h8-l1-[0-9a-f]+","sessions":2,"n_in":[0-9]+,"hidden":8,' "$TMP/.out"
check_exit "--bench of 0 sessions: usage" 64 ip-predict --bench 0
check_exit "--table without --eval" 64 ip-predict -m "$TMP/m" --table "$TMP/s.jsonl"
echo '{"type":"sample","v":1,"ts":1,"session":"x","interval":1,"events":"many"}' >"$TMP/bad.jsonl"
check_exit "bad sample with --strict" 65 ip-predict -m "$TMP/m" --strict "$TMP/bad.jsonl"
check_exit "bad sample skipped without" 0 ip-predict -m "$TMP/m" "$TMP/bad.jsonl"
check_grep "bad sample: input, line and field named" "^ip-predict: input '.*bad.jsonl' line 1: sample record: field 'events' must be a number \(skipped\)$" "$TMP/.err"
# samples outside ipkit-records(7): each refused with its line and field,
# the good ones around them still predicted
{
	echo '{"type":"sample","v":1,"ts":1,"session":"x","interval":1,"events":1}'
	echo '{"type":"sample","v":1,"ts":2,"session":"x","interval":0}'
	echo '{"type":"sample","v":1,"ts":3,"session":"x","interval":1,"events":-4}'
	echo '{"type":"sample","v":1,"ts":4,"session":"x","interval":1,"cpu":7}'
	echo '{"type":"sample","v":1,"ts":5,"session":"","interval":1}'
	echo '{"type":"sample","v":1,"ts":6,"session":"x","interval":1,"user":5}'
	echo '{"type":"sample","v":1,"ts":7,"session":"x","interval":1,"sources":"replay"}'
	echo '{"type":"sample","v":1,"ts":8,"session":"x","interval":1,"events":0,"cpu":1}'
} >"$TMP/range.jsonl"
check "samples out of range skipped" ip-predict -m "$TMP/m" "$TMP/range.jsonl"
check_eq "samples out of range: only the two good ones predicted" "1 8" \
	"$(grep -o '"ts":[0-9]*' "$TMP/.out" | cut -d: -f2 | tr '\n' ' ' | sed 's/ $//')"
check_eq "samples out of range: one message each, naming line and field" \
	"2 interval|3 events|4 cpu|5 session|6 user|7 sources" \
	"$(sed -n "s/^ip-predict: input '.*range.jsonl' line \([0-9]\): sample record: field '\([a-z]*\)'.*(skipped)$/\1 \2/p" "$TMP/.err" | paste -sd'|')"
check_exit "samples out of range with --strict: the first stops it" 65 ip-predict -m "$TMP/m" --strict "$TMP/range.jsonl"
check_grep "--strict names the first bad line" "range.jsonl' line 2: sample record: field 'interval'" "$TMP/.err"
check_exit "--eval --strict stops at a bad line" 65 ip-predict -m "$TMP/m" --eval --strict "$TMP/s.jsonl" "$TMP/range.jsonl"
check_grep "--eval --strict names the input, line and field" "^ip-predict: input '.*range.jsonl' line 2: sample record: field 'interval' must be above 0" "$TMP/.err"
check "--eval skips bad lines" ip-predict -m "$TMP/m" --eval "$TMP/s.jsonl" "$TMP/range.jsonl"
check_eq "--eval: one warning per bad line" 6 "$(grep -c "range.jsonl' line [2-7]: .*(skipped)$" "$TMP/.err")"

# evaluation: sessions of the model's training users fit the baselines and
# are not scored; the others get the model, the three baselines and the
# lead time
ip-predict -m "$TMP/m" --eval "$TMP/s.jsonl" >"$TMP/ev" 2>"$TMP/e"
python3 - "$TMP/ev" "$TMP/m" >"$TMP/evc" 2>&1 <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ev = [r for r in rows if r["type"] == "eval"]
lead = [r for r in rows if r["type"] == "lead"]
meta = open(sys.argv[2], "rb").read().decode("latin-1")
train = meta.split("train users ")[1].split(";")[0].split(",")
assert len(ev) == 24, len(ev)
assert sorted({r["predictor"] for r in ev}) == ["hybrid-histogram", "idle-timer", "logistic", "lstm"]
scored = ev[0]["users"].split(",")
assert scored and not set(scored) & set(train), (scored, train)
n = {(r["window"], r["steps"]) for r in ev}
for w, st in n:
    assert len({r["n"] for r in ev if r["window"] == w and r["steps"] == st}) == 1, "same steps for every predictor"
assert sorted((r["predictor"], r["window"]) for r in lead) == sorted((p, w) for p in ("lstm", "idle-timer") for w in (5, 10, 30))
assert all(r["fired"] <= r["gaps"] for r in lead)
# the paired Brier difference: on the hybrid histogram and logistic rows
# only, the model's Brier score minus the row's, inside its interval
by = {(r["predictor"], r["window"], r["steps"]): r for r in ev}
for (p, w, st), r in by.items():
    assert ("model_brier_diff" in r) == (p in ("hybrid-histogram", "logistic")), (p, w, st)
    if "model_brier_diff" in r:
        assert abs(r["model_brier_diff"] - (by[("lstm", w, st)]["brier"] - r["brier"])) < 1e-9, (p, w, st)
        assert r["model_brier_diff_lo"] <= r["model_brier_diff"] <= r["model_brier_diff_hi"], r
        assert r["model_brier_diff_lo"] < r["model_brier_diff_hi"] and r["sessions"] == 2, r
print("ok")
PY
check_eq "eval: 4 predictors x 3 windows x 2 subsets on unseen users, lead times, paired Brier differences" ok "$(tail -1 "$TMP/evc")"
ip-predict -m "$TMP/m" --eval --table "$TMP/s.jsonl" >"$TMP/tab" 2>"$TMP/e"
check_grep "eval table" '^idle-timer +30 +early' "$TMP/tab"
check_grep "eval table: lead time" '^lstm +5 +[0-9.]+ +[0-9.]+ +[0-9]+ ' "$TMP/tab"
check_grep "eval table: paired Brier differences" '^logistic +30 +all +-?[0-9.]+ +-?[0-9.]+ +-?[0-9.]+$' "$TMP/tab"
ip-train -o "$TMP/mv" --epochs 1 --hidden 4 --val-users u3 "$TMP/s.jsonl" 2>/dev/null
grep '"user":"u3"' "$TMP/s.jsonl" >"$TMP/u3.jsonl"
grep -v '"user":"u3"' "$TMP/s.jsonl" >"$TMP/u12.jsonl"
ip-predict -m "$TMP/mv" --eval "$TMP/u3.jsonl" >"$TMP/ev" 2>"$TMP/e"
check_eq "eval without the training users: model and timer only" 12 "$(grep -c '"type":"eval"' "$TMP/ev")"
check_grep "and a warning says why" "hybrid histogram and logistic regression left out" "$TMP/e"
ip-predict -m "$TMP/mv" --eval --baseline-train "$TMP/u12.jsonl" "$TMP/u3.jsonl" >"$TMP/ev2" 2>"$TMP/e"
check_eq "--baseline-train: all three baselines" 24 "$(grep -c '"type":"eval"' "$TMP/ev2")"
ip-predict -m "$TMP/mv" --eval "$TMP/s.jsonl" >"$TMP/ev3" 2>"$TMP/e"
check_eq "baselines from the model's training users = from --baseline-train" \
	"$(grep '"logistic"' "$TMP/ev2" | sed 's/"ts":[^,]*,//' | md5sum)" "$(grep '"logistic"' "$TMP/ev3" | sed 's/"ts":[^,]*,//' | md5sum)"
check_exit "--baseline-train needs --eval" 64 ip-predict -m "$TMP/mv" --baseline-train "$TMP/u12.jsonl" "$TMP/u3.jsonl"

# a real trace, replayed: one prediction per sample
data=$IPKIT_TOP/../shared/data/balabit-mouse
if [ -d "$data/user7" ] && command -v ip-collect >/dev/null; then
	f=$(ls "$data/user7" | head -1)
	ip-collect --replay "$data/user7/$f" --speed 0 >"$TMP/real.jsonl" 2>"$TMP/e"
	ip-predict -m "$TMP/m" "$TMP/real.jsonl" >"$TMP/realp" 2>"$TMP/e"
	n=$(grep -c '"type":"sample"' "$TMP/real.jsonl")
	if [ "$n" -gt 100 ]; then ok "replayed trace has samples"; else fail "replayed trace has samples" "$n"; fi
	check_eq "replayed trace: one prediction per second of the trace" "$n" "$(grep -c '"type":"prediction"' "$TMP/realp")"
else
	skip "replayed trace: one prediction per second of the trace" "needs ../shared/data/balabit-mouse and ip-collect"
fi
