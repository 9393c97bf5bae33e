/* verify.h - checks that a migrated session works: the test guest's
 * verification protocol (examples/guest: "verify" on its control socket
 * answers "ipkit-verify <frame-checksum> <heartbeat-counter>"), a user's
 * command, and an HTTP URL probed with libcurl.
 *
 * Ownership: callers own every buffer; nothing is allocated for them.
 */
#ifndef IPK_VERIFY_H
#define IPK_VERIFY_H

#include <stdint.h>

#include "ipk.h"

struct ipk_guest_answer {
	char checksum[33]; /* hex, as the guest printed it */
	uint64_t counter;  /* heartbeat counter (guest seconds) */
};

/* Send "verify" on the guest's unix control socket at sock (retrying the
 * connection and the request every 2 s: a guest just restored may not
 * listen yet) until it answers or timeout seconds pass. Returns 0 with *a
 * filled, or -1 with err: IPK_EXIT_UNAVAILABLE (no socket / no answer in
 * time), IPK_EXIT_FAIL (the guest answered ipkit-verify-error). */
int ipk_guest_verify(const char *sock, double timeout, struct ipk_guest_answer *a, struct ipk_err *err);

/* Ask again every 20 ms until the guest's heartbeat counter went up from
 * first's, and return that answer in *later: it shows the guest's timers
 * run. Returns 0, or -1 with err: IPK_EXIT_FAIL when the counter went back
 * or did not move within stuck seconds (the message names the socket and
 * the counters), or ipk_guest_verify's errors. */
int ipk_guest_wait_moved(const char *sock, double timeout, double stuck, const struct ipk_guest_answer *first,
			 struct ipk_guest_answer *later, struct ipk_err *err);

/* Run cmd with /bin/sh -c, environment extended by env ("NAME=value"
 * strings, NULL-terminated, may be NULL), its standard output sent to
 * standard error; kill it (and its process group) after timeout seconds.
 * Returns 0 when it exits 0, else -1 with err (IPK_EXIT_FAIL: "check
 * command 'CMD': exit N" / "killed after N s"; IPK_EXIT_OSERR: no fork). */
int ipk_check_command(const char *cmd, char *const env[], double timeout, struct ipk_err *err);

/* GET url with libcurl; success is a 2xx status within timeout seconds.
 * Returns 0 (and *status) or -1 with err (IPK_EXIT_FAIL for another
 * status, IPK_EXIT_UNAVAILABLE when the request failed). */
int ipk_check_url(const char *url, double timeout, long *status, struct ipk_err *err);

#endif
