/* recal.h - online recalibration of a model's probabilities, per user.
 *
 * A model trained on some users is miscalibrated for a user whose idle time
 * differs from theirs (fewer or longer pauses). Each user therefore carries
 * a logistic recalibration of the model's output per window,
 * p' = sigmoid(a * logit(p) + b), that starts as the identity (a = 1,
 * b = 0) and learns from the user's own outcomes as soon as they are known:
 * the prediction made at ts for window W is settled by the session's later
 * samples as eval.h labels it (0 at the first sample with input at or
 * before ts + W; 1 at the first sample at or after ts + W when none had
 * input; never when a sample in the window does not say how many events it
 * saw and none had input, or when the session ends first). The one
 * difference: a window that runs past the session's last sample but saw
 * input before it is settled as 0 here, while eval.h leaves that step out
 * (a stream does not know which sample is the last). Each settled
 * prediction takes one stochastic gradient step of the log loss with the
 * given rate: g = sigmoid(a * z + b) - y; b -= rate * g; a -= rate * g * z,
 * z being the logit of the model's probability (clamped to [1e-6, 1-1e-6]).
 * Only the past is used: a prediction is recalibrated with what the user's
 * outcomes up to that sample taught.
 *
 * The streaming predictor (predict.h) and the evaluation (ipk_eval_model)
 * call ipk_recal_step() in the same order, once per sample in stream order,
 * so that both give the same probabilities.
 *
 * Ownership: ipk_recal_queue_new() returns a queue (one per session: its
 * predictions still waiting for their outcome) that the caller frees with
 * ipk_recal_queue_free() (NULL is fine). Calibrations live in the user's
 * struct ipk_hist (userhist.h), which the caller owns.
 */
#ifndef IPK_RECAL_H
#define IPK_RECAL_H

#include <stddef.h>

#include "userhist.h"

/* The default learning rate (ip-predict --recalibrate). Chosen on the
 * training users only, leaving one user out: of 1e-4, 3e-4, 1e-3 and 3e-3 it
 * gave the lowest Brier score summed over the windows 5, 10 and 30 s. */
#define IPK_RECAL_RATE 1e-3

struct ipk_recal_queue;

struct ipk_recal_queue *ipk_recal_queue_new(void);
void ipk_recal_queue_free(struct ipk_recal_queue *q);

/* One sample of the session at ts, with events input events (NaN when the
 * sample does not say): settle the queued predictions it decides and learn
 * from them (rate > 0), then recalibrate p[0..nwin) in place with c and
 * queue it. c may be NULL (no user): p is left as it is and nothing is
 * queued. With rate 0, nothing is queued or learned and p is left as it
 * is. Returns 0, or -1 when out of memory (p is then left as it is). */
int ipk_recal_step(struct ipk_recal_queue *q, struct ipk_calib *c, double rate, double ts, float events, float *p);

/* The memory a queue holds while entries predictions wait (the longest
 * window over the sample interval, plus one), for nwin windows. */
size_t ipk_recal_queue_bytes(int nwin, int entries);

/* Predictions of the session waiting for an outcome. */
int ipk_recal_pending(const struct ipk_recal_queue *q);

#endif
