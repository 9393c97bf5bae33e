/* lstmbench.c - the LSTM step benchmark. See lstmbench.h. */
#include "lstmbench.h"

#include <stdlib.h>
#include <string.h>

#include "feature.h"
#include "lstmcuda.h"
#include "recal.h"

/* What ip-predict holds per session besides the LSTM state: the features'
 * state and the recalibration's queue of predictions waiting for their
 * outcome (1 s samples, 30 s longest window: 31 of them). */
static size_t session_bytes(size_t state_bytes, int nwin)
{
	return state_bytes + ipk_feat_state_bytes() + ipk_recal_queue_bytes(nwin, 31);
}

int ipk_lstm_bench(const struct ipk_lstm *net, int sessions, double min_seconds, struct ipk_lstm_bench_result *r,
		   struct ipk_err *err)
{
	memset(r, 0, sizeof(*r));
	if (sessions < 1)
		return ipk_err_set(err, IPK_EXIT_USAGE, "bench lstm '%d sessions': need at least one", sessions);
	const struct ipk_lstm_shape *sh = ipk_lstm_shape(net);
	int rc = -1;
	/* inputs for a few distinct steps, reused in turn */
	enum { NX = 4 };
	struct ipk_lstm_state **st = calloc(sessions, sizeof(*st));
	float *x = malloc(sizeof(float) * (size_t)sessions * sh->n_in * NX);
	float *prob = malloc(sizeof(float) * (size_t)sessions * sh->n_out);
	if (!st || !x || !prob)
		goto oom;
	for (int i = 0; i < sessions; i++)
		if (!(st[i] = ipk_lstm_state_new(net)))
			goto oom;
	struct ipk_rng rng;
	ipk_rng_seed(&rng, 7);
	for (size_t i = 0; i < (size_t)sessions * sh->n_in * NX; i++)
		x[i] = (float)(ipk_rng_uniform(&rng) * 2 - 1);
	const size_t xs = (size_t)sessions * sh->n_in;
	ipk_lstm_step(net, st, sessions, x, prob);
	long steps = 0;
	double t0 = ipk_mono(), t;
	do {
		/* enough calls between clock reads to make the read negligible */
		int calls = sessions >= 4096 ? 1 : 4096 / sessions;
		for (int c = 0; c < calls; c++, steps++)
			ipk_lstm_step(net, st, sessions, x + (size_t)(steps % NX) * xs, prob);
		t = ipk_mono() - t0;
	} while (t < min_seconds);
	r->sessions = sessions;
	r->steps = steps * sessions;
	r->seconds = t;
	r->steps_per_s = (double)r->steps / t;
	r->state_bytes = ipk_lstm_state_bytes(net);
	r->session_bytes = session_bytes(r->state_bytes, sh->n_out);
	r->kernel = ipk_lstm_kernel(net);
	rc = 0;
	goto out;
oom:
	ipk_err_set(err, IPK_EXIT_OSERR, "bench lstm '%d sessions': out of memory", sessions);
out:
	if (st)
		for (int i = 0; i < sessions; i++)
			ipk_lstm_state_free(st[i]);
	free(st);
	free(x);
	free(prob);
	return rc;
}

int ipk_lstm_bench_cuda(const struct ipk_lstm *net, int sessions, double min_seconds, struct ipk_lstm_bench_result *r,
			struct ipk_err *err)
{
	memset(r, 0, sizeof(*r));
	if (sessions < 1)
		return ipk_err_set(err, IPK_EXIT_USAGE, "bench lstm '%d sessions': need at least one", sessions);
	const struct ipk_lstm_shape *sh = ipk_lstm_shape(net);
	int rc = -1;
	enum { NX = 4 };
	struct ipk_lstm_cuda *cu = ipk_lstm_cuda_new(net, sessions, err);
	int *slots = malloc(sizeof(int) * (size_t)sessions);
	float *x = malloc(sizeof(float) * (size_t)sessions * sh->n_in * NX);
	float *prob = malloc(sizeof(float) * (size_t)sessions * sh->n_out);
	if (!cu)
		goto out;
	if (!slots || !x || !prob) {
		ipk_err_set(err, IPK_EXIT_OSERR, "bench lstm '%d sessions': out of memory", sessions);
		goto out;
	}
	for (int i = 0; i < sessions; i++)
		slots[i] = i;
	struct ipk_rng rng;
	ipk_rng_seed(&rng, 7);
	for (size_t i = 0; i < (size_t)sessions * sh->n_in * NX; i++)
		x[i] = (float)(ipk_rng_uniform(&rng) * 2 - 1);
	const size_t xs = (size_t)sessions * sh->n_in;
	if (ipk_lstm_cuda_step(cu, slots, sessions, x, prob, err) < 0)
		goto out;
	long steps = 0;
	double t0 = ipk_mono(), t;
	do {
		if (ipk_lstm_cuda_step(cu, slots, sessions, x + (size_t)(steps % NX) * xs, prob, err) < 0)
			goto out;
		steps++;
		t = ipk_mono() - t0;
	} while (t < min_seconds);
	r->sessions = sessions;
	r->steps = steps * sessions;
	r->seconds = t;
	r->steps_per_s = (double)r->steps / t;
	r->state_bytes = sizeof(float) * 2 * (size_t)sh->layers * sh->hidden;
	r->session_bytes = session_bytes(r->state_bytes, sh->n_out);
	r->kernel = "cuda";
	rc = 0;
out:
	ipk_lstm_cuda_free(cu);
	free(slots);
	free(x);
	free(prob);
	return rc;
}
