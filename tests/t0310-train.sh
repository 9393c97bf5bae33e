#!/bin/bash
# ip-train: trains from sample records split by user, writes a model that
# ip-predict reads, is deterministic for a seed whatever the thread count,
# reports the model and the baselines, refuses bad splits and options;
# cross-fitting by user scores every user out of fold and makes the folds'
# mean the final network (or refits it); --ensemble averages networks from
# consecutive seeds as one.
. "$(dirname "$0")/lib.sh"
need_cmd ip-train ip-predict python3

# Synthetic sessions: bursts of input separated by idle gaps of mixed
# lengths; users u3 and u4 also report cpu (masks are exercised).
gen() { # gen SEED USERS SESSIONS SECONDS
	awk -v seed="$1" -v users="$2" -v sess="$3" -v secs="$4" 'BEGIN {
		srand(seed)
		for (u = 1; u <= users; u++) for (s = 1; s <= sess; s++) {
			t = 0; active = 1; left = 5
			for (i = 1; i <= secs; i++) {
				if (left <= 0) {
					active = !active
					if (active) left = 1 + int(rand() * 25)
					else { r = rand(); left = r < 0.6 ? 1 + int(rand() * 5) : r < 0.9 ? 5 + int(rand() * 35) : 40 + int(rand() * 160) }
				}
				ev = active ? 1 + int(rand() * 30) : 0
				line = sprintf("{\"type\":\"sample\",\"v\":1,\"ts\":%d,\"session\":\"u%d/s%d\",\"interval\":1,\"user\":\"u%d\",\"events\":%d,\"mouse_px\":%d,\"clicks\":%d", 1000 + i, u, s, u, ev, ev * 7, ev > 20)
				if (u > 2) line = line sprintf(",\"cpu\":%.2f", active ? 0.5 : 0.05)
				print line "}"
				left--
			}
		}
	}'
}
gen 7 4 2 900 >"$TMP/s.jsonl"

check "train a small model" ip-train -o "$TMP/m1" --epochs 2 --hidden 8 --seed 5 "$TMP/s.jsonl"
check "train again, one thread" ip-train -o "$TMP/m2" --epochs 2 --hidden 8 --seed 5 --threads 1 "$TMP/s.jsonl"
check "deterministic for a seed, whatever the threads" cmp "$TMP/m1" "$TMP/m2"
ip-train -o "$TMP/m3" --epochs 2 --hidden 8 --seed 6 "$TMP/s.jsonl" 2>/dev/null
if cmp -s "$TMP/m1" "$TMP/m3"; then fail "another seed, another model" "identical files"; else ok "another seed, another model"; fi
check_grep "model file has its magic" '^IPKMODEL' <(head -c 8 "$TMP/m1"; echo)
check "standard input works" ip-train -o "$TMP/m4" --epochs 1 --hidden 4 < "$TMP/s.jsonl"

ip-train -o "$TMP/m5" --epochs 5 --hidden 8 --batch 4 --bptt 32 --lr 0.01 --seed 5 --val-users u2,u4 --eval "$TMP/s.jsonl" >"$TMP/eval" 2>"$TMP/err"
check_eq "eval: one record per predictor, window and subset" 24 "$(grep -c '"type":"eval"' "$TMP/eval")"
python3 - "$TMP/eval" >"$TMP/ev.out" 2>&1 <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
preds = sorted({r["predictor"] for r in rows})
assert preds == ["hybrid-histogram", "idle-timer", "logistic", "lstm"], preds
assert sorted({r["window"] for r in rows}) == [5, 10, 30]
assert all(r["users"] == "u2,u4" for r in rows)
timer = [r for r in rows if r["predictor"] == "idle-timer"]
assert all(r["brier"] is None for r in timer), "timer has no brier"
lstm = {(r["window"], r["steps"]): r for r in rows if r["predictor"] == "lstm"}
tim = {(r["window"], r["steps"]): r for r in timer}
for w in (5, 10, 30):
    a = lstm[(w, "all")]
    assert 0 < a["base_rate"] < 1 and a["n"] > 1000
    assert a["n"] == tim[(w, "all")]["n"], "same steps for every predictor"
    assert a["roc_auc"] > 0.8 and a["roc_auc"] > tim[(w, "all")]["roc_auc"] - 0.03, ("lstm roc_auc", w, a["roc_auc"])
    assert 0 <= a["brier"] < 0.25
    assert lstm[(w, "early")]["n"] < a["n"]
print("ok")
PY
check_eq "eval: records complete, the model near or above the timer" ok "$(tail -1 "$TMP/ev.out")"
# the stacked output stage (default) against the network's outputs alone:
# the same network (same seed), fitted on the validation users, so there it
# must not score worse on Brier nor on ROC-AUC over all steps
ip-train -o "$TMP/m5n" --no-stack --epochs 5 --hidden 8 --batch 4 --bptt 32 --lr 0.01 --seed 5 --val-users u2,u4 --eval "$TMP/s.jsonl" >"$TMP/evaln" 2>"$TMP/err"
python3 - "$TMP/eval" "$TMP/evaln" >"$TMP/evs.out" 2>&1 <<'PY'
import json, sys
def lstm(f):
    return {(r["window"], r["steps"]): r for r in map(json.loads, open(f)) if r["predictor"] == "lstm"}
s, n = lstm(sys.argv[1]), lstm(sys.argv[2])
for w in (5, 10, 30):
    a, b = s[(w, "all")], n[(w, "all")]
    assert a["n"] == b["n"]
    assert a["brier"] <= b["brier"] + 1e-9, ("brier", w, a["brier"], b["brier"])
    assert a["roc_auc"] >= b["roc_auc"] - 0.002, ("roc_auc", w, a["roc_auc"], b["roc_auc"])
    assert a["brier"] != b["brier"], "the stage changed nothing"
print("ok")
PY
check_eq "stacked stage: Brier and ROC-AUC on the validation users no worse than the network alone" ok "$(tail -1 "$TMP/evs.out")"
check "predict with the stacked model" ip-predict -v -m "$TMP/m5" "$TMP/s.jsonl"
check_grep "the model says it is stacked" "stacked on validation users; train users u1,u3" "$TMP/.err"
grep -o '"p":{[^}]*}' "$TMP/.out" | head -300 >"$TMP/ps"
check "predict with the --no-stack model" ip-predict -v -m "$TMP/m5n" "$TMP/s.jsonl"
grep -o '"p":{[^}]*}' "$TMP/.out" | head -300 >"$TMP/pn"
if ! grep -q "stacked" "$TMP/.err" && ! cmp -s "$TMP/ps" "$TMP/pn"; then
	ok "--no-stack: not stacked, other probabilities"
else
	fail "--no-stack: not stacked, other probabilities" "$(grep -c stacked "$TMP/.err") mentions; same output"
fi

# cross-fitting: every user a fold, each scored out of fold; the model is
# trained on every user and says so
ip-train -o "$TMP/cf1" --cross-fit --epochs 3 --hidden 8 --seed 5 --eval "$TMP/s.jsonl" >"$TMP/evcf" 2>"$TMP/err"
check_eq "cross-fit: one record per predictor, window and subset" 24 "$(grep -c '"type":"eval"' "$TMP/evcf")"
check "cross-fit again, one thread" ip-train -o "$TMP/cf2" --cross-fit --epochs 3 --hidden 8 --seed 5 --threads 1 "$TMP/s.jsonl"
check "cross-fit: deterministic for a seed, whatever the threads" cmp "$TMP/cf1" "$TMP/cf2"
ip-train -o "$TMP/va" --epochs 1 --hidden 4 --val-users u1,u2 --eval "$TMP/s.jsonl" >"$TMP/eva" 2>/dev/null
ip-train -o "$TMP/vb" --epochs 1 --hidden 4 --val-users u3,u4 --eval "$TMP/s.jsonl" >"$TMP/evb" 2>/dev/null
python3 - "$TMP/evcf" "$TMP/eva" "$TMP/evb" >"$TMP/evcf.out" 2>&1 <<'PY'
import json, sys
def rows(f):
    return {(r["predictor"], r["window"], r["steps"]): r for r in map(json.loads, open(f))}
cf, a, b = rows(sys.argv[1]), rows(sys.argv[2]), rows(sys.argv[3])
assert all(r["users"] == "u1,u2,u3,u4" for r in cf.values())
for w in (5, 10, 30):
    for sub in ("all", "early"):
        k = ("idle-timer", w, sub)
        # every user scored once: the steps of the two halves add up
        assert cf[k]["n"] == a[k]["n"] + b[k]["n"], (k, cf[k]["n"], a[k]["n"], b[k]["n"])
        assert all(cf[(p, w, sub)]["n"] == cf[k]["n"] for p in ("lstm", "hybrid-histogram", "logistic"))
    m = cf[("lstm", w, "all")]
    assert 0 <= m["brier"] < 0.25 and m["roc_auc"] > cf[("idle-timer", w, "all")]["roc_auc"] - 0.03, m
print("ok")
PY
check_eq "cross-fit: every user scored once, out of fold; the model near or above the timer" ok "$(tail -1 "$TMP/evcf.out")"
check "predict with the cross-fitted model" ip-predict -v -m "$TMP/cf1" "$TMP/s.jsonl"
check_grep "the cross-fitted model says how it was made" "over 4 user folds.*stacked on out-of-fold outputs; train users u1,u2,u3,u4; cross-fitted" "$TMP/.err"
# nothing fitted on a user scores it: plant in user u4 alone a field that
# gives its labels away (keys = 1 exactly when the next 5 s are idle). A
# regression that saw u4 scores it perfectly (the control, in sample);
# out of fold, the plant cannot raise the scores over the plain data's.
python3 - "$TMP/s.jsonl" "$TMP/plant.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["session"], []).append(r)
with open(sys.argv[2], "w") as out:
    for rs in by.values():
        for i, r in enumerate(rs):
            fut = [x["events"] for x in rs[i + 1:i + 6]]
            r["keys"] = int(r["user"] == "u4" and len(fut) == 5 and not any(fut))
            out.write(json.dumps(r) + "\n")
PY
grep '"user": "u4"' "$TMP/plant.jsonl" >"$TMP/plant4.jsonl"
ip-train -o "$TMP/cfp" --cross-fit --epochs 2 --hidden 8 --eval "$TMP/plant.jsonl" >"$TMP/evp" 2>/dev/null
ip-train -o "$TMP/cfs" --cross-fit --epochs 2 --hidden 8 --eval "$TMP/s.jsonl" >"$TMP/evs" 2>/dev/null
ip-predict -m "$TMP/vb" --eval --baseline-train "$TMP/plant.jsonl" "$TMP/plant4.jsonl" >"$TMP/evc" 2>/dev/null
python3 - "$TMP/evp" "$TMP/evs" "$TMP/evc" >"$TMP/plant.out" 2>&1 <<'PY'
import json, sys
def roc(f, p):
    return [r["roc_auc"] for r in map(json.loads, open(f))
            if r.get("predictor") == p and r.get("window") == 5 and r.get("steps") == "all"][0]
assert roc(sys.argv[3], "logistic") > 0.99, ("control: in sample", roc(sys.argv[3], "logistic"))
for p in ("logistic", "lstm"):
    assert roc(sys.argv[1], p) < roc(sys.argv[2], p) + 0.01, (p, roc(sys.argv[1], p), roc(sys.argv[2], p))
print("ok")
PY
check_eq "cross-fit: a planted label leak in one user does not reach its out-of-fold scores" ok "$(tail -1 "$TMP/plant.out")"
check_exit "--cross-fit with --val-users: usage" 64 ip-train -o "$TMP/x" --cross-fit --val-users u1 "$TMP/s.jsonl"

# mean_logit_check MIN_STEPS SKIP_TS OUT MEMBER...: "ok" when OUT's
# probabilities are sigmoid(mean logit) of the members' within 2e-5 over
# more than MIN_STEPS steps. Left out: steps of a session's s1 at or before
# SKIP_TS, and steps where a member is within 1e-3 of 0 or 1 (outputs are
# rounded to 6 decimals; there rounding dominates the logit).
mean_logit_check() {
	python3 -c '
import json, math, sys
def load(f):
	return {(r["session"], r["ts"]): r["p"] for r in map(json.loads, open(f)) if r.get("type") == "prediction"}
least, skip = int(sys.argv[1]), float(sys.argv[2])
e, m = load(sys.argv[3]), [load(f) for f in sys.argv[4:]]
lg = lambda p: math.log(p / (1 - p))
n = d = 0
for k, pe in e.items():
	if k[0].endswith("/s1") and k[1] <= skip: continue
	for w, p in pe.items():
		ps = [x[k][w] for x in m]
		if min(ps) < 1e-3 or max(ps) > 1 - 1e-3: continue
		z = sum(map(lg, ps)) / len(ps)
		d = max(d, abs(p - 1 / (1 + math.exp(-z)))); n += 1
print("ok" if n > least and d < 2e-5 else "%d steps, max difference %g" % (n, d))' "$@" 2>&1
}

# the final network is the fold mean by default: with two users, fold u1 is
# exactly the network trained with --val-users u1 (same seed, sequences and
# normalisation), so without the stacked stage the cross-fitted model must
# give sigmoid(mean logit) of the two validation-split models, each reading
# its own normalisation. Left out: the first minute of each user's first
# session, where the previous gap and the user's history are still missing
# and the fold mean imputes them at both users' mean instead of one's.
# The networks are compared: per-user recalibration off (--recalibrate 0).
grep -E '"user":"u[12]"' "$TMP/s.jsonl" >"$TMP/s12.jsonl"
check "cross-fit on two users, fold mean" ip-train -o "$TMP/fm" --cross-fit --epochs 1 --hidden 8 --seed 5 --no-stack "$TMP/s12.jsonl"
for u in u1 u2; do
	ip-train -o "$TMP/fm-$u" --epochs 1 --hidden 8 --seed 5 --val-users $u --no-stack "$TMP/s12.jsonl" 2>/dev/null
	ip-predict --recalibrate 0 -m "$TMP/fm-$u" "$TMP/s12.jsonl" >"$TMP/fm-$u.out" 2>/dev/null
done
check "predict with the fold mean" ip-predict --recalibrate 0 -v -m "$TMP/fm" "$TMP/s12.jsonl"
cp "$TMP/.out" "$TMP/fm.out"
check_grep "the fold mean says what it is" \
	"model lstm-2xh8-l1-.*cross-fitted: every user scored out of fold; final network: the mean of the folds' \(16 units\)" "$TMP/.err"
check_eq "fold mean: the probability is sigmoid(mean logit) of the two folds' networks" ok \
	"$(mean_logit_check 5000 1060 "$TMP/fm.out" "$TMP/fm-u1.out" "$TMP/fm-u2.out")"
check "--final-net refit" ip-train -o "$TMP/rf" --cross-fit --final-net refit --epochs 1 --hidden 8 --seed 5 "$TMP/s12.jsonl"
check "predict with the refitted network" ip-predict -v -m "$TMP/rf" "$TMP/s12.jsonl"
check_grep "--final-net refit: one network, says so" "model lstm-h8-l1-.*final network: refitted on every user \(8 units\)" "$TMP/.err"
if cmp -s "$TMP/rf" "$TMP/fm"; then fail "--final-net refit: another network" "identical files"; else ok "--final-net refit: another network"; fi
check_exit "fold mean past the largest network: usage" 64 ip-train -o "$TMP/x" --cross-fit --hidden 300 "$TMP/s.jsonl"
check_grep "fold mean past the largest network: says why" "4 users x ensemble 1 x hidden 300.*at most 1024 units" "$TMP/.err"
check_exit "--final-net without --cross-fit: usage" 64 ip-train -o "$TMP/x" --final-net refit "$TMP/s.jsonl"
check_exit "--final-net of an unknown kind: usage" 64 ip-train -o "$TMP/x" --cross-fit --final-net median "$TMP/s.jsonl"
check_exit "--cross-fit with --epochs 0: usage" 64 ip-train -o "$TMP/x" --cross-fit --epochs 0 "$TMP/s.jsonl"

# --ensemble: K networks from seeds SEED.. averaged as one. Without the
# stacked stage the model's probability is the network's, so the ensemble
# must give sigmoid(mean logit) of the three networks trained alone from
# seeds 5, 6 and 7 (per-user recalibration off).
for sd in 5 6 7; do
	ip-train -o "$TMP/e$sd" --epochs 2 --hidden 8 --seed $sd --val-users u4 --no-stack "$TMP/s.jsonl" 2>/dev/null
	ip-predict --recalibrate 0 -m "$TMP/e$sd" "$TMP/s.jsonl" >"$TMP/e$sd.out" 2>/dev/null
done
check "--ensemble 3" ip-train -o "$TMP/e3" --epochs 2 --hidden 8 --seed 5 --val-users u4 --no-stack --ensemble 3 "$TMP/s.jsonl"
check "--ensemble 3, one thread" ip-train -o "$TMP/e3b" --epochs 2 --hidden 8 --seed 5 --val-users u4 --no-stack --ensemble 3 \
	--threads 1 "$TMP/s.jsonl"
check "--ensemble: deterministic for a seed, whatever the threads" cmp "$TMP/e3" "$TMP/e3b"
check "predict with the ensemble" ip-predict --recalibrate 0 -v -m "$TMP/e3" "$TMP/s.jsonl"
cp "$TMP/.out" "$TMP/e3.out"
check_grep "--ensemble: the model says what it is" \
	"model lstm-3xh8-l1-.*an ensemble of 3 networks \(seeds 5 to 7, averaged as one of 24 units\)" "$TMP/.err"
check_eq "--ensemble: the ensemble's probability is sigmoid(mean logit) of its members trained alone" ok \
	"$(mean_logit_check 1000 0 "$TMP/e3.out" "$TMP/e5.out" "$TMP/e6.out" "$TMP/e7.out")"
check "--ensemble 2 with --cross-fit" ip-train -o "$TMP/e2cf" --cross-fit --epochs 2 --hidden 8 --seed 5 --ensemble 2 "$TMP/s.jsonl"
check "--ensemble 1 is the plain network, byte for byte" \
	sh -c "ip-train -o '$TMP/e1' --epochs 2 --hidden 8 --seed 5 '$TMP/s.jsonl' && cmp '$TMP/e1' '$TMP/m1'"
check_exit "--ensemble 9: usage" 64 ip-train -o "$TMP/x" --ensemble 9 "$TMP/s.jsonl"
check_exit "--ensemble past the largest network: usage" 64 ip-train -o "$TMP/x" --ensemble 8 --hidden 200 "$TMP/s.jsonl"
check_grep "--ensemble past the largest network: says why" "ensemble 8 x hidden 200.*at most 1024 units" "$TMP/.err"

ip-train -o "$TMP/m6" --epochs 1 --hidden 4 --table "$TMP/s.jsonl" >"$TMP/table" 2>/dev/null
check_grep "table has a header" '^predictor +window +steps' "$TMP/table"
check_grep "table has the hybrid histogram" '^hybrid-histogram +30 +early' "$TMP/table"

check "predict reads the trained model" ip-predict -m "$TMP/m1" "$TMP/s.jsonl"

check_exit "no -o: usage" 64 ip-train "$TMP/s.jsonl"
check_exit "unknown validation user" 64 ip-train -o "$TMP/x" --val-users u9 "$TMP/s.jsonl"
check_grep "unknown validation user named" "'u9'" "$TMP/.err"
check_exit "all users for validation" 64 ip-train -o "$TMP/x" --val-users u1,u2,u3,u4 "$TMP/s.jsonl"
grep '"user":"u1"' "$TMP/s.jsonl" >"$TMP/one.jsonl"
check_exit "one user cannot be split" 65 ip-train -o "$TMP/x" "$TMP/one.jsonl"
check_exit "one user cannot be cross-fitted" 65 ip-train -o "$TMP/x" --cross-fit "$TMP/one.jsonl"
check_exit "windows must ascend" 64 ip-train -o "$TMP/x" --windows 10,5 "$TMP/s.jsonl"
for bad in 5,,10 5,10, ,5 0x10 1e1 -5; do
	check_exit "--windows '$bad': usage" 64 ip-train -o "$TMP/x" --windows "$bad" "$TMP/s.jsonl"
done
printf '# a value ip-train refuses\nip-train.hidden = 0\n' >"$TMP/bad.conf"
check_exit "a bad value in the configuration file: exit 78" 78 ip-train --config "$TMP/bad.conf" -o "$TMP/x" "$TMP/s.jsonl"
check_grep "... naming the file and line" "^ip-train: .*bad.conf:2: invalid value '0' for --hidden" "$TMP/.err"
# bad sample lines: each named (input, line, field) and skipped, or with
# --strict the first one stops the run before any training
{
	head -3 "$TMP/s.jsonl"
	echo '{"type":"sample","v":1,"ts":1,"session":"u1/s1","interval":1,"events":"x"}'
	echo 'not json'
	echo '{"type":"sample","v":1,"ts":1,"session":"u1/s1","interval":-1}'
} >"$TMP/bad.jsonl"
check_exit "bad sample line with --strict: exit 65" 65 ip-train --strict -o "$TMP/x" --epochs 1 --hidden 4 "$TMP/s.jsonl" "$TMP/bad.jsonl"
check_grep "... naming the first bad line and field" "^ip-train: input '.*bad.jsonl' line 4: sample record: field 'events' must be a number$" "$TMP/.err"
check "bad sample lines skipped without --strict" ip-train -o "$TMP/xb" --epochs 1 --hidden 4 "$TMP/s.jsonl" "$TMP/bad.jsonl"
check_eq "... one warning each, naming input and line" "4|5|6" \
	"$(sed -n "s/^ip-train: input '.*bad.jsonl' line \([0-9]\): .*(skipped)$/\1/p" "$TMP/.err" | paste -sd'|')"
rm -f "$TMP/xb"
check_exit "missing input" 66 ip-train -o "$TMP/x" "$TMP/nonexistent"
check_exit "unwritable output" 73 ip-train -o "$TMP/no/such/dir/m" --epochs 1 --hidden 4 "$TMP/s.jsonl"
[ ! -e "$TMP/x" ] && ok "no model left behind by failures" || fail "no model left behind by failures"
