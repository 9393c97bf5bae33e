#!/bin/bash
# ip-collect --gpu: NVML loaded with dlopen. With a real NVML (a machine with
# an NVIDIA driver) the fields must be there; without it --gpu alone exits 69
# and next to other sources it falls back with a warning and omits the
# fields. A test double of libnvidia-ml.so.1 built here (clearly not NVML: it
# checks ipkit's side only - symbol loading, GPU-to-session mapping by index,
# PCI bus id and UUID, merging, absent-not-zero, init failure) runs
# everywhere a C compiler does.
. "$(dirname "$0")/lib.sh"
need_cmd ip-collect python3 timeout

have_nvml=0
python3 -c 'import ctypes; ctypes.CDLL("libnvidia-ml.so.1")' 2>/dev/null && have_nvml=1

# --- A real NVML ---------------------------------------------------------------
if [ $have_nvml = 1 ]; then
	check_exit "real NVML: --gpu alone exits 0" 0 timeout 30 ip-collect --gpu -i 0.5 -n 2
	cp "$TMP/.out" "$TMP/real.out"
	if python3 -c '
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
ok = len(r) >= 2 and all(0 <= x["gpu"] <= 1 and x["gpu_mem_bytes"] > 0 and x["sources"] == ["nvml"] for x in r)
sys.exit(not ok)' "$TMP/real.out" 2>/dev/null; then
		ok "real NVML: every sample has gpu in 0..1 and gpu_mem_bytes > 0"
	else
		fail "real NVML: every sample has gpu in 0..1 and gpu_mem_bytes > 0" "$(head -c 300 "$TMP/real.out")"
	fi
else
	skip "real NVML: fields present" "libnvidia-ml.so.1 cannot be loaded here (no NVIDIA driver)"
fi

# --- Without NVML ------------------------------------------------------------------
if [ $have_nvml = 0 ]; then
	check_exit "no NVML: --gpu alone exits 69" 69 ip-collect --gpu -n 1
	check_grep "no NVML: says what was tried" \
		"^ip-collect: nvml unavailable: cannot load 'libnvidia-ml.so.1': .*(No such file|cannot open)" "$TMP/.err"
	# Two sample records to replay next to --gpu.
	printf '%s\n' '{"type":"sample","v":1,"ts":100,"session":"s1","interval":0.25,"events":3}' \
		'{"type":"sample","v":1,"ts":100.25,"session":"s1","interval":0.25,"events":4}' >"$TMP/trace.jsonl"
	timeout 30 ip-collect --gpu --replay "$TMP/trace.jsonl" -i 0.25 -v >"$TMP/fb.out" 2>"$TMP/fb.err"
	check_eq "no NVML, with a replay: exit 0" 0 "$?"
	check_grep "no NVML, with a replay: warning" "^ip-collect: nvml unavailable: cannot load" "$TMP/fb.err"
	check_grep "no NVML, with a replay: -v says it falls back" "^ip-collect: --gpu falls back to no GPU data" "$TMP/fb.err"
	check_eq "no NVML, with a replay: replayed events, no gpu field" "3 4 0" \
		"$(python3 -c '
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
print(" ".join(str(x["events"]) for x in r), sum(("gpu" in x) + ("gpu_mem_bytes" in x) for x in r))' "$TMP/fb.out" 2>&1)"
	timeout 30 ip-collect --gpu --replay "$TMP/trace.jsonl" -i 0.25 >/dev/null 2>"$TMP/fb2.err"
	if grep -q "falls back" "$TMP/fb2.err"; then fail "no NVML: 'falls back' only with -v" "$(cat "$TMP/fb2.err")"; else
		ok "no NVML: 'falls back' only with -v"; fi
	no_sanitizer_report "no NVML: no sanitizer report" "$TMP/fb.err"
else
	skip "no NVML: --gpu alone exits 69" "NVML is present on this machine"
fi

# --- The test double -------------------------------------------------------------------
if ! command -v cc >/dev/null; then
	skip "NVML test double" "needs cc"
	exit 0
fi
mkdir -p "$TMP/lib"
cat >"$TMP/nvml-double.c" <<'EOF'
/* A stand-in for libnvidia-ml.so.1 with three fixed GPUs: NOT NVIDIA's
 * library, only the entry points ip-collect loads, with NVML's ABI. */
#include <stdlib.h>
#include <string.h>
typedef struct { unsigned int gpu, memory; } util_t;
typedef struct { unsigned long long total, free, used; } mem_t;
typedef struct { char busIdLegacy[16]; unsigned int domain, bus, device, pciDeviceId, pciSubSystemId; char busId[32]; } pci_t;
static const struct { const char *bus, *uuid; int util; unsigned long long used; } gpus[3] = {
	{ "00000000:3B:00.0", "GPU-aaaa-0000", 50, 1ull << 30 },
	{ "00000000:AF:00.0", "GPU-bbbb-1111", 20, 2ull << 30 },
	{ "00000000:D8:00.0", "GPU-cccc-2222", -1, 3ull << 30 }, /* MIG: no utilisation */
};
int nvmlInit_v2(void) { return getenv("NVML_DOUBLE_INIT_FAIL") ? 9 : 0; }
int nvmlShutdown(void) { return 0; }
const char *nvmlErrorString(int r) { return r == 9 ? "Driver Not Loaded" : r == 3 ? "Not Supported" : "Unknown Error"; }
int nvmlDeviceGetCount_v2(unsigned int *n) { *n = 3; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **h) { if (i >= 3) return 2; *h = (void *)&gpus[i]; return 0; }
static int idx(void *h) { return (int)(((char *)h - (char *)gpus) / sizeof(gpus[0])); }
int nvmlDeviceGetPciInfo_v3(void *h, pci_t *p) { memset(p, 0, sizeof(*p)); strcpy(p->busId, gpus[idx(h)].bus); return 0; }
int nvmlDeviceGetUUID(void *h, char *buf, unsigned int n) { strncpy(buf, gpus[idx(h)].uuid, n); return 0; }
int nvmlDeviceGetUtilizationRates(void *h, util_t *u) { if (gpus[idx(h)].util < 0) return 3; u->gpu = (unsigned)gpus[idx(h)].util; u->memory = 0; return 0; }
int nvmlDeviceGetMemoryInfo(void *h, mem_t *m) { m->used = gpus[idx(h)].used; m->total = 80ull << 30; m->free = m->total - m->used; return 0; }
EOF
if ! cc -shared -fPIC -o "$TMP/lib/libnvidia-ml.so.1" "$TMP/nvml-double.c" 2>"$TMP/cc.err"; then
	fail "NVML test double builds" "$(head -c 300 "$TMP/cc.err")"
	exit 0
fi
# summarise FILE: "SESSION gpu=.. gpu_mem_gib=.." per sample of the first interval.
summ() {
	python3 -c '
import json, sys
for x in [json.loads(l) for l in open(sys.argv[1])]:
    print(x["session"], " ".join(f for f in ["gpu=%g" % x["gpu"] if "gpu" in x else "",
          "gpu_mem_gib=%g" % (x["gpu_mem_bytes"] / 2**30) if "gpu_mem_bytes" in x else ""] if f))' "$1" | sort -u
}
export LD_LIBRARY_PATH=$TMP/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
timeout 30 ip-collect --gpu -i 0.2 -n 2 --map 0000:3b:00.0=alice --map gpu-BBBB-1111=alice --map guest1=bob \
	>"$TMP/d.out" 2>"$TMP/d.err"
check_eq "double: exit 0" 0 "$?"
check_eq "double: PCI id (short domain, any case) and UUID map to a session; max utilisation, summed memory; \
unmapped GPU is gpuN; no utilisation stays absent" "alice gpu=0.5 gpu_mem_gib=3
gpu2 gpu_mem_gib=3" "$(summ "$TMP/d.out")"
timeout 30 ip-collect --gpu -i 0.2 -n 1 --map 1=carol --session desk >"$TMP/d2.out" 2>>"$TMP/d.err"
check_eq "double: index maps, the rest go to --session" "carol gpu=0.2 gpu_mem_gib=2
desk gpu=0.5 gpu_mem_gib=4" "$(summ "$TMP/d2.out")"
no_sanitizer_report "double: no sanitizer report" "$TMP/d.err"
NVML_DOUBLE_INIT_FAIL=1 check_exit "double: init failure, --gpu alone exits 69" 69 ip-collect --gpu -n 1
check_grep "double: init failure message names nvmlInit_v2 and NVML's reason" \
	"nvml unavailable: nvmlInit_v2 failed: Driver Not Loaded" "$TMP/.err"
