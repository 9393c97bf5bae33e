/* verify.h - checks that a migrated session works: the test guest's
 * verification protocol (examples/guest: "verify" on its control socket
 * answers "ipkit-verify <frame-checksum> <heartbeat-counter>", "timer MS"
 * answers "ipkit-timer <heartbeat-counter>" once the timer fired), a user's
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

/* Ask the guest ("timer MS") to arm a timer of ms milliseconds in its
 * heartbeat loop and wait for its answer once it fired: it shows the
 * guest's timers run without waiting up to a second for its next
 * heartbeat. *later is *first with the counter it answered. Returns 0, or
 * -1 with err IPK_EXIT_FAIL: no answer within timeout seconds (its timers
 * do not run), the guest refused, or its counter went back from first's. */
int ipk_guest_timer(const char *sock, double timeout, unsigned ms, const struct ipk_guest_answer *first,
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
