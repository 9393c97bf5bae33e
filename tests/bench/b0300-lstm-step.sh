#!/bin/bash
# b0300-lstm-step: streaming LSTM inference on one core, input 16, hidden 32:
# session-steps per second at 1, 1,024 and 65,536 concurrent sessions
# (`ip-predict --bench`, one batched ipk_lstm_step() call per step) against
# PyTorch's nn.LSTMCell (Debian's python3-torch, torch.set_num_threads(1),
# no_grad, same batch sizes) in the same run; memory per session; the
# shipped default model's own network at 1,024 sessions (information: its
# shape is the model's, not the reference's); and, when the shared data set
# is there, ip-train's time per epoch on it.
set -u
top=${IPKIT_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${IPKIT_BIN:-$top/build/bin}
name=lstm-step
[ -x "$bin/ip-predict" ] || { echo "skip b0300-$name: $bin/ip-predict not built (make build/bin/ip-predict)"; exit 0; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ipkit-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
sizes=${BENCH_SESSIONS:-1,1024,65536}

taskset -c 0 true 2>/dev/null && pin="taskset -c 0" || pin=""
$pin "$bin/ip-predict" --bench "$sizes" >"$tmp/c.jsonl" 2>"$tmp/err" ||
	{ echo "bench b0300-$name failed: $(head -c 300 "$tmp/err")"; exit 1; }

torch=none
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
	$pin /usr/bin/python3 - "$sizes" >"$tmp/t.jsonl" 2>"$tmp/terr" <<'PY' && torch=ok || torch=failed
import json, sys, time
import torch
torch.set_num_threads(1)
torch.manual_seed(0)
cell = torch.nn.LSTMCell(16, 32)
head = torch.nn.Linear(32, 3)
with torch.no_grad():
    for n in map(int, sys.argv[1].split(",")):
        xs = [torch.rand(n, 16) * 2 - 1 for _ in range(4)]
        h = torch.zeros(n, 32); c = torch.zeros(n, 32)
        h, c = cell(xs[0], (h, c)); torch.sigmoid(head(h))
        steps = 0; t0 = time.perf_counter()
        while True:
            calls = max(1, 4096 // n)
            for _ in range(calls):
                h, c = cell(xs[steps % 4], (h, c))
                p = torch.sigmoid(head(h))
                steps += 1
            t = time.perf_counter() - t0
            if t >= 1.0:
                break
        print(json.dumps({"sessions": n, "steps_per_s": steps * n / t}))
PY
fi

# the default model's network (a fold mean: block-diagonal, see ip-train(1))
model=null
if [ -f "$top/models/default.ipkm" ] &&
	$pin "$bin/ip-predict" -m "$top/models/default.ipkm" --bench 1024 >"$tmp/m.jsonl" 2>/dev/null; then
	model=$(cat "$tmp/m.jsonl")
fi

# the GPU path at 1M sessions, when this machine has one
cuda=null
if "$bin/ip-predict" --device cuda --bench 1048576 >"$tmp/g.jsonl" 2>/dev/null; then
	cuda=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["steps_per_s"])' "$tmp/g.jsonl")
fi

epoch=null
data=$top/../shared/data/balabit-mouse
if [ -d "$data" ] && [ -x "$bin/ip-collect" ] && [ -x "$bin/ip-train" ]; then
	for u in user7 user12 user16 user20 user23 user29; do
		"$bin/ip-collect" -q --replay "$data/$u" --speed 0 --start 1700000000
	done >"$tmp/s.jsonl"
	"$bin/ip-train" -v -o "$tmp/m" --epochs 2 --batch 8 --val-users user29 --no-baselines "$tmp/s.jsonl" >/dev/null 2>"$tmp/terr2" &&
		epoch=$(sed -n 's/.* \([0-9.]*\) s per epoch$/\1/p' "$tmp/terr2")
	[ -n "$epoch" ] || epoch=null
fi

python3 - "$tmp/c.jsonl" "$tmp/t.jsonl" "$torch" "$epoch" "$name" "$cuda" "$model" <<'PY'
import json, sys
c = [json.loads(l) for l in open(sys.argv[1])]
t = {}
if sys.argv[3] == "ok":
    t = {r["sessions"]: r["steps_per_s"] for r in map(json.loads, open(sys.argv[2]))}
out = {"bench": sys.argv[5], "n_in": 16, "hidden": 32, "threads": 1, "kernel": c[0]["kernel"],
       "state_bytes_per_session": c[0]["state_bytes"], "predictor_bytes_per_session": c[0]["session_bytes"],
       "train_s_per_epoch": None if sys.argv[4] == "null" else float(sys.argv[4]), "torch": sys.argv[3], "sizes": [],
       "cuda_1m_steps_per_s": None if sys.argv[6] == "null" else float(sys.argv[6]),
       "default_model": None if sys.argv[7] == "null" else json.loads(sys.argv[7])}
for r in c:
    n = r["sessions"]
    row = {"sessions": n, "ipkit_steps_per_s": r["steps_per_s"]}
    if n in t:
        row["torch_steps_per_s"] = round(t[n])
        row["ratio"] = round(r["steps_per_s"] / t[n], 2)
    out["sizes"].append(row)
print(json.dumps(out))
for row in out["sizes"]:
    tt = " vs torch LSTMCell %.0f/s: %.2fx" % (row["torch_steps_per_s"], row["ratio"]) if "ratio" in row else " (torch: %s)" % sys.argv[3]
    print("lstm step, %6d sessions: ipkit %.0f session-steps/s%s" % (row["sessions"], row["ipkit_steps_per_s"], tt))
dm = out["default_model"]
if dm:
    print("lstm step of the default model %s (input %d, hidden %d), %d sessions: %.0f session-steps/s" % (
        dm["model"], dm["n_in"], dm["hidden"], dm["sessions"], dm["steps_per_s"]))
if out["cuda_1m_steps_per_s"]:
    print("lstm step on the GPU, 1048576 sessions: %.0f session-steps/s" % out["cuda_1m_steps_per_s"])
print("memory per session: LSTM state %d B, ip-predict session %d B; training %s s per epoch (6 users, batch 8 as make model, 2 threads)" % (
    out["state_bytes_per_session"], out["predictor_bytes_per_session"], sys.argv[4]))
PY
