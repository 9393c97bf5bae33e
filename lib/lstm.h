/* lstm.h - a multi-layer LSTM with a dense sigmoid head: one probability per
 * output (per prediction window) at every step.
 *
 * The network:  for each layer l (input x for l = 0, else h of layer l-1)
 *   gates = W_ih x + W_hh h + b          (4H rows, order i, f, g, o as PyTorch)
 *   i, f, o = sigmoid(...), g = tanh(...), c = f*c + i*g, h = o*tanh(c)
 *   p_k = sigmoid(w_k . h_top + b_k)      (k = 0 .. n_out-1)
 *
 * Parameters are kept in double precision in one flat vector, in this
 * canonical order (row-major matrices): for each layer W_ih [4H][in_l],
 * W_hh [4H][H], b [4H] (PyTorch's bias_ih + bias_hh); then the head
 * W_out [n_out][H], b_out [n_out]. Training updates that vector; streaming
 * inference runs on a float copy packed for the CPU (W transposed so that a
 * step is one axpy sweep over a weight block that stays in L1), rebuilt by
 * ipk_lstm_sync() after the parameters change.
 *
 * Streaming: one struct ipk_lstm_state per session (h and c of every layer,
 * float), created when the session appears and freed when it goes;
 * ipk_lstm_step() advances any number of sessions by one step. The network is
 * only read by a step, so several threads may step disjoint states at once.
 *
 * Training: truncated back-propagation through time with Adam and gradient
 * clipping by global norm (struct ipk_lstm_trainer). Sequences are walked in
 * B parallel lanes; each lane carries its hidden state from chunk to chunk of
 * a sequence and back-propagates within a chunk of bptt steps. Lanes are
 * spread over threads; every lane owns its gradient buffer and buffers are
 * summed in lane order, so a run is bit-for-bit the same for a seed whatever
 * the number of threads. Randomness comes from ipk_rng (never rand()).
 *
 * Ownership: ipk_lstm_new() returns a network the caller frees with
 * ipk_lstm_free(); states with ipk_lstm_state_free(); trainers with
 * ipk_lstm_trainer_free() (a trainer borrows its network). All free
 * functions accept NULL. Sequences passed to functions are borrowed.
 */
#ifndef IPK_LSTM_H
#define IPK_LSTM_H

#include <stddef.h>
#include <stdint.h>

#include "ipk.h"

#define IPK_LSTM_MAX_LAYERS 8
#define IPK_LSTM_MAX_HIDDEN 1024
#define IPK_LSTM_MAX_IN 1024
#define IPK_LSTM_MAX_OUT 16

/* A small deterministic PRNG (xoshiro256**, seeded through splitmix64). */
struct ipk_rng {
	uint64_t s[4];
};
void ipk_rng_seed(struct ipk_rng *r, uint64_t seed);
uint64_t ipk_rng_next(struct ipk_rng *r);
/* Uniform in [0, 1). */
double ipk_rng_uniform(struct ipk_rng *r);
/* Uniform integer in [0, n), n > 0. */
uint64_t ipk_rng_below(struct ipk_rng *r, uint64_t n);

struct ipk_lstm_shape {
	int n_in;     /* features per step, 1..IPK_LSTM_MAX_IN */
	int hidden;   /* H, 1..IPK_LSTM_MAX_HIDDEN */
	int layers;   /* 1..IPK_LSTM_MAX_LAYERS */
	int n_out;    /* probabilities per step (windows), 1..IPK_LSTM_MAX_OUT */
};

struct ipk_lstm;
struct ipk_lstm_state;

/* A network of that shape with all parameters zero (call ipk_lstm_init() or
 * fill ipk_lstm_params() and ipk_lstm_sync()). NULL with err set on a bad
 * shape (IPK_EXIT_USAGE) or out of memory (IPK_EXIT_OSERR). */
struct ipk_lstm *ipk_lstm_new(const struct ipk_lstm_shape *shape, struct ipk_err *err);
void ipk_lstm_free(struct ipk_lstm *net);

/* Random initial parameters for a seed: uniform in +-1/sqrt(H) (PyTorch's
 * default) with the forget-gate bias set to 1. Calls ipk_lstm_sync(). */
void ipk_lstm_init(struct ipk_lstm *net, uint64_t seed);

const struct ipk_lstm_shape *ipk_lstm_shape(const struct ipk_lstm *net);
size_t ipk_lstm_nparams(const struct ipk_lstm *net);
/* The parameter vector (canonical order above), owned by the network. */
double *ipk_lstm_params(struct ipk_lstm *net);
const double *ipk_lstm_params_const(const struct ipk_lstm *net);
/* Offset of layer l's W_ih, W_hh and b, or of the head (l == layers: W_out,
 * then b_out at +n_out*H) in the parameter vector. */
size_t ipk_lstm_offset(const struct ipk_lstm *net, int layer);

/* An ensemble as one network. k networks of one shape (n_in, H, L, n_out)
 * are laid side by side in dst, of shape (n_in, k*H, L, n_out): in every
 * layer member m holds units m*H .. m*H+H-1, its gates see the input (layer
 * 0) or only its own units of the layer below, and its own recurrent units
 * (block-diagonal weights, zeros elsewhere); the head is the members' heads
 * divided by k, so dst's probability is the sigmoid of the mean of the
 * members' logits. One network, so that a step of the ensemble stays one
 * call on the CPU and one kernel launch on the GPU. The CPU step skips the
 * zero blocks of the recurrent weights (of any network), so it costs about
 * k member steps rather than k * k; the GPU step is dense. dst's parameters are
 * overwritten and synced. Returns 0, or -1 with err set (IPK_EXIT_USAGE)
 * when the shapes disagree. */
int ipk_lstm_merge(struct ipk_lstm *dst, struct ipk_lstm *const *src, int k, struct ipk_err *err);

/* Move a network trained on inputs normalised as (raw - from_mean) /
 * from_scale onto inputs normalised as (raw - to_mean) / to_scale (n_in
 * values each): the first layer's input weights W become W * to_scale /
 * from_scale and its biases gain W * (to_mean - from_mean) / from_scale, so
 * the network computes what it computed before on any raw input. A missing
 * input (normalised to 0, the mean) is afterwards imputed at to_mean
 * instead of from_mean. Calls ipk_lstm_sync(). */
void ipk_lstm_renormalise(struct ipk_lstm *net, const float *from_mean, const float *from_scale, const float *to_mean,
			  const float *to_scale);

/* Rebuild the packed float weights from the parameters. */
void ipk_lstm_sync(struct ipk_lstm *net);

/* Name of the inference kernel in use ("avx2" or "generic"; the best the
 * CPU supports is chosen at creation). Both give bit-identical results. */
const char *ipk_lstm_kernel(const struct ipk_lstm *net);
/* Use kernel NAME instead. Returns 0, or -1 when this CPU or build lacks it. */
int ipk_lstm_set_kernel(struct ipk_lstm *net, const char *name);

/* Streaming state of one session, zero (the state at a session's start).
 * NULL when out of memory. The state belongs to that network's shape. */
struct ipk_lstm_state *ipk_lstm_state_new(const struct ipk_lstm *net);
void ipk_lstm_state_reset(const struct ipk_lstm *net, struct ipk_lstm_state *st);
void ipk_lstm_state_free(struct ipk_lstm_state *st);
/* Bytes one state takes, allocation included. */
size_t ipk_lstm_state_bytes(const struct ipk_lstm *net);

/* One step for n sessions: x holds n rows of n_in features, st[j] is row
 * j's session; writes n rows of n_out probabilities to prob. */
void ipk_lstm_step(const struct ipk_lstm *net, struct ipk_lstm_state *const *st, int n, const float *x, float *prob);

/* A training or evaluation sequence: len steps of n_in features (x) and of
 * n_out labels (y: 1 inactive, 0 active, negative = excluded from the loss). */
struct ipk_lstm_seq {
	const float *x;
	const float *y;
	int len;
};

/* Reference forward pass in double precision from the zero state: writes
 * len*n_out probabilities to prob. Returns 0, or -1 when out of memory. */
int ipk_lstm_forward(const struct ipk_lstm *net, const struct ipk_lstm_seq *seq, double *prob);

/* Binary cross-entropy summed over the labelled steps of seq (from the zero
 * state, back-propagated through the whole sequence); adds its gradient with
 * respect to every parameter to grad (nparams values, not cleared) and the
 * number of labels used to *nlabels when not NULL. Returns the summed loss,
 * or -1 when out of memory. */
double ipk_lstm_loss_grad(const struct ipk_lstm *net, const struct ipk_lstm_seq *seq, double *grad, long *nlabels);

struct ipk_lstm_train_opts {
	int batch;        /* parallel lanes per update (default 32) */
	int bptt;         /* steps per truncated back-propagation chunk (default 64) */
	double lr;        /* Adam learning rate (default 1e-3) */
	double beta1, beta2, eps;  /* Adam (defaults 0.9, 0.999, 1e-8) */
	double clip;      /* clip the gradient's global norm to this; 0: off (default 1) */
	double pos_weight[IPK_LSTM_MAX_OUT]; /* loss weight of label 1 per output; 0 means 1 */
	int threads;      /* worker threads; 0: the number of CPUs, at most 2 */
	uint64_t seed;    /* order of sequences per epoch */
};

/* Fill o with the defaults above. */
void ipk_lstm_train_defaults(struct ipk_lstm_train_opts *o);

struct ipk_lstm_trainer;

/* A trainer for net (borrowed; must outlive the trainer). NULL with err set
 * on bad options (IPK_EXIT_USAGE) or out of memory (IPK_EXIT_OSERR). */
struct ipk_lstm_trainer *ipk_lstm_trainer_new(struct ipk_lstm *net, const struct ipk_lstm_train_opts *o,
					      struct ipk_err *err);
void ipk_lstm_trainer_free(struct ipk_lstm_trainer *t);

/* One epoch over nseq sequences (in an order drawn from the seed and the
 * epoch number), updating the network (ipk_lstm_sync() included). Returns
 * the mean loss per label over the epoch, or -1 with err set (out of
 * memory, a thread that could not start: IPK_EXIT_OSERR). */
double ipk_lstm_train_epoch(struct ipk_lstm_trainer *t, const struct ipk_lstm_seq *seqs, int nseq,
			    struct ipk_err *err);

#endif
