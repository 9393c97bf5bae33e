/* lb_webhook.c - the generic HTTP webhook driver (see redirect.h).
 *
 * One POST of a JSON object to the URL, Content-Type application/json:
 *   {"event":"redirect","v":1,"ts":TS,"session":"S","target":"T",
 *    "to":"HOST:PORT","host":"HOST","port":PORT}
 * ("target" only when one is known; "to" has brackets around an IPv6
 * host, "host" does not). Any 2xx answer is success: the receiver has taken
 * over the change, and "confirmed" means it said so. A transfer failure
 * (refused, timeout, TLS), HTTP 408, 429 or 5xx is tried again, up to
 * retries more times, after 0.5 s, 1 s, 2 s, ... (at most 5 s); other
 * answers fail at once. The message names the status and the start of the
 * answer's body. TLS: cacert verifies the server, cert and key are the
 * client certificate.
 */
#define _GNU_SOURCE
#include "redirect.h"
#include "url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

struct webhook {
	char *url;
	CURL *curl;
	struct ipk_redirect_opts o;
};

static void webhook_free(void *state)
{
	struct webhook *w = state;
	if (!w)
		return;
	if (w->curl) {
		curl_easy_cleanup(w->curl);
		curl_global_cleanup();
	}
	free(w->url);
	free(w);
}

static void *webhook_open(const char *where, const struct ipk_redirect_opts *o, struct ipk_err *err)
{
	if (!where || (strncmp(where, "http://", 7) && strncmp(where, "https://", 8)))
		return ipk_err_set(err, IPK_EXIT_USAGE, "invalid load balancer 'webhook:%s': want webhook:http://... or "
				   "webhook:https://...", where ? where : ""),
		       NULL;
	if (ipk_url_check_http("webhook URL", where, err) < 0)
		return NULL;
	struct webhook *w = calloc(1, sizeof(*w));
	if (!w || !(w->url = strdup(where))) {
		free(w);
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory"), NULL;
	}
	w->o = *o;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		webhook_free(w);
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot initialise libcurl"), NULL;
	}
	if (!(w->curl = curl_easy_init())) {
		curl_global_cleanup();
		webhook_free(w);
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot initialise libcurl"), NULL;
	}
	return w;
}

static char *webhook_body(const struct ipk_redirect_target *t, const char *to)
{
	cJSON *j = cJSON_CreateObject();
	char *s = NULL;
	if (j && cJSON_AddStringToObject(j, "event", "redirect") && cJSON_AddNumberToObject(j, "v", 1) &&
	    cJSON_AddNumberToObject(j, "ts", ipk_now()) && cJSON_AddStringToObject(j, "session", t->session) &&
	    (!t->target || cJSON_AddStringToObject(j, "target", t->target)) && cJSON_AddStringToObject(j, "to", to) &&
	    cJSON_AddStringToObject(j, "host", t->to.host) && cJSON_AddNumberToObject(j, "port", t->to.port))
		s = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	return s;
}

static int webhook_redirect(void *state, const struct ipk_redirect_target *t, struct ipk_redirect_result *res,
			    struct ipk_err *err)
{
	struct webhook *w = state;
	char *body = webhook_body(t, res->to);
	if (!body)
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	res->check = "http-2xx";
	if (ipk_redirect_sent(res, "POST %s\nContent-Type: application/json\n\n%s\n", w->url, body) < 0) {
		free(body);
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	}
	if (w->o.dry_run) {
		free(body);
		return 0;
	}
	struct ipk_http_req q = { .method = "POST", .url = w->url, .body = body, .timeout = w->o.timeout,
				  .cacert = w->o.cacert, .cert = w->o.cert, .key = w->o.key };
	struct ipk_http_resp p = { 0 };
	struct ipk_err last = { 0 };
	double delay = 0.5;
	int tries = 0, rc = -1;
	for (;;) {
		tries++;
		if (ipk_http(w->curl, &q, &p, &last) == 0) {
			if (p.status >= 200 && p.status <= 299) {
				res->confirmed = 1;
				rc = 0;
				break;
			}
			char text[300];
			ipk_caddy_error_text(p.body, text, sizeof(text));
			int again = p.status == 408 || p.status == 429 || p.status >= 500;
			ipk_err_set(&last, again ? IPK_EXIT_UNAVAILABLE : IPK_EXIT_DATAERR, "webhook '%s' answered %ld: %s", w->url,
				    p.status, text);
			ipk_http_resp_clear(&p);
			if (!again)
				break;
		}
		if (last.code == IPK_EXIT_OSERR || tries > w->o.retries)
			break;
		usleep((useconds_t)(delay * 1e6));
		delay = delay * 2 > 5 ? 5 : delay * 2;
	}
	ipk_http_resp_clear(&p);
	free(body);
	if (rc < 0) {
		*err = last;
		if (tries > 1) {
			size_t l = strlen(err->msg);
			snprintf(err->msg + l, sizeof(err->msg) - l, " (after %d tries)", tries);
		}
	}
	return rc;
}

const struct ipk_lb_driver ipk_lb_webhook = {
	.name = "webhook",
	.open = webhook_open,
	.redirect = webhook_redirect,
	.free = webhook_free,
};
