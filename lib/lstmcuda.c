/* lstmcuda.c - the LSTM GPU step when this build has no CUDA (no nvcc at
 * build time): every entry point reports that it is unavailable. With CUDA,
 * lstm_cuda.cu defines them instead. See lstmcuda.h. */
#include "lstmcuda.h"

#ifndef HAVE_CUDA

#include <stddef.h>

struct ipk_lstm_cuda *ipk_lstm_cuda_new(const struct ipk_lstm *net, int slots, struct ipk_err *err)
{
	(void)net;
	(void)slots;
	ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "use device 'cuda': this build has no CUDA support (nvcc was not found when it was built)");
	return NULL;
}

void ipk_lstm_cuda_free(struct ipk_lstm_cuda *cu)
{
	(void)cu;
}

const char *ipk_lstm_cuda_device(const struct ipk_lstm_cuda *cu)
{
	(void)cu;
	return "none";
}

int ipk_lstm_cuda_reserve(struct ipk_lstm_cuda *cu, int slots, struct ipk_err *err)
{
	(void)cu;
	(void)slots;
	return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "use device 'cuda': this build has no CUDA support");
}

int ipk_lstm_cuda_reset(struct ipk_lstm_cuda *cu, int slot, struct ipk_err *err)
{
	(void)cu;
	(void)slot;
	return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "use device 'cuda': this build has no CUDA support");
}

int ipk_lstm_cuda_step(struct ipk_lstm_cuda *cu, const int *slots, int n, const float *x, float *prob,
		       struct ipk_err *err)
{
	(void)cu;
	(void)slots;
	(void)n;
	(void)x;
	(void)prob;
	return ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "use device 'cuda': this build has no CUDA support");
}

#else
/* ISO C forbids an empty translation unit. */
typedef int ipk_lstmcuda_unused;
#endif
