/* ipk.h - what every part of libipkit shares: version, exit codes, errors.
 *
 * Ownership: an ipk_err is owned by the caller (usually on main's stack) and
 * filled by the lib function that failed; nothing in it needs freeing.
 * lib/ never exits and never prints on its own: it returns -1 (or NULL) and
 * describes the failure in the ipk_err the caller passed; tools/ decide.
 */
#ifndef IPK_H
#define IPK_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define IPK_VERSION "0.1.0"

/* Exit codes: sysexits(3) values, defined once, listed in every man page. */
enum ipk_exit {
	IPK_EXIT_OK = 0,
	IPK_EXIT_FAIL = 1,        /* a check failed (e.g. status "down") */
	IPK_EXIT_USAGE = 64,      /* EX_USAGE: bad command line */
	IPK_EXIT_DATAERR = 65,    /* EX_DATAERR: bad input data (--strict) */
	IPK_EXIT_NOINPUT = 66,    /* EX_NOINPUT: an input file cannot be opened */
	IPK_EXIT_UNAVAILABLE = 69,/* EX_UNAVAILABLE: a service/source is unreachable */
	IPK_EXIT_SOFTWARE = 70,   /* EX_SOFTWARE: internal error */
	IPK_EXIT_OSERR = 71,      /* EX_OSERR: out of memory, fork failed, ... */
	IPK_EXIT_CANTCREAT = 73,  /* EX_CANTCREAT: an output cannot be created */
	IPK_EXIT_IOERR = 74,      /* EX_IOERR: read/write error */
	IPK_EXIT_TEMPFAIL = 75,   /* EX_TEMPFAIL: try again later */
	IPK_EXIT_CONFIG = 78,     /* EX_CONFIG: bad configuration file */
};

/* A failure description: the exit code a tool should use for it and a
 * message in the house form "what failed 'subject': reason". */
struct ipk_err {
	int code;         /* an enum ipk_exit value, IPK_EXIT_OK when unset */
	char msg[1024];
};

/* Fill err (if not NULL) with code and a printf-style message; returns -1 so
 * callers can write `return ipk_err_set(err, ...);`. */
int ipk_err_set(struct ipk_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Wall-clock time in seconds since the Unix epoch, fractional. */
double ipk_now(void);

/* Monotonic time in seconds, for measuring durations. */
double ipk_mono(void);

/* An XXH3-128 (an image's or a file's identity) as ipkit writes it: 32 hex
 * digits, high half first. */
void ipk_id_hex(uint64_t hi, uint64_t lo, char out[33]);

#endif
