/* dataset.c - samples gathered per session. See dataset.h. */
#include "dataset.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"

struct ipk_dataset *ipk_dataset_new(void)
{
	struct ipk_dataset *d = calloc(1, sizeof(struct ipk_dataset));
	if (d && !(d->hist = ipk_histdb_new())) {
		free(d);
		return NULL;
	}
	return d;
}

void ipk_dataset_free(struct ipk_dataset *d)
{
	if (!d)
		return;
	for (int i = 0; i < d->n; i++) {
		struct ipk_series *s = &d->s[i];
		free(s->ts);
		free(s->events);
		free(s->raw);
		free(s->idle);
		free(s->seq);
		ipk_feat_free(s->fs);
	}
	free(d->s);
	free(d->hash);
	ipk_histdb_free(d->hist);
	free(d);
}

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static int rehash(struct ipk_dataset *d, int hcap)
{
	int *h = malloc(sizeof(int) * hcap);
	if (!h)
		return -1;
	for (int i = 0; i < hcap; i++)
		h[i] = -1;
	for (int i = 0; i < d->n; i++) {
		uint64_t k = hash_str(d->s[i].session) & (uint64_t)(hcap - 1);
		while (h[k] >= 0)
			k = (k + 1) & (uint64_t)(hcap - 1);
		h[k] = i;
	}
	free(d->hash);
	d->hash = h;
	d->hcap = hcap;
	return 0;
}

static struct ipk_series *find_or_add(struct ipk_dataset *d, const struct ipk_sample *smp)
{
	if (d->hcap == 0 && rehash(d, 64) < 0)
		return NULL;
	uint64_t k = hash_str(smp->session) & (uint64_t)(d->hcap - 1);
	while (d->hash[k] >= 0) {
		struct ipk_series *s = &d->s[d->hash[k]];
		if (!strcmp(s->session, smp->session))
			return s;
		k = (k + 1) & (uint64_t)(d->hcap - 1);
	}
	if (d->n == d->cap) {
		int cap = d->cap ? d->cap * 2 : 16;
		struct ipk_series *v = realloc(d->s, sizeof(*v) * cap);
		if (!v)
			return NULL;
		d->s = v;
		d->cap = cap;
	}
	struct ipk_series *s = &d->s[d->n];
	memset(s, 0, sizeof(*s));
	snprintf(s->session, sizeof(s->session), "%s", smp->session);
	snprintf(s->user, sizeof(s->user), "%s", smp->user);
	if (!(s->fs = ipk_feat_new()))
		return NULL;
	if (smp->user[0] && !(s->uh = ipk_histdb_get(d->hist, smp->user))) {
		ipk_feat_free(s->fs);
		return NULL;
	}
	d->hash[k] = d->n++;
	if (d->n * 2 > d->hcap && rehash(d, d->hcap * 2) < 0)
		return NULL;
	return &d->s[d->n - 1];
}

static int grow(struct ipk_series *s)
{
	long cap = s->cap ? s->cap * 2 : 1024;
	double *ts = realloc(s->ts, sizeof(double) * cap);
	if (ts)
		s->ts = ts;
	float *ev = realloc(s->events, sizeof(float) * cap);
	if (ev)
		s->events = ev;
	float *raw = realloc(s->raw, sizeof(float) * cap * IPK_FEAT_COUNT);
	if (raw)
		s->raw = raw;
	double *idle = realloc(s->idle, sizeof(double) * cap);
	if (idle)
		s->idle = idle;
	long *seq = realloc(s->seq, sizeof(long) * cap);
	if (seq)
		s->seq = seq;
	if (!ts || !ev || !raw || !idle || !seq)
		return -1;
	s->cap = cap;
	return 0;
}

int ipk_dataset_add(struct ipk_dataset *d, const struct ipk_sample *smp, struct ipk_err *err)
{
	struct ipk_series *s = find_or_add(d, smp);
	if (!s || (s->n == s->cap && grow(s) < 0))
		return ipk_err_set(err, IPK_EXIT_OSERR, "gather samples '%s': out of memory", smp->session);
	if (!s->uh && smp->user[0] && !(s->uh = ipk_histdb_get(d->hist, smp->user)))
		return ipk_err_set(err, IPK_EXIT_OSERR, "gather samples '%s': out of memory", smp->session);
	if (ipk_feat_step(s->fs, smp, s->uh, s->raw + s->n * IPK_FEAT_COUNT) < 0) {
		d->out_of_order++;
		return 0;
	}
	if (!s->user[0] && smp->user[0])
		snprintf(s->user, sizeof(s->user), "%s", smp->user);
	s->ts[s->n] = smp->ts;
	s->events[s->n] = ipk_sample_events(smp);
	s->seq[s->n] = d->samples;
	s->idle[s->n] = ipk_feat_idle(s->fs);
	s->n++;
	d->samples++;
	return 0;
}

int ipk_dataset_read(struct ipk_dataset *d, const char *path, ipk_dataset_bad_fn bad, void *arg,
		     struct ipk_err *err)
{
	struct ipk_reader *r = ipk_reader_open(path, err);
	if (!r)
		return -1;
	struct ipk_record rec;
	struct ipk_sample smp;
	int rc = 0;
	for (;;) {
		struct ipk_err e2 = { 0 };
		enum ipk_read_result res = ipk_reader_next(r, &rec, &e2);
		if (res == IPK_READ_EOF)
			break;
		if (res == IPK_READ_ERROR) {
			rc = ipk_err_set(err, e2.code, "%s", e2.msg);
			break;
		}
		if (res == IPK_READ_RECORD && strcmp(rec.type, "sample") != 0)
			continue;
		if (res == IPK_READ_RECORD && ipk_sample_from_json(rec.json, &smp, &e2) == 0) {
			if (ipk_dataset_add(d, &smp, err) < 0) {
				rc = -1;
				break;
			}
			continue;
		}
		/* the reader's message names the input and line already; the
		 * sample parser's names only the field */
		char msg[sizeof(e2.msg)];
		if (res == IPK_READ_BAD)
			snprintf(msg, sizeof(msg), "%s", e2.msg);
		else
			snprintf(msg, sizeof(msg), "input '%s' line %ld: %.900s", ipk_reader_name(r), rec.lineno, e2.msg);
		if (bad && bad(arg, msg) < 0) {
			rc = ipk_err_set(err, IPK_EXIT_DATAERR, "%s", msg);
			break;
		}
	}
	ipk_reader_close(r);
	return rc;
}

static int cmp_user(const void *a, const void *b)
{
	return strcmp(a, b);
}

int ipk_dataset_users(const struct ipk_dataset *d, char (*users)[64], int max)
{
	int n = 0;
	for (int i = 0; i < d->n; i++) {
		int seen = 0;
		for (int j = 0; j < n && j < max && !seen; j++)
			seen = !strcmp(users[j], d->s[i].user);
		if (!seen) {
			if (n < max)
				snprintf(users[n], 64, "%s", d->s[i].user);
			n++;
		}
	}
	qsort(users, n < max ? n : max, 64, cmp_user);
	return n;
}
