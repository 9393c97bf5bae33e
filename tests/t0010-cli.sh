#!/bin/bash
# Every program follows the common conventions: --help, --version, usage
# errors (exit 64), config file errors (exit 78), a man page whose options
# match --help, completions generated from the current --help.
. "$(dirname "$0")/lib.sh"

tools=()
for src in "$IPKIT_TOP"/tools/ip-*.c; do tools+=("$(basename "$src" .c)"); done
[ ${#tools[@]} -gt 0 ] || skip_all "no programs"

for t in "${tools[@]}"; do
	if "$t" --help >"$TMP/help" 2>"$TMP/err" && head -1 "$TMP/help" | grep -q "^Usage: $t " && [ ! -s "$TMP/err" ]; then
		ok "$t --help on stdout, exit 0"
	else
		fail "$t --help on stdout, exit 0" "$(head -c 200 "$TMP/err")"
	fi
	check_eq "$t --version" "$t (ipkit) $(sed -n 's/^#define IPK_VERSION "\(.*\)"/\1/p' "$IPKIT_TOP/lib/ipk.h")" "$("$t" --version 2>&1)"
	"$t" --no-such-option >"$TMP/out" 2>"$TMP/err"
	rc=$?
	if [ $rc = 64 ] && grep -q "^$t: unknown option '--no-such-option'" "$TMP/err" && [ ! -s "$TMP/out" ]; then
		ok "$t unknown option: exit 64, message on stderr only"
	else
		fail "$t unknown option: exit 64, message on stderr only" "exit $rc: $(head -c 200 "$TMP/err")"
	fi
	"$t" --verbose=2 >"$TMP/out" 2>"$TMP/err"
	rc=$?
	if [ $rc = 64 ] && grep -q "^$t: option '--verbose' takes no argument" "$TMP/err" && [ ! -s "$TMP/out" ]; then
		ok "$t flag given a value: exit 64, says it takes none"
	else
		fail "$t flag given a value: exit 64, says it takes none" "exit $rc: $(head -c 200 "$TMP/err")"
	fi
	if [ -w /dev/full ]; then
		check_exit "$t --version to a full device: exit 74" 74 sh -c '"$0" --version >/dev/full' "$t"
		check_exit "$t --help to a full device: exit 74" 74 sh -c '"$0" --help >/dev/full' "$t"
	fi
	# Abbreviations of long options are refused.
	long=$(grep -oE -- '--[a-z][a-z-]{4,}' "$TMP/help" | grep -v -- '--help\|--version\|--verbose' | head -1)
	if [ -n "$long" ]; then
		check_exit "$t refuses abbreviated ${long}" 64 "$t" "${long%??}"
	fi
	printf 'verbose = yes\n%s.no-such-key = 1\n' "$t" >"$TMP/bad.conf"
	IPKIT_CONFIG=$TMP/bad.conf "$t" --version >"$TMP/out" 2>"$TMP/err"
	rc=$?
	if [ $rc = 78 ] && grep -q "bad.conf' line 2: unknown key '$t.no-such-key'" "$TMP/err"; then
		ok "$t config error names file and line, exit 78"
	else
		fail "$t config error names file and line, exit 78" "exit $rc: $(head -c 200 "$TMP/err")"
	fi

	man=$IPKIT_TOP/man/$t.1
	if [ ! -f "$man" ]; then
		fail "$t has a man page" "man/$t.1 missing"
		continue
	fi
	ok "$t has a man page"
	for sec in SYNOPSIS DESCRIPTION OPTIONS "EXIT STATUS" EXAMPLES "SEE ALSO"; do
		grep -q "^\.SH \"\?$sec" "$man" || fail "$t man page has $sec" "no .SH $sec"
	done
	sed 's/\\-/-/g' "$man" >"$TMP/man.txt"
	missing=""
	for o in $(grep -oE -- '--[a-z][a-z0-9-]*' "$TMP/help" | sort -u); do
		grep -qE -- "(^|[^a-z-])$o([^a-z-]|$)" "$TMP/man.txt" || missing="$missing $o"
	done
	check_eq "$t man page documents every option of --help" "" "$missing"
	extra=""
	for o in $(grep -oE -- '^\.B[RI]? --[a-z][a-z0-9-]*' "$TMP/man.txt" | sed 's/.*--//' | sort -u); do
		grep -q -- "--$o\b" "$TMP/help" || extra="$extra --$o"
	done
	check_eq "$t man page documents no option --help lacks" "" "$extra"
	# The exit codes every program can return are listed in EXIT STATUS.
	awk '/^\.SH "?EXIT STATUS/{on=1;next} /^\.SH/{on=0} on' "$man" >"$TMP/exit"
	for code in 0 64 78; do
		grep -qw "$code" "$TMP/exit" || fail "$t man page lists exit status $code" "not in EXIT STATUS"
	done
	if command -v groff >/dev/null; then
		warn=$(LC_ALL=C groff -man -Tutf8 -ww -z "$man" 2>&1)
		check_eq "$t man page renders without groff warnings" "" "$warn"
	fi
done

for m in "$IPKIT_TOP"/man/*.[57]; do
	[ -f "$m" ] || continue
	warn=$(LC_ALL=C groff -man -Tutf8 -ww -z "$m" 2>&1)
	check_eq "$(basename "$m") renders without groff warnings" "" "$warn"
done

# Completions are generated from --help: the committed ones must be current.
"$IPKIT_TOP/completions/generate" -o "$TMP/comp" "$IPKIT_BIN" "${tools[@]}" 2>"$TMP/err"
for t in "${tools[@]}"; do
	if diff -q "$TMP/comp/bash/$t" "$IPKIT_TOP/completions/bash/$t" >/dev/null 2>&1 &&
		diff -q "$TMP/comp/zsh/_$t" "$IPKIT_TOP/completions/zsh/_$t" >/dev/null 2>&1; then
		ok "$t completions are current"
	else
		fail "$t completions are current" "run 'make completions'"
	fi
	if bash -c ". '$IPKIT_TOP/completions/bash/$t' && COMP_WORDS=($t --he) COMP_CWORD=1 && _$(echo "$t" | tr - _) && [ \"\${COMPREPLY[*]}\" = --help ]"; then
		ok "$t bash completion completes --he"
	else
		fail "$t bash completion completes --he"
	fi
	# Checklist for a program: source, man page, completion, an integration test.
	ls "$IPKIT_TOP"/tests/t[0-9]*-"${t#ip-}"*.sh >/dev/null 2>&1 && ok "$t has an integration test" ||
		fail "$t has an integration test" "no tests/tNNNN-${t#ip-}*.sh"
done
