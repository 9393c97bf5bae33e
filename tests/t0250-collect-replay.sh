#!/bin/bash
# t0250-collect-replay: ip-collect --replay on the Balabit excerpt shipped in
# tests/data/balabit (aggregates recomputed independently here in Python and
# compared line by line), a hand-checked tiny trace, defects, folders, pacing,
# sample-record replay with pass-through, and the error exits.
. "$(dirname "$0")/lib.sh"
need_cmd ip-collect python3

DATA=$IPKIT_TOP/tests/data/balabit
[ -d "$DATA/user29" ] || skip_all "test data $DATA missing"

# expect.py MAX_JUMP START PATH...: the sample records (one JSON per line,
# fields session, ts, user, events, mouse_px, clicks, scrolls, input_age_s)
# that a replay of PATH (files or folders) must produce at --interval 1
# --start START, computed from the CSV text without ipkit; defect messages go
# to the file named by $EXPECT_DIAG.
cat >"$TMP/expect.py" <<'EOF'
import json, math, os, re, sys
HDR = "record timestamp,client timestamp,button,state,x,y"
NUM = re.compile(r'^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$')
max_jump, start, paths = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]

def files_of(p):
    if not os.path.isdir(p):
        return [p]
    out = []
    for d, dirs, fs in os.walk(p):
        out += [os.path.join(d, f) for f in fs]
    good = []
    for f in sorted(out):
        with open(f, 'rb') as fh:
            first = fh.readline().decode('utf-8', 'replace').rstrip('\n').rstrip('\r')
        if first == HDR:
            good.append(f)
    return good

def names(f):
    parent = os.path.basename(os.path.dirname(os.path.realpath(f)))
    base = os.path.basename(f)
    if re.match(r'^user\d+$', parent):
        return parent + '/' + base, parent
    return base, None

def replay(f):
    text = open(f, 'rb').read().decode()
    lines = text.split('\n')
    if lines and lines[-1] == '':
        lines.pop()
    prev = last = None
    shift = 0.0
    rep = nonmono = jumps = bad = 0
    first_bad = 0
    events = []
    for lineno, raw in enumerate(lines[1:], start=2):
        line = raw[:-1] if raw.endswith('\r') else raw
        if line.strip(' \t') == '':
            continue
        f6 = line.split(',')
        if (len(f6) != 6 or not all(NUM.match(f6[i]) for i in (0, 1, 4, 5)) or not f6[2] or not f6[3]):
            bad += 1
            first_bad = first_bad or lineno
            continue
        if line == prev:
            rep += 1
            continue
        prev = line
        t = float(f6[1]) + shift
        if last is not None:
            gap = t - last
            if gap > max_jump:
                jumps += 1
                shift -= gap - max_jump
                t = last + max_jump
            elif gap < -max_jump:
                jumps += 1
                shift -= gap
                t = last
            elif gap < 0:
                nonmono += 1
                t = last
        last = t
        events.append((t, f6[2], f6[3], float(f6[4]), float(f6[5])))
    parts = []
    if rep: parts.append('dropped %d repeated row%s' % (rep, '' if rep == 1 else 's'))
    if nonmono: parts.append('clamped %d non-monotone timestamp%s' % (nonmono, '' if nonmono == 1 else 's'))
    if jumps: parts.append('capped %d absurd jump%s' % (jumps, '' if jumps == 1 else 's'))
    if bad: parts.append('skipped %d unparseable row%s (first at line %d)' % (bad, '' if bad == 1 else 's', first_bad))
    # per-interval aggregates
    out = []
    if not events:
        return out, parts
    origin = events[0][0]
    pos = None
    i = 0
    k = 0
    lastt = None
    while i < len(events):
        ev = cl = sc = 0
        px = 0.0
        while i < len(events) and math.floor((events[i][0] - origin) / 1.0) <= k:
            t, button, state, x, y = events[i]
            ev += 1
            cl += state == 'Pressed'
            sc += button == 'Scroll'
            if button != 'Scroll' and not (x == 65535 and y == 65535):
                if pos is not None:
                    px += math.sqrt((x - pos[0]) ** 2 + (y - pos[1]) ** 2)
                pos = (x, y)
            lastt = t
            i += 1
        out.append((ev, px, cl, sc, (k + 1) * 1.0 - (lastt - origin)))
        k += 1
    return out, parts

sessions = []
diag = []
for p in paths:
    for f in files_of(p):
        s, u = names(f)
        agg, parts = replay(f)
        sessions.append((s, u, agg))
        if parts:
            diag.append("replay '%s': %s" % (s, ', '.join(parts)))
n = max(len(a) for _, _, a in sessions)
for k in range(n):
    for s, u, agg in sessions:
        if k < len(agg):
            ev, px, cl, sc, age = agg[k]
            rec = {'session': s, 'ts': start + k + 1, 'events': ev, 'mouse_px': px, 'clicks': cl, 'scrolls': sc, 'input_age_s': age}
            if u:
                rec['user'] = u
            print(json.dumps(rec))
with open(os.environ['EXPECT_DIAG'], 'w') as fh:
    fh.write(''.join(d + '\n' for d in sorted(diag)))
EOF

# compare.py EXPECTED ACTUAL: same records line by line (integers exact,
# distances and ages within 1e-6); prints the first difference.
cat >"$TMP/compare.py" <<'EOF'
import json, sys
exp = [json.loads(l) for l in open(sys.argv[1])]
act = [json.loads(l) for l in open(sys.argv[2])]
if len(exp) != len(act):
    sys.exit('%d records expected, %d written' % (len(exp), len(act)))
for n, (e, a) in enumerate(zip(exp, act), 1):
    if a.get('type') != 'sample' or a.get('sources') != ['replay'] or a.get('interval') != 1 or 'keys' in a:
        sys.exit('record %d: bad type/sources/interval/keys: %s' % (n, a))
    for f in ('session', 'ts', 'events', 'clicks', 'scrolls'):
        if e[f] != a.get(f):
            sys.exit('record %d: %s expected %r, got %r (%s)' % (n, f, e[f], a.get(f), a))
    if e.get('user') != a.get('user'):
        sys.exit('record %d: user expected %r, got %r' % (n, e.get('user'), a.get('user')))
    for f in ('mouse_px', 'input_age_s'):
        if abs(e[f] - a[f]) > 1e-6:
            sys.exit('record %d: %s expected %r, got %r' % (n, f, e[f], a[f]))
print('%d records agree' % len(exp))
EOF

export EXPECT_DIAG
# replay_check NAME MAX_JUMP PATH...: ip-collect's records and defect
# messages equal the independent computation.
replay_check() {
	local name=$1 mj=$2
	shift 2
	EXPECT_DIAG=$TMP/$name.diag.exp
	python3 "$TMP/expect.py" "$mj" 1000 "$@" >"$TMP/$name.exp"
	local args=() p
	for p in "$@"; do args+=(--replay "$p"); done
	ip-collect "${args[@]}" --speed 0 --start 1000 --max-jump "$mj" >"$TMP/$name.out" 2>"$TMP/$name.err"
	local rc=$?
	[ $rc = 0 ] || { fail "$name" "exit $rc: $(head -c 300 "$TMP/$name.err")"; return; }
	if python3 "$TMP/compare.py" "$TMP/$name.exp" "$TMP/$name.out" >"$TMP/$name.cmp" 2>&1; then
		ok "$name: $(cat "$TMP/$name.cmp")"
	else
		fail "$name" "$(cat "$TMP/$name.cmp")"
	fi
	sed -n 's/^ip-collect: //p' "$TMP/$name.err" | grep '^replay' | sort >"$TMP/$name.diag"
	if cmp -s "$TMP/$name.diag.exp" "$TMP/$name.diag"; then
		ok "$name: defect messages ($(wc -l <"$TMP/$name.diag") files)"
	else
		fail "$name: defect messages" "expected [$(tr '\n' '|' <"$TMP/$name.diag.exp")] got [$(tr '\n' '|' <"$TMP/$name.diag")]"
	fi
	no_sanitizer_report "$name: sanitizers" "$TMP/$name.err"
}

# --- the real excerpt: every file, as a folder and alone -------------------
replay_check excerpt-folder 3600 "$DATA"
replay_check excerpt-one-file 3600 "$DATA/user20/session_9818121880"
# a small --max-jump turns the excerpt's real long gaps (527 s, 665 s) into jumps
replay_check excerpt-max-jump-300 300 "$DATA/user29"
replay_check two-replays 3600 "$DATA/user16/session_1658051584" "$DATA/user21"
check_grep "real repeated rows counted" "^replay 'user20/session_9818121880': dropped 2064 repeated rows$" "$TMP/excerpt-folder.diag"
check_grep "real long gaps capped" "^replay 'user29/session_4384625557': dropped 21 repeated rows, capped 1 absurd jump$" "$TMP/excerpt-max-jump-300.diag"
check_grep "synthetic defects counted" "^replay 'injected-defects.csv': clamped 1 non-monotone timestamp, capped 3 absurd jumps, skipped 2 unparseable rows \(first at line 61\)$" "$TMP/excerpt-folder.diag"
check_exit "--strict: an unparseable row stops the replay (65)" 65 \
	ip-collect --strict --replay "$DATA/synthetic/injected-defects.csv" --speed 0 --start 1000
check_grep "... naming the file and the line" "injected-defects.csv' line 61: unparseable row" "$TMP/.err"
check_exit "--strict: the other defects of real data are still repaired (0)" 0 \
	ip-collect --strict --replay "$DATA/user20/session_9818121880" --speed 0 --start 1000
check_eq "folder: sessions in sorted order" \
	"injected-defects.csv user16/session_1658051584 user20/session_9818121880 user21/session_0347800921 user29/session_3135434116 user29/session_4384625557" \
	"$(head -6 "$TMP/excerpt-folder.out" | python3 -c 'import json,sys; print(" ".join(json.loads(l)["session"] for l in sys.stdin))')"
# user20's excerpt spans 671.3 s of trace: 672 intervals, then it has ended
check_eq "ended sessions stop" 672 "$(grep -c '"session":"user20/session_9818121880"' "$TMP/excerpt-folder.out")"

# --- a tiny trace, checked by hand ------------------------------------------
printf '%s\n' 'record timestamp,client timestamp,button,state,x,y' \
	'0.0,10.0,NoButton,Move,0,0' \
	'0.0,10.5,NoButton,Move,3,4' \
	'0.0,10.5,NoButton,Move,3,4' \
	'0.0,10.9,Left,Pressed,3,4' \
	'0.0,11.0,Left,Released,6,8' \
	'0.0,11.2,Scroll,Down,0,0' \
	'0.0,13.5,NoButton,Move,9,12' >"$TMP/tiny.csv"
ip-collect --replay "$TMP/tiny.csv" --speed 0 --start 1000 >"$TMP/tiny.out" 2>"$TMP/tiny.err"
python3 - "$TMP/tiny.out" >"$TMP/tiny.txt" <<'EOF'
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(r['session'], r['ts'], r['events'], round(r['mouse_px'], 9), r['clicks'], r['scrolls'], round(r['input_age_s'], 9), r.get('user'))
EOF
check_eq "tiny: hand-checked aggregates" \
	"tiny.csv 1001 3 5 1 0 0.1 None|tiny.csv 1002 2 5 0 1 0.8 None|tiny.csv 1003 0 0 0 0 1.8 None|tiny.csv 1004 1 5 0 0 0.5 None" \
	"$(tr '\n' '|' <"$TMP/tiny.txt" | sed 's/|$//')"
check_grep "tiny: repeated row reported" "replay 'tiny.csv': dropped 1 repeated row$" "$TMP/tiny.err"
sed 's/$/\r/' "$TMP/tiny.csv" >"$TMP/crlf.csv"
ip-collect --replay "tiny.csv=$TMP/crlf.csv" --speed 0 --start 1000 >"$TMP/crlf.out" 2>"$TMP/crlf.err"
check "tiny: CRLF file gives the same records" cmp "$TMP/tiny.out" "$TMP/crlf.out"
printf '%s' "$(cat "$TMP/tiny.csv")" >"$TMP/nonl.csv"
ip-collect --replay "tiny.csv=$TMP/nonl.csv" --speed 0 --start 1000 >"$TMP/nonl.out" 2>"$TMP/nonl.err"
check "tiny: last line without newline counted" cmp "$TMP/tiny.out" "$TMP/nonl.out"
ip-collect --replay - --speed 0 --start 1000 <"$TMP/tiny.csv" >"$TMP/stdin.out" 2>"$TMP/stdin.err"
check_eq "tiny: CSV on stdin, session 'stdin'" "4 stdin" \
	"$(wc -l <"$TMP/stdin.out") $(head -1 "$TMP/stdin.out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["session"])')"
mkdir -p "$TMP/user7"
cp "$TMP/tiny.csv" "$TMP/user7/session_1"
ip-collect --replay "$TMP/user7/session_1" --speed 0 --start 1000 -n 1 >"$TMP/named.out" 2>&1
check_grep "session and user from a userN folder" '"session":"user7/session_1","interval":1,"user":"user7"' "$TMP/named.out"
ip-collect --replay "desk-3=$TMP/user7/session_1" --speed 0 --start 1000 -n 1 >"$TMP/named.out" 2>&1
check_grep "SESSION=PATH names the session" '"session":"desk-3",' "$TMP/named.out"

# --- pacing: --speed 50 paces, and gives the same records as --speed 0 --------
t0=$(date +%s.%N)
ip-collect --replay "$DATA" --speed 50 --count 60 --start 1000 >"$TMP/s50.out" 2>"$TMP/s50.err"
t1=$(date +%s.%N)
ip-collect --replay "$DATA" --speed 0 --count 60 --start 1000 >"$TMP/s0.out" 2>"$TMP/s0.err"
t2=$(date +%s.%N)
check "speed 50 and speed 0 give the same records" cmp "$TMP/s50.out" "$TMP/s0.out"
check_eq "speed 50 records" 360 "$(wc -l <"$TMP/s50.out")"
check "speed 50 paced (60 intervals take >= 1.1 s), speed 0 did not wait" \
	python3 -c "import sys; a, b = $t1 - $t0, $t2 - $t1; sys.exit(not (a >= 1.1 and b < a))"
# without --start only the time base differs
ip-collect --replay "$DATA/user16" --speed 0 --count 30 >"$TMP/now.out" 2>/dev/null
ip-collect --replay "$DATA/user16" --speed 0 --count 30 --start 1000 >"$TMP/fixed.out" 2>/dev/null
check "records without --start differ only in ts" python3 -c "
import json, sys
a = [json.loads(l) for l in open('$TMP/now.out')]; b = [json.loads(l) for l in open('$TMP/fixed.out')]
d = a[0]['ts'] - b[0]['ts']
sys.exit(len(a) != 30 or d < 1e8 or any(abs(x.pop('ts') - y.pop('ts') - d) > 1e-3 or x != y for x, y in zip(a, b)))"

# --- sample records: own timing, several sessions, pass-through order -------
cat >"$TMP/samples.jsonl" <<'EOF'
{"type":"error","v":1,"ts":1,"program":"x","message":"before any sample"}
{"type":"sample","v":1,"ts":100,"session":"a","interval":1,"events":2,"input_age_s":0.5}
{"type":"sample","v":1,"ts":100.5,"session":"a","interval":1,"events":3,"input_age_s":0.25}
{"type":"sample","v":1,"ts":100.2,"session":"b","interval":1,"events":1,"mouse_px":7,"user":"u"}
{"type":"note","v":1,"ts":2,"n":2}
{"type":"sample","v":1,"ts":102,"session":"a","interval":1,"events":1}
{"type":"note","v":1,"ts":3,"n":3}
{"type":"sample","v":1,"ts":103.9,"session":"b","interval":1,"events":4}
{"type":"note","v":1,"ts":4,"n":4}
EOF
summ() { # one short token per record: session@ts:events or the note/error
	python3 -c '
import json, sys
out = []
for l in sys.stdin:
    r = json.loads(l)
    if r["type"] == "sample":
        out.append("%s@%g:%g%s" % (r["session"], r["ts"], r["events"], ("/px%g" % r["mouse_px"]) if "mouse_px" in r else ""))
    else:
        out.append("%s%s" % (r["type"], r.get("n", "")))
print(" ".join(out))'
}
want="error a@1001:5 b@1001:1/px7 note2 a@1003:1 note3 b@1004:4 note4"
ip-collect --replay "$TMP/samples.jsonl" --speed 0 --start 1000 >"$TMP/smp.out" 2>"$TMP/smp.err"
check_eq "samples: merged per interval, pass-through in order" "$want" "$(summ <"$TMP/smp.out")"
check_eq "samples: the first pass-through record unchanged" \
	'{"type":"error","v":1,"ts":1,"program":"x","message":"before any sample"}' "$(head -1 "$TMP/smp.out")"
check_grep "samples: input_age_s merges to the minimum" '"session":"a".*"input_age_s":0.25' "$TMP/smp.out"
check_grep "samples: user kept" '"session":"b","interval":1,"user":"u"' "$TMP/smp.out"
{ printf '\n  \n'; sed '5a not json' "$TMP/samples.jsonl"; } >"$TMP/bad.jsonl"
ip-collect --replay - --speed 0 --start 1000 <"$TMP/bad.jsonl" >"$TMP/bad.out" 2>"$TMP/bad.err"
rc=$?
check_eq "samples on stdin (after blank lines): bad line skipped, exit 0" "0 $want" "$rc $(summ <"$TMP/bad.out")"
check_grep "samples: bad line named with its line number" "input '<stdin>' line 8: invalid JSON" "$TMP/bad.err"
check_grep "samples: the summary names only the defects there were" "^ip-collect: replay '<stdin>': skipped 1 bad line, 1 sample out of order$" "$TMP/bad.err"
check_exit "standard input given to two --replay: usage (64)" 64 ip-collect --replay - --replay a=- --speed 0 <"$TMP/bad.jsonl"
check_grep "... said so" "standard input \(-\) given more than once" "$TMP/.err"
check_exit "samples --strict: bad line exits 65" 65 ip-collect --strict --replay - --speed 0 --start 1000 <"$TMP/bad.jsonl"
check_grep "samples --strict: message names the line" "^ip-collect: input '<stdin>' line 8: invalid JSON" "$TMP/.err"
sed 's/"events":1}/"events":"x"}/' "$TMP/samples.jsonl" >"$TMP/badfield.jsonl"
ip-collect --format samples --replay "$TMP/badfield.jsonl" --speed 0 --start 1000 >"$TMP/bf.out" 2>"$TMP/bf.err"
check_grep "samples: a non-numeric field is a bad line" "input '.*badfield.jsonl' line 6: sample record: field 'events' must be a number" "$TMP/bf.err"
ip-collect --replay "$TMP/samples.jsonl" --speed 0 --start 1000 | ip-collect --replay - --speed 0 --start 5000 >"$TMP/re.out" 2>"$TMP/re.err"
check_eq "samples: replaying a replay keeps the records" \
	"error a@5001:5 b@5001:1/px7 note2 a@5003:1 note3 b@5004:4 note4" "$(summ <"$TMP/re.out")"
no_sanitizer_report "samples: sanitizers" "$TMP/bad.err"

# --- errors ----------------------------------------------------------------
check_exit "missing file exits 66" 66 ip-collect --replay "$TMP/no-such-file" --speed 0
check_grep "missing file named" "ip-collect: cannot open replay input '.*/no-such-file': No such file or directory" "$TMP/.err"
printf 'time,x,y\n1,2,3\n' >"$TMP/badhdr.csv"
check_exit "bad header exits 65" 65 ip-collect --replay "$TMP/badhdr.csv" --speed 0
check_grep "bad header named" "replay '.*badhdr.csv': not a Balabit CSV file" "$TMP/.err"
check_exit "bad header with --format balabit exits 65" 65 ip-collect --format balabit --replay "$TMP/badhdr.csv" --speed 0
: >"$TMP/empty.csv"
check_exit "empty file exits 65" 65 ip-collect --replay "$TMP/empty.csv" --speed 0
check_grep "empty file named" "replay '.*empty.csv': empty input" "$TMP/.err"
mkdir -p "$TMP/nocsv/sub"
cp "$TMP/badhdr.csv" "$TMP/nocsv/sub/x.csv"
check_exit "folder without Balabit files exits 66" 66 ip-collect --replay "$TMP/nocsv" --speed 0
check_grep "folder named" "replay folder '.*nocsv': no Balabit CSV file in it" "$TMP/.err"
check_exit "--format samples on a folder exits 66" 66 ip-collect --format samples --replay "$DATA" --speed 0
