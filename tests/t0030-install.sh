#!/bin/bash
# make install into a scratch DESTDIR: programs, man pages, completions,
# library, headers and a pkg-config file that a program can build against.
. "$(dirname "$0")/lib.sh"
need_cmd make pkg-config cc

d=$TMP/root
if make -s -C "$IPKIT_TOP" install DESTDIR="$d" PREFIX=/usr/local >"$TMP/log" 2>&1; then
	ok "make install DESTDIR"
else
	fail "make install DESTDIR" "$(tail -5 "$TMP/log")"
	exit 0
fi
for src in "$IPKIT_TOP"/tools/ip-*.c; do
	t=$(basename "$src" .c)
	[ -x "$d/usr/local/bin/$t" ] && ok "installed $t" || fail "installed $t"
	[ -f "$d/usr/local/share/man/man1/$t.1" ] && ok "installed $t.1" || fail "installed $t.1"
	[ -f "$d/usr/local/share/bash-completion/completions/$t" ] && [ -f "$d/usr/local/share/zsh/vendor-completions/_$t" ] &&
		ok "installed $t completions" || fail "installed $t completions"
done
[ -f "$d/usr/local/share/man/man7/ipkit-records.7" ] && ok "installed ipkit-records.7" || fail "installed ipkit-records.7"
check_eq "installed program runs" "ip-collect (ipkit) $("$IPKIT_BIN/ip-collect" --version | awk '{print $3}')" \
	"$("$d/usr/local/bin/ip-collect" --version)"

cat >"$TMP/use.c" <<'C'
#include <ipkit/ipk.h>
#include <ipkit/record.h>
#include <stdio.h>
int main(void)
{
	cJSON *r = ipk_record_new("probe", 1.5);
	struct ipk_err err = { 0 };
	int ok = ipk_record_validate(r, &err) == 0;
	cJSON_Delete(r);
	printf("%s %s\n", IPK_VERSION, ok ? "valid" : err.msg);
	return !ok;
}
C
pc="$d/usr/local/lib/pkgconfig"
flags=$(PKG_CONFIG_PATH=$pc PKG_CONFIG_SYSROOT_DIR=$d pkg-config --cflags --libs ipkit 2>"$TMP/err")
if cc -o "$TMP/use" "$TMP/use.c" $flags 2>>"$TMP/err" && "$TMP/use" | grep -q valid; then
	ok "a program builds against the installed library with pkg-config"
else
	fail "a program builds against the installed library with pkg-config" "$(head -c 300 "$TMP/err")"
fi
# a second install under another prefix describes that prefix, not the first
if make -s -C "$IPKIT_TOP" install DESTDIR="$TMP/root2" PREFIX=/opt/ipkit >"$TMP/log" 2>&1; then
	check_eq "pkg-config file of a second install names its own prefix" "prefix=/opt/ipkit includedir=/opt/ipkit/include" \
		"$(grep -E '^(prefix|includedir)=' "$TMP/root2/opt/ipkit/lib/pkgconfig/ipkit.pc" | tr '\n' ' ' | sed 's/ $//')"
else
	fail "make install under a second prefix" "$(tail -5 "$TMP/log")"
fi
make -s -C "$IPKIT_TOP" uninstall DESTDIR="$d" PREFIX=/usr/local >/dev/null 2>&1
left=$(find "$d" -type f | head -3)
check_eq "make uninstall removes what install put" "" "$left"
