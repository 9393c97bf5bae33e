/* lstm.c - LSTM inference (packed float, vectorised) and training (double,
 * truncated BPTT, Adam). See lstm.h. */
#include "lstm.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- PRNG */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void ipk_rng_seed(struct ipk_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t ipk_rng_next(struct ipk_rng *r)
{
	uint64_t *s = r->s;
	uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return res;
}

double ipk_rng_uniform(struct ipk_rng *r)
{
	return (ipk_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t ipk_rng_below(struct ipk_rng *r, uint64_t n)
{
	/* rejection sampling: no modulo bias */
	uint64_t lim = UINT64_MAX - UINT64_MAX % n;
	uint64_t v;
	do
		v = ipk_rng_next(r);
	while (v >= lim);
	return v % n;
}

/* ------------------------------------------------------------- network */

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

struct ipk_lstm_state {
	float v[1]; /* h [layers][hp] then c [layers][hp]; allocated larger */
};

typedef void (*step_fn)(const struct ipk_lstm *net, struct ipk_lstm_state *const *st, int n, const float *x,
			float *prob);

struct ipk_lstm {
	struct ipk_lstm_shape sh;
	size_t nparams;
	size_t off[IPK_LSTM_MAX_LAYERS + 1];
	double *p;
	/* packed float copy */
	int hp;                            /* H rounded up to 8 */
	int gp;                            /* 4 * hp, a multiple of 32 */
	float *wt[IPK_LSTM_MAX_LAYERS];    /* [in_l + H][gp], gate q of unit u at column q*hp+u */
	float *bias[IPK_LSTM_MAX_LAYERS];  /* [gp] */
	/* [gp/32][2] per 32 gate columns (a block of the step), the recurrent
	 * rows [lo, hi) with a non-zero weight there: a merged ensemble
	 * (ipk_lstm_merge) is block-diagonal, and a step skips the zeros */
	int *hrows[IPK_LSTM_MAX_LAYERS];
	float *wo;                         /* [n_out][H] */
	float *bo;                         /* [n_out] */
	step_fn step;
	const char *kernel;
};

static int layer_in(const struct ipk_lstm_shape *sh, int l)
{
	return l == 0 ? sh->n_in : sh->hidden;
}

static void *alloc_aligned(size_t n)
{
	n = (n + 63) & ~(size_t)63;
	return aligned_alloc(64, n ? n : 64);
}

static void step_generic(const struct ipk_lstm *net, struct ipk_lstm_state *const *st, int n, const float *x,
			 float *prob);
static void step_avx2(const struct ipk_lstm *net, struct ipk_lstm_state *const *st, int n, const float *x,
		      float *prob);

struct ipk_lstm *ipk_lstm_new(const struct ipk_lstm_shape *shape, struct ipk_err *err)
{
	const struct ipk_lstm_shape *s = shape;
	if (s->n_in < 1 || s->n_in > IPK_LSTM_MAX_IN || s->hidden < 1 || s->hidden > IPK_LSTM_MAX_HIDDEN ||
	    s->layers < 1 || s->layers > IPK_LSTM_MAX_LAYERS || s->n_out < 1 || s->n_out > IPK_LSTM_MAX_OUT) {
		ipk_err_set(err, IPK_EXIT_USAGE,
			    "create lstm 'in %d hidden %d layers %d out %d': size out of range (in 1..%d, hidden 1..%d, "
			    "layers 1..%d, out 1..%d)",
			    s->n_in, s->hidden, s->layers, s->n_out, IPK_LSTM_MAX_IN, IPK_LSTM_MAX_HIDDEN,
			    IPK_LSTM_MAX_LAYERS, IPK_LSTM_MAX_OUT);
		return NULL;
	}
	struct ipk_lstm *net = calloc(1, sizeof(*net));
	if (!net)
		goto oom;
	net->sh = *s;
	int H = s->hidden;
	size_t off = 0;
	for (int l = 0; l < s->layers; l++) {
		net->off[l] = off;
		off += (size_t)4 * H * (layer_in(s, l) + H + 1);
	}
	net->off[s->layers] = off;
	off += (size_t)s->n_out * (H + 1);
	net->nparams = off;
	net->hp = (H + 7) & ~7;
	net->gp = 4 * net->hp;
	net->p = calloc(off, sizeof(double));
	if (!net->p)
		goto oom;
	for (int l = 0; l < s->layers; l++) {
		net->wt[l] = alloc_aligned(sizeof(float) * (size_t)(layer_in(s, l) + H) * net->gp);
		net->bias[l] = alloc_aligned(sizeof(float) * net->gp);
		net->hrows[l] = malloc(sizeof(int) * 2 * (net->gp / 32));
		if (!net->wt[l] || !net->bias[l] || !net->hrows[l])
			goto oom;
	}
	net->wo = malloc(sizeof(float) * s->n_out * H);
	net->bo = malloc(sizeof(float) * s->n_out);
	if (!net->wo || !net->bo)
		goto oom;
	net->step = step_generic;
	net->kernel = "generic";
#if defined(__x86_64__) || defined(__i386__)
	if (__builtin_cpu_supports("avx2")) {
		net->step = step_avx2;
		net->kernel = "avx2";
	}
#endif
	ipk_lstm_sync(net);
	return net;
oom:
	ipk_lstm_free(net);
	ipk_err_set(err, IPK_EXIT_OSERR, "create lstm 'hidden %d': out of memory", s->hidden);
	return NULL;
}

void ipk_lstm_free(struct ipk_lstm *net)
{
	if (!net)
		return;
	for (int l = 0; l < IPK_LSTM_MAX_LAYERS; l++) {
		free(net->wt[l]);
		free(net->bias[l]);
		free(net->hrows[l]);
	}
	free(net->wo);
	free(net->bo);
	free(net->p);
	free(net);
}

const struct ipk_lstm_shape *ipk_lstm_shape(const struct ipk_lstm *net)
{
	return &net->sh;
}

size_t ipk_lstm_nparams(const struct ipk_lstm *net)
{
	return net->nparams;
}

double *ipk_lstm_params(struct ipk_lstm *net)
{
	return net->p;
}

const double *ipk_lstm_params_const(const struct ipk_lstm *net)
{
	return net->p;
}

size_t ipk_lstm_offset(const struct ipk_lstm *net, int layer)
{
	return net->off[layer];
}

const char *ipk_lstm_kernel(const struct ipk_lstm *net)
{
	return net->kernel;
}

void ipk_lstm_init(struct ipk_lstm *net, uint64_t seed)
{
	struct ipk_rng r;
	ipk_rng_seed(&r, seed);
	int H = net->sh.hidden;
	double k = 1.0 / sqrt((double)H);
	for (size_t i = 0; i < net->nparams; i++)
		net->p[i] = (2 * ipk_rng_uniform(&r) - 1) * k;
	for (int l = 0; l < net->sh.layers; l++) {
		double *b = net->p + net->off[l] + (size_t)4 * H * (layer_in(&net->sh, l) + H);
		for (int u = 0; u < H; u++)
			b[H + u] = 1.0;
	}
	ipk_lstm_sync(net);
}

int ipk_lstm_merge(struct ipk_lstm *dst, struct ipk_lstm *const *src, int k, struct ipk_err *err)
{
	const struct ipk_lstm_shape *a = &src[0]->sh, *d = &dst->sh;
	int H = a->hidden, L = a->layers, M = d->hidden;
	if (k < 1 || d->n_in != a->n_in || M != k * H || d->layers != L || d->n_out != a->n_out)
		return ipk_err_set(err, IPK_EXIT_USAGE, "merge networks '%d x h%d': the ensemble needs h%d, has h%d", k,
				   H, k * H, M);
	for (int m = 1; m < k; m++)
		if (memcmp(&src[m]->sh, a, sizeof(*a)))
			return ipk_err_set(err, IPK_EXIT_USAGE, "merge networks: member %d has another shape", m + 1);
	memset(dst->p, 0, sizeof(double) * dst->nparams);
	for (int m = 0; m < k; m++) {
		for (int l = 0; l < L; l++) {
			int in = layer_in(a, l), din = layer_in(d, l), col0 = l ? m * H : 0;
			const double *wih = src[m]->p + src[m]->off[l], *whh = wih + (size_t)4 * H * in,
				     *b = whh + (size_t)4 * H * H;
			double *dwih = dst->p + dst->off[l], *dwhh = dwih + (size_t)4 * M * din,
			       *db = dwhh + (size_t)4 * M * M;
			for (int q = 0; q < 4; q++)
				for (int u = 0; u < H; u++) {
					size_t r = (size_t)q * H + u, R = (size_t)q * M + m * H + u;
					memcpy(dwih + R * din + col0, wih + r * in, sizeof(double) * in);
					memcpy(dwhh + R * M + m * H, whh + r * H, sizeof(double) * H);
					db[R] = b[r];
				}
		}
		const double *wo = src[m]->p + src[m]->off[L];
		double *dwo = dst->p + dst->off[L];
		for (int o = 0; o < a->n_out; o++) {
			for (int u = 0; u < H; u++)
				dwo[(size_t)o * M + m * H + u] = wo[(size_t)o * H + u] / k;
			dwo[(size_t)a->n_out * M + o] += wo[(size_t)a->n_out * H + o] / k;
		}
	}
	ipk_lstm_sync(dst);
	return 0;
}

void ipk_lstm_renormalise(struct ipk_lstm *net, const float *from_mean, const float *from_scale, const float *to_mean,
			  const float *to_scale)
{
	int in = net->sh.n_in, G = 4 * net->sh.hidden;
	double *w = net->p + net->off[0], *b = w + (size_t)G * (in + net->sh.hidden);
	for (int r = 0; r < G; r++)
		for (int k = 0; k < in; k++) {
			double *wk = w + (size_t)r * in + k;
			b[r] += *wk * ((double)to_mean[k] - from_mean[k]) / from_scale[k];
			*wk *= (double)to_scale[k] / from_scale[k];
		}
	ipk_lstm_sync(net);
}

void ipk_lstm_sync(struct ipk_lstm *net)
{
	int H = net->sh.hidden, hp = net->hp, gp = net->gp;
	for (int l = 0; l < net->sh.layers; l++) {
		int in = layer_in(&net->sh, l), K = in + H;
		const double *wih = net->p + net->off[l], *whh = wih + (size_t)4 * H * in, *b = whh + (size_t)4 * H * H;
		memset(net->wt[l], 0, sizeof(float) * (size_t)K * gp);
		memset(net->bias[l], 0, sizeof(float) * gp);
		for (int q = 0; q < 4; q++) {
			for (int u = 0; u < H; u++) {
				int row = q * H + u, col = q * hp + u;
				for (int k = 0; k < in; k++)
					net->wt[l][(size_t)k * gp + col] = (float)wih[(size_t)row * in + k];
				for (int k = 0; k < H; k++)
					net->wt[l][(size_t)(in + k) * gp + col] = (float)whh[(size_t)row * H + k];
				net->bias[l][col] = (float)b[row];
			}
		}
		for (int blk = 0; blk < gp / 32; blk++) {
			int lo = H, hi = 0;
			for (int k = 0; k < H; k++)
				for (int j = 0; j < 32; j++)
					if (net->wt[l][(size_t)(in + k) * gp + blk * 32 + j] != 0) {
						lo = k < lo ? k : lo;
						hi = k + 1;
					}
			net->hrows[l][2 * blk] = hi ? lo : 0;
			net->hrows[l][2 * blk + 1] = hi;
		}
	}
	const double *wo = net->p + net->off[net->sh.layers];
	for (int k = 0; k < net->sh.n_out * H; k++)
		net->wo[k] = (float)wo[k];
	for (int k = 0; k < net->sh.n_out; k++)
		net->bo[k] = (float)wo[net->sh.n_out * H + k];
}

/* ----------------------------------------------------- streaming state */

static size_t state_floats(const struct ipk_lstm *net)
{
	return (size_t)2 * net->sh.layers * net->hp;
}

size_t ipk_lstm_state_bytes(const struct ipk_lstm *net)
{
	return (sizeof(float) * state_floats(net) + 63) & ~(size_t)63;
}

struct ipk_lstm_state *ipk_lstm_state_new(const struct ipk_lstm *net)
{
	struct ipk_lstm_state *st = alloc_aligned(sizeof(float) * state_floats(net));
	if (st)
		ipk_lstm_state_reset(net, st);
	return st;
}

void ipk_lstm_state_reset(const struct ipk_lstm *net, struct ipk_lstm_state *st)
{
	memset(st->v, 0, sizeof(float) * state_floats(net));
}

void ipk_lstm_state_free(struct ipk_lstm_state *st)
{
	free(st);
}

/* ------------------------------------------------------ float kernels */

#define ALWAYS_INLINE static inline __attribute__((always_inline))

#define SPLAT(f) ((v8f){ (f), (f), (f), (f), (f), (f), (f), (f) })

/* Helpers take and return vectors through pointers: passing 32-byte vectors
 * by value changes the ABI between the generic and the AVX2 build. */
ALWAYS_INLINE void v_load(v8f *r, const float *p)
{
	memcpy(r, p, sizeof(*r));
}

ALWAYS_INLINE void v_store(float *p, const v8f *v)
{
	memcpy(p, v, sizeof(*v));
}

/* exp(x) for |x| < 88 (clamped outside), Cephes' single-precision method:
 * relative error about 1e-7. */
ALWAYS_INLINE void v_exp(v8f *r, const v8f *xin)
{
	v8f x = *xin;
	const v8f hi = SPLAT(88.0f), lo = SPLAT(-87.0f);
	v8i m = x > hi;
	x = (v8f)(((v8i)hi & m) | ((v8i)x & ~m));
	m = x < lo;
	x = (v8f)(((v8i)lo & m) | ((v8i)x & ~m));
	v8f fx = x * SPLAT(1.44269504088896341f) + SPLAT(0.5f);
	v8i n = __builtin_convertvector(fx, v8i);
	v8f nf = __builtin_convertvector(n, v8f);
	n = n + (nf > fx); /* truncation to floor: minus one where nf > fx */
	nf = __builtin_convertvector(n, v8f);
	x = x - nf * SPLAT(0.693359375f) - nf * SPLAT(-2.12194440e-4f);
	v8f z = x * x;
	v8f y = SPLAT(1.9875691500e-4f);
	y = y * x + SPLAT(1.3981999507e-3f);
	y = y * x + SPLAT(8.3334519073e-3f);
	y = y * x + SPLAT(4.1665795894e-2f);
	y = y * x + SPLAT(1.6666665459e-1f);
	y = y * x + SPLAT(5.0000001201e-1f);
	y = y * z + x + SPLAT(1.0f);
	v8i e = (n + 127) << 23;
	*r = y * (v8f)e;
}

ALWAYS_INLINE void v_sigmoid(v8f *r, const v8f *x)
{
	v8f t = -*x, e;
	v_exp(&e, &t);
	*r = SPLAT(1.0f) / (SPLAT(1.0f) + e);
}

ALWAYS_INLINE void v_tanh(v8f *r, const v8f *x)
{
	v8f t = *x * SPLAT(-2.0f), e;
	v_exp(&e, &t);
	*r = SPLAT(2.0f) / (SPLAT(1.0f) + e) - SPLAT(1.0f);
}

/* g = bias + Wt^T [a; b]: Wt has gp columns (a multiple of 32), rows
 * 0..na-1 for a, then rows for b, of which only rows [lo, hi) (brows, per
 * 32 columns) are non-zero. b (h) is finite, so a skipped term is a zero
 * and the gates are the dense product's, bit for bit but for the sign of a
 * zero sum. Four vectors of accumulators stay in registers per block. */
ALWAYS_INLINE void gates(const float *wt, const float *bias, int gp, const float *a, int na, const float *b,
			 const int *brows, float *g)
{
	v8f s, w0, w1, w2, w3;
	for (int j = 0; j < gp; j += 32) {
		v8f a0, a1, a2, a3;
		v_load(&a0, bias + j);
		v_load(&a1, bias + j + 8);
		v_load(&a2, bias + j + 16);
		v_load(&a3, bias + j + 24);
		const float *w = wt + j;
		for (int pass = 0; pass < 2; pass++) {
			const float *v = pass ? b : a;
			int k = pass ? brows[2 * (j / 32)] : 0, nv = pass ? brows[2 * (j / 32) + 1] : na;
			for (w += (size_t)k * gp; k < nv; k++, w += gp) {
				s = SPLAT(v[k]);
				v_load(&w0, w);
				v_load(&w1, w + 8);
				v_load(&w2, w + 16);
				v_load(&w3, w + 24);
				a0 += s * w0;
				a1 += s * w1;
				a2 += s * w2;
				a3 += s * w3;
			}
			w = wt + j + (size_t)na * gp;
		}
		v_store(g + j, &a0);
		v_store(g + j + 8, &a1);
		v_store(g + j + 16, &a2);
		v_store(g + j + 24, &a3);
	}
}

ALWAYS_INLINE void step_body(const struct ipk_lstm *net, struct ipk_lstm_state *const *st, int n, const float *x,
			     float *prob)
{
	const int H = net->sh.hidden, hp = net->hp, gp = net->gp, L = net->sh.layers, nin = net->sh.n_in;
	const int nout = net->sh.n_out;
	v8f gbuf[gp / 8];
	float *g = (float *)gbuf;
	for (int j = 0; j < n; j++) {
		float *hs = st[j]->v, *cs = hs + (size_t)L * hp;
		const float *in = x + (size_t)j * nin;
		int nx = nin;
		for (int l = 0; l < L; l++) {
			float *h = hs + (size_t)l * hp, *c = cs + (size_t)l * hp;
			gates(net->wt[l], net->bias[l], gp, in, nx, h, net->hrows[l], g);
			for (int u = 0; u < hp; u += 8) {
				v8f i, f, gg, o, c0, t;
				v_load(&t, g + u);
				v_sigmoid(&i, &t);
				v_load(&t, g + hp + u);
				v_sigmoid(&f, &t);
				v_load(&t, g + 2 * hp + u);
				v_tanh(&gg, &t);
				v_load(&t, g + 3 * hp + u);
				v_sigmoid(&o, &t);
				v_load(&c0, c + u);
				c0 = f * c0 + i * gg;
				v_store(c + u, &c0);
				v_tanh(&t, &c0);
				t = o * t;
				v_store(h + u, &t);
			}
			in = h;
			nx = H;
		}
		const float *h = hs + (size_t)(L - 1) * hp;
		float *p = prob + (size_t)j * nout;
		for (int k = 0; k < nout; k++) {
			const float *w = net->wo + (size_t)k * H;
			float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
			int u = 0;
			for (; u + 4 <= H; u += 4) {
				s0 += w[u] * h[u];
				s1 += w[u + 1] * h[u + 1];
				s2 += w[u + 2] * h[u + 2];
				s3 += w[u + 3] * h[u + 3];
			}
			for (; u < H; u++)
				s0 += w[u] * h[u];
			p[k] = 1.0f / (1.0f + expf(-(net->bo[k] + ((s0 + s1) + (s2 + s3)))));
		}
	}
}

static void step_generic(const struct ipk_lstm *net, struct ipk_lstm_state *const *st, int n, const float *x,
			 float *prob)
{
	step_body(net, st, n, x, prob);
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) static void step_avx2(const struct ipk_lstm *net, struct ipk_lstm_state *const *st,
						       int n, const float *x, float *prob)
{
	step_body(net, st, n, x, prob);
}
#else
static void step_avx2(const struct ipk_lstm *net, struct ipk_lstm_state *const *st, int n, const float *x,
		      float *prob)
{
	step_body(net, st, n, x, prob);
}
#endif

int ipk_lstm_set_kernel(struct ipk_lstm *net, const char *name)
{
	if (!strcmp(name, "generic")) {
		net->step = step_generic;
		net->kernel = "generic";
		return 0;
	}
#if defined(__x86_64__) || defined(__i386__)
	if (!strcmp(name, "avx2") && __builtin_cpu_supports("avx2")) {
		net->step = step_avx2;
		net->kernel = "avx2";
		return 0;
	}
#endif
	return -1;
}

void ipk_lstm_step(const struct ipk_lstm *net, struct ipk_lstm_state *const *st, int n, const float *x, float *prob)
{
	net->step(net, st, n, x, prob);
}

/* -------------------------------------------------- double precision */

static double dsig(double x)
{
	return 1.0 / (1.0 + exp(-x));
}

static double softplus(double x)
{
	return (x > 0 ? x : 0) + log1p(exp(-fabs(x)));
}

/* Dot product with four partial sums in a fixed order. */
static double ddot(const double *a, const double *b, int n)
{
	double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	int k = 0;
	for (; k + 4 <= n; k += 4) {
		s0 += a[k] * b[k];
		s1 += a[k + 1] * b[k + 1];
		s2 += a[k + 2] * b[k + 2];
		s3 += a[k + 3] * b[k + 3];
	}
	for (; k < n; k++)
		s0 += a[k] * b[k];
	return (s0 + s1) + (s2 + s3);
}

static void daxpy(double *y, double a, const double *x, int n)
{
	for (int k = 0; k < n; k++)
		y[k] += a * x[k];
}

/* One layer, one step: act = i,f,g,o after their non-linearities (4H),
 * c and tc = tanh(c) (H), h (H). */
static void dlayer_fwd(const struct ipk_lstm *net, int l, const double *in, const double *hprev, const double *cprev,
		       double *act, double *c, double *tc, double *h)
{
	int H = net->sh.hidden, nin = layer_in(&net->sh, l);
	const double *wih = net->p + net->off[l], *whh = wih + (size_t)4 * H * nin, *b = whh + (size_t)4 * H * H;
	for (int r = 0; r < 4 * H; r++) {
		double z = b[r] + ddot(wih + (size_t)r * nin, in, nin) + ddot(whh + (size_t)r * H, hprev, H);
		act[r] = (r >= 2 * H && r < 3 * H) ? tanh(z) : dsig(z);
	}
	for (int u = 0; u < H; u++) {
		c[u] = act[H + u] * cprev[u] + act[u] * act[2 * H + u];
		tc[u] = tanh(c[u]);
		h[u] = act[3 * H + u] * tc[u];
	}
}

static double dhead(const struct ipk_lstm *net, int k, const double *h)
{
	int H = net->sh.hidden;
	const double *wo = net->p + net->off[net->sh.layers];
	return wo[net->sh.n_out * H + k] + ddot(wo + (size_t)k * H, h, H);
}

int ipk_lstm_forward(const struct ipk_lstm *net, const struct ipk_lstm_seq *seq, double *prob)
{
	int H = net->sh.hidden, L = net->sh.layers, nin = net->sh.n_in;
	/* per layer: h, c; scratch: act, tc, input */
	int maxin = nin > H ? nin : H;
	double *buf = calloc((size_t)L * 2 * H + 4 * H + H + maxin + H, sizeof(double));
	if (!buf)
		return -1;
	double *hs = buf, *cs = hs + (size_t)L * H, *act = cs + (size_t)L * H, *tc = act + 4 * H, *in = tc + H,
	       *hn = in + maxin;
	for (int t = 0; t < seq->len; t++) {
		for (int k = 0; k < nin; k++)
			in[k] = seq->x[(size_t)t * nin + k];
		for (int l = 0; l < L; l++) {
			double *h = hs + (size_t)l * H, *c = cs + (size_t)l * H;
			dlayer_fwd(net, l, in, h, c, act, c, tc, hn);
			memcpy(h, hn, sizeof(double) * H);
			memcpy(in, h, sizeof(double) * H);
		}
		for (int k = 0; k < net->sh.n_out; k++)
			prob[(size_t)t * net->sh.n_out + k] = dsig(dhead(net, k, hs + (size_t)(L - 1) * H));
	}
	free(buf);
	return 0;
}

/* Work space of one lane for a chunk of up to T steps. */
struct lane_ws {
	int T;
	double *in;   /* [L][T][maxin] layer inputs */
	double *act;  /* [L][T][4H] */
	double *c;    /* [L][T+1][H], slot 0 = initial */
	double *h;    /* [L][T+1][H], slot 0 = initial */
	double *tc;   /* [L][T][H] */
	double *dh, *dc, *da, *dx; /* [L][H], [L][H], [4H], [maxin] */
};

static void lane_ws_free(struct lane_ws *w)
{
	free(w->in);
	free(w->act);
	free(w->c);
	free(w->h);
	free(w->tc);
	free(w->dh);
	free(w->dc);
	free(w->da);
	free(w->dx);
	memset(w, 0, sizeof(*w));
}

static int lane_ws_init(struct lane_ws *w, const struct ipk_lstm *net, int T)
{
	int H = net->sh.hidden, L = net->sh.layers, maxin = net->sh.n_in > H ? net->sh.n_in : H;
	memset(w, 0, sizeof(*w));
	w->T = T;
	w->in = calloc((size_t)L * T * maxin, sizeof(double));
	w->act = calloc((size_t)L * T * 4 * H, sizeof(double));
	w->c = calloc((size_t)L * (T + 1) * H, sizeof(double));
	w->h = calloc((size_t)L * (T + 1) * H, sizeof(double));
	w->tc = calloc((size_t)L * T * H, sizeof(double));
	w->dh = calloc((size_t)L * H, sizeof(double));
	w->dc = calloc((size_t)L * H, sizeof(double));
	w->da = calloc((size_t)4 * H, sizeof(double));
	w->dx = calloc(maxin, sizeof(double));
	if (!w->in || !w->act || !w->c || !w->h || !w->tc || !w->dh || !w->dc || !w->da || !w->dx) {
		lane_ws_free(w);
		return -1;
	}
	return 0;
}

/* Forward and backward over steps [0, T) of x/y from the state in hc
 * (h [L][H] then c [L][H]); leaves the final state in hc, adds the gradient
 * to grad and returns the summed (weighted) loss. */
static double chunk_fb(const struct ipk_lstm *net, struct lane_ws *w, const float *x, const float *y, int T,
		       double *hc, const double *posw, double *grad, long *nlab)
{
	const int H = net->sh.hidden, L = net->sh.layers, nin = net->sh.n_in, nout = net->sh.n_out;
	const int maxin = nin > H ? nin : H;
	const size_t sH = H, sT1 = (size_t)(T + 1) * H;
	double loss = 0;
	long nl = 0;
#define IN(l, t) (w->in + ((size_t)(l) * w->T + (t)) * maxin)
#define ACT(l, t) (w->act + ((size_t)(l) * w->T + (t)) * 4 * H)
#define TC(l, t) (w->tc + ((size_t)(l) * w->T + (t)) * sH)
#define HH(l, t) (w->h + (size_t)(l) * (w->T + 1) * sH + (size_t)(t) * sH)
#define CC(l, t) (w->c + (size_t)(l) * (w->T + 1) * sH + (size_t)(t) * sH)
	(void)sT1;
	for (int l = 0; l < L; l++) {
		memcpy(HH(l, 0), hc + (size_t)l * H, sizeof(double) * H);
		memcpy(CC(l, 0), hc + (size_t)(L + l) * H, sizeof(double) * H);
	}
	for (int t = 0; t < T; t++) {
		for (int k = 0; k < nin; k++)
			IN(0, t)[k] = x[(size_t)t * nin + k];
		for (int l = 0; l < L; l++) {
			if (l > 0)
				memcpy(IN(l, t), HH(l - 1, t + 1), sizeof(double) * H);
			dlayer_fwd(net, l, IN(l, t), HH(l, t), CC(l, t), ACT(l, t), CC(l, t + 1), TC(l, t), HH(l, t + 1));
		}
	}
	for (int l = 0; l < L; l++) {
		memcpy(hc + (size_t)l * H, HH(l, T), sizeof(double) * H);
		memcpy(hc + (size_t)(L + l) * H, CC(l, T), sizeof(double) * H);
	}
	/* backward */
	const double *wo = net->p + net->off[L];
	double *gwo = grad + net->off[L], *gbo = gwo + (size_t)nout * H;
	memset(w->dh, 0, sizeof(double) * L * H);
	memset(w->dc, 0, sizeof(double) * L * H);
	for (int t = T - 1; t >= 0; t--) {
		double *dh = w->dh + (size_t)(L - 1) * H; /* gradient flowing into h of the top layer at t */
		const double *htop = HH(L - 1, t + 1);
		for (int k = 0; k < nout; k++) {
			float yv = y[(size_t)t * nout + k];
			if (!(yv >= 0))
				continue;
			double z = dhead(net, k, htop), pw = posw ? posw[k] : 1.0;
			double p = dsig(z);
			loss += pw * yv * softplus(-z) + (1 - yv) * softplus(z);
			double dz = p * (pw * yv + 1 - yv) - pw * yv;
			daxpy(gwo + (size_t)k * H, dz, htop, H);
			gbo[k] += dz;
			daxpy(dh, dz, wo + (size_t)k * H, H);
			nl++;
		}
		for (int l = L - 1; l >= 0; l--) {
			int ni = l == 0 ? nin : H;
			double *dhl = w->dh + (size_t)l * H, *dcl = w->dc + (size_t)l * H;
			const double *a = ACT(l, t), *tc = TC(l, t), *cprev = CC(l, t);
			double *gwih = grad + net->off[l], *gwhh = gwih + (size_t)4 * H * ni, *gb = gwhh + (size_t)4 * H * H;
			const double *wih = net->p + net->off[l], *whh = wih + (size_t)4 * H * ni;
			double *da = w->da;
			for (int u = 0; u < H; u++) {
				double i = a[u], f = a[H + u], g = a[2 * H + u], o = a[3 * H + u];
				double dc = dhl[u] * o * (1 - tc[u] * tc[u]) + dcl[u];
				double dout = dhl[u] * tc[u];
				da[u] = dc * g * i * (1 - i);
				da[H + u] = dc * cprev[u] * f * (1 - f);
				da[2 * H + u] = dc * i * (1 - g * g);
				da[3 * H + u] = dout * o * (1 - o);
				dcl[u] = dc * f;
			}
			memset(dhl, 0, sizeof(double) * H);
			memset(w->dx, 0, sizeof(double) * ni);
			const double *in = IN(l, t), *hp = HH(l, t);
			for (int r = 0; r < 4 * H; r++) {
				double d = da[r];
				if (d == 0)
					continue;
				gb[r] += d;
				daxpy(gwih + (size_t)r * ni, d, in, ni);
				daxpy(gwhh + (size_t)r * H, d, hp, H);
				daxpy(w->dx, d, wih + (size_t)r * ni, ni);
				daxpy(dhl, d, whh + (size_t)r * H, H); /* into h of this layer at t-1 */
			}
			if (l > 0)
				daxpy(w->dh + (size_t)(l - 1) * H, 1.0, w->dx, H); /* into h of the layer below at t */
		}
	}
#undef IN
#undef ACT
#undef TC
#undef HH
#undef CC
	if (nlab)
		*nlab += nl;
	return loss;
}

double ipk_lstm_loss_grad(const struct ipk_lstm *net, const struct ipk_lstm_seq *seq, double *grad, long *nlabels)
{
	struct lane_ws w;
	if (lane_ws_init(&w, net, seq->len > 0 ? seq->len : 1) < 0)
		return -1;
	double *hc = calloc((size_t)2 * net->sh.layers * net->sh.hidden, sizeof(double));
	if (!hc) {
		lane_ws_free(&w);
		return -1;
	}
	double loss = chunk_fb(net, &w, seq->x, seq->y, seq->len, hc, NULL, grad, nlabels);
	free(hc);
	lane_ws_free(&w);
	return loss;
}

/* ------------------------------------------------------------ training */

void ipk_lstm_train_defaults(struct ipk_lstm_train_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->batch = 32;
	o->bptt = 64;
	o->lr = 1e-3;
	o->beta1 = 0.9;
	o->beta2 = 0.999;
	o->eps = 1e-8;
	o->clip = 1.0;
	o->threads = 0;
	o->seed = 1;
}

struct lane {
	struct lane_ws ws;
	double *hc;
	double *grad;
	double loss;
	long nlab;
	int seq, pos;  /* seq < 0: idle */
	int active;    /* has a chunk this round */
};

struct ipk_lstm_trainer {
	struct ipk_lstm *net;
	struct ipk_lstm_train_opts o;
	int nthreads;
	struct lane *lanes;
	double *m, *v, *g;
	long step;
	int epoch;
	double posw[IPK_LSTM_MAX_OUT];
	/* this round */
	const struct ipk_lstm_seq *seqs;
};

struct worker {
	struct ipk_lstm_trainer *t;
	int id;
};

void ipk_lstm_trainer_free(struct ipk_lstm_trainer *t)
{
	if (!t)
		return;
	if (t->lanes) {
		for (int i = 0; i < t->o.batch; i++) {
			lane_ws_free(&t->lanes[i].ws);
			free(t->lanes[i].hc);
			free(t->lanes[i].grad);
		}
		free(t->lanes);
	}
	free(t->m);
	free(t->v);
	free(t->g);
	free(t);
}

struct ipk_lstm_trainer *ipk_lstm_trainer_new(struct ipk_lstm *net, const struct ipk_lstm_train_opts *o,
					      struct ipk_err *err)
{
	if (o->batch < 1 || o->batch > 4096 || o->bptt < 1 || o->bptt > 100000 || !(o->lr > 0) || !(o->beta1 >= 0) ||
	    !(o->beta1 < 1) || !(o->beta2 >= 0) || !(o->beta2 < 1) || !(o->eps > 0) || !(o->clip >= 0) ||
	    o->threads < 0 || o->threads > 256) {
		ipk_err_set(err, IPK_EXIT_USAGE, "create trainer 'lstm': option out of range");
		return NULL;
	}
	struct ipk_lstm_trainer *t = calloc(1, sizeof(*t));
	if (!t)
		goto oom;
	t->net = net;
	t->o = *o;
	t->nthreads = o->threads;
	if (t->nthreads == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		t->nthreads = n >= 2 ? 2 : 1;
	}
	if (t->nthreads > o->batch)
		t->nthreads = o->batch;
	for (int k = 0; k < IPK_LSTM_MAX_OUT; k++)
		t->posw[k] = o->pos_weight[k] > 0 ? o->pos_weight[k] : 1.0;
	size_t np = net->nparams;
	t->m = calloc(np, sizeof(double));
	t->v = calloc(np, sizeof(double));
	t->g = calloc(np, sizeof(double));
	t->lanes = calloc(o->batch, sizeof(*t->lanes));
	if (!t->m || !t->v || !t->g || !t->lanes)
		goto oom;
	for (int i = 0; i < o->batch; i++) {
		struct lane *ln = &t->lanes[i];
		ln->seq = -1;
		ln->hc = calloc((size_t)2 * net->sh.layers * net->sh.hidden, sizeof(double));
		ln->grad = calloc(np, sizeof(double));
		if (!ln->hc || !ln->grad || lane_ws_init(&ln->ws, net, o->bptt) < 0)
			goto oom;
	}
	return t;
oom:
	ipk_lstm_trainer_free(t);
	ipk_err_set(err, IPK_EXIT_OSERR, "create trainer 'lstm': out of memory");
	return NULL;
}

static void run_lanes(struct ipk_lstm_trainer *t, int id)
{
	const struct ipk_lstm *net = t->net;
	int nin = net->sh.n_in, nout = net->sh.n_out;
	for (int i = id; i < t->o.batch; i += t->nthreads) {
		struct lane *ln = &t->lanes[i];
		ln->loss = 0;
		ln->nlab = 0;
		if (!ln->active)
			continue;
		memset(ln->grad, 0, sizeof(double) * net->nparams);
		const struct ipk_lstm_seq *s = &t->seqs[ln->seq];
		int T = s->len - ln->pos;
		if (T > t->o.bptt)
			T = t->o.bptt;
		ln->loss = chunk_fb(net, &ln->ws, s->x + (size_t)ln->pos * nin, s->y + (size_t)ln->pos * nout, T, ln->hc,
				    t->posw, ln->grad, &ln->nlab);
		ln->pos += T;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	run_lanes(w->t, w->id);
	return NULL;
}

static void adam_update(struct ipk_lstm_trainer *t, double scale)
{
	size_t np = t->net->nparams;
	double *g = t->g, *p = t->net->p;
	double norm2 = 0;
	for (size_t k = 0; k < np; k++) {
		g[k] *= scale;
		norm2 += g[k] * g[k];
	}
	double norm = sqrt(norm2);
	if (t->o.clip > 0 && norm > t->o.clip) {
		double f = t->o.clip / norm;
		for (size_t k = 0; k < np; k++)
			g[k] *= f;
	}
	t->step++;
	double b1 = t->o.beta1, b2 = t->o.beta2;
	double lr = t->o.lr * sqrt(1 - pow(b2, (double)t->step)) / (1 - pow(b1, (double)t->step));
	for (size_t k = 0; k < np; k++) {
		t->m[k] = b1 * t->m[k] + (1 - b1) * g[k];
		t->v[k] = b2 * t->v[k] + (1 - b2) * g[k] * g[k];
		p[k] -= lr * t->m[k] / (sqrt(t->v[k]) + t->o.eps);
	}
}

double ipk_lstm_train_epoch(struct ipk_lstm_trainer *t, const struct ipk_lstm_seq *seqs, int nseq, struct ipk_err *err)
{
	int *order = malloc(sizeof(int) * (nseq > 0 ? nseq : 1));
	if (!order) {
		ipk_err_set(err, IPK_EXIT_OSERR, "train lstm 'epoch %d': out of memory", t->epoch + 1);
		return -1;
	}
	struct ipk_rng r;
	ipk_rng_seed(&r, t->o.seed ^ (0x5851f42d4c957f2dULL * (uint64_t)(t->epoch + 1)));
	for (int i = 0; i < nseq; i++)
		order[i] = i;
	for (int i = nseq - 1; i > 0; i--) {
		int j = (int)ipk_rng_below(&r, (uint64_t)i + 1);
		int tmp = order[i];
		order[i] = order[j];
		order[j] = tmp;
	}
	t->seqs = seqs;
	int next = 0, B = t->o.batch;
	size_t np = t->net->nparams, nhc = (size_t)2 * t->net->sh.layers * t->net->sh.hidden;
	double total_loss = 0;
	long total_lab = 0;
	for (int i = 0; i < B; i++)
		t->lanes[i].seq = -1;
	pthread_t th[256];
	struct worker wk[256];
	for (;;) {
		int nact = 0;
		for (int i = 0; i < B; i++) {
			struct lane *ln = &t->lanes[i];
			while (ln->seq < 0 || ln->pos >= seqs[ln->seq].len) {
				if (next >= nseq) {
					ln->seq = -1;
					break;
				}
				ln->seq = order[next++];
				ln->pos = 0;
				memset(ln->hc, 0, sizeof(double) * nhc);
			}
			ln->active = ln->seq >= 0;
			nact += ln->active;
		}
		if (!nact)
			break;
		int started = 0;
		for (int k = 1; k < t->nthreads; k++) {
			wk[k].t = t;
			wk[k].id = k;
			int e = pthread_create(&th[k], NULL, worker_main, &wk[k]);
			if (e) {
				for (int j = 1; j <= started; j++)
					pthread_join(th[j], NULL);
				free(order);
				ipk_err_set(err, IPK_EXIT_OSERR, "train lstm 'thread %d': %s", k, strerror(e));
				return -1;
			}
			started = k;
		}
		run_lanes(t, 0);
		for (int k = 1; k <= started; k++)
			pthread_join(th[k], NULL);
		/* reduce in lane order: the same sums whatever the thread count */
		memset(t->g, 0, sizeof(double) * np);
		long nlab = 0;
		for (int i = 0; i < B; i++) {
			struct lane *ln = &t->lanes[i];
			if (!ln->active)
				continue;
			for (size_t k = 0; k < np; k++)
				t->g[k] += ln->grad[k];
			nlab += ln->nlab;
			total_loss += ln->loss;
		}
		total_lab += nlab;
		if (nlab > 0)
			adam_update(t, 1.0 / (double)nlab);
	}
	free(order);
	t->epoch++;
	ipk_lstm_sync(t->net);
	return total_lab ? total_loss / (double)total_lab : 0;
}
