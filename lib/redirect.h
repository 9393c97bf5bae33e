/* redirect.h - point a session's client traffic at a new address through a
 * load balancer (used by ip-redirect(1)).
 *
 * A redirector is opened on one load balancer, given as "DRIVER:WHERE":
 *   haproxy:/run/haproxy/admin.sock   HAProxy runtime API on a Unix socket
 *   haproxy:HOST:PORT                 ... or on TCP ("stats socket ipv4@...")
 *   caddy[:URL]                       Caddy admin API (default http://localhost:2019)
 *   webhook:URL                       POST a JSON body to URL (http or https)
 * ipk_redirect() then moves one session: the HAProxy server BE/SRV or the
 * Caddy reverse_proxy handler (by "@id", or by a config path starting with
 * '/') named in the target gets the new address, the change is read back
 * and confirmed, and a failed or unconfirmed change is undone. What each
 * driver sends and what "confirmed" means is described in its file
 * (lb_haproxy.c, lb_caddy.c, lb_webhook.c) and in ip-redirect(1).
 *
 * Ownership: a redirector copies what it needs from its options and owns
 * its state until ipk_redirector_free() (NULL is fine). Targets are borrowed
 * for the duration of the call. Results are plain structs filled by the
 * call; res->sent is owned by the result and freed by
 * ipk_redirect_result_clear(). Nothing here prints or exits.
 */
#ifndef IPK_REDIRECT_H
#define IPK_REDIRECT_H

#include <stddef.h>

#include "ipk.h"

/* A validated address: host is an IPv4 literal, an IPv6 literal (without
 * brackets) or a host name; port is 1..65535. */
struct ipk_addr {
	char host[256];
	int port;
	int family; /* 4 or 6 for IP literals, 0 for a host name */
};

/* Parse "HOST:PORT" or "[IPV6]:PORT". Accepts a dotted-quad IPv4 address, a
 * bracketed IPv6 address, or a host name (RFC 1123 labels of letters,
 * digits and '-', at most 63 characters each and 253 in all, not all
 * digits); the port must be decimal 1..65535. Returns 0, or -1 with err
 * (IPK_EXIT_DATAERR) "invalid address 'S': reason". */
int ipk_addr_parse(const char *s, struct ipk_addr *a, struct ipk_err *err);

/* Write a as "HOST:PORT" ("[V6]:PORT" for IPv6) into buf; returns buf. */
char *ipk_addr_format(const struct ipk_addr *a, char *buf, size_t n);

struct ipk_redirect_opts {
	const char *lb;         /* "DRIVER:WHERE" as above */
	double timeout;         /* seconds: each request, and waiting for confirmation (0: 10) */
	int retries;            /* webhook: further tries after a failed one (< 0: 2) */
	const char *cacert;     /* TLS: CA bundle to verify the server with (NULL: system's) */
	const char *cert, *key; /* TLS client certificate and key (PEM files), or NULL */
	int keep_sessions;      /* haproxy: do not shut down the sessions still on the server */
	int dry_run;            /* only describe what would be sent (res->sent); contact nothing */
};

/* One redirect. target is what the driver changes: "BE/SRV" for haproxy, a
 * route "@id" (or a config path starting with '/') for caddy; the webhook
 * sends it in its body when not NULL. session names the session in results
 * and in the webhook body. */
struct ipk_redirect_target {
	const char *session;
	const char *target;
	struct ipk_addr to;
};

struct ipk_redirect_result {
	const char *driver;  /* "haproxy", "caddy" or "webhook" (static) */
	char from[300];      /* the previous address, "" when unknown */
	char to[300];        /* the new address as sent */
	int confirmed;       /* the change was read back and the new address answered */
	int restored;        /* after a failure: the previous routing was put back */
	const char *check;   /* how it was confirmed: "health-check", "probe", "readback", "http-2xx" */
	double seconds;      /* time taken */
	char *sent;          /* what was (or, with dry_run, would be) sent; malloc'd, may be NULL */
};

struct ipk_redirector;

/* Open a redirector on the load balancer o->lb. Nothing is contacted yet.
 * Returns NULL with err: IPK_EXIT_USAGE for a malformed or unknown spec,
 * IPK_EXIT_UNAVAILABLE when libcurl cannot start, IPK_EXIT_OSERR when out
 * of memory. */
struct ipk_redirector *ipk_redirector_new(const struct ipk_redirect_opts *o, struct ipk_err *err);

/* The driver's name ("haproxy", "caddy", "webhook"). */
const char *ipk_redirector_driver(const struct ipk_redirector *r);

/* Check the form of a target name (HAProxy: BACKEND/SERVER) before any
 * session is moved. Returns 0, or -1 with err (IPK_EXIT_USAGE) naming it. */
int ipk_redirect_check_target(const struct ipk_redirector *r, const char *target, struct ipk_err *err);

/* Point t->session's traffic at t->to. Returns 0 when the change is made
 * and confirmed (or, with dry_run, described), filling res. Returns -1 with
 * err and res filled as far as known (res->confirmed 0, res->restored when
 * the previous routing was put back):
 *   IPK_EXIT_DATAERR     unknown backend/server/route, an address the
 *                        load balancer cannot take, an API error (4xx)
 *   IPK_EXIT_UNAVAILABLE socket or API unreachable, HTTP 5xx, webhook failed
 *   IPK_EXIT_TEMPFAIL    changed but not confirmed within the timeout
 *                        (undone), or a concurrent change (HTTP 412)
 * The message names the driver's error text (HAProxy's message, Caddy's
 * "error" field, the webhook's body). */
int ipk_redirect(struct ipk_redirector *r, const struct ipk_redirect_target *t, struct ipk_redirect_result *res,
		 struct ipk_err *err);

/* Free what a result owns and zero it. */
void ipk_redirect_result_clear(struct ipk_redirect_result *res);

void ipk_redirector_free(struct ipk_redirector *r);

/* ---- Driver interface (lib/lb_*.c) ------------------------------------
 * A driver opens its state from the part of the spec after "DRIVER:"
 * (NULL when the spec is just "DRIVER") and the options, and moves one
 * session per call. redirect() fills res (driver, from, to, confirmed,
 * restored, check, sent) and follows ipk_redirect()'s contract; the
 * caller times it. */
struct ipk_lb_driver {
	const char *name;
	void *(*open)(const char *where, const struct ipk_redirect_opts *o, struct ipk_err *err);
	/* optional: refuse a malformed target name before anything is sent */
	int (*check_target)(const char *target, struct ipk_err *err);
	int (*redirect)(void *state, const struct ipk_redirect_target *t, struct ipk_redirect_result *res,
			struct ipk_err *err);
	void (*free)(void *state);
};

extern const struct ipk_lb_driver ipk_lb_haproxy, ipk_lb_caddy, ipk_lb_webhook;

/* Append printf-style text to res->sent. Returns 0, or -1 when out of memory. */
int ipk_redirect_sent(struct ipk_redirect_result *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Try a TCP connection to a within timeout seconds. Returns 0 when it is
 * accepted, or -1 with err (IPK_EXIT_UNAVAILABLE) naming the reason. */
int ipk_tcp_probe(const struct ipk_addr *a, double timeout, struct ipk_err *err);

/* A small HTTP exchange through libcurl, shared by the caddy and webhook
 * drivers. body may be NULL (no request body). The response body (at most
 * 1 MiB, NUL-terminated) and the ETag header or trailer are returned in
 * *resp (free with ipk_http_resp_clear()). Returns 0 when a response came
 * (any status), or -1 with err (IPK_EXIT_UNAVAILABLE) when the transfer
 * failed; curl_failed tells the caller it may retry. */
struct ipk_http_req {
	const char *method, *url, *body, *if_match;
	double timeout;
	const char *cacert, *cert, *key;
};
struct ipk_http_resp {
	long status;
	char *body;
	size_t len;
	char etag[512];
};
int ipk_http(void *curl, const struct ipk_http_req *q, struct ipk_http_resp *p, struct ipk_err *err);
void ipk_http_resp_clear(struct ipk_http_resp *p);

/* ---- Response parsers, exposed for the unit tests -------------------- */

/* One server's line of HAProxy's "show servers state BE" (format 1), found
 * by server name. */
struct ipk_hap_server {
	char addr[64];
	int port;
	int op_state;    /* 0 stopped, 1 starting, 2 running, 3 stopping */
	int admin_state; /* bit flags: 0x01 forced maint, 0x08 forced drain, ... */
	int check_state; /* bit flags: 0x04 enabled, ... */
};

/* Find server srv in the output of "show servers state"; columns are
 * located by the "# be_id be_name ..." header line. Returns 1 when found,
 * 0 when the output has no such server, -1 when it cannot be parsed. */
int ipk_hap_parse_state(const char *text, const char *srv, struct ipk_hap_server *out);

/* The value of column col for server srv in the CSV of "show stat", copied
 * into buf. Returns 1 when found, 0 when not, -1 when unparseable. */
int ipk_hap_stat_field(const char *text, const char *srv, const char *col, char *buf, size_t n);

/* The error text in a runtime API answer: the text of "[N]: message" lines
 * with N <= 4, or of a bare non-empty answer when numbered output is off,
 * whitespace trimmed. ok_marker, when not NULL, is a substring that makes a
 * severity-4 message a success notice (e.g. "changed from"). Returns 1 and
 * fills buf when the answer is an error, 0 when it is not. */
int ipk_hap_answer_error(const char *answer, const char *ok_marker, char *buf, size_t n);

/* The "error" field of a Caddy JSON error body (or the body itself, cut to
 * n - 1 bytes and trimmed, when it is not such JSON) into buf. */
void ipk_caddy_error_text(const char *body, char *buf, size_t n);

/* The "dial" addresses of a Caddy upstreams array, joined by ',', into buf.
 * Returns the number of upstreams, or -1 when body is not such an array. */
int ipk_caddy_upstreams(const char *body, char *buf, size_t n);

#endif
