/* predict.h - streaming prediction: per-session feature and LSTM state kept
 * while sessions come and go, one prediction per sample.
 *
 * Ownership: ipk_predictor_new() borrows the model (it must outlive the
 * predictor) and returns a predictor the caller frees with
 * ipk_predictor_free() (NULL is fine); it owns every session's state.
 */
#ifndef IPK_PREDICT_H
#define IPK_PREDICT_H

#include "dataset.h"
#include "model.h"
#include "sample.h"
#include "userhist.h"

struct ipk_prediction {
	double ts;
	double idle_s;                  /* seconds of inactivity observed so far */
	int nwin;
	double window[IPK_LSTM_MAX_OUT];
	float p[IPK_LSTM_MAX_OUT];      /* probability of no input in (ts, ts+window] */
	int decide;                     /* index of the window the decision is on */
	double threshold;               /* threshold in force */
	int above;                      /* p[decide] >= threshold */
};

struct ipk_predictor;

/* decide_window: the window (seconds) decisions are taken on, one of the
 * model's; threshold: in 0..1, or negative for the model's own threshold of
 * that window; expire: seconds of stream time after which a session that
 * sent no sample is forgotten; hist: the per-user histories to read and
 * update (borrowed, must outlive the predictor; e.g. loaded from a state
 * directory), or NULL for a table of the predictor's own that starts empty.
 * NULL with err set (IPK_EXIT_USAGE: no such window; IPK_EXIT_DATAERR: the
 * model's features are not this build's; IPK_EXIT_OSERR). */
struct ipk_predictor *ipk_predictor_new(const struct ipk_model *m, double decide_window, double threshold,
					double expire, struct ipk_histdb *hist, struct ipk_err *err);
void ipk_predictor_free(struct ipk_predictor *p);

/* The learning rate of the per-user recalibration (recal.h) from now on;
 * IPK_RECAL_RATE by default, 0 for the model's probabilities as they are.
 * Users' calibrations live in their histories (hist above), so a state
 * directory keeps them across runs. */
void ipk_predictor_set_recal(struct ipk_predictor *p, double rate);

/* Predict for one sample. Returns 1 with out filled; 0 when the sample was
 * skipped (not after its session's previous one); -1 with err set when out
 * of memory. */
int ipk_predictor_step(struct ipk_predictor *p, const struct ipk_sample *s, struct ipk_prediction *out,
		       struct ipk_err *err);

/* Run the LSTM steps of ipk_predictor_step_batch() on the GPU (lstmcuda.h)
 * from now on; call before the first sample. Returns 0, or -1 with err set
 * (IPK_EXIT_UNAVAILABLE: no CUDA in this build or no usable GPU). */
int ipk_predictor_use_cuda(struct ipk_predictor *p, struct ipk_err *err);

/* Predict for n samples at once (typically the samples of one interval):
 * features sample by sample in order, then the LSTM for all of them in one
 * batched step (one kernel launch with the GPU); a session that comes twice
 * splits the batch so that its steps stay in order. got[i] is 1 when out[i]
 * holds sample i's prediction, 0 when the sample was skipped (not after its
 * session's previous one). Gives the same predictions as ipk_predictor_step()
 * on the CPU. Returns 0, or -1 with err set (out of memory, a GPU error). */
int ipk_predictor_step_batch(struct ipk_predictor *p, const struct ipk_sample *smp, int n,
			     struct ipk_prediction *out, int *got, struct ipk_err *err);

/* The probabilities a predictor (recalibration rate rate, histories
 * starting empty) writes for d's samples when they are streamed in d's
 * order (struct ipk_series.seq): pred[(off[i] + t) * nwin + k] for step t
 * of series i and the model's window k, for every series i whose skip[i]
 * is 0 (skip NULL: all of them); off[i] is where the caller wants series
 * i's steps. A session is never forgotten here for being silent (the
 * predictor's expire). Returns 0, or -1 with err set (the model's features
 * are not this build's, out of memory). */
int ipk_predict_dataset(const struct ipk_model *m, const struct ipk_dataset *d, const char *skip, const long *off,
			double rate, double *pred, struct ipk_err *err);

/* Sessions currently held. */
int ipk_predictor_sessions(const struct ipk_predictor *p);

#endif
