/* lb_caddy.c - the Caddy admin API driver (see redirect.h).
 *
 * The session's reverse_proxy handler is addressed by its "@id" (target
 * "ID": /id/ID/upstreams) or by a config path (target "/config/...": that
 * path + "/upstreams"). Moving it to HOST:PORT:
 *   1. a direct TCP probe of the new address: Caddy 2.6 accepts any "dial"
 *      string and its admin API does not expose health checks, so a dead or
 *      wrong address is refused here, before anything changes;
 *   2. GET .../upstreams: the old upstreams (kept for a restore) and the
 *      ETag, which Caddy sends as an HTTP trailer;
 *   3. PATCH .../upstreams with [{"dial":"HOST:PORT"}] and If-Match: ETAG
 *      (a concurrent change gives 412 and nothing is changed). Caddy applies
 *      it as one whole-config reload: idle keep-alive connections close,
 *      in-flight requests finish;
 *   4. GET .../upstreams again: the dial must read back as sent, otherwise
 *      the old upstreams are PATCHed back.
 * Errors come as JSON {"error": "..."}; the text is named in the message.
 * HTTP 404 and other 4xx are IPK_EXIT_DATAERR, 412 IPK_EXIT_TEMPFAIL, 5xx
 * and transfer failures IPK_EXIT_UNAVAILABLE.
 */
#define _GNU_SOURCE
#include "redirect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

struct caddy {
	char *base; /* without a trailing '/' */
	CURL *curl;
	struct ipk_redirect_opts o;
};

static void caddy_free(void *state)
{
	struct caddy *c = state;
	if (!c)
		return;
	if (c->curl) {
		curl_easy_cleanup(c->curl);
		curl_global_cleanup();
	}
	free(c->base);
	free(c);
}

static void *caddy_open(const char *where, const struct ipk_redirect_opts *o, struct ipk_err *err)
{
	if (!where)
		where = "http://localhost:2019";
	struct caddy *c = calloc(1, sizeof(*c));
	if (!c)
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory"), NULL;
	c->o = *o;
	int n;
	if (strstr(where, "://")) {
		if (strncmp(where, "http://", 7) && strncmp(where, "https://", 8)) {
			free(c);
			return ipk_err_set(err, IPK_EXIT_USAGE, "invalid load balancer 'caddy:%s': the admin API is http:// or https://",
					   where),
			       NULL;
		}
		n = asprintf(&c->base, "%s", where);
	} else {
		n = asprintf(&c->base, "http://%s", where);
	}
	if (n < 0) {
		free(c);
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory"), NULL;
	}
	size_t l = strlen(c->base);
	while (l > 8 && c->base[l - 1] == '/')
		c->base[--l] = '\0';
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		free(c->base);
		free(c);
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot initialise libcurl"), NULL;
	}
	if (!(c->curl = curl_easy_init())) {
		curl_global_cleanup();
		free(c->base);
		free(c);
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot initialise libcurl"), NULL;
	}
	return c;
}

void ipk_caddy_error_text(const char *body, char *buf, size_t n)
{
	cJSON *j = cJSON_Parse(body ? body : "");
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
	if (cJSON_IsString(e)) {
		snprintf(buf, n, "%s", e->valuestring);
	} else {
		const char *b = body ? body : "";
		while (*b == ' ' || *b == '\n' || *b == '\r' || *b == '\t')
			b++;
		snprintf(buf, n, "%s", *b ? b : "(empty body)");
		for (char *p = buf; *p; p++)
			if (*p == '\n' || *p == '\r' || *p == '\t')
				*p = ' ';
		size_t l = strlen(buf);
		while (l && buf[l - 1] == ' ')
			buf[--l] = '\0';
	}
	cJSON_Delete(j);
}

int ipk_caddy_upstreams(const char *body, char *buf, size_t n)
{
	cJSON *j = cJSON_Parse(body ? body : "");
	if (!cJSON_IsArray(j)) {
		cJSON_Delete(j);
		return -1;
	}
	int count = 0;
	size_t used = 0;
	buf[0] = '\0';
	const cJSON *u;
	cJSON_ArrayForEach(u, j)
	{
		const cJSON *d = cJSON_GetObjectItemCaseSensitive(u, "dial");
		if (!cJSON_IsObject(u) || !cJSON_IsString(d)) {
			cJSON_Delete(j);
			return -1;
		}
		int w = snprintf(buf + used, n - used, "%s%s", count ? "," : "", d->valuestring);
		if (w > 0)
			used += (size_t)w < n - used ? (size_t)w : n - used - 1;
		count++;
	}
	cJSON_Delete(j);
	return count;
}

static int status_code(long status)
{
	if (status == 412 || status == 409)
		return IPK_EXIT_TEMPFAIL;
	if (status >= 400 && status < 500)
		return IPK_EXIT_DATAERR;
	return IPK_EXIT_UNAVAILABLE;
}

static int caddy_redirect(void *state, const struct ipk_redirect_target *t, struct ipk_redirect_result *res,
			  struct ipk_err *err)
{
	struct caddy *c = state;
	const char *route = t->target;
	if (!route || !*route)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "unknown session '%s': no caddy route for it (give --route or --map)",
				   t->session);
	if (route[0] != '/' && strspn(route, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._~-") !=
				       strlen(route))
		return ipk_err_set(err, IPK_EXIT_DATAERR, "invalid caddy route '%s' for session '%s': an @id has only letters, "
				   "digits and ._~-; a config path starts with '/'", route, t->session);
	if (route[0] == '/' && strpbrk(route, " ?#\t\n"))
		return ipk_err_set(err, IPK_EXIT_DATAERR, "invalid caddy config path '%s' for session '%s'", route, t->session);

	char *url = NULL, *body = NULL, *old = NULL;
	struct ipk_http_resp p = { 0 };
	int rc = -1, changed = 0;
	if (asprintf(&url, "%s%s%s/upstreams", c->base, route[0] == '/' ? "" : "/id/", route) < 0) {
		url = NULL;
		goto oom;
	}
	cJSON *arr = cJSON_CreateArray(), *up = cJSON_CreateObject();
	if (!arr || !up || !cJSON_AddStringToObject(up, "dial", res->to)) {
		cJSON_Delete(arr);
		cJSON_Delete(up);
		goto oom;
	}
	cJSON_AddItemToArray(arr, up);
	body = cJSON_PrintUnformatted(arr);
	cJSON_Delete(arr);
	if (!body)
		goto oom;
	res->check = "probe";
	if (c->o.dry_run) {
		if (ipk_redirect_sent(res, "GET %s\nPATCH %s\nIf-Match: (the ETag of the GET)\nContent-Type: application/json\n\n%s\n"
				      "GET %s\n", url, url, body, url) < 0)
			goto oom;
		rc = 0;
		goto out;
	}

	struct ipk_err perr = { 0 };
	if (ipk_tcp_probe(&t->to, c->o.timeout, &perr) < 0) {
		ipk_err_set(err, IPK_EXIT_TEMPFAIL, "redirect of caddy route '%s' not done: %s (routing unchanged)", route,
			    perr.msg);
		goto out;
	}

	struct ipk_http_req q = { .method = "GET", .url = url, .timeout = c->o.timeout,
				  .cacert = c->o.cacert, .cert = c->o.cert, .key = c->o.key };
	char text[600], etag[512] = "";
	if (ipk_redirect_sent(res, "GET %s\n", url) < 0)
		goto oom;
	if (ipk_http(c->curl, &q, &p, err) < 0) {
		char why[sizeof(err->msg)];
		snprintf(why, sizeof(why), "%s", err->msg);
		ipk_err_set(err, err->code, "cannot reach caddy admin API '%s': %s", c->base, why);
		goto out;
	}
	if (p.status != 200) {
		ipk_caddy_error_text(p.body, text, sizeof(text));
		if (p.status == 404)
			ipk_err_set(err, IPK_EXIT_DATAERR, "unknown caddy route '%s': %ld %s", route, p.status, text);
		else
			ipk_err_set(err, status_code(p.status), "caddy refused GET '%s': %ld %s", url, p.status, text);
		goto out;
	}
	if (ipk_caddy_upstreams(p.body, res->from, sizeof(res->from)) < 0) {
		ipk_err_set(err, IPK_EXIT_DATAERR, "caddy route '%s' has no upstreams array at '%s'", route, url);
		goto out;
	}
	if (!(old = strdup(p.body)))
		goto oom;
	snprintf(etag, sizeof(etag), "%s", p.etag);
	ipk_http_resp_clear(&p);

	q.method = "PATCH";
	q.body = body;
	q.if_match = etag[0] ? etag : NULL;
	if (ipk_redirect_sent(res, "PATCH %s\n%s%s%s\n\n%s\n", url, etag[0] ? "If-Match: " : "", etag,
			      etag[0] ? "" : "(no ETag)", body) < 0)
		goto oom;
	if (ipk_http(c->curl, &q, &p, err) < 0)
		goto out;
	if (p.status < 200 || p.status > 299) {
		ipk_caddy_error_text(p.body, text, sizeof(text));
		ipk_err_set(err, status_code(p.status), "caddy refused PATCH '%s': %ld %s%s", url, p.status, text,
			    p.status == 412 ? " (the config changed meanwhile; routing unchanged)" : "");
		goto out;
	}
	changed = 1;
	ipk_http_resp_clear(&p);

	q.method = "GET";
	q.body = NULL;
	q.if_match = NULL;
	if (ipk_redirect_sent(res, "GET %s\n", url) < 0)
		goto oom;
	if (ipk_http(c->curl, &q, &p, err) < 0)
		goto undo;
	char now[300];
	if (p.status != 200 || ipk_caddy_upstreams(p.body, now, sizeof(now)) != 1 || strcmp(now, res->to) != 0) {
		ipk_caddy_error_text(p.body, text, sizeof(text));
		ipk_err_set(err, IPK_EXIT_TEMPFAIL, "caddy route '%s' reads back %ld %s, not [{\"dial\":\"%s\"}]", route,
			    p.status, text, res->to);
		goto undo;
	}
	res->confirmed = 1;
	rc = 0;
	goto out;
oom:
	ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	goto out;
undo:
	ipk_http_resp_clear(&p);
	if (changed && old) {
		struct ipk_err rerr = { 0 };
		q.method = "PATCH";
		q.body = old;
		q.if_match = NULL;
		ipk_redirect_sent(res, "PATCH %s\n\n%s\n", url, old);
		res->restored = ipk_http(c->curl, &q, &p, &rerr) == 0 && p.status >= 200 && p.status <= 299;
		size_t l = strlen(err->msg);
		snprintf(err->msg + l, sizeof(err->msg) - l,
			 res->restored ? "; previous upstreams '%s' restored" : "; restoring previous upstreams '%s' failed",
			 res->from);
	}
out:
	ipk_http_resp_clear(&p);
	free(url);
	free(body);
	free(old);
	return rc;
}

const struct ipk_lb_driver ipk_lb_caddy = {
	.name = "caddy",
	.open = caddy_open,
	.redirect = caddy_redirect,
	.free = caddy_free,
};
