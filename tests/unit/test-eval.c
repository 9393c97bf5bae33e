/* Evaluation: labels, metrics against hand-computed values (ties included),
 * the hybrid histogram and logistic regression baselines, the paired
 * bootstrap; features: idle time from events, rolling counts, masks,
 * normalisation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "eval.h"
#include "feature.h"
#include "lstm.h"

static void test_labels(void)
{
	double ts[10], win[2] = { 2, 3 };
	float ev[10] = { 1, 0, 0, 0, 1, 0, 0, 0, 0, 0 }, y[20];
	for (int i = 0; i < 10; i++)
		ts[i] = i + 1;
	ipk_label_windows(ts, ev, 10, win, 2, y);
	static const float w2[10] = { 1, 1, 0, 0, 1, 1, 1, 1, -1, -1 }, w3[10] = { 1, 0, 0, 0, 1, 1, 1, -1, -1, -1 };
	int ok2 = 1, ok3 = 1;
	for (int i = 0; i < 10; i++) {
		ok2 &= y[i * 2] == w2[i];
		ok3 &= y[i * 2 + 1] == w3[i];
	}
	CHECK("labels W=2 by hand", ok2);
	CHECK("labels W=3 by hand (windows past the end excluded)", ok3);
	ev[6] = NAN; /* ts 7 unknown */
	ipk_label_windows(ts, ev, 10, win, 2, y);
	CHECK("unknown sample in a silent window excludes the step", y[4 * 2] == -1 && y[5 * 2] == -1 && y[5 * 2 + 1] == -1);
	CHECK("an event in the window decides despite an unknown sample", y[3 * 2 + 1] == 0 && y[3 * 2] == 0);
	CHECK("the step's own unknown sample does not matter", y[6 * 2] == 1);
}

static void test_metrics(void)
{
	struct ipk_err err = { 0 };
	struct ipk_metrics m;
	double s[7] = { 0.9, 0.8, 0.8, 0.5, 0.3, 0.3, 0.99 };
	float y[7] = { 1, 1, 0, 1, 0, 0, -1 };
	CHECK("metrics computed", ipk_metrics_compute(s, y, 1, 7, 1, &m, &err) == 0);
	CHECK("excluded step skipped", m.n == 6 && m.npos == 3);
	CHECK_NEAR("base rate", m.base_rate, 0.5, 1e-12);
	CHECK_NEAR("roc-auc with a tie: 7.5/9", m.roc_auc, 7.5 / 9, 1e-12);
	CHECK_NEAR("average precision: 29/36", m.pr_auc, 29.0 / 36, 1e-12);
	CHECK_NEAR("recall at precision 0.90: 1/3", m.recall_p90, 1.0 / 3, 1e-12);
	CHECK_NEAR("brier: 1.12/6", m.brier, 1.12 / 6, 1e-12);
	CHECK("brier undefined for a non-probability score", ipk_metrics_compute(s, y, 1, 7, 0, &m, &err) == 0 && isnan(m.brier));
	/* precision of score >= t: t=0.9 1/1, t=0.8 2/3, t=0.5 3/4, t=0.3 3/6 */
	CHECK_NEAR("threshold at precision 0.9", ipk_threshold_at_precision(s, y, 1, 7, 0.9, &err), 0.9, 0);
	CHECK_NEAR("threshold at precision 0.7", ipk_threshold_at_precision(s, y, 1, 7, 0.7, &err), 0.5, 0);
	CHECK("no threshold reaches precision 1.01", isnan(ipk_threshold_at_precision(s, y, 1, 7, 1.01, &err)));
	double flat[4] = { 1, 1, 1, 1 };
	float yf[4] = { 1, 0, 1, 0 };
	ipk_metrics_compute(flat, yf, 1, 4, 0, &m, &err);
	CHECK_NEAR("all tied: roc-auc 0.5", m.roc_auc, 0.5, 1e-12);
	CHECK_NEAR("all tied: average precision = base rate", m.pr_auc, 0.5, 1e-12);
	CHECK_NEAR("all tied: precision 0.5 never reaches 0.9", m.recall_p90, 0, 0);
	double perfect[4] = { 0.9, 0.1, 0.8, 0.2 };
	ipk_metrics_compute(perfect, yf, 1, 4, 1, &m, &err);
	CHECK("perfect ranking: auc 1, ap 1, recall 1", m.roc_auc == 1 && m.pr_auc == 1 && m.recall_p90 == 1);
	/* strided labels: second window of rows of two */
	float y2[6] = { -1, 1, -1, 0, -1, 1 };
	double s2[3] = { 0.7, 0.2, 0.6 };
	ipk_metrics_compute(s2, y2 + 1, 2, 3, 1, &m, &err);
	CHECK("stride over window columns", m.n == 3 && m.npos == 2 && m.roc_auc == 1);
	float none[2] = { 0, 0 };
	ipk_metrics_compute(s2, none, 1, 2, 1, &m, &err);
	CHECK("one class: auc undefined", isnan(m.roc_auc) && isnan(m.pr_auc));
}

static void test_gaphist(void)
{
	struct ipk_gaphist *h = ipk_gaphist_new();
	double g[5] = { 1, 2, 2, 5, 10 };
	for (int i = 0; i < 5; i++)
		ipk_gaphist_add(h, g[i]);
	CHECK_NEAR("survival S(2) = 2/5", ipk_gaphist_survival(h, 2), 0.4, 1e-12);
	CHECK_NEAR("survival S(0) = 1", ipk_gaphist_survival(h, 0), 1, 1e-12);
	CHECK_NEAR("score e=1 W=1: S(2)/S(1) = 0.5", ipk_gaphist_score(h, 1, 1), 0.5, 1e-12);
	CHECK_NEAR("score e=0 W=5: S(5) = 0.2", ipk_gaphist_score(h, 0, 5), 0.2, 1e-12);
	CHECK_NEAR("past the longest gap: 1", ipk_gaphist_score(h, 10, 5), 1, 0);
	ipk_gaphist_free(h);
	h = ipk_gaphist_new();
	double ts[10];
	float ev[10] = { 1, 1, 0, 1, 0, 0, 0, 0, 1, 0 };
	for (int i = 0; i < 10; i++)
		ts[i] = i + 1;
	ipk_gaphist_add_session(h, ts, ev, 10);
	CHECK("gaps of a session: 1, 2, 5", ipk_gaphist_count(h) == 3 && ipk_gaphist_survival(h, 1) == 2.0 / 3 &&
						  ipk_gaphist_survival(h, 2) == 1.0 / 3);
	/* the baseline's score agrees with the labels' definition: P(gap > e + W | gap > e) */
	ipk_gaphist_free(h);
	ipk_gaphist_free(NULL);
}

static void test_logreg(void)
{
	struct ipk_err err = { 0 };
	struct ipk_logreg lr;
	float x0[10] = { 0 }, y0[10] = { 1, 1, 1, 0, 0, 0, 0, 0, 0, 0 };
	CHECK("logreg on an uninformative feature fits", ipk_logreg_fit(&lr, x0, 1, y0, 1, 10, 0, &err) == 0);
	CHECK_NEAR("intercept is the log-odds of the base rate", lr.w[1], log(3.0 / 7), 1e-6);
	long n = 20000;
	float *x = malloc(sizeof(float) * n * 2), *y = malloc(sizeof(float) * n);
	struct ipk_rng r;
	ipk_rng_seed(&r, 3);
	for (long i = 0; i < n; i++) {
		x[i * 2] = (float)(4 * ipk_rng_uniform(&r) - 2);
		x[i * 2 + 1] = (float)(4 * ipk_rng_uniform(&r) - 2);
		double p = 1 / (1 + exp(-(2.0 * x[i * 2] - 0.5 * x[i * 2 + 1] - 1)));
		y[i] = ipk_rng_uniform(&r) < p ? 1.0f : 0.0f;
	}
	CHECK("logreg fits 20000 rows", ipk_logreg_fit(&lr, x, 2, y, 1, n, 1e-3, &err) == 0);
	fprintf(stderr, "logreg: w = %.3f %.3f b = %.3f (true 2, -0.5, -1)\n", lr.w[0], lr.w[1], lr.w[2]);
	CHECK("logreg recovers the weights (0.15)",
	      fabs(lr.w[0] - 2) < 0.15 && fabs(lr.w[1] + 0.5) < 0.15 && fabs(lr.w[2] + 1) < 0.15);
	CHECK("logreg with one class refused", ipk_logreg_fit(&lr, x0, 1, x0, 1, 10, 0, &err) < 0 && err.code == IPK_EXIT_DATAERR);
	free(x);
	free(y);
}

static void sample(struct ipk_sample *s, double ts, double events)
{
	ipk_sample_init(s, "u1/s1", "replay", ts, 1);
	if (events >= 0)
		ipk_sample_set_field(s, IPK_F_EVENTS, events);
}

static void test_features(void)
{
	struct ipk_feat_state *st = ipk_feat_new();
	float raw[IPK_FEAT_COUNT];
	struct ipk_sample s;
	static const double ev[7] = { 0, 0, 3, 0, 0, 0, 2 };
	static const double idle[7] = { 1, 2, 0, 1, 2, 3, 0 };
	int idle_ok = 1;
	for (int t = 0; t < 7; t++) {
		sample(&s, t + 1, ev[t]);
		if (t == 2)
			ipk_sample_set_field(&s, IPK_F_INPUT_AGE, 100); /* contradicts events: ignored */
		ipk_feat_step(st, &s, NULL, raw);
		idle_ok &= ipk_feat_idle(st) == idle[t] && fabsf(raw[IPK_FT_IDLE] - (float)log1p(idle[t])) < 1e-6f;
	}
	CHECK("idle time from events, not from input_age_s", idle_ok);
	CHECK_NEAR("previous gap: 7 - 3", raw[IPK_FT_PREV_GAP], log1p(4), 1e-6);
	CHECK_NEAR("events over 10 s", raw[IPK_FT_EV_10S], log1p(5), 1e-6);
	CHECK_NEAR("active share over 60 s", raw[IPK_FT_ACTIVE_60S], 2.0 / 7, 1e-6);
	CHECK_NEAR("log-scaled count", raw[IPK_FT_EVENTS], log1p(2), 1e-6);
	CHECK_NEAR("age", raw[IPK_FT_AGE], log1p(7), 1e-6);
	CHECK("absent cpu masked", isnan(raw[IPK_FT_CPU]) && raw[IPK_FT_HAS_CPU] == 0 && raw[IPK_FT_HAS_INPUT] == 1);
	sample(&s, 7, 1);
	CHECK("a sample not after the previous refused", ipk_feat_step(st, &s, NULL, raw) < 0 && ipk_feat_idle(st) == 0);
	sample(&s, 8, -1);
	ipk_sample_set_field(&s, IPK_F_CPU, 0.25);
	ipk_feat_step(st, &s, NULL, raw);
	CHECK("absent input masked", isnan(raw[IPK_FT_EVENTS]) && isnan(raw[IPK_FT_IDLE]) && raw[IPK_FT_HAS_INPUT] == 0);
	CHECK("present cpu kept", raw[IPK_FT_CPU] == 0.25f && raw[IPK_FT_HAS_CPU] == 1);
	/* 300 s horizon: events at t=1 leave the window at t=301 */
	ipk_feat_free(st);
	st = ipk_feat_new();
	for (int t = 1; t <= 301; t++) {
		sample(&s, t, t == 1 ? 4 : 0);
		ipk_feat_step(st, &s, NULL, raw);
		if (t == 300)
			CHECK_NEAR("300 s horizon includes age 299", raw[IPK_FT_EV_300S], log1p(4), 1e-6);
	}
	CHECK_NEAR("300 s horizon excludes age 300", raw[IPK_FT_EV_300S], 0, 0);
	CHECK_NEAR("idle keeps counting", ipk_feat_idle(st), 300, 0);
	ipk_feat_free(st);
	ipk_feat_free(NULL);
	CHECK("feature names", !strcmp(ipk_feat_name(IPK_FT_IDLE), "log_idle_s") && !ipk_feat_name(IPK_FEAT_COUNT) &&
				       !strcmp(ipk_feat_name(IPK_FEAT_COUNT - 1), "has_fps"));

	struct ipk_norm_acc a;
	ipk_norm_fit_begin(&a);
	float r1[IPK_FEAT_COUNT] = { 0 }, r2[IPK_FEAT_COUNT] = { 0 }, r3[IPK_FEAT_COUNT] = { 0 };
	r1[0] = 1;
	r2[0] = 3;
	r3[0] = NAN;
	ipk_norm_fit_add(&a, r1);
	ipk_norm_fit_add(&a, r2);
	ipk_norm_fit_add(&a, r3);
	float mean[IPK_FEAT_COUNT], scale[IPK_FEAT_COUNT], out[IPK_FEAT_COUNT];
	ipk_norm_fit_end(&a, mean, scale);
	CHECK("normalisation ignores absent values", mean[0] == 2 && scale[0] == 1);
	CHECK("constant feature gets scale 1", mean[1] == 0 && scale[1] == 1);
	ipk_norm_apply(mean, scale, IPK_FEAT_COUNT, r3, out);
	CHECK("absent value normalises to 0", out[0] == 0);
	ipk_norm_apply(mean, scale, IPK_FEAT_COUNT, r2, out);
	CHECK("present value normalised", out[0] == 1);
}

/* ipk_paired_bootstrap: the estimate is sum(d) / sum(c); equal groups
 * give an interval of width 0; the interval holds the estimate, lies within
 * the groups' own ratios, and is the same for a seed; no step gives NaN. */
static void test_bootstrap(void)
{
	struct ipk_err err = { 0 };
	struct ipk_paired_diff a, b;
	double d[4] = { 1, 2, 3, -2 };
	long c[4] = { 1, 1, 2, 4 };
	CHECK("bootstrap: runs", ipk_paired_bootstrap(d, c, 4, 500, 7, &a, &err) == 0);
	CHECK("bootstrap: estimate sum(d) / sum(c) = 4 / 8", fabs(a.est - 0.5) < 1e-12);
	CHECK("bootstrap: the interval holds the estimate", a.lo < a.est && a.est < a.hi);
	CHECK("bootstrap: within the groups' ratios (-0.5 .. 2)", a.lo >= -0.5 && a.hi <= 2);
	ipk_paired_bootstrap(d, c, 4, 500, 7, &b, &err);
	CHECK("bootstrap: same seed, same interval", a.lo == b.lo && a.hi == b.hi);
	double e[3] = { 0.5, 1.0, 1.5 };
	long ce[3] = { 1, 2, 3 };
	ipk_paired_bootstrap(e, ce, 3, 200, 1, &b, &err);
	CHECK("bootstrap: equal ratios, an interval of width 0", fabs(b.est - 0.5) < 1e-12 &&
								     fabs(b.lo - 0.5) < 1e-12 && fabs(b.hi - 0.5) < 1e-12);
	long z[2] = { 0, 0 };
	ipk_paired_bootstrap(d, z, 2, 100, 1, &b, &err);
	CHECK("bootstrap: no step, NaN", isnan(b.est) && isnan(b.lo) && isnan(b.hi));
}

int main(void)
{
	test_labels();
	test_metrics();
	test_gaphist();
	test_logreg();
	test_features();
	test_bootstrap();
	CHECK_DONE();
}
