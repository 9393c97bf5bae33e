#!/bin/bash
# b0400-delta: ip-delta encode/apply on a synthetic memory image pair against
# `zstd -1 --long=31 --patch-from` and `xdelta3 -e -s`, same files, same run.
#
# The pair (IPKIT_BENCH_MB MiB, default 256): BASE is 4 KiB pages, 30 % zero,
# 40 % text-like (compressible), 30 % random; NEW changes 2 % of the pages:
# half rewritten whole with new random data, half with 64 bytes changed at a
# 16-byte offset (how malloc'd buffers touch pages). Each figure is the best
# of IPKIT_BENCH_RUNS (default 3) runs with the files in the page cache; peak
# memory is the maximum RSS of one run (GNU time), CPU the user+sys seconds of
# the fastest run. With IPKIT_BENCH_BASE and IPKIT_BENCH_NEW set, that pair
# (e.g. two live snapshots of the lab guest) is used instead. ip-delta's apply
# is timed writing to a file (synced, renamed) and to stdout. Prints one JSON
# line {"bench":"delta",...} and a table.
set -u
top=${IPKIT_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${IPKIT_BIN:-$top/build/bin}
name=delta
mb=${IPKIT_BENCH_MB:-256}
runs=${IPKIT_BENCH_RUNS:-3}
[ -x "$bin/ip-delta" ] || { echo "skip b0400-$name: $bin/ip-delta not built (make build/bin/ip-delta)"; exit 0; }
for c in python3 zstd xdelta3 /usr/bin/time; do
	command -v "$c" >/dev/null || { echo "skip b0400-$name: needs $c"; exit 0; }
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ipkit-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if [ -n "${IPKIT_BENCH_BASE:-}" ] && [ -n "${IPKIT_BENCH_NEW:-}" ]; then
	ln -s "$(realpath "$IPKIT_BENCH_BASE")" "$tmp/base"
	ln -s "$(realpath "$IPKIT_BENCH_NEW")" "$tmp/new"
	mb=$(($(stat -L -c %s "$tmp/new") >> 20))
else
python3 - "$tmp/base" "$tmp/new" "$mb" <<'PY'
import os, random, sys
base, new, mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(42)
n = mb * 256
words = [b"session ", b"frame ", b"render ", b"idle ", b"0x7f3a ", b"\x00\x00\x00\x01", b"texture ", b"client "]
text = b"".join(rng.choice(words) for _ in range(4096))  # a pool to slice text pages from
pages = []
kind = []
for i in range(n):
    r = rng.random()
    if r < 0.3:
        pages.append(bytes(4096)); kind.append(0)
    elif r < 0.7:
        o = rng.randrange(len(text) - 4096)
        pages.append(text[o:o + 4096]); kind.append(1)
    else:
        pages.append(rng.randbytes(4096)); kind.append(2)
with open(base, "wb") as f:
    f.write(b"".join(pages))
for i in rng.sample(range(n), n // 50):
    if rng.random() < 0.5:
        pages[i] = rng.randbytes(4096) if kind[i] == 2 else text[:4096]
    else:
        p = bytearray(pages[i]); p[16:80] = rng.randbytes(64); pages[i] = bytes(p)
with open(new, "wb") as f:
    f.write(b"".join(pages))
PY
fi
cat "$tmp/base" "$tmp/new" >/dev/null

# best wall time, max RSS (KiB) and CPU seconds of the best of $runs runs:
# "SECONDS KIB CPU"
measure() {
	local best="" rss=0 cpu="" i t r u s
	for ((i = 0; i < runs; i++)); do
		/usr/bin/time -f '%e %M %U %S' -o "$tmp/time" "$@" >/dev/null 2>"$tmp/err" || { echo "fail 0 0"; cat "$tmp/err" >&2; return; }
		read -r t r u s <"$tmp/time"
		if [ -z "$best" ] || awk -v a="$t" -v b="$best" 'BEGIN{exit !(a<b)}'; then
			best=$t cpu=$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u + s}')
		fi
		[ "$r" -gt "$rss" ] && rss=$r
	done
	echo "$best $rss $cpu"
}
size() { stat -c %s "$1"; }

read -r ip1_t ip1_m ip1_c < <(measure "$bin/ip-delta" -j 1 -q --record /dev/null "$tmp/base" "$tmp/new" -o "$tmp/d1")
read -r ip2_t ip2_m ip2_c < <(measure "$bin/ip-delta" -j 2 -q --record /dev/null "$tmp/base" "$tmp/new" -o "$tmp/d2")
read -r ipa_t ipa_m ipa_c < <(measure "$bin/ip-delta" --apply -q --record /dev/null "$tmp/base" "$tmp/d2" -o "$tmp/out-ip")
read -r ips_t ips_m ips_c < <(measure "$bin/ip-delta" --apply -q "$tmp/base" "$tmp/d2" -o -)
cmp -s "$tmp/d1" "$tmp/d2" || echo "b0400: 1- and 2-thread deltas differ" >&2
cmp -s "$tmp/out-ip" "$tmp/new" || { echo "bench b0400-$name: ip-delta output differs from NEW"; exit 1; }
read -r zs_t zs_m zs_c < <(measure zstd -q -f -1 --long=31 --patch-from="$tmp/base" "$tmp/new" -o "$tmp/z")
read -r zd_t zd_m zd_c < <(measure zstd -q -f -d --long=31 --patch-from="$tmp/base" "$tmp/z" -o "$tmp/out-z")
cmp -s "$tmp/out-z" "$tmp/new" || echo "b0400: zstd output differs" >&2
xd_runs=$runs; runs=1 # xdelta3 is slow: one run
read -r xs_t xs_m xs_c < <(measure xdelta3 -f -e -s "$tmp/base" "$tmp/new" "$tmp/x")
read -r xd_t xd_m xd_c < <(measure xdelta3 -f -d -s "$tmp/base" "$tmp/x" "$tmp/out-x")
runs=$xd_runs
ip_s=$(size "$tmp/d2") z_s=$(size "$tmp/z") x_s=$(size "$tmp/x")

r() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b + 0 == 0) print "null"; else printf "%.2f", a / b }'; }
printf '{"bench":"%s","mb":%d,"ip_encode_s_1t":%s,"ip_encode_s_2t":%s,"ip_encode_cpu_1t":%s,"ip_encode_cpu_2t":%s,"ip_apply_s":%s,"ip_apply_stdout_s":%s,"ip_bytes":%d,"ip_rss_kib":%d,"ip_apply_rss_kib":%d,"zstd_encode_s":%s,"zstd_decode_s":%s,"zstd_bytes":%d,"zstd_rss_kib":%d,"xdelta3_encode_s":%s,"xdelta3_decode_s":%s,"xdelta3_bytes":%d,"speedup_2t":%s,"encode_vs_zstd":%s,"encode_vs_xdelta3":%s,"apply_vs_zstd":%s,"size_vs_zstd":%s,"rss_vs_zstd":%s}\n' \
	"$name" "$mb" "$ip1_t" "$ip2_t" "$ip1_c" "$ip2_c" "$ipa_t" "$ips_t" "$ip_s" "$ip2_m" "$ipa_m" "$zs_t" "$zd_t" "$z_s" "$zs_m" "$xs_t" "$xd_t" "$x_s" \
	"$(r "$ip1_t" "$ip2_t")" "$(r "$zs_t" "$ip2_t")" "$(r "$xs_t" "$ip2_t")" "$(r "$zd_t" "$ips_t")" "$(r "$ip_s" "$z_s")" "$(r "$ip2_m" "$zs_m")"
f='%-31s %9s %9s %9s %12s %10s\n'
printf "$f" "$mb MiB pair" "encode s" "enc CPU" "apply s" "bytes" "RSS KiB"
printf "$f" "ip-delta -j1" "$ip1_t" "$ip1_c" "" "$(size "$tmp/d1")" "$ip1_m"
printf "$f" "ip-delta -j2 (apply to stdout)" "$ip2_t" "$ip2_c" "$ips_t" "$ip_s" "$ip2_m"
printf "$f" "ip-delta apply to file (fsync)" "" "" "$ipa_t" "" "$ipa_m"
printf "$f" "zstd -1 --long=31 --patch-from" "$zs_t" "$zs_c" "$zd_t" "$z_s" "$zs_m"
printf "$f" "xdelta3 -e -s" "$xs_t" "$xs_c" "$xd_t" "$x_s" "$xs_m"
