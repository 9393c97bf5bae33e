#!/bin/bash
# tests/run.sh - run the C unit tests and the integration tests, count the
# results and print "N passed, N failed, N skipped" last.
#   tests/run.sh               everything
#   tests/run.sh t0010 t0100   only scripts whose names start with these
#   tests/run.sh --unit-only   only the C unit tests
set -u
top=${IPKIT_TOP:-$(cd "$(dirname "$0")/.." && pwd)}
unit=${IPKIT_UNIT:-$top/build/san/unit}
export IPKIT_TOP=$top
log=${IPKIT_TEST_LOG:-$top/build/test-logs}
mkdir -p "$log"

unit_only=0
filters=()
for a in "$@"; do
	case $a in
	--unit-only) unit_only=1 ;;
	*) filters+=("$a") ;;
	esac
done

pass=0 failn=0 skipn=0
skipped=() failed=()

account() { # account SCRIPT-NAME OUTPUT-FILE EXIT-CODE
	local name=$1 out=$2 rc=$3 line
	while IFS= read -r line; do
		case $line in
		"ok "*) pass=$((pass + 1)) ;;
		"not ok "*) failn=$((failn + 1)); failed+=("$name: ${line#not ok }") ;;
		"skip "*) skipn=$((skipn + 1)); skipped+=("$name: ${line#skip }") ;;
		esac
		printf '%s\n' "$line"
	done <"$out"
	if [ "$rc" != 0 ]; then
		failn=$((failn + 1))
		failed+=("$name: exited $rc (log: $log/$name.err)")
		echo "not ok $name: exited $rc"
	fi
}

wanted() {
	[ ${#filters[@]} = 0 ] && return 0
	local f
	for f in "${filters[@]}"; do case $1 in "$f"*) return 0 ;; esac; done
	return 1
}

if [ ${#filters[@]} = 0 ] || [ $unit_only = 1 ]; then
	for t in "$unit"/test-*; do
		[ -x "$t" ] || continue
		name=$(basename "$t")
		echo "# $name" >&2
		(cd "$top" && timeout 600 "$t") >"$log/$name.out" 2>"$log/$name.err"
		account "$name" "$log/$name.out" $?
	done
fi

if [ $unit_only = 0 ]; then
	for t in "$top"/tests/t[0-9]*.sh; do
		name=$(basename "$t" .sh)
		wanted "$name" || continue
		echo "# $name" >&2
		start=$(date +%s)
		(cd "$top" && timeout 1200 bash "$t") >"$log/$name.out" 2>"$log/$name.err"
		rc=$?
		echo "# $name took $(($(date +%s) - start)) s" >&2
		account "$name" "$log/$name.out" $rc
	done
fi

echo
for s in "${skipped[@]+"${skipped[@]}"}"; do echo "skipped: $s"; done
for f in "${failed[@]+"${failed[@]}"}"; do echo "FAILED: $f"; done
echo "$pass passed, $failn failed, $skipn skipped"
[ $failn = 0 ]
