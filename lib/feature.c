/* feature.c - per-session features from samples. See feature.h. */
#include "feature.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[IPK_FEAT_COUNT] = {
	"log_events", "log_mouse_px", "log_clicks", "log_scrolls", "log_keys",
	"log_rx_pkts", "log_tx_pkts", "cpu", "gpu", "log_fps",
	"log_idle_s", "log_events_10s", "log_events_60s", "log_events_300s", "active_frac_60s",
	"log_prev_gap_s", "log_age_s",
	"log_events_3s", "events_trend", "log_burst_s", "gaps_60s", "log_since_click_s", "log_since_key_s",
	"user_surv_5", "user_surv_10", "user_surv_30", "user_log_gaps", "user_active_frac",
	"has_input", "has_net", "has_cpu", "has_gpu", "has_fps",
};

const char *ipk_feat_name(int i)
{
	return i >= 0 && i < IPK_FEAT_COUNT ? names[i] : NULL;
}

/* The last RING intervals are kept for the rolling counts: with 1 s samples
 * that covers the longest horizon (300 s) exactly; with
 * shorter intervals the horizons are cut to the last RING intervals. */
#define RING 304

struct ipk_feat_state {
	int started;
	double start, last_ts;
	double last_active;  /* end of the last active interval, or -inf */
	double prev_gap;     /* last completed gap, s */
	double idle;
	double burst_start;  /* start of the current run of active intervals, or NaN */
	double last_click, last_key; /* end of the last interval with one, or -inf */
	int head, count;
	double ts[RING];
	float ev[RING];      /* events, NaN when unknown */
};

struct ipk_feat_state *ipk_feat_new(void)
{
	struct ipk_feat_state *st = calloc(1, sizeof(*st));
	if (st) {
		st->last_active = -INFINITY;
		st->last_click = -INFINITY;
		st->last_key = -INFINITY;
		st->burst_start = NAN;
		st->idle = -1;
	}
	return st;
}

void ipk_feat_free(struct ipk_feat_state *st)
{
	free(st);
}

size_t ipk_feat_state_bytes(void)
{
	return sizeof(struct ipk_feat_state);
}

double ipk_feat_idle(const struct ipk_feat_state *st)
{
	return st->idle;
}

static float lg(const struct ipk_sample *s, enum ipk_field f)
{
	if (!ipk_sample_has(s, f))
		return NAN;
	double v = s->val[f];
	return (float)log1p(v > 0 ? v : 0);
}

static float raw01(const struct ipk_sample *s, enum ipk_field f)
{
	if (!ipk_sample_has(s, f))
		return NAN;
	double v = s->val[f];
	return (float)(v < 0 ? 0 : v > 1 ? 1 : v);
}

/* log1p(seconds since the end of the interval at `when`; since the session
 * start when never) when the sample carries field f, else NaN. */
static float since(const struct ipk_feat_state *st, const struct ipk_sample *s, enum ipk_field f, double when)
{
	if (!ipk_sample_has(s, f))
		return NAN;
	double t = s->ts - (when > -INFINITY ? when : st->start);
	return (float)log1p(t > 0 ? t : 0);
}

int ipk_feat_step(struct ipk_feat_state *st, const struct ipk_sample *s, struct ipk_hist *hist, float *raw)
{
	double t = s->ts;
	if (st->started && !(t > st->last_ts))
		return -1;
	if (!st->started) {
		st->started = 1;
		st->start = t - (s->interval > 0 ? s->interval : 1);
	}
	st->last_ts = t;
	int has_in = ipk_sample_has(s, IPK_F_EVENTS);
	float ev = has_in ? (float)(s->val[IPK_F_EVENTS] > 0 ? s->val[IPK_F_EVENTS] : 0) : NAN;
	int active = has_in && ev > 0;
	double iv = s->interval > 0 ? s->interval : 1;
	if (active) {
		if (st->last_active > -INFINITY) {
			st->prev_gap = t - st->last_active;
			if (hist)
				ipk_hist_add_gap(hist, st->prev_gap);
		}
		if (!(st->last_active > t - iv * 1.5) || st->burst_start != st->burst_start)
			st->burst_start = t - iv;
		st->last_active = t;
		st->idle = 0;
	} else {
		st->idle = t - (st->last_active > -INFINITY ? st->last_active : st->start);
		st->burst_start = NAN;
	}
	if (hist && has_in)
		ipk_hist_add_interval(hist, active);
	if (ipk_sample_has(s, IPK_F_CLICKS) && s->val[IPK_F_CLICKS] > 0)
		st->last_click = t;
	if (ipk_sample_has(s, IPK_F_KEYS) && s->val[IPK_F_KEYS] > 0)
		st->last_key = t;
	st->head = (st->head + 1) % RING;
	st->ts[st->head] = t;
	st->ev[st->head] = ev;
	if (st->count < RING)
		st->count++;

	/* rolling sums, newest first */
	double sum3 = 0, sum10 = 0, sum20 = 0, sum60 = 0, sum300 = 0;
	int n60 = 0, act60 = 0, gaps60 = 0, newer_active = -1;
	for (int k = 0; k < st->count; k++) {
		int i = (st->head - k + RING) % RING;
		double age = t - st->ts[i];
		if (age >= 300 - 1e-9)
			break;
		float e = st->ev[i];
		if (e != e) /* unknown */
			continue;
		sum300 += e;
		if (age < 60 - 1e-9) {
			sum60 += e;
			n60++;
			act60 += e > 0;
			/* an active interval followed (newer) by an inactive one */
			gaps60 += e > 0 && newer_active == 0;
			newer_active = e > 0;
		}
		if (age < 20 - 1e-9)
			sum20 += e;
		if (age < 10 - 1e-9)
			sum10 += e;
		if (age < 3 - 1e-9)
			sum3 += e;
	}

	raw[IPK_FT_EVENTS] = lg(s, IPK_F_EVENTS);
	raw[IPK_FT_MOUSE_PX] = lg(s, IPK_F_MOUSE_PX);
	raw[IPK_FT_CLICKS] = lg(s, IPK_F_CLICKS);
	raw[IPK_FT_SCROLLS] = lg(s, IPK_F_SCROLLS);
	raw[IPK_FT_KEYS] = lg(s, IPK_F_KEYS);
	raw[IPK_FT_RX_PKTS] = lg(s, IPK_F_RX_PKTS);
	raw[IPK_FT_TX_PKTS] = lg(s, IPK_F_TX_PKTS);
	raw[IPK_FT_CPU] = raw01(s, IPK_F_CPU);
	raw[IPK_FT_GPU] = raw01(s, IPK_F_GPU);
	raw[IPK_FT_FPS] = lg(s, IPK_F_FPS);
	raw[IPK_FT_IDLE] = has_in ? (float)log1p(st->idle) : NAN;
	raw[IPK_FT_EV_10S] = has_in ? (float)log1p(sum10) : NAN;
	raw[IPK_FT_EV_60S] = has_in ? (float)log1p(sum60) : NAN;
	raw[IPK_FT_EV_300S] = has_in ? (float)log1p(sum300) : NAN;
	raw[IPK_FT_ACTIVE_60S] = has_in && n60 ? (float)act60 / (float)n60 : NAN;
	raw[IPK_FT_PREV_GAP] = has_in ? (float)log1p(st->prev_gap) : NAN;
	raw[IPK_FT_AGE] = (float)log1p(t - st->start);
	raw[IPK_FT_EV_3S] = has_in ? (float)log1p(sum3) : NAN;
	raw[IPK_FT_EV_TREND] = has_in ? (float)(log1p(sum10) - log1p(sum20 - sum10)) : NAN;
	raw[IPK_FT_BURST] = has_in ? (float)log1p(active ? t - st->burst_start : 0) : NAN;
	raw[IPK_FT_GAPS_60S] = has_in ? (float)gaps60 : NAN;
	raw[IPK_FT_SINCE_CLICK] = since(st, s, IPK_F_CLICKS, st->last_click);
	raw[IPK_FT_SINCE_KEY] = since(st, s, IPK_F_KEYS, st->last_key);
	if (hist && has_in && hist->gaps > 0) {
		raw[IPK_FT_U_SURV5] = (float)ipk_hist_score(hist, st->idle, 5);
		raw[IPK_FT_U_SURV10] = (float)ipk_hist_score(hist, st->idle, 10);
		raw[IPK_FT_U_SURV30] = (float)ipk_hist_score(hist, st->idle, 30);
	} else {
		raw[IPK_FT_U_SURV5] = raw[IPK_FT_U_SURV10] = raw[IPK_FT_U_SURV30] = NAN;
	}
	raw[IPK_FT_U_GAPS] = hist ? (float)log1p(hist->gaps) : NAN;
	raw[IPK_FT_U_ACTIVE] = hist && hist->intervals > 0 ? (float)(hist->active / hist->intervals) : NAN;
	raw[IPK_FT_HAS_INPUT] = (float)has_in;
	raw[IPK_FT_HAS_NET] = (float)(ipk_sample_has(s, IPK_F_RX_PKTS) || ipk_sample_has(s, IPK_F_TX_PKTS));
	raw[IPK_FT_HAS_CPU] = (float)ipk_sample_has(s, IPK_F_CPU);
	raw[IPK_FT_HAS_GPU] = (float)ipk_sample_has(s, IPK_F_GPU);
	raw[IPK_FT_HAS_FPS] = (float)ipk_sample_has(s, IPK_F_FPS);
	return 0;
}

void ipk_norm_fit_begin(struct ipk_norm_acc *a)
{
	memset(a, 0, sizeof(*a));
	a->nfeat = IPK_FEAT_COUNT;
}

void ipk_norm_fit_add(struct ipk_norm_acc *a, const float *raw)
{
	for (int i = 0; i < a->nfeat; i++) {
		double v = raw[i];
		if (v != v)
			continue;
		a->n[i] += 1;
		double d = v - a->mean[i];
		a->mean[i] += d / a->n[i];
		a->m2[i] += d * (v - a->mean[i]);
	}
}

void ipk_norm_fit_end(const struct ipk_norm_acc *a, float *mean, float *scale)
{
	for (int i = 0; i < a->nfeat; i++) {
		mean[i] = a->n[i] > 0 ? (float)a->mean[i] : 0.0f;
		double sd = a->n[i] > 1 ? sqrt(a->m2[i] / a->n[i]) : 0;
		scale[i] = sd >= 1e-6 ? (float)sd : 1.0f;
	}
}

void ipk_norm_apply(const float *mean, const float *scale, int n, const float *raw, float *out)
{
	for (int i = 0; i < n; i++)
		out[i] = raw[i] != raw[i] ? 0.0f : (raw[i] - mean[i]) / scale[i];
}
