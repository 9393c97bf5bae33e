#!/bin/bash
# ip-migrate --gpu-check and --verify-gpu: the GPU rendering check that the
# receiver of a migration runs after the restore. With an NVIDIA GPU here
# (nvidia-smi lists one, or /dev/nvidia0 exists): the check passes with the
# known checksum of its eight 1024x768 frames, and a pixel corrupted on the
# device fails it (exit 1). Without: exit 69 with the CUDA runtime's reason
# and an "unavailable" record. Everywhere: a build without nvcc reports
# itself unavailable, and the options' usage errors. (The CPU reference and
# the receiver's step are in the unit tests test-gpucheck and
# test-gpucheck-json; the migration itself in t0500's lab.)
. "$(dirname "$0")/lib.sh"
need_cmd ip-migrate python3
# CUDA's runtime maps memory where ASan's shadow gap is.

have_gpu=0
if nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then have_gpu=1; elif [ -e /dev/nvidia0 ]; then have_gpu=1; fi

# field FILE NAME...: the record's fields, space-separated
field() {
	python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).readline())
print(" ".join(str(r.get(k, "-")) for k in sys.argv[2:]))' "$@" 2>&1
}

if [ $have_gpu = 1 ]; then
	check_exit "gpu: --gpu-check exits 0" 0 timeout 120 ip-migrate --gpu-check -v
	cp "$TMP/.out" "$TMP/pass.out"; cp "$TMP/.err" "$TMP/pass.err"
	check_eq "gpu: record type, status, 8 frames of 1024x768, no difference" \
		"gpucheck pass 1024 768 8 6291456 0 0" \
		"$(field "$TMP/pass.out" type status width height frames pixels max_diff bad_pixels)"
	check_eq "gpu: checksum of the GPU's frames is the known one, equal to the CPU's" \
		"c7ec36321a262063 c7ec36321a262063" "$(field "$TMP/pass.out" checksum reference)"
	check_grep "gpu: -v names the device and the kernel time" "^ip-migrate: gpu check on '.+': pass, .*kernel [0-9.]+ ms" "$TMP/pass.err"
	echo "# $(head -c 400 "$TMP/pass.out")" >&2
	IPKIT_GPUCHECK_TEST_CORRUPT=1000 check_exit "gpu: a pixel corrupted on the device: exit 1" 1 timeout 120 ip-migrate --gpu-check
	check_eq "gpu: corrupted: status fail, 1 bad pixel, max difference 128" "fail 1 128" \
		"$(field "$TMP/.out" status bad_pixels max_diff)"
	check_grep "gpu: corrupted: says how many pixels differ" \
		"^ip-migrate: render the gpu check on '.+': 1 of 6291456 pixels differ from the cpu reference" "$TMP/.err"
else
	check_exit "no gpu: --gpu-check exits 69" 69 timeout 60 ip-migrate --gpu-check
	check_eq "no gpu: record says unavailable, with the size it would render" "gpucheck unavailable 6291456" \
		"$(field "$TMP/.out" type status pixels)"
	check_grep "no gpu: message in the house form with CUDA's reason" \
		"^ip-migrate: run the gpu check 'cuda': (no usable GPU: .+|no GPU found|this build has no CUDA support.*)$" "$TMP/.err"
	skip "gpu: the GPU's frames equal the CPU's" "no NVIDIA GPU here"
fi
no_sanitizer_report "--gpu-check: no sanitizer report" "$TMP/.err"

check_exit "usage: --gpu-check with --to" 64 ip-migrate --gpu-check --to tcp://127.0.0.1:1
check_exit "usage: --verify-gpu maybe" 64 ip-migrate --verify-gpu maybe --to tcp://127.0.0.1:1 -d x
check_grep "usage: --verify-gpu names the modes" "invalid --verify-gpu 'maybe' \(auto, yes or no\)" "$TMP/.err"
check_exit "usage: --verify-gpu yes with --engine libvirt" 64 \
	ip-migrate --verify-gpu yes --engine libvirt --target-uri test:///default --to tcp://127.0.0.1:1 -d x

# A build without nvcc: the GPU side reports itself unavailable.
if command -v cc >/dev/null; then
	if cc -std=c11 -O1 -Wall -Wextra -Werror -D_DEFAULT_SOURCE -D_XOPEN_SOURCE=600 -iquote "$IPKIT_TOP/lib" \
		-iquote "$IPKIT_TOP/tests/unit" -o "$TMP/nocuda" "$IPKIT_TOP/tests/unit/test-gpucheck.c" \
		"$IPKIT_TOP/lib/gpucheck.c" "$IPKIT_TOP/lib/ipk.c" -lpthread 2>"$TMP/cc.err"; then
		"$TMP/nocuda" >"$TMP/nocuda.out" 2>&1
		check_eq "no nvcc: the unit test passes" "0 0" "$? $(grep -c '^not ok' "$TMP/nocuda.out")"
		check_grep "no nvcc: unavailable, says the build has no CUDA" \
			"^# unavailable: run the gpu check 'cuda': this build has no CUDA support" "$TMP/nocuda.out"
	else
		fail "no nvcc: test-gpucheck builds with cc alone" "$(head -c 300 "$TMP/cc.err")"
	fi
else
	skip "no nvcc: build without CUDA" "needs cc"
fi
