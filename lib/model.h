/* model.h - the prediction model file: an LSTM (lstm.h) with what it needs
 * around it (prediction windows, thresholds, the feature list and its
 * normalisation), stored in a versioned, checksummed, portable file.
 *
 * File format, version 4 (all integers and floats little-endian, floats
 * IEEE-754; byte offsets from the start):
 *   0   8  magic "IPKMODEL"
 *   8   4  u32 format version (4)
 *   12  8  u64 total file length in bytes, checksum included
 *   20  .. u32 n_in, hidden, layers, n_out
 *          n_out x f64 window (seconds), n_out x f64 threshold (0..1)
 *          u32 nfeat (== n_in); per feature: u8 name length, name bytes,
 *          f32 mean, f32 scale (normalised = (raw - mean) / scale)
 *          u16 length + bytes: model name; u16 length + bytes: free text
 *          describing how the model was made
 *          u64 nparams, then nparams x f32: the LSTM parameters in
 *          lstm.h's canonical order
 *          u32 output stage: 0 the network's outputs are the probabilities;
 *          1 stacked (below), then: f64 early_idle; u32 nlr (== nfeat),
 *          n_out x (nlr + 1) f64 logistic-regression weights (intercept
 *          last); u32 nstack (== IPK_MODEL_STACK_IN), n_out x (nstack + 1)
 *          f64 stacking weights (intercept last); u32 ngap (at most
 *          IPK_MODEL_MAX_GAPS), ngap x (f64 gap length in seconds, strictly
 *          ascending and > 0; u64 number of gaps of that length, >= 1): the
 *          idle-gap histogram
 *   end-8  u64 XXH64 (seed 0) of every byte before it
 * Versions 2 (6 stacking inputs, no gap histogram) and 3 (7 inputs) are
 * still read: their stacking weights are those of version 4 with weight 0
 * on the inputs they lack, so they predict exactly as before. Version 1 (no
 * output stage) is refused with a message saying to retrain.
 *
 * Stacked output of window k (ipk_model_output): with x the normalised
 * features, q the network's output, r = sigmoid(lr_w[k] . x + lr_w[k][nlr])
 * (a logistic regression on the features), h the gap histogram's
 * probability of no input within the window (ipk_model_gaps_score), e = 1
 * when idle <= early_idle else 0, l = log1p(idle) and z = (logit q,
 * logit r, l, e, e logit q, e logit r, logit h, l logit q, l logit r,
 * e logit h) (logits of values clamped to 1e-6..1-1e-6), the probability
 * is sigmoid(stack_w[k] . z + stack_w[k][nstack]). The products with l
 * (version 4) let the weights of the network and the regression change
 * with the time since the last input. ip-train fits lr_w and the histogram
 * on the training users and stack_w on outputs for users they were not
 * fitted on (validation users, or every user out of fold).
 * The gap histogram: the lengths of the idle gaps (time between two
 * consecutive intervals with input) seen in training. With C(x) the number
 * of gaps longer than x, h = (C(idle + W) + 1/2) / (C(idle) + 1): the
 * hybrid-histogram baseline's survival ratio C(idle + W) / C(idle)
 * (eval.h), smoothed so that it stays inside (0, 1) and is 1/2 once idle
 * reaches past every gap seen.
 * The checksum covers the whole file, so any changed byte is detected.
 * A reader refuses a file whose magic, version, length, checksum or sizes
 * are wrong, naming the file and the reason.
 *
 * Ownership: ipk_model_new() takes the network it is given; the model owns
 * it and frees it in ipk_model_free() (NULL is fine). ipk_model_encode()
 * returns a malloc'd buffer the caller frees.
 */
#ifndef IPK_MODEL_H
#define IPK_MODEL_H

#include <stddef.h>

#include "ipk.h"
#include "lstm.h"

#define IPK_MODEL_VERSION 4
#define IPK_MODEL_STACK_IN 10
#define IPK_MODEL_MAX_GAPS 1024
#define IPK_MODEL_MAX_FEAT 256
#define IPK_MODEL_FEAT_NAME 32

/* The idle-gap histogram (above): n distinct gap lengths, ascending, and
 * how many gaps had each; tail[i] = count[i] + ... + count[n - 1] (derived,
 * not stored). */
struct ipk_model_gaps {
	int n;
	double len[IPK_MODEL_MAX_GAPS];
	double count[IPK_MODEL_MAX_GAPS];
	double tail[IPK_MODEL_MAX_GAPS];
};

/* Everything in the file besides the network's parameters. */
struct ipk_model_info {
	int nwin;                                 /* == the network's n_out */
	double window[IPK_LSTM_MAX_OUT];          /* seconds, ascending */
	double threshold[IPK_LSTM_MAX_OUT];       /* decision threshold per window */
	int nfeat;                                /* == the network's n_in */
	char feat[IPK_MODEL_MAX_FEAT][IPK_MODEL_FEAT_NAME]; /* feature names */
	float mean[IPK_MODEL_MAX_FEAT];
	float scale[IPK_MODEL_MAX_FEAT];          /* > 0 */
	char name[64];                            /* e.g. "lstm-h32" */
	char meta[512];                           /* how it was made */
	int stacked;                              /* output stage: 0 none, 1 stacked */
	double early_idle;                        /* stacked: the "early" indicator's limit, s */
	double lr_w[IPK_LSTM_MAX_OUT][IPK_MODEL_MAX_FEAT + 1];  /* stacked: per window */
	double stack_w[IPK_LSTM_MAX_OUT][IPK_MODEL_STACK_IN + 1]; /* stacked: per window */
	struct ipk_model_gaps gaps;               /* stacked: the idle-gap histogram */
};

struct ipk_model;

/* A model from info (copied) and net (taken, even on failure). NULL with
 * err set when they disagree (IPK_EXIT_USAGE) or out of memory. */
struct ipk_model *ipk_model_new(const struct ipk_model_info *info, struct ipk_lstm *net, struct ipk_err *err);
void ipk_model_free(struct ipk_model *m);

const struct ipk_model_info *ipk_model_info(const struct ipk_model *m);
struct ipk_lstm *ipk_model_net(const struct ipk_model *m);
/* The probabilities of one step: from the normalised features x (nfeat),
 * the seconds of inactivity idle and the network's outputs q (n_out), into
 * p (n_out; may be q itself). Without a stage p = q; stacked, see above. */
void ipk_model_output(const struct ipk_model *m, const float *x, double idle, const float *q, float *p);
/* The logit of p clamped to [1e-6, 1 - 1e-6] (NaN: 1e-6), and the
 * sigmoid, as the output stage computes them. */
double ipk_logit(double p);
double ipk_sigmoid(double z);
/* The same from a model's info alone (as ip-train does before the model
 * exists). */
void ipk_model_info_output(const struct ipk_model_info *in, const float *x, double idle, const float *q, float *p);

/* The stacking inputs z (IPK_MODEL_STACK_IN) of window k from the network's
 * output q, the regression's r, the gap histogram's h (probabilities) and
 * idle. */
void ipk_model_stack_inputs(double q, double r, double h, double idle, double early_idle, float *z);

/* The gap histogram from n gap lengths g sorted ascending (n may be 0).
 * When they hold more than IPK_MODEL_MAX_GAPS distinct lengths, lengths are
 * rounded up to a multiple of the smallest power of two (from 1/64 s) that
 * leaves at most that many. */
void ipk_model_gaps_fit(struct ipk_model_gaps *gp, const double *g, long n);
/* The histogram's h (above) for idle seconds and window W: in (0, 1). */
double ipk_model_gaps_score(const struct ipk_model_gaps *gp, double idle, double window);

/* "NAME-XXXXXXXX": the name and the high 32 bits of the checksum of the
 * model's encoding (the file's checksum), computed at creation. */
const char *ipk_model_id(const struct ipk_model *m);

/* The model as file bytes in *buf (malloc'd) and *len. Returns 0, or -1
 * with err set (out of memory). */
int ipk_model_encode(const struct ipk_model *m, unsigned char **buf, size_t *len, struct ipk_err *err);

/* A model from file bytes; name is used in messages. NULL with err set
 * (IPK_EXIT_DATAERR) and a message "read model 'NAME': reason" when the
 * bytes are not a model, truncated, corrupt or of another version. */
struct ipk_model *ipk_model_decode(const unsigned char *buf, size_t len, const char *name, struct ipk_err *err);

/* Write to path atomically (a temporary file beside it, then rename).
 * Returns 0, or -1 with err set (IPK_EXIT_CANTCREAT / IPK_EXIT_IOERR). */
int ipk_model_save(const struct ipk_model *m, const char *path, struct ipk_err *err);

/* Read a model file. NULL with err set: IPK_EXIT_NOINPUT when it cannot be
 * opened, IPK_EXIT_DATAERR when it is refused (see ipk_model_decode). */
struct ipk_model *ipk_model_load(const char *path, struct ipk_err *err);

/* The default model's file name and where it is looked for, in order:
 *   $IPKIT_MODEL when set (used even when it does not exist);
 *   DIR/../share/ipkit/default.ipkm, DIR being the running program's folder
 *     (an installed ipkit: PREFIX/bin and PREFIX/share/ipkit);
 *   DIR/../../models/default.ipkm and DIR/../../../models/default.ipkm
 *     (programs run from a source tree's build/bin or build/san/bin).
 * Writes the first that exists (or $IPKIT_MODEL) to path (len bytes) and
 * "IPKIT_MODEL", "installed" or "source tree" to *how. Returns 0, or -1
 * with err set (IPK_EXIT_NOINPUT) when none exists. */
#define IPK_MODEL_DEFAULT_NAME "default.ipkm"
int ipk_model_find_default(char *path, size_t len, const char **how, struct ipk_err *err);

#endif
