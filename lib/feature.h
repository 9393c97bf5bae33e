/* feature.h - the prediction features of one session, computed step by step
 * from its sample records, and their normalisation.
 *
 * One step per sample (one interval). The features (IPK_FEAT_COUNT of them,
 * in this order, named by ipk_feat_name()):
 *   log_events log_mouse_px log_clicks log_scrolls log_keys   log1p of counts
 *   log_rx_pkts log_tx_pkts                                   log1p of packets
 *   cpu gpu                                                   utilisation 0..1
 *   log_fps                                                   log1p(frames/s)
 *   log_idle_s        log1p(seconds since the last interval with input)
 *   log_events_10s log_events_60s log_events_300s  log1p(input events over
 *                     the last 10, 60, 300 s, this interval included)
 *   active_frac_60s   share of the intervals of the last 60 s with input
 *   log_prev_gap_s    log1p(length of the last completed idle gap, s)
 *   log_age_s         log1p(seconds since the session's first interval began)
 *   log_events_3s     log1p(input events over the last 3 s)
 *   events_trend      log1p(events of the last 10 s) - log1p(events of the
 *                     10 s before them)
 *   log_burst_s       log1p(seconds the current run of active intervals has
 *                     lasted; 0 when idle)
 *   gaps_60s          idle gaps (active -> inactive changes) in the last 60 s
 *   log_since_click_s log1p(seconds since the last interval with a click)
 *   log_since_key_s   log1p(seconds since the last interval with a key)
 *   user_surv_5 user_surv_10 user_surv_30   from the user's history
 *                     (userhist.h): P(gap > idle + W | gap > idle), W = 5,
 *                     10, 30 s, over the user's past gaps (all sessions)
 *   user_log_gaps     log1p(gaps in the user's history)
 *   user_active_frac  share of the user's past intervals with input
 *   has_input has_net has_cpu has_gpu has_fps   1 when the sample carries
 *                     the field (events; rx/tx_pkts; cpu; gpu; fps), else 0
 * A field the sample lacks gives NaN for the features built from it (masked;
 * the mask features say so); ipk_norm_apply() turns NaN into 0, the mean.
 *
 * Idle time is computed from the event counts of the stream itself, never
 * from input_age_s: an interval with events > 0 is active; idle_s at the end
 * of interval t is 0 when t is active, else t minus the end of the last
 * active interval (or minus the session's start when none was active yet).
 * Intervals whose sample lacks "events" count as inactive for idle time.
 *
 * Ownership: ipk_feat_new() returns a state the caller frees with
 * ipk_feat_free() (NULL is fine). Everything else works on caller memory.
 */
#ifndef IPK_FEATURES_H
#define IPK_FEATURES_H

#include <stddef.h>

#include "sample.h"
#include "userhist.h"

enum ipk_feat {
	IPK_FT_EVENTS, IPK_FT_MOUSE_PX, IPK_FT_CLICKS, IPK_FT_SCROLLS, IPK_FT_KEYS,
	IPK_FT_RX_PKTS, IPK_FT_TX_PKTS, IPK_FT_CPU, IPK_FT_GPU, IPK_FT_FPS,
	IPK_FT_IDLE, IPK_FT_EV_10S, IPK_FT_EV_60S, IPK_FT_EV_300S, IPK_FT_ACTIVE_60S,
	IPK_FT_PREV_GAP, IPK_FT_AGE,
	IPK_FT_EV_3S, IPK_FT_EV_TREND, IPK_FT_BURST, IPK_FT_GAPS_60S, IPK_FT_SINCE_CLICK, IPK_FT_SINCE_KEY,
	IPK_FT_U_SURV5, IPK_FT_U_SURV10, IPK_FT_U_SURV30, IPK_FT_U_GAPS, IPK_FT_U_ACTIVE,
	IPK_FT_HAS_INPUT, IPK_FT_HAS_NET, IPK_FT_HAS_CPU, IPK_FT_HAS_GPU, IPK_FT_HAS_FPS,
	IPK_FEAT_COUNT
};

/* Name of feature i, or NULL when out of range. */
const char *ipk_feat_name(int i);

struct ipk_feat_state;

/* A session's state before its first sample; NULL when out of memory. */
struct ipk_feat_state *ipk_feat_new(void);
void ipk_feat_free(struct ipk_feat_state *st);
/* Bytes one session's state takes. */
size_t ipk_feat_state_bytes(void);

/* Consume the session's next sample and write IPK_FEAT_COUNT raw features
 * to raw. hist is the session's user's history (NULL when there is none:
 * the user_* features are then NaN, masked); the step first adds this
 * interval and the gap it closes to it, so the features only use data up to
 * the sample. Returns 0, or -1 (state and hist unchanged, raw untouched)
 * when s->ts is not after the previous sample's. */
int ipk_feat_step(struct ipk_feat_state *st, const struct ipk_sample *s, struct ipk_hist *hist, float *raw);

/* Seconds of inactivity observed at the last step (idle_s above, interval
 * resolution), or -1 before the first step. */
double ipk_feat_idle(const struct ipk_feat_state *st);

/* Normalisation: mean and scale per feature, fitted on training data over
 * the values that are present (not NaN). */
struct ipk_norm_acc {
	int nfeat;
	double n[IPK_FEAT_COUNT], mean[IPK_FEAT_COUNT], m2[IPK_FEAT_COUNT];
};
void ipk_norm_fit_begin(struct ipk_norm_acc *a);
void ipk_norm_fit_add(struct ipk_norm_acc *a, const float *raw);
/* mean and scale (standard deviation; 1 when under 1e-6 or no data). */
void ipk_norm_fit_end(const struct ipk_norm_acc *a, float *mean, float *scale);
/* out[i] = (raw[i] - mean[i]) / scale[i], or 0 when raw[i] is NaN. */
void ipk_norm_apply(const float *mean, const float *scale, int n, const float *raw, float *out);

#endif
