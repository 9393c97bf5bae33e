/* source_prom.c - sample fields from a Prometheus text endpoint (see sources.h).
 *
 * One HTTP(S) GET per interval with a reused libcurl easy handle (keep-alive
 * when the server allows it), parsed by promtext.h. Each mapping
 *   METRIC[{label="value",...}]=FIELD[@LABEL][*SCALE][:rate]
 * selects the series named METRIC whose labels have the given values (an
 * empty value matches a series without that label, as in PromQL); the value
 * of the series' LABEL (default "session") is its session, and series without
 * it (or with it empty) belong to the default session. The value, times
 * SCALE, becomes FIELD of that session's sample. With :rate the series is a
 * counter and the field is its increase since the previous interval's
 * scrape: the first scrape of a series (and the first after a failed scrape,
 * or after the series was missing) only takes the baseline; a value below
 * the previous one is a counter reset and the increase is the new value.
 * Several series giving the same session and field combine by the field's
 * merge rule (sample.h). NaN and infinite values are skipped (the field is
 * absent). Timestamps in the exposition are checked but not used: the
 * collector owns the clock.
 *
 * The baseline scrape happens in start(), so the first interval already has
 * rates. A scrape fails when the transfer fails (refused, timeout, TLS, ...)
 * or the HTTP status is not 2xx (redirects are not followed; a 3xx names its
 * Location); collect() then returns -1 with the reason. A repeat of the same
 * kind of failure (curl error code or HTTP status) is reported at debug
 * level only (err's message left empty), and
 * the first success after failures at info level. Malformed lines are
 * skipped (the rest of the scrape is used) and reported with the first bad
 * line's number. Responses over 16 MiB fail.
 */
#define _GNU_SOURCE
#include "sources.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "promtext.h"
#include "url.h"

#define PM_MAX_BODY (16u << 20)
#define PM_START_TIMEOUT 10.0 /* seconds, for the baseline scrape when no timeout is set */

struct pm_spec {
	char *text;          /* as given, for messages */
	char *metric;
	char **lname, **lvalue;
	int nmatch;
	int field;
	char *sess_label;
	double scale;
	int rate;
};

/* Baseline of one :rate series. */
struct pm_series {
	struct pm_series *next;
	uint64_t hash;
	int spec;
	long k;              /* scrape in which it was last seen */
	double value;
	char key[];          /* metric and sorted labels, NUL separated, length keylen */
};

struct pm {
	char *url;
	char *session;       /* default session */
	double timeout;
	struct pm_spec *spec;
	int nspec;
	CURL *curl;
	struct curl_slist *hdrs;
	char errbuf[CURL_ERROR_SIZE];
	char *body;
	size_t blen, bcap;
	int too_big;
	struct ipk_promtext *parser;
	struct pm_series **tab;
	size_t tabsize;
	long k;              /* scrape counter: 0 baseline in start(), then one per interval */
	int fail_kind;       /* what the last fetch failure was (curl code, 1000 + HTTP status, ...) */
	int lastfail;        /* kind of the last reported failure, 0 none: a repeat is reported once */
	char lastwarn[sizeof(((struct ipk_err *)0)->msg)];  /* last reported parse warning */
	/* state of the scrape being parsed */
	struct ipk_sample_set *set;
	double ts, interval;
	int oom;
	long skipped_nonfinite;
	char *keybuf;
	size_t keycap;
};

static void spec_free(struct pm_spec *s)
{
	free(s->text);
	free(s->metric);
	for (int i = 0; i < s->nmatch; i++) {
		free(s->lname[i]);
		free(s->lvalue[i]);
	}
	free(s->lname);
	free(s->lvalue);
	free(s->sess_label);
}

#define SPEC_FORM "METRIC[{label=\"value\",...}]=FIELD[@LABEL][*SCALE][:rate]"

static int is_name(const char *s, size_t n, int colon)
{
	if (!n)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':') ||
			 (i > 0 && c >= '0' && c <= '9');
		if (!ok)
			return 0;
	}
	return 1;
}

/* Parse one mapping into s. Returns 0, or -1 with err set. */
static int spec_parse(struct pm *pm, const char *text, struct pm_spec *s, struct ipk_err *err)
{
	memset(s, 0, sizeof(*s));
	s->scale = 1;
	if (!(s->text = strdup(text)))
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	const char *p = text;
	size_t n = strcspn(p, "{=");
	if (!is_name(p, n, 1))
		return ipk_err_set(err, IPK_EXIT_USAGE, "invalid metric mapping '%s': %s (want %s)", text,
				   n ? "bad metric name" : "missing metric name", SPEC_FORM);
	if (!(s->metric = strndup(p, n)))
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	p += n;
	if (*p == '{') {
		const struct ipk_prom_label *lab;
		int nl;
		char why[160];
		long used = ipk_promtext_labels(pm->parser, p, strlen(p), &lab, &nl, why, sizeof(why));
		if (used == -2)
			return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		if (used < 0)
			return ipk_err_set(err, IPK_EXIT_USAGE, "invalid metric mapping '%s': %s", text, why);
		s->lname = calloc((size_t)nl + 1, sizeof(char *));
		s->lvalue = calloc((size_t)nl + 1, sizeof(char *));
		if (!s->lname || !s->lvalue)
			return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		for (int i = 0; i < nl; i++, s->nmatch++) {
			s->lname[i] = strdup(lab[i].name);
			s->lvalue[i] = strdup(lab[i].value);
			if (!s->lname[i] || !s->lvalue[i]) {
				s->nmatch++;
				return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
			}
		}
		p += used;
	}
	if (*p != '=')
		return ipk_err_set(err, IPK_EXIT_USAGE, "invalid metric mapping '%s': expected '=FIELD' after the metric (want %s)",
				   text, SPEC_FORM);
	p++;
	n = strcspn(p, "@*:");
	char field[32];
	if (!n || n >= sizeof(field))
		return ipk_err_set(err, IPK_EXIT_USAGE, "invalid metric mapping '%s': missing sample field (want %s)", text,
				   SPEC_FORM);
	memcpy(field, p, n);
	field[n] = '\0';
	if ((s->field = ipk_field_lookup(field)) < 0)
		return ipk_err_set(err, IPK_EXIT_USAGE, "invalid metric mapping '%s': unknown sample field '%s'", text, field);
	p += n;
	int seen_at = 0, seen_scale = 0;
	while (*p) {
		char c = *p++;
		n = strcspn(p, "@*:");
		if (c == '@' && !seen_at) {
			if (!is_name(p, n, 0))
				return ipk_err_set(err, IPK_EXIT_USAGE, "invalid metric mapping '%s': bad session label name", text);
			if (!(s->sess_label = strndup(p, n)))
				return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
			seen_at = 1;
		} else if (c == '*' && !seen_scale) {
			char num[64], *end;
			if (!n || n >= sizeof(num))
				return ipk_err_set(err, IPK_EXIT_USAGE, "invalid metric mapping '%s': bad scale", text);
			memcpy(num, p, n);
			num[n] = '\0';
			s->scale = strtod(num, &end);
			if (*end || end == num || !isfinite(s->scale))
				return ipk_err_set(err, IPK_EXIT_USAGE, "invalid metric mapping '%s': bad scale '%s'", text, num);
			seen_scale = 1;
		} else if (c == ':' && !s->rate) {
			if (n != 4 || memcmp(p, "rate", 4) != 0)
				return ipk_err_set(err, IPK_EXIT_USAGE, "invalid metric mapping '%s': unknown modifier ':%.*s' (only :rate)",
						   text, (int)n, p);
			s->rate = 1;
		} else {
			return ipk_err_set(err, IPK_EXIT_USAGE, "invalid metric mapping '%s': '%c' given twice", text, c);
		}
		p += n;
	}
	if (!s->sess_label && !(s->sess_label = strdup("session")))
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	return 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct pm *pm = arg;
	size_t n = size * nmemb;
	if (pm->blen + n > PM_MAX_BODY) {
		pm->too_big = 1;
		return 0;
	}
	if (pm->blen + n > pm->bcap) {
		size_t cap = pm->bcap ? pm->bcap : 65536;
		while (cap < pm->blen + n)
			cap *= 2;
		char *nb = realloc(pm->body, cap);
		if (!nb) {
			pm->oom = 1;
			return 0;
		}
		pm->body = nb;
		pm->bcap = cap;
	}
	memcpy(pm->body + pm->blen, data, n);
	pm->blen += n;
	return n;
}

/* GET the endpoint into pm->body. Returns 0, or -1 with err set. */
static int pm_fetch(struct pm *pm, double timeout, struct ipk_err *err)
{
	pm->blen = 0;
	pm->too_big = 0;
	pm->oom = 0;
	pm->errbuf[0] = '\0';
	pm->fail_kind = 0;
	long ms = (long)(timeout * 1000);
	curl_easy_setopt(pm->curl, CURLOPT_TIMEOUT_MS, ms > 0 ? ms : 1L);
	curl_easy_setopt(pm->curl, CURLOPT_CONNECTTIMEOUT_MS, ms > 0 ? ms : 1L);
	CURLcode rc = curl_easy_perform(pm->curl);
	if (pm->oom)
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	pm->fail_kind = 2000;
	if (pm->too_big)
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot scrape '%s': response larger than %u MiB", pm->url,
				   PM_MAX_BODY >> 20);
	if (rc != CURLE_OK) {
		pm->fail_kind = (int)rc;
		size_t l = strlen(pm->errbuf);
		while (l && pm->errbuf[l - 1] == '\n')
			pm->errbuf[--l] = '\0';
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot scrape '%s': %s", pm->url,
				   l ? pm->errbuf : curl_easy_strerror(rc));
	}
	long status = 0;
	curl_easy_getinfo(pm->curl, CURLINFO_RESPONSE_CODE, &status);
	pm->fail_kind = 1000 + (int)(status > 0 && status < 1000 ? status : 999);
	if (status >= 300 && status < 400) {
		char *loc = NULL;
		curl_easy_getinfo(pm->curl, CURLINFO_REDIRECT_URL, &loc);
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot scrape '%s': HTTP status %ld, redirected to '%s' (redirects are not followed)",
				   pm->url, status, loc ? loc : "?");
	}
	if (status < 200 || status >= 300)
		return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot scrape '%s': HTTP status %ld", pm->url, status);
	pm->fail_kind = 0;
	return 0;
}

static uint64_t fnv(const char *s, size_t n, uint64_t h)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

/* The series' identity: name and labels sorted by name, NUL separated, in
 * pm->keybuf. Returns its length, or 0 when out of memory. */
static size_t series_key(struct pm *pm, const struct ipk_prom_sample *s)
{
	int order[64];
	int n = s->nlabels < 64 ? s->nlabels : 64;
	for (int i = 0; i < n; i++) {
		int j = i;
		while (j > 0 && strcmp(s->labels[order[j - 1]].name, s->labels[i].name) > 0) {
			order[j] = order[j - 1];
			j--;
		}
		order[j] = i;
	}
	size_t need = strlen(s->name) + 1;
	for (int i = 0; i < s->nlabels; i++)
		need += strlen(s->labels[i].name) + strlen(s->labels[i].value) + 2;
	if (need > pm->keycap) {
		char *nb = realloc(pm->keybuf, need);
		if (!nb)
			return 0;
		pm->keybuf = nb;
		pm->keycap = need;
	}
	size_t at = 0;
#define PUT(str)                                         \
	do {                                             \
		size_t l_ = strlen(str) + 1;             \
		memcpy(pm->keybuf + at, (str), l_);      \
		at += l_;                                \
	} while (0)
	PUT(s->name);
	for (int i = 0; i < n; i++) {
		PUT(s->labels[order[i]].name);
		PUT(s->labels[order[i]].value);
	}
	for (int i = n; i < s->nlabels; i++) { /* more than 64 labels: written order */
		PUT(s->labels[i].name);
		PUT(s->labels[i].value);
	}
#undef PUT
	return at;
}

static int tab_grow(struct pm *pm)
{
	size_t size = pm->tabsize ? pm->tabsize * 2 : 256;
	struct pm_series **nt = calloc(size, sizeof(*nt));
	if (!nt)
		return -1;
	for (size_t i = 0; i < pm->tabsize; i++) {
		struct pm_series *e = pm->tab[i], *next;
		for (; e; e = next) {
			next = e->next;
			e->next = nt[e->hash & (size - 1)];
			nt[e->hash & (size - 1)] = e;
		}
	}
	free(pm->tab);
	pm->tab = nt;
	pm->tabsize = size;
	return 0;
}

/* The rate series for spec i and the sample; created (k = -1) if new. NULL
 * when out of memory. */
static struct pm_series *series_get(struct pm *pm, int spec, const struct ipk_prom_sample *s, size_t *count)
{
	size_t kl = series_key(pm, s);
	if (!kl)
		return NULL;
	uint64_t h = fnv(pm->keybuf, kl, 1469598103934665603ull ^ (uint64_t)spec);
	if (pm->tabsize) {
		for (struct pm_series *e = pm->tab[h & (pm->tabsize - 1)]; e; e = e->next)
			if (e->hash == h && e->spec == spec && !memcmp(e->key, pm->keybuf, kl))
				return e;
	}
	if (*count + 1 > pm->tabsize && tab_grow(pm) < 0)
		return NULL;
	struct pm_series *e = malloc(sizeof(*e) + kl);
	if (!e)
		return NULL;
	e->hash = h;
	e->spec = spec;
	e->k = -1;
	e->value = 0;
	memcpy(e->key, pm->keybuf, kl);
	e->next = pm->tab[h & (pm->tabsize - 1)];
	pm->tab[h & (pm->tabsize - 1)] = e;
	(*count)++;
	return e;
}

static size_t nseries(const struct pm *pm)
{
	size_t n = 0;
	for (size_t i = 0; i < pm->tabsize; i++)
		for (const struct pm_series *e = pm->tab[i]; e; e = e->next)
			n++;
	return n;
}

/* Drop the baselines not refreshed by scrape k (all of them when k < 0). */
static void series_sweep(struct pm *pm, long k)
{
	for (size_t i = 0; i < pm->tabsize; i++) {
		struct pm_series **pp = &pm->tab[i];
		while (*pp) {
			struct pm_series *e = *pp;
			if (k < 0 || e->k != k) {
				*pp = e->next;
				free(e);
			} else {
				pp = &e->next;
			}
		}
	}
}

static int spec_matches(const struct pm_spec *sp, const struct ipk_prom_sample *s)
{
	if (strcmp(sp->metric, s->name) != 0)
		return 0;
	for (int i = 0; i < sp->nmatch; i++) {
		const char *v = ipk_prom_label(s, sp->lname[i]);
		if (strcmp(v ? v : "", sp->lvalue[i]) != 0)
			return 0;
	}
	return 1;
}

struct scrape_ctx {
	struct pm *pm;
	size_t count; /* series in the table */
};

static int on_sample(void *arg, const struct ipk_prom_sample *s)
{
	struct scrape_ctx *cx = arg;
	struct pm *pm = cx->pm;
	for (int i = 0; i < pm->nspec; i++) {
		const struct pm_spec *sp = &pm->spec[i];
		if (!spec_matches(sp, s))
			continue;
		const char *sess = ipk_prom_label(s, sp->sess_label);
		if (!sess || !*sess)
			sess = pm->session;
		struct ipk_sample smp;
		ipk_sample_init(&smp, sess, "prometheus", pm->ts, pm->interval);
		double v = s->value;
		if (sp->rate) {
			struct pm_series *e = series_get(pm, i, s, &cx->count);
			if (!e) {
				pm->oom = 1;
				return 1;
			}
			if (e->k == pm->k)
				continue; /* the same series twice in one scrape: the first counts */
			if (!isfinite(v)) {
				pm->skipped_nonfinite++;
				e->k = -1; /* no baseline */
			} else {
				int have = e->k == pm->k - 1;
				double prev = e->value;
				e->k = pm->k;
				e->value = v;
				if (have && pm->set)
					ipk_sample_set_field(&smp, sp->field, (v >= prev ? v - prev : v) * sp->scale);
			}
		} else if (!isfinite(v)) {
			pm->skipped_nonfinite++;
		} else {
			ipk_sample_set_field(&smp, sp->field, v * sp->scale);
		}
		if (pm->set && ipk_sample_set_add(pm->set, &smp) < 0) {
			pm->oom = 1;
			return 1;
		}
	}
	return 0;
}

/* Fetch and parse: scrape number pm->k, samples into set (NULL: baseline
 * only). Returns 0 or -1 with err set. */
static int pm_scrape(struct pm *pm, double timeout, struct ipk_sample_set *set, double ts, double interval,
		     const struct ipk_diag *diag, struct ipk_err *err)
{
	struct ipk_err e = { 0 };
	if (pm_fetch(pm, timeout, &e) < 0) {
		/* The same kind of failure again (its text may differ in details
		 * such as curl's "after N ms"): debug only. */
		if (e.code == IPK_EXIT_OSERR || pm->fail_kind != pm->lastfail) {
			pm->lastfail = pm->fail_kind;
			*err = e;
		} else {
			ipk_diagf(diag, 2, "%s (again)", e.msg);
			err->code = e.code;
			err->msg[0] = '\0';
		}
		return -1;
	}
	if (pm->lastfail) {
		ipk_diagf(diag, 1, "scrape of '%s' works again", pm->url);
		pm->lastfail = 0;
	}
	pm->set = set;
	pm->ts = ts;
	pm->interval = interval;
	pm->skipped_nonfinite = 0;
	struct scrape_ctx cx = { pm, nseries(pm) };
	struct ipk_promtext_stats st;
	int r = ipk_promtext_parse(pm->parser, pm->body, pm->blen, on_sample, &cx, &st, err);
	pm->set = NULL;
	if (r < 0 || pm->oom)
		return r < 0 ? -1 : ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	series_sweep(pm, pm->k);
	if (st.bad) {
		char msg[sizeof(pm->lastwarn)];
		snprintf(msg, sizeof(msg), "cannot parse '%s' line %ld: %s (%ld malformed line%s skipped)", pm->url,
			 st.bad_line, st.bad_why, st.bad, st.bad == 1 ? "" : "s");
		ipk_diagf(diag, strcmp(msg, pm->lastwarn) ? 0 : 2, "%s", msg);
		snprintf(pm->lastwarn, sizeof(pm->lastwarn), "%s", msg);
	} else {
		pm->lastwarn[0] = '\0';
	}
	if (pm->skipped_nonfinite)
		ipk_diagf(diag, 2, "'%s': %ld NaN or infinite value%s skipped", pm->url, pm->skipped_nonfinite,
			  pm->skipped_nonfinite == 1 ? "" : "s");
	return 0;
}

static int pm_start(struct ipk_source *src, double ts, const struct ipk_diag *diag, struct ipk_err *err)
{
	struct pm *pm = src->priv;
	pm->k = 0;
	return pm_scrape(pm, pm->timeout > 0 ? pm->timeout : PM_START_TIMEOUT, NULL, ts, 0, diag, err);
}

static int pm_collect(struct ipk_source *src, double ts, double interval, struct ipk_sample_set *set,
		      const struct ipk_diag *diag, struct ipk_err *err)
{
	struct pm *pm = src->priv;
	pm->k++;
	return pm_scrape(pm, pm->timeout > 0 ? pm->timeout : interval, set, ts, interval, diag, err);
}

static void pm_free(struct ipk_source *src)
{
	struct pm *pm = src->priv;
	if (!pm)
		return;
	if (pm->curl) {
		curl_easy_cleanup(pm->curl);
		curl_global_cleanup();
	}
	curl_slist_free_all(pm->hdrs);
	series_sweep(pm, -1);
	free(pm->tab);
	for (int i = 0; i < pm->nspec; i++)
		spec_free(&pm->spec[i]);
	free(pm->spec);
	ipk_promtext_free(pm->parser);
	free(pm->body);
	free(pm->keybuf);
	free(pm->url);
	free(pm->session);
	free(pm);
	src->priv = NULL;
}

static const struct ipk_source_ops pm_ops = {
	.name = "prometheus",
	.finite = 0,
	.live = 1,
	.collect = pm_collect,
	.start = pm_start,
	.free = pm_free,
};

struct ipk_source *ipk_source_prom_new(const struct ipk_prom_opts *o, struct ipk_err *err)
{
	if (!o->url || !*o->url) {
		ipk_err_set(err, IPK_EXIT_USAGE, "invalid Prometheus URL '': empty");
		return NULL;
	}
	if (ipk_url_check_http("Prometheus URL", o->url, err) < 0)
		return NULL;
	if (o->nmap <= 0) {
		ipk_err_set(err, IPK_EXIT_USAGE, "no metric mapping for '%s': give at least one %s", o->url, SPEC_FORM);
		return NULL;
	}
	if (!(o->timeout >= 0) || !isfinite(o->timeout)) {
		ipk_err_set(err, IPK_EXIT_USAGE, "invalid scrape timeout for '%s'", o->url);
		return NULL;
	}
	struct ipk_source *src = calloc(1, sizeof(*src));
	struct pm *pm = calloc(1, sizeof(*pm));
	if (!src || !pm) {
		free(src);
		free(pm);
		ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		return NULL;
	}
	src->ops = &pm_ops;
	src->priv = pm;
	pm->timeout = o->timeout;
	char host[256] = "";
	if (o->session && *o->session)
		snprintf(host, sizeof(host), "%s", o->session);
	else if (gethostname(host, sizeof(host)) < 0 || !host[0])
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	pm->url = strdup(o->url);
	pm->session = strdup(host);
	pm->parser = ipk_promtext_new();
	pm->spec = calloc((size_t)o->nmap, sizeof(*pm->spec));
	if (!pm->url || !pm->session || !pm->parser || !pm->spec || asprintf(&src->label, "prometheus %s", o->url) < 0) {
		src->label = NULL;
		ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		goto fail;
	}
	for (int i = 0; i < o->nmap; i++) {
		pm->nspec++;
		if (spec_parse(pm, o->map[i], &pm->spec[i], err) < 0)
			goto fail;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot initialise libcurl for '%s'", o->url);
		goto fail;
	}
	if (!(pm->curl = curl_easy_init())) {
		curl_global_cleanup();
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "cannot initialise libcurl for '%s'", o->url);
		goto fail;
	}
	CURL *c = pm->curl;
	curl_easy_setopt(c, CURLOPT_URL, pm->url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, pm->errbuf);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, pm);
	curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(c, CURLOPT_USERAGENT, "ipkit/" IPK_VERSION);
	pm->hdrs = curl_slist_append(NULL, "Accept: text/plain;version=0.0.4;q=1,*/*;q=0.1");
	if (!pm->hdrs) {
		ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		goto fail;
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, pm->hdrs);
	return src;
fail:
	ipk_source_free(src);
	return NULL;
}
