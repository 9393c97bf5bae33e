/* train.c - training and evaluation on user-split data. See train.h. */
#include "train.h"

#include "predict.h"
#include "recal.h"
#include "record.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ipk_train_defaults(struct ipk_train_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->hidden = 32;
	o->layers = 1;
	o->epochs = 8;
	o->nwin = 3;
	o->window[0] = 5;
	o->window[1] = 10;
	o->window[2] = 30;
	ipk_lstm_train_defaults(&o->lstm);
	o->lstm.lr = 2e-3;
	o->seed = 1;
	o->baselines = 1;
	o->stack = 1;
	o->early_idle = 2;
	o->ensemble = 1;
}

/* The members of an ensemble, their trainers and their average (train.h). */
struct ensemble {
	int k;
	struct ipk_lstm *member[IPK_TRAIN_MAX_ENSEMBLE];
	struct ipk_lstm_trainer *tr[IPK_TRAIN_MAX_ENSEMBLE];
	struct ipk_lstm *avg;
};

static void ensemble_free(struct ensemble *e)
{
	for (int i = 0; i < e->k; i++) {
		ipk_lstm_trainer_free(e->tr[i]);
		ipk_lstm_free(e->member[i]);
	}
	ipk_lstm_free(e->avg);
	memset(e, 0, sizeof(*e));
}

/* k members of shape sh from seeds seed.. (weights and sequence order),
 * untrained, and their average. Returns 0, or -1 with err set. */
static int ensemble_new(struct ensemble *e, const struct ipk_train_opts *o, const struct ipk_lstm_shape *sh,
			struct ipk_err *err)
{
	memset(e, 0, sizeof(*e));
	if (o->ensemble < 1 || o->ensemble > IPK_TRAIN_MAX_ENSEMBLE)
		return ipk_err_set(err, IPK_EXIT_USAGE, "train model 'ensemble %d': 1 to %d networks", o->ensemble,
				   IPK_TRAIN_MAX_ENSEMBLE);
	if (sh->hidden * o->ensemble > IPK_LSTM_MAX_HIDDEN)
		return ipk_err_set(err, IPK_EXIT_USAGE,
				   "train model 'ensemble %d x hidden %d': the average is one network of at most %d units",
				   o->ensemble, sh->hidden, IPK_LSTM_MAX_HIDDEN);
	struct ipk_lstm_shape ash = *sh;
	ash.hidden = sh->hidden * o->ensemble;
	e->k = o->ensemble;
	for (int i = 0; i < e->k; i++) {
		struct ipk_lstm_train_opts lo = o->lstm;
		lo.seed = o->seed + (uint64_t)i;
		if (!(e->member[i] = ipk_lstm_new(sh, err)))
			goto fail;
		ipk_lstm_init(e->member[i], lo.seed);
		if (!(e->tr[i] = ipk_lstm_trainer_new(e->member[i], &lo, err)))
			goto fail;
	}
	if (!(e->avg = ipk_lstm_new(&ash, err)) || ipk_lstm_merge(e->avg, e->member, e->k, err) < 0)
		goto fail;
	return 0;
fail:
	ensemble_free(e);
	return -1;
}

/* One epoch for every member, then the average rebuilt; *secs: the time it
 * took. Returns the members' mean loss, or -1 with err set. */
static double ensemble_epoch(struct ensemble *e, const struct ipk_lstm_seq *seqs, int nseq, double *secs,
			     struct ipk_err *err)
{
	double sum = 0, t0 = ipk_mono();
	for (int i = 0; i < e->k; i++) {
		double loss = ipk_lstm_train_epoch(e->tr[i], seqs, nseq, err);
		if (loss < 0)
			return -1;
		sum += loss;
	}
	if (ipk_lstm_merge(e->avg, e->member, e->k, err) < 0)
		return -1;
	*secs = ipk_mono() - t0;
	return sum / e->k;
}

/* The model's name: "lstm-h32-l1", or "lstm-3xh32-l1" for k = 3 networks
 * averaged (an ensemble, a fold mean). */
static void model_name(const struct ipk_train_opts *o, int k, char *buf, size_t len)
{
	if (k > 1)
		snprintf(buf, len, "lstm-%dxh%d-l%d", k, o->hidden, o->layers);
	else
		snprintf(buf, len, "lstm-h%d-l%d", o->hidden, o->layers);
}

/* ", an ensemble of 3 networks (seeds 1 to 3, averaged as one of 96 units)"
 * or "" */
static void ensemble_meta(const struct ipk_train_opts *o, char *buf, size_t len)
{
	if (o->ensemble > 1)
		snprintf(buf, len, ", an ensemble of %d networks (seeds %llu to %llu, averaged as one of %d units)",
			 o->ensemble, (unsigned long long)o->seed, (unsigned long long)o->seed + o->ensemble - 1,
			 o->ensemble * o->hidden);
	else
		buf[0] = 0;
}

void ipk_train_report_free(struct ipk_train_report *r)
{
	free(r->rows);
	r->rows = NULL;
	r->nrows = 0;
	free(r->lead);
	r->lead = NULL;
	r->nlead = 0;
}

static int add_row(struct ipk_train_report *r, const char *pred, double win, const char *subset,
		   const struct ipk_metrics *m)
{
	struct ipk_eval_row *v = realloc(r->rows, sizeof(*v) * (r->nrows + 1));
	if (!v)
		return -1;
	r->rows = v;
	struct ipk_eval_row *row = &v[r->nrows++];
	memset(row, 0, sizeof(*row));
	snprintf(row->predictor, sizeof(row->predictor), "%s", pred);
	row->window = win;
	snprintf(row->subset, sizeof(row->subset), "%s", subset);
	row->m = *m;
	row->brier_diff = (struct ipk_paired_diff){ NAN, NAN, NAN };
	return 0;
}

/* Everything the run allocates, freed in one place. */
struct work {
	int nser;
	char *is_val;
	float **x, **y;                /* per series: normalised features, labels */
	struct ipk_lstm_seq *train;
	int ntrain;
	long nval;                     /* validation steps */
	double *pred, *score;          /* [nval][nwin] model; [nval] scratch */
	float *yval, *yearly, *xval;   /* [nval][nwin], [nval][nwin], [nval][F] */
	double *idle;                  /* [nval] */
	double *best;                  /* best parameters */
	float *xtr, *ytr;              /* training steps: features, labels */
	long ntr;
};

static void work_free(struct work *w)
{
	for (int i = 0; i < w->nser; i++) {
		if (w->x)
			free(w->x[i]);
		if (w->y)
			free(w->y[i]);
	}
	free(w->x);
	free(w->y);
	free(w->is_val);
	free(w->train);
	free(w->pred);
	free(w->score);
	free(w->yval);
	free(w->yearly);
	free(w->xval);
	free(w->idle);
	free(w->best);
	free(w->xtr);
	free(w->ytr);
}

static int split_users(const struct ipk_train_opts *o, const struct ipk_dataset *d, struct work *w,
		       struct ipk_train_report *rep, struct ipk_err *err)
{
	char users[256][64];
	int nu = ipk_dataset_users(d, users, 256);
	if (nu > 256)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "split users '%d users': at most 256 supported", nu);
	if (nu < 2)
		return ipk_err_set(err, IPK_EXIT_DATAERR,
				   "split users '%s': the samples name %d user(s); training and validation need two or more",
				   nu ? users[0] : "", nu);
	char val[256] = { 0 };
	if (o->val_users) {
		char buf[1024];
		snprintf(buf, sizeof(buf), "%s", o->val_users);
		for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			int found = -1;
			for (int u = 0; u < nu; u++)
				if (!strcmp(users[u], t))
					found = u;
			if (found < 0)
				return ipk_err_set(err, IPK_EXIT_USAGE, "validation user '%s': no sample names this user", t);
			val[found] = 1;
		}
	} else {
		int order[256];
		for (int u = 0; u < nu; u++)
			order[u] = u;
		struct ipk_rng r;
		ipk_rng_seed(&r, o->seed ^ 0x75736572ULL);
		for (int u = nu - 1; u > 0; u--) {
			int j = (int)ipk_rng_below(&r, (uint64_t)u + 1), t = order[u];
			order[u] = order[j];
			order[j] = t;
		}
		int nv = (nu + 2) / 4;
		for (int u = 0; u < (nv ? nv : 1); u++)
			val[order[u]] = 1;
	}
	int nv = 0;
	for (int u = 0; u < nu; u++)
		nv += val[u];
	if (nv == 0 || nv == nu)
		return ipk_err_set(err, IPK_EXIT_USAGE, "split users '%s': every user is on one side",
				   o->val_users ? o->val_users : "");
	for (int u = 0; u < nu; u++) {
		char *dst = val[u] ? rep->val_users : rep->train_users;
		size_t l = strlen(dst);
		snprintf(dst + l, 512 - l, "%s%s", l ? "," : "", users[u]);
	}
	for (int i = 0; i < d->n; i++)
		for (int u = 0; u < nu; u++)
			if (!strcmp(d->s[i].user, users[u]))
				w->is_val[i] = val[u];
	return 0;
}

/* Stream every validation series through the network; fills w->pred. */
static void predict_val(const struct ipk_dataset *d, struct work *w, struct ipk_lstm *net, int nwin)
{
	long k = 0;
	float p[IPK_LSTM_MAX_OUT];
	for (int i = 0; i < d->n; i++) {
		if (!w->is_val[i])
			continue;
		struct ipk_lstm_state *st = ipk_lstm_state_new(net);
		for (long t = 0; t < d->s[i].n; t++, k++) {
			if (st)
				ipk_lstm_step(net, &st, 1, w->x[i] + t * IPK_FEAT_COUNT, p);
			for (int j = 0; j < nwin; j++)
				w->pred[k * nwin + j] = st ? p[j] : NAN;
		}
		ipk_lstm_state_free(st);
	}
}

/* The selection score epochs are chosen on: per window, the mean of the
 * all-step PR-AUC, the early-step PR-AUC and the early-step ROC-AUC (the
 * early steps are where a model can beat the timer); averaged over windows.
 * Windows without early positives count their all-step PR-AUC only. pred,
 * y and ye hold n steps of nwin values; scratch n doubles. */
static double sel_score(const double *pred, const float *y, const float *ye, long n, int nwin, double *scratch)
{
	double s = 0;
	for (int j = 0; j < nwin; j++) {
		struct ipk_metrics m, e;
		for (long k = 0; k < n; k++)
			scratch[k] = pred[k * nwin + j];
		if (ipk_metrics_compute(scratch, y + j, nwin, n, 1, &m, NULL) < 0 || isnan(m.pr_auc) ||
		    ipk_metrics_compute(scratch, ye + j, nwin, n, 1, &e, NULL) < 0)
			return NAN;
		if (isnan(e.pr_auc) || isnan(e.roc_auc))
			s += m.pr_auc;
		else
			s += (m.pr_auc + e.pr_auc + e.roc_auc) / 3;
	}
	return s / nwin;
}

/* The selection score of the validation steps (w->pred). */
static double val_score(struct work *w, int nwin)
{
	return sel_score(w->pred, w->yval, w->yearly, w->nval, nwin, w->score);
}

/* The stacked output stage (model.h) into info: the gap histogram (gh, the
 * training users' gaps) and per window a logistic regression on the
 * features fitted on the training steps, then the stacking regression on
 * the validation steps' network outputs (w->pred, replaced by the stacked
 * probabilities). */
static int fit_stack(const struct ipk_train_opts *o, struct work *w, struct ipk_gaphist *gh,
		     struct ipk_model_info *info, struct ipk_err *err)
{
	const int F = IPK_FEAT_COUNT, nwin = o->nwin, S = IPK_MODEL_STACK_IN;
	float *z = malloc(sizeof(float) * (w->nval ? w->nval : 1) * S);
	if (!z)
		return ipk_err_set(err, IPK_EXIT_OSERR, "train model: out of memory");
	info->stacked = 1;
	info->early_idle = o->early_idle;
	const double *g;
	long ng = ipk_gaphist_sorted(gh, &g);
	ipk_model_gaps_fit(&info->gaps, g, ng);
	for (int j = 0; j < nwin; j++) {
		info->window[j] = o->window[j];
		struct ipk_logreg lr, st;
		struct ipk_err e2 = { 0 };
		memset(info->lr_w[j], 0, sizeof(info->lr_w[j]));
		memset(info->stack_w[j], 0, sizeof(info->stack_w[j]));
		/* a window whose training or validation steps hold one class
		 * only keeps the network's output: identity weights */
		info->stack_w[j][0] = 1;
		if (ipk_logreg_fit(&lr, w->xtr, F, w->ytr + j, nwin, w->ntr, 1e-3, &e2) < 0) {
			if (e2.code != IPK_EXIT_DATAERR)
				goto fail;
			continue;
		}
		for (long k = 0; k < w->nval; k++)
			ipk_model_stack_inputs(w->pred[k * nwin + j], ipk_logreg_predict(&lr, w->xval + k * F),
					       ipk_model_gaps_score(&info->gaps, w->idle[k], o->window[j]), w->idle[k],
					       o->early_idle, z + k * S);
		if (ipk_logreg_fit(&st, z, S, w->yval + j, nwin, w->nval, 1e-3, &e2) < 0) {
			if (e2.code != IPK_EXIT_DATAERR)
				goto fail;
			continue;
		}
		for (int i = 0; i <= F; i++)
			info->lr_w[j][i] = lr.w[i];
		for (int i = 0; i <= S; i++)
			info->stack_w[j][i] = st.w[i];
	}
	free(z);
	info->nwin = nwin;
	info->nfeat = F;
	float q[IPK_LSTM_MAX_OUT], p[IPK_LSTM_MAX_OUT];
	for (long k = 0; k < w->nval; k++) {
		for (int j = 0; j < nwin; j++)
			q[j] = (float)w->pred[k * nwin + j];
		ipk_model_info_output(info, w->xval + k * F, w->idle[k], q, p);
		for (int j = 0; j < nwin; j++)
			w->pred[k * nwin + j] = p[j];
	}
	return 0;
fail:
	free(z);
	return ipk_err_set(err, IPK_EXIT_OSERR, "train model: out of memory");
}

/* Cross-fitting (ipk_train_opts.cross_fit): every user is a fold. */
struct cfwork {
	int nser, nu;
	int *uof;                   /* per series: its user's index */
	long *off;                  /* per series: its first row */
	long ustart[257];           /* rows of user u: ustart[u] .. ustart[u + 1] - 1 */
	float **x, **y;             /* per series: normalised features, labels */
	struct ipk_lstm_seq *seqs;
	long n;                     /* rows: every step, grouped by user */
	float *yall, *yearly;       /* [n][nwin] labels, early-step labels */
	double *idle;               /* [n] */
	float *q;                   /* [epochs][n][nwin] the folds' network outputs */
	double *r, *h, *pn, *pd;    /* [n][nwin] out of fold: regression, histogram, stacked; scratch */
	double *hs;                 /* [n][nwin] out of fold: the model's smoothed histogram (model.h) */
	double *fs, *scratch;       /* [users][epochs] fold scores; [n] */
	float *xr, *yr;             /* [n][F], [n][nwin] training rows */
	float *z, *ytmp;            /* [n][IPK_MODEL_STACK_IN], [n] */
	double *fp;                 /* fold mean: [users][epochs][params] the folds' networks */
	float *fmean, *fscale;      /* [users][F] the folds' normalisations */
};

static void cfwork_free(struct cfwork *c)
{
	for (int i = 0; i < c->nser; i++) {
		if (c->x)
			free(c->x[i]);
		if (c->y)
			free(c->y[i]);
	}
	free(c->x);
	free(c->y);
	free(c->uof);
	free(c->off);
	free(c->seqs);
	free(c->yall);
	free(c->yearly);
	free(c->idle);
	free(c->q);
	free(c->r);
	free(c->h);
	free(c->hs);
	free(c->pn);
	free(c->pd);
	free(c->fs);
	free(c->scratch);
	free(c->xr);
	free(c->yr);
	free(c->z);
	free(c->ytmp);
	free(c->fp);
	free(c->fmean);
	free(c->fscale);
}

/* Fit the normalisation on every series but user f's (f < 0: all) into
 * mean/scale and apply it to every series. */
static void cf_normalise(const struct ipk_dataset *d, struct cfwork *c, int f, float *mean, float *scale)
{
	const int F = IPK_FEAT_COUNT;
	struct ipk_norm_acc acc;
	ipk_norm_fit_begin(&acc);
	for (int i = 0; i < d->n; i++)
		if (c->uof[i] != f)
			for (long t = 0; t < d->s[i].n; t++)
				ipk_norm_fit_add(&acc, d->s[i].raw + t * F);
	ipk_norm_fit_end(&acc, mean, scale);
	for (int i = 0; i < d->n; i++)
		for (long t = 0; t < d->s[i].n; t++)
			ipk_norm_apply(mean, scale, F, d->s[i].raw + t * F, c->x[i] + t * F);
}

/* The rows of every user but f (f < 0: all) into c->xr/c->yr, sequences
 * into c->seqs; returns the number of rows, *nseq the sequences. */
static long cf_gather(const struct ipk_dataset *d, struct cfwork *c, int f, int nwin, int *nseq)
{
	const int F = IPK_FEAT_COUNT;
	long nr = 0;
	int ns = 0;
	for (int u = 0; u < c->nu; u++)
		for (int i = 0; i < d->n; i++) {
			if (c->uof[i] != u || u == f)
				continue;
			long len = d->s[i].n;
			c->seqs[ns++] = (struct ipk_lstm_seq){ c->x[i], c->y[i], (int)len };
			memcpy(c->xr + nr * F, c->x[i], sizeof(float) * len * F);
			memcpy(c->yr + nr * nwin, c->y[i], sizeof(float) * len * nwin);
			nr += len;
		}
	*nseq = ns;
	return nr;
}

/* Stream user f's series through net; outputs into q (rows as c's). */
static void cf_predict(const struct ipk_dataset *d, struct cfwork *c, struct ipk_lstm *net, int f, int nwin, float *q)
{
	float p[IPK_LSTM_MAX_OUT];
	for (int i = 0; i < d->n; i++) {
		if (c->uof[i] != f)
			continue;
		struct ipk_lstm_state *st = ipk_lstm_state_new(net);
		for (long t = 0; t < d->s[i].n; t++) {
			long k = c->off[i] + t;
			if (st)
				ipk_lstm_step(net, &st, 1, c->x[i] + t * IPK_FEAT_COUNT, p);
			for (int j = 0; j < nwin; j++)
				q[k * nwin + j] = st ? p[j] : NAN;
		}
		ipk_lstm_state_free(st);
	}
}

/* The fold mean (train.h): the folds' networks (of shape sh each) after
 * epoch be, moved onto the normalisation mean/scale and merged. NULL with
 * err set. */
static struct ipk_lstm *fold_mean(const struct cfwork *c, struct ipk_lstm_shape sh, int E, int be, const float *mean,
				  const float *scale, struct ipk_err *err)
{
	const int F = IPK_FEAT_COUNT;
	struct ipk_lstm *fold[256] = { 0 }, *net = NULL;
	for (int f = 0; f < c->nu; f++) {
		if (!(fold[f] = ipk_lstm_new(&sh, err)))
			goto done;
		size_t np = ipk_lstm_nparams(fold[f]);
		memcpy(ipk_lstm_params(fold[f]), c->fp + ((size_t)f * E + be) * np, sizeof(double) * np);
		ipk_lstm_renormalise(fold[f], c->fmean + f * F, c->fscale + f * F, mean, scale);
	}
	sh.hidden *= c->nu;
	if ((net = ipk_lstm_new(&sh, err)) && ipk_lstm_merge(net, fold, c->nu, err) < 0) {
		ipk_lstm_free(net);
		net = NULL;
	}
done:
	for (int f = 0; f < c->nu; f++)
		ipk_lstm_free(fold[f]);
	return net;
}

static struct ipk_model *train_crossfit(const struct ipk_train_opts *o, const struct ipk_dataset *d,
					ipk_train_progress cb, void *cbarg, struct ipk_train_report *rep,
					struct ipk_err *err)
{
	const int F = IPK_FEAT_COUNT, nwin = o->nwin, S = IPK_MODEL_STACK_IN, E = o->epochs;
	struct cfwork c;
	memset(&c, 0, sizeof(c));
	struct ipk_model *model = NULL;
	struct ensemble ens = { 0 };
	struct ipk_lstm *final = NULL;
	struct ipk_gaphist *gh = NULL;
	struct ipk_model_info *info = calloc(1, sizeof(*info));
	char (*users)[64] = malloc(256 * 64);
	int rok[IPK_LSTM_MAX_OUT], stok[IPK_LSTM_MAX_OUT];
	if (!info || !users)
		goto oom;
	if (o->val_users) {
		ipk_err_set(err, IPK_EXIT_USAGE,
			    "split users '%s': cross-fitting makes every user a fold; validation users do not apply",
			    o->val_users);
		goto fail;
	}
	if (E < 1) {
		ipk_err_set(err, IPK_EXIT_USAGE, "cross-fit 'epochs 0': the folds choose among one epoch or more");
		goto fail;
	}
	int nu = ipk_dataset_users(d, users, 256);
	if (nu > 256) {
		ipk_err_set(err, IPK_EXIT_DATAERR, "split users '%d users': at most 256 supported", nu);
		goto fail;
	}
	if (nu < 2) {
		ipk_err_set(err, IPK_EXIT_DATAERR,
			    "split users '%s': the samples name %d user(s); cross-fitting needs two or more",
			    nu ? users[0] : "", nu);
		goto fail;
	}
	if (!o->final_refit && (long)nu * o->ensemble * o->hidden > IPK_LSTM_MAX_HIDDEN) {
		ipk_err_set(err, IPK_EXIT_USAGE,
			    "cross-fit fold mean '%d users x ensemble %d x hidden %d': one network of at most %d units; "
			    "refit the final network instead",
			    nu, o->ensemble, o->hidden, IPK_LSTM_MAX_HIDDEN);
		goto fail;
	}
	c.nser = d->n;
	c.nu = nu;
	c.uof = malloc(sizeof(int) * (d->n ? d->n : 1));
	c.off = malloc(sizeof(long) * (d->n ? d->n : 1));
	c.x = calloc(d->n ? d->n : 1, sizeof(float *));
	c.y = calloc(d->n ? d->n : 1, sizeof(float *));
	c.seqs = malloc(sizeof(*c.seqs) * (d->n ? d->n : 1));
	if (!c.uof || !c.off || !c.x || !c.y || !c.seqs)
		goto oom;
	for (int i = 0; i < d->n; i++)
		for (int u = 0; u < nu; u++)
			if (!strcmp(d->s[i].user, users[u]))
				c.uof[i] = u;
	for (int u = 0; u < nu; u++) {
		c.ustart[u] = c.n;
		for (int i = 0; i < d->n; i++)
			if (c.uof[i] == u) {
				c.off[i] = c.n;
				c.n += d->s[i].n;
			}
	}
	for (int u = nu; u <= 256; u++)
		c.ustart[u] = c.n;
	const long N = c.n;
	if (!N) {
		ipk_err_set(err, IPK_EXIT_DATAERR, "train model 'lstm': no samples");
		goto fail;
	}
	size_t nq = (size_t)E * (size_t)N * (size_t)nwin;
	if (nq / (size_t)E / (size_t)N != (size_t)nwin)
		goto oom;
	c.yall = malloc(sizeof(float) * N * nwin);
	c.yearly = malloc(sizeof(float) * N * nwin);
	c.idle = malloc(sizeof(double) * N);
	c.q = malloc(sizeof(float) * nq);
	c.r = malloc(sizeof(double) * N * nwin);
	c.h = malloc(sizeof(double) * N * nwin);
	c.hs = malloc(sizeof(double) * N * nwin);
	c.pn = malloc(sizeof(double) * N * nwin);
	c.pd = malloc(sizeof(double) * N * nwin);
	c.fs = malloc(sizeof(double) * nu * E);
	c.scratch = malloc(sizeof(double) * N);
	c.xr = malloc(sizeof(float) * N * F);
	c.yr = malloc(sizeof(float) * N * nwin);
	c.z = malloc(sizeof(float) * N * S);
	c.ytmp = malloc(sizeof(float) * N);
	c.fmean = malloc(sizeof(float) * nu * F);
	c.fscale = malloc(sizeof(float) * nu * F);
	if (!c.yall || !c.yearly || !c.idle || !c.q || !c.r || !c.h || !c.hs || !c.pn || !c.pd || !c.fs || !c.scratch ||
	    !c.xr || !c.yr || !c.z || !c.ytmp || !c.fmean || !c.fscale)
		goto oom;
	for (int i = 0; i < d->n; i++) {
		const struct ipk_series *s = &d->s[i];
		c.x[i] = malloc(sizeof(float) * (s->n ? s->n : 1) * F);
		c.y[i] = malloc(sizeof(float) * (s->n ? s->n : 1) * nwin);
		if (!c.x[i] || !c.y[i])
			goto oom;
		ipk_label_windows(s->ts, s->events, s->n, o->window, nwin, c.y[i]);
		memcpy(c.yall + c.off[i] * nwin, c.y[i], sizeof(float) * s->n * nwin);
		memcpy(c.idle + c.off[i], s->idle, sizeof(double) * s->n);
	}
	for (long k = 0; k < N; k++)
		for (int j = 0; j < nwin; j++)
			c.yearly[k * nwin + j] = c.idle[k] <= o->early_idle ? c.yall[k * nwin + j] : -1.0f;
	for (int u = 0; u < nu; u++) {
		const char *sep = u ? "," : "";
		size_t l = strlen(rep->train_users);
		snprintf(rep->train_users + l, sizeof(rep->train_users) - l, "%s%s", sep, users[u]);
		l = strlen(rep->val_users);
		snprintf(rep->val_users + l, sizeof(rep->val_users) - l, "%s%s", sep, users[u]);
	}
	rep->train_steps = rep->val_steps = N;
	rep->folds = nu;
	for (long k = 0; k < N * nwin; k++)
		c.r[k] = c.h[k] = c.hs[k] = NAN;
	for (int j = 0; j < nwin; j++)
		rok[j] = 1;

	/* the folds: each user predicted by a network, a regression and a
	 * histogram fitted without it */
	struct ipk_lstm_shape sh = { .n_in = F, .hidden = o->hidden, .layers = o->layers, .n_out = nwin };
	double tfold = 0;
	for (int f = 0; f < nu; f++) {
		char stage[128];
		snprintf(stage, sizeof(stage), "fold %d/%d (%.64s out)", f + 1, nu, users[f]);
		cf_normalise(d, &c, f, c.fmean + f * F, c.fscale + f * F);
		int ns;
		long nr = cf_gather(d, &c, f, nwin, &ns);
		if (ensemble_new(&ens, o, &sh, err) < 0)
			goto fail;
		size_t np = ipk_lstm_nparams(ens.avg);
		if (!o->final_refit && !c.fp && !(c.fp = calloc((size_t)nu * E, sizeof(double) * np)))
			goto oom;
		long a = c.ustart[f], nf = c.ustart[f + 1] - a;
		for (int e = 0; e < E; e++) {
			double dt, loss = ensemble_epoch(&ens, c.seqs, ns, &dt, err);
			if (loss < 0)
				goto fail;
			tfold += dt;
			if (c.fp)
				memcpy(c.fp + ((size_t)f * E + e) * np, ipk_lstm_params_const(ens.avg), sizeof(double) * np);
			float *qe = c.q + (size_t)e * N * nwin;
			cf_predict(d, &c, ens.avg, f, nwin, qe);
			for (long k = 0; k < nf * nwin; k++)
				c.pd[k] = qe[a * nwin + k];
			double vs = sel_score(c.pd, c.yall + a * nwin, c.yearly + a * nwin, nf, nwin, c.scratch);
			c.fs[f * E + e] = vs;
			if (cb)
				cb(cbarg, stage, e + 1, loss, vs, dt);
		}
		ensemble_free(&ens);
		if (o->stack || o->baselines)
			for (int j = 0; j < nwin; j++) {
				struct ipk_logreg lr;
				struct ipk_err e2 = { 0 };
				if (ipk_logreg_fit(&lr, c.xr, F, c.yr + j, nwin, nr, 1e-3, &e2) < 0) {
					if (e2.code != IPK_EXIT_DATAERR)
						goto oom;
					rok[j] = 0;
					continue;
				}
				for (int i = 0; i < d->n; i++)
					if (c.uof[i] == f)
						for (long t = 0; t < d->s[i].n; t++)
							c.r[(c.off[i] + t) * nwin + j] =
								ipk_logreg_predict(&lr, c.x[i] + t * F);
			}
		if (o->baselines || o->stack) {
			if (!(gh = ipk_gaphist_new()))
				goto oom;
			for (int i = 0; i < d->n; i++)
				if (c.uof[i] != f && ipk_gaphist_add_session(gh, d->s[i].ts, d->s[i].events, d->s[i].n) < 0)
					goto oom;
			const double *g;
			long ng = ipk_gaphist_sorted(gh, &g);
			ipk_model_gaps_fit(&info->gaps, g, ng); /* this fold's; the final one replaces it */
			for (long k = a; k < a + nf; k++)
				for (int j = 0; j < nwin; j++) {
					c.h[k * nwin + j] = ipk_gaphist_score(gh, c.idle[k], o->window[j]);
					c.hs[k * nwin + j] = ipk_model_gaps_score(&info->gaps, c.idle[k], o->window[j]);
				}
			ipk_gaphist_free(gh);
			gh = NULL;
		}
	}
	rep->fold_epoch_seconds = tfold / ((double)nu * E);

	/* the epoch: the best mean of the folds' scores */
	int be = 0;
	double best = NAN;
	for (int e = 0; e < E; e++) {
		double sum = 0;
		int cnt = 0;
		for (int f = 0; f < nu; f++)
			if (!isnan(c.fs[f * E + e])) {
				sum += c.fs[f * E + e];
				cnt++;
			}
		double m = cnt ? sum / cnt : NAN;
		if (e == 0 || m > best || (isnan(best) && !isnan(m))) {
			best = m;
			be = e;
		}
	}
	rep->best_epoch = be + 1;
	const float *qb = c.q + (size_t)be * N * nwin;

	/* the stacking stage on every user's out-of-fold outputs; pn: each
	 * user's stacked probabilities from a stage fitted without it (the
	 * report); pd: the final stage's (the thresholds) */
	info->stacked = o->stack;
	info->early_idle = o->early_idle;
	for (int j = 0; j < nwin; j++) {
		memset(info->lr_w[j], 0, sizeof(info->lr_w[j]));
		memset(info->stack_w[j], 0, sizeof(info->stack_w[j]));
		info->stack_w[j][0] = 1;
		stok[j] = 0;
		for (long k = 0; k < N; k++)
			c.pn[k * nwin + j] = c.pd[k * nwin + j] = qb[k * nwin + j];
		if (!o->stack || !rok[j])
			continue;
		for (long k = 0; k < N; k++)
			ipk_model_stack_inputs(qb[k * nwin + j], c.r[k * nwin + j], c.hs[k * nwin + j], c.idle[k],
					       o->early_idle, c.z + k * S);
		struct ipk_logreg st;
		struct ipk_err e2 = { 0 };
		if (ipk_logreg_fit(&st, c.z, S, c.yall + j, nwin, N, 1e-3, &e2) < 0) {
			if (e2.code != IPK_EXIT_DATAERR)
				goto oom;
			continue;
		}
		stok[j] = 1;
		for (int i = 0; i <= S; i++)
			info->stack_w[j][i] = st.w[i];
		for (long k = 0; k < N; k++)
			c.pd[k * nwin + j] = ipk_logreg_predict(&st, c.z + k * S);
		for (int f = 0; f < nu; f++) {
			struct ipk_logreg sf;
			long a = c.ustart[f], b = c.ustart[f + 1];
			for (long k = 0; k < N; k++)
				c.ytmp[k] = k >= a && k < b ? -1.0f : c.yall[k * nwin + j];
			if (ipk_logreg_fit(&sf, c.z, S, c.ytmp, 1, N, 1e-3, &e2) < 0) {
				if (e2.code != IPK_EXIT_DATAERR)
					goto oom;
				continue;
			}
			for (long k = a; k < b; k++)
				c.pn[k * nwin + j] = ipk_logreg_predict(&sf, c.z + k * S);
		}
	}
	for (int j = 0; j < nwin; j++) {
		info->window[j] = o->window[j];
		for (long k = 0; k < N; k++)
			c.scratch[k] = c.pd[k * nwin + j];
		double th = ipk_threshold_at_precision(c.scratch, c.yall + j, nwin, N, 0.9, NULL);
		info->threshold[j] = isnan(th) ? 0.5 : th;
	}

	/* the final model: normalisation, histogram and regression refitted on
	 * every user, the stacking weights kept; the network the fold mean or
	 * refitted for the chosen number of epochs */
	cf_normalise(d, &c, -1, info->mean, info->scale);
	if (o->stack) {
		if (!(gh = ipk_gaphist_new()))
			goto oom;
		for (int i = 0; i < d->n; i++)
			if (ipk_gaphist_add_session(gh, d->s[i].ts, d->s[i].events, d->s[i].n) < 0)
				goto oom;
		const double *g;
		long ng = ipk_gaphist_sorted(gh, &g);
		ipk_model_gaps_fit(&info->gaps, g, ng);
		ipk_gaphist_free(gh);
		gh = NULL;
	} else {
		info->gaps.n = 0;
	}
	int ns;
	long nr = cf_gather(d, &c, -1, nwin, &ns);
	if (o->final_refit) {
		if (ensemble_new(&ens, o, &sh, err) < 0)
			goto fail;
		double tsum = 0;
		for (int e = 0; e <= be; e++) {
			double dt, loss = ensemble_epoch(&ens, c.seqs, ns, &dt, err);
			if (loss < 0)
				goto fail;
			tsum += dt;
			if (cb)
				cb(cbarg, "final (every user)", e + 1, loss, NAN, dt);
		}
		rep->epoch_seconds = tsum / (be + 1);
		final = ens.avg;
		ens.avg = NULL;
	} else {
		struct ipk_lstm_shape fsh = sh;
		fsh.hidden = o->hidden * o->ensemble;
		if (!(final = fold_mean(&c, fsh, E, be, info->mean, info->scale, err)))
			goto fail;
	}
	for (int j = 0; j < nwin; j++) {
		if (!stok[j])
			continue;
		struct ipk_logreg lr;
		struct ipk_err e2 = { 0 };
		if (ipk_logreg_fit(&lr, c.xr, F, c.yr + j, nwin, nr, 1e-3, &e2) < 0) {
			if (e2.code != IPK_EXIT_DATAERR)
				goto oom;
			memset(info->stack_w[j], 0, sizeof(info->stack_w[j]));
			info->stack_w[j][0] = 1;
			continue;
		}
		for (int i = 0; i <= F; i++)
			info->lr_w[j][i] = lr.w[i];
	}
	info->nwin = nwin;
	info->nfeat = F;
	for (int i = 0; i < F; i++)
		snprintf(info->feat[i], IPK_MODEL_FEAT_NAME, "%s", ipk_feat_name(i));
	char em[96];
	model_name(o, o->final_refit ? o->ensemble : nu * o->ensemble, info->name, sizeof(info->name));
	ensemble_meta(o, em, sizeof(em));
	snprintf(info->meta, sizeof(info->meta),
		 "ip-train seed %llu, epochs %d (best %d over %d user folds), batch %d, bptt %d, lr %g%s%s; "
		 "train users %.180s; cross-fitted: every user scored out of fold; final network: %s (%d units)",
		 (unsigned long long)o->seed, E, be + 1, nu, o->lstm.batch, o->lstm.bptt, o->lstm.lr,
		 o->stack ? ", stacked on out-of-fold outputs" : "", em, rep->train_users,
		 o->final_refit ? "refitted on every user" : "the mean of the folds'", ipk_lstm_shape(final)->hidden);

	/* the report: every user out of fold, the model and the baselines on
	 * the same steps */
	for (int j = 0; j < nwin; j++) {
		int npred = o->baselines ? 4 : 1;
		for (int p = 0; p < npred; p++) {
			const char *name = p == 0 ? "lstm" : p == 1 ? "idle-timer" : p == 2 ? "hybrid-histogram" : "logistic";
			if (p == 3 && !rok[j])
				continue;
			for (long k = 0; k < N; k++)
				c.scratch[k] = p == 0 ? c.pn[k * nwin + j]
					     : p == 1 ? c.idle[k]
					     : p == 2 ? c.h[k * nwin + j]
						      : c.r[k * nwin + j];
			for (int sub = 0; sub < 2; sub++) {
				struct ipk_metrics m;
				if (ipk_metrics_compute(c.scratch, (sub ? c.yearly : c.yall) + j, nwin, N, p != 1, &m,
							err) < 0)
					goto fail;
				if (add_row(rep, name, o->window[j], sub ? "early" : "all", &m) < 0)
					goto oom;
			}
		}
	}
	model = ipk_model_new(info, final, err);
	final = NULL;
	if (!model)
		goto fail;
	ensemble_free(&ens);
	cfwork_free(&c);
	free(users);
	free(info);
	return model;
oom:
	ipk_err_set(err, IPK_EXIT_OSERR, "train model: out of memory");
fail:
	if (err && !err->code)
		ipk_err_set(err, IPK_EXIT_OSERR, "train model: out of memory");
	ipk_gaphist_free(gh);
	ensemble_free(&ens);
	ipk_lstm_free(final);
	cfwork_free(&c);
	free(users);
	free(info);
	ipk_train_report_free(rep);
	return NULL;
}

struct ipk_model *ipk_train_run(const struct ipk_train_opts *o, const struct ipk_dataset *d, ipk_train_progress cb,
				void *cbarg, struct ipk_train_report *rep, struct ipk_err *err)
{
	const int F = IPK_FEAT_COUNT, nwin = o->nwin;
	struct work w;
	memset(&w, 0, sizeof(w));
	memset(rep, 0, sizeof(*rep));
	if (o->cross_fit)
		return train_crossfit(o, d, cb, cbarg, rep, err);
	struct ipk_model *model = NULL;
	struct ensemble ens = { 0 };
	struct ipk_gaphist *gh = NULL;
	struct ipk_model_info *info = calloc(1, sizeof(*info));
	w.nser = d->n;
	w.is_val = calloc(d->n ? d->n : 1, 1);
	w.x = calloc(d->n ? d->n : 1, sizeof(float *));
	w.y = calloc(d->n ? d->n : 1, sizeof(float *));
	w.train = calloc(d->n ? d->n : 1, sizeof(*w.train));
	if (!info || !w.is_val || !w.x || !w.y || !w.train)
		goto oom;
	if (split_users(o, d, &w, rep, err) < 0)
		goto fail;

	/* normalisation from the training users */
	struct ipk_norm_acc acc;
	ipk_norm_fit_begin(&acc);
	for (int i = 0; i < d->n; i++)
		if (!w.is_val[i])
			for (long t = 0; t < d->s[i].n; t++)
				ipk_norm_fit_add(&acc, d->s[i].raw + t * F);
	ipk_norm_fit_end(&acc, info->mean, info->scale);
	for (int i = 0; i < d->n; i++) {
		const struct ipk_series *s = &d->s[i];
		w.x[i] = malloc(sizeof(float) * (s->n ? s->n : 1) * F);
		w.y[i] = malloc(sizeof(float) * (s->n ? s->n : 1) * nwin);
		if (!w.x[i] || !w.y[i])
			goto oom;
		for (long t = 0; t < s->n; t++)
			ipk_norm_apply(info->mean, info->scale, F, s->raw + t * F, w.x[i] + t * F);
		ipk_label_windows(s->ts, s->events, s->n, o->window, nwin, w.y[i]);
		if (w.is_val[i]) {
			w.nval += s->n;
		} else {
			w.train[w.ntrain++] = (struct ipk_lstm_seq){ w.x[i], w.y[i], (int)s->n };
			rep->train_steps += s->n;
		}
	}
	rep->val_steps = w.nval;
	if (!w.nval || !rep->train_steps) {
		ipk_err_set(err, IPK_EXIT_DATAERR, "train model 'lstm': no samples for training or validation");
		goto fail;
	}
	w.pred = malloc(sizeof(double) * w.nval * nwin);
	w.score = malloc(sizeof(double) * w.nval);
	w.yval = malloc(sizeof(float) * w.nval * nwin);
	w.yearly = malloc(sizeof(float) * w.nval * nwin);
	w.xval = malloc(sizeof(float) * w.nval * F);
	w.idle = malloc(sizeof(double) * w.nval);
	if (!w.pred || !w.score || !w.yval || !w.yearly || !w.xval || !w.idle)
		goto oom;
	for (int i = 0, k = 0; i < d->n; i++) {
		if (!w.is_val[i])
			continue;
		const struct ipk_series *s = &d->s[i];
		memcpy(w.yval + (long)k * nwin, w.y[i], sizeof(float) * s->n * nwin);
		memcpy(w.xval + (long)k * F, w.x[i], sizeof(float) * s->n * F);
		memcpy(w.idle + k, s->idle, sizeof(double) * s->n);
		k += (int)s->n;
	}
	for (long k = 0; k < w.nval; k++)
		for (int j = 0; j < nwin; j++)
			w.yearly[k * nwin + j] = w.idle[k] <= o->early_idle ? w.yval[k * nwin + j] : -1.0f;

	/* the network */
	struct ipk_lstm_shape sh = { .n_in = F, .hidden = o->hidden, .layers = o->layers, .n_out = nwin };
	if (ensemble_new(&ens, o, &sh, err) < 0)
		goto fail;
	struct ipk_lstm *net = ens.avg;
	size_t np = ipk_lstm_nparams(net);
	if (!(w.best = malloc(sizeof(double) * np)))
		goto oom;
	double best = -1, tsum = 0;
	for (int e = 1; e <= o->epochs; e++) {
		double dt, loss = ensemble_epoch(&ens, w.train, w.ntrain, &dt, err);
		if (loss < 0)
			goto fail;
		tsum += dt;
		predict_val(d, &w, net, nwin);
		double vs = val_score(&w, nwin);
		if (vs > best || e == 1) {
			best = vs;
			rep->best_epoch = e;
			memcpy(w.best, ipk_lstm_params(net), sizeof(double) * np);
		}
		if (cb)
			cb(cbarg, NULL, e, loss, vs, dt);
	}
	rep->epoch_seconds = o->epochs ? tsum / o->epochs : 0;
	if (o->epochs)
		memcpy(ipk_lstm_params(net), w.best, sizeof(double) * np);
	ipk_lstm_sync(net);
	predict_val(d, &w, net, nwin);

	/* training rows for the logistic regressions: all training steps */
	if (o->baselines || o->stack) {
		w.xtr = malloc(sizeof(float) * rep->train_steps * F);
		w.ytr = malloc(sizeof(float) * rep->train_steps * nwin);
		if (!w.xtr || !w.ytr)
			goto oom;
		for (int i = 0; i < d->n; i++) {
			if (w.is_val[i])
				continue;
			memcpy(w.xtr + w.ntr * F, w.x[i], sizeof(float) * d->s[i].n * F);
			memcpy(w.ytr + w.ntr * nwin, w.y[i], sizeof(float) * d->s[i].n * nwin);
			w.ntr += d->s[i].n;
		}
	}
	info->nwin = nwin;
	info->nfeat = F;
	/* the gap histogram of the training users: a stacking input and a
	 * baseline */
	if (o->baselines || o->stack) {
		if (!(gh = ipk_gaphist_new()))
			goto oom;
		for (int i = 0; i < d->n; i++)
			if (!w.is_val[i] && ipk_gaphist_add_session(gh, d->s[i].ts, d->s[i].events, d->s[i].n) < 0)
				goto oom;
	}
	if (o->stack && fit_stack(o, &w, gh, info, err) < 0)
		goto fail;

	/* the model file's contents */
	for (int j = 0; j < nwin; j++) {
		info->window[j] = o->window[j];
		for (long k = 0; k < w.nval; k++)
			w.score[k] = w.pred[k * nwin + j];
		double th = ipk_threshold_at_precision(w.score, w.yval + j, nwin, w.nval, 0.9, NULL);
		info->threshold[j] = isnan(th) ? 0.5 : th;
	}
	for (int i = 0; i < F; i++)
		snprintf(info->feat[i], IPK_MODEL_FEAT_NAME, "%s", ipk_feat_name(i));
	char em[96];
	model_name(o, o->ensemble, info->name, sizeof(info->name));
	ensemble_meta(o, em, sizeof(em));
	snprintf(info->meta, sizeof(info->meta),
		 "ip-train seed %llu, epochs %d (best %d), batch %d, bptt %d, lr %g%s%s; train users %.180s; validation users %.180s",
		 (unsigned long long)o->seed, o->epochs, rep->best_epoch, o->lstm.batch, o->lstm.bptt, o->lstm.lr,
		 o->stack ? ", stacked on validation users" : "", em, rep->train_users, rep->val_users);

	/* evaluation on the validation users */
	int bad = 0;
	for (int j = 0; j < nwin && !bad; j++) {
		int npred = o->baselines ? 4 : 1;
		for (int p = 0; p < npred && !bad; p++) {
			const char *name = p == 0 ? "lstm" : p == 1 ? "idle-timer" : p == 2 ? "hybrid-histogram" : "logistic";
			struct ipk_logreg lr;
			if (p == 3 && ipk_logreg_fit(&lr, w.xtr, F, w.ytr + j, nwin, w.ntr, 1e-3, err) < 0) {
				bad = 1;
				break;
			}
			for (long k = 0; k < w.nval; k++) {
				if (p == 0)
					w.score[k] = w.pred[k * nwin + j];
				else if (p == 1)
					w.score[k] = w.idle[k];
				else if (p == 2)
					w.score[k] = ipk_gaphist_score(gh, w.idle[k], o->window[j]);
				else
					w.score[k] = ipk_logreg_predict(&lr, w.xval + k * F);
			}
			for (int sub = 0; sub < 2 && !bad; sub++) {
				struct ipk_metrics m;
				const float *yy = sub ? w.yearly : w.yval;
				if (ipk_metrics_compute(w.score, yy + j, nwin, w.nval, p != 1, &m, err) < 0 ||
				    add_row(rep, name, o->window[j], sub ? "early" : "all", &m) < 0)
					bad = 1;
			}
		}
	}
	if (bad) {
		if (!err || !err->code)
			ipk_err_set(err, IPK_EXIT_OSERR, "evaluate model: out of memory");
		goto fail;
	}
	model = ipk_model_new(info, ens.avg, err);
	ens.avg = NULL;
	if (!model)
		goto fail;
	ipk_gaphist_free(gh);
	ensemble_free(&ens);
	work_free(&w);
	free(info);
	return model;
oom:
	ipk_err_set(err, IPK_EXIT_OSERR, "train model: out of memory");
fail:
	ipk_gaphist_free(gh);
	ensemble_free(&ens);
	work_free(&w);
	free(info);
	ipk_train_report_free(rep);
	return NULL;
}

int ipk_model_check_features(const struct ipk_model *m, struct ipk_err *err)
{
	const struct ipk_model_info *in = ipk_model_info(m);
	if (in->nfeat != IPK_FEAT_COUNT)
		return ipk_err_set(err, IPK_EXIT_DATAERR, "use model '%s': it has %d features, this build computes %d",
				   ipk_model_id(m), in->nfeat, IPK_FEAT_COUNT);
	for (int i = 0; i < IPK_FEAT_COUNT; i++)
		if (strcmp(in->feat[i], ipk_feat_name(i)))
			return ipk_err_set(err, IPK_EXIT_DATAERR,
					   "use model '%s': feature %d is '%s', this build computes '%s' there",
					   ipk_model_id(m), i + 1, in->feat[i], ipk_feat_name(i));
	return 0;
}

/* The training users a model's meta text names ("train users A,B;"), into
 * buf; "" when it names none. */
static void model_train_users(const struct ipk_model *m, char *buf, size_t len)
{
	buf[0] = 0;
	const char *meta = ipk_model_info(m)->meta, *p = strstr(meta, "train users ");
	if (!p)
		return;
	p += strlen("train users ");
	size_t n = strcspn(p, ";");
	snprintf(buf, len, "%.*s", (int)(n < len ? n : len - 1), p);
}

static int in_list(const char *list, const char *user)
{
	size_t l = strlen(user);
	for (const char *p = list; *p;) {
		size_t n = strcspn(p, ",");
		if (n == l && l && !strncmp(p, user, l))
			return 1;
		p += n + (p[n] == ',');
	}
	return 0;
}

void ipk_eval_defaults(struct ipk_eval_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->early_idle = 2;
	o->lead_min_gap = 60;
	o->recal_rate = IPK_RECAL_RATE;
}

static int add_lead(struct ipk_train_report *r, const struct ipk_lead_row *row)
{
	struct ipk_lead_row *v = realloc(r->lead, sizeof(*v) * (r->nlead + 1));
	if (!v)
		return -1;
	r->lead = v;
	r->lead[r->nlead++] = *row;
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double quantile(const double *v, long n, double q)
{
	if (n <= 0)
		return NAN;
	double pos = q * (double)(n - 1);
	long i = (long)floor(pos);
	double f = pos - (double)i;
	return i + 1 < n ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

/* Lead time over the idle gaps of at least min_gap seconds: for each, the
 * idle time at the first step (from the gap's last active step on) whose
 * score is >= th; a gap where that never happens counts as missed. */
static int lead_times(const struct ipk_dataset *d, const char *skip, const double *score, double th, double min_gap,
		      const char *pred, double window, double precision, struct ipk_train_report *rep)
{
	long cap = 0, n = 0, gaps = 0;
	double *delay = NULL;
	long k = 0;
	for (int i = 0; i < d->n; i++) {
		const struct ipk_series *s = &d->s[i];
		if (skip[i])
			continue;
		long t = 0;
		while (t < s->n) {
			/* a gap starts at an active step followed by an inactive one */
			if (!(s->events[t] > 0) || t + 1 >= s->n || s->events[t + 1] > 0 || s->events[t + 1] != s->events[t + 1]) {
				t++;
				continue;
			}
			long e = t + 1;
			while (e < s->n && s->events[e] == 0)
				e++;
			/* the gap runs from ts[t] to ts[e] (next input), or is censored at the end */
			double len = e < s->n ? s->ts[e] - s->ts[t] : s->ts[s->n - 1] - s->ts[t];
			if (len >= min_gap && (e < s->n || s->idle[s->n - 1] >= min_gap)) {
				gaps++;
				double dl = NAN;
				for (long q = t; q < e && q < s->n; q++)
					if (score[k + q] >= th) {
						dl = s->idle[q];
						break;
					}
				if (!isnan(dl)) {
					if (n == cap) {
						cap = cap ? cap * 2 : 256;
						double *v = realloc(delay, sizeof(double) * cap);
						if (!v) {
							free(delay);
							return -1;
						}
						delay = v;
					}
					delay[n++] = dl;
				}
			}
			t = e;
		}
		k += s->n;
	}
	if (n)
		qsort(delay, n, sizeof(double), cmp_double);
	struct ipk_lead_row row;
	memset(&row, 0, sizeof(row));
	snprintf(row.predictor, sizeof(row.predictor), "%s", pred);
	row.window = window;
	row.threshold = th;
	row.precision = precision;
	row.gaps = gaps;
	row.fired = n;
	row.p10 = quantile(delay, n, 0.1);
	row.p50 = quantile(delay, n, 0.5);
	row.p90 = quantile(delay, n, 0.9);
	double sum = 0;
	long within2 = 0;
	for (long q = 0; q < n; q++) {
		sum += delay[q];
		within2 += delay[q] <= 2;
	}
	row.mean = n ? sum / (double)n : NAN;
	row.within2 = gaps ? (double)within2 / (double)gaps : NAN;
	free(delay);
	return add_lead(rep, &row);
}

/* Precision of score >= th over the labelled steps. */
static double precision_at(const double *score, const float *y, long ystride, long n, double th)
{
	long tp = 0, fp = 0;
	for (long i = 0; i < n; i++) {
		float v = y[i * ystride];
		if (v < 0 || !(score[i] >= th))
			continue;
		tp += v > 0.5f;
		fp += !(v > 0.5f);
	}
	return tp + fp ? (double)tp / (double)(tp + fp) : NAN;
}

int ipk_eval_model(const struct ipk_model *m, const struct ipk_dataset *d, const struct ipk_eval_opts *o,
		   struct ipk_train_report *rep, struct ipk_err *err)
{
	memset(rep, 0, sizeof(*rep));
	if (ipk_model_check_features(m, err) < 0)
		return -1;
	const struct ipk_model_info *in = ipk_model_info(m);
	const int F = IPK_FEAT_COUNT, nwin = in->nwin;
	const struct ipk_dataset *bt = o->baseline_train;
	char tu[512];
	model_train_users(m, tu, sizeof(tu));
	/* sessions of the model's training users are not scored: with no other
	 * baseline data, they fit the baselines */
	char *skip = calloc(d->n ? d->n : 1, 1);
	if (!skip)
		return ipk_err_set(err, IPK_EXIT_OSERR, "evaluate model '%s': out of memory", ipk_model_id(m));
	long n = 0, nfit = 0;
	for (int i = 0; i < d->n; i++) {
		skip[i] = in_list(tu, d->s[i].user);
		if (skip[i]) {
			nfit += d->s[i].n;
			size_t l = strlen(rep->train_users);
			if (!in_list(rep->train_users, d->s[i].user))
				snprintf(rep->train_users + l, sizeof(rep->train_users) - l, "%s%s", l ? "," : "",
					 d->s[i].user);
		} else {
			n += d->s[i].n;
		}
	}
	if (bt) {
		nfit = 0;
		for (int i = 0; i < bt->n; i++)
			nfit += bt->s[i].n;
	}
	char users[256][64];
	int nu = ipk_dataset_users(d, users, 256);
	for (int u = 0; u < nu && u < 256; u++) {
		if (in_list(tu, users[u]))
			continue;
		size_t l = strlen(rep->val_users);
		snprintf(rep->val_users + l, sizeof(rep->val_users) - l, "%s%s", l ? "," : "", users[u]);
	}
	rep->val_steps = n;
	rep->train_steps = nfit;
	double *pred = malloc(sizeof(double) * (n ? n : 1) * nwin), *score = malloc(sizeof(double) * (n ? n : 1));
	double *idle = malloc(sizeof(double) * (n ? n : 1));
	float *y = malloc(sizeof(float) * (n ? n : 1) * nwin), *ye = malloc(sizeof(float) * (n ? n : 1) * nwin);
	float *x = malloc(sizeof(float) * (n ? n : 1) * F);
	float *xf = NULL, *yf = NULL;
	/* the scored sessions' first steps, and per session the sums of a
	 * paired Brier difference and its steps (the bootstrap) */
	long *soff = malloc(sizeof(long) * (d->n + 1)), *scnt = malloc(sizeof(long) * (d->n ? d->n : 1));
	long *off = malloc(sizeof(long) * (d->n ? d->n : 1));
	double *sdiff = malloc(sizeof(double) * (d->n ? d->n : 1));
	struct ipk_gaphist *gh = ipk_gaphist_new();
	int rc = -1, have_bl = nfit > 0, ns = 0;
	if (!pred || !score || !idle || !y || !ye || !x || !soff || !scnt || !off || !sdiff || !gh)
		goto oom;
	long k = 0;
	for (int i = 0; i < d->n; i++) {
		const struct ipk_series *s = &d->s[i];
		if (skip[i])
			continue;
		off[i] = soff[ns++] = k;
		ipk_label_windows(s->ts, s->events, s->n, in->window, nwin, y + k * nwin);
		for (long t = 0; t < s->n; t++, k++) {
			ipk_norm_apply(in->mean, in->scale, F, s->raw + t * F, x + k * F);
			for (int j = 0; j < nwin; j++)
				ye[k * nwin + j] = s->idle[t] <= o->early_idle ? y[k * nwin + j] : -1.0f;
			idle[k] = s->idle[t];
		}
	}
	soff[ns] = k;
	if (ipk_predict_dataset(m, d, skip, off, o->recal_rate, pred, err) < 0)
		goto fail;
	rep->val_sessions = ns;
	/* the baselines' training data */
	if (have_bl) {
		const struct ipk_dataset *src = bt ? bt : d;
		if (!(xf = malloc(sizeof(float) * nfit * F)) || !(yf = malloc(sizeof(float) * nfit * nwin)))
			goto oom;
		long q = 0;
		for (int i = 0; i < src->n; i++) {
			const struct ipk_series *s = &src->s[i];
			if (!bt && !skip[i])
				continue;
			if (ipk_gaphist_add_session(gh, s->ts, s->events, s->n) < 0)
				goto oom;
			ipk_label_windows(s->ts, s->events, s->n, in->window, nwin, yf + q * nwin);
			for (long t = 0; t < s->n; t++, q++)
				ipk_norm_apply(in->mean, in->scale, F, s->raw + t * F, xf + q * F);
		}
	}
	for (int j = 0; j < nwin; j++) {
		double model_th = in->threshold[j], model_prec = NAN;
		for (int pr = 0; pr < (have_bl ? 4 : 2); pr++) {
			const char *name = pr == 0 ? "lstm" : pr == 1 ? "idle-timer" : pr == 2 ? "hybrid-histogram" : "logistic";
			struct ipk_logreg lr;
			if (pr == 3 && ipk_logreg_fit(&lr, xf, F, yf + j, nwin, nfit, 1e-3, err) < 0)
				goto fail;
			for (long q = 0; q < n; q++)
				score[q] = pr == 0 ? pred[q * nwin + j]
					 : pr == 1 ? idle[q]
					 : pr == 2 ? ipk_gaphist_score(gh, idle[q], in->window[j])
						   : ipk_logreg_predict(&lr, x + q * F);
			for (int sub = 0; sub < 2; sub++) {
				struct ipk_metrics mm;
				const float *ys = (sub ? ye : y) + j;
				if (ipk_metrics_compute(score, ys, nwin, n, pr != 1, &mm, err) < 0)
					goto fail;
				if (add_row(rep, name, in->window[j], sub ? "early" : "all", &mm) < 0)
					goto oom;
				if (pr < 2)
					continue;
				for (int g = 0; g < ns; g++) {
					sdiff[g] = 0;
					scnt[g] = 0;
					for (long q = soff[g]; q < soff[g + 1]; q++) {
						double l = ys[q * nwin], a = pred[q * nwin + j] - l, b = score[q] - l;
						if (l < 0)
							continue;
						sdiff[g] += a * a - b * b;
						scnt[g]++;
					}
				}
				/* one fixed seed: the same input gives the same interval */
				if (ipk_paired_bootstrap(sdiff, scnt, ns, IPK_EVAL_BOOTSTRAP, 0x626f6f74ULL,
							 &rep->rows[rep->nrows - 1].brier_diff, err) < 0)
					goto fail;
			}
			/* lead time: the model at its threshold, the timer at the same precision */
			if (pr == 0) {
				model_prec = precision_at(score, y + j, nwin, n, model_th);
				if (lead_times(d, skip, score, model_th, o->lead_min_gap, name, in->window[j], model_prec, rep) < 0)
					goto oom;
			} else if (pr == 1 && !isnan(model_prec)) {
				struct ipk_err e2 = { 0 };
				double th = ipk_threshold_at_precision(score, y + j, nwin, n, model_prec, &e2);
				if (e2.code)
					goto oom;
				if (isnan(th))
					th = INFINITY;
				if (lead_times(d, skip, score, th, o->lead_min_gap, name, in->window[j],
					       precision_at(score, y + j, nwin, n, th), rep) < 0)
					goto oom;
			}
		}
	}
	rc = 0;
	goto out;
oom:
	ipk_err_set(err, IPK_EXIT_OSERR, "evaluate model '%s': out of memory", ipk_model_id(m));
fail:
	if (err && !err->code)
		ipk_err_set(err, IPK_EXIT_OSERR, "evaluate model '%s': out of memory", ipk_model_id(m));
out:
	if (rc < 0)
		ipk_train_report_free(rep);
	ipk_gaphist_free(gh);
	free(skip);
	free(pred);
	free(score);
	free(idle);
	free(y);
	free(ye);
	free(x);
	free(xf);
	free(yf);
	free(soff);
	free(off);
	free(scnt);
	free(sdiff);
	return rc;
}

void ipk_train_report_table(FILE *f, const struct ipk_train_report *r)
{
	if (r->folds && !r->nlead)
		fprintf(f,
			"cross-fitted over %d user folds: users %s (%ld steps), each scored by models fitted without it; "
			"best epoch %d\n",
			r->folds, r->val_users, r->val_steps, r->best_epoch);
	else if (r->nlead)
		fprintf(f, "scored users %s (%ld steps); baselines fitted on %s (%ld steps)\n", r->val_users, r->val_steps,
			r->train_users[0] ? r->train_users : "--baseline-train or nothing", r->train_steps);
	else if (r->train_users[0])
		fprintf(f, "validation users %s (%ld steps); trained on %s (%ld steps); best epoch %d\n", r->val_users,
			r->val_steps, r->train_users, r->train_steps, r->best_epoch);
	else
		fprintf(f, "users %s (%ld steps)\n", r->val_users, r->val_steps);
	fprintf(f, "%-18s %6s %6s %9s %6s %8s %8s %8s %8s\n", "predictor", "window", "steps", "n", "base", "roc_auc",
		"pr_auc", "brier", "rec@p90");
	for (int i = 0; i < r->nrows; i++) {
		const struct ipk_eval_row *e = &r->rows[i];
		char brier[16];
		if (isnan(e->m.brier))
			snprintf(brier, sizeof(brier), "-");
		else
			snprintf(brier, sizeof(brier), "%.4f", e->m.brier);
		fprintf(f, "%-18s %6g %6s %9ld %6.3f %8.4f %8.4f %8s %8.4f\n", e->predictor, e->window, e->subset, e->m.n,
			e->m.base_rate, e->m.roc_auc, e->m.pr_auc, brier, e->m.recall_p90);
	}
	int ndiff = 0;
	for (int i = 0; i < r->nrows; i++)
		ndiff += !isnan(r->rows[i].brier_diff.est);
	if (ndiff) {
		fprintf(f,
			"\nBrier score of the model minus each baseline's on the same steps (negative: the model is "
			"better), 95%% interval from a paired bootstrap over the %ld scored sessions (%d resamples)\n",
			r->val_sessions, IPK_EVAL_BOOTSTRAP);
		fprintf(f, "%-18s %6s %6s %9s %9s %9s\n", "baseline", "window", "steps", "diff", "lo", "hi");
		for (int i = 0; i < r->nrows; i++) {
			const struct ipk_eval_row *e = &r->rows[i];
			if (!isnan(e->brier_diff.est))
				fprintf(f, "%-18s %6g %6s %9.5f %9.5f %9.5f\n", e->predictor, e->window, e->subset,
					e->brier_diff.est, e->brier_diff.lo, e->brier_diff.hi);
		}
	}
	if (!r->nlead)
		return;
	fprintf(f, "\nlead time over idle gaps of 60 s or more: seconds from the last input to the first decision above "
		   "the threshold (the timer at the model's precision)\n");
	fprintf(f, "%-18s %6s %9s %9s %6s %6s %6s %6s %6s %6s %6s\n", "predictor", "window", "threshold", "precision",
		"gaps", "fired", "p10", "median", "p90", "mean", "<=2s");
	for (int i = 0; i < r->nlead; i++) {
		const struct ipk_lead_row *l = &r->lead[i];
		fprintf(f, "%-18s %6g %9.4g %9.4f %6ld %6ld %6.1f %6.1f %6.1f %6.1f %6.3f\n", l->predictor, l->window,
			l->threshold, l->precision, l->gaps, l->fired, l->p10, l->p50, l->p90, l->mean, l->within2);
	}
}

static int add_num(cJSON *o, const char *k, double v)
{
	return isfinite(v) ? cJSON_AddNumberToObject(o, k, v) != NULL : cJSON_AddNullToObject(o, k) != NULL;
}

int ipk_train_report_records(struct ipk_writer *w, const struct ipk_train_report *r, const char *model_id,
			 struct ipk_err *err)
{
	double now = ipk_now();
	for (int i = 0; i < r->nrows; i++) {
		const struct ipk_eval_row *e = &r->rows[i];
		cJSON *o = ipk_record_new("eval", now);
		int ok = o && cJSON_AddStringToObject(o, "model", model_id) &&
			 cJSON_AddStringToObject(o, "predictor", e->predictor) && add_num(o, "window", e->window) &&
			 cJSON_AddStringToObject(o, "steps", e->subset) && add_num(o, "n", (double)e->m.n) &&
			 add_num(o, "base_rate", e->m.base_rate) && add_num(o, "roc_auc", e->m.roc_auc) &&
			 add_num(o, "pr_auc", e->m.pr_auc) && add_num(o, "brier", e->m.brier) &&
			 add_num(o, "recall_at_p90", e->m.recall_p90) &&
			 cJSON_AddStringToObject(o, "users", r->val_users);
		if (ok && !isnan(e->brier_diff.est))
			ok = add_num(o, "model_brier_diff", e->brier_diff.est) &&
			     add_num(o, "model_brier_diff_lo", e->brier_diff.lo) &&
			     add_num(o, "model_brier_diff_hi", e->brier_diff.hi) &&
			     add_num(o, "sessions", (double)r->val_sessions);
		if (!ok) {
			cJSON_Delete(o);
			return ipk_err_set(err, IPK_EXIT_OSERR, "write eval records: out of memory");
		}
		int rc = ipk_write(w, o, err);
		cJSON_Delete(o);
		if (rc < 0)
			return -1;
	}
	for (int i = 0; i < r->nlead; i++) {
		const struct ipk_lead_row *l = &r->lead[i];
		cJSON *o = ipk_record_new("lead", now);
		int ok = o && cJSON_AddStringToObject(o, "model", model_id) &&
			 cJSON_AddStringToObject(o, "predictor", l->predictor) && add_num(o, "window", l->window) &&
			 add_num(o, "threshold", l->threshold) && add_num(o, "precision", l->precision) &&
			 add_num(o, "gaps", (double)l->gaps) && add_num(o, "fired", (double)l->fired) &&
			 add_num(o, "delay_p10", l->p10) && add_num(o, "delay_p50", l->p50) &&
			 add_num(o, "delay_p90", l->p90) && add_num(o, "delay_mean", l->mean) &&
			 add_num(o, "within_2s", l->within2) && cJSON_AddStringToObject(o, "users", r->val_users);
		if (!ok) {
			cJSON_Delete(o);
			return ipk_err_set(err, IPK_EXIT_OSERR, "write lead records: out of memory");
		}
		int rc = ipk_write(w, o, err);
		cJSON_Delete(o);
		if (rc < 0)
			return -1;
	}
	return 0;
}

