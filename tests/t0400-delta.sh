#!/bin/bash
# ip-delta: encode and apply on generated files, through files and pipes,
# chains of deltas, ipkit images, content that shifts (content-defined
# chunks); corrupted, truncated, wrong-base and other-version deltas refused
# with exit 65 and nothing written.
. "$(dirname "$0")/lib.sh"
need_cmd ip-delta python3 cmp

python3 - "$TMP" <<'PY'
import random, sys
d = sys.argv[1]
rng = random.Random(4)
a = bytearray()
for i in range(300):
    r = rng.random()
    a += bytes(4096) if r < 0.3 else (b"page %d " % i * 600)[:4096] if r < 0.7 else rng.randbytes(4096)
a += b"tail not a multiple of 4096"
b = bytearray(a)
for i in range(0, 300, 9):
    b[i * 4096 + 16:i * 4096 + 80] = rng.randbytes(64)
b += rng.randbytes(5000)
c = bytearray(b)
for i in range(0, 300, 13):
    c[i * 4096:(i + 1) * 4096] = rng.randbytes(4096)
del c[100000:200000]
for n, v in (("a", a), ("b", b), ("c", c)):
    open(f"{d}/{n}", "wb").write(v)
open(f"{d}/empty", "wb").close()
PY

check "encode A to B" ip-delta "$TMP/a" "$TMP/b" -o "$TMP/ab"
check_grep "encode emits a delta record" '"type":"delta".*"mode":"encode".*"pages_changed":36' "$TMP/.out"
check "apply A + AB" ip-delta --apply "$TMP/a" "$TMP/ab" -o "$TMP/b2"
check_grep "apply emits a delta record" '"mode":"apply"' "$TMP/.out"
check "applied B is identical" cmp "$TMP/b" "$TMP/b2"
sz_ab=$(stat -c %s "$TMP/ab") sz_b=$(stat -c %s "$TMP/b")
[ "$sz_ab" -lt $((sz_b / 4)) ] && ok "delta ($sz_ab bytes) far smaller than B ($sz_b)" || fail "delta far smaller than B" "$sz_ab vs $sz_b"
ip-delta -q --record "$TMP/ab.rec" "$TMP/a" "$TMP/b" -o "$TMP/ab1"
check_grep "zstd page batches by default" '"pages_zstd":36,"zstd_batches":[1-9]' "$TMP/ab.rec"
# The LZ4 codec: still written on request, still applied; larger here.
check "encode A to B with --codec lz4" ip-delta --codec lz4 "$TMP/a" "$TMP/b" -o "$TMP/ab4"
check_grep "lz4: no zstd batches" '"pages_zstd":0,' "$TMP/.out"
check "apply the lz4 delta" ip-delta --apply "$TMP/a" "$TMP/ab4" -o "$TMP/b4"
check "lz4 delta reconstructs B" cmp "$TMP/b" "$TMP/b4"
sz_ab4=$(stat -c %s "$TMP/ab4")
[ "$sz_ab" -lt "$sz_ab4" ] && ok "zstd delta ($sz_ab) smaller than the lz4 delta ($sz_ab4)" || fail "zstd delta smaller than lz4" "$sz_ab vs $sz_ab4"
check "--level 5 delta applies" sh -c 'ip-delta -q --record /dev/null --level 5 "$1/a" "$1/b" -o "$1/ab5" && ip-delta --apply -q --record /dev/null "$1/a" "$1/ab5" -o - | cmp - "$1/b"' sh "$TMP"
check_exit "unknown codec refused (64)" 64 ip-delta --codec lzma "$TMP/a" "$TMP/b" -o "$TMP/o-none"
check_exit "level out of range refused (64)" 64 ip-delta --level 30 "$TMP/a" "$TMP/b" -o "$TMP/o-none"

# Pipes: NEW from stdin, delta to stdout, delta from stdin, content to stdout.
cat "$TMP/c" | ip-delta "$TMP/b" - -j 2 | ip-delta --apply "$TMP/b" - -o - >"$TMP/c2" 2>"$TMP/err"
check "pipeline B -> C through pipes reconstructs C" cmp "$TMP/c" "$TMP/c2"
# A chain of deltas, and 1 vs 2 threads giving the same delta.
ip-delta -j 1 "$TMP/b" "$TMP/c" -o "$TMP/bc" >/dev/null
ip-delta -j 2 "$TMP/b" "$TMP/c" -o "$TMP/bc2" >/dev/null
check "1 and 2 threads give the same delta" cmp "$TMP/bc" "$TMP/bc2"
check "chain A + AB + BC" ip-delta --apply "$TMP/a" "$TMP/ab" "$TMP/bc" -o "$TMP/c3"
check "chain reconstructs C" cmp "$TMP/c" "$TMP/c3"
# NEW from a pipe is spooled to a temporary file, not held in memory: the
# same delta as from the file.
cat "$TMP/c" | ip-delta -q --record /dev/null "$TMP/b" - -o "$TMP/bc3"
check "NEW from a pipe gives the same delta as from a file" cmp "$TMP/bc" "$TMP/bc3"

# Content that shifts: 10000 bytes inserted in the middle of a plain file
# are found again by content-defined chunks.
python3 - "$TMP" <<'PY'
import random, sys
d = sys.argv[1]
rng = random.Random(7)
s = rng.randbytes(2 << 20)
open(f"{d}/s1", "wb").write(s)
open(f"{d}/s2", "wb").write(s[:1000000] + rng.randbytes(10000) + s[1000000:])
PY
check "encode a shifted file" ip-delta "$TMP/s1" "$TMP/s2" -o "$TMP/s12"
check_grep "coded by chunks, most copied" '"cdc_chunks":[0-9][0-9]*,"cdc_copied":[0-9][0-9]*,"cdc_copied_bytes":20[0-9]{5}[,}]' "$TMP/.out"
check "encode it by LZ4 pages only (--no-cdc --codec lz4)" ip-delta --no-cdc --codec lz4 "$TMP/s1" "$TMP/s2" -o "$TMP/s12p"
sz_c=$(stat -c %s "$TMP/s12") sz_p=$(stat -c %s "$TMP/s12p")
[ "$sz_c" -lt 60000 ] && [ $((sz_c * 10)) -lt "$sz_p" ] && ok "chunk delta ($sz_c bytes) a tenth of the LZ4 page delta ($sz_p)" ||
	fail "chunk delta small" "$sz_c vs $sz_p bytes"
# zstd page batches reach the shifted content within a batch's prefix.
check "encode it by zstd page batches (--no-cdc)" ip-delta --no-cdc "$TMP/s1" "$TMP/s2" -o "$TMP/s12z"
check "the zstd page delta applies" ip-delta --apply "$TMP/s1" "$TMP/s12z" -o "$TMP/s12z.out"
cmp -s "$TMP/s12z.out" "$TMP/s2" && ok "zstd page delta of a shifted file: identical" || fail "zstd page delta of a shifted file" "differs"
sz_z=$(stat -c %s "$TMP/s12z")
[ "$sz_z" -lt 60000 ] && ok "zstd page delta of a shifted file small ($sz_z bytes)" || fail "zstd page delta of a shifted file small" "$sz_z bytes"
check "apply the chunk delta" ip-delta --apply "$TMP/s1" "$TMP/s12" -o "$TMP/s2b"
check "shifted file reconstructed" cmp "$TMP/s2" "$TMP/s2b"
check "and the other way (a deletion)" ip-delta "$TMP/s2" "$TMP/s1" -o "$TMP/s21"
check "apply the deletion" ip-delta --apply "$TMP/s2" "$TMP/s21" -o "$TMP/s1b"
check "deletion reconstructed" cmp "$TMP/s1" "$TMP/s1b"

# Images.
check "image of B" ip-delta --image "$TMP/b" -o "$TMP/b.ipki"
check "decode the image" ip-delta --image --apply "$TMP/b.ipki" -o "$TMP/b4"
check "decoded image is B" cmp "$TMP/b" "$TMP/b4"
check "an image serves as a base" ip-delta --apply "$TMP/b.ipki" "$TMP/bc" -o "$TMP/c4"
check "applied on the image base gives C" cmp "$TMP/c" "$TMP/c4"
check "empty files" ip-delta "$TMP/empty" "$TMP/empty" -o "$TMP/ee"
check "empty round trip" ip-delta --apply "$TMP/empty" "$TMP/ee" -o "$TMP/e2"
[ -f "$TMP/e2" ] && [ ! -s "$TMP/e2" ] && ok "empty result is an empty file" || fail "empty result is an empty file"

# Devices and FIFOs are written in place, never replaced.
check "encode to /dev/null" ip-delta "$TMP/a" "$TMP/b" -o /dev/null
check "apply to /dev/null" ip-delta --apply "$TMP/a" "$TMP/ab" -o /dev/null
[ -c /dev/null ] && ok "/dev/null is still a device" || fail "/dev/null is still a device" "$(ls -l /dev/null)"
mkfifo "$TMP/fifo"
cat "$TMP/fifo" >"$TMP/from-fifo" &
check "apply into a FIFO" ip-delta --apply "$TMP/a" "$TMP/ab" -o "$TMP/fifo"
wait
check "the FIFO carried B" cmp "$TMP/b" "$TMP/from-fifo"
[ -p "$TMP/fifo" ] && ok "the FIFO is still a FIFO" || fail "the FIFO is still a FIFO"

# Refusals: nothing may be left behind.
nothing_left() { # nothing_left NAME: no OUT and no temporary file in $TMP/o
	local n; n=$(ls -A "$TMP/o" | wc -l)
	[ "$n" = 0 ] && ok "$1: nothing written" || fail "$1: nothing written" "$(ls -A "$TMP/o")"
}
mkdir -p "$TMP/o"
check_exit "wrong base refused (65)" 65 ip-delta --apply "$TMP/b" "$TMP/ab" -o "$TMP/o/out"
check_grep "wrong base message" "wrong base" "$TMP/.err"
nothing_left "wrong base"
head -c $((sz_ab - 10)) "$TMP/ab" >"$TMP/ab.cut"
check_exit "truncated delta refused (65)" 65 ip-delta --apply "$TMP/a" "$TMP/ab.cut" -o "$TMP/o/out"
check_grep "truncated message" "truncated" "$TMP/.err"
nothing_left "truncated"
bad=0
for off in 0 9 20 64 70 95 100 $((sz_ab / 3)) $((sz_ab / 2)) $((sz_ab - 40)) $((sz_ab - 1)); do
	python3 -c "import sys; d=bytearray(open(sys.argv[1],'rb').read()); d[int(sys.argv[2])]^=4; open(sys.argv[3],'wb').write(d)" \
		"$TMP/ab" "$off" "$TMP/ab.flip"
	ip-delta --apply "$TMP/a" "$TMP/ab.flip" -o "$TMP/o/out" >/dev/null 2>&1
	rc=$?
	[ $rc = 65 ] || { bad=$((bad + 1)); echo "offset $off: exit $rc" >&2; }
done
check_eq "flipped bits refused with 65 at 11 offsets" 0 "$bad"
nothing_left "flipped bits"
echo "keep" >"$TMP/o/out"
check_exit "corrupted delta does not replace an existing output" 65 ip-delta --apply "$TMP/a" "$TMP/ab.flip" -o "$TMP/o/out"
check_eq "existing output untouched" keep "$(cat "$TMP/o/out")"
rm -f "$TMP/o/out"
# A delta of a newer format version is refused by name.
python3 - "$TMP/ab" "$TMP/ab.v9" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
d[8] = 9
open(sys.argv[2], "wb").write(d)
PY
check_exit "another format version refused (65)" 65 ip-delta --apply "$TMP/a" "$TMP/ab.v9" -o "$TMP/o/out"
check_grep "version message" "format version 9 is not supported .*newer ipkit" "$TMP/.err"
nothing_left "another format version"
check_exit "delta without base refused (65)" 65 ip-delta --image --apply "$TMP/ab" -o "$TMP/o/out"
# an image given as a DELTA would decode without its base: refused, also
# to stdout (before anything is written) and inside a chain
check_exit "an image as the delta refused (65)" 65 ip-delta --apply "$TMP/a" "$TMP/b.ipki" -o "$TMP/o/out"
check_grep "... named: an image, not a delta of the base" "'.*b.ipki': it is an image, not a delta of '.*/a'" "$TMP/.err"
check_exit "an image as the delta, to stdout (65)" 65 ip-delta --apply "$TMP/a" "$TMP/b.ipki"
check_eq "... nothing written" 0 "$(wc -c <"$TMP/.out")"
check_exit "an image inside a chain of deltas (65)" 65 ip-delta --apply "$TMP/a" "$TMP/b.ipki" "$TMP/ab" -o "$TMP/o/out"
nothing_left "an image as the delta"
check_exit "--record - with -o -: usage (64)" 64 ip-delta --record - "$TMP/a" "$TMP/b" -o -
check_eq "... nothing written" 0 "$(wc -c <"$TMP/.out")"
check_exit "record file that cannot be opened: 73 before any output" 73 \
	ip-delta --record "$TMP/no/such/rec" "$TMP/a" "$TMP/b" -o "$TMP/o/rec-out"
nothing_left "record file that cannot be opened"
check_exit "a failed run with --record FILE (65)" 65 ip-delta --record "$TMP/o/new-rec" --apply "$TMP/a" "$TMP/b.ipki" -o "$TMP/o/out"
nothing_left "a failed run removes the record file it created"
check_exit "an unwritable output is found before the inputs are read (73)" 73 ip-delta "$TMP/nope" "$TMP/b" -o "$TMP/no/such/x"
check_exit "... also for --apply (73)" 73 ip-delta --apply "$TMP/nope" "$TMP/ab" -o "$TMP/no/such/x"
if [ -w /dev/full ]; then
	check_exit "delta to a full device: 74" 74 ip-delta "$TMP/a" "$TMP/b" -o /dev/full
	check_grep "... naming the output" "write '/dev/full': No space left" "$TMP/.err"
fi
check_exit "missing input (66)" 66 ip-delta "$TMP/nope" "$TMP/b" -o "$TMP/o/out"
nothing_left "missing input"
check_exit "two stdin operands (64)" 64 ip-delta - - -o "$TMP/o/out"
check_exit "bad thread count (64)" 64 ip-delta -j 0 "$TMP/a" "$TMP/b"
