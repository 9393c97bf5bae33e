/* eval.h - what a prediction is judged against, and how: labels from the
 * sample stream, the scores (ROC-AUC, PR-AUC, Brier, base rate, recall at
 * precision 0.90) and the three baselines (idle timer, hybrid histogram,
 * logistic regression).
 *
 * Labels: at the end of interval t (time ts[t]), for window W, the target of
 * p_W(t) is 1 when no input event happens in (ts[t], ts[t] + W], that is when
 * every later sample with ts <= ts[t] + W has events == 0; 0 when one of them
 * has events > 0. A step is excluded (label -1) when its window runs past the
 * session's last sample (ts[t] + W > ts[n-1]) or when, with no event seen in
 * the window, a sample inside it does not say how many events it saw
 * (events NaN).
 *
 * Metrics skip steps whose label is negative. Ties in the score are handled
 * exactly: ROC-AUC counts a tied positive/negative pair as one half (the
 * Mann-Whitney statistic); average precision and recall at precision 0.90
 * only consider thresholds between distinct scores (as scikit-learn does).
 *
 * Ownership: a histogram from ipk_gaphist_new() is freed by the caller with
 * ipk_gaphist_free() (NULL is fine). Everything else works on caller memory.
 */
#ifndef IPK_EVAL_H
#define IPK_EVAL_H

#include <stdint.h>

#include "ipk.h"

/* Labels of n steps of one session for nwin windows: y[t * nwin + k]. */
void ipk_label_windows(const double *ts, const float *events, long n, const double *win, int nwin, float *y);

struct ipk_metrics {
	long n;            /* steps scored (label 0 or 1) */
	long npos;         /* of which label 1 */
	double base_rate;  /* npos / n */
	double roc_auc;    /* NaN without both classes */
	double pr_auc;     /* average precision; NaN without positives */
	double brier;      /* mean (score - label)^2; NaN when not probabilities */
	double recall_p90; /* best recall at precision >= 0.90 (0 when never reached) */
};

/* Score n steps: score[i] against y[i * ystride] (labels < 0 skipped).
 * is_prob: scores are probabilities (Brier computed). Returns 0, or -1 with
 * err set when out of memory. */
int ipk_metrics_compute(const double *score, const float *y, long ystride, long n, int is_prob, struct ipk_metrics *m,
			struct ipk_err *err);

/* A paired difference between two predictors on the same steps, with a
 * percentile bootstrap interval over groups of steps (sessions: steps of a
 * session are correlated, sessions far less). Group g contributes d[g], a
 * sum of per-step differences, over c[g] steps; the estimate is
 * sum(d) / sum(c). Each of reps resamples draws ng groups with
 * replacement (ipk_rng from seed, so a run is reproducible); lo and hi are
 * the 2.5th and 97.5th percentiles of the resampled estimates (a 95 %
 * interval). All NaN when there is no step. Returns 0, or -1 with err set
 * when out of memory. */
struct ipk_paired_diff {
	double est, lo, hi;
};
int ipk_paired_bootstrap(const double *d, const long *c, long ng, int reps, uint64_t seed, struct ipk_paired_diff *out,
			 struct ipk_err *err);

/* The lowest score threshold t at which the steps with score >= t reach
 * precision target (labels < 0 skipped; thresholds between distinct scores
 * only), or NaN when no threshold does. -1 with err set when out of memory
 * is reported as NaN with err->code set. */
double ipk_threshold_at_precision(const double *score, const float *y, long ystride, long n, double target,
				  struct ipk_err *err);

/* Hybrid histogram baseline (Shahrad et al., "Serverless in the Wild",
 * 2020): the empirical survival function S of idle gaps seen in training,
 * score for window W after e seconds of idleness = S(e + W) / S(e). A gap
 * is the time between two consecutive intervals with input. When e reaches
 * past every gap seen, S(e) = 0 and the score is 1 (the gap is already the
 * longest known). */
struct ipk_gaphist;
struct ipk_gaphist *ipk_gaphist_new(void);
void ipk_gaphist_free(struct ipk_gaphist *h);
/* Add the gaps of one session (n samples). Returns 0, or -1 when out of
 * memory. */
int ipk_gaphist_add_session(struct ipk_gaphist *h, const double *ts, const float *events, long n);
int ipk_gaphist_add(struct ipk_gaphist *h, double gap);
long ipk_gaphist_count(const struct ipk_gaphist *h);
/* P(gap > x) over the gaps added so far. */
double ipk_gaphist_survival(struct ipk_gaphist *h, double x);
double ipk_gaphist_score(struct ipk_gaphist *h, double idle, double window);
/* The gaps added so far, sorted ascending, in *g (owned by h, valid until
 * the next ipk_gaphist_add); returns their number. */
long ipk_gaphist_sorted(struct ipk_gaphist *h, const double **g);

/* Logistic regression on nfeat features, fitted by Newton's method with an
 * L2 penalty l2 * |w|^2 / 2 (intercept not penalised). */
#define IPK_LOGREG_MAX 256
struct ipk_logreg {
	int nfeat;
	double w[IPK_LOGREG_MAX + 1]; /* w[nfeat] is the intercept */
};
/* Fit on n rows of x (row-major, nfeat per row) and labels y[i * ystride]
 * (< 0 skipped). Returns 0, or -1 with err set (no labelled row or only
 * one class: IPK_EXIT_DATAERR; out of memory). */
int ipk_logreg_fit(struct ipk_logreg *lr, const float *x, int nfeat, const float *y, long ystride, long n, double l2,
		   struct ipk_err *err);
double ipk_logreg_predict(const struct ipk_logreg *lr, const float *x);

#endif
