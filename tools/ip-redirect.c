/* ip-redirect - point a migrated session's client traffic at its new host
 * through a load balancer (HAProxy, Caddy or a webhook). */
#define _GNU_SOURCE
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "record.h"
#include "redirect.h"

enum {
	OPT_SERVER = 256, OPT_ROUTE, OPT_SESSION, OPT_MAP, OPT_PORT, OPT_TIMEOUT, OPT_RETRIES, OPT_CACERT, OPT_CERT,
	OPT_KEY, OPT_KEEP, OPT_DRY_RUN,
};

static const struct ipk_opt opts[] = {
	{ "lb", required_argument, 'l', "DRIVER:WHERE", "load balancer: haproxy:SOCKET, haproxy:HOST:PORT, caddy[:URL] or webhook:URL" },
	{ "to", required_argument, 't', "HOST:PORT", "new address of the session; without --to, read migration records on stdin" },
	{ "server", required_argument, OPT_SERVER, "BACKEND/SERVER", "HAProxy server that carries the session (with --to)" },
	{ "route", required_argument, OPT_ROUTE, "ID", "Caddy reverse_proxy @id, or a config path, of the session (with --to)" },
	{ "session", required_argument, OPT_SESSION, "NAME", "session name in the record and webhook body (default: server or route)" },
	{ "map", required_argument, OPT_MAP, "SESSION=TARGET", "stream mode: SESSION's server BACKEND/SERVER or route ID (repeatable)" },
	{ "port", required_argument, OPT_PORT, "PORT", "stream mode: port to use with the 'to' host of a record without 'address'" },
	{ "timeout", required_argument, OPT_TIMEOUT, "SECONDS", "limit for each request and for the confirmation (default 10)" },
	{ "retries", required_argument, OPT_RETRIES, "N", "webhook: tries after a failed one, with backoff (default 2)" },
	{ "cacert", required_argument, OPT_CACERT, "FILE", "TLS: CA certificates that verify the server" },
	{ "cert", required_argument, OPT_CERT, "FILE", "TLS: client certificate (PEM)" },
	{ "key", required_argument, OPT_KEY, "FILE", "TLS: client certificate's private key (PEM)" },
	{ "keep-sessions", no_argument, OPT_KEEP, NULL, "HAProxy: do not shut down connections still on the old address" },
	{ "dry-run", no_argument, OPT_DRY_RUN, NULL, "show what would be sent on stderr; change nothing" },
	{ NULL, 0, 0, NULL, NULL },
};

static const struct ipk_prog prog = {
	.name = "ip-redirect",
	.synopsis = "[OPTION]... --lb DRIVER:WHERE [--to HOST:PORT]",
	.summary = "Move a session's client traffic to its new host through HAProxy, Caddy or a webhook; "
		   "without --to, act on migration records read from stdin.",
	.opts = opts,
};

/* Show what was (or would be) sent: on stderr, indented. */
static void show_sent(const struct ipk_cli *cli, const struct ipk_redirect_result *res, const char *lb, int dry)
{
	if (!res->sent || cli->verbose < (dry ? 0 : 1))
		return;
	fprintf(stderr, "%s: %s %s:\n", cli->prog->name, dry ? "dry run, would send to" : "sent to", lb);
	const char *p = res->sent;
	while (*p) {
		size_t l = strcspn(p, "\n");
		fprintf(stderr, "  %.*s\n", (int)l, p);
		p += l;
		if (*p)
			p++;
	}
}

/* The redirect record for one try. to_text is used when the address did
 * not parse. */
static cJSON *redirect_record(const char *session, const char *driver, const char *target, const char *to_text,
			      const struct ipk_redirect_result *res, int rc, int dry, const struct ipk_err *err)
{
	cJSON *j = ipk_record_new("redirect", ipk_now());
	if (!j)
		return NULL;
	int ok = cJSON_AddStringToObject(j, "session", session) && cJSON_AddStringToObject(j, "driver", driver) &&
		 cJSON_AddStringToObject(j, "to", res->to[0] ? res->to : to_text ? to_text : "") &&
		 cJSON_AddBoolToObject(j, "confirmed", rc == 0 && res->confirmed) &&
		 (!res->from[0] || cJSON_AddStringToObject(j, "from", res->from)) &&
		 (!target || cJSON_AddStringToObject(j, "target", target)) &&
		 cJSON_AddNumberToObject(j, "seconds", round(res->seconds * 1e6) / 1e6) &&
		 (!res->check || rc < 0 || dry || cJSON_AddStringToObject(j, "check", res->check)) &&
		 (!dry || cJSON_AddBoolToObject(j, "dry_run", 1)) &&
		 (rc == 0 || (cJSON_AddBoolToObject(j, "restored", res->restored) &&
			      cJSON_AddStringToObject(j, "error", err->msg) && cJSON_AddNumberToObject(j, "code", err->code)));
	if (!ok) {
		cJSON_Delete(j);
		return NULL;
	}
	return j;
}

struct ctx {
	struct ipk_cli *cli;
	struct ipk_redirector *r;
	const char *lb;
	int dry;
	struct ipk_writer *out;
};

/* Write the redirect record of one try; 0, or -1 with err. */
static int write_record(struct ctx *c, const char *session, const char *target, const char *to_text,
			const struct ipk_redirect_result *res, int rc, const struct ipk_err *why, struct ipk_err *err)
{
	cJSON *rec = redirect_record(session, ipk_redirector_driver(c->r), target, to_text, res, rc, c->dry, why);
	int wrc = 0;
	if (!rec)
		wrc = ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	else if (ipk_write(c->out, rec, err) < 0)
		wrc = -1;
	cJSON_Delete(rec);
	return wrc;
}

/* Redirect one session and write its record. Returns the lib's result
 * (0, or -1 with err), or -2 when the record could not be written (err). */
static int do_one(struct ctx *c, const char *session, const char *target, const char *to_text, struct ipk_err *err)
{
	struct ipk_redirect_result res = { .driver = ipk_redirector_driver(c->r) };
	struct ipk_redirect_target t = { .session = session, .target = target };
	int rc = ipk_addr_parse(to_text, &t.to, err);
	if (rc == 0)
		rc = ipk_redirect(c->r, &t, &res, err);
	show_sent(c->cli, &res, c->lb, c->dry);
	if (rc == 0 && !c->dry)
		ipk_info(c->cli, "session '%s' now at %s (was %s; %s, %.3f s)", session, res.to, res.from[0] ? res.from : "?",
			 res.check ? res.check : "", res.seconds);
	struct ipk_err werr = { 0 };
	int wrc = write_record(c, session, target, to_text, &res, rc, err, &werr);
	ipk_redirect_result_clear(&res);
	if (wrc < 0) {
		*err = werr;
		return -2;
	}
	return rc;
}

/* Stream mode: consume successful migration records, pass the rest. */
static int run_stream(struct ctx *c, const struct ipk_cli_pairs *map, long port, struct ipk_err *err)
{
	struct ipk_reader *rd = ipk_reader_from(stdin, "<stdin>");
	if (!rd)
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory"), IPK_EXIT_OSERR;
	struct ipk_record rec;
	struct ipk_err rerr = { 0 };
	int status = IPK_EXIT_OK;
	long done = 0, failed = 0;
	for (;;) {
		enum ipk_read_result rr = ipk_cli_next_record(c->cli, rd, &rec, &rerr);
		if (rr == IPK_READ_EOF)
			break;
		if (rr == IPK_READ_ERROR) {
			*err = rerr;
			status = rerr.code;
			break;
		}
		const char *outcome = ipk_json_str(rec.json, "outcome", "");
		if (strcmp(rec.type, "migration") != 0 || strcmp(outcome, "success") != 0) {
			if (ipk_write_raw(c->out, rec.line, rec.len, err) < 0) {
				status = err->code;
				break;
			}
			continue;
		}
		const char *session = rec.session;
		const char *target = ipk_cli_pair_get(map, session);
		if (!target)
			target = ipk_json_str(rec.json, "redirect_target", NULL);
		const char *address = ipk_json_str(rec.json, "address", NULL);
		char built[400];
		if (!address && port > 0) {
			const char *host = ipk_json_str(rec.json, "to", "");
			snprintf(built, sizeof(built), strchr(host, ':') ? "[%s]:%ld" : "%s:%ld", host, port);
			address = built;
		}
		struct ipk_err e = { 0 };
		int rc = -1, pre = 1;
		if (!target && strcmp(ipk_redirector_driver(c->r), "webhook") != 0)
			ipk_err_set(&e, IPK_EXIT_DATAERR,
				    "unknown session '%s': no --map entry and no 'redirect_target' in its migration record", session);
		else if (!address)
			ipk_err_set(&e, IPK_EXIT_DATAERR,
				    "migration record for session '%s' gives no address (field 'address', or 'to' with --port)",
				    session);
		else
			rc = do_one(c, session, target, address, &e), pre = 0;
		if (pre) {
			struct ipk_redirect_result none = { 0 };
			if (write_record(c, session, target, address ? address : "", &none, -1, &e, err) < 0)
				rc = -2, e = *err;
		}
		if (rc == -2) {
			*err = e;
			status = e.code;
			break;
		}
		if (rc < 0) {
			failed++;
			/* the record says it too; the warning names where it came from */
			ipk_warn(c->cli, "input '<stdin>' line %ld (session '%s'): %s", rec.lineno, session, e.msg);
		} else {
			done++;
		}
	}
	ipk_info(c->cli, "%ld session%s redirected, %ld failed", done, done == 1 ? "" : "s", failed);
	ipk_reader_close(rd);
	return status;
}

static int cmd_redirect(int argc, char **argv)
{
	struct ipk_cli cli;
	struct ipk_redirect_opts ro = { .timeout = 10, .retries = 2 };
	const char *to = NULL, *server = NULL, *route = NULL, *session = NULL;
	struct ipk_cli_pairs map = { 0 };
	long port = 0, lv = 0;
	int status = IPK_EXIT_OK;
	struct ipk_redirector *r = NULL;
	struct ipk_err err = { 0 };
	struct ipk_writer out;

	if (ipk_cli_init(&cli, &prog, argc, argv) < 0) {
		status = ipk_fail(&cli, &cli.err);
		goto done;
	}
	int c;
	while ((c = ipk_cli_next(&cli)) >= 0) {
		const char *a = cli.optarg;
		int bad = 0;
		switch (c) {
		case 'l':
			ro.lb = a;
			break;
		case 't':
			to = a;
			break;
		case OPT_SERVER:
			server = a;
			break;
		case OPT_ROUTE:
			route = a;
			break;
		case OPT_SESSION:
			session = a;
			break;
		case OPT_MAP:
			bad = ipk_cli_pair_add(&cli, &map, "map", "SESSION=TARGET");
			break;
		case OPT_PORT:
			bad = ipk_parse_long(&cli, "port", a, 1, 65535, &port);
			break;
		case OPT_TIMEOUT:
			bad = ipk_parse_double(&cli, "timeout", a, 0.001, 3600, &ro.timeout);
			break;
		case OPT_RETRIES:
			bad = ipk_parse_long(&cli, "retries", a, 0, 100, &lv);
			ro.retries = (int)lv;
			break;
		case OPT_CACERT:
			ro.cacert = a;
			break;
		case OPT_CERT:
			ro.cert = a;
			break;
		case OPT_KEY:
			ro.key = a;
			break;
		case OPT_KEEP:
			ro.keep_sessions = 1;
			break;
		case OPT_DRY_RUN:
			ro.dry_run = 1;
			break;
		}
		if (bad) {
			status = cli.status ? cli.status : IPK_EXIT_OSERR;
			goto done;
		}
	}
	if (c == IPK_CLI_EXIT) {
		status = cli.status;
		goto done;
	}
	if (cli.optind < argc) {
		status = (ipk_cli_usage_error(&cli, "unexpected argument '%s'", argv[cli.optind]), IPK_EXIT_USAGE);
		goto done;
	}
	if (!ro.lb) {
		status = (ipk_cli_usage_error(&cli, "no load balancer: give --lb DRIVER:WHERE"), IPK_EXIT_USAGE);
		goto done;
	}
	struct ipk_addr probe;
	if (to && ipk_addr_parse(to, &probe, &err) < 0) {
		status = (ipk_cli_usage_error(&cli, "invalid --to: %s", err.msg), IPK_EXIT_USAGE);
		goto done;
	}
	if (ro.key && !ro.cert) {
		status = (ipk_cli_usage_error(&cli, "--key needs --cert"), IPK_EXIT_USAGE);
		goto done;
	}
	if (!(r = ipk_redirector_new(&ro, &err))) {
		if (err.code == IPK_EXIT_USAGE)
			status = (ipk_cli_usage_error(&cli, "%s", err.msg), IPK_EXIT_USAGE);
		else
			status = ipk_fail(&cli, &err);
		goto done;
	}
	const char *driver = ipk_redirector_driver(r);
	if (server && strcmp(driver, "haproxy") != 0) {
		status = (ipk_cli_usage_error(&cli, "--server is for haproxy; with %s use %s", driver,
					      strcmp(driver, "caddy") ? "--session" : "--route"), IPK_EXIT_USAGE);
		goto done;
	}
	if (route && strcmp(driver, "caddy") != 0) {
		status = (ipk_cli_usage_error(&cli, "--route is for caddy; with %s use %s", driver,
					      strcmp(driver, "haproxy") ? "--session" : "--server"), IPK_EXIT_USAGE);
		goto done;
	}
	if (!to && (server || route || session)) {
		status = (ipk_cli_usage_error(&cli, "--server, --route and --session need --to (stream mode maps sessions with --map)"),
			  IPK_EXIT_USAGE);
		goto done;
	}
	const char *target = server ? server : route;
	/* malformed targets are usage errors, found before any session moves */
	for (int i = -1; i < map.n; i++) {
		const char *tg = i < 0 ? target : strchr(map.arg[i], '=') + 1;
		if (tg && ipk_redirect_check_target(r, tg, &err) < 0) {
			status = (ipk_cli_usage_error(&cli, "%s%s", i < 0 ? "" : "--map: ", err.msg), IPK_EXIT_USAGE);
			goto done;
		}
	}
	if (to && !target && strcmp(driver, "webhook") != 0) {
		status = (ipk_cli_usage_error(&cli, "--to needs %s", strcmp(driver, "haproxy") ? "--route ID" : "--server BACKEND/SERVER"),
			  IPK_EXIT_USAGE);
		goto done;
	}
	if (to && !target && !session) {
		status = (ipk_cli_usage_error(&cli, "--to with webhook needs --session NAME"), IPK_EXIT_USAGE);
		goto done;
	}

	signal(SIGPIPE, SIG_IGN);
	ipk_writer_init(&out, stdout);
	struct ctx cx = { .cli = &cli, .r = r, .lb = ro.lb, .dry = ro.dry_run, .out = &out };
	if (to) {
		int rc = do_one(&cx, session ? session : target, target, to, &err);
		if (rc < 0) {
			if (rc == -2 && ipk_writer_closed(&out))
				goto done;
			status = ipk_fail(&cli, &err);
			goto done;
		}
	} else {
		status = run_stream(&cx, &map, port, &err);
		if (status) {
			if (ipk_writer_closed(&out)) {
				status = IPK_EXIT_OK;
				goto done;
			}
			status = ipk_fail(&cli, &err);
			goto done;
		}
	}
	if (!ipk_writer_closed(&out) && ipk_writer_finish(&out, &err) < 0 && !ipk_writer_closed(&out))
		status = ipk_fail(&cli, &err);
done:
	ipk_redirector_free(r);
	ipk_cli_pairs_free(&map);
	ipk_cli_free(&cli);
	return status;
}

int main(int argc, char **argv)
{
	return cmd_redirect(argc, argv);
}
