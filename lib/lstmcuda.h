/* lstmcuda.h - the LSTM's streaming step on an NVIDIA GPU: every session of
 * a step advanced by one batched kernel launch (one thread block per
 * session, one thread per hidden unit), with the sessions' h and c kept in
 * GPU memory in numbered slots.
 *
 * The kernel is in lstm_cuda.cu, built only when nvcc is found (HAVE_CUDA).
 * Without it, or without a usable GPU and driver, ipk_lstm_cuda_new() fails
 * with IPK_EXIT_UNAVAILABLE and says why. Results equal the CPU path
 * (ipk_lstm_step) within 1e-5 in probability: both compute in float, in a
 * different order (tests/unit/test-lstmcuda.c).
 *
 * Ownership: ipk_lstm_cuda_new() copies the network's parameters to the GPU
 * (later changes to the network are not seen) and returns a context the
 * caller frees with ipk_lstm_cuda_free() (NULL is fine). Not thread-safe.
 */
#ifndef IPK_LSTMCUDA_H
#define IPK_LSTMCUDA_H

#include "ipk.h"
#include "lstm.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ipk_lstm_cuda;

/* A context for net with room for `slots` sessions (grown on demand), all
 * zero. NULL with err set: no CUDA in this build or no usable GPU
 * (IPK_EXIT_UNAVAILABLE, with the CUDA runtime's reason), out of GPU or host
 * memory (IPK_EXIT_OSERR). */
struct ipk_lstm_cuda *ipk_lstm_cuda_new(const struct ipk_lstm *net, int slots, struct ipk_err *err);
void ipk_lstm_cuda_free(struct ipk_lstm_cuda *cu);

/* The GPU's name, for messages. */
const char *ipk_lstm_cuda_device(const struct ipk_lstm_cuda *cu);

/* Make room for slots 0 .. slots-1 (new ones zero). Returns 0, or -1 with
 * err set (IPK_EXIT_OSERR, or IPK_EXIT_UNAVAILABLE on a CUDA error). */
int ipk_lstm_cuda_reserve(struct ipk_lstm_cuda *cu, int slots, struct ipk_err *err);

/* Zero the state of one slot (a session that starts). Returns 0 or -1. */
int ipk_lstm_cuda_reset(struct ipk_lstm_cuda *cu, int slot, struct ipk_err *err);

/* One step for n sessions: row j of x (n_in floats) belongs to the session
 * in slots[j] (all distinct, each < the slots reserved); writes n rows of
 * n_out probabilities to prob. One kernel launch. Returns 0, or -1 with err
 * set (IPK_EXIT_OSERR, IPK_EXIT_UNAVAILABLE on a CUDA error). */
int ipk_lstm_cuda_step(struct ipk_lstm_cuda *cu, const int *slots, int n, const float *x, float *prob,
		       struct ipk_err *err);

#ifdef __cplusplus
}
#endif

#endif
