/* predict.c - streaming prediction over sessions. See predict.h. */
#include "predict.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "feature.h"
#include "lstmcuda.h"
#include "recal.h"
#include "train.h"

struct sess {
	char name[128];
	double last_ts;
	struct ipk_feat_state *fs;
	struct ipk_lstm_state *ls;
	struct ipk_hist *uh;
	struct ipk_recal_queue *rq;
	int slot;          /* GPU state slot, -1 without */
	long stamp;        /* batch that has a pending row of this session */
};

struct ipk_predictor {
	const struct ipk_model *m;
	int decide;
	double threshold, expire;
	double recal_rate;
	struct sess *v;
	int n, cap;
	int *hash, hcap;
	double last_sweep;
	struct ipk_histdb *hist, *own_hist;
	struct ipk_lstm_cuda *cu;
	int *free_slot, nfree, next_slot;
	long stamp;
	/* batch scratch */
	float *bx, *bp;
	int *brow, *bslot;
	struct ipk_lstm_state **bst;
	struct ipk_recal_queue **brq;
	struct ipk_calib **bcal;
	float *bev;
	int bcap;
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
					double expire, struct ipk_histdb *hist, struct ipk_err *err)
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
	if (p && !hist && !(hist = p->own_hist = ipk_histdb_new())) {
		free(p);
		p = NULL;
	}
	if (!p || rehash(p, 64) < 0) {
		if (p)
			ipk_histdb_free(p->own_hist);
		free(p);
		ipk_err_set(err, IPK_EXIT_OSERR, "create predictor: out of memory");
		return NULL;
	}
	p->m = m;
	p->hist = hist;
	p->decide = decide;
	p->threshold = threshold >= 0 ? threshold : in->threshold[decide];
	p->expire = expire;
	p->recal_rate = IPK_RECAL_RATE;
	p->last_sweep = -INFINITY;
	return p;
}

static void sess_free(struct ipk_predictor *p, struct sess *s)
{
	ipk_feat_free(s->fs);
	ipk_lstm_state_free(s->ls);
	ipk_recal_queue_free(s->rq);
	if (s->slot >= 0 && p)
		p->free_slot[p->nfree++] = s->slot;
	s->slot = -1;
}

void ipk_predictor_set_recal(struct ipk_predictor *p, double rate)
{
	p->recal_rate = rate;
}

/* The calibration a session's predictions go through, or NULL (no user). */
static struct ipk_calib *sess_calib(const struct ipk_predictor *p, struct sess *s)
{
	if (!s->uh)
		return NULL;
	const struct ipk_model_info *in = ipk_model_info(p->m);
	return ipk_calib_for(&s->uh->cal, ipk_model_id(p->m), in->nwin, in->window);
}

void ipk_predictor_free(struct ipk_predictor *p)
{
	if (!p)
		return;
	for (int i = 0; i < p->n; i++)
		sess_free(NULL, &p->v[i]);
	free(p->v);
	free(p->hash);
	ipk_histdb_free(p->own_hist);
	ipk_lstm_cuda_free(p->cu);
	free(p->free_slot);
	free(p->bx);
	free(p->bp);
	free(p->brow);
	free(p->bslot);
	free(p->bst);
	free(p->brq);
	free(p->bcal);
	free(p->bev);
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
			sess_free(p, &p->v[i]);
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
	s->slot = -1;
	s->stamp = -1;
	s->fs = ipk_feat_new();
	s->ls = ipk_lstm_state_new(ipk_model_net(p->m));
	s->rq = ipk_recal_queue_new();
	if (!s->fs || !s->ls || !s->rq) {
		sess_free(NULL, s);
		return NULL;
	}
	if (p->cu) {
		/* every session ever held fits in free_slot: grown with next_slot */
		int slot = p->nfree ? p->free_slot[--p->nfree] : p->next_slot;
		if (slot == p->next_slot) {
			int *fs = realloc(p->free_slot, sizeof(int) * (p->next_slot + 1));
			if (!fs || ipk_lstm_cuda_reserve(p->cu, p->next_slot + 1, NULL) < 0) {
				if (fs)
					p->free_slot = fs;
				sess_free(NULL, s);
				return NULL;
			}
			p->free_slot = fs;
			p->next_slot++;
		}
		if (ipk_lstm_cuda_reset(p->cu, slot, NULL) < 0) {
			p->free_slot[p->nfree++] = slot;
			sess_free(NULL, s);
			return NULL;
		}
		s->slot = slot;
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
	if (!s->uh && smp->user[0] && !(s->uh = ipk_histdb_get(p->hist, smp->user)))
		return ipk_err_set(err, IPK_EXIT_OSERR, "predict '%s': out of memory", smp->session);
	if (ipk_feat_step(s->fs, smp, s->uh, raw) < 0)
		return 0;
	s->last_ts = smp->ts;
	const struct ipk_model_info *in = ipk_model_info(p->m);
	ipk_norm_apply(in->mean, in->scale, IPK_FEAT_COUNT, raw, x);
	ipk_lstm_step(ipk_model_net(p->m), &s->ls, 1, x, out->p);
	out->ts = smp->ts;
	out->idle_s = ipk_feat_idle(s->fs);
	ipk_model_output(p->m, x, out->idle_s, out->p, out->p);
	if (ipk_recal_step(s->rq, sess_calib(p, s), p->recal_rate, smp->ts, ipk_sample_events(smp), out->p) < 0)
		return ipk_err_set(err, IPK_EXIT_OSERR, "predict '%s': out of memory", smp->session);
	out->nwin = in->nwin;
	memcpy(out->window, in->window, sizeof(double) * in->nwin);
	out->decide = p->decide;
	out->threshold = p->threshold;
	/* decided on the value as written (6 decimals), so readers agree */
	out->above = round(out->p[p->decide] * 1e6) / 1e6 >= round(p->threshold * 1e6) / 1e6;
	return 1;
}

int ipk_predictor_use_cuda(struct ipk_predictor *p, struct ipk_err *err)
{
	if (p->cu)
		return 0;
	if (p->n)
		return ipk_err_set(err, IPK_EXIT_SOFTWARE, "use device 'cuda': sessions already started on the CPU");
	p->cu = ipk_lstm_cuda_new(ipk_model_net(p->m), 1024, err);
	return p->cu ? 0 : -1;
}

static int batch_grow(struct ipk_predictor *p, int n)
{
	if (n <= p->bcap)
		return 0;
	int cap = p->bcap ? p->bcap : 64;
	while (cap < n)
		cap *= 2;
	const struct ipk_model_info *in = ipk_model_info(p->m);
	float *bx = realloc(p->bx, sizeof(float) * (size_t)cap * IPK_FEAT_COUNT);
	if (bx)
		p->bx = bx;
	float *bp = realloc(p->bp, sizeof(float) * (size_t)cap * in->nwin);
	if (bp)
		p->bp = bp;
	int *br = realloc(p->brow, sizeof(int) * cap);
	if (br)
		p->brow = br;
	int *bs = realloc(p->bslot, sizeof(int) * cap);
	if (bs)
		p->bslot = bs;
	struct ipk_lstm_state **bst = realloc(p->bst, sizeof(*bst) * cap);
	if (bst)
		p->bst = bst;
	struct ipk_recal_queue **brq = realloc(p->brq, sizeof(*brq) * cap);
	if (brq)
		p->brq = brq;
	struct ipk_calib **bcal = realloc(p->bcal, sizeof(*bcal) * cap);
	if (bcal)
		p->bcal = bcal;
	float *bev = realloc(p->bev, sizeof(float) * cap);
	if (bev)
		p->bev = bev;
	if (!bx || !bp || !br || !bs || !bst || !brq || !bcal || !bev)
		return -1;
	p->bcap = cap;
	return 0;
}

/* Run the LSTM on the m pending rows and finish their predictions. */
static int batch_flush(struct ipk_predictor *p, int m, struct ipk_prediction *out, struct ipk_err *err)
{
	p->stamp++;
	if (!m)
		return 0;
	const struct ipk_model_info *in = ipk_model_info(p->m);
	if (p->cu) {
		if (ipk_lstm_cuda_step(p->cu, p->bslot, m, p->bx, p->bp, err) < 0)
			return -1;
	} else {
		ipk_lstm_step(ipk_model_net(p->m), p->bst, m, p->bx, p->bp);
	}
	for (int r = 0; r < m; r++) {
		struct ipk_prediction *o = &out[p->brow[r]];
		ipk_model_output(p->m, p->bx + (size_t)r * IPK_FEAT_COUNT, o->idle_s, p->bp + (size_t)r * in->nwin, o->p);
		if (ipk_recal_step(p->brq[r], p->bcal[r], p->recal_rate, o->ts, p->bev[r], o->p) < 0)
			return ipk_err_set(err, IPK_EXIT_OSERR, "predict: out of memory");
		o->above = round(o->p[p->decide] * 1e6) / 1e6 >= round(p->threshold * 1e6) / 1e6;
	}
	return 0;
}

int ipk_predictor_step_batch(struct ipk_predictor *p, const struct ipk_sample *smp, int n,
			     struct ipk_prediction *out, int *got, struct ipk_err *err)
{
	if (n <= 0)
		return 0;
	if (batch_grow(p, n) < 0)
		return ipk_err_set(err, IPK_EXIT_OSERR, "predict: out of memory");
	if (smp[0].ts - p->last_sweep >= 1.0) {
		if (sweep(p, smp[0].ts) < 0)
			return ipk_err_set(err, IPK_EXIT_OSERR, "predict: out of memory");
		p->last_sweep = smp[0].ts;
	}
	const struct ipk_model_info *in = ipk_model_info(p->m);
	int m = 0;
	float raw[IPK_FEAT_COUNT];
	for (int i = 0; i < n; i++) {
		got[i] = 0;
		struct sess *s = find_or_add(p, smp[i].session);
		if (!s)
			return ipk_err_set(err, IPK_EXIT_OSERR, "predict '%s': out of memory", smp[i].session);
		if (s->stamp == p->stamp) {
			/* a second sample of this session: step what is pending first */
			if (batch_flush(p, m, out, err) < 0)
				return -1;
			m = 0;
		}
		if (!s->uh && smp[i].user[0] && !(s->uh = ipk_histdb_get(p->hist, smp[i].user)))
			return ipk_err_set(err, IPK_EXIT_OSERR, "predict '%s': out of memory", smp[i].session);
		if (ipk_feat_step(s->fs, &smp[i], s->uh, raw) < 0)
			continue;
		s->last_ts = smp[i].ts;
		s->stamp = p->stamp;
		ipk_norm_apply(in->mean, in->scale, IPK_FEAT_COUNT, raw, p->bx + (size_t)m * IPK_FEAT_COUNT);
		p->brow[m] = i;
		p->bslot[m] = s->slot;
		p->bst[m] = s->ls;
		p->brq[m] = s->rq;
		p->bcal[m] = sess_calib(p, s);
		p->bev[m] = ipk_sample_events(&smp[i]);
		m++;
		struct ipk_prediction *o = &out[i];
		o->ts = smp[i].ts;
		o->idle_s = ipk_feat_idle(s->fs);
		o->nwin = in->nwin;
		memcpy(o->window, in->window, sizeof(double) * in->nwin);
		o->decide = p->decide;
		o->threshold = p->threshold;
		got[i] = 1;
	}
	return batch_flush(p, m, out, err);
}

struct stream_pos {
	long seq, k;
	int series;
};

static int by_seq(const void *a, const void *b)
{
	long x = ((const struct stream_pos *)a)->seq, y = ((const struct stream_pos *)b)->seq;
	return x < y ? -1 : x > y;
}

int ipk_predict_dataset(const struct ipk_model *m, const struct ipk_dataset *d, const char *skip, const long *off,
			double rate, double *pred, struct ipk_err *err)
{
	if (ipk_model_check_features(m, err) < 0)
		return -1;
	const struct ipk_model_info *in = ipk_model_info(m);
	struct ipk_lstm *net = ipk_model_net(m);
	const int F = IPK_FEAT_COUNT, nwin = in->nwin;
	long total = 0;
	for (int i = 0; i < d->n; i++)
		if (!skip || !skip[i])
			total += d->s[i].n;
	struct ipk_lstm_state *st = ipk_lstm_state_new(net);
	struct stream_pos *order = malloc(sizeof(*order) * (total ? total : 1));
	struct ipk_recal_queue **rq = calloc(d->n ? d->n : 1, sizeof(*rq));
	struct ipk_calib **cal = calloc(d->n ? d->n : 1, sizeof(*cal));
	struct ipk_histdb *users = ipk_histdb_new();
	int rc = -1;
	if (!st || !order || !rq || !cal || !users)
		goto out;
	/* the model, session by session */
	long q = 0;
	float x[IPK_FEAT_COUNT], p[IPK_LSTM_MAX_OUT];
	for (int i = 0; i < d->n; i++) {
		const struct ipk_series *s = &d->s[i];
		if (skip && skip[i])
			continue;
		ipk_lstm_state_reset(net, st);
		for (long t = 0; t < s->n; t++) {
			ipk_norm_apply(in->mean, in->scale, F, s->raw + t * F, x);
			ipk_lstm_step(net, &st, 1, x, p);
			ipk_model_output(m, x, s->idle[t], p, p);
			for (int j = 0; j < nwin; j++)
				pred[(off[i] + t) * nwin + j] = p[j];
			order[q++] = (struct stream_pos){ .seq = s->seq[t], .k = off[i] + t, .series = i };
		}
	}
	/* then the recalibration, sample by sample in stream order, as a
	 * predictor reading d's input would: each session its queue, each
	 * user a calibration that starts as the identity */
	if (rate > 0) {
		for (int i = 0; i < d->n; i++) {
			const struct ipk_series *s = &d->s[i];
			if ((skip && skip[i]) || !s->user[0])
				continue;
			struct ipk_hist *h = ipk_histdb_get(users, s->user);
			if (!h || !(rq[i] = ipk_recal_queue_new()))
				goto out;
			cal[i] = ipk_calib_for(&h->cal, ipk_model_id(m), nwin, in->window);
		}
		qsort(order, total, sizeof(*order), by_seq);
		for (long r = 0; r < total; r++) {
			int i = order[r].series;
			long t = order[r].k - off[i];
			for (int j = 0; j < nwin; j++)
				p[j] = (float)pred[order[r].k * nwin + j];
			if (ipk_recal_step(rq[i], cal[i], rate, d->s[i].ts[t], d->s[i].events[t], p) < 0)
				goto out;
			for (int j = 0; j < nwin; j++)
				pred[order[r].k * nwin + j] = p[j];
		}
	}
	rc = 0;
out:
	if (rc < 0)
		ipk_err_set(err, IPK_EXIT_OSERR, "predict for model '%s': out of memory", ipk_model_id(m));
	for (int i = 0; rq && i < d->n; i++)
		ipk_recal_queue_free(rq[i]);
	free(rq);
	free(cal);
	ipk_histdb_free(users);
	free(order);
	ipk_lstm_state_free(st);
	return rc;
}
