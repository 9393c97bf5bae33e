# tests/lib.sh - the harness every integration test sources.
#
# A test script prints one line per check on stdout:
#   ok NAME | not ok NAME: why | skip NAME: reason
# and everything else on stderr. tests/run.sh counts the lines. A script
# exits 0 even when checks fail; a non-zero exit is itself counted as a
# failure ("script exited N").
#
# Environment (set by make check): IPKIT_BIN (programs to test), IPKIT_TOP
# (source tree). Each script gets a fresh scratch directory in $TMP, removed
# at exit unless IPKIT_KEEP=1.

set -u
: "${IPKIT_TOP:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${IPKIT_BIN:=$IPKIT_TOP/build/san/bin}"
export IPKIT_TOP IPKIT_BIN
export PATH="$IPKIT_BIN:$PATH"
# ASan: leaks are errors, and the shadow gap is left unprotected because the
# CUDA runtime maps memory there on GPU hosts; UBSan: abort with a report.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=99:protect_shadow_gap=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:exitcode=98}"
# Tests never read the machine's own configuration.
export IPKIT_CONFIG=/dev/null
unset LIBVIRT_DEFAULT_URI

TEST_NAME=$(basename "$0" .sh)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ipkit-$TEST_NAME.XXXXXX")
_cleanups=()
_cleanup() {
	local i
	for ((i = ${#_cleanups[@]} - 1; i >= 0; i--)); do eval "${_cleanups[$i]}" >&2 || true; done
	[ "${IPKIT_KEEP:-0}" = 1 ] || rm -rf "$TMP"
}
trap _cleanup EXIT
# at_exit CMD: run CMD when the script ends (last registered runs first).
at_exit() { _cleanups+=("$*"); }

ok() { printf 'ok %s\n' "$1"; }
fail() { printf 'not ok %s: %s\n' "$1" "${2:-failed}"; }
skip() { printf 'skip %s: %s\n' "$1" "$2"; }
# skip_all REASON: skip the whole script (one skip line) and exit.
skip_all() { skip "$TEST_NAME" "$1"; exit 0; }

need_root() { [ "$(id -u)" = 0 ] || skip_all "needs root"; }
need_cmd() { local c; for c in "$@"; do command -v "$c" >/dev/null 2>&1 || skip_all "needs $c"; done; }
# The major version of the QEMU the lab's guests run on (IPKIT_GUEST_EMULATOR,
# as examples/guest/ipkit-guest takes it)
guest_qemu_major() {
	"${IPKIT_GUEST_EMULATOR:-qemu-system-x86_64}" --version | sed -n '1s/.*version \([0-9][0-9]*\)\..*/\1/p'
}

# check NAME CMD...: ok when CMD succeeds, else not ok with its stderr tail.
check() {
	local name=$1; shift
	if "$@" >"$TMP/.out" 2>"$TMP/.err"; then ok "$name"; else fail "$name" "exit $? from: $* ($(tail -c 300 "$TMP/.err" | tr '\n' ' '))"; fi
}
# check_eq NAME EXPECTED ACTUAL
check_eq() {
	if [ "$2" = "$3" ]; then ok "$1"; else fail "$1" "expected '$2', got '$3'"; fi
}
# check_exit NAME CODE CMD...: CMD must exit with CODE.
check_exit() {
	local name=$1 want=$2; shift 2
	"$@" >"$TMP/.out" 2>"$TMP/.err"
	local got=$?
	if [ "$got" = "$want" ]; then ok "$name"; else fail "$name" "exit $got, wanted $want ($(tail -c 300 "$TMP/.err" | tr '\n' ' '))"; fi
}
# check_grep NAME PATTERN FILE: FILE has a line matching PATTERN (ERE).
check_grep() {
	if grep -Eq -- "$2" "$3"; then ok "$1"; else fail "$1" "no line matching '$2' in $(basename "$3"): $(head -c 300 "$3" | tr '\n' ' ')"; fi
}
# no_sanitizer_report NAME FILE: FILE (a stderr capture) has no ASan/UBSan report.
no_sanitizer_report() {
	if grep -Eq 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$2"; then fail "$1" "sanitizer report: $(grep -Em1 'ERROR|runtime error' "$2")"; else ok "$1"; fi
}
