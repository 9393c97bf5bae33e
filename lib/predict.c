/* predict.c - streaming prediction over sessions. See predict.h. */
#include "predict.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "feature.h"
#include "train.h"

struct sess {
	char name[128];
	double last_ts;
	struct ipk_feat_state *fs;
	struct ipk_lstm_state *ls;
};

struct ipk_predictor {
	const struct ipk_model *m;
	int decide;
	double threshold, expire;
	struct sess *v;
	int n, cap;
	int *hash, hcap;
	double last_sweep;
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static int rehash(struct ipk_predictor *p, int hcap)
{
	int *h = malloc(sizeof(int) * hcap);
	if (!h)
		return -1;
	for (int i = 0; i < hcap; i++)
		h[i] = -1;
	for (int i = 0; i < p->n; i++) {
		uint64_t k = hash_str(p->v[i].name) & (uint64_t)(hcap - 1);
		while (h[k] >= 0)
			k = (k + 1) & (uint64_t)(hcap - 1);
		h[k] = i;
	}
	free(p->hash);
	p->hash = h;
	p->hcap = hcap;
	return 0;
}

struct ipk_predictor *ipk_predictor_new(const struct ipk_model *m, double decide_window, double threshold,
					double expire, struct ipk_err *err)
{
	if (ipk_model_check_features(m, err) < 0)
		return NULL;
	const struct ipk_model_info *in = ipk_model_info(m);
	int decide = -1;
	for (int j = 0; j < in->nwin; j++)
		if (fabs(in->window[j] - decide_window) < 1e-9)
			decide = j;
	if (decide < 0) {
		ipk_err_set(err, IPK_EXIT_USAGE, "decision window '%g': model '%s' predicts other windows", decide_window,
			    ipk_model_id(m));
		return NULL;
	}
	struct ipk_predictor *p = calloc(1, sizeof(*p));
	if (!p || rehash(p, 64) < 0) {
		free(p);
		ipk_err_set(err, IPK_EXIT_OSERR, "create predictor: out of memory");
		return NULL;
	}
	p->m = m;
	p->decide = decide;
	p->threshold = threshold >= 0 ? threshold : in->threshold[decide];
	p->expire = expire;
	p->last_sweep = -INFINITY;
	return p;
}

static void sess_free(struct sess *s)
{
	ipk_feat_free(s->fs);
	ipk_lstm_state_free(s->ls);
}

void ipk_predictor_free(struct ipk_predictor *p)
{
	if (!p)
		return;
	for (int i = 0; i < p->n; i++)
		sess_free(&p->v[i]);
	free(p->v);
	free(p->hash);
	free(p);
}

int ipk_predictor_sessions(const struct ipk_predictor *p)
{
	return p->n;
}

/* Forget sessions silent for longer than expire (stream time). */
static int sweep(struct ipk_predictor *p, double now)
{
	int j = 0;
	for (int i = 0; i < p->n; i++) {
		if (p->v[i].last_ts < now - p->expire)
			sess_free(&p->v[i]);
		else
			p->v[j++] = p->v[i];
	}
	if (j == p->n)
		return 0;
	p->n = j;
	return rehash(p, p->hcap);
}

static struct sess *find_or_add(struct ipk_predictor *p, const char *name)
{
	uint64_t k = hash_str(name) & (uint64_t)(p->hcap - 1);
	while (p->hash[k] >= 0) {
		struct sess *s = &p->v[p->hash[k]];
		if (!strcmp(s->name, name))
			return s;
		k = (k + 1) & (uint64_t)(p->hcap - 1);
	}
	if (p->n == p->cap) {
		int cap = p->cap ? p->cap * 2 : 16;
		struct sess *v = realloc(p->v, sizeof(*v) * cap);
		if (!v)
			return NULL;
		p->v = v;
		p->cap = cap;
	}
	struct sess *s = &p->v[p->n];
	memset(s, 0, sizeof(*s));
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->last_ts = -INFINITY;
	s->fs = ipk_feat_new();
	s->ls = ipk_lstm_state_new(ipk_model_net(p->m));
	if (!s->fs || !s->ls) {
		sess_free(s);
		return NULL;
	}
	p->hash[k] = p->n++;
	if (p->n * 2 > p->hcap && rehash(p, p->hcap * 2) < 0)
		return NULL;
	return &p->v[p->n - 1];
}

int ipk_predictor_step(struct ipk_predictor *p, const struct ipk_sample *smp, struct ipk_prediction *out,
		       struct ipk_err *err)
{
	if (smp->ts - p->last_sweep >= 1.0) {
		if (sweep(p, smp->ts) < 0)
			return ipk_err_set(err, IPK_EXIT_OSERR, "predict: out of memory");
		p->last_sweep = smp->ts;
	}
	struct sess *s = find_or_add(p, smp->session);
	if (!s)
		return ipk_err_set(err, IPK_EXIT_OSERR, "predict '%s': out of memory", smp->session);
	float raw[IPK_FEAT_COUNT], x[IPK_FEAT_COUNT];
	if (ipk_feat_step(s->fs, smp, raw) < 0)
		return 0;
	s->last_ts = smp->ts;
	const struct ipk_model_info *in = ipk_model_info(p->m);
	ipk_norm_apply(in->mean, in->scale, IPK_FEAT_COUNT, raw, x);
	ipk_lstm_step(ipk_model_net(p->m), &s->ls, 1, x, out->p);
	out->ts = smp->ts;
	out->idle_s = ipk_feat_idle(s->fs);
	out->nwin = in->nwin;
	memcpy(out->window, in->window, sizeof(double) * in->nwin);
	out->decide = p->decide;
	out->threshold = p->threshold;
	/* decided on the value as written (6 decimals), so readers agree */
	out->above = round(out->p[p->decide] * 1e6) / 1e6 >= round(p->threshold * 1e6) / 1e6;
	return 1;
}
