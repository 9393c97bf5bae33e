/* lb_haproxy.c - the HAProxy runtime API driver (see redirect.h).
 *
 * The runtime API ("stats socket PATH level admin", or a TCP socket) takes
 * one command per connection here; each is prefixed with
 * "set severity-output number;" so that answers carry a severity ("[3]: No
 * such server."). Success prints nothing, except "set server ... addr",
 * which answers a severity-4 notice ("... changed from ... to ...") on
 * success and on failure alike: it is told apart by its text, and the
 * result is read back anyway.
 *
 * Moving server BE/SRV to IP:PORT:
 *   1. show servers state BE          old address, op/admin/check state
 *   2. without health checks: a direct TCP probe of the new address (a dead
 *      address is refused before anything changes)
 *   3. set server BE/SRV addr IP port PORT
 *   4. set server BE/SRV state ready  only when the server was in
 *      maintenance or drain (it would take no traffic otherwise)
 *   5. with health checks: set server BE/SRV health down, then poll
 *      "show servers state BE" until the server is up again: the stats say
 *      UP right after a switch even when the new port is dead, but after a
 *      forced "health down" only a passing check at the new address brings
 *      it back. Not up within the timeout: the old address, admin state and
 *      health are put back, and the check's verdict ("show stat") is named.
 *   6. read back address and port; then shutdown sessions server BE/SRV
 *      (unless keep_sessions), so that connections still held on the old
 *      address close and the client's reconnect lands on the new one.
 * HAProxy does not resolve names in "set server addr": the new address must
 * be an IP literal. Ports are not range-checked by HAProxy; ipk_addr_parse()
 * did that.
 */
#define _GNU_SOURCE
#include "redirect.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define HAP_MAX_ANSWER (4u << 20)
#define HAP_POLL_S 0.1

/* Admin state flags (srv_admin_state) and check state (srv_check_state). */
#define ADMF_FMAINT 0x01
#define ADMF_FDRAIN 0x08
#define CHK_ST_ENABLED 0x04

struct hap {
	char *path;          /* Unix socket, or NULL for TCP */
	struct ipk_addr tcp;
	char name[400];      /* for messages */
	double timeout;
	int keep_sessions, dry_run;
};

static void *hap_open(const char *where, const struct ipk_redirect_opts *o, struct ipk_err *err)
{
	if (!where)
		return ipk_err_set(err, IPK_EXIT_USAGE,
				   "invalid load balancer 'haproxy': give its runtime API socket (haproxy:PATH or haproxy:HOST:PORT)"),
		       NULL;
	struct hap *h = calloc(1, sizeof(*h));
	if (!h)
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory"), NULL;
	if (!strncmp(where, "unix:", 5))
		where += 5;
	if (where[0] == '/' || where[0] == '.' || !strchr(where, ':')) {
		if (strlen(where) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			free(h);
			return ipk_err_set(err, IPK_EXIT_USAGE, "invalid load balancer 'haproxy:%s': socket path too long", where),
			       NULL;
		}
		if (!(h->path = strdup(where))) {
			free(h);
			return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory"), NULL;
		}
	} else {
		struct ipk_err aerr = { 0 };
		if (!strncmp(where, "tcp:", 4))
			where += 4;
		if (ipk_addr_parse(where, &h->tcp, &aerr) < 0) {
			free(h);
			return ipk_err_set(err, IPK_EXIT_USAGE, "invalid load balancer 'haproxy:%s': %s", where, aerr.msg), NULL;
		}
	}
	snprintf(h->name, sizeof(h->name), "%s", where);
	h->timeout = o->timeout;
	h->keep_sessions = o->keep_sessions;
	h->dry_run = o->dry_run;
	return h;
}

static void hap_free(void *state)
{
	struct hap *h = state;
	if (!h)
		return;
	free(h->path);
	free(h);
}

static int hap_connect(struct hap *h, struct ipk_err *err)
{
	int fd = -1;
	if (h->path) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		memcpy(sa.sun_path, h->path, strlen(h->path) + 1);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			int e = errno;
			if (fd >= 0)
				close(fd);
			return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot connect to haproxy runtime API '%s': %s", h->name,
					   strerror(e));
		}
		return fd;
	}
	char port[8];
	snprintf(port, sizeof(port), "%d", h->tcp.port);
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *ai = NULL;
	int gai = getaddrinfo(h->tcp.host, port, &hints, &ai);
	if (gai)
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot connect to haproxy runtime API '%s': %s", h->name,
				   gai_strerror(gai));
	int e = ECONNREFUSED;
	for (struct addrinfo *p = ai; p; p = p->ai_next) {
		fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, p->ai_protocol);
		if (fd < 0) {
			e = errno;
			continue;
		}
		if (connect(fd, p->ai_addr, p->ai_addrlen) == 0)
			break;
		e = errno;
		if (e == EINPROGRESS) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };
			int soerr = ETIMEDOUT;
			socklen_t sl = sizeof(soerr);
			if (poll(&pfd, 1, (int)(h->timeout * 1000)) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 &&
			    soerr == 0)
				break;
			e = soerr;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0)
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot connect to haproxy runtime API '%s': %s", h->name,
				   strerror(e));
	return fd;
}

/* Send one command, return its answer (malloc'd) in *answer. */
static int hap_cmd(struct hap *h, struct ipk_redirect_result *res, const char *cmd, char **answer, struct ipk_err *err)
{
	*answer = NULL;
	if (res && ipk_redirect_sent(res, "%s\n", cmd) < 0)
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	int fd = hap_connect(h, err);
	if (fd < 0)
		return -1;
	char *line = NULL;
	int n = asprintf(&line, "set severity-output number; %s\n", cmd);
	if (n < 0) {
		close(fd);
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	}
	double end = ipk_mono() + h->timeout;
	size_t off = 0, len = 0, cap = 0;
	char *buf = NULL;
	int rc = 0;
	while (off < (size_t)n) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		int left = (int)((end - ipk_mono()) * 1000);
		if (left <= 0 || poll(&pfd, 1, left) != 1) {
			rc = ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "haproxy runtime API '%s' timed out on '%s'", h->name, cmd);
			goto out;
		}
		ssize_t w = send(fd, line + off, (size_t)n - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && errno != EAGAIN && errno != EINTR) {
			rc = ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot send '%s' to haproxy runtime API '%s': %s", cmd,
					 h->name, strerror(errno));
			goto out;
		}
		if (w > 0)
			off += (size_t)w;
	}
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int left = (int)((end - ipk_mono()) * 1000);
		if (left <= 0 || poll(&pfd, 1, left) != 1) {
			rc = ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "haproxy runtime API '%s' timed out on '%s'", h->name, cmd);
			goto out;
		}
		if (len + 4097 > cap) {
			size_t ncap = cap ? cap * 2 : 8192;
			char *nb = ncap <= HAP_MAX_ANSWER ? realloc(buf, ncap) : NULL;
			if (!nb) {
				rc = ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "haproxy answer to '%s' too large", cmd);
				goto out;
			}
			buf = nb;
			cap = ncap;
		}
		ssize_t r = recv(fd, buf + len, 4096, MSG_DONTWAIT);
		if (r == 0)
			break;
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			rc = ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot read haproxy's answer to '%s': %s", cmd, strerror(errno));
			goto out;
		}
		len += (size_t)r;
	}
	if (!buf && !(buf = malloc(1))) {
		rc = ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		goto out;
	}
	buf[len] = '\0';
	*answer = buf;
	buf = NULL;
out:
	free(buf);
	free(line);
	close(fd);
	return rc;
}

/* ---- Parsers ---------------------------------------------------------------- */

/* Split s at whitespace into at most max tokens (s is modified). */
static int split_ws(char *s, char **tok, int max)
{
	int n = 0;
	char *save = NULL;
	for (char *t = strtok_r(s, " \t", &save); t && n < max; t = strtok_r(NULL, " \t", &save))
		tok[n++] = t;
	return n;
}

int ipk_hap_parse_state(const char *text, const char *srv, struct ipk_hap_server *out)
{
	enum { C_NAME, C_ADDR, C_OP, C_ADMIN, C_CHECK, C_PORT, C_N };
	static const char *const want[C_N] = { "srv_name", "srv_addr", "srv_op_state", "srv_admin_state", "srv_check_state",
					       "srv_port" };
	int col[C_N];
	int have_header = 0, found = 0;
	char *copy = strdup(text);
	if (!copy)
		return -1;
	char *save = NULL;
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		size_t l = strlen(line);
		if (l && line[l - 1] == '\r')
			line[l - 1] = '\0';
		char *tok[64];
		if (line[0] == '#') {
			int n = split_ws(line + 1, tok, 64);
			have_header = 1;
			for (int c = 0; c < C_N; c++) {
				col[c] = -1;
				for (int i = 0; i < n; i++)
					if (!strcmp(tok[i], want[c]))
						col[c] = i;
				if (col[c] < 0)
					have_header = 0;
			}
			if (!have_header)
				break;
			continue;
		}
		if (!have_header)
			continue;
		int n = split_ws(line, tok, 64);
		if (n <= col[C_NAME] || strcmp(tok[col[C_NAME]], srv) != 0)
			continue;
		for (int c = 0; c < C_N; c++)
			if (col[c] >= n)
				goto bad;
		memset(out, 0, sizeof(*out));
		snprintf(out->addr, sizeof(out->addr), "%s", tok[col[C_ADDR]]);
		out->port = atoi(tok[col[C_PORT]]);
		out->op_state = atoi(tok[col[C_OP]]);
		out->admin_state = atoi(tok[col[C_ADMIN]]);
		out->check_state = atoi(tok[col[C_CHECK]]);
		found = 1;
		break;
	}
	free(copy);
	return have_header ? found : -1;
bad:
	free(copy);
	return -1;
}

/* Split one CSV line (HAProxy quotes fields holding commas or quotes) into
 * fields; the line is modified in place. */
static int split_csv(char *s, char **f, int max)
{
	int n = 0;
	while (n < max) {
		char *w = s;
		f[n++] = s;
		if (*s == '"') {
			s++;
			for (;;) {
				if (!*s)
					break;
				if (*s == '"' && s[1] == '"') {
					*w++ = '"';
					s += 2;
				} else if (*s == '"') {
					s++;
					break;
				} else {
					*w++ = *s++;
				}
			}
			char *end = strchr(s, ',');
			*w = '\0';
			if (!end)
				break;
			s = end + 1;
		} else {
			char *end = strchr(s, ',');
			if (!end)
				break;
			*end = '\0';
			s = end + 1;
		}
	}
	return n;
}

int ipk_hap_stat_field(const char *text, const char *srv, const char *col, char *buf, size_t n)
{
	char *copy = strdup(text);
	if (!copy)
		return -1;
	int c_sv = -1, c_col = -1, rc = -1;
	char *save = NULL;
	char *fields[512];
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		size_t l = strlen(line);
		if (l && line[l - 1] == '\r')
			line[l - 1] = '\0';
		if (!strncmp(line, "# ", 2)) {
			int nf = split_csv(line + 2, fields, 512);
			c_sv = c_col = -1;
			for (int i = 0; i < nf; i++) {
				if (!strcmp(fields[i], "svname"))
					c_sv = i;
				if (!strcmp(fields[i], col))
					c_col = i;
			}
			rc = c_sv >= 0 && c_col >= 0 ? 0 : -1;
			if (rc < 0)
				break;
			continue;
		}
		if (rc < 0)
			continue;
		int nf = split_csv(line, fields, 512);
		if (nf > c_sv && nf > c_col && !strcmp(fields[c_sv], srv)) {
			snprintf(buf, n, "%s", fields[c_col]);
			rc = 1;
			break;
		}
	}
	free(copy);
	return rc;
}

static int matches_any(const char *s, const char *markers)
{
	if (!markers)
		return 0;
	const char *m = markers;
	while (*m) {
		size_t l = strcspn(m, "|");
		char one[128];
		if (l && l < sizeof(one)) {
			memcpy(one, m, l);
			one[l] = '\0';
			if (strstr(s, one))
				return 1;
		}
		m += l;
		if (*m == '|')
			m++;
	}
	return 0;
}

int ipk_hap_answer_error(const char *answer, const char *ok_marker, char *buf, size_t n)
{
	const char *p = answer;
	while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
		p++;
	if (!*p)
		return 0;
	char text[1024];
	size_t tl = 0;
	int numbered = 0, error = 0;
	while (*p) {
		size_t l = strcspn(p, "\n");
		const char *msg = p;
		size_t ml = l;
		int sev = -1;
		if (p[0] == '[') {
			char *end;
			long v = strtol(p + 1, &end, 10);
			if (end != p + 1 && end[0] == ']' && end[1] == ':') {
				sev = (int)v;
				numbered = 1;
				msg = end + 2;
				while (*msg == ' ')
					msg++;
				ml = l - (size_t)(msg - p);
			}
		}
		while (ml && (msg[ml - 1] == '\r' || msg[ml - 1] == ' '))
			ml--;
		if (ml && (sev < 0 || sev <= 4)) {
			char one[1024];
			size_t cl = ml < sizeof(one) - 1 ? ml : sizeof(one) - 1;
			memcpy(one, msg, cl);
			one[cl] = '\0';
			if (!(sev == 4 && matches_any(one, ok_marker)) && !(sev < 0 && numbered)) {
				error = 1;
				if (tl && tl < sizeof(text) - 2) {
					text[tl++] = ';';
					text[tl++] = ' ';
				}
				size_t room = sizeof(text) - 1 - tl;
				size_t cp = cl < room ? cl : room;
				memcpy(text + tl, one, cp);
				tl += cp;
			}
		}
		p += l;
		if (*p == '\n')
			p++;
	}
	text[tl] = '\0';
	if (error)
		snprintf(buf, n, "%s", text);
	return error;
}

/* ---- The driver ----------------------------------------------------------- */

static int same_ip(const char *a, const char *b)
{
	unsigned char x[16], y[16];
	if (inet_pton(AF_INET, a, x) == 1 && inet_pton(AF_INET, b, y) == 1)
		return !memcmp(x, y, 4);
	if (inet_pton(AF_INET6, a, x) == 1 && inet_pton(AF_INET6, b, y) == 1)
		return !memcmp(x, y, 16);
	return !strcmp(a, b);
}

static void fmt_hostport(char *buf, size_t n, const char *host, int port)
{
	if (strchr(host, ':'))
		snprintf(buf, n, "[%s]:%d", host, port);
	else
		snprintf(buf, n, "%s:%d", host, port);
}

/* Read the server's state; 0, or -1 with err. */
static int hap_state(struct hap *h, struct ipk_redirect_result *res, const char *be, const char *srv,
		     struct ipk_hap_server *st, struct ipk_err *err)
{
	char cmd[600], *ans = NULL, msg[512];
	snprintf(cmd, sizeof(cmd), "show servers state %s", be);
	if (hap_cmd(h, res, cmd, &ans, err) < 0)
		return -1;
	int rc = 0;
	if (!strstr(ans, "# be_id") && ipk_hap_answer_error(ans, NULL, msg, sizeof(msg)))
		rc = ipk_err_set(err, IPK_EXIT_DATAERR, "unknown haproxy backend '%s': %s", be, msg);
	else {
		int f = ipk_hap_parse_state(ans, srv, st);
		if (f < 0)
			rc = ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot parse haproxy's answer to '%s'", cmd);
		else if (f == 0)
			rc = ipk_err_set(err, IPK_EXIT_DATAERR, "unknown haproxy server '%s/%s': No such server.", be, srv);
	}
	free(ans);
	return rc;
}

/* Run a command that should answer nothing (or a notice matching ok). */
static int hap_do(struct hap *h, struct ipk_redirect_result *res, const char *cmd, const char *ok, int code,
		  struct ipk_err *err)
{
	char *ans = NULL, msg[900];
	if (hap_cmd(h, res, cmd, &ans, err) < 0)
		return -1;
	int bad = ipk_hap_answer_error(ans, ok, msg, sizeof(msg));
	free(ans);
	if (bad)
		return ipk_err_set(err, code, "haproxy refused '%s': %s", cmd, msg);
	return 0;
}

/* Put the previous address, admin state and health back. */
static int hap_restore(struct hap *h, struct ipk_redirect_result *res, const char *target, const struct ipk_hap_server *old,
		       int forced_down, int made_ready)
{
	char cmd[700];
	struct ipk_err e = { 0 };
	int rc = 0;
	snprintf(cmd, sizeof(cmd), "set server %s addr %s port %d", target, old->addr, old->port);
	rc |= hap_do(h, res, cmd, "changed from|no need to change", IPK_EXIT_UNAVAILABLE, &e);
	if (made_ready) {
		snprintf(cmd, sizeof(cmd), "set server %s state %s", target, old->admin_state & ADMF_FMAINT ? "maint" : "drain");
		rc |= hap_do(h, res, cmd, NULL, IPK_EXIT_UNAVAILABLE, &e);
	}
	if (forced_down && (old->op_state == 1 || old->op_state == 2)) {
		snprintf(cmd, sizeof(cmd), "set server %s health up", target);
		rc |= hap_do(h, res, cmd, NULL, IPK_EXIT_UNAVAILABLE, &e);
	}
	return rc;
}

/* BACKEND/SERVER, each part non-empty, under 256 bytes and free of what
 * would end or split a runtime API command. */
static int hap_target_ok(const char *target)
{
	const char *slash = target ? strchr(target, '/') : NULL;
	return slash && slash != target && slash[1] && !strchr(slash + 1, '/') && !strpbrk(target, " \t;\n") &&
	       slash - target < 256 && strlen(slash + 1) < 256;
}

static int hap_check_target(const char *target, struct ipk_err *err)
{
	if (!hap_target_ok(target))
		return ipk_err_set(err, IPK_EXIT_USAGE, "invalid haproxy server '%s' (want BACKEND/SERVER)", target);
	return 0;
}

static int hap_redirect(void *state, const struct ipk_redirect_target *t, struct ipk_redirect_result *res,
			struct ipk_err *err)
{
	struct hap *h = state;
	const char *target = t->target;
	char be[256], srv[256], cmd[700];
	if (!hap_target_ok(target))
		return ipk_err_set(err, IPK_EXIT_DATAERR, "invalid haproxy server '%s' for session '%s' (want BACKEND/SERVER)",
				   target ? target : "", t->session);
	const char *slash = strchr(target, '/');
	snprintf(be, sizeof(be), "%.*s", (int)(slash - target), target);
	snprintf(srv, sizeof(srv), "%s", slash + 1);
	if (!t->to.family)
		return ipk_err_set(err, IPK_EXIT_DATAERR,
				   "invalid address '%s' for haproxy: an IP address is needed ('set server addr' does not resolve "
				   "host names)",
				   res->to);
	res->check = "health-check";
	if (h->dry_run) {
		int bad = 0;
		bad |= ipk_redirect_sent(res, "show servers state %s\n", be);
		bad |= ipk_redirect_sent(res, "set server %s addr %s port %d\n", target, t->to.host, t->to.port);
		bad |= ipk_redirect_sent(res, "set server %s state ready    (only if in maintenance or drain)\n", target);
		bad |= ipk_redirect_sent(res, "set server %s health down    (with health checks; else a TCP probe first)\n",
					 target);
		bad |= ipk_redirect_sent(res, "show servers state %s    (until up, at most %g s)\n", be, h->timeout);
		if (!h->keep_sessions)
			bad |= ipk_redirect_sent(res, "shutdown sessions server %s\n", target);
		return bad ? ipk_err_set(err, IPK_EXIT_OSERR, "out of memory") : 0;
	}

	struct ipk_hap_server old, now;
	if (hap_state(h, res, be, srv, &old, err) < 0)
		return -1;
	fmt_hostport(res->from, sizeof(res->from), old.addr, old.port);
	int checks = (old.check_state & CHK_ST_ENABLED) != 0;
	int parked = (old.admin_state & (ADMF_FMAINT | ADMF_FDRAIN)) != 0;
	if (!checks) {
		/* Nothing in HAProxy will test the new address: probe it before
		 * anything changes. */
		struct ipk_err perr = { 0 };
		if (ipk_tcp_probe(&t->to, h->timeout, &perr) < 0)
			return ipk_err_set(err, IPK_EXIT_TEMPFAIL,
					   "redirect of haproxy server '%s' not done: %s (server has no health check; routing unchanged)",
					   target, perr.msg);
		res->check = "probe";
	}

	snprintf(cmd, sizeof(cmd), "set server %s addr %s port %d", target, t->to.host, t->to.port);
	if (hap_do(h, res, cmd, "changed from|no need to change", IPK_EXIT_DATAERR, err) < 0)
		return -1;
	int made_ready = 0, forced_down = 0;
	if (parked) {
		snprintf(cmd, sizeof(cmd), "set server %s state ready", target);
		if (hap_do(h, res, cmd, NULL, IPK_EXIT_UNAVAILABLE, err) < 0)
			goto undo;
		made_ready = 1;
	}
	if (checks) {
		snprintf(cmd, sizeof(cmd), "set server %s health down", target);
		if (hap_do(h, res, cmd, NULL, IPK_EXIT_UNAVAILABLE, err) < 0)
			goto undo;
		forced_down = 1;
	}
	/* Read back: the new address, and (with checks) up again. Polls are
	 * recorded once in res->sent. */
	double end = ipk_mono() + h->timeout;
	int first = 1, up = 0;
	for (;;) {
		if (hap_state(h, first ? res : NULL, be, srv, &now, err) < 0)
			goto undo;
		first = 0;
		int same = same_ip(now.addr, t->to.host) && now.port == t->to.port;
		if (!same) {
			char got[300];
			fmt_hostport(got, sizeof(got), now.addr, now.port);
			ipk_err_set(err, IPK_EXIT_TEMPFAIL, "haproxy server '%s' reads back address '%s', not '%s'", target, got,
				    res->to);
			goto undo;
		}
		up = now.op_state == 1 || now.op_state == 2;
		if (!checks || up)
			break;
		if (ipk_mono() >= end)
			break;
		usleep((useconds_t)(HAP_POLL_S * 1e6));
	}
	if (checks && !up) {
		char status[64] = "", desc[256] = "", *ans = NULL;
		snprintf(cmd, sizeof(cmd), "show stat %s 4 -1", be);
		struct ipk_err serr = { 0 };
		if (hap_cmd(h, res, cmd, &ans, &serr) == 0) {
			ipk_hap_stat_field(ans, srv, "check_status", status, sizeof(status));
			ipk_hap_stat_field(ans, srv, "check_desc", desc, sizeof(desc));
		}
		free(ans);
		ipk_err_set(err, IPK_EXIT_TEMPFAIL,
			    "new address '%s' of haproxy server '%s' did not pass a health check within %g s (%s%s%s)", res->to,
			    target, h->timeout, status[0] ? status : "no check result", desc[0] ? " " : "", desc);
		goto undo;
	}
	res->confirmed = 1;
	if (!h->keep_sessions) {
		snprintf(cmd, sizeof(cmd), "shutdown sessions server %s", target);
		if (hap_do(h, res, cmd, NULL, IPK_EXIT_UNAVAILABLE, err) < 0) {
			res->confirmed = 0;
			return -1;
		}
	}
	return 0;
undo:;
	int restored = hap_restore(h, res, target, &old, forced_down, made_ready) == 0;
	res->restored = restored;
	size_t l = strlen(err->msg);
	snprintf(err->msg + l, sizeof(err->msg) - l, restored ? "; previous address '%s' restored"
							      : "; restoring previous address '%s' failed",
		 res->from);
	return -1;
}

const struct ipk_lb_driver ipk_lb_haproxy = {
	.name = "haproxy",
	.open = hap_open,
	.check_target = hap_check_target,
	.redirect = hap_redirect,
	.free = hap_free,
};
