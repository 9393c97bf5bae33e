// lstm_cuda.cu - the LSTM's batched streaming step on an NVIDIA GPU (built
// only when nvcc is found: HAVE_CUDA). See lstmcuda.h.
//
// Layout on the GPU (float): per layer l a transposed weight block
// wt[l][k][4H] (k over the layer's inputs, then over h; column q*H+u is gate
// q of unit u, gates i, f, g, o), the bias b[l][4H] (PyTorch's two biases
// summed, as in the canonical parameter vector), the head wo[n_out][H] and
// bo[n_out]; the sessions' states h and c as [slot][layer][H].
// One thread block per session of the step, one thread per hidden unit:
// reading column u of a row of wt is coalesced across the block.
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* lib/'s C headers, with C linkage */
extern "C" {
#include "ipk.h"
#include "lstm.h"
}
#include "lstmcuda.h"

#define MAXL IPK_LSTM_MAX_LAYERS

struct kparams {
	int n_in, H, L, n_out, maxin;
	const float *wt[MAXL];
	const float *b[MAXL];
	const float *wo, *bo;
	float *h, *c;
	const int *slots;
	const float *x;
	float *prob;
};

__device__ static float sigm(float z)
{
	return 1.0f / (1.0f + expf(-z));
}

__global__ void lstm_step_kernel(struct kparams p)
{
	extern __shared__ float sh[];
	float *xin = sh;           /* [maxin]: this layer's input */
	float *hp = sh + p.maxin;  /* [H]: this layer's previous h */
	const int j = blockIdx.x, u = threadIdx.x, H = p.H, G = 4 * H;
	const size_t slot = (size_t)p.slots[j];
	for (int k = u; k < p.n_in; k += blockDim.x)
		xin[k] = p.x[(size_t)j * p.n_in + k];
	for (int l = 0; l < p.L; l++) {
		const int in = l ? H : p.n_in;
		float *hs = p.h + (slot * p.L + l) * H, *cs = p.c + (slot * p.L + l) * H;
		if (u < H)
			hp[u] = hs[u];
		__syncthreads();
		float hn = 0;
		if (u < H) {
			const float *w = p.wt[l], *b = p.b[l];
			float gi = b[u], gf = b[H + u], gg = b[2 * H + u], go = b[3 * H + u];
			for (int k = 0; k < in; k++) {
				const float v = xin[k], *r = w + (size_t)k * G;
				gi += r[u] * v;
				gf += r[H + u] * v;
				gg += r[2 * H + u] * v;
				go += r[3 * H + u] * v;
			}
			for (int k = 0; k < H; k++) {
				const float v = hp[k], *r = w + (size_t)(in + k) * G;
				gi += r[u] * v;
				gf += r[H + u] * v;
				gg += r[2 * H + u] * v;
				go += r[3 * H + u] * v;
			}
			const float c = sigm(gf) * cs[u] + sigm(gi) * tanhf(gg);
			hn = sigm(go) * tanhf(c);
			cs[u] = c;
			hs[u] = hn;
		}
		__syncthreads(); /* every read of xin and hp is done */
		if (u < H)
			xin[u] = hn;
		__syncthreads();
	}
	for (int k = u; k < p.n_out; k += blockDim.x) {
		float z = p.bo[k];
		for (int m = 0; m < H; m++)
			z += p.wo[(size_t)k * H + m] * xin[m];
		p.prob[(size_t)j * p.n_out + k] = sigm(z);
	}
}

struct ipk_lstm_cuda {
	struct ipk_lstm_shape sh;
	char device[256];
	float *wt[MAXL], *b[MAXL], *wo, *bo;
	float *h, *c;      /* [slots][L][H] */
	int slots;
	int *d_slots;
	float *d_x, *d_prob;
	int batch;         /* rows the batch buffers hold */
};

static int cuda_fail(struct ipk_err *err, const char *what, cudaError_t e)
{
	return ipk_err_set(err, e == cudaErrorMemoryAllocation ? IPK_EXIT_OSERR : IPK_EXIT_UNAVAILABLE,
			   "use device 'cuda': %s: %s", what, cudaGetErrorString(e));
}

extern "C" void ipk_lstm_cuda_free(struct ipk_lstm_cuda *cu)
{
	if (!cu)
		return;
	for (int l = 0; l < MAXL; l++) {
		cudaFree(cu->wt[l]);
		cudaFree(cu->b[l]);
	}
	cudaFree(cu->wo);
	cudaFree(cu->bo);
	cudaFree(cu->h);
	cudaFree(cu->c);
	cudaFree(cu->d_slots);
	cudaFree(cu->d_x);
	cudaFree(cu->d_prob);
	free(cu);
}

extern "C" const char *ipk_lstm_cuda_device(const struct ipk_lstm_cuda *cu)
{
	return cu->device;
}

static int upload(float **dst, const float *src, size_t n, struct ipk_err *err)
{
	cudaError_t e = cudaMalloc((void **)dst, sizeof(float) * (n ? n : 1));
	if (e == cudaSuccess)
		e = cudaMemcpy(*dst, src, sizeof(float) * n, cudaMemcpyHostToDevice);
	return e == cudaSuccess ? 0 : cuda_fail(err, "copy the weights", e);
}

extern "C" struct ipk_lstm_cuda *ipk_lstm_cuda_new(const struct ipk_lstm *net, int slots, struct ipk_err *err)
{
	int ndev = 0;
	cudaError_t e = cudaGetDeviceCount(&ndev);
	if (e != cudaSuccess) {
		cuda_fail(err, "no usable GPU", e);
		return NULL;
	}
	if (ndev < 1) {
		ipk_err_set(err, IPK_EXIT_UNAVAILABLE, "use device 'cuda': no GPU found");
		return NULL;
	}
	struct ipk_lstm_cuda *cu = (struct ipk_lstm_cuda *)calloc(1, sizeof(*cu));
	if (!cu) {
		ipk_err_set(err, IPK_EXIT_OSERR, "use device 'cuda': out of memory");
		return NULL;
	}
	const struct ipk_lstm_shape *s = ipk_lstm_shape(net);
	cu->sh = *s;
	struct cudaDeviceProp prop;
	if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
		snprintf(cu->device, sizeof(cu->device), "%s", prop.name);
	const int H = s->hidden, G = 4 * H;
	const double *par = ipk_lstm_params_const(net);
	float *tmp = NULL;
	for (int l = 0; l < s->layers; l++) {
		const int in = l ? H : s->n_in;
		const double *wih = par + ipk_lstm_offset(net, l), *whh = wih + (size_t)G * in, *b = whh + (size_t)G * H;
		float *t = (float *)realloc(tmp, sizeof(float) * (size_t)(in + H) * G);
		if (!t)
			goto oom;
		tmp = t;
		for (int r = 0; r < G; r++) {
			for (int k = 0; k < in; k++)
				tmp[(size_t)k * G + r] = (float)wih[(size_t)r * in + k];
			for (int k = 0; k < H; k++)
				tmp[(size_t)(in + k) * G + r] = (float)whh[(size_t)r * H + k];
		}
		if (upload(&cu->wt[l], tmp, (size_t)(in + H) * G, err) < 0)
			goto fail;
		for (int r = 0; r < G; r++)
			tmp[r] = (float)b[r];
		if (upload(&cu->b[l], tmp, G, err) < 0)
			goto fail;
	}
	{
		const double *wo = par + ipk_lstm_offset(net, s->layers);
		size_t nw = (size_t)s->n_out * H;
		float *t = (float *)realloc(tmp, sizeof(float) * (nw + s->n_out));
		if (!t)
			goto oom;
		tmp = t;
		for (size_t i = 0; i < nw + (size_t)s->n_out; i++)
			tmp[i] = (float)wo[i];
		if (upload(&cu->wo, tmp, nw, err) < 0 || upload(&cu->bo, tmp + nw, s->n_out, err) < 0)
			goto fail;
	}
	free(tmp);
	tmp = NULL;
	if (ipk_lstm_cuda_reserve(cu, slots > 0 ? slots : 1, err) < 0)
		goto fail;
	return cu;
oom:
	ipk_err_set(err, IPK_EXIT_OSERR, "use device 'cuda': out of memory");
fail:
	free(tmp);
	ipk_lstm_cuda_free(cu);
	return NULL;
}

extern "C" int ipk_lstm_cuda_reserve(struct ipk_lstm_cuda *cu, int slots, struct ipk_err *err)
{
	if (slots <= cu->slots)
		return 0;
	int n = cu->slots ? cu->slots : 1024;
	while (n < slots)
		n *= 2;
	const size_t per = (size_t)cu->sh.layers * cu->sh.hidden, old = per * cu->slots;
	float *h = NULL, *c = NULL;
	cudaError_t e = cudaMalloc((void **)&h, sizeof(float) * per * n);
	if (e == cudaSuccess)
		e = cudaMalloc((void **)&c, sizeof(float) * per * n);
	if (e == cudaSuccess)
		e = cudaMemset(h, 0, sizeof(float) * per * n);
	if (e == cudaSuccess)
		e = cudaMemset(c, 0, sizeof(float) * per * n);
	if (e == cudaSuccess && old)
		e = cudaMemcpy(h, cu->h, sizeof(float) * old, cudaMemcpyDeviceToDevice);
	if (e == cudaSuccess && old)
		e = cudaMemcpy(c, cu->c, sizeof(float) * old, cudaMemcpyDeviceToDevice);
	if (e != cudaSuccess) {
		cudaFree(h);
		cudaFree(c);
		return cuda_fail(err, "allocate session states", e);
	}
	cudaFree(cu->h);
	cudaFree(cu->c);
	cu->h = h;
	cu->c = c;
	cu->slots = n;
	return 0;
}

extern "C" int ipk_lstm_cuda_reset(struct ipk_lstm_cuda *cu, int slot, struct ipk_err *err)
{
	if (slot < 0 || slot >= cu->slots)
		return ipk_err_set(err, IPK_EXIT_SOFTWARE, "use device 'cuda': slot %d out of range", slot);
	const size_t per = (size_t)cu->sh.layers * cu->sh.hidden;
	cudaError_t e = cudaMemset(cu->h + per * slot, 0, sizeof(float) * per);
	if (e == cudaSuccess)
		e = cudaMemset(cu->c + per * slot, 0, sizeof(float) * per);
	return e == cudaSuccess ? 0 : cuda_fail(err, "reset a session", e);
}

extern "C" int ipk_lstm_cuda_step(struct ipk_lstm_cuda *cu, const int *slots, int n, const float *x, float *prob,
				  struct ipk_err *err)
{
	if (n <= 0)
		return 0;
	const struct ipk_lstm_shape *s = &cu->sh;
	cudaError_t e = cudaSuccess;
	if (n > cu->batch) {
		int b = cu->batch ? cu->batch : 256;
		while (b < n)
			b *= 2;
		cudaFree(cu->d_slots);
		cudaFree(cu->d_x);
		cudaFree(cu->d_prob);
		cu->d_slots = NULL;
		cu->d_x = cu->d_prob = NULL;
		cu->batch = 0;
		e = cudaMalloc((void **)&cu->d_slots, sizeof(int) * b);
		if (e == cudaSuccess)
			e = cudaMalloc((void **)&cu->d_x, sizeof(float) * (size_t)b * s->n_in);
		if (e == cudaSuccess)
			e = cudaMalloc((void **)&cu->d_prob, sizeof(float) * (size_t)b * s->n_out);
		if (e != cudaSuccess)
			return cuda_fail(err, "allocate the batch", e);
		cu->batch = b;
	}
	e = cudaMemcpy(cu->d_slots, slots, sizeof(int) * n, cudaMemcpyHostToDevice);
	if (e == cudaSuccess)
		e = cudaMemcpy(cu->d_x, x, sizeof(float) * (size_t)n * s->n_in, cudaMemcpyHostToDevice);
	if (e != cudaSuccess)
		return cuda_fail(err, "copy the inputs", e);
	struct kparams p;
	memset(&p, 0, sizeof(p));
	p.n_in = s->n_in;
	p.H = s->hidden;
	p.L = s->layers;
	p.n_out = s->n_out;
	p.maxin = s->n_in > s->hidden ? s->n_in : s->hidden;
	for (int l = 0; l < s->layers; l++) {
		p.wt[l] = cu->wt[l];
		p.b[l] = cu->b[l];
	}
	p.wo = cu->wo;
	p.bo = cu->bo;
	p.h = cu->h;
	p.c = cu->c;
	p.slots = cu->d_slots;
	p.x = cu->d_x;
	p.prob = cu->d_prob;
	int threads = (s->hidden + 31) / 32 * 32;
	size_t shmem = sizeof(float) * (size_t)(p.maxin + s->hidden);
	lstm_step_kernel<<<n, threads, shmem>>>(p);
	e = cudaGetLastError();
	if (e == cudaSuccess)
		e = cudaMemcpy(prob, cu->d_prob, sizeof(float) * (size_t)n * s->n_out, cudaMemcpyDeviceToHost);
	return e == cudaSuccess ? 0 : cuda_fail(err, "run the step", e);
}
