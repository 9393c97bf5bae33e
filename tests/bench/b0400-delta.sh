#!/bin/bash
# b0400-delta: the benchmark of issue 4, peers measured in the same run on the
# same files.
#
# Pairs: by default, made in this run with the lab's test guest (needs root,
# libvirt, qemu, busybox-static and a Debian kernel; otherwise it says why and
# falls back to a synthetic pair): two 1 GiB TCG guests with 768 MiB filled by
# the renderer, one rewriting 1 %/s of its pages (idle) and one 10 %/s
# (busy); for each, two live snapshots (virsh snapshot-create-as --live)
# IPKIT_BENCH_GAP seconds apart (default 10). With IPKIT_BENCH_BASE and
# IPKIT_BENCH_NEW set, that pair is used instead; IPKIT_BENCH_SYNTHETIC=1
# uses a synthetic pair of IPKIT_BENCH_MB MiB (default 256).
#
# IPKIT_BENCH_KEEP=DIR keeps the lab pairs made in this run in DIR (as
# idle-a.save idle-b.save busy-a.save busy-b.save) for IPKIT_BENCH_BASE/NEW.
#
# Per pair: ip-delta encode (1 and 2 threads, default codec and level) and
# apply (to stdout and to a file, synced), and once the encode at --level 5,
# against `zstd -1 --long=31 --patch-from` and `xdelta3 -e -s`:
# wall seconds (best of IPKIT_BENCH_RUNS, default 3; xdelta3 once), CPU
# seconds, bytes, peak RSS (GNU time); every output is checked against NEW.
# One JSON line {"bench":"delta",...} per pair and a table with each figure,
# the peer's and the ratio. Then, on the idle guest (still running):
# `ip-snapshot --live` into an ipkit image against `virsh snapshot-create-as
# --live` followed by `lz4 -1` of its file, one JSON line {"bench":"snapshot"}.
# Scratch files go to $TMPDIR (default /var/tmp): about 6 GB for the lab pairs.
set -u
top=${IPKIT_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${IPKIT_BIN:-$top/build/bin}
runs=${IPKIT_BENCH_RUNS:-3}
gap=${IPKIT_BENCH_GAP:-10}
[ -x "$bin/ip-delta" ] || { echo "skip b0400-delta: $bin/ip-delta not built (make build/bin/ip-delta)"; exit 0; }
for c in python3 zstd xdelta3 lz4 /usr/bin/time; do
	command -v "$c" >/dev/null || { echo "skip b0400-delta: needs $c"; exit 0; }
done
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/ipkit-bench.XXXXXX")
LAB=$top/examples/lab/ipkit-lab
G=$top/examples/guest/ipkit-guest
lab_up=0
cleanup() {
	[ "$lab_up" = 1 ] && "$LAB" down >/dev/null 2>&1
	rm -rf "$tmp"
}
trap cleanup EXIT

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
size() { stat -L -c %s "$1"; }
r() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b + 0 == 0) print "null"; else printf "%.2f", a / b }'; }
load() { cut -d' ' -f1 /proc/loadavg; }

# bench_pair NAME BASE NEW
bench_pair() {
	local name=$1 base=$2 new=$3 mb d=$tmp/$1
	mb=$(($(size "$new") >> 20))
	cat "$base" "$new" >/dev/null
	local l0; l0=$(load)
	read -r ip1_t ip1_m ip1_c < <(measure "$bin/ip-delta" -j 1 -q --record /dev/null "$base" "$new" -o "$d.ip1")
	read -r ip2_t ip2_m ip2_c < <(measure "$bin/ip-delta" -j 2 -q --record /dev/null "$base" "$new" -o "$d.ip")
	"$bin/ip-delta" -q --record "$d.rec" "$base" "$new" -o "$d.ip"
	read -r ips_t ips_m ips_c < <(measure "$bin/ip-delta" --apply -q "$base" "$d.ip" -o -)
	read -r ipa_t ipa_m ipa_c < <(measure "$bin/ip-delta" --apply -q --record /dev/null "$base" "$d.ip" -o "$d.out")
	local keep5=$runs
	runs=1
	read -r ip5_t ip5_m ip5_c < <(measure "$bin/ip-delta" -j 2 -q --level 5 --record /dev/null "$base" "$new" -o "$d.ip5")
	runs=$keep5
	local ip5_s; ip5_s=$(size "$d.ip5")
	"$bin/ip-delta" --apply -q --record /dev/null "$base" "$d.ip5" -o - | cmp -s - "$new" || echo "b0400 $name: --level 5 delta does not apply to NEW" >&2
	rm -f "$d.ip5"
	cmp -s "$d.ip1" "$d.ip" || echo "b0400 $name: 1- and 2-thread deltas differ" >&2
	cmp -s "$d.out" "$new" || { echo "bench b0400-$name: ip-delta output differs from NEW"; exit 1; }
	rm -f "$d.out" "$d.ip1"
	read -r zs_t zs_m zs_c < <(measure zstd -q -f -1 --long=31 --patch-from="$base" "$new" -o "$d.z")
	read -r zd_t zd_m zd_c < <(measure zstd -q -d -c --long=31 --patch-from="$base" "$d.z")
	zstd -q -d -f --long=31 --patch-from="$base" "$d.z" -o "$d.out" && cmp -s "$d.out" "$new" || echo "b0400 $name: zstd output differs" >&2
	rm -f "$d.out"
	local keep=$runs
	runs=1 # xdelta3 is slow: one run
	read -r xs_t xs_m xs_c < <(measure xdelta3 -f -e -s "$base" "$new" "$d.x")
	read -r xd_t xd_m xd_c < <(measure xdelta3 -f -d -s "$base" "$d.x" "$d.out")
	runs=$keep
	cmp -s "$d.out" "$new" || echo "b0400 $name: xdelta3 output differs" >&2
	rm -f "$d.out"
	local ip_s z_s x_s l1 pages dict xor zst
	ip_s=$(size "$d.ip") z_s=$(size "$d.z") x_s=$(size "$d.x") l1=$(load)
	pages=$(grep -o '"pages_changed":[0-9]*' "$d.rec" | cut -d: -f2)
	dict=$(grep -o '"pages_dict":[0-9]*' "$d.rec" | cut -d: -f2)
	xor=$(grep -o '"pages_xor":[0-9]*' "$d.rec" | cut -d: -f2)
	zst=$(grep -o '"pages_zstd":[0-9]*' "$d.rec" | cut -d: -f2)
	printf '{"bench":"delta","pair":"%s","mb":%d,"load":[%s,%s],"pages_changed":%s,"pages_dict":%s,"pages_xor":%s,"pages_zstd":%s,"ip_encode_s_1t":%s,"ip_encode_s_2t":%s,"ip_encode_cpu_1t":%s,"ip_encode_cpu_2t":%s,"ip_apply_s":%s,"ip_apply_file_s":%s,"ip_bytes":%d,"ip_rss_kib":%d,"ip_apply_rss_kib":%d,"zstd_encode_s":%s,"zstd_decode_s":%s,"zstd_bytes":%d,"zstd_rss_kib":%d,"zstd_decode_rss_kib":%d,"xdelta3_encode_s":%s,"xdelta3_decode_s":%s,"xdelta3_bytes":%d,"xdelta3_rss_kib":%d,"speedup_2t":%s,"encode_vs_zstd":%s,"encode_vs_xdelta3":%s,"apply_vs_zstd":%s,"size_vs_zstd":%s,"size_vs_xdelta3":%s,"rss_vs_zstd":%s,"ip_l5_encode_s":%s,"ip_l5_bytes":%d,"ip_l5_size_vs_zstd":%s,"ip_l5_encode_vs_zstd":%s}\n' \
		"$name" "$mb" "$l0" "$l1" "${pages:-null}" "${dict:-null}" "${xor:-null}" "${zst:-null}" "$ip1_t" "$ip2_t" "$ip1_c" "$ip2_c" "$ips_t" "$ipa_t" "$ip_s" "$ip2_m" "$ips_m" "$zs_t" "$zd_t" "$z_s" "$zs_m" "$zd_m" "$xs_t" "$xd_t" "$x_s" "$xs_m" \
		"$(r "$ip1_t" "$ip2_t")" "$(r "$zs_t" "$ip2_t")" "$(r "$xs_t" "$ip2_t")" "$(r "$zd_t" "$ips_t")" "$(r "$ip_s" "$z_s")" "$(r "$ip_s" "$x_s")" "$(r "$ip2_m" "$zs_m")" \
		"$ip5_t" "$ip5_s" "$(r "$ip5_s" "$z_s")" "$(r "$zs_t" "$ip5_t")"
	local f='%-34s %12s %12s %12s %8s  %s\n'
	printf "$f" "$name pair, NEW $mb MiB" "ip-delta" "peer" "ratio" "goal" "peer"
	printf "$f" "encode s (2 threads)" "$ip2_t" "$zs_t" "$(r "$zs_t" "$ip2_t")x" ">=10x" "zstd -1 --long=31 --patch-from"
	printf "$f" "encode s (2 threads)" "$ip2_t" "$xs_t" "$(r "$xs_t" "$ip2_t")x" ">=40x" "xdelta3 -e -s"
	printf "$f" "encode s (1 thread), CPU s" "$ip1_t" "$ip1_c" "" "" "(2 threads: $ip2_c CPU s, speed-up $(r "$ip1_t" "$ip2_t"))"
	printf "$f" "bytes" "$ip_s" "$z_s" "$(r "$ip_s" "$z_s")x" "<=1.25x" "zstd"
	printf "$f" "bytes" "$ip_s" "$x_s" "$(r "$ip_s" "$x_s")x" "" "xdelta3"
	printf "$f" "--level 5: encode s (2 threads)" "$ip5_t" "$zs_t" "$(r "$zs_t" "$ip5_t")x" ">=10x" "zstd (one run of ip-delta --level 5)"
	printf "$f" "--level 5: bytes" "$ip5_s" "$z_s" "$(r "$ip5_s" "$z_s")x" "<=1.25x" "zstd"
	printf "$f" "apply s (to stdout)" "$ips_t" "$zd_t" "$(r "$zd_t" "$ips_t")x" ">=5x" "zstd -d --patch-from (to stdout)"
	printf "$f" "apply s (to a file, synced)" "$ipa_t" "$xd_t" "$(r "$xd_t" "$ipa_t")x" "" "xdelta3 -d (to a file)"
	printf "$f" "encode peak RSS KiB" "$ip2_m" "$zs_m" "$(r "$ip2_m" "$zs_m")x" "<=0.25x" "zstd"
	printf "$f" "apply peak RSS KiB" "$ips_m" "$zd_m" "$(r "$ips_m" "$zd_m")x" "" "zstd -d"
	printf "$f" "changed pages, zstd / LZ4 dict / XOR" "${pages:-?}" "" "" "" "${zst:-?} / ${dict:-?} / ${xor:-?} (load $l0 -> $l1)"
	rm -f "$d.ip" "$d.z" "$d.x"
}

synthetic() {
	local mb=${IPKIT_BENCH_MB:-256}
	python3 - "$tmp/sbase" "$tmp/snew" "$mb" <<'PY'
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
	bench_pair synthetic "$tmp/sbase" "$tmp/snew"
}

if [ -n "${IPKIT_BENCH_BASE:-}" ] && [ -n "${IPKIT_BENCH_NEW:-}" ]; then
	bench_pair given "$IPKIT_BENCH_BASE" "$IPKIT_BENCH_NEW"
	exit 0
fi
if [ "${IPKIT_BENCH_SYNTHETIC:-0}" = 1 ]; then
	synthetic
	exit 0
fi

# ---- the lab pairs ----------------------------------------------------------
why=""
[ "$(id -u)" = 0 ] || why="not root"
for c in ip unshare libvirtd virtlogd virsh qemu-system-x86_64 make gcc cpio gzip; do
	[ -z "$why" ] && ! command -v "$c" >/dev/null && why="needs $c"
done
[ -z "$why" ] && [ ! -x /bin/busybox ] && why="needs busybox-static"
[ -z "$why" ] && ! ls /boot/vmlinuz-* >/dev/null 2>&1 && why="needs linux-image-amd64"
[ -x "$bin/ip-snapshot" ] || why="${why:-$bin/ip-snapshot not built}"
if [ -z "$why" ]; then
	make -s -C "$top" -f examples/guest/guest.mk guest >"$tmp/make.out" 2>&1 || why="guest does not build: $(tail -c 200 "$tmp/make.out")"
fi
if [ -z "$why" ]; then
	export IPKIT_LAB_DIR=$tmp/lab IPKIT_LAB_NAME=ipkb$(($$ % 100000)) IPKIT_LAB_NET=10.78.$((100 + $$ % 150)) IPKIT_LAB_TIMEOUT=60
	lab_up=1
	"$LAB" up 1 >"$tmp/up.out" 2>&1 || why="lab does not come up: $(tail -c 200 "$tmp/up.out" | tr '\n' ' ')"
fi
if [ -n "$why" ]; then
	echo "skip b0400-delta lab pairs: $why; synthetic pair instead"
	synthetic
	exit 0
fi
U=qemu+tcp://$IPKIT_LAB_NET.11/system
for k in idle:1 busy:10; do
	n=${k%%:*}
	"$G" define "$U" "b$n" --mem 1024 --fill 768 --dirty "${k#*:}" >/dev/null 2>"$tmp/err" &&
		"$G" start "$U" "b$n" >/dev/null 2>>"$tmp/err" ||
		{ echo "bench b0400-delta: guest b$n does not start: $(tail -c 300 "$tmp/err")"; exit 1; }
done
# The renderer fills its buffer before its first heartbeat; wait for a few.
for n in idle busy; do
	"$G" wait-heartbeat "$U" "b$n" 5 900 >/dev/null 2>&1 || { echo "bench b0400-delta: guest b$n gives no heartbeat"; exit 1; }
done
snap() { # DOMAIN PATH
	virsh -q -c "$U" snapshot-create-as --domain "$1" --name "s$RANDOM" --memspec "file=$2,snapshot=external" --live --no-metadata >/dev/null
}
for n in idle busy; do
	snap "b$n" "$tmp/$n-a.save" && sleep "$gap" && snap "b$n" "$tmp/$n-b.save" ||
		{ echo "bench b0400-delta: live snapshots of b$n failed"; exit 1; }
done
"$G" undefine "$U" bbusy >/dev/null 2>&1
for n in idle busy; do
	bench_pair "$n" "$tmp/$n-a.save" "$tmp/$n-b.save"
	if [ -n "${IPKIT_BENCH_KEEP:-}" ] && mkdir -p "$IPKIT_BENCH_KEEP"; then
		mv "$tmp/$n-a.save" "$tmp/$n-b.save" "$IPKIT_BENCH_KEEP/"
	else
		rm -f "$tmp/$n-a.save" "$tmp/$n-b.save"
	fi
done

# ---- capture: ip-snapshot --live against virsh --live + lz4 -1 --------------
l0=$(load)
read -r is_t is_m is_c < <(measure "$bin/ip-snapshot" -q -c "$U" -d bidle --live -o "$tmp/snap.ipki")
read -r vs_t vs_m vs_c < <(measure sh -c "rm -f '$tmp/v.save' && virsh -q -c '$U' snapshot-create-as --domain bidle --name v\$\$ --memspec 'file=$tmp/v.save,snapshot=external' --live --no-metadata >/dev/null")
read -r lz_t lz_m lz_c < <(measure lz4 -q -1 -f "$tmp/v.save" "$tmp/v.lz4")
read -r vl_t vl_m vl_c < <(measure sh -c "rm -f '$tmp/v.save' && virsh -q -c '$U' snapshot-create-as --domain bidle --name v\$\$ --memspec 'file=$tmp/v.save,snapshot=external' --live --no-metadata >/dev/null && lz4 -q -1 -f '$tmp/v.save' '$tmp/v.lz4'")
is_s=$(size "$tmp/snap.ipki") raw_s=$(size "$tmp/v.save") lz_s=$(size "$tmp/v.lz4")
printf '{"bench":"snapshot","load":[%s,%s],"ip_snapshot_s":%s,"ip_snapshot_cpu":%s,"ip_snapshot_bytes":%d,"ip_snapshot_rss_kib":%d,"virsh_live_s":%s,"lz4_s":%s,"virsh_live_lz4_s":%s,"raw_bytes":%d,"lz4_bytes":%d,"time_vs_peer":%s,"size_vs_lz4":%s}\n' \
	"$l0" "$(load)" "$is_t" "$is_c" "$is_s" "$is_m" "$vs_t" "$lz_t" "$vl_t" "$raw_s" "$lz_s" "$(r "$is_t" "$vl_t")" "$(r "$is_s" "$lz_s")"
f='%-40s %12s %12s %8s %8s\n'
printf "$f" "live capture of the idle guest" "ip-snapshot" "virsh+lz4" "ratio" "goal"
printf "$f" "seconds (snapshot + compression)" "$is_t" "$vl_t" "$(r "$is_t" "$vl_t")x" "<=1x"
printf "$f" "  of which virsh live snapshot, lz4 -1" "" "$vs_t, $lz_t" "" ""
printf "$f" "bytes" "$is_s" "$lz_s" "$(r "$is_s" "$lz_s")x" ""
printf "$f" "peak RSS KiB (lz4 alone for the peer)" "$is_m" "$lz_m" "" ""
