#!/bin/sh
# make-model.sh - train the default model (models/default.ipkm) from the
# shared Balabit mouse data set; run by `make model`.
#
# The held-out users 15 and 21 are never replayed here: nothing in training
# or selection sees them, and the model is evaluated on them. The six other
# users are cross-fitted by user (ip-train --cross-fit): for each of them, a
# network (its outputs kept after every epoch), the logistic regression, the
# idle-gap histogram and the normalisation are fitted on the five others and
# predict it. The mean of the six folds' scores chooses the epoch; the
# stacking regression of each window and the decision thresholds are fitted
# on the six users' out-of-fold outputs; the final regression, histogram
# and normalisation are refitted on all six users and keep those stacking
# weights, and the final network is the mean of the six folds' networks at
# the chosen epoch (ip-train --final-net mean, one network of 6 x 32
# units). Every step is deterministic (fixed replay start, fixed seed), so
# two runs write the same bytes.
# Environment (all optional):
#   IPKIT_BIN    programs (default build/bin)
#   MODEL_DATA   the data set (default ../shared/data/balabit-mouse)
#   MODEL_OUT    the model file (default models/default.ipkm)
#   MODEL_USERS  the users trained on (default user7 user12 user16 user20
#                user23 user29)
#   MODEL_VAL    validation user(s), comma-separated: when set, no
#                cross-fitting; the others train and these choose the epoch,
#                the stacking stage and the thresholds (the method before
#                cross-fitting)
#   MODEL_SEED   seed (default 1)
#   MODEL_ARGS   more ip-train options (default "--epochs 16 --batch 8", the
#                configuration chosen earlier by validation on non-test
#                users; the stacked output stage is on unless --no-stack)
set -eu
bin=${IPKIT_BIN:-build/bin}
data=${MODEL_DATA:-../shared/data/balabit-mouse}
out=${MODEL_OUT:-models/default.ipkm}
users=${MODEL_USERS:-user7 user12 user16 user20 user23 user29}
val=${MODEL_VAL:-}
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
if [ -n "$val" ]; then
	split="--val-users $val"
	echo "make model: $(wc -l <"$tmp/samples.jsonl") samples of $users; validation $val; seed $seed"
else
	split=--cross-fit
	echo "make model: $(wc -l <"$tmp/samples.jsonl") samples of $users; cross-fitted by user; seed $seed"
fi
# shellcheck disable=SC2086
"$bin/ip-train" -v --table -o "$out" --seed "$seed" $split $args "$tmp/samples.jsonl"
echo "make model: wrote $out"
