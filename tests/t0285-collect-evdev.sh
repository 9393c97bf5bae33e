#!/bin/bash
# ip-collect --evdev on streams of real struct input_event records (written
# here with python3's struct module in the kernel's layout), through a FIFO
# fed one batch per interval and through a regular file: keys, clicks,
# scrolls, mouse_px, events and input_age_s per interval, SYN_DROPPED,
# partial records; a real virtual device through /dev/uinput when there is
# one; open errors (missing device, not an input device, no permission).
. "$(dirname "$0")/lib.sh"
need_cmd ip-collect python3 timeout mkfifo

# Event helpers shared by the generators: the 64-bit struct input_event is
# { struct timeval (two longs), __u16 type, __u16 code, __s32 value }.
cat >"$TMP/ev.py" <<'PY'
import struct, time
EV_SYN, EV_KEY, EV_REL, EV_ABS, EV_MSC = 0, 1, 2, 3, 4
SYN_REPORT, SYN_DROPPED = 0, 3
KEY_A, KEY_B, KEY_C, KEY_D, KEY_E = 30, 48, 46, 32, 18
BTN_LEFT, BTN_RIGHT, BTN_TOUCH = 0x110, 0x111, 0x14a
REL_X, REL_Y, REL_DIAL, REL_WHEEL, REL_WHEEL_HI_RES = 0, 1, 7, 8, 11
ABS_X, ABS_Y, ABS_PRESSURE = 0, 1, 0x18
MSC_SCAN = 4
FMT = "@llHHi"
def ev(t, type_, code, value, when=None):
    w = time.time() if when is None else when
    return struct.pack(FMT, int(w), int((w % 1) * 1e6), type_, code, value)
def syn(when=None):
    return ev(0, EV_SYN, SYN_REPORT, 0, when)
def frame(*evs, when=None):
    return b"".join(ev(0, t, c, v, when) for t, c, v in evs) + syn(when)
assert struct.calcsize(FMT) == 24
# Interval 1: a key (press, auto-repeat, release, with a scan code), two
# mouse moves (3,4) and (6,8), a left click, a wheel notch sent as both
# REL_WHEEL and REL_WHEEL_HI_RES, and a high-resolution-only half notch.
def batch1(when=None):
    return (frame((EV_MSC, MSC_SCAN, 0x70004), (EV_KEY, KEY_A, 1), when=when) + frame((EV_KEY, KEY_A, 2), when=when) +
            frame((EV_KEY, KEY_A, 0), when=when) +
            frame((EV_REL, REL_X, 3), (EV_REL, REL_Y, 4), when=when) + frame((EV_REL, REL_X, 6), (EV_REL, REL_Y, 8), when=when) +
            frame((EV_KEY, BTN_LEFT, 1), when=when) + frame((EV_KEY, BTN_LEFT, 0), when=when) +
            frame((EV_REL, REL_WHEEL, 1), (EV_REL, REL_WHEEL_HI_RES, 120), when=when) +
            frame((EV_REL, REL_WHEEL_HI_RES, 60), when=when))
# Interval 3: a frame cut by SYN_DROPPED (discarded up to the next
# SYN_REPORT), a key, a right click in one frame, an absolute pointer
# (baseline, then +(3,4); finger lifted; baseline elsewhere, then +(6,8)),
# a pressure change, and the first half of a record.
def batch3():
    return (ev(0, EV_KEY, KEY_B, 1) + ev(0, EV_SYN, SYN_DROPPED, 0) + ev(0, EV_KEY, KEY_C, 1) +
            ev(0, EV_REL, REL_X, 100) + syn() +
            frame((EV_KEY, KEY_D, 1)) + frame((EV_KEY, BTN_RIGHT, 1), (EV_KEY, BTN_RIGHT, 0)) +
            frame((EV_ABS, ABS_X, 100), (EV_ABS, ABS_Y, 100)) + frame((EV_ABS, ABS_X, 103), (EV_ABS, ABS_Y, 104)) +
            frame((EV_KEY, BTN_TOUCH, 0)) + frame((EV_ABS, ABS_X, 500), (EV_ABS, ABS_Y, 500)) +
            frame((EV_ABS, ABS_X, 506), (EV_ABS, ABS_Y, 508)) + frame((EV_ABS, ABS_PRESSURE, 50)))
# Interval 4: the rest of that record (a KEY_E press) and a dial turn.
def batch4_record():
    return ev(0, EV_KEY, KEY_E, 1)
def batch4_rest():
    return syn() + frame((EV_REL, REL_DIAL, 1))
PY

# summarise FILE: "K SESSION field=value ..." per sample, K = interval number.
cat >"$TMP/summarise.py" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ts = sorted({r["ts"] for r in recs})
fields = ["events", "keys", "clicks", "scrolls", "mouse_px"]
for r in recs:
    print("%d %s %s" % (ts.index(r["ts"]) + 1, r["session"],
          " ".join("%s=%.6g" % (k, r[k]) for k in fields if k in r)))
PY

# --- FIFO, one batch per interval -------------------------------------------
# The driver writes batch k+1 after reading interval k's sample from
# ip-collect's stdout, so each batch lands in a known interval.
cat >"$TMP/fifo.py" <<'PY'
import os, subprocess, sys
sys.path.insert(0, os.path.dirname(sys.argv[0]))
from ev import *
fifo, out, err = sys.argv[1], sys.argv[2], sys.argv[3]
p = subprocess.Popen(["ip-collect", "--evdev", fifo + "=alice", "-i", "0.4", "-n", "5"],
                     stdout=subprocess.PIPE, stderr=open(err, "w"))
w = open(fifo, "wb", buffering=0)
# Built when written, so the events carry the time they are written.
half = []
def b3():
    rec = batch4_record()
    half.append(rec[10:])
    return batch3() + rec[:10]
batches = [batch1, None, b3, lambda: half[0] + batch4_rest(), None]
lines = []
w.write(batches[0]())
for k in range(5):
    line = p.stdout.readline()
    if not line:
        break
    lines.append(line)
    if k + 1 < len(batches) and batches[k + 1]:
        w.write(batches[k + 1]())
w.close()
rest = p.stdout.read()
open(out, "wb").write(b"".join(lines) + rest)
sys.exit(p.wait())
PY
mkfifo "$TMP/fifo"
timeout 60 python3 "$TMP/fifo.py" "$TMP/fifo" "$TMP/f.out" "$TMP/f.err"
check_eq "fifo: exit 0" 0 "$?"
python3 "$TMP/summarise.py" "$TMP/f.out" >"$TMP/f.sum" 2>&1
cat "$TMP/f.sum" >&2
check_eq "fifo: 5 samples, one per interval" 5 "$(wc -l <"$TMP/f.sum")"
check_grep "interval 1: key press (repeat and release not keys), 2 moves = 15 px, 1 click, 2 wheel frames, 8 events" \
	'^1 alice events=8 keys=1 clicks=1 scrolls=2 mouse_px=15$' "$TMP/f.sum"
check_grep "interval 2: nothing happened, zero counts (not absent)" \
	'^2 alice events=0 keys=0 clicks=0 scrolls=0 mouse_px=0$' "$TMP/f.sum"
check_grep "interval 3: dropped frame ignored, absolute motion without the lift jump = 15, 7 events" \
	'^3 alice events=7 keys=1 clicks=1 scrolls=0 mouse_px=15$' "$TMP/f.sum"
check_grep "interval 4: a record split across writes is read whole" \
	'^4 alice events=2 keys=1 clicks=0 scrolls=0 mouse_px=0$' "$TMP/f.sum"
# input_age_s: the time since the last event; it grows by the interval while
# nothing happens.
ages=$(python3 -c '
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
print(" ".join("%.3f" % x.get("input_age_s", -1) for x in r))' "$TMP/f.out")
echo "ages: $ages" >&2
if python3 -c '
import sys
a = [float(x) for x in sys.argv[1:]]
sys.exit(not (0 <= a[0] <= 0.45 and abs(a[1] - a[0] - 0.4) < 0.02 and 0 <= a[2] <= 0.45 and a[4] - a[3] > 0.39))' $ages; then
	ok "input_age_s: small after input, +interval per idle interval"
else
	fail "input_age_s: small after input, +interval per idle interval" "ages $ages"
fi
check_eq "fifo: nothing on stderr" "" "$(cat "$TMP/f.err")"

# --- Regular file: everything lands in the first interval --------------------
python3 -c "
import sys; sys.path.insert(0, '$TMP')
from ev import *
open('$TMP/events.bin', 'wb').write(batch1(when=1764115200.5) + batch1(when=1764115200.75))"
timeout 30 ip-collect --evdev "$TMP/events.bin" --session desk -i 0.2 -n 2 --start 1764115200 >"$TMP/r.out" 2>"$TMP/r.err"
check_eq "file: exit 0" 0 "$?"
python3 "$TMP/summarise.py" "$TMP/r.out" >"$TMP/r.sum" 2>&1
check_grep "file: two batches in interval 1, session from --session" \
	'^1 desk events=16 keys=2 clicks=2 scrolls=4 mouse_px=30$' "$TMP/r.sum"
check_grep "file: at its end, zero counts" '^2 desk events=0 keys=0 clicks=0 scrolls=0 mouse_px=0$' "$TMP/r.sum"
no_sanitizer_report "file: no sanitizer report" "$TMP/r.err"

# --- Open errors ----------------------------------------------------------------
check_exit "missing device: exit 66" 66 ip-collect --evdev "$TMP/no-such-event9" -n 1
check_grep "missing device: named with the errno text" \
	"cannot open input device '$TMP/no-such-event9': No such file or directory" "$TMP/.err"
check_exit "a directory: exit 66" 66 ip-collect --evdev "$TMP" -n 1
check_exit "a character device that is not evdev: exit 66" 66 ip-collect --evdev /dev/null -n 1
check_grep "not evdev: says so" "cannot use input device '/dev/null': not an evdev device" "$TMP/.err"
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	mkdir -p "$TMP/locked" && cp "$TMP/events.bin" "$TMP/locked/event0" && chmod 600 "$TMP/locked/event0"
	chmod 755 "$TMP" "$TMP/locked"
	bin=$(command -v ip-collect)
	if setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$bin" 2>/dev/null; then
		check_exit "no permission: exit 66" 66 setpriv --reuid=65534 --regid=65534 --clear-groups "$bin" \
			--evdev "$TMP/locked/event0" -n 1
		check_grep "no permission: hint about the input group" \
			"cannot open input device '$TMP/locked/event0': Permission denied \\(add the user to the 'input' group" "$TMP/.err"
	else
		skip "no permission: exit 66" "the program is not executable by an unprivileged user here"
	fi
else
	skip "no permission: exit 66" "needs root and setpriv to drop privileges"
fi

# --- A real virtual input device through uinput ---------------------------------
if [ ! -c /dev/uinput ]; then
	skip "uinput virtual device" "no /dev/uinput (uinput module not loaded or not available)"
	exit 0
fi
# Create a device with keys, buttons, relative axes and a wheel; emit a batch
# while ip-collect reads it, then destroy it: the source reports it gone and
# the stream goes on.
cat >"$TMP/uinput.py" <<'PY'
import fcntl, glob, os, struct, subprocess, sys, time
sys.path.insert(0, os.path.dirname(sys.argv[0]))
from ev import *
out, err = sys.argv[1], sys.argv[2]
UI_SET_EVBIT, UI_SET_KEYBIT, UI_SET_RELBIT = 0x40045564, 0x40045565, 0x40045566
UI_DEV_CREATE, UI_DEV_DESTROY, UI_DEV_SETUP = 0x5501, 0x5502, 0x405c5503
UI_GET_SYSNAME = lambda n: 0x80005500 | (n << 16) | 44
fd = os.open("/dev/uinput", os.O_WRONLY | os.O_NONBLOCK)
fcntl.ioctl(fd, UI_SET_EVBIT, EV_KEY); fcntl.ioctl(fd, UI_SET_EVBIT, EV_REL)
for k in (KEY_A, BTN_LEFT):
    fcntl.ioctl(fd, UI_SET_KEYBIT, k)
for r in (REL_X, REL_Y, REL_WHEEL):
    fcntl.ioctl(fd, UI_SET_RELBIT, r)
# struct uinput_setup { struct input_id { u16 bustype, vendor, product, version }; char name[80]; u32 ff_effects_max; }
fcntl.ioctl(fd, UI_DEV_SETUP, struct.pack("HHHH80sI", 0x06, 0x1234, 0x5678, 1, b"ipkit-test", 0))
fcntl.ioctl(fd, UI_DEV_CREATE)
buf = bytearray(64)
fcntl.ioctl(fd, UI_GET_SYSNAME(64), buf)
sysname = buf.split(b"\0")[0].decode()
dev = None
for _ in range(100):
    g = glob.glob("/sys/devices/virtual/input/%s/event*" % sysname)
    if g and os.path.exists("/dev/input/" + os.path.basename(g[0])):
        dev = "/dev/input/" + os.path.basename(g[0]); break
    time.sleep(0.05)
if not dev:
    print("no event node for", sysname, file=sys.stderr); sys.exit(2)
p = subprocess.Popen(["ip-collect", "--evdev", dev + "=vdev", "-i", "0.4", "-n", "4", "-v"],
                     stdout=subprocess.PIPE, stderr=open(err, "w"))
# Events reach only readers that have the device open: wait for ip-collect's.
for _ in range(200):
    try:
        fds = os.listdir("/proc/%d/fd" % p.pid)
        if any(os.readlink("/proc/%d/fd/%s" % (p.pid, f)) == dev for f in fds):
            break
    except OSError:
        pass
    time.sleep(0.02)
def emit(t, c, v):
    os.write(fd, struct.pack(FMT, 0, 0, t, c, v))
emit(EV_KEY, KEY_A, 1); emit(EV_SYN, 0, 0); emit(EV_KEY, KEY_A, 0); emit(EV_SYN, 0, 0)
emit(EV_REL, REL_X, 3); emit(EV_REL, REL_Y, 4); emit(EV_SYN, 0, 0)
emit(EV_KEY, BTN_LEFT, 1); emit(EV_SYN, 0, 0); emit(EV_KEY, BTN_LEFT, 0); emit(EV_SYN, 0, 0)
emit(EV_REL, REL_WHEEL, 1); emit(EV_SYN, 0, 0)
lines = [p.stdout.readline(), p.stdout.readline()]
fcntl.ioctl(fd, UI_DEV_DESTROY)
os.close(fd)
open(out, "wb").write(b"".join(lines) + p.stdout.read())
sys.exit(p.wait())
PY
timeout 60 python3 "$TMP/uinput.py" "$TMP/u.out" "$TMP/u.err"
rc=$?
if [ $rc = 2 ]; then
	skip "uinput virtual device" "uinput did not create an event node: $(head -c 200 "$TMP/u.err")"
	exit 0
fi
check_eq "uinput: exit 0 although the device went away" 0 "$rc"
python3 "$TMP/summarise.py" "$TMP/u.out" >"$TMP/u.sum" 2>&1
check_grep "uinput: key, click, 5 px, a scroll, 6 events in interval 1" \
	'^1 vdev events=6 keys=1 clicks=1 scrolls=1 mouse_px=5$' "$TMP/u.sum"
check_grep "uinput: unplugged device reported, stream goes on" "input device '.*' is gone: No such device" "$TMP/u.err"
no_sanitizer_report "uinput: no sanitizer report" "$TMP/u.err"
