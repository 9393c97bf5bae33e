/* lstmbench.h - the streaming LSTM step benchmark (ip-predict --bench):
 * session-steps per second of ipk_lstm_step() on one thread for a given
 * number of concurrent sessions, each with its own state, all advanced by
 * one batched call per step, and the memory one session takes.
 *
 * Ownership: the network is borrowed; everything else is allocated and
 * freed inside the call.
 */
#ifndef IPK_LSTMBENCH_H
#define IPK_LSTMBENCH_H

#include "ipk.h"
#include "lstm.h"

struct ipk_lstm_bench_result {
	int sessions;
	long steps;             /* session-steps timed */
	double seconds;         /* wall time of those steps */
	double steps_per_s;
	size_t state_bytes;     /* LSTM state of one session */
	size_t session_bytes;   /* what ip-predict holds per session: LSTM, feature and recalibration state */
	const char *kernel;     /* "avx2" or "generic" */
};

/* Time ipk_lstm_step() on net (ip-predict: a randomly initialised network
 * of input 16 and hidden 32, or a model's) for `sessions` sessions with
 * random inputs (seeded), for at least min_seconds after one warm-up step.
 * Returns 0, or -1 with err set (no session: IPK_EXIT_USAGE; out of memory:
 * IPK_EXIT_OSERR). */
int ipk_lstm_bench(const struct ipk_lstm *net, int sessions, double min_seconds, struct ipk_lstm_bench_result *r,
		   struct ipk_err *err);

/* The same on the GPU (lstmcuda.h): ipk_lstm_cuda_step() for all sessions,
 * inputs copied to the GPU and probabilities back at every step (included
 * in the time); state_bytes is the GPU memory of one session's state.
 * Returns 0, or -1 with err set (IPK_EXIT_UNAVAILABLE without CUDA or GPU). */
int ipk_lstm_bench_cuda(const struct ipk_lstm *net, int sessions, double min_seconds, struct ipk_lstm_bench_result *r,
			struct ipk_err *err);

#endif
