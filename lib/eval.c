/* eval.c - labels, metrics and baselines. See eval.h. */
#include "eval.h"

#include "lstm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TEPS 1e-9 /* slack on timestamps compared after additions */

void ipk_label_windows(const double *ts, const float *events, long n, const double *win, int nwin, float *y)
{
	if (n <= 0)
		return;
	/* for each step, the first later step with input and with unknown input */
	long next_act = n, next_unk = n;
	for (long t = n - 1; t >= 0; t--) {
		for (int k = 0; k < nwin; k++) {
			double end = ts[t] + win[k];
			float v;
			if (end > ts[n - 1] + TEPS)
				v = -1;
			else if (next_act < n && ts[next_act] <= end + TEPS)
				v = 0;
			else if (next_unk < n && ts[next_unk] <= end + TEPS)
				v = -1;
			else
				v = 1;
			y[t * nwin + k] = v;
		}
		float e = events[t];
		if (e != e)
			next_unk = t;
		else if (e > 0)
			next_act = t;
	}
}

struct scored {
	double s;
	float y;
};

static int by_score_desc(const void *a, const void *b)
{
	double x = ((const struct scored *)a)->s, z = ((const struct scored *)b)->s;
	return x < z ? 1 : x > z ? -1 : 0;
}

int ipk_metrics_compute(const double *score, const float *y, long ystride, long n, int is_prob, struct ipk_metrics *m,
			struct ipk_err *err)
{
	memset(m, 0, sizeof(*m));
	struct scored *v = malloc(sizeof(*v) * (n > 0 ? n : 1));
	if (!v)
		return ipk_err_set(err, IPK_EXIT_OSERR, "compute metrics '%ld steps': out of memory", n);
	long k = 0, npos = 0;
	double brier = 0;
	for (long i = 0; i < n; i++) {
		float yv = y[i * ystride];
		if (!(yv >= 0))
			continue;
		v[k].s = score[i];
		v[k].y = yv > 0.5f ? 1.0f : 0.0f;
		npos += v[k].y > 0;
		double d = score[i] - v[k].y;
		brier += d * d;
		k++;
	}
	m->n = k;
	m->npos = npos;
	long nneg = k - npos;
	m->base_rate = k ? (double)npos / k : NAN;
	m->brier = is_prob && k ? brier / k : NAN;
	qsort(v, k, sizeof(*v), by_score_desc);
	double auc = 0, ap = 0, best_recall = 0;
	long tp = 0, fp = 0;
	for (long i = 0; i < k;) {
		long j = i, gp = 0, gn = 0;
		while (j < k && v[j].s == v[i].s) {
			if (v[j].y > 0)
				gp++;
			else
				gn++;
			j++;
		}
		auc += (double)gn * tp + 0.5 * (double)gn * gp;
		tp += gp;
		fp += gn;
		double prec = (double)tp / (double)(tp + fp);
		if (npos) {
			ap += (double)gp / npos * prec;
			if (prec >= 0.9 && (double)tp / npos > best_recall)
				best_recall = (double)tp / npos;
		}
		i = j;
	}
	m->roc_auc = npos && nneg ? auc / ((double)npos * nneg) : NAN;
	m->pr_auc = npos ? ap : NAN;
	m->recall_p90 = npos ? best_recall : NAN;
	free(v);
	return 0;
}

double ipk_threshold_at_precision(const double *score, const float *y, long ystride, long n, double target,
				  struct ipk_err *err)
{
	struct scored *v = malloc(sizeof(*v) * (n > 0 ? n : 1));
	if (!v) {
		ipk_err_set(err, IPK_EXIT_OSERR, "choose threshold '%ld steps': out of memory", n);
		return NAN;
	}
	long k = 0;
	for (long i = 0; i < n; i++) {
		float yv = y[i * ystride];
		if (yv >= 0) {
			v[k].s = score[i];
			v[k++].y = yv > 0.5f ? 1.0f : 0.0f;
		}
	}
	qsort(v, k, sizeof(*v), by_score_desc);
	long tp = 0, fp = 0;
	double best = NAN;
	for (long i = 0; i < k;) {
		long j = i;
		while (j < k && v[j].s == v[i].s) {
			tp += v[j].y > 0;
			fp += !(v[j].y > 0);
			j++;
		}
		if ((double)tp / (double)(tp + fp) >= target)
			best = v[i].s;
		i = j;
	}
	free(v);
	return best;
}

/* ---------------------------------------------------- hybrid histogram */

struct ipk_gaphist {
	double *g;
	long n, cap;
	int sorted;
};

struct ipk_gaphist *ipk_gaphist_new(void)
{
	return calloc(1, sizeof(struct ipk_gaphist));
}

void ipk_gaphist_free(struct ipk_gaphist *h)
{
	if (h) {
		free(h->g);
		free(h);
	}
}

int ipk_gaphist_add(struct ipk_gaphist *h, double gap)
{
	if (h->n == h->cap) {
		long cap = h->cap ? h->cap * 2 : 1024;
		double *g = realloc(h->g, sizeof(double) * cap);
		if (!g)
			return -1;
		h->g = g;
		h->cap = cap;
	}
	h->g[h->n++] = gap;
	h->sorted = 0;
	return 0;
}

int ipk_gaphist_add_session(struct ipk_gaphist *h, const double *ts, const float *events, long n)
{
	double last = NAN;
	for (long t = 0; t < n; t++) {
		if (!(events[t] > 0))
			continue;
		if (last == last && ipk_gaphist_add(h, ts[t] - last) < 0)
			return -1;
		last = ts[t];
	}
	return 0;
}

long ipk_gaphist_count(const struct ipk_gaphist *h)
{
	return h->n;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

double ipk_gaphist_survival(struct ipk_gaphist *h, double x)
{
	if (!h->n)
		return NAN;
	if (!h->sorted) {
		qsort(h->g, h->n, sizeof(double), cmp_double);
		h->sorted = 1;
	}
	/* first index with g > x (+ slack for sums of timestamps) */
	long lo = 0, hi = h->n;
	while (lo < hi) {
		long mid = lo + (hi - lo) / 2;
		if (h->g[mid] > x + TEPS)
			hi = mid;
		else
			lo = mid + 1;
	}
	return (double)(h->n - lo) / h->n;
}

long ipk_gaphist_sorted(struct ipk_gaphist *h, const double **g)
{
	if (!h->sorted && h->n) {
		qsort(h->g, h->n, sizeof(double), cmp_double);
		h->sorted = 1;
	}
	*g = h->g;
	return h->n;
}

double ipk_gaphist_score(struct ipk_gaphist *h, double idle, double window)
{
	double se = ipk_gaphist_survival(h, idle);
	if (!(se > 0))
		return 1.0;
	return ipk_gaphist_survival(h, idle + window) / se;
}

/* -------------------------------------------------- logistic regression */

double ipk_logreg_predict(const struct ipk_logreg *lr, const float *x)
{
	double z = lr->w[lr->nfeat];
	for (int i = 0; i < lr->nfeat; i++)
		z += lr->w[i] * x[i];
	return 1.0 / (1.0 + exp(-z));
}

/* Solve A x = b for symmetric positive definite A (d x d) by Cholesky, in
 * place (A is overwritten). Returns -1 when A is not positive definite. */
static int cholesky_solve(double *A, double *b, int d)
{
	for (int j = 0; j < d; j++) {
		double s = A[j * d + j];
		for (int k = 0; k < j; k++)
			s -= A[j * d + k] * A[j * d + k];
		if (!(s > 0))
			return -1;
		A[j * d + j] = sqrt(s);
		for (int i = j + 1; i < d; i++) {
			double t = A[i * d + j];
			for (int k = 0; k < j; k++)
				t -= A[i * d + k] * A[j * d + k];
			A[i * d + j] = t / A[j * d + j];
		}
	}
	for (int i = 0; i < d; i++) {
		double t = b[i];
		for (int k = 0; k < i; k++)
			t -= A[i * d + k] * b[k];
		b[i] = t / A[i * d + i];
	}
	for (int i = d - 1; i >= 0; i--) {
		double t = b[i];
		for (int k = i + 1; k < d; k++)
			t -= A[k * d + i] * b[k];
		b[i] = t / A[i * d + i];
	}
	return 0;
}

int ipk_logreg_fit(struct ipk_logreg *lr, const float *x, int nfeat, const float *y, long ystride, long n, double l2,
		   struct ipk_err *err)
{
	if (nfeat < 1 || nfeat > IPK_LOGREG_MAX)
		return ipk_err_set(err, IPK_EXIT_USAGE, "fit logistic regression '%d features': 1..%d allowed", nfeat,
				   IPK_LOGREG_MAX);
	int d = nfeat + 1;
	memset(lr, 0, sizeof(*lr));
	lr->nfeat = nfeat;
	long npos = 0, nlab = 0;
	for (long i = 0; i < n; i++) {
		float yv = y[i * ystride];
		if (yv >= 0) {
			nlab++;
			npos += yv > 0.5f;
		}
	}
	if (!npos || npos == nlab)
		return ipk_err_set(err, IPK_EXIT_DATAERR,
				   "fit logistic regression '%ld labelled steps': needs both classes (%ld positive)", nlab,
				   npos);
	double p0 = (double)npos / nlab;
	lr->w[nfeat] = log(p0 / (1 - p0));
	double *H = malloc(sizeof(double) * d * d), *g = malloc(sizeof(double) * d), *xi = malloc(sizeof(double) * d);
	if (!H || !g || !xi) {
		free(H);
		free(g);
		free(xi);
		return ipk_err_set(err, IPK_EXIT_OSERR, "fit logistic regression: out of memory");
	}
	int rc = 0;
	for (int it = 0; it < 50; it++) {
		memset(H, 0, sizeof(double) * d * d);
		memset(g, 0, sizeof(double) * d);
		for (long i = 0; i < n; i++) {
			float yv = y[i * ystride];
			if (!(yv >= 0))
				continue;
			for (int a = 0; a < nfeat; a++)
				xi[a] = x[i * nfeat + a];
			xi[nfeat] = 1;
			double p = ipk_logreg_predict(lr, x + i * nfeat), r = p - (yv > 0.5f), wgt = p * (1 - p);
			for (int a = 0; a < d; a++) {
				g[a] += r * xi[a];
				double wa = wgt * xi[a];
				for (int b = 0; b <= a; b++)
					H[a * d + b] += wa * xi[b];
			}
		}
		for (int a = 0; a < d; a++)
			for (int b = 0; b < a; b++)
				H[b * d + a] = H[a * d + b];
		for (int a = 0; a < nfeat; a++) {
			g[a] += l2 * lr->w[a];
			H[a * d + a] += l2;
		}
		for (int a = 0; a < d; a++)
			H[a * d + a] += 1e-9 * nlab; /* keeps H definite with constant features */
		if (cholesky_solve(H, g, d) < 0) {
			rc = ipk_err_set(err, IPK_EXIT_DATAERR, "fit logistic regression: singular system");
			break;
		}
		double step = 0;
		for (int a = 0; a < d; a++) {
			lr->w[a] -= g[a];
			step = fmax(step, fabs(g[a]));
		}
		if (step < 1e-8)
			break;
	}
	free(H);
	free(g);
	free(xi);
	return rc;
}

int ipk_paired_bootstrap(const double *d, const long *c, long ng, int reps, uint64_t seed, struct ipk_paired_diff *out,
			 struct ipk_err *err)
{
	double sd = 0;
	long sc = 0;
	for (long g = 0; g < ng; g++) {
		sd += d[g];
		sc += c[g];
	}
	out->est = out->lo = out->hi = NAN;
	if (!sc)
		return 0;
	out->est = sd / sc;
	double *est = malloc(sizeof(double) * (reps > 0 ? reps : 1));
	if (!est)
		return ipk_err_set(err, IPK_EXIT_OSERR, "bootstrap '%d resamples': out of memory", reps);
	struct ipk_rng r;
	ipk_rng_seed(&r, seed);
	int nr = 0;
	for (int b = 0; b < reps; b++) {
		double bd = 0;
		long bc = 0;
		for (long g = 0; g < ng; g++) {
			uint64_t k = ipk_rng_below(&r, (uint64_t)ng);
			bd += d[k];
			bc += c[k];
		}
		if (bc)
			est[nr++] = bd / bc;
	}
	if (nr) {
		qsort(est, nr, sizeof(double), cmp_double);
		/* the percentiles by linear interpolation between order statistics */
		for (int side = 0; side < 2; side++) {
			double pos = (side ? 0.975 : 0.025) * (nr - 1);
			int i = (int)pos;
			double v = i + 1 < nr ? est[i] + (pos - i) * (est[i + 1] - est[i]) : est[i];
			*(side ? &out->hi : &out->lo) = v;
		}
	}
	free(est);
	return 0;
}
