#!/bin/sh
# make-model.sh - train the default model (models/default.ipkm) from the
# shared Balabit mouse data set; run by `make model`.
#
# The data set's users are split three ways: training users (the LSTM, the
# normalisation and the logistic regression of the stacked output stage),
# one validation user (the epoch, the stacking regression of each window and
# the thresholds) and the held-out users 15 and 21, never seen by training
# or selection, on which the model is evaluated. Every step
# is deterministic (fixed replay start, fixed seed), so two runs write the
# same bytes. Environment (all optional):
#   IPKIT_BIN    programs (default build/bin)
#   MODEL_DATA   the data set (default ../shared/data/balabit-mouse)
#   MODEL_OUT    the model file (default models/default.ipkm)
#   MODEL_USERS  training and validation users
#   MODEL_VAL    validation user(s), comma-separated (default user29)
#   MODEL_SEED   seed (default 1)
#   MODEL_ARGS   more ip-train options (default: the configuration chosen by
#                cross-validation over the training users, "--epochs 16 --batch 8";
#                the stacked output stage is on unless --no-stack is given)
set -eu
bin=${IPKIT_BIN:-build/bin}
data=${MODEL_DATA:-../shared/data/balabit-mouse}
out=${MODEL_OUT:-models/default.ipkm}
users=${MODEL_USERS:-user7 user12 user16 user20 user23 user29}
val=${MODEL_VAL:-user29}
seed=${MODEL_SEED:-1}
args=${MODEL_ARGS---epochs 16 --batch 8}

if [ ! -d "$data" ]; then
	echo "make model: skipped: the training data $data (the shared Balabit mouse data set) is absent; models/default.ipkm is unchanged"
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
for u in $users; do
	[ -d "$data/$u" ] || { echo "make model: no user $u in $data" >&2; exit 66; }
	"$bin/ip-collect" -q --replay "$data/$u" --speed 0 --start 1700000000
done >"$tmp/samples.jsonl"
echo "make model: $(wc -l <"$tmp/samples.jsonl") samples of $users; validation $val; seed $seed"
# shellcheck disable=SC2086
"$bin/ip-train" -v -o "$out" --seed "$seed" --val-users "$val" $args "$tmp/samples.jsonl"
echo "make model: wrote $out"
