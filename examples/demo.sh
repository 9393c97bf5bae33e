#!/bin/bash
# make demo: the pipeline end to end on an embedded default.
# Brings up a two-host lab, boots the test guest on host 1, streams the
# guest's samples from both hosts merged with a replayed real client trace
# (the excerpt in tests/data/balabit) into ip-predict for a few seconds, and
# shows the samples and the idle predictions of the default model; then tears
# everything down.
set -euo pipefail
top=${IPKIT_TOP:-$(cd "$(dirname "$0")/.." && pwd)}
bin=${IPKIT_BIN:-$top/build/bin}
export PATH="$bin:$PATH"
lab=$top/examples/lab/ipkit-lab
guest=$top/examples/guest/ipkit-guest
seconds=${IPKIT_DEMO_SECONDS:-8}
trace=${IPKIT_DEMO_TRACE:-$(find "$top/tests/data/balabit" -type f -name 'session_*' | sort | head -1)}

[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces and libvirt hosts)" >&2; exit 77; }
[ -n "$trace" ] || { echo "demo: no trace found under tests/data/balabit" >&2; exit 66; }

export IPKIT_LAB_DIR=${IPKIT_LAB_DIR:-$(mktemp -d /tmp/ipkit-demo.XXXXXX)}
cleanup() {
	echo "== tearing the lab down" >&2
	"$lab" down >&2 || true
	rm -rf "$IPKIT_LAB_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== bringing up two libvirt hosts in network namespaces" >&2
"$lab" up 2 >&2
eval "$("$lab" env)"
echo "== booting the test guest on host 1 ($IPKIT_LAB_URI_1)" >&2
"$guest" define "$IPKIT_LAB_URI_1" demo-vm --mem 192 --fill 96 --dirty 2 --ip 10.0.2.15/24 >&2
"$guest" start "$IPKIT_LAB_URI_1" demo-vm >&2
"$guest" wait-heartbeat "$IPKIT_LAB_URI_1" demo-vm 2 60 >&2
"$guest" verify "$IPKIT_LAB_URI_1" demo-vm >&2

echo "== $seconds s of samples: guest 'demo-vm' is session vdi-demo, merged with the client trace" >&2
echo "   $(basename "$(dirname "$trace")")/$(basename "$trace") replayed at recorded pace, into ip-predict" >&2
samples=$IPKIT_LAB_DIR/samples.jsonl
ip-collect -c "$IPKIT_LAB_URI_1" -c "$IPKIT_LAB_URI_2" --map demo-vm=vdi-demo \
	--replay "vdi-demo=$trace" --count "$seconds" | tee "$samples" | ip-predict >"$IPKIT_LAB_DIR/predictions.jsonl"
echo "== samples (ip-collect)" >&2
cat "$samples"
echo "== predictions (ip-predict, default model)" >&2
cat "$IPKIT_LAB_DIR/predictions.jsonl"
[ "$(wc -l <"$samples")" -gt 0 ] && [ "$(wc -l <"$IPKIT_LAB_DIR/predictions.jsonl")" -gt 0 ] || { echo "demo: no records" >&2; exit 1; }
echo "== done" >&2
